//! Why a Workspace reconcile ends before the workspace is Ready, typed. The steps return a
//! [`Halt`]; the reconcile alone turns a [`Stop`] into the Ready (and Stalled) condition, an
//! event, and when to look again.

use std::time::Duration;

use super::readiness::PodState;
use crate::api::names::{event, workspace_reason as reason};
use crate::controller::runtime;

/// How long a pod that is not yet the current one, or has no IP yet, waits for the caches.
pub const RECHECK: Duration = Duration::from_secs(2);
/// How long a workspace whose agent did not answer waits before dialing again.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// When a stop is told as a Warning event too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    Never,
    /// When the Ready condition it sets is news (a failure that persists is told once).
    OnChange(&'static str),
    /// Every time (a failed call that is retried: each attempt is news).
    Always(&'static str),
}

/// Why the workspace is not Ready now.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Ready=False with `reason` and `message`; the agent's address cleared when it cannot
    /// be reached (`unreachable`); looked at again on change or after `retry`.
    NotReady {
        reason: String,
        message: String,
        announce: Announce,
        unreachable: bool,
        retry: Option<Duration>,
    },
    /// The workspace cannot become Ready until its spec or program changes: Ready=False and
    /// Stalled with `reason`.
    Stalled {
        reason: &'static str,
        message: String,
        announce: Announce,
    },
    /// A call to the agent failed: Ready=False with the agent's reason, an event, and the
    /// error to the runtime (its back-off and the failure metric).
    AgentFailed {
        reason: String,
        message: String,
        call: &'static str,
    },
    /// The caches trail what was just applied: look again soon, write nothing.
    Recheck,
}

impl Stop {
    fn not_ready(reason: &str, message: String, announce: Announce) -> Stop {
        Stop::NotReady {
            reason: reason.to_string(),
            message,
            announce,
            unreachable: true,
            retry: None,
        }
    }
}

/// How a step ends the reconcile early: a [`Stop`], or a call that failed.
pub type Halt = runtime::Halt<Stop>;

impl From<Stop> for Halt {
    fn from(s: Stop) -> Halt {
        Halt::Stop(s)
    }
}

/// Whether an apply of the StatefulSet was refused for changing a field the API server lets no
/// update change (its selector, service name, volume claim templates...): one made by PKO or
/// by an older release. The API server's words: `spec: Forbidden: updates to statefulset spec
/// for fields other than 'replicas', ... are forbidden`.
pub fn immutable_field_changed(e: &kube::core::Status) -> bool {
    e.code == 422 && e.message.contains("Forbidden: updates to statefulset spec")
}

/// The StatefulSet was deleted to be created again with the fields an update cannot change
/// (as PKO does): a Warning `Migrated` event every time, Ready=False meanwhile, and a look
/// again after [`CONNECT_RETRY`] (its deletion wakes the controller sooner).
pub fn replaced_statefulset() -> Stop {
    Stop::NotReady {
        reason: reason::ROLLING_UPDATE.into(),
        message: "Replaced the workspace statefulset".into(),
        announce: Announce::Always(event::MIGRATED),
        unreachable: true,
        retry: Some(CONNECT_RETRY),
    }
}

/// The pod was deleted to be made again with a configuration it could not take in place:
/// Ready=False until the new one is set up (its creation wakes the controller).
pub fn restarting(message: String) -> Stop {
    Stop::NotReady {
        reason: reason::ROLLING_UPDATE.into(),
        message,
        announce: Announce::Never,
        unreachable: true,
        retry: Some(RECHECK),
    }
}

/// The pod needs a restart but `update` runs on it: look again after [`CONNECT_RETRY`].
pub fn restart_after(update: &str, why: &str) -> Stop {
    Stop::NotReady {
        reason: reason::ROLLING_UPDATE.into(),
        message: format!(
            "the workspace pod will be restarted ({why}) once update {update:?} has ended"
        ),
        announce: Announce::Never,
        unreachable: false,
        retry: Some(CONNECT_RETRY),
    }
}

/// The pod the agent runs in, available: its IP (none yet: [`Stop::Recheck`]) and whether it
/// was initialized.
#[derive(Debug, PartialEq, Eq)]
pub struct Available {
    pub initialized: bool,
}

/// What the pod's state means for the Workspace.
pub fn standing(state: PodState) -> Result<Available, Stop> {
    match state {
        PodState::FetchFailed(message) => Err(Stop::not_ready(
            reason::FETCH_FAILED,
            message,
            Announce::OnChange(event::FETCH_FAILED),
        )),
        PodState::Rolling => Err(Stop::not_ready(
            reason::ROLLING_UPDATE,
            "Waiting for the statefulset to be updated".into(),
            Announce::Never,
        )),
        PodState::Waiting(why) => {
            let mut message = "Waiting for the workspace pod to be available".to_string();
            if !why.is_empty() {
                message.push_str(": ");
                message.push_str(&why);
            }
            Err(Stop::not_ready(
                reason::WAITING_FOR_REPLICAS,
                message,
                Announce::Never,
            ))
        }
        // Only a pod with an IP is in the Service's endpoints, which is how the agent is
        // reached.
        PodState::Stale | PodState::Available { ip: None, .. } => Err(Stop::Recheck),
        PodState::Available {
            ip: Some(_),
            initialized,
        } => Ok(Available { initialized }),
    }
}

/// The agent did not answer a dial (or no token could be had for it): told every time,
/// dialed again after [`CONNECT_RETRY`].
pub fn connection_failed(message: String) -> Stop {
    Stop::NotReady {
        reason: reason::CONNECTION_FAILED.to_string(),
        message,
        announce: Announce::Always(event::CONNECTION_FAILURE),
        unreachable: true,
        retry: Some(CONNECT_RETRY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pod_state_stops_with_its_reason_or_goes_on() {
        assert_eq!(
            standing(PodState::FetchFailed("digest mismatch".into())),
            Err(Stop::NotReady {
                reason: reason::FETCH_FAILED.into(),
                message: "digest mismatch".into(),
                announce: Announce::OnChange(event::FETCH_FAILED),
                unreachable: true,
                retry: None,
            }),
            "a fetch failure is told once, in the container's own words"
        );
        assert_eq!(
            standing(PodState::Rolling),
            Err(Stop::NotReady {
                reason: reason::ROLLING_UPDATE.into(),
                message: "Waiting for the statefulset to be updated".into(),
                announce: Announce::Never,
                unreachable: true,
                retry: None,
            })
        );
        let waiting = |why: &str| match standing(PodState::Waiting(why.into())) {
            Err(Stop::NotReady {
                reason: r, message, ..
            }) if r == reason::WAITING_FOR_REPLICAS => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            waiting("ImagePullBackOff: not found"),
            "Waiting for the workspace pod to be available: ImagePullBackOff: not found"
        );
        assert_eq!(waiting(""), "Waiting for the workspace pod to be available");
        assert_eq!(standing(PodState::Stale), Err(Stop::Recheck));
        assert_eq!(
            standing(PodState::Available {
                ip: None,
                initialized: true
            }),
            Err(Stop::Recheck),
            "no IP: not in the Service's endpoints yet"
        );
        assert_eq!(
            standing(PodState::Available {
                ip: Some("10.0.0.7".into()),
                initialized: false
            }),
            Ok(Available { initialized: false })
        );
    }

    #[test]
    fn only_a_forbidden_statefulset_update_is_an_immutable_field() {
        let refusal = |code: u16, message: &str| {
            kube::core::Status::failure(message, "Invalid").with_code(code)
        };
        assert!(immutable_field_changed(&refusal(
            422,
            "StatefulSet.apps \"a-workspace\" is invalid: spec: Forbidden: updates to \
             statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
             'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' \
             are forbidden"
        )));
        assert!(!immutable_field_changed(&refusal(
            422,
            "StatefulSet.apps \"a-workspace\" is invalid: spec.template.spec.containers[0].image: \
             Required value"
        )));
        assert!(!immutable_field_changed(&refusal(409, "conflict")));
        assert_eq!(
            replaced_statefulset(),
            Stop::NotReady {
                reason: reason::ROLLING_UPDATE.into(),
                message: "Replaced the workspace statefulset".into(),
                announce: Announce::Always(event::MIGRATED),
                unreachable: true,
                retry: Some(CONNECT_RETRY),
            }
        );
    }

    #[test]
    fn a_connection_failure_is_told_every_time_and_retried() {
        assert_eq!(
            connection_failed("deadline".into()),
            Stop::NotReady {
                reason: reason::CONNECTION_FAILED.into(),
                message: "deadline".into(),
                announce: Announce::Always(event::CONNECTION_FAILURE),
                unreachable: true,
                retry: Some(CONNECT_RETRY),
            }
        );
    }
}
