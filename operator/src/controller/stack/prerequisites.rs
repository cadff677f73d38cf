//! `spec.prerequisites`: Stacks that must have succeeded (recently enough) first (pure).

use crate::api::stack::Stack;
use crate::api::stack_spec::PrerequisiteRef;
use crate::controller::duration;

use super::sync::reconcile_request;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsatisfied {
    pub message: String,
    /// The prerequisite succeeded too long ago: ask it to run again with this
    /// `pulumi.com/reconciliation-request` value.
    pub rerun_request: Option<String>,
}

pub fn check(
    prereq: Option<&Stack>,
    req: &PrerequisiteRef,
    now: jiff::Timestamp,
) -> Result<(), Unsatisfied> {
    let not = |m: &str| Unsatisfied {
        message: m.to_string(),
        rerun_request: None,
    };
    let Some(p) = prereq else {
        return Err(not("prerequisite not found"));
    };
    let last = p.status.as_ref().and_then(|s| s.last_update.as_ref());
    let Some(last) = last.filter(|l| {
        l.generation == p.metadata.generation && l.reconcile_request == reconcile_request(p)
    }) else {
        return Err(not("prerequisite has not run to completion"));
    };
    if !last.succeeded() {
        return Err(not("prerequisite failed"));
    }
    let within = req
        .requirement
        .as_ref()
        .and_then(|r| r.succeeded_within_duration.as_deref());
    if let Some(within) = within {
        let within = duration::parse(within).map_err(|e| not(&e.to_string()))?;
        let at: Option<jiff::Timestamp> = last
            .last_resync_time
            .as_deref()
            .and_then(|t| t.parse().ok());
        let age = at
            .map(|t| std::time::Duration::try_from(now.duration_since(t)).unwrap_or_default())
            .unwrap_or(std::time::Duration::MAX);
        if age > within {
            return Err(Unsatisfied {
                message: "prerequisite is out of date".into(),
                rerun_request: Some(format!("after-{}", last.name.clone().unwrap_or_default())),
            });
        }
    }
    Ok(())
}

/// The Reconciling message for the unsatisfied prerequisites.
pub fn message(failed: &[(String, Unsatisfied)]) -> String {
    match failed {
        [(name, u)] => format!("prerequisite not satisfied for \"{name}\": {}", u.message),
        many => format!(
            "multiple prerequisites were not satisfied {}",
            many.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::{StackSpecV1, StackStatus, StackUpdateState};
    use crate::api::stack_spec::RequirementSpec;

    fn prereq(state: &str, at: &str) -> Stack {
        let mut s = Stack::new("base", StackSpecV1::default());
        s.metadata.generation = Some(1);
        s.status = Some(StackStatus {
            last_update: Some(StackUpdateState {
                generation: Some(1),
                name: Some("base-1".into()),
                state: Some(state.into()),
                last_resync_time: Some(at.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        s
    }

    fn req(within: Option<&str>) -> PrerequisiteRef {
        PrerequisiteRef {
            name: "base".into(),
            requirement: within.map(|w| RequirementSpec {
                succeeded_within_duration: Some(w.into()),
            }),
        }
    }

    #[test]
    fn prerequisites_must_have_succeeded_at_their_current_generation() {
        let now: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().expect("t");
        assert_eq!(
            check(None, &req(None), now).unwrap_err().message,
            "prerequisite not found"
        );
        let ok = prereq("succeeded", "2026-01-01T00:00:00Z");
        assert_eq!(check(Some(&ok), &req(None), now), Ok(()));
        assert_eq!(
            check(
                Some(&prereq("failed", "2026-01-01T00:00:00Z")),
                &req(None),
                now
            )
            .unwrap_err()
            .message,
            "prerequisite failed"
        );
        let mut moved = ok.clone();
        moved.metadata.generation = Some(2);
        assert_eq!(
            check(Some(&moved), &req(None), now).unwrap_err().message,
            "prerequisite has not run to completion"
        );
    }

    #[test]
    fn a_stale_success_asks_the_prerequisite_to_run_again() {
        let now: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().expect("t");
        let ok = prereq("succeeded", "2026-01-01T00:00:00Z");
        assert_eq!(check(Some(&ok), &req(Some("2h")), now), Ok(()));
        let e = check(Some(&ok), &req(Some("30m")), now).unwrap_err();
        assert_eq!(e.rerun_request.as_deref(), Some("after-base-1"));
        assert_eq!(
            message(&[("base".into(), e.clone())]),
            "prerequisite not satisfied for \"base\": prerequisite is out of date"
        );
        assert_eq!(
            message(&[("a".into(), e.clone()), ("b".into(), e)]),
            "multiple prerequisites were not satisfied a, b"
        );
    }
}
