use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::*;
use crate::api::workspace::{WorkspaceSpec, WorkspaceStatus};
use crate::controller::stack::fixtures::{condition as cond, stack};

/// A Workspace at generation 2 whose status is about `observed`.
fn ws(observed: i64, conditions: Vec<Condition>) -> Workspace {
    let mut w = Workspace::new("app", WorkspaceSpec::default());
    w.metadata.generation = Some(2);
    w.status = Some(WorkspaceStatus {
        observed_generation: Some(observed),
        conditions: Some(conditions),
        ..Default::default()
    });
    w
}

#[test]
fn a_stalled_workspace_stalls_the_stack_with_its_reason() {
    let w = ws(
        2,
        vec![cond(condition::STALLED, "True", "SpecInvalid", "no image")],
    );
    assert_eq!(
        gate(&w, &stack(), false, None),
        Gate::Stalled {
            reason: reason::WORKSPACE_FAILED,
            message: "SpecInvalid: no image".into(),
            announce: false,
        }
    );
    let w = ws(
        2,
        vec![cond(
            condition::STALLED,
            "True",
            workspace_reason::INCOMPATIBLE_CONFIGURATION,
            "pulumi too old",
        )],
    );
    let Gate::Stalled { reason: why, .. } = gate(&w, &stack(), false, None) else {
        panic!("stalled")
    };
    assert_eq!(why, reason::PULUMI_VERSION_TOO_LOW);
}

#[test]
fn a_status_about_an_older_generation_or_not_stalled_means_wait() {
    let stalled = vec![cond(condition::STALLED, "True", "SpecInvalid", "no image")];
    assert_eq!(gate(&ws(1, stalled), &stack(), false, None), Gate::Waiting);
    let recovering = vec![
        cond(condition::STALLED, "False", "", ""),
        cond(condition::READY, "False", "PodNotReady", "starting"),
    ];
    assert_eq!(
        gate(&ws(2, recovering), &stack(), false, None),
        Gate::Waiting
    );
    let mut none = ws(2, vec![]);
    none.status = None;
    assert_eq!(gate(&none, &stack(), false, None), Gate::Waiting);
}

#[test]
fn a_pod_that_cannot_fetch_makes_the_source_unavailable() {
    let w = ws(
        2,
        vec![cond(
            condition::READY,
            "False",
            workspace_reason::FETCH_FAILED,
            "digest mismatch",
        )],
    );
    assert_eq!(
        gate(&w, &stack(), false, None),
        Gate::FetchFailing {
            message: "the workspace pod cannot fetch the program: digest mismatch".into()
        }
    );
}

#[test]
fn while_deleting_the_message_says_how_to_let_the_stack_go_and_is_announced_once() {
    let w = ws(
        2,
        vec![cond(condition::STALLED, "True", "SpecInvalid", "no image")],
    );
    let Gate::Stalled {
        message, announce, ..
    } = gate(&w, &stack(), true, None)
    else {
        panic!("stalled")
    };
    assert!(announce);
    assert!(message.contains("(SpecInvalid: no image)"), "{message}");
    assert!(
        message.contains(
            "kubectl patch stack app -n team --type=merge -p '{\"spec\":{\"destroyOnFinalize\":false}}'"
        ),
        "{message}"
    );
    assert_eq!(
        gate(&w, &stack(), true, Some(&message)),
        Gate::Stalled {
            reason: reason::WORKSPACE_FAILED,
            message: message.clone(),
            announce: false,
        },
        "already shown: not announced again"
    );
}

#[test]
fn each_gate_stops_the_stack_with_its_condition_event_and_wake_up() {
    let stalled = Gate::Stalled {
        reason: reason::WORKSPACE_FAILED,
        message: "m".into(),
        announce: false,
    };
    assert_eq!(
        Stop::from(stalled),
        Stop::Stalled {
            reason: reason::WORKSPACE_FAILED,
            message: "m".into(),
            event: None,
            retry: None,
        },
        "a broken workspace stays Stalled until it changes, with no event of its own"
    );
    let announced = Gate::Stalled {
        reason: reason::WORKSPACE_FAILED,
        message: "m".into(),
        announce: true,
    };
    assert_eq!(
        Stop::from(announced),
        Stop::Stalled {
            reason: reason::WORKSPACE_FAILED,
            message: "m".into(),
            event: Some(event::STACK_DESTROY_BLOCKED),
            retry: None,
        }
    );
    assert_eq!(
        Stop::from(Gate::FetchFailing {
            message: "f".into()
        }),
        Stop::Stalled {
            reason: reason::SOURCE_UNAVAILABLE,
            message: "f".into(),
            event: None,
            retry: None,
        },
        "the pod retries the fetch itself; its next status change wakes the Stack"
    );
    assert_eq!(
        Stop::from(Gate::Waiting),
        Stop::Waiting {
            reason: reason::STACK_PROCESSING,
            message: "waiting for workspace readiness".into(),
            recheck: None,
        }
    );
}
