//! Validates an object against a CRD's structural schema the way the apiserver does with
//! `fieldValidation=Strict` (what `kubectl apply --validate=strict` asks for): types, required
//! fields, enums, and unknown fields reported rather than pruned. A stand-in until the control
//! plane tests (issue 4) apply the samples to a real apiserver; it checks only what structural
//! schemas say, not CEL rules or formats.

use serde_json::Value;

/// Problems found, each `path: what`; empty means valid.
pub fn validate(schema: &Value, object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, object, "", &mut errors);
    errors
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let here = if path.is_empty() { "." } else { path };
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{here}: null is not allowed"));
        }
        return;
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{here}: must be an integer or a string"));
        }
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        errors.push(format!(
            "{here}: {value} is not one of {}",
            Value::Array(values.clone())
        ));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => {
            errors.push(format!("{here}: schema has unknown type {other}"));
            return;
        }
        None => preserve,
    };
    if !type_ok {
        errors.push(format!(
            "{here}: expected {}, got {value}",
            ty.unwrap_or("a typed value")
        ));
        return;
    }
    if let (Some(min), Some(s)) = (
        schema.get("minLength").and_then(Value::as_u64),
        value.as_str(),
    ) && (s.chars().count() as u64) < min
    {
        errors.push(format!("{here}: shorter than {min}"));
    }
    if let Some(items) = value.as_array() {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
        return;
    }
    let Some(fields) = value.as_object() else {
        return;
    };
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(r) {
                errors.push(format!("{here}: required field {r:?} is missing"));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (k, v) in fields {
        let at = format!("{path}.{k}");
        if let Some(p) = props.and_then(|p| p.get(k)) {
            check(p, v, &at, errors);
        } else if let Some(a) = additional.filter(|a| a.is_object()) {
            check(a, v, &at, errors);
        } else if !preserve && additional != Some(&Value::Bool(true)) {
            errors.push(format!("{at}: unknown field"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "mode": {"type": "string", "enum": ["a", "b"], "nullable": true},
                "tags": {"type": "array", "items": {"type": "string"}},
                "free": {"x-kubernetes-preserve-unknown-fields": true},
                "map": {"type": "object", "additionalProperties": {"type": "integer"}},
                "port": {"x-kubernetes-int-or-string": true}
            }
        })
    }

    #[test]
    fn a_conforming_object_has_no_errors() {
        let obj = json!({"name": "x", "mode": "a", "tags": ["t"], "free": {"any": [1, {}]},
                         "map": {"k": 1}, "port": "http"});
        assert_eq!(validate(&schema(), &obj), Vec::<String>::new());
    }

    #[test]
    fn each_violation_is_reported_with_its_path() {
        let obj = json!({"mode": "c", "tags": [1], "map": {"k": "v"}, "extra": true,
                         "port": 1.5, "name": ""});
        let errors = validate(&schema(), &obj).join("\n");
        for needle in [
            ".mode: \"c\" is not one of",
            ".tags[0]: expected string",
            ".map.k: expected integer",
            ".extra: unknown field",
            ".port: must be an integer or a string",
            ".name: shorter than 1",
        ] {
            assert!(errors.contains(needle), "{needle} not in:\n{errors}");
        }
        let missing = validate(&schema(), &json!({}));
        assert_eq!(
            missing,
            vec![". : required field \"name\" is missing".replace(". :", ".:")]
        );
    }
}
