//! What the Update controller does with an Update, from the Update's own state and, for a
//! deleted one, whether a Stack will still absorb it (pure); and why a run cannot start yet.

use std::time::Duration;

use crate::api::names::update_reason as reason;

/// How long an Update whose workspace pod has no IP, or whose agent did not answer, waits.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// What the Update controller sees.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    pub deleting: bool,
    /// The Stack controller's finalizer is on it.
    pub held: bool,
    pub complete: bool,
    pub progressing: bool,
    /// Whether its Stack (the controller owner, same uid) still exists to absorb it; None
    /// when not looked up ([`needs_stack`] says when it matters).
    pub absorbed_later: Option<bool>,
}

/// The one decision that needs a read: a deleted, held Update that is not running is let go
/// by this controller only when no Stack will absorb it.
pub fn needs_stack(seen: &Seen) -> bool {
    seen.deleting && seen.held && !seen.progressing
}

#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Deleted, and held for a Stack that will never absorb it: nobody else will let it go.
    /// `cancel`: it never completed, so it ends Canceled first.
    Release {
        cancel: bool,
    },
    /// Complete: deleted once its `ttlAfterCompleted` has passed.
    Expire,
    /// Marked running by an operator process that is gone: the outcome is unknown, Aborted.
    Abort,
    /// Deleted before it ran: Canceled, never run.
    Cancel,
    Run,
}

pub fn plan(seen: &Seen) -> Plan {
    if needs_stack(seen) && seen.absorbed_later == Some(false) {
        return Plan::Release {
            cancel: !seen.complete,
        };
    }
    if seen.complete {
        Plan::Expire
    } else if seen.progressing {
        Plan::Abort
    } else if seen.deleting {
        Plan::Cancel
    } else {
        Plan::Run
    }
}

/// Why the run cannot start yet: Progressing=False with `reason`, looked at again when the
/// Workspace changes, or after `retry`.
#[derive(Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
    pub retry: Option<Duration>,
}

impl Blocked {
    /// Nothing to look up: only a spec change (a new generation) can fix it.
    pub fn no_workspace_name() -> Blocked {
        Blocked {
            reason: reason::WORKSPACE_NOT_FOUND,
            message: "spec.workspaceName is not set: set it to the Workspace that runs this \
                      Update"
                .into(),
            retry: None,
        }
    }

    pub fn no_workspace(name: &str) -> Blocked {
        Blocked {
            reason: reason::WORKSPACE_NOT_FOUND,
            message: format!("Workspace {name:?} not found"),
            retry: None,
        }
    }

    pub fn workspace_not_ready(name: &str) -> Blocked {
        Blocked {
            reason: reason::WORKSPACE_NOT_READY,
            message: format!("Workspace {name:?} is not ready"),
            retry: None,
        }
    }

    /// Only a pod with an IP is in the Service's endpoints, through which the agent is
    /// reached; the Workspace may not change when the IP comes, so look again.
    pub fn no_pod_ip() -> Blocked {
        Blocked {
            reason: reason::WORKSPACE_NOT_READY,
            message: "the workspace pod has no IP".into(),
            retry: Some(CONNECT_RETRY),
        }
    }

    pub fn unreachable(message: String) -> Blocked {
        Blocked {
            reason: reason::TRANSIENT_FAILURE,
            message,
            retry: Some(CONNECT_RETRY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(deleting: bool, held: bool, complete: bool, progressing: bool) -> Seen {
        Seen {
            deleting,
            held,
            complete,
            progressing,
            absorbed_later: None,
        }
    }

    #[test]
    fn decisions_follow_the_update_s_state_in_order() {
        // (deleting, held, complete, progressing, absorbed later) → plan
        let table = [
            ((false, false, false, false, None), Plan::Run),
            ((false, true, false, false, None), Plan::Run),
            ((false, true, true, false, None), Plan::Expire),
            ((false, true, false, true, None), Plan::Abort),
            ((true, false, false, false, None), Plan::Cancel),
            ((true, false, true, false, None), Plan::Expire),
            ((true, true, false, false, Some(true)), Plan::Cancel),
            (
                (true, true, false, false, Some(false)),
                Plan::Release { cancel: true },
            ),
            (
                (true, true, true, false, Some(false)),
                Plan::Release { cancel: false },
            ),
            ((true, true, true, false, Some(true)), Plan::Expire),
            // Running, deleted, Stack gone: still Aborted first (nothing runs any more).
            ((true, true, false, true, Some(false)), Plan::Abort),
        ];
        for ((d, h, c, p, a), want) in table {
            let s = Seen {
                absorbed_later: a,
                ..seen(d, h, c, p)
            };
            assert_eq!(plan(&s), want, "{s:?}");
        }
    }

    #[test]
    fn only_a_deleted_held_update_that_is_not_running_needs_its_stack() {
        assert!(needs_stack(&seen(true, true, false, false)));
        assert!(needs_stack(&seen(true, true, true, false)));
        assert!(!needs_stack(&seen(true, true, false, true)));
        assert!(!needs_stack(&seen(true, false, false, false)));
        assert!(!needs_stack(&seen(false, true, false, false)));
    }

    #[test]
    fn a_blocked_run_waits_for_the_workspace_or_retries_the_connection() {
        assert_eq!(
            Blocked::no_workspace("app"),
            Blocked {
                reason: reason::WORKSPACE_NOT_FOUND,
                message: "Workspace \"app\" not found".into(),
                retry: None
            }
        );
        assert_eq!(Blocked::workspace_not_ready("app").retry, None);
        let unnamed = Blocked::no_workspace_name();
        assert_eq!(
            (unnamed.reason, unnamed.retry),
            (reason::WORKSPACE_NOT_FOUND, None)
        );
        assert!(unnamed.message.starts_with("spec.workspaceName is not set"));
        assert_eq!(Blocked::no_pod_ip().retry, Some(CONNECT_RETRY));
        assert_eq!(
            Blocked::unreachable("refused".into()).reason,
            reason::TRANSIENT_FAILURE
        );
    }
}
