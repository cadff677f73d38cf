//! `operator/src/api/k8s_list_markers.json` is what a real kube-apiserver (the tests' pin)
//! publishes about how server-side apply merges the Kubernetes types our CRDs embed (pod
//! templates, env, resources, secret references): list types and map keys, atomic structs.
//! Regenerate it with `UPDATE_K8S_MARKERS=1 cargo test -p operator --test list_markers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value, json};

/// The Kubernetes types our CRDs embed (see `api::list_markers::ROOTS`).
const ROOTS: &[&str] = &[
    "io.k8s.api.core.v1.PodSpec",
    "io.k8s.api.core.v1.EnvVar",
    "io.k8s.api.core.v1.EnvFromSource",
    "io.k8s.api.core.v1.ResourceRequirements",
    "io.k8s.api.core.v1.SecretKeySelector",
];

const REF_PREFIX: &str = "#/components/schemas/";

/// The type a property refers to: `$ref`, or `allOf: [{$ref}]` (how a ref with a default is
/// written).
fn referenced(p: &Value) -> Option<String> {
    p.get("$ref")
        .or_else(|| p.get("allOf")?.get(0)?.get("$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(REF_PREFIX))
        .map(String::from)
}

const MARKERS: &[(&str, &str)] = &[
    ("x-kubernetes-list-type", "listType"),
    ("x-kubernetes-list-map-keys", "listMapKeys"),
    ("x-kubernetes-map-type", "mapType"),
];

/// Every type reachable from the roots, with the markers of the type and of its fields, the
/// type each field leads to, and the defaults of the fields that key a list-map.
fn extract(schemas: &Map<String, Value>) -> Value {
    let mut types: BTreeMap<String, Value> = BTreeMap::new();
    let mut todo: Vec<String> = ROOTS.iter().map(|s| s.to_string()).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // (item type, keys) of every list-map met.
    let mut keyed: Vec<(String, Vec<String>)> = Vec::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(def) = schemas.get(&name) else {
            panic!("{name} is not in the apiserver's OpenAPI");
        };
        let mut entry = Map::new();
        if let Some(t) = def.get("x-kubernetes-map-type") {
            entry.insert("mapType".into(), t.clone());
        }
        let mut fields = Map::new();
        for (field, p) in def
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let mut f = Map::new();
            for (ext, key) in MARKERS {
                if let Some(v) = p.get(*ext) {
                    f.insert((*key).into(), v.clone());
                }
            }
            if let Some(t) = referenced(p) {
                todo.push(t.clone());
                f.insert("type".into(), t.into());
            }
            if let Some(t) = p.get("items").and_then(referenced) {
                todo.push(t.clone());
                if let Some(keys) = p
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                {
                    keyed.push((
                        t.clone(),
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect(),
                    ));
                }
                f.insert("items".into(), t.into());
            }
            if !f.is_empty() {
                fields.insert(field.clone(), Value::Object(f));
            }
        }
        entry.insert("fields".into(), Value::Object(fields));
        types.insert(name, Value::Object(entry));
    }
    for (item, keys) in keyed {
        let def = &schemas[&item];
        let required: Vec<&str> = def
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for k in keys {
            let default = def.pointer(&format!("/properties/{k}/default"));
            let entry = types.get_mut(&item).and_then(Value::as_object_mut);
            if let (Some(entry), false) = (entry, required.contains(&k.as_str())) {
                let defaults = entry
                    .entry("keyDefaults")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("an object");
                defaults.insert(k.clone(), default.cloned().unwrap_or(Value::Null));
            }
        }
    }
    // Only what leads to a marker is kept: the rest never changes a merge.
    let marked = leading_to_markers(&types);
    let kept: Map<String, Value> = types
        .into_iter()
        .filter(|(name, _)| marked.contains(name))
        .map(|(name, mut entry)| {
            if let Some(fields) = entry.get_mut("fields").and_then(Value::as_object_mut) {
                fields.retain(|_, f| leads_to_markers(f, &marked));
            }
            (name, entry)
        })
        .collect();
    json!({
        "source": "kube-apiserver /openapi/v3/api/v1 (the tests' Kubernetes pin)",
        "types": kept,
    })
}

/// Whether a field has a marker or leads to a type in `marked`.
fn leads_to_markers(field: &Value, marked: &BTreeSet<String>) -> bool {
    field.get("listType").is_some()
        || field.get("mapType").is_some()
        || [field.get("type"), field.get("items")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|t| marked.contains(t))
}

/// The types with a marker of their own, on a field, or on a type they lead to.
fn leading_to_markers(types: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let mut marked: BTreeSet<String> = BTreeSet::new();
    loop {
        let before = marked.len();
        for (name, entry) in types {
            let own = entry.get("mapType").is_some() || entry.get("keyDefaults").is_some();
            let via = entry["fields"]
                .as_object()
                .into_iter()
                .flatten()
                .any(|(_, f)| leads_to_markers(f, &marked));
            if own || via {
                marked.insert(name.clone());
            }
        }
        if marked.len() == before {
            return marked;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_markers_are_what_the_apiserver_publishes() {
    let cp = e2e::control_plane::ControlPlane::start()
        .await
        .expect("control plane");
    let req = http::Request::get("/openapi/v3/api/v1")
        .body(vec![])
        .expect("request");
    let text = cp.client().request_text(req).await.expect("OpenAPI v3");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    let mut want = serde_json::to_string_pretty(&extract(schemas)).expect("JSON");
    want.push('\n');
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/k8s_list_markers.json");
    if std::env::var_os("UPDATE_K8S_MARKERS").is_some() {
        std::fs::write(&path, &want).expect("write the markers");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == want,
        "{} is out of date with the apiserver's OpenAPI; regenerate it with \
         `UPDATE_K8S_MARKERS=1 cargo test -p operator --test list_markers`",
        path.display()
    );
}
