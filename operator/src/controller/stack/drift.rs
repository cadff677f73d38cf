//! Drift detection (pure): when a Stack's next check is due, which differences count once its
//! `ignore` rules are applied, and what a finished check (or remediation) means for the
//! Stack's status, `Drifted` condition and events.
//!
//! A check is an Update of type `refresh` with `previewOnly` (`pulumi refresh --preview-only`):
//! it compares the stack's state with the resources as they are, writes nothing, and does not
//! run the program. A preview with `--refresh --expect-no-changes` was the other candidate; it
//! reports program changes not yet deployed as well as drift (under an approval gate those are
//! expected) and needs the program to run, so it answers a different question.

use std::time::Duration;

use kube::ResourceExt;

use crate::api::names::{condition, drift_reason, event, label};
use crate::api::stack::{CurrentStackUpdate, DriftStatus, Stack, UpdatePurpose};
use crate::api::stack_spec::{DriftDetection, DriftIgnore, DriftMode};
use crate::api::update::{ResourceChange, Update, UpdateType};
use crate::controller::cron::Schedule;
use crate::controller::duration;
use crate::controller::runtime::conditions::Conditions;
use crate::controller::runtime::events::EventType;

/// The shortest interval between checks: each one starts the CLI and reads every resource.
pub const MIN_INTERVAL: Duration = Duration::from_secs(300);
/// How long a drift check's Update is kept once completed (a program's updates keep PKO's
/// 24h): what it found is in the Stack's `status.drift`, and checks every few minutes would
/// otherwise pile up hundreds of Updates per Stack.
pub const CHECK_TTL: &str = "1h";
/// At most this many resources are named in an event or condition message.
const NAMED: usize = 5;

/// How often checks run.
#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    Every(Duration),
    Cron(Box<Schedule>),
}

/// `spec.driftDetection`'s cadence, or what is wrong with it (the Stack stalls, SpecInvalid).
pub fn cadence(d: &DriftDetection) -> Result<Cadence, String> {
    match (d.interval.as_deref(), d.schedule.as_deref()) {
        (Some(i), None) => {
            let every =
                duration::parse(i).map_err(|e| format!("spec.driftDetection.interval: {e}"))?;
            if every < MIN_INTERVAL {
                return Err(format!(
                    "spec.driftDetection.interval {i:?} is below the minimum of 5m: each check \
                     starts the CLI and reads every resource"
                ));
            }
            Ok(Cadence::Every(every))
        }
        (None, Some(s)) => Schedule::parse(s)
            .map(|c| Cadence::Cron(Box::new(c)))
            .map_err(|e| format!("spec.driftDetection.schedule: {e}")),
        _ => Err(
            "spec.driftDetection needs exactly one of interval (e.g. 30m) and schedule (cron, \
             e.g. \"0 */6 * * *\")"
                .into(),
        ),
    }
}

/// The Stack's drift settings, checked (None: drift detection is off).
pub fn settings(stack: &Stack) -> Result<Option<(&DriftDetection, Cadence)>, String> {
    match stack.spec.0.drift_detection.as_ref() {
        None => Ok(None),
        Some(d) => cadence(d).map(|c| Some((d, c))),
    }
}

/// What drift detection asks of a Stack that has nothing else to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Off, or not now: nothing deployed yet, the last update failed, a destroy, ...
    Idle,
    /// Run a check now (the Update's message).
    Check(String),
    /// Run the remediation `up` now (the Update's message).
    Remediate(String),
    /// The next check is due after this long.
    After(Duration),
}

/// The `pulumi.com/drift-check-request` value: a new one runs a check at once.
pub fn request(stack: &Stack) -> Option<String> {
    stack
        .metadata
        .annotations
        .as_ref()?
        .get(label::DRIFT_CHECK_REQUEST)
        .cloned()
}

fn mode(stack: &Stack) -> DriftMode {
    stack
        .spec
        .0
        .drift_detection
        .as_ref()
        .and_then(|d| d.mode)
        .unwrap_or_default()
}

fn since(t: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO)
}

/// What is due for `stack` (its status as this reconcile has it) at `now`.
pub fn next(stack: &Stack, cadence: &Cadence, now: jiff::Timestamp) -> Next {
    let status = stack.status.clone().unwrap_or_default();
    let Some(last) = status.last_update.as_ref() else {
        return Next::Idle;
    };
    // Only a stack whose program is deployed: a failed update retries on its own, and drift
    // from a half-applied program is noise.
    if !last.succeeded() || !matches!(last.kind(), Some(UpdateType::Up | UpdateType::Preview)) {
        return Next::Idle;
    }
    let drift = status.drift.unwrap_or_default();
    let found = drift.resources.as_ref().map_or(0, Vec::len);
    if mode(stack) == DriftMode::Remediate
        && found > 0
        && drift.remediation.is_none()
        && !stack.spec.0.preview.unwrap_or(false)
    {
        return Next::Remediate(format!(
            "Drift detected in {found} resource(s) by {}; remediating",
            drift.update.as_deref().unwrap_or("a drift check")
        ));
    }
    if let Some(r) = request(stack)
        && drift.last_handled_request.as_deref() != Some(r.as_str())
    {
        return Next::Check(format!("Drift check requested: {r:?}"));
    }
    let Some(checked) = drift
        .last_check_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return Next::Check("First drift check".into());
    };
    let (due, what) = match cadence {
        Cadence::Every(d) => (
            checked
                .checked_add(jiff::SignedDuration::try_from(*d).unwrap_or_default())
                .unwrap_or(checked),
            format!("every {}", super::sync::human(*d)),
        ),
        Cadence::Cron(c) => match c.next_after(checked) {
            Some(t) => (t, "on schedule".to_string()),
            None => return Next::Idle,
        },
    };
    if due <= now {
        Next::Check(format!("Drift check due ({what})"))
    } else {
        Next::After(since(now, due).max(Duration::from_secs(1)))
    }
}

/// `*` any run of characters, `?` any one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `rule_path` covers `path`: the same, or `path` is under it (`metadata.annotations`
/// covers `metadata.annotations.x` and `metadata.annotations["x"]`).
fn covers(rule_path: &str, path: &str) -> bool {
    path == rule_path
        || path
            .strip_prefix(rule_path)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn applies(rule: &DriftIgnore, c: &ResourceChange) -> bool {
    rule.urn.as_deref().is_none_or(|g| glob(g, &c.urn))
        && rule
            .resource_type
            .as_deref()
            .is_none_or(|g| glob(g, &c.resource_type))
}

/// The changes `rules` do not cover, and how many differences (resources or paths) they did.
pub fn unignored(
    rules: &[DriftIgnore],
    changes: Vec<ResourceChange>,
) -> (Vec<ResourceChange>, usize) {
    let mut ignored = 0;
    let mut kept = Vec::new();
    for mut c in changes {
        let matching: Vec<&DriftIgnore> = rules.iter().filter(|r| applies(r, &c)).collect();
        if matching.iter().any(|r| r.paths.is_none()) {
            ignored += 1;
            continue;
        }
        let ignored_paths: Vec<&String> = matching
            .iter()
            .flat_map(|r| r.paths.iter().flatten())
            .collect();
        if let Some(paths) = c.paths.take() {
            let before = paths.len();
            let left: Vec<String> = paths
                .into_iter()
                .filter(|p| !ignored_paths.iter().any(|r| covers(r, p)))
                .collect();
            ignored += before - left.len();
            if left.is_empty() && before > 0 {
                continue;
            }
            c.paths = Some(left);
        }
        kept.push(c);
    }
    (kept, ignored)
}

/// A change as one phrase: `ConfigMap::settings (update: data.color)`.
fn describe(c: &ResourceChange) -> String {
    let short = c.urn.rsplit("::").next().unwrap_or(&c.urn);
    let kind = c
        .resource_type
        .rsplit(':')
        .next()
        .unwrap_or(&c.resource_type);
    match c.paths.as_deref() {
        Some(p) if !p.is_empty() => format!("{kind}::{short} ({}: {})", c.operation, p.join(", ")),
        _ => format!("{kind}::{short} ({})", c.operation),
    }
}

fn list(changes: &[ResourceChange], omitted: usize) -> String {
    let mut s: Vec<String> = changes.iter().take(NAMED).map(describe).collect();
    let more = changes.len().saturating_sub(NAMED) + omitted;
    if more > 0 {
        s.push(format!("and {more} more"));
    }
    s.join("; ")
}

/// What a finished check (or remediation) changes on the Stack.
#[derive(Debug, PartialEq)]
pub struct Absorbed {
    pub drift: DriftStatus,
    /// The `Drifted` condition: (status, reason, message).
    pub condition: (&'static str, &'static str, String),
    pub events: Vec<(EventType, &'static str, String)>,
}

/// The result of drift check `u` (None: deleted before it ended) that `current` was waiting
/// on; `prev` is the last check's status, `shown` the `Drifted` condition as it stands.
pub fn absorb_check(
    stack: &Stack,
    prev: Option<&DriftStatus>,
    shown: Option<&str>,
    current: &CurrentStackUpdate,
    u: Option<&Update>,
    now: jiff::Timestamp,
) -> Absorbed {
    let name = stack.name_any();
    let prev = prev.cloned().unwrap_or_default();
    let ustatus = u.and_then(|u| u.status.clone()).unwrap_or_default();
    let failed =
        u.is_none() || Conditions::from(ustatus.conditions.as_ref()).is_true(condition::FAILED);
    let mut drift = DriftStatus {
        last_check_time: Some(now.round(jiff::Unit::Second).unwrap_or(now).to_string()),
        revision: stack
            .status
            .as_ref()
            .and_then(|s| s.last_update.as_ref())
            .and_then(|l| l.last_successful_commit.clone()),
        update: current.name.clone(),
        last_handled_request: request(stack).or(prev.last_handled_request.clone()),
        ..Default::default()
    };
    if failed {
        let why = match u {
            None => "its Update was deleted before it ended".to_string(),
            Some(_) => ustatus.message.unwrap_or_default(),
        };
        // What the last successful check found stands; the condition says it is unknown now.
        drift.resources = prev.resources;
        drift.omitted = prev.omitted;
        drift.ignored = prev.ignored;
        drift.remediation = prev.remediation;
        drift.message = Some(why.clone());
        let message = format!(
            "the drift check ({}) failed: {why}",
            current.name.as_deref().unwrap_or_default()
        );
        return Absorbed {
            drift,
            condition: ("Unknown", drift_reason::CHECK_FAILED, message.clone()),
            events: vec![(EventType::Warning, event::DRIFT_CHECK_FAILED, message)],
        };
    }
    let rules = stack
        .spec
        .0
        .drift_detection
        .as_ref()
        .and_then(|d| d.ignore.clone())
        .unwrap_or_default();
    let (found, ignored) = unignored(&rules, ustatus.changes.unwrap_or_default());
    // Counted, not listed: beyond what the Update kept (ignore rules cannot be applied to
    // what was not kept, so this may count some a rule would cover).
    let omitted = usize::try_from(ustatus.changes_omitted.unwrap_or(0)).unwrap_or(0);
    drift.ignored = (ignored > 0).then_some(ignored as i64);
    drift.omitted = (omitted > 0).then_some(omitted as i64);
    let mut events = Vec::new();
    if found.is_empty() && omitted == 0 {
        if shown == Some(drift_reason::DRIFT_DETECTED) {
            events.push((
                EventType::Normal,
                event::DRIFT_RESOLVED,
                format!(
                    "The drift check ({}) found no drift any more",
                    current.name.as_deref().unwrap_or_default()
                ),
            ));
        }
        let message = match ignored {
            0 => "no drift found".to_string(),
            n => format!("no drift found ({n} ignored difference(s))"),
        };
        return Absorbed {
            drift,
            condition: ("False", drift_reason::NO_DRIFT, message),
            events,
        };
    }
    let m = mode(stack);
    let what = list(&found, omitted);
    let count = found.len() + omitted;
    let remediating = m == DriftMode::Remediate && !stack.spec.0.preview.unwrap_or(false);
    let fix = if remediating {
        "remediating: an up with refresh puts them back as the program declares them".to_string()
    } else {
        format!(
            "to put them back as the program declares them, set spec.driftDetection.mode: \
             remediate (or run an up with refresh: spec.refresh: true, then kubectl annotate \
             stack {name} pulumi.com/reconciliation-request=\"$(date +%s)\" --overwrite); to keep \
             them, change the program, or add a spec.driftDetection.ignore rule"
        )
    };
    let message = format!(
        "{count} resource(s) differ from the stack's state (changed outside Pulumi): {what}; {fix}"
    );
    // A new event only when what differs changed (or drift is new): a check every few minutes
    // must not repeat the same news.
    let news = shown != Some(drift_reason::DRIFT_DETECTED)
        || prev.resources.as_ref() != Some(&found)
        || prev.omitted != drift.omitted;
    if news || remediating {
        let kind = if m == DriftMode::Detect {
            EventType::Normal
        } else {
            EventType::Warning
        };
        events.push((
            kind,
            event::DRIFT_DETECTED,
            format!(
                "Drift check {}: {message}",
                current.name.as_deref().unwrap_or_default()
            ),
        ));
    }
    drift.resources = Some(found);
    Absorbed {
        drift,
        condition: ("True", drift_reason::DRIFT_DETECTED, message),
        events,
    }
}

/// After the remediation `up` `u` ended: if it succeeded the drift is put right (the next check
/// confirms), and the Stack says so; if it failed, the usual update failure says why, and the
/// drift found stands (the next check that finds it remediates again).
pub fn absorb_remediation(prev: Option<&DriftStatus>, u: Option<&Update>) -> Option<Absorbed> {
    let u = u?;
    let status = u.status.clone().unwrap_or_default();
    if Conditions::from(status.conditions.as_ref()).is_true(condition::FAILED) {
        return None;
    }
    let prev = prev.cloned().unwrap_or_default();
    let count = prev.resources.as_ref().map_or(0, Vec::len);
    let message = format!(
        "the remediation ({}) put back {count} resource(s) as the program declares them; the next \
         check confirms",
        u.name_any()
    );
    Some(Absorbed {
        drift: DriftStatus {
            resources: None,
            omitted: None,
            ..prev
        },
        condition: ("False", drift_reason::REMEDIATED, message.clone()),
        events: vec![(EventType::Normal, event::DRIFT_REMEDIATED, message)],
    })
}

/// The Update purpose for each kind of job drift detection starts.
pub fn purpose(n: &Next) -> Option<UpdatePurpose> {
    match n {
        Next::Check(_) => Some(UpdatePurpose::DriftCheck),
        Next::Remediate(_) => Some(UpdatePurpose::DriftRemediation),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
