//! The Update a Stack creates (pure), and reading a finished one back: its outputs Secret
//! into Stack outputs with secrets masked.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::names::label;
use crate::api::stack::Stack;
use crate::api::update::{Update, UpdateType};
use crate::api::workspace::Workspace;
use crate::controller::runtime::merge;

pub const SECRET_MASK: &str = "[secret]";
/// Completed Updates are kept this long (PKO's value).
pub const TTL: &str = "24h";

/// Which operation a Stack runs now.
pub fn kind(stack: &Stack, deleting: bool) -> UpdateType {
    if deleting {
        UpdateType::Destroy
    } else if stack.spec.0.preview.unwrap_or(false) {
        UpdateType::Preview
    } else {
        UpdateType::Up
    }
}

/// `<stack>-<hex unix millis>`, as PKO names them.
pub fn name(stack: &Stack, now: jiff::Timestamp) -> String {
    format!("{}-{:x}", stack.name_any(), now.as_millisecond())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.updateTemplate does not merge into a valid Update: {0}")]
pub struct TemplateError(pub String);

pub fn desired_update(
    stack: &Stack,
    ws: &Workspace,
    t: UpdateType,
    message: &str,
    name: &str,
) -> Result<Update, TemplateError> {
    let spec = &stack.spec.0;
    let mut u = json!({
        "workspaceName": ws.name_any(),
        "stackName": spec.stack,
        "type": t.as_str(),
        "ttlAfterCompleted": TTL,
        "message": message,
    });
    match t {
        UpdateType::Destroy => {
            if let Some(rp) = spec.run_program {
                u["runProgram"] = json!(rp);
            }
        }
        _ => {
            if let Some(targets) = spec.targets.as_ref().filter(|t| !t.is_empty()) {
                u["target"] = json!(targets);
            }
            if let Some(td) = spec.target_dependents {
                u["targetDependents"] = json!(td);
            }
            if let Some(r) = spec.refresh {
                u["refresh"] = json!(r);
            }
        }
    }
    // The operations that recover from an update cut off earlier (the agent's recovery.rs).
    if matches!(t, UpdateType::Up | UpdateType::Destroy) {
        u["pendingOperations"] = json!(spec.pending_operations.unwrap_or_default());
    }
    let mut doc = json!({
        "metadata": {
            "labels": {
                label::PULUMI_COMPONENT: label::COMPONENT_STACK,
                label::STACK_NAME: stack.name_any(),
            },
        },
        "spec": u,
    });
    if let Some(tpl) = &spec.update_template {
        let mut patch = json!({});
        if let Some(m) = &tpl.metadata {
            patch["metadata"] = m.clone();
        }
        if let Some(s) = &tpl.spec {
            patch["spec"] = s.clone();
        }
        merge::merge(&mut doc, &patch, merge::update_key);
    }
    let mut update: Update = serde_json::from_value(json!({
        "apiVersion": "auto.pulumi.com/v1alpha1",
        "kind": "Update",
        "metadata": doc["metadata"],
        "spec": doc["spec"],
    }))
    .map_err(|e| TemplateError(e.to_string()))?;
    update.metadata.name = Some(name.to_string());
    update.metadata.namespace = stack.namespace();
    update.metadata.generate_name = None;
    let mut owners = Vec::new();
    owners.extend(ws.controller_owner_ref(&()));
    if let Some(mut o) = stack.controller_owner_ref(&()) {
        o.controller = None;
        o.block_owner_deletion = Some(true);
        owners.push(o);
    }
    update.metadata.owner_references = Some(owners);
    Ok(update)
}

/// The Stack as a (non-controller) owner, for objects it must outlive.
pub fn stack_owner(stack: &Stack) -> Option<OwnerReference> {
    stack.controller_owner_ref(&()).map(|mut o| {
        o.controller = None;
        o
    })
}

/// A JSON annotation of an Update's outputs Secret (empty when absent or unreadable).
fn json_annotation<T: serde::de::DeserializeOwned + Default>(secret: &Secret, key: &str) -> T {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Each output's JSON, by its own name (not its key in the Secret), secret ones included.
pub fn raw_outputs(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let names: BTreeMap<String, String> = json_annotation(secret, label::OUTPUT_NAMES);
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (names.get(k).unwrap_or(k).clone(), v.0.clone()))
        .collect()
}

/// Stack outputs from an Update's outputs Secret: values as JSON, secret ones masked.
pub fn outputs(secret: &Secret) -> BTreeMap<String, Value> {
    let secret_keys: Vec<String> = json_annotation(secret, label::SECRET_OUTPUTS);
    let names: BTreeMap<String, String> = json_annotation(secret, label::OUTPUT_NAMES);
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| {
            let value = if secret_keys.contains(k) {
                Value::String(SECRET_MASK.into())
            } else {
                serde_json::from_slice(&v.0)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&v.0).into_owned()))
            };
            (names.get(k).cloned().unwrap_or_else(|| k.clone()), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::StackSpecV1;
    use crate::api::stack_spec::{StackSpec, UpdateApplyConfiguration};
    use crate::api::update::PendingOperations;
    use crate::api::workspace::WorkspaceSpec;
    use k8s_openapi::ByteString;

    fn fixtures() -> (Stack, Workspace) {
        let mut s = Stack::new(
            "app",
            StackSpecV1(StackSpec {
                stack: "org/p/dev".into(),
                targets: Some(vec!["urn:a".into()]),
                refresh: Some(true),
                run_program: Some(true),
                update_template: Some(UpdateApplyConfiguration {
                    metadata: Some(json!({"labels": {"x": "y"}})),
                    spec: Some(json!({"parallel": 2, "ttlAfterCompleted": "1h"})),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("s1".into());
        let mut ws = Workspace::new("app", WorkspaceSpec::default());
        ws.metadata.namespace = Some("ns".into());
        ws.metadata.uid = Some("w1".into());
        (s, ws)
    }

    #[test]
    fn an_up_carries_targets_and_the_template_and_two_owners() {
        let (s, ws) = fixtures();
        let u = desired_update(&s, &ws, kind(&s, false), "Initial stack update", "app-1")
            .expect("update");
        assert_eq!(u.spec.update_type, Some(UpdateType::Up));
        assert_eq!(u.spec.target.as_deref(), Some(&["urn:a".to_string()][..]));
        assert_eq!(u.spec.refresh, Some(true));
        assert_eq!(u.spec.run_program, None, "runProgram is for destroy");
        assert_eq!(
            u.spec.pending_operations,
            Some(PendingOperations::Refresh),
            "the default, said on the Update"
        );
        assert_eq!(u.spec.parallel, Some(2));
        assert_eq!(u.spec.ttl_after_completed.as_deref(), Some("1h"));
        assert_eq!(u.spec.message.as_deref(), Some("Initial stack update"));
        assert_eq!(u.metadata.labels.as_ref().expect("labels")["x"], "y");
        let owners = u.metadata.owner_references.expect("owners");
        assert_eq!(owners.len(), 2);
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].controller),
            ("Workspace", Some(true))
        );
        assert_eq!(
            (owners[1].kind.as_str(), owners[1].block_owner_deletion),
            ("Stack", Some(true))
        );
    }

    #[test]
    fn a_destroy_runs_the_program_only_when_asked() {
        let (s, ws) = fixtures();
        let u = desired_update(
            &s,
            &ws,
            kind(&s, true),
            "Stack marked for deletion",
            "app-2",
        )
        .expect("update");
        assert_eq!(u.spec.update_type, Some(UpdateType::Destroy));
        assert_eq!(u.spec.run_program, Some(true));
        assert_eq!(
            u.spec.pending_operations,
            Some(PendingOperations::Refresh),
            "a destroy recovers too"
        );
        assert!(u.spec.target.is_none());
    }

    #[test]
    fn names_are_stack_and_hex_millis() {
        let (s, _) = fixtures();
        assert_eq!(
            name(&s, jiff::Timestamp::from_millisecond(255).expect("t")),
            "app-ff"
        );
    }

    #[test]
    fn outputs_mask_secrets_and_keep_json_types() {
        let mut secret = Secret::default();
        secret.metadata.annotations =
            Some([(label::SECRET_OUTPUTS.to_string(), "[\"pw\"]".to_string())].into());
        secret.data = Some(BTreeMap::from([
            ("pw".to_string(), ByteString(b"\"hunter2\"".to_vec())),
            ("n".to_string(), ByteString(b"3".to_vec())),
            ("o".to_string(), ByteString(b"{\"a\":[1]}".to_vec())),
        ]));
        let out = outputs(&secret);
        assert_eq!(out["pw"], json!("[secret]"));
        assert_eq!(out["n"], json!(3));
        assert_eq!(out["o"], json!({"a": [1]}));
    }

    #[test]
    fn outputs_written_under_stand_in_keys_come_back_under_their_names() {
        use crate::controller::update::outcome::outputs_secret;
        use crate::proto as pb;
        let value = |v: &str, secret| pb::OutputValue {
            value: v.as_bytes().to_vec(),
            secret,
        };
        let outputs = std::collections::HashMap::from([
            ("a b".to_string(), value("1", false)),
            ("a_b".to_string(), value("2", false)),
            (".".to_string(), value("\"dot\"", true)),
        ]);
        let u = Update::new("u", Default::default());
        let s = outputs_secret(&u, OwnerReference::default(), &outputs);
        let back = self::outputs(&s);
        assert_eq!(back.len(), 3);
        assert_eq!(back["a b"], json!(1));
        assert_eq!(back["a_b"], json!(2));
        assert_eq!(back["."], json!("[secret]"));
    }
}
