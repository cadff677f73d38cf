//! Where a workspace pod stands, from the StatefulSet's and the pod's status (pure).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::api::names::{label, pod as names};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// The `fetch` init container of the current pod failed; its termination message.
    FetchFailed(String),
    /// The StatefulSet has not rolled out the current template yet.
    Rolling,
    /// No pod is available; why, when the pod says.
    Waiting(String),
    /// The pod is not (yet) the one the StatefulSet reports as current.
    Stale,
    /// The pod runs the current template and is available.
    Available {
        ip: Option<String>,
        initialized: bool,
    },
}

/// Decides the pod's state. `hash` is the revision hash of the template just applied.
pub fn pod_state(sts: &StatefulSet, pod: Option<&Pod>, hash: &str) -> PodState {
    let current_pod = pod.filter(|p| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(label::REVISION_HASH))
            .is_some_and(|h| h == hash)
            && p.metadata.deletion_timestamp.is_none()
    });
    if let Some(msg) = current_pod.and_then(fetch_failure) {
        return PodState::FetchFailed(msg);
    }
    let status = sts.status.clone().unwrap_or_default();
    let rolled_out = status.observed_generation == sts.metadata.generation
        && status.update_revision.is_some()
        && status.update_revision == status.current_revision;
    if !rolled_out {
        return PodState::Rolling;
    }
    if status.available_replicas.unwrap_or(0) < 1 {
        return PodState::Waiting(current_pod.and_then(waiting_reason).unwrap_or_default());
    }
    let Some(p) = pod else {
        return PodState::Stale;
    };
    let revision = p
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label::CONTROLLER_REVISION_HASH));
    if revision.is_none() || revision != status.current_revision.as_ref() || current_pod.is_none() {
        return PodState::Stale;
    }
    let initialized = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(label::INITIALIZED))
        .is_some_and(|v| v == "true");
    PodState::Available {
        ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
        initialized,
    }
}

/// The `fetch` container's failure: its last non-zero exit, with the message it wrote.
pub fn fetch_failure(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    let fetch = statuses.iter().find(|s| s.name == names::FETCH_CONTAINER)?;
    let state = fetch.state.as_ref();
    let term = state
        .and_then(|s| s.terminated.as_ref())
        .filter(|t| t.exit_code != 0)
        .or_else(|| {
            // Restarting after a failure: the failure is in lastState.
            let restarting = state.and_then(|s| s.waiting.as_ref()).is_some()
                || state.and_then(|s| s.running.as_ref()).is_some();
            fetch
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .filter(|t| t.exit_code != 0 && restarting)
        })?;
    // A run in progress after a failed one is still worth reporting only while it has not
    // succeeded; a running container after a failure is a retry.
    let message = term
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "the fetch container exited with code {}{}",
                term.exit_code,
                term.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        });
    Some(message)
}

/// Why the pod is not available, from a container that is waiting on something a person can
/// fix (an image that cannot be pulled, a missing Secret, a crash loop).
pub fn waiting_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let all: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    for cs in all {
        let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or("");
        if reason.is_empty() || reason == "PodInitializing" || reason == "ContainerCreating" {
            continue;
        }
        let mut msg = format!("container {}: {reason}", cs.name);
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            msg.push_str(": ");
            msg.push_str(m);
        } else if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref())
            && let Some(m) = t.message.as_deref().filter(|m| !m.is_empty())
        {
            msg.push_str(": ");
            msg.push_str(m.trim());
        }
        return Some(msg);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(generation: i64, observed: i64, cur: &str, upd: &str, available: i32) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "a-workspace", "generation": generation},
            "status": {"observedGeneration": observed, "currentRevision": cur, "updateRevision": upd,
                       "availableReplicas": available, "replicas": 1},
        }))
        .expect("sts")
    }

    fn pod(
        hash: &str,
        rev: &str,
        init: serde_json::Value,
        main: serde_json::Value,
        initialized: bool,
    ) -> Pod {
        let mut ann = json!({"auto.pulumi.com/revision-hash": hash});
        if initialized {
            ann["auto.pulumi.com/initialized"] = json!("true");
        }
        serde_json::from_value(json!({
            "metadata": {"name": "a-workspace-0", "annotations": ann,
                         "labels": {"controller-revision-hash": rev}},
            "status": {"podIP": "10.244.0.5", "initContainerStatuses": init, "containerStatuses": main},
        }))
        .expect("pod")
    }

    #[test]
    fn a_failed_fetch_is_reported_with_its_message_even_before_rollout() {
        let init = json!([
            {"name": "bootstrap", "ready": true, "restartCount": 0, "image": "a", "imageID": "",
             "state": {"terminated": {"exitCode": 0}}},
            {"name": "fetch", "ready": false, "restartCount": 2, "image": "f", "imageID": "",
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 5, "message": "digest mismatch: expected sha256:00"}}}
        ]);
        let p = pod("h1", "r1", init, json!([]), false);
        assert_eq!(
            pod_state(&sts(2, 2, "r1", "r1", 0), Some(&p), "h1"),
            PodState::FetchFailed("digest mismatch: expected sha256:00".into())
        );
        // The same failure on a pod of an older template is not this template's problem.
        assert_eq!(
            pod_state(&sts(2, 2, "r1", "r1", 0), Some(&p), "h2"),
            PodState::Waiting(String::new())
        );
    }

    #[test]
    fn rollout_then_availability_then_revision() {
        let main = json!([{"name": "pulumi", "ready": true, "restartCount": 0, "image": "p", "imageID": "",
                           "state": {"running": {}}}]);
        let p = pod("h", "r2", json!([]), main.clone(), false);
        assert_eq!(
            pod_state(&sts(2, 1, "r2", "r2", 1), Some(&p), "h"),
            PodState::Rolling
        );
        assert_eq!(
            pod_state(&sts(2, 2, "r1", "r2", 1), Some(&p), "h"),
            PodState::Rolling
        );
        assert_eq!(
            pod_state(&sts(2, 2, "r2", "r2", 1), None, "h"),
            PodState::Stale
        );
        let old = pod("h", "r1", json!([]), main.clone(), false);
        assert_eq!(
            pod_state(&sts(2, 2, "r2", "r2", 1), Some(&old), "h"),
            PodState::Stale
        );
        assert_eq!(
            pod_state(&sts(2, 2, "r2", "r2", 1), Some(&p), "h"),
            PodState::Available {
                ip: Some("10.244.0.5".into()),
                initialized: false
            }
        );
        let done = pod("h", "r2", json!([]), main, true);
        assert!(matches!(
            pod_state(&sts(2, 2, "r2", "r2", 1), Some(&done), "h"),
            PodState::Available {
                initialized: true,
                ..
            }
        ));
    }

    #[test]
    fn image_pull_problems_explain_the_wait() {
        let main = json!([{"name": "pulumi", "ready": false, "restartCount": 0, "image": "p", "imageID": "",
                           "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nosuch\""}}}]);
        let p = pod("h", "r1", json!([]), main, false);
        assert_eq!(
            pod_state(&sts(1, 1, "r1", "r1", 0), Some(&p), "h"),
            PodState::Waiting(
                "container pulumi: ImagePullBackOff: Back-off pulling image \"nosuch\"".into()
            )
        );
    }
}
