//! Whether a Stack needs an update now, when to look again, and how to say so (pure).
//!
//! The decision follows PKO's `isSynced` table, in order; retries after failures back off
//! 10s × 3ⁿ up to `retryMaxBackoffDurationSeconds` and, as the troubleshooting guide promises,
//! keep going at that pace instead of stopping after three attempts.

use std::time::Duration;

use crate::api::names::{label, stack_reason};
use crate::api::stack::{Stack, StackUpdateState, UpdateOutcome};
use crate::api::stack_spec::WorkspaceReclaimPolicy;
use crate::api::update::UpdateType;

/// `status.lastUpdate.state` as written (statuses in tests are built from these).
pub const SUCCEEDED: &str = UpdateOutcome::Succeeded.as_str();
pub const FAILED: &str = UpdateOutcome::Failed.as_str();

pub const BASE_BACKOFF: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(86_400);
pub const MIN_RESYNC: Duration = Duration::from_secs(60);

/// The decision and, when an update is needed, why (the Update's message and the
/// `StackUpdateDetected` event's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync {
    Synced,
    Needed(String),
}

/// What the decision looks at besides the Stack.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The source revision now: a commit SHA, an artifact revision, a Program generation, or
    /// "" without a source.
    pub commit: &'a str,
    pub deleting: bool,
    pub now: jiff::Timestamp,
}

fn annotation(stack: &Stack, key: &str) -> Option<String> {
    stack.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The `pulumi.com/reconciliation-request` value (PKO's request).
pub fn reconcile_request(stack: &Stack) -> Option<String> {
    annotation(stack, label::RECONCILE_REQUEST)
}

/// The `reconcile.fluxcd.io/requestedAt` value (`flux reconcile`'s request).
pub fn flux_request(stack: &Stack) -> Option<String> {
    annotation(stack, label::FLUX_RECONCILE_REQUEST)
}

/// Whether `spec.suspend` holds the Stack.
pub fn suspended(stack: &Stack) -> bool {
    stack.spec.0.suspend == Some(true)
}

pub fn resync_frequency(stack: &Stack) -> Duration {
    let secs = stack.spec.0.resync_frequency_seconds.unwrap_or(0);
    Duration::from_secs(secs.max(0) as u64).max(MIN_RESYNC)
}

pub fn max_backoff(stack: &Stack) -> Duration {
    match stack.spec.0.retry_max_backoff_duration_seconds {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => DEFAULT_MAX_BACKOFF,
    }
}

/// How long to wait after the `failures`-th consecutive failure (1-based): 10s, 30s, 90s,
/// 270s, ... capped at `cap` (but never below the first step).
pub fn backoff(failures: i64, cap: Duration) -> Duration {
    let n = failures.max(1) - 1;
    let mut d = BASE_BACKOFF;
    for _ in 0..n {
        d = d.saturating_mul(3);
        if d >= cap {
            break;
        }
    }
    d.min(cap).max(BASE_BACKOFF)
}

fn last_resync(last: &StackUpdateState) -> Option<jiff::Timestamp> {
    last.last_resync_time.as_deref()?.parse().ok()
}

fn elapsed_since(last: &StackUpdateState, now: jiff::Timestamp) -> Duration {
    last_resync(last)
        .map(|t| Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::MAX)
}

/// Human durations for messages: `1m30s`, `2h1m30s`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

pub fn decide(stack: &Stack, seen: Observed<'_>) -> Sync {
    let status = stack.status.clone().unwrap_or_default();
    let Some(last) = status.last_update.as_ref() else {
        return Sync::Needed("Initial stack update".into());
    };
    if last.generation != stack.metadata.generation {
        if seen.deleting {
            return Sync::Needed("Stack marked for deletion".into());
        }
        return Sync::Needed(format!(
            "New stack generation: {}",
            stack.metadata.generation.unwrap_or(0)
        ));
    }
    let request = reconcile_request(stack);
    if last.reconcile_request != request {
        return Sync::Needed(format!("Sync request: {:?}", request.unwrap_or_default()));
    }
    if let Some(at) = flux_request(stack)
        && status.last_handled_reconcile_at.as_deref() != Some(at.as_str())
    {
        return Sync::Needed(format!("Reconcile requested at {at}"));
    }
    match last.outcome() {
        Some(UpdateOutcome::Succeeded) => {
            if seen.deleting {
                if last.kind() == Some(UpdateType::Destroy) {
                    return Sync::Synced;
                }
                return Sync::Needed("Stack marked for deletion".into());
            }
            if last.last_successful_commit.as_deref().unwrap_or("") != seen.commit {
                return Sync::Needed(format!("New commit detected: {:?}", seen.commit));
            }
            if !stack
                .spec
                .0
                .continue_resync_on_commit_match
                .unwrap_or(false)
            {
                return Sync::Synced;
            }
            let elapsed = elapsed_since(last, seen.now);
            if elapsed >= resync_frequency(stack) {
                return Sync::Needed(format!(
                    "Resync time elapsed: {}",
                    human(elapsed.min(Duration::from_secs(u32::MAX as u64)))
                ));
            }
            Sync::Synced
        }
        Some(UpdateOutcome::Failed) => {
            if last.last_attempted_commit.as_deref().unwrap_or("") != seen.commit {
                return Sync::Needed(format!("New commit detected: {:?}", seen.commit));
            }
            let wait = backoff(last.failures.unwrap_or(1), max_backoff(stack));
            let elapsed = elapsed_since(last, seen.now);
            if elapsed >= wait {
                return Sync::Needed(format!(
                    "Backoff time elapsed after {} failure(s): {}",
                    last.failures.unwrap_or(1),
                    human(wait)
                ));
            }
            Sync::Synced
        }
        None => Sync::Synced,
    }
}

/// When a synced Stack should be looked at again without any event: the end of a back-off,
/// the next drift resync, or the next branch poll. None: only events wake it.
pub fn requeue_after(stack: &Stack, polls_branch: bool, now: jiff::Timestamp) -> Option<Duration> {
    let status = stack.status.clone().unwrap_or_default();
    let mut candidates = Vec::new();
    if let Some(last) = status.last_update.as_ref() {
        let elapsed = elapsed_since(last, now);
        match last.outcome() {
            Some(UpdateOutcome::Failed) => {
                let wait = backoff(last.failures.unwrap_or(1), max_backoff(stack));
                candidates.push(wait.saturating_sub(elapsed));
            }
            Some(UpdateOutcome::Succeeded)
                if stack
                    .spec
                    .0
                    .continue_resync_on_commit_match
                    .unwrap_or(false) =>
            {
                candidates.push(resync_frequency(stack).saturating_sub(elapsed));
            }
            _ => {}
        }
    }
    if polls_branch {
        candidates.push(resync_frequency(stack));
    }
    candidates
        .into_iter()
        .min()
        .map(|d| d.max(Duration::from_secs(1)))
}

/// The failure count after one more failure: consecutive failures at the same generation,
/// reconcile request and source revision; a change starts again at 1.
pub fn next_failures(
    prev: Option<&StackUpdateState>,
    generation: Option<i64>,
    request: &Option<String>,
    commit: &str,
) -> i64 {
    match prev {
        Some(p)
            if p.failed()
                && p.generation == generation
                && &p.reconcile_request == request
                && p.last_attempted_commit.as_deref().unwrap_or("") == commit =>
        {
            p.failures.unwrap_or(0) + 1
        }
        _ => 1,
    }
}

/// Where a Stack with nothing to run stands, from its last update.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// The last update succeeded.
    Ready,
    /// The last update failed: Reconciling with this reason and message (when the next
    /// attempt is).
    Retrying {
        reason: &'static str,
        message: String,
    },
    /// No update has ended yet: the conditions stay as they are.
    Unchanged,
}

/// [`Standing`] of a Stack whose last update is `last`, with back-off capped at `cap`.
pub fn standing(last: &StackUpdateState, cap: Duration, now: jiff::Timestamp) -> Standing {
    match last.outcome() {
        Some(UpdateOutcome::Succeeded) => Standing::Ready,
        Some(UpdateOutcome::Failed) => {
            let failures = last.failures.unwrap_or(1);
            let wait = backoff(failures, cap);
            let at: jiff::Timestamp = last
                .last_resync_time
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or(now);
            let next = at
                .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
                .unwrap_or(at);
            let when = format!(
                "next attempt at {} (back-off {})",
                next.round(jiff::Unit::Second).unwrap_or(next),
                human(wait)
            );
            if last.kind() == Some(UpdateType::Preview) {
                Standing::Retrying {
                    reason: stack_reason::PREVIEW_FAILED,
                    message: format!("preview failed ({failures} attempt(s)); {when}"),
                }
            } else {
                Standing::Retrying {
                    reason: stack_reason::RETRYING_AFTER_FAILURE,
                    message: format!("{failures} update failure(s); {when}"),
                }
            }
        }
        _ => Standing::Unchanged,
    }
}

/// Whether deleting `stack` runs a destroy first (`destroyOnFinalize`, and not a preview-only
/// Stack); otherwise the finalizer goes as soon as no update is in flight.
pub fn destroys_on_delete(stack: &Stack) -> bool {
    let spec = &stack.spec.0;
    spec.destroy_on_finalize.unwrap_or(false) && !spec.preview.unwrap_or(false)
}

/// Whether a Stack being deleted with `destroyOnFinalize` may lose its finalizer: only after
/// a destroy succeeded.
pub fn destroyed(last: &StackUpdateState) -> bool {
    last.succeeded() && last.kind() == Some(UpdateType::Destroy)
}

/// What a Stack with nothing to run does besides saying where it stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Settle {
    /// Being deleted, and the destroy succeeded: the finalizer goes.
    Release,
    /// Being deleted, and no destroy has succeeded yet: look again after this long (the
    /// back-off of a failed destroy, at least a second). Whatever [`decide`] said, this
    /// never lets a `destroyOnFinalize` Stack go without a destroy.
    AwaitDestroy(Duration),
    /// Delete the Workspace when `reclaim` (the reclaim policy says so and the last update
    /// did not fail: a failed one keeps it for `kubectl exec`), then wake up after `requeue`
    /// (None: only events wake it).
    Idle {
        reclaim: bool,
        requeue: Option<Duration>,
    },
}

/// [`Settle`] for `stack` (its status as this reconcile has it).
pub fn settle(stack: &Stack, deleting: bool, polls_branch: bool, now: jiff::Timestamp) -> Settle {
    let last = stack
        .status
        .as_ref()
        .and_then(|s| s.last_update.clone())
        .unwrap_or_default();
    if deleting {
        return if destroyed(&last) {
            Settle::Release
        } else {
            Settle::AwaitDestroy(requeue_after(stack, false, now).unwrap_or(Duration::from_secs(1)))
        };
    }
    let reclaim = stack.spec.0.workspace_reclaim_policy == Some(WorkspaceReclaimPolicy::Delete)
        && !last.failed();
    Settle::Idle {
        reclaim,
        requeue: requeue_after(stack, polls_branch, now),
    }
}

#[cfg(test)]
mod tests;
