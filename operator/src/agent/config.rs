//! Stack configuration from `SetAllConfig` items to `pulumi config set-all` arguments.
//!
//! Two modes, as PKO's agent: when every value is a plain string, `--path` mode (keys that
//! are not paths are escaped as `["key"]` so dots in them stay literal); when any value is
//! structured JSON, `--json` mode (CLI 3.202.0 and later), where a structured value is sent as
//! its compact JSON text plus the parsed object.

use std::collections::BTreeMap;

use prost_types::value::Kind;
use serde_json::{Map, Value, json};

use crate::proto::{ConfigItem, config_item, config_value_from};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing value for environment variable: {0}")]
    MissingEnv(String),
    #[error("unreadable path: {0}")]
    UnreadablePath(String),
    #[error("config item {0:?}: path=true is incompatible with JSON values")]
    PathWithJson(String),
    #[error("config item {0:?}: the value is not valid JSON ({1})")]
    InvalidJson(String, String),
    #[error("config item {0:?} has an empty key")]
    EmptyKey(String),
}

/// Where `valueFrom` values are read: the agent's environment (plus the env file) and files.
pub trait ValueSource {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> Option<String>;
}

/// The process environment, then the env-file lines, and the filesystem.
pub struct Host<'a> {
    pub extra_env: &'a [(String, String)],
}

impl ValueSource for Host<'_> {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| {
            self.extra_env
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    fn file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
}

/// Whether an item needs `--json` mode.
pub fn is_json(item: &ConfigItem) -> bool {
    match &item.v {
        Some(config_item::V::Value(v)) => !matches!(
            v.kind,
            None | Some(Kind::StringValue(_)) | Some(Kind::NullValue(_))
        ),
        Some(config_item::V::ValueFrom(f)) => f.json.unwrap_or(false),
        None => false,
    }
}

/// The arguments after `config set-all --stack <name>`.
pub fn set_all_args(
    project: &str,
    items: &[ConfigItem],
    source: &dyn ValueSource,
) -> Result<Vec<String>, ConfigError> {
    if items.iter().any(is_json) {
        let payload = json_payload(project, items, source)?;
        return Ok(vec!["--json".into(), payload.to_string()]);
    }
    let mut args = vec!["--path".to_string()];
    for item in items {
        let key = path_key(project, item)?;
        let value = match &item.v {
            Some(config_item::V::Value(v)) => plain_text(v),
            Some(config_item::V::ValueFrom(f)) => read_from(f, source)?,
            None => String::new(),
        };
        args.push(if item.secret.unwrap_or(false) {
            "--secret".into()
        } else {
            "--plaintext".into()
        });
        args.push(format!("{key}={value}"));
    }
    Ok(args)
}

fn qualified(project: &str, key: &str) -> Result<String, ConfigError> {
    if key.is_empty() {
        return Err(ConfigError::EmptyKey(key.into()));
    }
    Ok(if key.contains(':') {
        key.to_string()
    } else {
        format!("{project}:{key}")
    })
}

/// `project:key`, with the key escaped as `["key"]` unless it is a path.
fn path_key(project: &str, item: &ConfigItem) -> Result<String, ConfigError> {
    let full = qualified(project, &item.key)?;
    if item.path.unwrap_or(false) {
        return Ok(full);
    }
    let (ns, name) = full.split_once(':').unwrap_or(("", &full));
    if name.starts_with("[\"") && name.ends_with("\"]") {
        return Ok(full);
    }
    Ok(format!("{ns}:[{}]", go_quote(name)))
}

/// A Go `%q`-style quoted string: what the CLI's path parser reads back.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn plain_text(v: &prost_types::Value) -> String {
    match &v.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::NullValue(_)) | None => String::new(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::NumberValue(n)) => format_number(*n),
        Some(other) => to_json(&prost_types::Value {
            kind: Some(other.clone()),
        })
        .to_string(),
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn read_from(
    from: &crate::proto::ConfigValueFrom,
    source: &dyn ValueSource,
) -> Result<String, ConfigError> {
    match &from.f {
        Some(config_value_from::F::Env(name)) => source
            .env(name)
            .ok_or_else(|| ConfigError::MissingEnv(name.clone())),
        Some(config_value_from::F::Path(path)) => source
            .file(path)
            .ok_or_else(|| ConfigError::UnreadablePath(path.clone())),
        None => Ok(String::new()),
    }
}

/// `{"project:key": {"value": "...", "objectValue": ..., "secret": bool}}`.
fn json_payload(
    project: &str,
    items: &[ConfigItem],
    source: &dyn ValueSource,
) -> Result<Value, ConfigError> {
    let mut out = Map::new();
    for item in items {
        let key = qualified(project, &item.key)?;
        let secret = item.secret.unwrap_or(false);
        let entry = match &item.v {
            Some(config_item::V::Value(v)) => {
                let value = to_json(v);
                match value {
                    Value::String(s) => json!({"value": s, "secret": secret}),
                    Value::Null => json!({"value": "", "secret": secret}),
                    structured => {
                        if item.path.unwrap_or(false) {
                            return Err(ConfigError::PathWithJson(item.key.clone()));
                        }
                        json!({"value": structured.to_string(), "objectValue": structured, "secret": secret})
                    }
                }
            }
            Some(config_item::V::ValueFrom(f)) => {
                let raw = read_from(f, source)?;
                if f.json.unwrap_or(false) {
                    if item.path.unwrap_or(false) {
                        return Err(ConfigError::PathWithJson(item.key.clone()));
                    }
                    let parsed: Value = serde_json::from_str(&raw)
                        .map_err(|e| ConfigError::InvalidJson(item.key.clone(), e.to_string()))?;
                    json!({"value": parsed.to_string(), "objectValue": parsed, "secret": secret})
                } else {
                    json!({"value": raw, "secret": secret})
                }
            }
            None => json!({"value": "", "secret": secret}),
        };
        out.insert(key, entry);
    }
    Ok(Value::Object(out))
}

/// `google.protobuf.Value` to JSON (object keys sorted, as Go's encoder writes them).
pub fn to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                json!(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(to_json).collect()),
        Some(Kind::StructValue(s)) => {
            let sorted: BTreeMap<&String, Value> =
                s.fields.iter().map(|(k, v)| (k, to_json(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
    }
}

/// JSON to `google.protobuf.Value`.
pub fn from_json(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(from_json).collect(),
        }),
        Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn to_struct(o: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ConfigValueFrom;

    struct Fake;
    impl ValueSource for Fake {
        fn env(&self, name: &str) -> Option<String> {
            (name == "REGION").then(|| "eu-west-1".into())
        }
        fn file(&self, path: &str) -> Option<String> {
            match path {
                "/cfg/tags.json" => Some("{\"b\": 2, \"a\": [1, \"x\"]}".into()),
                "/cfg/name" => Some("plain name".into()),
                _ => None,
            }
        }
    }

    fn literal(key: &str, v: Value) -> ConfigItem {
        ConfigItem {
            key: key.into(),
            v: Some(config_item::V::Value(from_json(&v))),
            ..Default::default()
        }
    }

    fn from(key: &str, f: config_value_from::F, json: bool) -> ConfigItem {
        ConfigItem {
            key: key.into(),
            v: Some(config_item::V::ValueFrom(ConfigValueFrom {
                f: Some(f),
                json: Some(json),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn plain_strings_use_path_mode_with_literal_keys_escaped() {
        let mut secret = literal("token", json!("hunter2"));
        secret.secret = Some(true);
        let mut path = literal("tags.owner", json!("me"));
        path.path = Some(true);
        let items = vec![
            literal("a.b", json!("dotted")),
            literal("aws:region", json!("eu")),
            secret,
            path,
            from("env", config_value_from::F::Env("REGION".into()), false),
            from(
                "file",
                config_value_from::F::Path("/cfg/name".into()),
                false,
            ),
        ];
        let args = set_all_args("proj", &items, &Fake).expect("args");
        assert_eq!(
            args,
            [
                "--path",
                "--plaintext",
                "proj:[\"a.b\"]=dotted",
                "--plaintext",
                "aws:[\"region\"]=eu",
                "--secret",
                "proj:[\"token\"]=hunter2",
                "--plaintext",
                "proj:tags.owner=me",
                "--plaintext",
                "proj:[\"env\"]=eu-west-1",
                "--plaintext",
                "proj:[\"file\"]=plain name",
            ]
        );
    }

    #[test]
    fn any_structured_value_switches_to_json_mode() {
        let items = vec![
            literal("count", json!(3)),
            literal("name", json!("x")),
            literal("obj", json!({"z": 1, "a": [true, 1.5]})),
            from(
                "tags",
                config_value_from::F::Path("/cfg/tags.json".into()),
                true,
            ),
        ];
        let args = set_all_args("proj", &items, &Fake).expect("args");
        assert_eq!(args[0], "--json");
        let payload: Value = serde_json::from_str(&args[1]).expect("json");
        assert_eq!(
            payload["proj:count"],
            json!({"value": "3", "objectValue": 3, "secret": false})
        );
        assert_eq!(payload["proj:name"], json!({"value": "x", "secret": false}));
        assert_eq!(
            payload["proj:obj"]["value"],
            json!("{\"a\":[true,1.5],\"z\":1}")
        );
        assert_eq!(
            payload["proj:tags"]["objectValue"],
            json!({"a": [1, "x"], "b": 2})
        );
    }

    #[test]
    fn bad_items_are_refused_with_the_reason() {
        let missing = from("x", config_value_from::F::Env("NOPE".into()), false);
        assert_eq!(
            set_all_args("p", &[missing], &Fake),
            Err(ConfigError::MissingEnv("NOPE".into()))
        );
        let unreadable = from("x", config_value_from::F::Path("/nope".into()), false);
        assert_eq!(
            set_all_args("p", &[unreadable], &Fake),
            Err(ConfigError::UnreadablePath("/nope".into()))
        );
        let mut path_json = literal("x", json!({"a": 1}));
        path_json.path = Some(true);
        assert_eq!(
            set_all_args("p", &[path_json], &Fake),
            Err(ConfigError::PathWithJson("x".into()))
        );
        let not_json = from("x", config_value_from::F::Path("/cfg/name".into()), true);
        assert!(matches!(
            set_all_args("p", &[not_json], &Fake),
            Err(ConfigError::InvalidJson(..))
        ));
    }

    #[test]
    fn go_quoting_escapes_quotes_and_backslashes() {
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
