//! What an Update's run comes to, in status terms (pure): the conditions for a result or an
//! error, and the outputs Secret.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::Digest as _;

use crate::api::names::{condition, event, label, update_reason as reason};
use crate::api::update::{Update, UpdateType};
use crate::api::workspace::ProjectInfo;
use crate::controller::runtime::conditions::{Conditions, FALSE, TRUE};
use crate::controller::runtime::events::EventType;
use crate::proto as pb;

/// The status this reconcile will write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    pub conditions: Conditions,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub permalink: Option<String>,
    pub message: Option<String>,
    pub outputs: Option<String>,
    pub project_info: Option<ProjectInfo>,
    pub changes: Option<Vec<crate::api::update::ResourceChange>>,
    pub changes_omitted: Option<i64>,
    pub plan: Option<crate::api::update::PlanRef>,
    pub generation: Option<i64>,
}

impl Draft {
    pub fn new(u: &Update) -> Draft {
        let s = u.status.clone().unwrap_or_default();
        Draft {
            conditions: Conditions::from(s.conditions.as_ref()),
            start_time: s.start_time,
            end_time: s.end_time,
            permalink: s.permalink,
            message: s.message,
            outputs: s.outputs,
            project_info: s.project_info,
            changes: s.changes,
            changes_omitted: s.changes_omitted,
            plan: s.plan,
            generation: u.metadata.generation,
        }
    }

    fn set(&mut self, type_: &str, status: &str, r: &str, message: &str) {
        self.conditions
            .set(type_, status, r, message, self.generation);
    }

    pub fn progressing(&mut self) {
        self.set(condition::PROGRESSING, TRUE, reason::PROGRESSING, "");
        self.set(condition::FAILED, FALSE, reason::PROGRESSING, "");
        self.set(condition::COMPLETE, FALSE, reason::PROGRESSING, "");
    }

    /// Waiting on something outside the run (no Workspace, not ready, no connection).
    pub fn blocked(&mut self, why: &str, message: &str) {
        self.set(condition::PROGRESSING, FALSE, why, message);
    }

    pub fn failed(&mut self, why: &str, message: &str) {
        self.set(condition::PROGRESSING, FALSE, reason::FAILED, "");
        self.set(condition::FAILED, TRUE, why, message);
        self.set(condition::COMPLETE, TRUE, reason::FAILED, "");
        if !message.is_empty() {
            self.message = Some(message.to_string());
        }
        if self.end_time.is_none() {
            self.end_time = Some(crate::controller::now_rfc3339());
        }
    }

    /// What the run changed or would change (whatever its end: a failed `up` may have changed
    /// some); replaces what an earlier run of this Update recorded.
    pub fn changes(&mut self, c: &super::changes::Changes) {
        let resources = c.resources();
        self.changes = (!resources.is_empty()).then_some(resources);
        self.changes_omitted =
            (c.omitted() > 0).then(|| i64::try_from(c.omitted()).unwrap_or(i64::MAX));
    }

    /// The run returned a result: complete, failed only if its summary says so.
    pub fn result(
        &mut self,
        summary: Option<&pb::UpdateSummary>,
        permalink: Option<String>,
        project: Option<&pb::ProjectInfo>,
        started: &str,
    ) -> bool {
        self.permalink = permalink.filter(|p| !p.is_empty());
        if let Some(p) = project {
            self.project_info = Some(ProjectInfo {
                name: p.name.clone(),
                runtime: p.runtime.clone(),
            });
        }
        self.set(condition::PROGRESSING, FALSE, reason::COMPLETE, "");
        self.set(condition::COMPLETE, TRUE, reason::UPDATED, "");
        let succeeded = match summary {
            Some(s) => {
                self.start_time = s
                    .start_time
                    .as_ref()
                    .map(rfc3339)
                    .or(Some(started.to_string()));
                self.end_time = s
                    .end_time
                    .as_ref()
                    .map(rfc3339)
                    .or_else(|| Some(crate::controller::now_rfc3339()));
                self.message = Some(s.message.clone());
                s.result == crate::proto::RESULT_SUCCEEDED
            }
            None => {
                self.start_time = Some(started.to_string());
                self.end_time = Some(crate::controller::now_rfc3339());
                true
            }
        };
        if succeeded {
            self.set(condition::FAILED, FALSE, reason::UPDATE_SUCCEEDED, "");
        } else {
            self.set(condition::FAILED, TRUE, reason::UPDATE_FAILED, "");
        }
        succeeded
    }

    /// The run ended in an error status: complete and failed, with the agent's reason when it
    /// gave one. An interruption (the pod going away) is `Aborted`.
    pub fn error(&mut self, st: &tonic::Status) {
        let (why, message) = match pb::error_info(st) {
            Some(info) => (info.reason, info.message),
            None => {
                let why = match st.code() {
                    tonic::Code::Aborted | tonic::Code::Unavailable | tonic::Code::Cancelled => {
                        reason::ABORTED
                    }
                    _ => reason::UNKNOWN,
                };
                let msg = if st.message().is_empty() {
                    "An unknown error occurred".to_string()
                } else {
                    st.message().to_string()
                };
                (why.to_string(), msg)
            }
        };
        self.message = Some(message);
        if self.end_time.is_none() {
            self.end_time = Some(crate::controller::now_rfc3339());
        }
        self.set(condition::PROGRESSING, FALSE, reason::COMPLETE, "");
        self.set(condition::COMPLETE, TRUE, reason::UPDATED, "");
        self.set(condition::FAILED, TRUE, &why, "");
    }

    /// The status apply; `additions`: with our fields (`changes`, `changesOmitted`, `plan`),
    /// which PKO's CRDs do not declare.
    pub fn body(&self, additions: bool) -> serde_json::Value {
        let mut body = serde_json::json!({
            "apiVersion": "auto.pulumi.com/v1alpha1",
            "kind": "Update",
            "status": {
                "observedGeneration": self.generation,
                "startTime": self.start_time,
                "endTime": self.end_time,
                "permalink": self.permalink,
                "message": self.message,
                "outputs": self.outputs,
                "conditions": self.conditions.0,
                "projectInfo": self.project_info,
            },
        });
        if additions {
            body["status"]["changes"] = serde_json::json!(self.changes);
            body["status"]["changesOmitted"] = serde_json::json!(self.changes_omitted);
            body["status"]["plan"] = serde_json::json!(self.plan);
        }
        body
    }
}

pub fn rfc3339(t: &prost_types::Timestamp) -> String {
    jiff::Timestamp::new(t.seconds, t.nanos)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Whether `name` can be a Secret data key as it is: `[-._a-zA-Z0-9]+`, at most 253 bytes, and
/// neither `.` nor `..`.
pub fn is_secret_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The Secret key of each output: its own name when that is a valid key (as PKO writes them),
/// else a readable stand-in made unique with a digest of the name (`db password` ->
/// `db_password.1c8e0b9a`) and, should that be taken too, a counter. No two outputs ever share
/// a key; the stand-ins' names are kept in [`label::OUTPUT_NAMES`] so the Stack shows the
/// outputs under their own names.
pub fn secret_keys<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    let mut taken: std::collections::BTreeSet<String> = names
        .iter()
        .filter(|n| is_secret_key(n))
        .map(|n| n.to_string())
        .collect();
    let mut keys = BTreeMap::new();
    for name in names {
        if is_secret_key(name) {
            keys.insert(name.to_string(), name.to_string());
            continue;
        }
        let mut readable: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut cut = readable.len().min(200);
        while !readable.is_char_boundary(cut) {
            cut -= 1;
        }
        readable.truncate(cut);
        let digest = sha2::Sha256::digest(name.as_bytes());
        let base = format!(
            "{readable}.{}",
            digest[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let mut key = base.clone();
        let mut n = 2;
        while taken.contains(&key) {
            key = format!("{base}-{n}");
            n += 1;
        }
        taken.insert(key.clone());
        keys.insert(name.to_string(), key);
    }
    keys
}

/// Key of the plan file in a plan Secret.
pub const PLAN_KEY: &str = "plan.json";

/// A plan's identity: the first 16 hex digits of its SHA-256 (what an approval names).
pub fn plan_id(plan: &[u8]) -> String {
    let digest = sha2::Sha256::digest(plan);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub fn plan_secret_name(update: &str) -> String {
    format!("{update}-plan")
}

/// The immutable Secret holding a preview's plan, owned by the Update (it goes with it: a
/// plan is applied soon after it is approved, or made again).
pub fn plan_secret(u: &Update, plan: &[u8]) -> Secret {
    let name = u.metadata.name.clone().unwrap_or_default();
    let owner = OwnerReference {
        api_version: "auto.pulumi.com/v1alpha1".into(),
        kind: "Update".into(),
        name: name.clone(),
        uid: u.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(plan_secret_name(&name)),
            namespace: u.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (
                    label::AUTO_COMPONENT.to_string(),
                    label::COMPONENT_UPDATE.to_string(),
                ),
                (label::UPDATE_NAME.to_string(), name),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            PLAN_KEY.to_string(),
            ByteString(plan.to_vec()),
        )])),
        ..Default::default()
    }
}

/// The plan in a plan Secret, if it is the one `id` names: why not, otherwise.
pub fn plan_from(
    secret: Option<&Secret>,
    want: &crate::api::update::PlanRef,
) -> Result<Vec<u8>, String> {
    let Some(secret) = secret else {
        return Err(format!(
            "the plan's Secret {} is gone (a plan goes with the preview that made it); make a              new plan: nothing was run",
            want.secret_name
        ));
    };
    let plan = secret
        .data
        .as_ref()
        .and_then(|d| d.get(PLAN_KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            format!(
                "Secret {} holds no {PLAN_KEY}: nothing was run",
                want.secret_name
            )
        })?;
    let id = plan_id(&plan);
    if id != want.id {
        return Err(format!(
            "Secret {} holds plan {id}, not the plan {} this update is to apply: nothing was run",
            want.secret_name, want.id
        ));
    }
    Ok(plan)
}

pub fn outputs_secret_name(update: &str) -> String {
    format!("{update}-stack-outputs")
}

/// The immutable Secret holding an up's outputs, JSON-encoded, owned by the Update; the
/// `pulumi.com/secrets` annotation lists the keys that are secret.
pub fn outputs_secret(
    u: &Update,
    owner: OwnerReference,
    outputs: &HashMap<String, pb::OutputValue>,
) -> Secret {
    let keys = secret_keys(outputs.keys().map(String::as_str));
    let mut data = BTreeMap::new();
    let mut secret = Vec::new();
    let mut renamed = BTreeMap::new();
    for (name, key) in &keys {
        let v = &outputs[name];
        if v.secret {
            secret.push(key.clone());
        }
        if name != key {
            renamed.insert(key.clone(), name.clone());
        }
        data.insert(key.clone(), ByteString(v.value.clone()));
    }
    secret.sort();
    let mut annotations = BTreeMap::from([(
        label::SECRET_OUTPUTS.to_string(),
        serde_json::to_string(&secret).unwrap_or_else(|_| "[]".into()),
    )]);
    if !renamed.is_empty() {
        annotations.insert(
            label::OUTPUT_NAMES.to_string(),
            serde_json::to_string(&renamed).unwrap_or_else(|_| "{}".into()),
        );
    }
    let name = u.metadata.name.clone().unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(outputs_secret_name(&name)),
            namespace: u.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (
                    label::AUTO_COMPONENT.to_string(),
                    label::COMPONENT_UPDATE.to_string(),
                ),
                (label::UPDATE_NAME.to_string(), name),
            ])),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        immutable: Some(true),
        data: Some(data),
        ..Default::default()
    }
}

/// The `InterruptedUpdateRecovered` event's message: what the agent did before this update
/// about one cut off earlier ([`pb::Recovery`]).
pub fn recovery_note(stack: &str, r: &pb::Recovery) -> String {
    let mut did = Vec::new();
    if !r.released_locks.is_empty() {
        did.push(format!(
            "released the stack lock it left ({})",
            r.released_locks.join("; ")
        ));
    }
    if !r.pending_operations.is_empty() {
        let ops = pb::describe_pending(&r.pending_operations);
        did.push(format!(
            "ran `pulumi refresh --clear-pending-creates` to resolve the {} operation(s) it \
             left pending: {ops}. A resource whose creation was cut off may exist outside the \
             stack's state; if this update creates it again, check its provider for a duplicate",
            r.pending_operations.len()
        ));
    }
    format!(
        "An update of stack \"{stack}\" was cut off earlier (its workspace pod killed or \
         evicted mid-operation); before this update the operator {}",
        did.join(", and ")
    )
}

/// The events' wording for an operation type.
/// The Workspace event that tells how a run ended: `UpdateSucceeded` ("Updated stack
/// \"dev\""), or `UpdateFailed` with the failure ("Failed to update stack \"dev\": ...").
pub fn announcement(
    t: UpdateType,
    stack: &str,
    succeeded: bool,
    message: Option<&str>,
) -> (EventType, &'static str, String) {
    let (past, verb) = verbs(t);
    if succeeded {
        (
            EventType::Normal,
            event::UPDATE_SUCCEEDED,
            format!("{past} stack \"{stack}\""),
        )
    } else {
        (
            EventType::Warning,
            event::UPDATE_FAILED,
            format!(
                "Failed to {verb} stack \"{stack}\": {}",
                message.unwrap_or_default()
            ),
        )
    }
}

pub fn verbs(t: UpdateType) -> (&'static str, &'static str) {
    match t {
        UpdateType::Preview => ("Previewed", "preview"),
        UpdateType::Up => ("Updated", "update"),
        UpdateType::Refresh => ("Refreshed", "refresh"),
        UpdateType::Destroy => ("Destroyed", "destroy"),
        UpdateType::Unsupported => ("Ran", "operation"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::update::UpdateSpec;

    fn update() -> Update {
        let mut u = Update::new("st-1a2b", UpdateSpec::default());
        u.metadata.namespace = Some("ns".into());
        u.metadata.uid = Some("u1".into());
        u.metadata.generation = Some(1);
        u
    }

    #[test]
    fn a_run_is_announced_on_the_workspace_in_pko_s_words() {
        assert_eq!(
            announcement(UpdateType::Up, "dev", true, None),
            (
                EventType::Normal,
                event::UPDATE_SUCCEEDED,
                "Updated stack \"dev\"".into()
            )
        );
        assert_eq!(
            announcement(UpdateType::Destroy, "dev", false, Some("lock held")),
            (
                EventType::Warning,
                event::UPDATE_FAILED,
                "Failed to destroy stack \"dev\": lock held".into()
            )
        );
        assert_eq!(
            announcement(UpdateType::Preview, "dev", false, None).2,
            "Failed to preview stack \"dev\": "
        );
    }

    #[test]
    fn output_keys_are_sanitized_and_secret_ones_listed_sorted() {
        let owner = OwnerReference {
            api_version: "auto.pulumi.com/v1alpha1".into(),
            kind: "Update".into(),
            name: "st-1a2b".into(),
            uid: "u1".into(),
            ..Default::default()
        };
        let outputs = HashMap::from([
            (
                "url".to_string(),
                pb::OutputValue {
                    value: b"\"http://x\"".to_vec(),
                    secret: false,
                },
            ),
            (
                "db password".to_string(),
                pb::OutputValue {
                    value: b"\"pw\"".to_vec(),
                    secret: true,
                },
            ),
            (
                "a/key".to_string(),
                pb::OutputValue {
                    value: b"1".to_vec(),
                    secret: true,
                },
            ),
        ]);
        let s = outputs_secret(&update(), owner, &outputs);
        assert_eq!(s.metadata.name.as_deref(), Some("st-1a2b-stack-outputs"));
        assert_eq!(s.immutable, Some(true));
        let keys = secret_keys(outputs.keys().map(String::as_str));
        let (pw, ak) = (&keys["db password"], &keys["a/key"]);
        assert!(
            pw.starts_with("db_password.") && ak.starts_with("a_key."),
            "{keys:?}"
        );
        let data = s.data.clone().expect("data");
        assert_eq!(data[pw].0, b"\"pw\"");
        assert!(data.contains_key(ak) && data.contains_key("url"));
        let ann = s.metadata.annotations.clone().expect("ann");
        let mut secret = vec![ak.clone(), pw.clone()];
        secret.sort();
        assert_eq!(
            ann[label::SECRET_OUTPUTS],
            serde_json::to_string(&secret).unwrap()
        );
        let names: BTreeMap<String, String> =
            serde_json::from_str(&ann[label::OUTPUT_NAMES]).expect("names");
        assert_eq!(names[pw], "db password");
        assert!(
            !names.contains_key("url"),
            "valid names are kept as they are"
        );
        assert_eq!(
            s.metadata.labels.expect("labels")[label::UPDATE_NAME],
            "st-1a2b"
        );
    }

    #[test]
    fn output_names_never_share_a_secret_key() {
        let names = [
            "a b",
            "a_b",
            ".",
            "..",
            "a_b.ae87c8f0",
            "",
            "x".repeat(300).as_str(),
        ]
        .map(String::from);
        let keys = secret_keys(names.iter().map(String::as_str));
        assert_eq!(keys.len(), names.len());
        let distinct: std::collections::BTreeSet<&String> = keys.values().collect();
        assert_eq!(distinct.len(), names.len(), "{keys:?}");
        assert_eq!(keys["a_b"], "a_b", "a valid name is its own key");
        for k in keys.values() {
            assert!(is_secret_key(k), "{k:?} is a valid key");
        }
        assert_eq!(
            keys,
            secret_keys(names.iter().rev().map(String::as_str)),
            "stable"
        );
    }

    #[test]
    fn a_result_completes_and_fails_only_when_its_summary_says_so() {
        let mut d = Draft::new(&update());
        d.progressing();
        let s = pb::UpdateSummary {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_060,
                nanos: 0,
            }),
            result: "failed".into(),
            message: "New commit detected".into(),
        };
        assert!(!d.result(Some(&s), Some(String::new()), None, "2026-01-01T00:00:00Z"));
        assert_eq!(
            d.conditions.reason(condition::FAILED),
            Some(reason::UPDATE_FAILED)
        );
        assert!(d.conditions.is_true(condition::COMPLETE));
        assert_eq!(d.start_time.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(d.permalink, None);
        let mut ok = Draft::new(&update());
        assert!(ok.result(
            None,
            Some("https://app/x".into()),
            None,
            "2026-01-01T00:00:00Z"
        ));
        assert!(!ok.conditions.is_true(condition::FAILED));
        assert_eq!(
            ok.conditions.reason(condition::FAILED),
            Some(reason::UPDATE_SUCCEEDED)
        );
    }

    #[test]
    fn errors_take_the_agents_reason_and_interruptions_are_aborted() {
        let info = pb::PulumiErrorInfo {
            code: 409,
            reason: "UpdateConflict".into(),
            message: "Another update is currently in progress".into(),
        };
        let mut d = Draft::new(&update());
        d.error(&pb::status_with_error_info(
            tonic::Code::Unknown,
            "up failed".into(),
            &info,
        ));
        assert_eq!(
            d.conditions.reason(condition::FAILED),
            Some("UpdateConflict")
        );
        assert_eq!(
            d.message.as_deref(),
            Some("Another update is currently in progress")
        );
        let mut d = Draft::new(&update());
        d.error(&tonic::Status::aborted("up was interrupted"));
        assert_eq!(
            d.conditions.reason(condition::FAILED),
            Some(reason::ABORTED)
        );
        let mut d = Draft::new(&update());
        d.error(&tonic::Status::unknown("up failed: boom"));
        assert_eq!(
            d.conditions.reason(condition::FAILED),
            Some(reason::UNKNOWN)
        );
        assert_eq!(d.message.as_deref(), Some("up failed: boom"));
    }

    #[test]
    fn a_recovery_note_names_the_lock_and_the_operations() {
        let r = pb::Recovery {
            released_locks: vec!["pulumi@app-workspace-0 (pid 41) at T".into()],
            pending_operations: (0..6)
                .map(|i| pb::PendingOperation {
                    r#type: "creating".into(),
                    urn: format!("urn:{i}"),
                })
                .collect(),
        };
        let note = recovery_note("dev", &r);
        assert!(
            note.starts_with("An update of stack \"dev\" was cut off earlier"),
            "{note}"
        );
        assert!(
            note.contains("released the stack lock it left (pulumi@app-workspace-0 (pid 41) at T)"),
            "{note}"
        );
        assert!(
            note.contains("resolve the 6 operation(s) it left pending: creating urn:0")
                && note.contains("and 1 more")
                && !note.contains("urn:5"),
            "{note}"
        );
        let lock_only = recovery_note(
            "dev",
            &pb::Recovery {
                released_locks: vec!["x@h (pid 1) at T".into()],
                pending_operations: vec![],
            },
        );
        assert!(!lock_only.contains("refresh"), "{lock_only}");
    }

    #[test]
    fn a_plan_is_used_only_as_saved_and_never_when_gone_or_another() {
        let mut u = Update::new("app-plan", Default::default());
        u.metadata.namespace = Some("team".into());
        u.metadata.uid = Some("u-1".into());
        let plan = br#"{"manifest":{"time":"t"},"resourcePlans":{}}"#;
        let secret = plan_secret(&u, plan);
        assert_eq!(secret.metadata.name.as_deref(), Some("app-plan-plan"));
        assert_eq!(secret.immutable, Some(true));
        let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Update", "u-1"));
        let id = plan_id(plan);
        assert_eq!(id.len(), 16);
        let want = crate::api::update::PlanRef {
            id: id.clone(),
            secret_name: "app-plan-plan".into(),
        };
        assert_eq!(plan_from(Some(&secret), &want).as_deref(), Ok(&plan[..]));
        let other = crate::api::update::PlanRef {
            id: "0123456789abcdef".into(),
            ..want.clone()
        };
        let e = plan_from(Some(&secret), &other).expect_err("another plan");
        assert!(
            e.contains(&format!("holds plan {id}, not the plan 0123456789abcdef")),
            "{e}"
        );
        let e = plan_from(None, &want).expect_err("gone");
        assert!(
            e.contains("is gone") && e.contains("nothing was run"),
            "{e}"
        );
    }
}
