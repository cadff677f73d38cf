//! Schema helpers for shapes schemars cannot infer the way Kubernetes wants them.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Any JSON value, kept as is (`x-kubernetes-preserve-unknown-fields`): config values, outputs.
pub fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// A string whose values the type documents (PKO's schema has no enum there).
pub fn string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string" })
}

/// A map of arbitrary JSON values.
pub fn json_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// A Go `metav1.Duration`: a string such as `24h`, `5m30s`.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string" })
}

/// An RFC 3339 timestamp as Kubernetes writes them.
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

/// `metav1.Condition`s, a list keyed by `type`, as every Kubernetes status has them, with the
/// validation `metav1.Condition`'s markers give it (k8s-openapi's schema has the types only).
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    use serde_json::json;
    let mut schema =
        generator.subschema_for::<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>();
    let obj = schema.ensure_object();
    obj.insert("x-kubernetes-list-type".into(), "map".into());
    obj.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
    if let Some(serde_json::Value::Object(props)) =
        obj.get_mut("items").and_then(|i| i.get_mut("properties"))
    {
        let markers = [
            ("message", json!({"maxLength": MAX_CONDITION_MESSAGE})),
            ("observedGeneration", json!({"minimum": 0})),
            (
                "reason",
                json!({"maxLength": 1024, "minLength": 1, "pattern": CONDITION_REASON}),
            ),
            ("status", json!({"enum": ["True", "False", "Unknown"]})),
            ("type", json!({"maxLength": 316, "pattern": CONDITION_TYPE})),
        ];
        for (field, marker) in markers {
            if let (Some(serde_json::Value::Object(p)), serde_json::Value::Object(m)) =
                (props.get_mut(field), marker)
            {
                p.extend(m);
            }
        }
    }
    schema
}

/// What the apiserver admits as a condition's message, in characters.
pub const MAX_CONDITION_MESSAGE: usize = 32768;
/// A condition's reason: CamelCase, as `metav1.Condition` requires.
pub const CONDITION_REASON: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";
/// A condition's type: CamelCase or `foo.example.com/CamelCase`.
pub const CONDITION_TYPE: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$";

/// A template's `metadata`, as PKO's `ObjectMetaApplyConfiguration`: `ObjectMeta` with every
/// field optional, less what no client writes (`managedFields`, `selfLink`).
pub fn template_metadata(generator: &mut SchemaGenerator) -> Schema {
    let mut schema =
        all_optional::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(generator);
    if let Some(serde_json::Value::Object(props)) =
        schema.as_object_mut().and_then(|o| o.get_mut("properties"))
    {
        props.remove("managedFields");
        props.remove("selfLink");
    }
    schema
}

/// A Stack's `workspaceTemplate.spec`, as PKO's: the Workspace spec without defaults (a
/// template sets only what it names), where this API's own objects require nothing (a
/// template may name one field of a GitHub App) but the Kubernetes objects inside (an env
/// var's `secretKeyRef`, the pod's containers) keep what Kubernetes requires of them.
pub fn workspace_template_spec(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<super::workspace::WorkspaceSpec>();
    strip_defaults(&mut schema);
    for own in [
        "/properties/git/properties/auth/properties/githubApp",
        "/properties/projectInfo",
    ] {
        if let Some(o) = schema.pointer_mut(own).and_then(|v| v.as_object_mut()) {
            o.remove("required");
        }
    }
    schema
}

/// A template's `status`: kept as written and never read, typed as `T` the way PKO's apply
/// configurations type it (no required fields, no validation beyond the types).
pub fn template_status<T: schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = all_optional::<T>(generator);
    types_only(&mut schema);
    schema
}

/// Marks a list as atomic (replaced whole by server-side apply).
pub fn atomic_strings(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string" },
        "x-kubernetes-list-type": "atomic"
    })
}

/// The schema of `T` with every `required` and `default` removed, recursively: the shape of an
/// apply configuration (PKO's `WorkspaceApplyConfiguration`), where every field is optional.
pub fn all_optional<T: schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<T>();
    strip(&mut schema, &["required", "default"]);
    schema
}

fn strip_defaults(schema: &mut Schema) {
    strip(schema, &["default"]);
}

/// Leaves types, formats and descriptions: what an apply configuration's schema says.
fn types_only(schema: &mut Schema) {
    strip(
        schema,
        &[
            "required",
            "default",
            "enum",
            "pattern",
            "maxLength",
            "minLength",
            "minimum",
            "maximum",
            "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys",
        ],
    );
}

fn strip(schema: &mut Schema, keywords: &[&str]) {
    if let Some(obj) = schema.as_object_mut() {
        strip_schema(obj, keywords);
    }
}

/// Removes `keywords` wherever they are schema keywords (so that a property that happens to
/// be named `default` survives).
fn strip_schema(obj: &mut serde_json::Map<String, serde_json::Value>, keywords: &[&str]) {
    use serde_json::Value;
    for k in keywords {
        obj.remove(*k);
    }
    let each = |v: &mut Value| {
        if let Value::Object(o) = v {
            strip_schema(o, keywords);
        }
    };
    for key in ["items", "additionalProperties", "not"] {
        if let Some(v) = obj.get_mut(key) {
            each(v);
        }
    }
    // The apiserver insists that a list-map's keys are required (or defaulted): an entry of a
    // merge template still names the entry it merges into.
    if let Some(Value::Array(keys)) = obj.get("x-kubernetes-list-map-keys").cloned()
        && let Some(Value::Object(items)) = obj.get_mut("items")
    {
        items.insert("required".into(), Value::Array(keys));
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.values_mut().for_each(each);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = obj.get_mut(key) {
            list.iter_mut().for_each(each);
        }
    }
}
