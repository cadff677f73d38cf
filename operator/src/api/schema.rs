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

/// An object kept as written and never read (a template's `status`).
pub fn ignored_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
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

/// `metav1.Condition`s, a list keyed by `type`, as every Kubernetes status has them.
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut schema =
        generator.subschema_for::<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>();
    let obj = schema.ensure_object();
    obj.insert("x-kubernetes-list-type".into(), "map".into());
    obj.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
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
    strip(&mut schema);
    schema
}

fn strip(schema: &mut Schema) {
    if let Some(obj) = schema.as_object_mut() {
        strip_schema(obj);
    }
}

/// Walks schema keywords only, so a property that happens to be named `default` survives.
fn strip_schema(obj: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    obj.remove("required");
    obj.remove("default");
    let each = |v: &mut Value| {
        if let Value::Object(o) = v {
            strip_schema(o);
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
