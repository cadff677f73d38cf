//! What an update cut off earlier leaves for the next `up` (PKO#1308, #9, #795): a workspace
//! pod killed or evicted mid-operation, or a CLI killed by the OOM killer, never runs its
//! clean-up. Two things stay behind:
//!
//! - the stack's lock (self-managed backends: a file under `.pulumi/locks`), naming the host
//!   that took it; every later operation fails on it until someone runs `pulumi cancel`;
//! - the operations that were in flight, recorded as pending in the stack's state. `up` only
//!   warns about them and keeps them: a resource whose creation was cut off is created again
//!   and the pending entry stays, while `refresh --clear-pending-creates` resolves them (the
//!   others by reading what is really there).
//!
//! A lock is this workspace's own when its host is this pod's hostname: a StatefulSet runs at
//! most one pod of that name at a time, and the agent runs one operation at a time, so the
//! process that took it is gone. A lock from any other host is never touched.

use serde::Deserialize;

use crate::agent::operation;
use crate::proto as pb;

/// What the CLI says when a self-managed backend's stack is locked.
const LOCKED: &str = "the stack is currently locked by";

/// The part of `pulumi stack export` read here.
#[derive(Debug, Deserialize)]
pub struct Export {
    #[serde(default)]
    deployment: Deployment,
}

#[derive(Debug, Default, Deserialize)]
struct Deployment {
    #[serde(default)]
    pending_operations: Option<Vec<Operation>>,
}

#[derive(Debug, Deserialize)]
struct Operation {
    #[serde(rename = "type", default)]
    kind: String,
    resource: Resource,
}

#[derive(Debug, Deserialize)]
struct Resource {
    #[serde(default)]
    urn: String,
}

impl Export {
    pub fn pending(self) -> Vec<pb::PendingOperation> {
        self.deployment
            .pending_operations
            .unwrap_or_default()
            .into_iter()
            .map(|o| pb::PendingOperation {
                r#type: o.kind,
                urn: o.resource.urn,
            })
            .collect()
    }
}

/// A lock's holder, as the CLI's failure names it: `user@host (pid N) at T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub described: String,
}

/// The holders of the locks a failure names, each once (the failure's text holds the CLI's
/// message more than once: its summary and its stderr); `None` when it is not a lock failure.
pub fn lock_holders(text: &str) -> Option<Vec<Holder>> {
    if !text.contains(LOCKED) {
        return None;
    }
    let mut holders: Vec<Holder> = Vec::new();
    let named = text
        .lines()
        .filter_map(|l| l.split_once(": created by ").map(|(_, who)| who.trim()))
        .filter_map(|who| {
            let (user_host, _) = who.split_once(" (pid ")?;
            let (_, host) = user_host.rsplit_once('@')?;
            Some(Holder {
                host: host.to_string(),
                described: who.to_string(),
            })
        });
    for h in named {
        if !holders.contains(&h) {
            holders.push(h);
        }
    }
    Some(holders)
}

/// Whether every lock a failure names was taken on `hostname`: only then may it be released.
/// A failure that names no holder (another backend's words) is not ours to release.
pub fn all_ours(holders: &[Holder], hostname: &str) -> bool {
    !holders.is_empty() && holders.iter().all(|h| h.host == hostname)
}

/// This pod's hostname (its name, in Kubernetes), as the CLI records it in a lock.
pub fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

/// Why an `up` refuses to run under the `Fail` policy, and what resolves it.
pub fn refusal(stack: &str, ops: &[pb::PendingOperation]) -> String {
    format!(
        "the stack's state lists {n} operation(s) left pending by an update that was cut off \
         (its pod killed or evicted): {ops}; whether they happened is unknown, so nothing was \
         run (spec.pendingOperations is Fail). Check those resources with their provider, then \
         in the workspace pod's pulumi container run `pulumi refresh --clear-pending-creates \
         --yes --stack {stack}` (or `--import-pending-creates <urn> <id>` for a resource that \
         was created), and retry; or set spec.pendingOperations to Refresh to have that done \
         for you",
        n = ops.len(),
        ops = pb::describe_pending(ops),
    )
}

/// The `refresh` that resolves pending operations: pending creates are dropped from the
/// state (the CLI cannot tell whether they happened), the rest are read from their provider.
pub fn refresh_args(stack: &str, debug: &[String]) -> Vec<String> {
    let mut argv = operation::refresh(&pb::RefreshRequest::default(), stack, debug);
    argv.push("--clear-pending-creates".into());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK_FAILURE: &str = "error: the stack is currently locked by 2 lock(s). Either wait \
        for the other process(es) to end or delete the lock file with `pulumi cancel`.\n  \
        file:///state/.pulumi/locks/organization/p/dev/a.json?no_tmp_dir=true: created by \
        pulumi@app-workspace-0 (pid 41) at 2026-12-07T21:15:13Z\n  \
        s3://bucket/.pulumi/locks/organization/p/dev/b.json: created by root@laptop (pid 7) at \
        2026-12-07T21:16:00Z\n";

    #[test]
    fn lock_holders_are_read_from_the_cli_failure() {
        // As `CliError::full_text` gives it: the message in the summary and again in stderr.
        let twice = format!("{LOCK_FAILURE}\n{LOCK_FAILURE}");
        let holders = lock_holders(&twice).expect("a lock failure");
        assert_eq!(
            holders,
            vec![
                Holder {
                    host: "app-workspace-0".into(),
                    described: "pulumi@app-workspace-0 (pid 41) at 2026-12-07T21:15:13Z".into(),
                },
                Holder {
                    host: "laptop".into(),
                    described: "root@laptop (pid 7) at 2026-12-07T21:16:00Z".into(),
                },
            ]
        );
        assert_eq!(lock_holders("error: exit status 1"), None);
    }

    #[test]
    fn only_locks_all_taken_on_this_host_are_released() {
        let holders = lock_holders(LOCK_FAILURE).expect("a lock failure");
        assert!(!all_ours(&holders, "app-workspace-0"), "one is a laptop's");
        assert!(all_ours(&holders[..1], "app-workspace-0"));
        assert!(!all_ours(&holders[..1], "other-workspace-0"));
        assert!(!all_ours(&[], "app-workspace-0"), "no holder named");
    }

    #[test]
    fn pending_operations_are_read_from_an_export() {
        let export: Export = serde_json::from_value(serde_json::json!({
            "version": 3,
            "deployment": {
                "manifest": {},
                "resources": [],
                "pending_operations": [
                    {"resource": {"urn": "urn:pulumi:dev::p::gate:index:Resource::a",
                                  "type": "gate:index:Resource", "inputs": {"x": "y"}},
                     "type": "creating"},
                    {"resource": {"urn": "urn:pulumi:dev::p::gate:index:Resource::b"},
                     "type": "deleting"}
                ]
            }
        }))
        .expect("export");
        let ops = export.pending();
        assert_eq!(
            pb::describe_pending(&ops),
            "creating urn:pulumi:dev::p::gate:index:Resource::a, deleting \
             urn:pulumi:dev::p::gate:index:Resource::b"
        );
        let none: Export =
            serde_json::from_value(serde_json::json!({"version": 3, "deployment": {}}))
                .expect("export");
        assert!(none.pending().is_empty());
        let empty: Export = serde_json::from_value(serde_json::json!({"version": 3}))
            .expect("a stack never updated");
        assert!(empty.pending().is_empty());
    }

    #[test]
    fn a_refusal_names_the_operations_and_the_commands() {
        let ops: Vec<pb::PendingOperation> = (0..7)
            .map(|i| pb::PendingOperation {
                r#type: "creating".into(),
                urn: format!("urn:{i}"),
            })
            .collect();
        let m = refusal("org/p/dev", &ops);
        assert!(m.contains("lists 7 operation(s)"), "{m}");
        assert!(
            m.contains("creating urn:0") && m.contains("and 2 more"),
            "{m}"
        );
        assert!(!m.contains("urn:6"), "{m}");
        assert!(
            m.contains("pulumi refresh --clear-pending-creates --yes --stack org/p/dev"),
            "{m}"
        );
        assert!(m.contains("spec.pendingOperations to Refresh"), "{m}");
    }
}
