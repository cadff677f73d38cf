//! Objects a structural schema admits, made at random from a seed: to check that whatever a CRD
//! (PKO's) lets users store, another schema (ours) admits and our types can read. Every value
//! is one the apiserver would take: required fields present, enums respected, formats it
//! validates (`date-time`, `byte`) well-formed, lengths and bounds kept; optional fields,
//! list lengths, map keys and free-form values vary with the seed. Unusual but valid values
//! are favoured (empty and odd strings, negative numbers), since those are what a reader
//! refuses.

use serde_json::{Map, Value, json};

/// A small deterministic generator (xorshift64*): the same seed makes the same object.
pub struct Sampler {
    state: u64,
    /// Nesting left before optional fields stop being added.
    depth: usize,
}

const STRINGS: &[&str] = &[
    "",
    "a",
    "Secret",
    "unknown-value",
    "x y",
    "ünï",
    "0",
    "-1",
    "null",
];

impl Sampler {
    pub fn new(seed: u64) -> Sampler {
        Sampler {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            depth: 0,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A value `schema` admits.
    pub fn value(&mut self, schema: &Value) -> Value {
        if let Some(values) = schema.get("enum").and_then(Value::as_array)
            && !values.is_empty()
        {
            let i = self.below(values.len());
            return values[i].clone();
        }
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return if self.chance(50) {
                json!(self.below(100))
            } else {
                json!("50%")
            };
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => self.object(schema),
            Some("array") => {
                let items = schema.get("items").cloned().unwrap_or(json!({}));
                let n = if self.depth > 6 { 0 } else { self.below(3) };
                let mut out: Vec<Value> = Vec::new();
                let keys = list_map_keys(schema);
                for _ in 0..n {
                    let v = self.nested(&items);
                    // A list-map's entries are unique by their keys.
                    if !keys.is_empty()
                        && out
                            .iter()
                            .any(|o| keys.iter().all(|k| o.get(k) == v.get(k)))
                    {
                        continue;
                    }
                    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set")
                        && out.contains(&v)
                    {
                        continue;
                    }
                    out.push(v);
                }
                Value::Array(out)
            }
            Some("string") => self.string(schema),
            Some("integer") => {
                let min = schema.get("minimum").and_then(Value::as_i64).unwrap_or(-5);
                let max = schema.get("maximum").and_then(Value::as_i64).unwrap_or(100);
                let span = (max - min).max(0) as usize + 1;
                json!(min + self.below(span.min(1000)) as i64)
            }
            Some("number") => json!(self.below(100) as f64 / 4.0),
            Some("boolean") => json!(self.chance(50)),
            _ if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) => {
                self.free_form()
            }
            _ => json!({}),
        }
    }

    fn nested(&mut self, schema: &Value) -> Value {
        self.depth += 1;
        let v = self.value(schema);
        self.depth -= 1;
        v
    }

    fn object(&mut self, schema: &Value) -> Value {
        let mut out = Map::new();
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            // Deep optional fields thin out, so that objects stay small.
            let percent = 60u64.saturating_sub(8 * self.depth as u64);
            for (name, sub) in props {
                if name == "metadata" && self.depth == 0 {
                    continue;
                }
                if required.contains(&name.as_str()) || self.chance(percent) {
                    out.insert(name.clone(), self.nested(sub));
                }
            }
        } else if let Some(additional) = schema.get("additionalProperties")
            && additional.is_object()
        {
            for i in 0..self.below(3) {
                let key = ["k", "with.dot", "UPPER"][i];
                out.insert(key.to_string(), self.nested(additional));
            }
        } else if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            // An object kept as written: any object.
            return match self.free_form() {
                o @ Value::Object(_) => o,
                other => json!({ "value": other }),
            };
        }
        Value::Object(out)
    }

    fn string(&mut self, schema: &Value) -> Value {
        match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => return json!("2026-12-07T05:04:06Z"),
            Some("byte") => return json!("aGVsbG8="),
            _ => {}
        }
        if schema.get("pattern").is_some() {
            // Patterns are few and name-like in these CRDs; a DNS label fits them.
            return json!("abc");
        }
        let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
        let max = schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .map_or(usize::MAX, |m| m as usize);
        let mut s = STRINGS[self.below(STRINGS.len())].to_string();
        while s.chars().count() < min {
            s.push('a');
        }
        json!(s.chars().take(max).collect::<String>())
    }

    /// Free-form JSON (`x-kubernetes-preserve-unknown-fields` without a type).
    fn free_form(&mut self) -> Value {
        match self.below(6) {
            0 => json!("text"),
            1 => json!(-3),
            2 => json!(true),
            3 => json!([1, "two", {"three": 3}]),
            4 => json!({"nested": {"a": [null]}}),
            _ => json!({}),
        }
    }
}

fn list_map_keys(schema: &Value) -> Vec<String> {
    schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| {
            k.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema_check::validate;

    #[test]
    fn samples_are_admitted_by_their_own_schema() {
        let schema = json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 3},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "free": {"x-kubernetes-preserve-unknown-fields": true},
                "map": {"type": "object", "additionalProperties": {"type": "integer"}},
                "port": {"x-kubernetes-int-or-string": true},
                "at": {"type": "string", "format": "date-time"},
                "n": {"type": "integer", "minimum": 0, "maximum": 3}
            }
        });
        for seed in 0..200 {
            let v = Sampler::new(seed).value(&schema);
            assert_eq!(validate(&schema, &v), Vec::<String>::new(), "{v}");
            assert!(
                v["name"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty() && s.len() <= 6)
            );
        }
    }

    #[test]
    fn the_same_seed_makes_the_same_object() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "integer"}}});
        assert_eq!(
            Sampler::new(7).value(&schema),
            Sampler::new(7).value(&schema)
        );
    }
}
