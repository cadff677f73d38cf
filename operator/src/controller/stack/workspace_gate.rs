//! What a Workspace that is not ready means for its Stack: waiting, a source the pod cannot
//! fetch, or a workspace that cannot run at all (and, while the Stack is being deleted with
//! `destroyOnFinalize`, a destroy that cannot run). Decisions only; the reconcile writes them.

use kube::{Resource, ResourceExt};

use super::stop::{Halt, Stop};
use crate::api::names::{condition, event, stack_reason as reason, workspace_reason};
use crate::api::stack::Stack;
use crate::api::workspace::Workspace;
use crate::controller::runtime::conditions::Conditions;

/// The Stack's standing while its Workspace is not ready.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Stalled until the workspace changes. `announce`: the message is new, say it in a
    /// `StackDestroyBlocked` event too (only while deleting).
    Stalled {
        reason: &'static str,
        message: String,
        announce: bool,
    },
    /// The pod cannot fetch the program: the source is unavailable (it keeps retrying).
    FetchFailing { message: String },
    /// Still coming up, or its status is about an older generation: wait for it.
    Waiting,
}

/// `ws` as the Stack sees it; `deleting` with `destroyOnFinalize` (this path runs only then),
/// `shown`: the Stalled message the Stack shows now.
pub fn gate(ws: &Workspace, stack: &Stack, deleting: bool, shown: Option<&str>) -> Gate {
    let status = ws.status.as_ref();
    let conditions = Conditions::from(status.and_then(|s| s.conditions.as_ref()));
    let observed = status.and_then(|s| s.observed_generation) == ws.meta().generation;
    if !observed {
        return Gate::Waiting;
    }
    if let Some(stalled) = conditions
        .get(condition::STALLED)
        .filter(|c| c.status == "True")
    {
        let why = if stalled.reason == workspace_reason::INCOMPATIBLE_CONFIGURATION {
            reason::PULUMI_VERSION_TOO_LOW
        } else {
            reason::WORKSPACE_FAILED
        };
        let message = format!("{}: {}", stalled.reason, stalled.message);
        if !deleting {
            return Gate::Stalled {
                reason: why,
                message,
                announce: false,
            };
        }
        // No destroy can run, and nothing proves the stack has no resources (an adopted
        // stack, or one whose status was lost, has some without any lastUpdate here): the
        // finalizer stays until the workspace works or the user lets the Stack go.
        let message = format!(
            "the Stack is being deleted with destroyOnFinalize, but its workspace cannot run \
             the destroy ({message}). Fix the workspace and the destroy runs; or, to delete \
             the Stack without destroying its resources: kubectl patch stack {name} -n {ns} \
             --type=merge -p '{{\"spec\":{{\"destroyOnFinalize\":false}}}}'",
            name = stack.name_any(),
            ns = stack.namespace().unwrap_or_default(),
        );
        let announce = shown != Some(message.as_str());
        return Gate::Stalled {
            reason: why,
            message,
            announce,
        };
    }
    match conditions.get(condition::READY) {
        Some(ready) if ready.reason == workspace_reason::FETCH_FAILED => Gate::FetchFailing {
            message: format!(
                "the workspace pod cannot fetch the program: {}",
                ready.message
            ),
        },
        _ => Gate::Waiting,
    }
}

impl From<Gate> for Stop {
    fn from(g: Gate) -> Stop {
        match g {
            Gate::Stalled {
                reason: why,
                message,
                announce,
            } => Stop::Stalled {
                reason: why,
                message,
                event: announce.then_some(event::STACK_DESTROY_BLOCKED),
                retry: None,
            },
            Gate::FetchFailing { message } => Stop::Stalled {
                reason: reason::SOURCE_UNAVAILABLE,
                message,
                event: None,
                retry: None,
            },
            // The Stack already says it waits for the workspace (set before the apply).
            Gate::Waiting => Stop::Waiting {
                reason: reason::STACK_PROCESSING,
                message: "waiting for workspace readiness".into(),
                recheck: None,
            },
        }
    }
}

impl From<Gate> for Halt {
    fn from(g: Gate) -> Halt {
        Halt::Stop(g.into())
    }
}

#[cfg(test)]
mod tests;
