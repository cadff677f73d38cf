use super::*;
use crate::api::stack::{StackSpecV1, StackStatus};
use crate::api::stack_spec::StackSpec;

fn t(s: &str) -> jiff::Timestamp {
    s.parse().expect("time")
}

struct StackBuilder(Stack);

impl StackBuilder {
    fn new() -> StackBuilder {
        let mut s = Stack::new(
            "app",
            StackSpecV1(StackSpec {
                stack: "dev".into(),
                ..Default::default()
            }),
        );
        s.metadata.generation = Some(2);
        StackBuilder(s)
    }
    fn last(mut self, state: &str, commit: &str, at: &str, failures: i64) -> StackBuilder {
        self.0.status = Some(StackStatus {
            last_update: Some(StackUpdateState {
                generation: Some(2),
                state: Some(state.into()),
                update_type: Some("up".into()),
                last_attempted_commit: Some(commit.into()),
                last_successful_commit: (state == SUCCEEDED).then(|| commit.into()),
                last_resync_time: Some(at.into()),
                failures: Some(failures),
                ..Default::default()
            }),
            ..Default::default()
        });
        self
    }
    fn annotate(mut self, v: &str) -> StackBuilder {
        self.0.metadata.annotations =
            Some([(label::RECONCILE_REQUEST.to_string(), v.to_string())].into());
        self
    }
    fn resync(mut self) -> StackBuilder {
        self.0.spec.0.continue_resync_on_commit_match = Some(true);
        self
    }
    fn cap(mut self, secs: i64) -> StackBuilder {
        self.0.spec.0.retry_max_backoff_duration_seconds = Some(secs);
        self
    }
}

fn at(commit: &str, now: &str) -> Observed<'static> {
    Observed {
        commit: Box::leak(commit.to_string().into_boxed_str()),
        deleting: false,
        now: t(now),
    }
}

#[test]
fn the_backoff_grows_threefold_to_the_cap_and_stays_there() {
    let day = DEFAULT_MAX_BACKOFF;
    let secs: Vec<u64> = (1..=10).map(|n| backoff(n, day).as_secs()).collect();
    assert_eq!(
        secs,
        [10, 30, 90, 270, 810, 2430, 7290, 21870, 65610, 86400]
    );
    assert_eq!(backoff(50, day).as_secs(), 86400);
    assert_eq!(backoff(3, Duration::from_secs(60)).as_secs(), 60);
    assert_eq!(
        backoff(1, Duration::from_secs(1)).as_secs(),
        10,
        "the first step is always 10s"
    );
}

#[test]
fn decisions_follow_the_table_in_order() {
    let none = StackBuilder::new().0;
    assert_eq!(
        decide(&none, at("c1", "2026-01-01T00:00:00Z")),
        Sync::Needed("Initial stack update".into())
    );

    let ok = StackBuilder::new()
        .last(SUCCEEDED, "c1", "2026-01-01T00:00:00Z", 0)
        .0;
    assert_eq!(decide(&ok, at("c1", "2026-01-01T01:00:00Z")), Sync::Synced);
    assert_eq!(
        decide(&ok, at("c2", "2026-01-01T01:00:00Z")),
        Sync::Needed("New commit detected: \"c2\"".into())
    );
    let mut newgen = ok.clone();
    newgen.metadata.generation = Some(3);
    assert_eq!(
        decide(&newgen, at("c1", "2026-01-01T01:00:00Z")),
        Sync::Needed("New stack generation: 3".into())
    );
    let deleting = Observed {
        deleting: true,
        ..at("c1", "2026-01-01T01:00:00Z")
    };
    assert_eq!(
        decide(&ok, deleting),
        Sync::Needed("Stack marked for deletion".into())
    );

    let requested = StackBuilder::new()
        .last(SUCCEEDED, "c1", "2026-01-01T00:00:00Z", 0)
        .annotate("now")
        .0;
    assert_eq!(
        decide(&requested, at("c1", "2026-01-01T00:00:01Z")),
        Sync::Needed("Sync request: \"now\"".into())
    );
}

#[test]
fn resync_only_when_asked_and_due() {
    let s = StackBuilder::new()
        .last(SUCCEEDED, "c1", "2026-01-01T00:00:00Z", 0)
        .resync()
        .0;
    assert_eq!(decide(&s, at("c1", "2026-01-01T00:00:59Z")), Sync::Synced);
    assert_eq!(
        decide(&s, at("c1", "2026-01-01T00:01:00Z")),
        Sync::Needed("Resync time elapsed: 1m".into())
    );
    assert_eq!(
        requeue_after(&s, false, t("2026-01-01T00:00:30Z")),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn failures_retry_after_the_backoff_and_never_give_up() {
    let s = StackBuilder::new()
        .last(FAILED, "c1", "2026-01-01T00:00:00Z", 2)
        .0;
    assert_eq!(decide(&s, at("c1", "2026-01-01T00:00:29Z")), Sync::Synced);
    assert!(
        matches!(decide(&s, at("c1", "2026-01-01T00:00:30Z")), Sync::Needed(m) if m.contains("2 failure(s)"))
    );
    assert_eq!(
        requeue_after(&s, false, t("2026-01-01T00:00:10Z")),
        Some(Duration::from_secs(20))
    );
    let many = StackBuilder::new()
        .last(FAILED, "c1", "2026-01-01T00:00:00Z", 40)
        .cap(120)
        .0;
    assert_eq!(
        decide(&many, at("c1", "2026-01-01T00:01:59Z")),
        Sync::Synced
    );
    assert!(matches!(
        decide(&many, at("c1", "2026-01-01T00:02:00Z")),
        Sync::Needed(_)
    ));
    // A new revision does not wait for the back-off.
    assert!(
        matches!(decide(&s, at("c2", "2026-01-01T00:00:01Z")), Sync::Needed(m) if m.starts_with("New commit"))
    );
}

#[test]
fn failure_counts_restart_on_any_change() {
    let s = StackBuilder::new()
        .last(FAILED, "c1", "2026-01-01T00:00:00Z", 2)
        .0;
    let last = s.status.as_ref().and_then(|st| st.last_update.as_ref());
    assert_eq!(next_failures(last, Some(2), &None, "c1"), 3);
    assert_eq!(next_failures(last, Some(3), &None, "c1"), 1);
    assert_eq!(next_failures(last, Some(2), &Some("x".into()), "c1"), 1);
    assert_eq!(next_failures(last, Some(2), &None, "c2"), 1);
    assert_eq!(next_failures(None, Some(2), &None, "c1"), 1);
    let ok = StackBuilder::new()
        .last(SUCCEEDED, "c1", "2026-01-01T00:00:00Z", 0)
        .0;
    assert_eq!(
        next_failures(
            ok.status.as_ref().and_then(|s| s.last_update.as_ref()),
            Some(2),
            &None,
            "c1"
        ),
        1
    );
}

#[test]
fn branch_polling_requeues_at_the_resync_frequency() {
    let s = StackBuilder::new()
        .last(SUCCEEDED, "c1", "2026-01-01T00:00:00Z", 0)
        .0;
    assert_eq!(requeue_after(&s, false, t("2026-01-01T00:00:00Z")), None);
    assert_eq!(
        requeue_after(&s, true, t("2026-01-01T00:00:00Z")),
        Some(MIN_RESYNC)
    );
}

#[test]
fn durations_read_like_a_person_wrote_them() {
    assert_eq!(human(Duration::from_secs(10)), "10s");
    assert_eq!(human(Duration::from_secs(90)), "1m30s");
    assert_eq!(human(Duration::from_secs(7290)), "2h1m30s");
    assert_eq!(human(Duration::from_secs(86400)), "24h");
}

fn last_update(state: &str, kind: &str, failures: i64) -> StackUpdateState {
    StackUpdateState {
        state: Some(state.into()),
        update_type: Some(kind.into()),
        failures: Some(failures),
        last_resync_time: Some("2026-12-06T10:00:00Z".into()),
        ..Default::default()
    }
}

#[test]
fn standing_after_success_failure_and_nothing_yet() {
    let now = t("2026-12-06T10:00:05Z");
    let cap = DEFAULT_MAX_BACKOFF;
    assert_eq!(
        standing(&last_update(SUCCEEDED, "up", 0), cap, now),
        Standing::Ready
    );
    assert_eq!(
        standing(&StackUpdateState::default(), cap, now),
        Standing::Unchanged
    );
    let Standing::Retrying { reason, message } = standing(&last_update(FAILED, "up", 3), cap, now)
    else {
        panic!("retrying")
    };
    assert_eq!(reason, stack_reason::RETRYING_AFTER_FAILURE);
    let wait = backoff(3, cap);
    let next = t("2026-12-06T10:00:00Z")
        .checked_add(jiff::SignedDuration::try_from(wait).expect("duration"))
        .expect("time");
    assert_eq!(
        message,
        format!(
            "3 update failure(s); next attempt at {next} (back-off {})",
            human(wait)
        )
    );
    let Standing::Retrying { reason, message } = standing(
        &last_update(FAILED, "preview", 4),
        Duration::from_secs(60),
        now,
    ) else {
        panic!("retrying")
    };
    assert_eq!(reason, stack_reason::PREVIEW_FAILED);
    assert_eq!(
        message,
        "preview failed (4 attempt(s)); next attempt at 2026-12-06T10:01:00Z (back-off 1m)",
        "the cap (1m) bounds the fourth wait (270s)"
    );
}

#[test]
fn only_a_succeeded_destroy_lets_the_finalizer_go() {
    assert!(destroyed(&last_update(SUCCEEDED, "destroy", 0)));
    assert!(!destroyed(&last_update(FAILED, "destroy", 1)));
    assert!(!destroyed(&last_update(SUCCEEDED, "up", 0)));
    assert!(!destroyed(&StackUpdateState::default()));
}

fn with_last(mut s: Stack, last: StackUpdateState) -> Stack {
    s.status = Some(StackStatus {
        last_update: Some(last),
        ..Default::default()
    });
    s
}

#[test]
fn only_a_destroy_on_finalize_that_is_not_a_preview_destroys_on_delete() {
    let mut s = StackBuilder::new().0;
    assert!(!destroys_on_delete(&s));
    s.spec.0.destroy_on_finalize = Some(true);
    assert!(destroys_on_delete(&s));
    s.spec.0.preview = Some(true);
    assert!(!destroys_on_delete(&s), "a preview Stack never destroys");
}

#[test]
fn settling_releases_after_a_destroy_waits_for_one_and_reclaims_unless_failed() {
    use crate::api::stack_spec::WorkspaceReclaimPolicy;
    let now = t("2026-12-06T10:00:05Z");
    let s = StackBuilder::new().0;

    let destroyed = with_last(s.clone(), last_update(SUCCEEDED, "destroy", 0));
    assert_eq!(settle(&destroyed, true, false, now), Settle::Release);

    let failed_destroy = with_last(s.clone(), last_update(FAILED, "destroy", 1));
    assert_eq!(
        settle(&failed_destroy, true, true, now),
        Settle::AwaitDestroy(Duration::from_secs(5)),
        "the back-off's rest (10 s from 10:00:00), not the branch poll"
    );
    assert_eq!(
        settle(&s, true, false, now),
        Settle::AwaitDestroy(Duration::from_secs(1)),
        "no destroy yet: look again soon"
    );

    let up = with_last(s.clone(), last_update(SUCCEEDED, "up", 0));
    assert_eq!(
        settle(&up, false, false, now),
        Settle::Idle {
            reclaim: false,
            requeue: None
        }
    );
    assert_eq!(
        settle(&up, false, true, now),
        Settle::Idle {
            reclaim: false,
            requeue: Some(resync_frequency(&up))
        },
        "a branch is polled"
    );
    let mut reclaimed = up.clone();
    reclaimed.spec.0.workspace_reclaim_policy = Some(WorkspaceReclaimPolicy::Delete);
    assert_eq!(
        settle(&reclaimed, false, false, now),
        Settle::Idle {
            reclaim: true,
            requeue: None
        }
    );
    let mut failed = with_last(s, last_update(FAILED, "up", 1));
    failed.spec.0.workspace_reclaim_policy = Some(WorkspaceReclaimPolicy::Delete);
    assert_eq!(
        settle(&failed, false, false, now),
        Settle::Idle {
            reclaim: false,
            requeue: Some(Duration::from_secs(5))
        },
        "a failed update keeps its workspace for kubectl exec, and retries after the back-off"
    );
}

#[test]
fn fluxs_request_forces_an_attempt_until_handled_whatever_the_backoff() {
    let flux = |s: StackBuilder, v: &str, handled: Option<&str>| {
        let mut s = s.0;
        s.metadata
            .annotations
            .get_or_insert_default()
            .insert(label::FLUX_RECONCILE_REQUEST.into(), v.into());
        if let Some(st) = s.status.as_mut() {
            st.last_handled_reconcile_at = handled.map(str::to_string);
        }
        s
    };
    let now = at("abc", "2026-01-01T00:00:05Z");
    // Failed a few seconds ago: in back-off, yet a new request runs at once.
    let failing = || StackBuilder::new().last(FAILED, "abc", "2026-01-01T00:00:00Z", 3);
    assert_eq!(
        decide(&flux(failing(), "2026-01-01T00:00:04Z", None), now),
        Sync::Needed("Reconcile requested at 2026-01-01T00:00:04Z".into())
    );
    // Handled: back to the table (the back-off, here).
    assert_eq!(
        decide(
            &flux(
                failing(),
                "2026-01-01T00:00:04Z",
                Some("2026-01-01T00:00:04Z")
            ),
            now
        ),
        Sync::Synced
    );
    // Up to date and synced: a new value runs again.
    let done = || StackBuilder::new().last(SUCCEEDED, "abc", "2026-01-01T00:00:00Z", 0);
    assert_eq!(
        decide(&flux(done(), "b", Some("a")), now),
        Sync::Needed("Reconcile requested at b".into())
    );
    // PKO's own annotation is looked at first.
    assert_eq!(
        decide(&flux(done().annotate("x"), "b", Some("a")), now),
        Sync::Needed("Sync request: \"x\"".into())
    );
    assert!(!suspended(&done().0));
    let mut s = done().0;
    s.spec.0.suspend = Some(true);
    assert!(suspended(&s));
}
