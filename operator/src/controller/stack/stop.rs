//! Why a Stack reconcile ends before it creates an Update, typed. The reconcile's steps return
//! a [`Halt`]; `Run::stop` alone turns a [`Stop`] into the Stack's condition, an event when
//! there is news, and when to look again (the way Flux's reconcilers hand typed errors to one
//! summarizer).

use std::time::Duration;

use crate::api::names::stack_reason as reason;
use crate::api::stack::StackUpdateState;
use crate::controller::runtime;

/// How long a Stack whose source has no revision now waits before another look.
pub const SOURCE_RETRY: Duration = Duration::from_secs(30);

/// Why the reconcile stops before it can run an update.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The spec is wrong: Stalled (SpecInvalid) with a StackConfigInvalid event; looked at
    /// again when the spec changes, or after `retry` when what is wrong lives elsewhere (a
    /// Secret).
    SpecInvalid {
        message: String,
        retry: Option<Duration>,
    },
    /// The source has no revision to deploy now: Stalled (SourceUnavailable), retried after
    /// [`SOURCE_RETRY`].
    SourceUnavailable(String),
    /// Nothing this operator does can go on until something outside changes (the workspace,
    /// the namespace): Stalled with `reason`; a Warning `event` when the message is news;
    /// looked at again when a watched object changes, or after `retry`.
    Stalled {
        reason: &'static str,
        message: String,
        event: Option<&'static str>,
        retry: Option<Duration>,
    },
    /// Something else must happen first (the Update in flight finishing, the prerequisites
    /// succeeding, the Workspace coming up): Reconciling with `reason`, looked at again when
    /// a watched object changes, or after `recheck`.
    Waiting {
        reason: &'static str,
        message: String,
        recheck: Option<Duration>,
    },
    /// `spec.suspend`: Ready keeps its status with reason `Suspended`; looked at again when
    /// the Stack changes (resumed, deleted, asked to reconcile).
    Suspended,
    /// A drift check runs, or waits for its workspace: it changes nothing deployed, so the
    /// conditions stay as they are (a Stack does not turn un-Ready every interval); looked
    /// at again when a watched object changes, or after `recheck`.
    Checking { recheck: Duration },
}

impl Stop {
    /// A spec error that only a spec change fixes.
    pub fn spec(e: impl std::fmt::Display) -> Stop {
        Stop::SpecInvalid {
            message: e.to_string(),
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

/// The Stack is being deleted in a namespace that is itself terminating: no Workspace can be
/// created there, so no destroy can run. Says what may remain and how to let the Stack go.
pub fn namespace_terminating(last: Option<&StackUpdateState>, name: &str, ns: &str) -> Stop {
    let message = format!(
        "the namespace is terminating, so the destroy cannot run; the stack's resources may \
         remain (last update: {}). To let the Stack go without destroying, run: kubectl patch \
         stack {name} -n {ns} --type=merge -p '{{\"metadata\":{{\"finalizers\":[]}}}}'",
        last.and_then(|l| l.permalink.clone().or_else(|| l.name.clone()))
            .unwrap_or_else(|| "none".into()),
    );
    Stop::Stalled {
        reason: reason::NAMESPACE_TERMINATING,
        message,
        event: None,
        retry: Some(SOURCE_RETRY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminating_namespace_names_the_last_update_and_the_way_out() {
        let last = StackUpdateState {
            name: Some("app-1".into()),
            permalink: Some("https://app.pulumi.com/o/p/dev/updates/3".into()),
            ..Default::default()
        };
        let Stop::Stalled {
            reason: why,
            message,
            event,
            retry,
        } = namespace_terminating(Some(&last), "app", "team")
        else {
            panic!("not Stalled");
        };
        assert_eq!(why, reason::NAMESPACE_TERMINATING);
        assert!(message.contains("(last update: https://app.pulumi.com/o/p/dev/updates/3)"));
        assert!(message.contains(
            "kubectl patch stack app -n team --type=merge -p '{\"metadata\":{\"finalizers\":[]}}'"
        ));
        assert_eq!((event, retry), (None, Some(SOURCE_RETRY)));

        let named = StackUpdateState {
            name: Some("app-1".into()),
            ..Default::default()
        };
        let m = |l| match namespace_terminating(l, "app", "team") {
            Stop::Stalled { message, .. } => message,
            other => panic!("{other:?}"),
        };
        assert!(m(Some(&named)).contains("(last update: app-1)"));
        assert!(m(None).contains("(last update: none)"));
    }
}
