use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::*;
use crate::api::update::{UpdateSpec, UpdateStatus, UpdateType};
use crate::controller::stack::fixtures::{condition, stack};
use crate::controller::stack::sync::{FAILED, SUCCEEDED};

fn now() -> jiff::Timestamp {
    "2026-12-06T10:00:00.4Z".parse().expect("time")
}

fn current(commit: &str) -> CurrentStackUpdate {
    CurrentStackUpdate {
        generation: Some(3),
        reconcile_request: Some("r1".into()),
        name: Some("app-1a".into()),
        commit: Some(commit.into()),
        reconcile_requested_at: None,
        purpose: None,
    }
}

fn cond(type_: &str, status: &str, reason: &str) -> Condition {
    condition(type_, status, reason, "")
}

fn update(kind: UpdateType, status: UpdateStatus) -> Update {
    let mut u = Update::new(
        "app-1a",
        UpdateSpec {
            update_type: Some(kind),
            ..Default::default()
        },
    );
    u.status = Some(status);
    u
}

fn failed(reason: &str, message: &str) -> UpdateStatus {
    UpdateStatus {
        message: Some(message.into()),
        conditions: Some(vec![
            cond(condition::FAILED, "True", reason),
            cond("Complete", "True", "Failed"),
        ]),
        ..Default::default()
    }
}

fn prev_failed(commit: &str, failures: i64) -> StackUpdateState {
    StackUpdateState {
        generation: Some(3),
        reconcile_request: Some("r1".into()),
        state: Some(FAILED.into()),
        last_attempted_commit: Some(commit.into()),
        last_successful_commit: Some("old".into()),
        failures: Some(failures),
        ..Default::default()
    }
}

#[test]
fn a_succeeded_update_records_the_commit_outputs_and_project() {
    let status = UpdateStatus {
        permalink: Some("https://app.pulumi.com/x/1".into()),
        outputs: Some("app-1a-stack-outputs".into()),
        project_info: Some(ProjectInfo {
            name: "proj".into(),
            runtime: "yaml".into(),
        }),
        conditions: Some(vec![cond("Complete", "True", "Updated")]),
        ..Default::default()
    };
    let u = update(UpdateType::Up, status);
    let prev = prev_failed("abc", 2);
    let a = absorb(&stack(), Some(&prev), &current("abc"), Some(&u), now());
    assert_eq!(
        a.last,
        StackUpdateState {
            generation: Some(3),
            reconcile_request: Some("r1".into()),
            name: Some("app-1a".into()),
            update_type: Some("up".into()),
            state: Some(SUCCEEDED.into()),
            last_attempted_commit: Some("abc".into()),
            last_successful_commit: Some("abc".into()),
            permalink: Some("https://app.pulumi.com/x/1".into()),
            last_resync_time: Some("2026-12-06T10:00:00Z".into()),
            failures: Some(0),
            ..Default::default()
        }
    );
    assert_eq!(a.outputs_secret.as_deref(), Some("app-1a-stack-outputs"));
    assert_eq!(a.project_info.map(|p| p.name), Some("proj".to_string()));
    assert_eq!(
        a.events,
        vec![(
            EventType::Normal,
            event::STACK_CREATED,
            "Successfully updated stack".to_string()
        )]
    );
}

#[test]
fn a_failed_update_counts_the_failure_keeps_the_last_success_and_reads_nothing() {
    let mut status = failed("UpdateFailed", "boom");
    status.outputs = Some("ignored".into());
    let u = update(UpdateType::Destroy, status);
    let prev = prev_failed("abc", 2);
    let a = absorb(&stack(), Some(&prev), &current("abc"), Some(&u), now());
    assert_eq!(a.last.state.as_deref(), Some(FAILED));
    assert_eq!(a.last.update_type.as_deref(), Some("destroy"));
    assert_eq!(a.last.message.as_deref(), Some("boom"));
    assert_eq!(
        a.last.failures,
        Some(3),
        "same generation, request and commit"
    );
    assert_eq!(a.last.last_successful_commit.as_deref(), Some("old"));
    assert_eq!(a.outputs_secret, None);
    assert_eq!(a.project_info, None);
    assert_eq!(
        a.events,
        vec![(
            EventType::Warning,
            event::STACK_UPDATE_FAILURE,
            "Failed to update stack: boom".to_string()
        )]
    );

    // Another commit starts the count again.
    let a = absorb(&stack(), Some(&prev), &current("def"), Some(&u), now());
    assert_eq!(a.last.failures, Some(1));
}

#[test]
fn a_lock_conflict_also_says_how_to_remove_the_lock() {
    let u = update(
        UpdateType::Up,
        failed(update_reason::UPDATE_CONFLICT, "locked"),
    );
    let a = absorb(&stack(), None, &current("abc"), Some(&u), now());
    assert_eq!(a.events.len(), 2, "{:?}", a.events);
    let (t, r, hint) = &a.events[1];
    assert_eq!(
        (*t, *r),
        (EventType::Warning, event::STACK_UPDATE_CONFLICT_DETECTED)
    );
    assert!(
        hint.contains(
            "kubectl exec -n team app-workspace-0 -c pulumi -- pulumi cancel --yes --stack dev"
        ),
        "{hint}"
    );
    assert_eq!(a.last.failures, Some(1));
    assert_eq!(a.last.last_successful_commit, None);
}

#[test]
fn pending_operations_refused_also_say_how_to_resolve_them() {
    let u = update(
        UpdateType::Up,
        failed(update_reason::PENDING_OPERATIONS, "pending"),
    );
    let a = absorb(&stack(), None, &current("abc"), Some(&u), now());
    assert_eq!(a.events.len(), 2, "{:?}", a.events);
    let (t, r, hint) = &a.events[1];
    assert_eq!(
        (*t, *r),
        (EventType::Warning, event::STACK_PENDING_OPERATIONS)
    );
    assert!(
        hint.contains(
            "kubectl exec -n team app-workspace-0 -c pulumi -- pulumi refresh \
             --clear-pending-creates --yes --stack dev"
        ) && hint.contains("spec.pendingOperations: Refresh"),
        "{hint}"
    );
}

#[test]
fn an_update_deleted_before_it_ended_is_a_failure_that_names_it() {
    let a = absorb(&stack(), None, &current("abc"), None, now());
    assert_eq!(a.last.state.as_deref(), Some(FAILED));
    assert_eq!(a.last.update_type.as_deref(), Some("up"));
    assert_eq!(
        a.last.message.as_deref(),
        Some("Update app-1a was deleted before it completed")
    );
    assert_eq!(a.events.len(), 1);
}

#[test]
fn an_update_still_without_a_failed_condition_is_not_a_failure() {
    // is_complete() let it through: Complete without Failed is a success.
    let u = update(
        UpdateType::Preview,
        UpdateStatus {
            conditions: Some(vec![
                cond(condition::FAILED, "False", "Succeeded"),
                cond("Complete", "True", "Updated"),
            ]),
            ..Default::default()
        },
    );
    let a = absorb(&stack(), None, &current("abc"), Some(&u), now());
    assert_eq!(a.last.state.as_deref(), Some(SUCCEEDED));
    assert_eq!(a.last.update_type.as_deref(), Some("preview"));
}
