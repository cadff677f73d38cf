//! `spec.outputsSecretRef`: the outputs of the last successful update, copied from that
//! Update's outputs Secret into a Secret the Stack owns, for workloads to consume. Which outputs
//! and under which keys is decided here (pure); names that cannot be Secret keys are refused,
//! never rewritten, so a workload never reads a key that differs from the program's output.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::Run;
use super::field_manager;
use super::stop::{Halt, Stop};
use super::updates::raw_outputs;
use crate::api::names::{label, stack_reason as reason};
use crate::api::stack::Stack;
use crate::api::stack_spec::OutputsSecretRef;
use crate::controller::update::outcome::{is_secret_key, outputs_secret_name};

/// Why the outputs cannot be written as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputsSecretError {
    #[error(
        "spec.outputsSecretRef.outputs names {0:?}, which the stack does not output; its \
         outputs are {1:?}"
    )]
    Missing(Vec<String>, Vec<String>),
    #[error(
        "outputs {0:?} cannot be keys of Secret {1} (a key has only letters, digits, '-', '_' \
         and '.'); list the others in spec.outputsSecretRef.outputs, or rename them in the \
         program"
    )]
    InvalidKeys(Vec<String>, String),
    #[error(
        "Secret {0} exists and is not this Stack's; the outputs are not written over it: \
         choose another spec.outputsSecretRef.name, or delete that Secret"
    )]
    NotOurs(String),
    #[error(
        "the outputs of update {0} are no longer available (its Update is gone); annotate \
         the Stack with pulumi.com/reconciliation-request to run an update that writes them"
    )]
    Gone(String),
    #[error(
        "the operator may not write Secret {0}: its ClusterRole needs patch on secrets \
         (config/rbac grants it; PKO's chart does not: add it with rbac.extraRules)"
    )]
    Forbidden(String),
}

/// How long a Stack waits to try again when RBAC refused the write (a role change wakes
/// nothing).
const FORBIDDEN_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

impl From<OutputsSecretError> for Halt {
    fn from(e: OutputsSecretError) -> Halt {
        let retry = matches!(e, OutputsSecretError::Forbidden(_)).then_some(FORBIDDEN_RETRY);
        Stop::Stalled {
            reason: reason::OUTPUTS_SECRET_INVALID,
            message: e.to_string(),
            event: None,
            retry,
        }
        .into()
    }
}

/// The outputs to write, from the names the stack outputs.
pub fn select<'a>(
    spec: &OutputsSecretRef,
    outputs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, OutputsSecretError> {
    let have: Vec<String> = outputs.into_iter().map(str::to_string).collect();
    let wanted: Vec<String> = match spec.outputs.as_deref() {
        Some(list) if !list.is_empty() => {
            let missing: Vec<String> = list.iter().filter(|n| !have.contains(n)).cloned().collect();
            if !missing.is_empty() {
                return Err(OutputsSecretError::Missing(missing, have));
            }
            list.to_vec()
        }
        _ => have,
    };
    let invalid: Vec<String> = wanted
        .iter()
        .filter(|n| !is_secret_key(n))
        .cloned()
        .collect();
    if !invalid.is_empty() {
        return Err(OutputsSecretError::InvalidKeys(invalid, spec.name.clone()));
    }
    Ok(wanted)
}

/// A JSON string as its text, anything else as JSON: what a workload reading `DB_HOST` from
/// the Secret expects.
fn as_text(json: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(serde_json::Value::String(s)) => s.into_bytes(),
        _ => json.to_vec(),
    }
}

/// The Secret, owned by the Stack, marked with the update its values come from.
pub fn desired(
    stack: &Stack,
    spec: &OutputsSecretRef,
    update: &str,
    values: &BTreeMap<String, Vec<u8>>,
    keys: &[String],
) -> Secret {
    let data = keys
        .iter()
        .filter_map(|k| Some((k.clone(), ByteString(as_text(values.get(k)?)))))
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            namespace: stack.namespace(),
            labels: Some(BTreeMap::from([(
                label::STACK_NAME.to_string(),
                stack.name_any(),
            )])),
            annotations: Some(BTreeMap::from([(
                label::UPDATE_NAME.to_string(),
                update.to_string(),
            )])),
            owner_references: stack.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn owned_by(secret: &Secret, stack: &Stack) -> bool {
    let uid = stack.uid();
    secret
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

/// After a successful update (the reconcile calls it for a synced Stack that is neither
/// suspended nor being deleted): the Secret holds that update's outputs, or the Stack stalls
/// saying why it cannot.
pub(super) async fn ensure(run: &mut Run<'_>) -> Result<(), Halt> {
    let Some(spec) = run.stack.spec.0.outputs_secret_ref.as_ref() else {
        return Ok(());
    };
    let Some(last) = run.draft.last_update.as_ref().filter(|l| l.succeeded()) else {
        return Ok(());
    };
    let update = last.name.clone().unwrap_or_default();
    let names = run.draft.outputs.iter().flatten().map(|(k, _)| k.as_str());
    let keys = select(spec, names)?;
    let secrets: Api<Secret> = Api::namespaced(run.ctx.client.clone(), &run.ns);
    if let Some(existing) = secrets.get_opt(&spec.name).await? {
        if !owned_by(&existing, run.stack) {
            return Err(OutputsSecretError::NotOurs(spec.name.clone()).into());
        }
        let written = existing.annotations().get(label::UPDATE_NAME);
        let current: BTreeSet<&String> = existing.data.iter().flatten().map(|(k, _)| k).collect();
        let wanted: BTreeSet<&String> = keys.iter().collect();
        if written == Some(&update) && current == wanted {
            return Ok(());
        }
    }
    let Some(source) = secrets.get_opt(&outputs_secret_name(&update)).await? else {
        return Err(OutputsSecretError::Gone(update).into());
    };
    let desired = desired(run.stack, spec, &update, &raw_outputs(&source), &keys);
    match secrets
        .patch(
            &spec.name,
            &PatchParams::apply(field_manager::OPERATOR).force(),
            &Patch::Apply(&desired),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            Err(OutputsSecretError::Forbidden(spec.name.clone()).into())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(outputs: Option<&[&str]>) -> OutputsSecretRef {
        OutputsSecretRef {
            name: "app-outputs".into(),
            outputs: outputs.map(|o| o.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn all_outputs_or_the_listed_ones_each_a_valid_key() {
        let have = ["url", "db.password", "replicas"];
        assert_eq!(
            select(&spec(None), have),
            Ok(vec!["url".into(), "db.password".into(), "replicas".into()])
        );
        assert_eq!(select(&spec(Some(&["url"])), have), Ok(vec!["url".into()]));
        assert_eq!(select(&spec(Some(&[])), have).map(|k| k.len()), Ok(3));
        let e = select(&spec(Some(&["url", "nope"])), have).unwrap_err();
        assert_eq!(
            e,
            OutputsSecretError::Missing(
                vec!["nope".into()],
                vec!["url".into(), "db.password".into(), "replicas".into()]
            )
        );
        let e = select(&spec(None), ["ok", "db password", "é"]).unwrap_err();
        assert_eq!(
            e,
            OutputsSecretError::InvalidKeys(
                vec!["db password".into(), "é".into()],
                "app-outputs".into()
            )
        );
        assert!(
            e.to_string().contains("spec.outputsSecretRef.outputs"),
            "{e}"
        );
        // Listing only the valid ones is the way out.
        assert_eq!(
            select(&spec(Some(&["ok"])), ["ok", "db password"]),
            Ok(vec!["ok".into()])
        );
    }

    #[test]
    fn strings_are_written_as_text_and_the_rest_as_json() {
        let mut stack = Stack::new("app", Default::default());
        stack.metadata.namespace = Some("team".into());
        stack.metadata.uid = Some("u-1".into());
        let values = BTreeMap::from([
            ("url".to_string(), br#""https://x""#.to_vec()),
            ("replicas".to_string(), b"3".to_vec()),
            ("tags".to_string(), br#"["a","b"]"#.to_vec()),
        ]);
        let keys = vec!["url".to_string(), "replicas".into(), "tags".into()];
        let s = desired(&stack, &spec(None), "app-1a", &values, &keys);
        let data = s.data.clone().unwrap_or_default();
        assert_eq!(data["url"].0, b"https://x");
        assert_eq!(data["replicas"].0, b"3");
        assert_eq!(data["tags"].0, br#"["a","b"]"#);
        assert_eq!(s.metadata.namespace.as_deref(), Some("team"));
        assert!(owned_by(&s, &stack));
        assert_eq!(
            s.annotations().get(label::UPDATE_NAME).map(String::as_str),
            Some("app-1a")
        );
    }
}
