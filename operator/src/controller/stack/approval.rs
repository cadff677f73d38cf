//! The approval gate (pure): with `spec.approval.required`, an update that is due is first a
//! preview that saves an update plan; the plan waits in `status.pendingPlan` until the
//! `pulumi.com/approve` annotation names its id, and then exactly that plan is applied
//! (`pulumi up --plan`). A plan made for another revision, generation or request is stale: a
//! new one supersedes it, and an approval of it applies nothing.

use kube::ResourceExt;

use crate::api::names::{condition, event, label};
use crate::api::stack::{CurrentStackUpdate, PendingPlan, Stack};
use crate::api::update::{ResourceChange, Update};
use crate::controller::runtime::conditions::Conditions;
use crate::controller::runtime::events::EventType;

/// How long the preview that made a plan (and so the plan's Secret, which it owns) is kept: a
/// plan waits this long for approval, then the approval fails and a new plan is made.
pub const PLAN_TTL: &str = "168h";

/// Whether `stack`'s updates wait for approval now.
pub fn required(stack: &Stack, deleting: bool) -> bool {
    let spec = &stack.spec.0;
    !deleting
        && !spec.preview.unwrap_or(false)
        && spec
            .approval
            .as_ref()
            .and_then(|a| a.required)
            .unwrap_or(false)
}

fn approval(stack: &Stack) -> Option<String> {
    stack
        .metadata
        .annotations
        .as_ref()?
        .get(label::APPROVE)
        .cloned()
}

/// The approval annotation's value (a new one wakes the Stack).
pub fn request(stack: &Stack) -> Option<String> {
    approval(stack)
}

/// What the gate does about an update that is due.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No plan for what is due: make one.
    Plan,
    /// The plan waits for approval; `refused`: an approval that names another plan, to answer
    /// once.
    Wait {
        plan: Box<PendingPlan>,
        refused: Option<String>,
    },
    /// The plan was approved: apply it.
    Apply(Box<PendingPlan>),
}

/// The step for `stack` (status as this reconcile has it) when an update is due for `commit`.
pub fn step(stack: &Stack, commit: &str) -> Step {
    let status = stack.status.clone().unwrap_or_default();
    let request = super::sync::reconcile_request(stack);
    let Some(plan) = status.pending_plan.filter(|p| {
        p.revision.as_deref() == Some(commit)
            && p.generation == stack.metadata.generation
            && p.reconcile_request == request
    }) else {
        return Step::Plan;
    };
    match approval(stack) {
        Some(v) if v == plan.id => Step::Apply(Box::new(plan)),
        Some(v)
            if status.applied_plan.as_deref() != Some(v.as_str())
                && plan.refused_approval.as_deref() != Some(v.as_str()) =>
        {
            Step::Wait {
                plan: Box::new(plan),
                refused: Some(v),
            }
        }
        _ => Step::Wait {
            plan: Box::new(plan),
            refused: None,
        },
    }
}

fn count(resources: &[ResourceChange], op: &str) -> i64 {
    resources.iter().filter(|r| r.operation == op).count() as i64
}

/// A plan as one line: counts, the first resources, and the command that approves it.
pub fn describe(stack: &Stack, p: &PendingPlan) -> String {
    let mut named: Vec<String> = p
        .resources
        .iter()
        .flatten()
        .take(5)
        .map(|r| {
            let short = r.urn.rsplit("::").next().unwrap_or(&r.urn);
            format!("{} {short} ({})", r.operation, r.resource_type)
        })
        .collect();
    let listed = p.resources.as_ref().map_or(0, Vec::len);
    let more = listed.saturating_sub(5) as i64 + p.resources_omitted.unwrap_or(0);
    if more > 0 {
        named.push(format!("and {more} more"));
    }
    let what = if named.is_empty() {
        "no resource changes".to_string()
    } else {
        named.join("; ")
    };
    format!(
        "plan {id} for revision {rev}: {c} to create, {u} to update, {d} to delete, {r} to \
         replace ({what}); see kubectl get stack {name} -n {ns} -o jsonpath='{{.status.pendingPlan}}'; \
         approve it: kubectl annotate stack {name} -n {ns} --overwrite {key}={id}",
        id = p.id,
        rev = p.revision.as_deref().unwrap_or("none"),
        c = p.creates,
        u = p.updates,
        d = p.deletes,
        r = p.replaces,
        name = stack.name_any(),
        ns = stack.namespace().unwrap_or_default(),
        key = label::APPROVE,
    )
}

/// The plan a finished planning preview made, or None when it failed (the reconcile then
/// records the failure as an update's, with the usual back-off).
pub fn absorb_plan(
    current: &CurrentStackUpdate,
    u: Option<&Update>,
    now: jiff::Timestamp,
) -> Option<PendingPlan> {
    let u = u?;
    let status = u.status.clone().unwrap_or_default();
    if Conditions::from(status.conditions.as_ref()).is_true(condition::FAILED) {
        return None;
    }
    let saved = status.plan?;
    let resources = status.changes.unwrap_or_default();
    Some(PendingPlan {
        id: saved.id,
        secret_name: saved.secret_name,
        update: u.name_any(),
        revision: current.commit.clone(),
        generation: current.generation,
        reconcile_request: current.reconcile_request.clone(),
        time: Some(now.round(jiff::Unit::Second).unwrap_or(now).to_string()),
        creates: count(&resources, "create"),
        updates: count(&resources, "update"),
        deletes: count(&resources, "delete"),
        replaces: count(&resources, "replace"),
        resources_omitted: status.changes_omitted.filter(|n| *n > 0),
        resources: (!resources.is_empty()).then_some(resources),
        refused_approval: None,
    })
}

/// The `ApprovalRefused` note for an approval `value` that names another plan than `p`.
pub fn refusal(stack: &Stack, value: &str, p: &PendingPlan) -> (EventType, &'static str, String) {
    (
        EventType::Warning,
        event::APPROVAL_REFUSED,
        format!(
            "{key}={value} does not name the plan awaiting approval (a plan made for an earlier \
             revision or spec, or a typo); nothing was applied. Awaiting: {}",
            describe(stack, p),
            key = label::APPROVE,
        ),
    )
}

#[cfg(test)]
mod tests;
