//! A configuration change without a new pod (PKO#965: there, any change to a Stack's config
//! restarts its workspace pod, losing its installed plugins and its place on the node).
//!
//! A pod is initialized with the Workspace's `spec.stacks`; what it was initialized with is
//! recorded on the pod ([`label::INITIALIZED_STACKS`]: a digest, and the shape: each stack's
//! name, settings and config keys, never a value). When `spec.stacks` changes, the pod is set up
//! again in place if nothing it already holds must go: config values changed or keys added
//! (`config set-all` takes them). Anything else (a key or an environment removed, a stack
//! renamed, another secrets provider) needs a fresh pod, whose initialization starts clean;
//! the pod is then deleted and its StatefulSet makes the new one (pure decisions here).

use serde::{Deserialize, Serialize};

use crate::api::names::label;
use crate::api::workspace::{Workspace, WorkspaceStack};

/// What a pod was initialized with, as recorded on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Of the whole `spec.stacks`, values included.
    pub digest: String,
    pub stacks: Vec<Shape>,
}

/// One stack as initialized, without its config values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    /// Each config key, with whether it is a path (`a.b[0]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<(String, bool)>,
}

impl Shape {
    fn of(s: &WorkspaceStack) -> Shape {
        Shape {
            name: s.name.clone(),
            create: s.create,
            secrets_provider: s.secrets_provider.clone(),
            environment: s.environment.clone().unwrap_or_default(),
            keys: s
                .config
                .iter()
                .flatten()
                .map(|c| (c.key.clone(), c.path.unwrap_or(false)))
                .collect(),
        }
    }

    /// Whether `next` can be applied over what `self` put in place: the same stack and
    /// settings, and every key still there (in the same path mode).
    fn grows_into(&self, next: &Shape) -> bool {
        self.name == next.name
            && self.create == next.create
            && self.secrets_provider == next.secrets_provider
            && self.environment == next.environment
            && self.keys.iter().all(|k| next.keys.contains(k))
    }
}

impl Applied {
    pub fn of(ws: &Workspace) -> Applied {
        let stacks = ws.spec.stacks.clone().unwrap_or_default();
        let text = serde_json::to_string(&stacks).unwrap_or_default();
        Applied {
            digest: crate::controller::short_digest(text.as_bytes()),
            stacks: stacks.iter().map(Shape::of).collect(),
        }
    }

    /// The annotation's value.
    pub fn annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From a pod's annotations; None when it was never initialized by this operator.
    pub fn on(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<Self> {
        let a = annotations?;
        if a.get(label::INITIALIZED).map(String::as_str) != Some("true") {
            return None;
        }
        serde_json::from_str(a.get(label::INITIALIZED_STACKS)?).ok()
    }
}

/// How to bring a pod to the Workspace's stacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// Initialized with exactly these stacks.
    Current,
    /// Never initialized: the whole initialization.
    Initialize,
    /// Initialized with an earlier config that the new one only changes or adds to: the
    /// stacks are selected and configured again in place.
    Reconfigure,
    /// What the pod holds must go: a new pod, for the reason given.
    Restart(String),
}

/// Pure: what the pod (`annotations`) needs for `desired`. `initialized` is the pod's plain
/// marker (set by any earlier version of this operator).
pub fn setup(initialized: bool, applied: Option<&Applied>, desired: &Applied) -> Setup {
    let Some(applied) = applied else {
        return if initialized {
            Setup::Restart("it was initialized without a record of its configuration".into())
        } else {
            Setup::Initialize
        };
    };
    if applied.digest == desired.digest {
        return Setup::Current;
    }
    if applied.stacks.len() != desired.stacks.len() {
        return Setup::Restart("the Workspace's stacks changed".into());
    }
    for (was, now) in applied.stacks.iter().zip(&desired.stacks) {
        if !was.grows_into(now) {
            return Setup::Restart(why_not(was, now));
        }
    }
    Setup::Reconfigure
}

fn why_not(was: &Shape, now: &Shape) -> String {
    if was.name != now.name {
        return format!("stack {:?} became {:?}", was.name, now.name);
    }
    if was.environment != now.environment {
        return format!("the environments of stack {:?} changed", now.name);
    }
    if let Some((key, _)) = was.keys.iter().find(|k| !now.keys.contains(k)) {
        return format!("config key {key:?} of stack {:?} was removed", now.name);
    }
    format!("the settings of stack {:?} changed", now.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::workspace::{ConfigItem, WorkspaceSpec};
    use serde_json::json;

    fn ws(stacks: serde_json::Value) -> Workspace {
        let stacks: Vec<WorkspaceStack> = serde_json::from_value(stacks).expect("stacks");
        Workspace::new(
            "app",
            WorkspaceSpec {
                stacks: Some(stacks),
                ..Default::default()
            },
        )
    }

    fn item(key: &str, value: &str) -> serde_json::Value {
        serde_json::to_value(ConfigItem {
            key: key.into(),
            value: Some(json!(value)),
            ..Default::default()
        })
        .expect("item")
    }

    fn one(config: Vec<serde_json::Value>) -> Applied {
        Applied::of(&ws(json!([{"name": "dev", "config": config}])))
    }

    #[test]
    fn each_change_of_the_stacks_is_set_up_in_place_or_on_a_new_pod() {
        let base = one(vec![item("a", "1"), item("b", "2")]);
        let restart = |why: &str| Setup::Restart(why.into());
        let table = [
            (one(vec![item("a", "1"), item("b", "2")]), Setup::Current),
            (
                one(vec![item("a", "9"), item("b", "2")]),
                Setup::Reconfigure,
            ),
            (
                one(vec![item("a", "1"), item("b", "2"), item("c", "3")]),
                Setup::Reconfigure,
            ),
            // Order is not what matters; the keys are.
            (
                one(vec![item("b", "2"), item("a", "1")]),
                Setup::Reconfigure,
            ),
            (
                one(vec![item("a", "1")]),
                restart("config key \"b\" of stack \"dev\" was removed"),
            ),
            (
                Applied::of(&ws(
                    json!([{"name": "prod", "config": [item("a", "1"), item("b", "2")]}]),
                )),
                restart("stack \"dev\" became \"prod\""),
            ),
            (
                Applied::of(&ws(json!([{"name": "dev", "environment": ["e"],
                    "config": [item("a", "1"), item("b", "2")]}]))),
                restart("the environments of stack \"dev\" changed"),
            ),
            (
                Applied::of(&ws(json!([{"name": "dev", "secretsProvider": "passphrase",
                    "config": [item("a", "1"), item("b", "2")]}]))),
                restart("the settings of stack \"dev\" changed"),
            ),
            (
                Applied::of(&ws(json!([]))),
                restart("the Workspace's stacks changed"),
            ),
        ];
        for (desired, want) in table {
            assert_eq!(setup(true, Some(&base), &desired), want, "{desired:?}");
        }
    }

    #[test]
    fn a_path_key_is_another_key() {
        let base = one(vec![item("a", "1")]);
        let mut as_path: ConfigItem = serde_json::from_value(item("a", "1")).expect("item");
        as_path.path = Some(true);
        let desired = one(vec![serde_json::to_value(as_path).expect("item")]);
        assert_eq!(
            setup(true, Some(&base), &desired),
            Setup::Restart("config key \"a\" of stack \"dev\" was removed".into())
        );
    }

    #[test]
    fn a_pod_without_a_record_is_initialized_or_replaced() {
        let desired = one(vec![item("a", "1")]);
        assert_eq!(setup(false, None, &desired), Setup::Initialize);
        assert!(matches!(setup(true, None, &desired), Setup::Restart(_)));
    }

    #[test]
    fn the_record_holds_keys_never_values_and_reads_back_from_the_pod() {
        let applied = one(vec![item("password", "hunter2")]);
        let text = applied.annotation();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("password"), "{text}");
        let mut a = std::collections::BTreeMap::new();
        a.insert(label::INITIALIZED_STACKS.to_string(), text);
        assert_eq!(Applied::on(Some(&a)), None, "not marked initialized");
        a.insert(label::INITIALIZED.to_string(), "true".into());
        assert_eq!(Applied::on(Some(&a)), Some(applied));
        a.insert(label::INITIALIZED_STACKS.to_string(), "{".into());
        assert_eq!(Applied::on(Some(&a)), None, "unreadable");
    }
}
