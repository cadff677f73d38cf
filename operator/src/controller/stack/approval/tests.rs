use super::*;
use crate::api::stack::StackStatus;
use crate::api::stack_spec::Approval;
use crate::api::update::{PlanRef, UpdateSpec, UpdateStatus, UpdateType};
use crate::controller::stack::fixtures::{condition, stack};

fn gated() -> Stack {
    let mut s = stack();
    s.metadata.generation = Some(2);
    s.spec.0.approval = Some(Approval {
        required: Some(true),
    });
    s
}

fn pending(id: &str, revision: &str) -> PendingPlan {
    PendingPlan {
        id: id.into(),
        secret_name: format!("app-{id}-plan"),
        update: "app-p".into(),
        revision: Some(revision.into()),
        generation: Some(2),
        creates: 1,
        resources: Some(vec![ResourceChange {
            urn: "urn:pulumi:dev::app::gate:index:Resource::thing".into(),
            resource_type: "gate:index:Resource".into(),
            operation: "create".into(),
            paths: None,
        }]),
        ..Default::default()
    }
}

fn with(
    mut s: Stack,
    plan: Option<PendingPlan>,
    applied: Option<&str>,
    approve: Option<&str>,
) -> Stack {
    s.status = Some(StackStatus {
        pending_plan: plan,
        applied_plan: applied.map(String::from),
        ..Default::default()
    });
    if let Some(v) = approve {
        s.metadata.annotations = Some([(label::APPROVE.to_string(), v.to_string())].into());
    }
    s
}

#[test]
fn only_a_stack_that_asks_is_gated_and_never_a_preview_or_a_destroy() {
    assert!(required(&gated(), false));
    assert!(!required(&gated(), true), "the destroy of a deleted Stack");
    assert!(!required(&stack(), false));
    let mut preview = gated();
    preview.spec.0.preview = Some(true);
    assert!(!required(&preview, false));
}

#[test]
fn a_plan_is_made_waits_and_is_applied_only_when_its_id_is_approved() {
    assert_eq!(step(&with(gated(), None, None, None), "c1"), Step::Plan);
    let waiting = step(
        &with(gated(), Some(pending("aa11", "c1")), None, None),
        "c1",
    );
    assert!(
        matches!(waiting, Step::Wait { refused: None, .. }),
        "{waiting:?}"
    );
    assert!(matches!(
        step(&with(gated(), Some(pending("aa11", "c1")), None, Some("aa11")), "c1"),
        Step::Apply(p) if p.id == "aa11"
    ));
    // A new revision supersedes the plan: an approval of the old one applies nothing.
    assert_eq!(
        step(
            &with(gated(), Some(pending("aa11", "c1")), None, Some("aa11")),
            "c2"
        ),
        Step::Plan
    );
    let mut spec_changed = with(gated(), Some(pending("aa11", "c1")), None, Some("aa11"));
    spec_changed.metadata.generation = Some(3);
    assert_eq!(step(&spec_changed, "c1"), Step::Plan);
}

#[test]
fn an_approval_of_another_plan_is_refused_once_and_the_last_applied_one_is_quiet() {
    let s = with(gated(), Some(pending("bb22", "c2")), None, Some("aa11"));
    match step(&s, "c2") {
        Step::Wait { plan, refused } => {
            assert_eq!(refused.as_deref(), Some("aa11"));
            let (t, r, note) = refusal(&s, "aa11", &plan);
            assert_eq!((t, r), (EventType::Warning, event::APPROVAL_REFUSED));
            assert!(
                note.contains("pulumi.com/approve=aa11 does not name the plan")
                    && note.contains("nothing was applied")
                    && note.contains(
                        "kubectl annotate stack app -n team --overwrite pulumi.com/approve=bb22"
                    ),
                "{note}"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut answered = pending("bb22", "c2");
    answered.refused_approval = Some("aa11".into());
    let s = with(gated(), Some(answered), None, Some("aa11"));
    assert!(matches!(step(&s, "c2"), Step::Wait { refused: None, .. }));
    let s = with(
        gated(),
        Some(pending("bb22", "c2")),
        Some("aa11"),
        Some("aa11"),
    );
    assert!(
        matches!(step(&s, "c2"), Step::Wait { refused: None, .. }),
        "the plan applied last"
    );
}

fn preview(status: UpdateStatus) -> Update {
    let mut u = Update::new(
        "app-p",
        UpdateSpec {
            update_type: Some(UpdateType::Preview),
            save_plan: Some(true),
            ..Default::default()
        },
    );
    u.status = Some(status);
    u
}

#[test]
fn a_planning_preview_becomes_the_pending_plan_with_its_counts() {
    let current = CurrentStackUpdate {
        name: Some("app-p".into()),
        commit: Some("c1".into()),
        generation: Some(2),
        ..Default::default()
    };
    let change = |op: &str, n: &str| ResourceChange {
        urn: format!("urn:pulumi:dev::app::t::{n}"),
        resource_type: "t".into(),
        operation: op.into(),
        paths: None,
    };
    let u = preview(UpdateStatus {
        conditions: Some(vec![condition(condition::FAILED, "False", "x", "")]),
        plan: Some(PlanRef {
            id: "cc33".into(),
            secret_name: "app-p-plan".into(),
        }),
        changes: Some(vec![
            change("create", "a"),
            change("create", "b"),
            change("replace", "c"),
            change("delete", "d"),
        ]),
        ..Default::default()
    });
    let p = absorb_plan(
        &current,
        Some(&u),
        "2026-12-08T01:00:00Z".parse().expect("t"),
    )
    .expect("a plan");
    assert_eq!(
        (p.id.as_str(), p.revision.as_deref(), p.generation),
        ("cc33", Some("c1"), Some(2))
    );
    assert_eq!((p.creates, p.updates, p.deletes, p.replaces), (2, 0, 1, 1));
    let text = describe(&gated(), &p);
    assert!(
        text.contains(
            "plan cc33 for revision c1: 2 to create, 0 to update, 1 to delete, 1 to replace"
        ) && text.contains("create a (t)"),
        "{text}"
    );
    let failed = preview(UpdateStatus {
        conditions: Some(vec![condition(condition::FAILED, "True", "x", "")]),
        ..Default::default()
    });
    assert_eq!(
        absorb_plan(
            &current,
            Some(&failed),
            "2026-12-08T01:00:00Z".parse().expect("t")
        ),
        None
    );
    let no_plan = preview(UpdateStatus::default());
    assert_eq!(
        absorb_plan(
            &current,
            Some(&no_plan),
            "2026-12-08T01:00:00Z".parse().expect("t")
        ),
        None
    );
}
