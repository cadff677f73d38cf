//! How server-side apply merges the Kubernetes types our CRDs embed, as Kubernetes says for its
//! own objects: a pod template's containers are a map keyed by name (two field managers each
//! own their container, their env var), tolerations a list replaced whole, a secret reference
//! one value. The derived schemas carry none of this, so without it every list in a
//! `workspaceTemplate` is atomic: a second manager (Flux, a person with `kubectl apply
//! --server-side`) setting one container's env would take the whole list. The facts come from
//! the apiserver's OpenAPI (`k8s_list_markers.json`, checked against a real one by
//! `operator/tests/list_markers.rs`), applied where each type sits in our schemas.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSON, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Table {
    types: BTreeMap<String, TypeMarkers>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TypeMarkers {
    map_type: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, FieldMarkers>,
    /// Defaults of the fields that key a list-map and are not required.
    #[serde(default)]
    key_defaults: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FieldMarkers {
    list_type: Option<String>,
    list_map_keys: Option<Vec<String>>,
    map_type: Option<String>,
    /// The type of an object field.
    #[serde(rename = "type")]
    of: Option<String>,
    /// The type of a list's items.
    items: Option<String>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("k8s_list_markers.json"))
            .unwrap_or_else(|e| panic!("k8s_list_markers.json: {e}"))
    })
}

pub const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
pub const ENV_VAR: &str = "io.k8s.api.core.v1.EnvVar";
pub const ENV_FROM_SOURCE: &str = "io.k8s.api.core.v1.EnvFromSource";
pub const RESOURCE_REQUIREMENTS: &str = "io.k8s.api.core.v1.ResourceRequirements";
pub const SECRET_KEY_SELECTOR: &str = "io.k8s.api.core.v1.SecretKeySelector";

/// The Workspace spec's Kubernetes parts, by path under the spec (the Workspace's, or a
/// Stack's `workspaceTemplate.spec`), and how each sits there.
const IN_WORKSPACE_SPEC: &[(&[&str], Place)] = &[
    (&["podTemplate", "spec"], Place::Object(POD_SPEC)),
    (&["env"], Place::KeyedList(ENV_VAR, "name")),
    (&["envFrom"], Place::AtomicList(ENV_FROM_SOURCE)),
    (&["resources"], Place::Object(RESOURCE_REQUIREMENTS)),
    (
        &["git", "auth", "username"],
        Place::Object(SECRET_KEY_SELECTOR),
    ),
    (
        &["git", "auth", "password"],
        Place::Object(SECRET_KEY_SELECTOR),
    ),
    (
        &["git", "auth", "sshPrivateKey"],
        Place::Object(SECRET_KEY_SELECTOR),
    ),
    (
        &["git", "auth", "token"],
        Place::Object(SECRET_KEY_SELECTOR),
    ),
    (
        &["git", "auth", "githubApp", "appID"],
        Place::Object(SECRET_KEY_SELECTOR),
    ),
    (
        &["git", "auth", "githubApp", "installationID"],
        Place::Object(SECRET_KEY_SELECTOR),
    ),
    (
        &["git", "auth", "githubApp", "privateKey"],
        Place::Object(SECRET_KEY_SELECTOR),
    ),
];

#[derive(Clone, Copy)]
enum Place {
    /// An object of this type.
    Object(&'static str),
    /// A list of this type keyed by a field (a list-map).
    KeyedList(&'static str, &'static str),
    /// A list of this type replaced whole.
    AtomicList(&'static str),
}

/// Marks the Kubernetes parts of a Workspace spec schema (`spec`), as the apiserver marks them.
pub fn mark_workspace_spec(spec: &mut JSONSchemaProps) {
    for (path, place) in IN_WORKSPACE_SPEC {
        let Some(node) = at_mut(spec, path) else {
            continue;
        };
        match *place {
            Place::Object(ty) => mark(node, ty),
            Place::KeyedList(ty, key) => {
                node.x_kubernetes_list_type = Some("map".into());
                node.x_kubernetes_list_map_keys = Some(vec![key.into()]);
                if let Some(items) = items_mut(node) {
                    mark(items, ty);
                    require_keys(items, &[key.to_string()], &TypeMarkers::default());
                }
            }
            Place::AtomicList(ty) => {
                node.x_kubernetes_list_type = Some("atomic".into());
                if let Some(items) = items_mut(node) {
                    mark(items, ty);
                }
            }
        }
    }
}

fn at_mut<'a>(mut node: &'a mut JSONSchemaProps, path: &[&str]) -> Option<&'a mut JSONSchemaProps> {
    for p in path {
        node = node.properties.as_mut()?.get_mut(*p)?;
    }
    Some(node)
}

fn items_mut(node: &mut JSONSchemaProps) -> Option<&mut JSONSchemaProps> {
    match node.items.as_mut()? {
        JSONSchemaPropsOrArray::Schema(s) => Some(s),
        JSONSchemaPropsOrArray::Schemas(_) => None,
    }
}

/// Marks `node`, an object of Kubernetes type `ty`, and everything under it.
fn mark(node: &mut JSONSchemaProps, ty: &str) {
    let Some(t) = table().types.get(ty) else {
        return;
    };
    if let Some(m) = &t.map_type {
        node.x_kubernetes_map_type = Some(m.clone());
    }
    for (name, f) in &t.fields {
        let Some(child) = node.properties.as_mut().and_then(|p| p.get_mut(name)) else {
            continue;
        };
        if let Some(l) = &f.list_type {
            child.x_kubernetes_list_type = Some(l.clone());
        }
        if let Some(k) = &f.list_map_keys {
            child.x_kubernetes_list_map_keys = Some(k.clone());
        }
        if let Some(m) = &f.map_type {
            child.x_kubernetes_map_type = Some(m.clone());
        }
        if let Some(of) = &f.of {
            mark(child, of);
        }
        if let Some(item_type) = &f.items
            && let Some(items) = items_mut(child)
        {
            mark(items, item_type);
            if let Some(keys) = &f.list_map_keys {
                let markers = table().types.get(item_type);
                require_keys(items, keys, markers.unwrap_or(&TypeMarkers::default()));
            }
        }
    }
}

/// The apiserver takes a list-map only if each key of an entry is required or defaulted: a key
/// Kubernetes defaults (a port's protocol) gets its default, the others are required (as they
/// are in Kubernetes' own schema, or as the entry's identity in a merge template).
fn require_keys(items: &mut JSONSchemaProps, keys: &[String], markers: &TypeMarkers) {
    for key in keys {
        let required = items.required.get_or_insert_with(Vec::new);
        if required.contains(key) {
            continue;
        }
        let default = markers.key_defaults.get(key).filter(|d| !d.is_null());
        match (
            default,
            items.properties.as_mut().and_then(|p| p.get_mut(key)),
        ) {
            (Some(d), Some(prop)) => prop.default = Some(JSON(d.clone())),
            _ => required.push(key.clone()),
        }
    }
    if items.required.as_ref().is_some_and(Vec::is_empty) {
        items.required = None;
    }
}
