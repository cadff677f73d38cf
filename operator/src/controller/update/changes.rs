//! What an operation changed, or would change, per resource, read from the engine's events as
//! they stream by: each resource's URN, type, operation and the property paths that differ.
//! Values are never kept (they may be secrets), only paths.
//!
//! The engine reports a resource's step in `resourcePreEvent` and its result in
//! `resOutputsEvent`, both with `metadata.{op, urn, type, diffs, detailedDiff}`. A refresh's
//! pre-event only says `refresh`; its outputs event says what the refresh found (`update` with
//! the paths that differ, `delete` for a resource that is gone, `same`). A replacement comes as
//! several steps (`create-replacement`, `replace`, `delete-replaced`): one change here.

use std::collections::BTreeMap;

use prost_types::value::Kind;

use crate::api::update::ResourceChange;

/// At most this many resources are kept: a status is one etcd object, and a summary of
/// thousands of resources would not fit (the counts of all are in the run's summary).
pub const MAX_RESOURCES: usize = 100;
/// At most this many property paths per resource.
pub const MAX_PATHS: usize = 20;

/// The changes seen so far, by URN.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    by_urn: BTreeMap<String, ResourceChange>,
    omitted: usize,
}

/// Ops that change nothing (or, for a refresh's pre-event, say nothing yet).
const UNCHANGED: &[&str] = &["same", "refresh", "read", "read-discard"];

/// How telling an op is when one resource has several steps: the strongest is kept.
fn rank(op: &str) -> u8 {
    match op {
        "replace" => 5,
        "delete" => 4,
        "create" => 3,
        "update" => 2,
        _ => 1,
    }
}

/// The op a step is reported under: the steps of a replacement are one `replace`.
fn normalise(op: &str) -> &str {
    match op {
        "create-replacement" | "delete-replaced" | "replace" => "replace",
        "import-replacement" => "import",
        other => other,
    }
}

fn field<'a>(s: &'a prost_types::Struct, name: &str) -> Option<&'a Kind> {
    s.fields.get(name).and_then(|v| v.kind.as_ref())
}

fn text<'a>(s: &'a prost_types::Struct, name: &str) -> Option<&'a str> {
    match field(s, name) {
        Some(Kind::StringValue(v)) => Some(v),
        _ => None,
    }
}

fn object<'a>(s: &'a prost_types::Struct, name: &str) -> Option<&'a prost_types::Struct> {
    match field(s, name) {
        Some(Kind::StructValue(v)) => Some(v),
        _ => None,
    }
}

impl Changes {
    /// Takes in one engine event (the `event` of an operation's stream).
    pub fn observe(&mut self, event: &prost_types::Struct) {
        let Some(meta) = ["resOutputsEvent", "resourcePreEvent"]
            .iter()
            .find_map(|k| object(event, k))
            .and_then(|e| object(e, "metadata"))
        else {
            return;
        };
        let (Some(op), Some(urn)) = (text(meta, "op"), text(meta, "urn")) else {
            return;
        };
        if UNCHANGED.contains(&op) {
            return;
        }
        let op = normalise(op);
        let mut paths: Vec<String> = object(meta, "detailedDiff")
            .map(|d| d.fields.keys().cloned().collect())
            .unwrap_or_default();
        if paths.is_empty()
            && let Some(Kind::ListValue(l)) = field(meta, "diffs")
        {
            paths = l
                .values
                .iter()
                .filter_map(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect();
        }
        if !self.by_urn.contains_key(urn) && self.by_urn.len() >= MAX_RESOURCES {
            self.omitted += 1;
            return;
        }
        let c = self
            .by_urn
            .entry(urn.to_string())
            .or_insert_with(|| ResourceChange {
                urn: urn.to_string(),
                resource_type: text(meta, "type").unwrap_or_default().to_string(),
                operation: op.to_string(),
                paths: None,
            });
        if rank(op) > rank(&c.operation) {
            c.operation = op.to_string();
        }
        if !paths.is_empty() {
            let all = c.paths.get_or_insert_with(Vec::new);
            for p in paths {
                if !all.contains(&p) && all.len() < MAX_PATHS {
                    all.push(p);
                }
            }
            all.sort();
        }
    }

    /// The resources seen, by URN.
    pub fn resources(&self) -> Vec<ResourceChange> {
        self.by_urn.values().cloned().collect()
    }

    /// How many more resources changed than are kept ([`MAX_RESOURCES`]).
    pub fn omitted(&self) -> usize {
        self.omitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::to_struct;
    use serde_json::json;

    fn event(kind: &str, meta: serde_json::Value) -> prost_types::Struct {
        let v = json!({ kind: {"metadata": meta}, "sequence": 3 });
        to_struct(v.as_object().expect("object"))
    }

    #[test]
    fn a_refresh_reports_what_it_found_by_path_and_never_a_value() {
        let mut c = Changes::default();
        let cm = "urn:pulumi:dev::p::kubernetes:core/v1:ConfigMap::cm";
        // What pulumi v3.259's `refresh --preview-only` wrote for a ConfigMap edited behind
        // its back, and for one deleted (captured from its event log).
        c.observe(&event(
            "resourcePreEvent",
            json!({"op": "refresh", "urn": cm, "type": "kubernetes:core/v1:ConfigMap"}),
        ));
        c.observe(&event(
            "resOutputsEvent",
            json!({"op": "update", "urn": cm, "type": "kubernetes:core/v1:ConfigMap",
                   "old": {"outputs": {"data": {"color": "blue"}}},
                   "new": {"outputs": {"data": {"color": "red"}}},
                   "detailedDiff": {"data.color": {"diffKind": "update-replace", "inputDiff": false}}}),
        ));
        c.observe(&event(
            "resOutputsEvent",
            json!({"op": "same", "urn": "urn:pulumi:dev::p::pulumi:pulumi:Stack::p-dev", "type": "pulumi:pulumi:Stack"}),
        ));
        c.observe(&event(
            "resOutputsEvent",
            json!({"op": "delete", "urn": "urn:pulumi:dev::p::kubernetes:core/v1:ConfigMap::gone", "type": "kubernetes:core/v1:ConfigMap"}),
        ));
        c.observe(&event("summaryEvent", json!({})));
        let r = c.resources();
        assert_eq!(r.len(), 2, "{r:?}");
        let updated = r.iter().find(|x| x.urn == cm).expect("the edited one");
        assert_eq!(updated.operation, "update");
        assert_eq!(updated.paths, Some(vec!["data.color".to_string()]));
        assert_eq!(updated.resource_type, "kubernetes:core/v1:ConfigMap");
        let gone = r.iter().find(|x| x.urn.ends_with("::gone")).expect("gone");
        assert_eq!((gone.operation.as_str(), &gone.paths), ("delete", &None));
        let shown = serde_json::to_string(&r).expect("json");
        assert!(!shown.contains("red") && !shown.contains("blue"), "{shown}");
    }

    #[test]
    fn a_replacement_is_one_change_and_diffs_serve_without_a_detailed_diff() {
        let mut c = Changes::default();
        let urn = "urn:pulumi:dev::p::gate:index:Resource::thing";
        for op in ["create-replacement", "replace", "delete-replaced"] {
            c.observe(&event(
                "resourcePreEvent",
                json!({"op": op, "urn": urn, "type": "gate:index:Resource", "diffs": ["value", "pipe"]}),
            ));
        }
        let r = c.resources();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].operation, "replace");
        assert_eq!(
            r[0].paths,
            Some(vec!["pipe".to_string(), "value".to_string()])
        );
    }

    #[test]
    fn only_so_many_resources_are_kept_and_the_rest_counted() {
        let mut c = Changes::default();
        for i in 0..MAX_RESOURCES + 7 {
            c.observe(&event(
                "resOutputsEvent",
                json!({"op": "create", "urn": format!("urn:pulumi:s::p::t::r{i}"), "type": "t"}),
            ));
        }
        assert_eq!(c.resources().len(), MAX_RESOURCES);
        assert_eq!(c.omitted(), 7);
    }
}
