//! What a finished (or vanished) Update changes on its Stack: the decision half of absorbing
//! it, with no API call. The reconcile reads the Update, hands it here, then does what the
//! answer says (read the outputs Secret, publish the events, write the status).

use kube::ResourceExt;

use super::sync;
use crate::api::names::{condition, event, update_reason};
use crate::api::stack::{CurrentStackUpdate, Stack, StackUpdateState, UpdateOutcome};
use crate::api::update::{Update, UpdateType};
use crate::api::workspace::ProjectInfo;
use crate::controller::runtime::conditions::Conditions;
use crate::controller::runtime::events::EventType;

/// The Stack's side of an Update's result.
#[derive(Debug, PartialEq)]
pub struct Absorbed {
    /// The Stack's new `status.lastUpdate`.
    pub last: StackUpdateState,
    /// The Secret with the stack's outputs, to read into `status.outputs` (a succeeded
    /// update that wrote one).
    pub outputs_secret: Option<String>,
    /// The project the update ran on, for `status.projectInfo`.
    pub project_info: Option<ProjectInfo>,
    /// What to announce, in order: (type, reason, note).
    pub events: Vec<(EventType, &'static str, String)>,
}

/// The result of Update `u` (None: it was deleted before the Stack saw it end) for the update
/// `current` the Stack was waiting on; `prev` is the Stack's last update before it.
pub fn absorb(
    stack: &Stack,
    prev: Option<&StackUpdateState>,
    current: &CurrentStackUpdate,
    u: Option<&Update>,
    now: jiff::Timestamp,
) -> Absorbed {
    let commit = current.commit.clone().unwrap_or_default();
    let ustatus = u.and_then(|u| u.status.clone()).unwrap_or_default();
    let conditions = Conditions::from(ustatus.conditions.as_ref());
    let utype = u
        .and_then(|u| u.spec.update_type)
        .unwrap_or(UpdateType::Up)
        .as_str();
    let mut last = StackUpdateState {
        generation: current.generation,
        reconcile_request: current.reconcile_request.clone(),
        name: current.name.clone(),
        update_type: Some(utype.into()),
        last_attempted_commit: Some(commit.clone()),
        last_successful_commit: prev.and_then(|p| p.last_successful_commit.clone()),
        permalink: ustatus.permalink.clone(),
        last_resync_time: Some(now.round(jiff::Unit::Second).unwrap_or(now).to_string()),
        ..Default::default()
    };
    let mut events = Vec::new();
    if u.is_none() || conditions.is_true(condition::FAILED) {
        let message = match u {
            None => format!(
                "Update {} was deleted before it completed",
                current.name.clone().unwrap_or_default()
            ),
            Some(_) => ustatus.message.clone().unwrap_or_default(),
        };
        last.set_outcome(UpdateOutcome::Failed);
        last.message = Some(message.clone());
        last.failures = Some(sync::next_failures(
            prev,
            current.generation,
            &current.reconcile_request,
            &commit,
        ));
        events.push((
            EventType::Warning,
            event::STACK_UPDATE_FAILURE,
            format!("Failed to update stack: {message}"),
        ));
        if conditions.reason(condition::FAILED) == Some(update_reason::UPDATE_CONFLICT) {
            events.push((
                EventType::Warning,
                event::STACK_UPDATE_CONFLICT_DETECTED,
                conflict_hint(stack),
            ));
        }
        if conditions.reason(condition::FAILED) == Some(update_reason::PENDING_OPERATIONS) {
            events.push((
                EventType::Warning,
                event::STACK_PENDING_OPERATIONS,
                pending_hint(stack),
            ));
        }
        return Absorbed {
            last,
            outputs_secret: None,
            project_info: None,
            events,
        };
    }
    last.set_outcome(UpdateOutcome::Succeeded);
    last.last_successful_commit = Some(commit);
    last.failures = Some(0);
    events.push((
        EventType::Normal,
        event::STACK_CREATED,
        "Successfully updated stack".into(),
    ));
    Absorbed {
        last,
        outputs_secret: ustatus.outputs,
        project_info: ustatus.project_info,
        events,
    }
}

/// How to get past a lock left by another update.
fn conflict_hint(stack: &Stack) -> String {
    format!(
        "The stack is locked by another update. If no other update is running, remove the \
         lock: kubectl exec -n {ns} {pod} -c pulumi -- pulumi cancel --yes --stack {stack}; \
         the next attempt then proceeds (or annotate the Stack with \
         pulumi.com/reconciliation-request to retry at once).",
        ns = stack.namespace().unwrap_or_default(),
        pod = format_args!("{}-workspace-0", stack.name_any()),
        stack = stack.spec.0.stack,
    )
}

/// How to resolve what an interrupted update left pending, when the Stack says not to do it
/// for the user (`spec.pendingOperations: Fail`).
fn pending_hint(stack: &Stack) -> String {
    format!(
        "An interrupted update left pending operations (the update's message names them). \
         Check those resources with their provider, then resolve them: kubectl exec -n {ns} \
         {pod} -c pulumi -- pulumi refresh --clear-pending-creates --yes --stack {stack} (if \
         the stack is locked by that update, first: pulumi cancel --yes --stack {stack}); the \
         next attempt then proceeds (annotate the Stack with pulumi.com/reconciliation-request \
         to retry at once). Or set spec.pendingOperations: Refresh to have the operator do it.",
        ns = stack.namespace().unwrap_or_default(),
        pod = format_args!("{}-workspace-0", stack.name_any()),
        stack = stack.spec.0.stack,
    )
}

#[cfg(test)]
mod tests;
