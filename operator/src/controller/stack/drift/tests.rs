use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::*;
use crate::api::stack::{StackStatus, StackUpdateState};
use crate::api::update::{UpdateSpec, UpdateStatus};
use crate::controller::stack::fixtures::{condition, stack};
use crate::controller::stack::sync::{FAILED, SUCCEEDED};

fn at(s: &str) -> jiff::Timestamp {
    s.parse().expect("time")
}

const CM: &str = "urn:pulumi:dev::app::kubernetes:core/v1:ConfigMap::settings";

fn change(urn: &str, op: &str, paths: &[&str]) -> ResourceChange {
    ResourceChange {
        urn: urn.into(),
        resource_type: "kubernetes:core/v1:ConfigMap".into(),
        operation: op.into(),
        paths: (!paths.is_empty()).then(|| paths.iter().map(|p| p.to_string()).collect()),
    }
}

/// A deployed Stack (its last `up` succeeded at `a1`) with drift detection `d`.
fn deployed(d: DriftDetection, drift: Option<DriftStatus>) -> Stack {
    let mut s = stack();
    s.spec.0.drift_detection = Some(d);
    s.status = Some(StackStatus {
        last_update: Some(StackUpdateState {
            update_type: Some("up".into()),
            state: Some(SUCCEEDED.into()),
            last_successful_commit: Some("a1".into()),
            ..Default::default()
        }),
        drift,
        ..Default::default()
    });
    s
}

fn every(i: &str) -> DriftDetection {
    DriftDetection {
        interval: Some(i.into()),
        ..Default::default()
    }
}

fn checked_at(t: &str) -> DriftStatus {
    DriftStatus {
        last_check_time: Some(t.into()),
        ..Default::default()
    }
}

fn next_of(s: &Stack, now: &str) -> Next {
    let (_, c) = settings(s).expect("valid").expect("on");
    next(s, &c, at(now))
}

#[test]
fn cadence_is_exactly_one_of_interval_and_schedule_and_not_too_often() {
    assert_eq!(
        cadence(&every("30m")),
        Ok(Cadence::Every(Duration::from_secs(1800)))
    );
    let cron = DriftDetection {
        schedule: Some("0 */6 * * *".into()),
        ..Default::default()
    };
    assert!(matches!(cadence(&cron), Ok(Cadence::Cron(_))));
    for (d, why) in [
        (DriftDetection::default(), "exactly one of interval"),
        (
            DriftDetection {
                interval: Some("1h".into()),
                schedule: Some("@daily".into()),
                ..Default::default()
            },
            "exactly one of interval",
        ),
        (every("4m"), "below the minimum of 5m"),
        (
            every("soon"),
            "spec.driftDetection.interval: \"soon\" is not a duration",
        ),
        (
            DriftDetection {
                schedule: Some("every day".into()),
                ..Default::default()
            },
            "spec.driftDetection.schedule: invalid cron schedule",
        ),
    ] {
        let e = cadence(&d).expect_err(why);
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn checks_run_first_at_once_then_on_the_cadence_and_on_request() {
    let s = deployed(every("10m"), None);
    assert_eq!(
        next_of(&s, "2026-12-08T01:00:00Z"),
        Next::Check("First drift check".into())
    );
    let s = deployed(every("10m"), Some(checked_at("2026-12-08T01:00:00Z")));
    assert_eq!(
        next_of(&s, "2026-12-08T01:04:00Z"),
        Next::After(Duration::from_secs(360))
    );
    assert_eq!(
        next_of(&s, "2026-12-08T01:10:00Z"),
        Next::Check("Drift check due (every 10m)".into())
    );
    let cron = DriftDetection {
        schedule: Some("0 * * * *".into()),
        ..Default::default()
    };
    let s = deployed(cron, Some(checked_at("2026-12-08T01:00:00Z")));
    assert_eq!(
        next_of(&s, "2026-12-08T01:30:00Z"),
        Next::After(Duration::from_secs(1800))
    );
    assert_eq!(
        next_of(&s, "2026-12-08T02:00:01Z"),
        Next::Check("Drift check due (on schedule)".into())
    );
    // The request annotation runs one at once, once.
    let mut s = deployed(every("10m"), Some(checked_at("2026-12-08T01:00:00Z")));
    s.metadata.annotations =
        Some([(label::DRIFT_CHECK_REQUEST.to_string(), "now1".to_string())].into());
    assert_eq!(
        next_of(&s, "2026-12-08T01:01:00Z"),
        Next::Check("Drift check requested: \"now1\"".into())
    );
    if let Some(d) = s.status.as_mut().and_then(|st| st.drift.as_mut()) {
        d.last_handled_request = Some("now1".into());
    }
    assert!(matches!(
        next_of(&s, "2026-12-08T01:01:00Z"),
        Next::After(_)
    ));
}

#[test]
fn nothing_is_checked_before_a_deployment_or_after_a_failure_or_destroy() {
    let mut s = deployed(every("10m"), None);
    s.status = Some(StackStatus::default());
    assert_eq!(next_of(&s, "2026-12-08T01:00:00Z"), Next::Idle);
    for (kind, state) in [("up", FAILED), ("destroy", SUCCEEDED)] {
        let mut s = deployed(every("10m"), None);
        if let Some(l) = s.status.as_mut().and_then(|st| st.last_update.as_mut()) {
            l.update_type = Some(kind.into());
            l.state = Some(state.into());
        }
        assert_eq!(
            next_of(&s, "2026-12-08T01:00:00Z"),
            Next::Idle,
            "{kind} {state}"
        );
    }
}

#[test]
fn remediate_mode_runs_an_up_once_per_finding_and_never_for_a_preview_stack() {
    let d = DriftDetection {
        mode: Some(DriftMode::Remediate),
        ..every("10m")
    };
    let found = DriftStatus {
        update: Some("app-check".into()),
        resources: Some(vec![change(CM, "update", &["data.color"])]),
        ..checked_at("2026-12-08T01:00:00Z")
    };
    let s = deployed(d.clone(), Some(found.clone()));
    assert_eq!(
        next_of(&s, "2026-12-08T01:00:05Z"),
        Next::Remediate("Drift detected in 1 resource(s) by app-check; remediating".into())
    );
    let started = DriftStatus {
        remediation: Some("app-fix".into()),
        ..found.clone()
    };
    let s = deployed(d.clone(), Some(started));
    assert!(matches!(
        next_of(&s, "2026-12-08T01:00:05Z"),
        Next::After(_)
    ));
    let mut s = deployed(d, Some(found));
    s.spec.0.preview = Some(true);
    assert!(matches!(
        next_of(&s, "2026-12-08T01:00:05Z"),
        Next::After(_)
    ));
}

#[test]
fn ignore_rules_cover_resources_by_glob_and_paths_with_what_is_under_them() {
    let deploy = "urn:pulumi:dev::app::kubernetes:apps/v1:Deployment::web";
    let mut d = change(
        deploy,
        "update",
        &[
            "spec.replicas",
            "metadata.annotations[\"x\"]",
            "spec.template.spec.containers[0].image",
        ],
    );
    d.resource_type = "kubernetes:apps/v1:Deployment".into();
    let changes = vec![
        change(CM, "update", &["data.color", "metadata.labels.team"]),
        d,
        change(
            "urn:pulumi:dev::app::kubernetes:core/v1:ConfigMap::gone",
            "delete",
            &[],
        ),
        change(
            "urn:pulumi:dev::app::kubernetes:core/v1:ConfigMap::noisy",
            "update",
            &["data.x"],
        ),
    ];
    let rules = vec![
        DriftIgnore {
            resource_type: Some("kubernetes:apps/v1:*".into()),
            paths: Some(vec!["spec.replicas".into(), "metadata.annotations".into()]),
            ..Default::default()
        },
        DriftIgnore {
            urn: Some("*::noisy".into()),
            ..Default::default()
        },
        DriftIgnore {
            urn: Some("*ConfigMap::settings".into()),
            paths: Some(vec!["metadata.label".into()]),
            ..Default::default()
        },
    ];
    let (kept, ignored) = unignored(&rules, changes);
    assert_eq!(
        ignored, 3,
        "two paths of the Deployment, the noisy resource: {kept:?}"
    );
    let summary: Vec<(&str, Option<Vec<String>>)> = kept
        .iter()
        .map(|c| {
            (
                c.urn.rsplit("::").next().unwrap_or_default(),
                c.paths.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "settings",
                Some(vec!["data.color".into(), "metadata.labels.team".into()])
            ),
            (
                "web",
                Some(vec!["spec.template.spec.containers[0].image".into()])
            ),
            ("gone", None),
        ],
        "`metadata.label` does not cover `metadata.labels.team`; a delete has no paths to ignore"
    );
    let only_ignored = vec![change(CM, "update", &["metadata.annotations.a"])];
    let rule = vec![DriftIgnore {
        paths: Some(vec!["metadata.annotations".into()]),
        ..Default::default()
    }];
    assert_eq!(unignored(&rule, only_ignored), (vec![], 1));
}

fn check(status: UpdateStatus) -> Update {
    let mut u = Update::new(
        "app-check",
        UpdateSpec {
            update_type: Some(UpdateType::Refresh),
            preview_only: Some(true),
            ..Default::default()
        },
    );
    u.status = Some(status);
    u
}

fn done(failed: bool) -> Vec<Condition> {
    vec![condition(
        condition::FAILED,
        if failed { "True" } else { "False" },
        "x",
        "",
    )]
}

fn current() -> CurrentStackUpdate {
    CurrentStackUpdate {
        name: Some("app-check".into()),
        purpose: Some(UpdatePurpose::DriftCheck),
        ..Default::default()
    }
}

#[test]
fn a_check_that_finds_drift_says_what_and_how_to_fix_it_once() {
    let s = deployed(
        DriftDetection {
            mode: Some(DriftMode::Warn),
            ..every("10m")
        },
        None,
    );
    let u = check(UpdateStatus {
        conditions: Some(done(false)),
        changes: Some(vec![change(CM, "update", &["data.color"])]),
        ..Default::default()
    });
    let now = at("2026-12-08T01:00:00.3Z");
    let a = absorb_check(&s, None, None, &current(), Some(&u), now);
    assert_eq!(a.condition.0, "True");
    assert_eq!(a.condition.1, drift_reason::DRIFT_DETECTED);
    assert_eq!(
        a.drift.last_check_time.as_deref(),
        Some("2026-12-08T01:00:00Z")
    );
    assert_eq!(a.drift.revision.as_deref(), Some("a1"));
    assert_eq!(a.drift.update.as_deref(), Some("app-check"));
    assert_eq!(
        a.drift.resources,
        Some(vec![change(CM, "update", &["data.color"])])
    );
    assert_eq!(a.events.len(), 1);
    let (kind, reason, note) = &a.events[0];
    assert_eq!(
        (*kind, *reason),
        (EventType::Warning, event::DRIFT_DETECTED)
    );
    assert!(
        note.contains("1 resource(s) differ from the stack's state")
            && note.contains("ConfigMap::settings (update: data.color)")
            && note.contains("mode: remediate")
            && note.contains("kubectl annotate stack app pulumi.com/reconciliation-request"),
        "{note}"
    );
    // The same finding again: the condition stands, no new event.
    let again = absorb_check(
        &s,
        Some(&a.drift),
        Some(drift_reason::DRIFT_DETECTED),
        &current(),
        Some(&u),
        now,
    );
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.condition.0, "True");
    // Detect mode: a Normal event.
    let mut quiet = s.clone();
    quiet.spec.0.drift_detection = Some(every("10m"));
    let a = absorb_check(&quiet, None, None, &current(), Some(&u), now);
    assert_eq!(a.events[0].0, EventType::Normal);
}

#[test]
fn no_drift_is_false_without_an_event_unless_drift_went_away() {
    let s = deployed(every("10m"), None);
    let clean = check(UpdateStatus {
        conditions: Some(done(false)),
        ..Default::default()
    });
    let now = at("2026-12-08T01:00:00Z");
    let a = absorb_check(&s, None, None, &current(), Some(&clean), now);
    assert_eq!(
        (a.condition.0, a.condition.1),
        ("False", drift_reason::NO_DRIFT)
    );
    assert!(a.events.is_empty());
    let again = absorb_check(
        &s,
        Some(&a.drift),
        Some(drift_reason::NO_DRIFT),
        &current(),
        Some(&clean),
        now,
    );
    assert!(again.events.is_empty());
    let gone = absorb_check(
        &s,
        None,
        Some(drift_reason::DRIFT_DETECTED),
        &current(),
        Some(&clean),
        now,
    );
    assert_eq!(gone.events[0].1, event::DRIFT_RESOLVED);
}

#[test]
fn a_failed_check_is_unknown_keeps_what_was_found_and_says_why() {
    let s = deployed(every("10m"), None);
    let prev = DriftStatus {
        resources: Some(vec![change(CM, "update", &["data.color"])]),
        ..checked_at("2026-12-08T00:50:00Z")
    };
    let u = check(UpdateStatus {
        conditions: Some(done(true)),
        message: Some("error: configmaps \"settings\" is forbidden".into()),
        ..Default::default()
    });
    let a = absorb_check(
        &s,
        Some(&prev),
        None,
        &current(),
        Some(&u),
        at("2026-12-08T01:00:00Z"),
    );
    assert_eq!(a.condition.0, "Unknown");
    assert_eq!(a.drift.resources, prev.resources);
    assert_eq!(
        a.drift.last_check_time.as_deref(),
        Some("2026-12-08T01:00:00Z"),
        "so it is not retried at once"
    );
    assert!(a.events[0].2.contains("is forbidden"), "{:?}", a.events);
    let gone = absorb_check(&s, None, None, &current(), None, at("2026-12-08T01:00:00Z"));
    assert!(gone.condition.2.contains("deleted before it ended"));
}

#[test]
fn a_remediation_that_succeeded_clears_the_finding_and_one_that_failed_leaves_it() {
    let prev = DriftStatus {
        update: Some("app-check".into()),
        remediation: Some("app-fix".into()),
        resources: Some(vec![change(CM, "update", &["data.color"])]),
        ..checked_at("2026-12-08T00:50:00Z")
    };
    let mut up = check(UpdateStatus {
        conditions: Some(done(false)),
        ..Default::default()
    });
    up.metadata.name = Some("app-fix".into());
    let a = absorb_remediation(Some(&prev), Some(&up)).expect("succeeded");
    assert_eq!(a.drift.resources, None);
    assert_eq!(a.drift.remediation.as_deref(), Some("app-fix"));
    assert_eq!(a.condition.1, drift_reason::REMEDIATED);
    assert!(
        a.events[0].2.contains("put back 1 resource(s)"),
        "{:?}",
        a.events
    );
    let failed = check(UpdateStatus {
        conditions: Some(done(true)),
        ..Default::default()
    });
    assert_eq!(absorb_remediation(Some(&prev), Some(&failed)), None);
}
