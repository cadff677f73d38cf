//! The Stack controller: resolves the Stack's source to a revision, keeps its Workspace
//! applied, decides when an update is due (`sync`), creates the Update, and absorbs its result
//! into status and events. Deletion runs `destroy` first when `destroyOnFinalize` is set.

pub mod absorb;
pub mod approval;
pub mod drift;
#[cfg(test)]
mod fixtures;
pub mod flux;
pub mod git;
pub mod outputs_secret;
pub mod prerequisites;
pub mod source;
pub mod status;
pub mod stop;
pub mod sync;
pub mod updates;
mod wiring;
pub mod workspace_gate;
pub mod workspace_spec;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::runtime::conditions::Conditions;
use super::runtime::events::{EventType, Recorder};
use super::runtime::metrics::Metrics;
use super::runtime::{Scope, cache};
use super::{Error, apply_status, update as update_ctl, workspace as workspace_ctl};
use crate::api::names::{
    condition, event, field_manager, finalizer, label, stack_reason as reason,
};
use crate::api::stack::{CurrentStackUpdate, Stack, StackUpdateState, UpdatePurpose};
use crate::api::update::{Update, UpdateType};
use crate::api::workspace::Workspace;
use status::Draft;
use stop::{Halt, SOURCE_RETRY, Stop};

pub const CONTROLLER: &str = "stack";

pub use wiring::run;

/// What the Stack controller keeps between reconciles.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub events: Recorder,
    /// Flux source kinds watched (each started with the first Stack that names it).
    pub flux_watches: flux::Watches,
    /// The Workspaces, watch-fed (empty until the controller runs), and what was last applied
    /// to them.
    pub workspaces: OnceLock<Store<Workspace>>,
    pub applied: cache::Applied,
    /// The last status written per Stack.
    pub statuses: cache::Statuses,
    /// GitHub's API, for GitHub App credentials (`Settings::github_api_url`).
    pub github_api: String,
    /// What this operator reconciles (`--watch-namespace`, `--watch-label-selector`).
    pub scope: Scope,
    /// The workspace pods' account for Stacks that name none (`--default-service-account`).
    pub default_service_account: Option<String>,
}

impl super::runtime::Measured for Context {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        github_api: Option<String>,
        scope: Scope,
        default_service_account: Option<String>,
    ) -> Context {
        Context {
            scope,
            default_service_account,
            github_api: github_api.unwrap_or_else(|| fetch::git::github_app::DEFAULT_API.into()),
            events: Recorder::new(client.clone(), "stack-controller"),
            client,
            metrics,
            flux_watches: flux::Watches::default(),
            workspaces: OnceLock::new(),
            applied: cache::Applied::default(),
            statuses: cache::Statuses::default(),
        }
    }
}

struct Run<'a> {
    ctx: &'a Context,
    stack: &'a Stack,
    api: Api<Stack>,
    ns: String,
    name: String,
    draft: Draft,
    deleting: bool,
    /// The Stack's resourceVersion as this reconcile last saw or wrote it: every status write
    /// is conditional on it, so a decision made from a cache that trails the server is
    /// refused (409) instead of overwriting newer status; `reconcile` then decides again from
    /// the server's copy.
    resource_version: Option<String>,
    /// The status on the server as far as this reconcile knows (what it read, then wrote).
    saved: Option<crate::api::stack::StackStatus>,
    /// Events wait for the status they describe to be written: a reconcile refused for a
    /// stale cache runs again and must not have announced anything.
    events: Vec<(EventType, &'static str, String)>,
}

impl Run<'_> {
    /// The Stack as this reconcile has updated it so far (its status is the draft): what the
    /// decisions must look at after a result was absorbed.
    fn current(&self) -> Stack {
        let mut s = self.stack.clone();
        s.status = Some(self.draft.status());
        s
    }

    fn uid(&self) -> String {
        self.stack.uid().unwrap_or_default()
    }

    async fn save(&mut self) -> Result<(), Error> {
        let status = Some(self.draft.status());
        if !self
            .ctx
            .statuses
            .unchanged(&self.uid(), &self.saved, &status)
        {
            let mut body = self.draft.body();
            body["metadata"] = json!({"name": self.name, "resourceVersion": self.resource_version});
            let written =
                apply_status(&self.api, &self.name, field_manager::STACK_STATUS, body).await?;
            self.resource_version = written.resource_version();
            self.ctx.statuses.record(&self.uid(), &status);
            self.saved = status;
        }
        let failing = self
            .draft
            .last_update
            .as_ref()
            .is_some_and(StackUpdateState::failed);
        self.ctx
            .metrics
            .stacks_failing
            .get_or_create(&super::runtime::metrics::StackLabels {
                namespace: self.ns.clone(),
                name: self.name.clone(),
            })
            .set(i64::from(failing));
        self.flush_events().await;
        Ok(())
    }

    fn event(&mut self, t: EventType, r: &'static str, note: &str) {
        self.events.push((t, r, note.to_string()));
    }

    async fn flush_events(&mut self) {
        for (t, r, note) in std::mem::take(&mut self.events) {
            self.ctx.events.publish(self.stack, t, r, &note).await;
        }
    }

    /// Ends the reconcile for `stop`: its condition, event and requeue, decided here alone.
    async fn stop(&mut self, stop: Stop) -> Result<Action, Error> {
        let action = match stop {
            // An event names the problem once; no retry until the spec changes (or, for
            // what lives elsewhere such as a Secret, `retry` passes).
            Stop::SpecInvalid { message, retry } => {
                let shown = self.draft.conditions.get(condition::STALLED);
                if shown.is_none_or(|c| c.reason != reason::SPEC_INVALID || c.message != message) {
                    self.event(EventType::Warning, event::STACK_CONFIG_INVALID, &message);
                }
                self.draft.stalled(reason::SPEC_INVALID, &message);
                retry.map_or_else(Action::await_change, Action::requeue)
            }
            Stop::SourceUnavailable(message) => {
                self.draft.stalled(reason::SOURCE_UNAVAILABLE, &message);
                Action::requeue(SOURCE_RETRY)
            }
            Stop::Stalled {
                reason: why,
                message,
                event,
                retry,
            } => {
                if let Some(e) = event {
                    self.event(EventType::Warning, e, &message);
                }
                self.draft.stalled(why, &message);
                retry.map_or_else(Action::await_change, Action::requeue)
            }
            Stop::Waiting {
                reason: why,
                message,
                recheck,
            } => {
                self.draft.reconciling(why, &message);
                recheck.map_or_else(Action::await_change, Action::requeue)
            }
            Stop::Suspended => {
                self.draft.suspended();
                Action::await_change()
            }
            Stop::Checking { recheck } => Action::requeue(recheck),
        };
        self.save().await?;
        Ok(action)
    }
}

fn has_finalizer(s: &Stack) -> bool {
    s.finalizers().iter().any(|f| f == finalizer::STACK)
}

/// Adds or removes our finalizer; returns the Stack's new resourceVersion.
async fn set_finalizer(
    api: &Api<Stack>,
    s: &Stack,
    resource_version: Option<&str>,
    present: bool,
) -> Result<Option<String>, Error> {
    let mut list: Vec<String> = s
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer::STACK)
        .cloned()
        .collect();
    if present {
        list.push(finalizer::STACK.into());
    }
    let patch = json!({"metadata": {"finalizers": list, "resourceVersion": resource_version}});
    match api
        .patch(
            &s.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(s) => Ok(s.resource_version()),
        Err(kube::Error::Api(e)) if e.code == 404 && !present => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn reconcile(stack: Arc<Stack>, ctx: Arc<Context>) -> Result<Action, Error> {
    match reconcile_from(&stack, &ctx).await {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
            // The cache trailed a write (ours, most likely): decide again from the server.
            let api: Api<Stack> =
                Api::namespaced(ctx.client.clone(), &stack.namespace().unwrap_or_default());
            match api.get_opt(&stack.name_any()).await? {
                Some(fresh) => reconcile_from(&fresh, &ctx).await,
                None => Ok(Action::await_change()),
            }
        }
        other => other,
    }
}

async fn reconcile_from(stack: &Stack, ctx: &Context) -> Result<Action, Error> {
    let ns = stack.namespace().unwrap_or_default();
    let name = stack.name_any();
    let api: Api<Stack> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = stack.meta().deletion_timestamp.is_some();
    if deleting && !has_finalizer(stack) {
        forget_stack(ctx, stack);
        return Ok(Action::await_change());
    }
    let mut resource_version = stack.resource_version();
    if !deleting && !has_finalizer(stack) {
        resource_version = set_finalizer(&api, stack, resource_version.as_deref(), true).await?;
    }
    let mut run = Run {
        ctx,
        stack,
        api,
        draft: Draft::new(stack),
        ns,
        name,
        deleting,
        resource_version,
        saved: stack.status.clone(),
        events: Vec::new(),
    };
    let action = match reconcile_steps(&mut run).await {
        Ok(action) => action,
        Err(Halt::Stop(stop)) => run.stop(stop).await?,
        Err(Halt::Failed(e)) => return Err(e),
    };
    run.flush_events().await;
    Ok(action)
}

/// The reconcile in order: absorb the Update in flight, let a Stack without a destroy go,
/// resolve the source, decide whether an update is due, check the prerequisites, apply the
/// Workspace, create the Update. Every way it ends early is a [`Halt`].
async fn reconcile_steps(run: &mut Run<'_>) -> Result<Action, Halt> {
    let now = jiff::Timestamp::now();
    absorb_finished_update(run, now).await?;

    if run.deleting && !sync::destroys_on_delete(run.stack) {
        run.draft.ready();
        return Ok(cleanup(run).await?);
    }
    // Checked before the source, which is not polled while suspended.
    if sync::suspended(run.stack) && !run.deleting {
        return Err(Stop::Suspended.into());
    }

    let seen = source::Seen {
        ctx: run.ctx,
        stack: run.stack,
        ns: &run.ns,
        deleting: run.deleting,
        project_info: run.draft.project_info.as_ref(),
    };
    let source::Resolved {
        source,
        commit,
        polls_branch,
    } = source::resolve(&seen).await?;
    let mut ws = workspace_spec::desired_workspace(run.stack, &source).map_err(Stop::spec)?;
    // The shard that reconciles the Stack reconciles its Workspace too.
    ws.labels_mut()
        .extend(run.ctx.scope.shard_labels(run.stack.labels()));
    workspace_spec::with_default_account(
        run.stack,
        &mut ws,
        run.ctx.default_service_account.as_deref(),
    );
    let drift_cadence = drift::settings(run.stack)
        .map_err(Stop::spec)?
        .map(|(_, c)| c);
    if drift_cadence.is_none() {
        run.draft.drift = None;
        run.draft.conditions.remove(condition::DRIFTED);
    }
    let gated = approval::required(run.stack, run.deleting);
    if !gated {
        run.draft.pending_plan = None;
        run.draft.conditions.remove(condition::AWAITING_APPROVAL);
    }

    let observed = sync::Observed {
        commit: &commit,
        deleting: run.deleting,
        now,
    };
    let message = match sync::decide(&run.current(), observed) {
        sync::Sync::Needed(m) => m,
        sync::Sync::Synced => {
            if !run.deleting {
                outputs_secret::ensure(run).await?;
            }
            let due = match (&drift_cadence, run.deleting) {
                (Some(c), false) => drift::next(&run.current(), c, now),
                _ => drift::Next::Idle,
            };
            let purpose = drift::purpose(&due);
            match due {
                drift::Next::Check(ref message) | drift::Next::Remediate(ref message) => {
                    // A remediation is an update like any other; a check only looks.
                    if matches!(due, drift::Next::Remediate(_)) {
                        run.event(EventType::Normal, event::STACK_UPDATE_DETECTED, message);
                    }
                    let applied = apply_workspace(run, &ws, purpose).await?;
                    create_update(run, &applied, message, &commit, now, purpose).await?;
                    return Ok(Action::await_change());
                }
                drift::Next::After(d) => return Ok(synced(run, polls_branch, now, Some(d)).await?),
                drift::Next::Idle => return Ok(synced(run, polls_branch, now, None).await?),
            }
        }
    };
    if gated {
        return gate_update(run, &ws, &message, &commit, now).await;
    }
    run.event(EventType::Normal, event::STACK_UPDATE_DETECTED, &message);

    if !run.deleting {
        prerequisites(run, now).await?;
    }
    let applied = apply_workspace(run, &ws, None).await?;
    create_update(run, &applied, &message, &commit, now, None).await?;
    Ok(Action::await_change())
}

/// An update that is due under `spec.approval`: make its plan, wait for its approval, or
/// apply the approved plan ([`approval::step`]).
async fn gate_update(
    run: &mut Run<'_>,
    ws: &Workspace,
    message: &str,
    commit: &str,
    now: jiff::Timestamp,
) -> Result<Action, Halt> {
    let (purpose, message) = match approval::step(&run.current(), commit) {
        approval::Step::Wait { plan, refused } => {
            if let Some(value) = refused {
                let (t, r, note) = approval::refusal(run.stack, &value, &plan);
                run.event(t, r, &note);
                if let Some(p) = run.draft.pending_plan.as_mut() {
                    p.refused_approval = Some(value);
                }
            }
            return Err(Stop::Waiting {
                reason: reason::AWAITING_APPROVAL,
                message: approval::describe(run.stack, &plan),
                recheck: None,
            }
            .into());
        }
        approval::Step::Plan => (
            UpdatePurpose::Plan,
            format!("{message}; planning: the plan waits for approval"),
        ),
        approval::Step::Apply(plan) => (
            UpdatePurpose::ApprovedPlan,
            format!("{message}; applying the approved plan {}", plan.id),
        ),
    };
    run.event(EventType::Normal, event::STACK_UPDATE_DETECTED, &message);
    prerequisites(run, now).await?;
    let applied = apply_workspace(run, ws, Some(purpose)).await?;
    create_update(run, &applied, &message, commit, now, Some(purpose)).await?;
    Ok(Action::await_change())
}

/// How often a Stack whose Update runs looks at it again, beside the Update's own watch
/// events: around a restart of the API server an event can go missing (once in
/// `tests/faults.rs` a Stack took in its Update 190 s after the Update ended, woken by its
/// Flux source, not by the Update's watch), and the Stack would wait for its next unrelated
/// event: minutes, or never. One GET a minute per running Update is the price.
const UPDATE_RECHECK: Duration = Duration::from_secs(60);

/// Records the Update in flight once it has finished (or vanished) as the Stack's last
/// update; while it runs, the reconcile waits for it.
async fn absorb_finished_update(run: &mut Run<'_>, now: jiff::Timestamp) -> Result<(), Halt> {
    let Some(current) = run.draft.current_update.clone() else {
        return Ok(());
    };
    let updates: Api<Update> = Api::namespaced(run.ctx.client.clone(), &run.ns);
    let uname = current.name.clone().unwrap_or_default();
    let found = updates.get_opt(&uname).await?;
    if found.as_ref().is_some_and(|u| !update_ctl::is_complete(u)) {
        if current.purpose == Some(UpdatePurpose::DriftCheck) {
            return Err(Stop::Checking {
                recheck: UPDATE_RECHECK,
            }
            .into());
        }
        return Err(Stop::Waiting {
            reason: reason::STACK_PROCESSING,
            message: "stack is being processed".into(),
            recheck: Some(UPDATE_RECHECK),
        }
        .into());
    }
    match current.purpose {
        Some(UpdatePurpose::DriftCheck) => {
            let shown = run
                .draft
                .conditions
                .get(condition::DRIFTED)
                .map(|c| c.reason.clone());
            let a = drift::absorb_check(
                run.stack,
                run.draft.drift.as_ref(),
                shown.as_deref(),
                &current,
                found.as_ref(),
                now,
            );
            absorb_drift(run, a);
        }
        Some(UpdatePurpose::DriftRemediation) => {
            absorb(run, &current, found.as_ref(), now).await?;
            if let Some(a) = drift::absorb_remediation(run.draft.drift.as_ref(), found.as_ref()) {
                absorb_drift(run, a);
            }
        }
        Some(UpdatePurpose::Plan) => absorb_plan(run, &current, found.as_ref(), now).await?,
        Some(UpdatePurpose::ApprovedPlan) => {
            absorb(run, &current, found.as_ref(), now).await?;
            // A plan is applied once, whatever the end: a failed one is made again.
            let applied = run.draft.pending_plan.take();
            if run
                .draft
                .last_update
                .as_ref()
                .is_some_and(StackUpdateState::succeeded)
            {
                run.draft.applied_plan = applied.map(|p| p.id);
            }
            run.draft.conditions.remove(condition::AWAITING_APPROVAL);
        }
        None => absorb(run, &current, found.as_ref(), now).await?,
    }
    run.draft.current_update = None;
    run.save().await?;
    update_ctl::hold(&updates, &uname, false).await?;
    Ok(())
}

/// A finished planning preview: its plan awaits approval (`PlanReady`); a preview that failed,
/// or saved no plan, is recorded as a failed update (and retried with the back-off).
async fn absorb_plan(
    run: &mut Run<'_>,
    current: &CurrentStackUpdate,
    u: Option<&Update>,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    if let Some(plan) = approval::absorb_plan(current, u, now) {
        let note = approval::describe(run.stack, &plan);
        let g = run.stack.meta().generation;
        run.draft.conditions.set(
            condition::AWAITING_APPROVAL,
            "True",
            event::PLAN_READY,
            &note,
            g,
        );
        run.event(EventType::Normal, event::PLAN_READY, &note);
        run.draft.pending_plan = Some(plan);
        return Ok(());
    }
    let mut failed = u.cloned();
    if let Some(u) = failed.as_mut() {
        let status = u.status.get_or_insert_with(Default::default);
        let mut conditions = Conditions::from(status.conditions.as_ref());
        if !conditions.is_true(condition::FAILED) {
            conditions.set(
                condition::FAILED,
                "True",
                crate::api::names::update_reason::UPDATE_FAILED,
                "",
                u.metadata.generation,
            );
            status.conditions = Some(conditions.0);
            status.message = Some(
                "the preview saved no update plan (is the workspace's agent this operator's?                  PKO's agent does not save plans), so there is nothing to approve"
                    .into(),
            );
        }
    }
    absorb(run, current, failed.as_ref(), now).await
}

/// What a drift check or remediation found or did, into the status, condition and events.
fn absorb_drift(run: &mut Run<'_>, a: drift::Absorbed) {
    let (status, why, message) = a.condition;
    let g = run.stack.meta().generation;
    run.draft
        .conditions
        .set(condition::DRIFTED, status, why, &message, g);
    run.draft.drift = Some(a.drift);
    run.events.extend(a.events);
}

/// Applies the Workspace (before the status: the new source reaches the pod without waiting
/// for a status write) and returns it once it is ready. For a drift check the conditions stay
/// as they are while the workspace comes up.
async fn apply_workspace(
    run: &mut Run<'_>,
    ws: &Workspace,
    purpose: Option<UpdatePurpose>,
) -> Result<Workspace, Halt> {
    let checking = purpose == Some(UpdatePurpose::DriftCheck);
    if !checking {
        run.draft
            .reconciling(reason::STACK_PROCESSING, "waiting for workspace readiness");
    }
    let workspaces: Api<Workspace> = Api::namespaced(run.ctx.client.clone(), &run.ns);
    let current = cache::cached(&run.ctx.workspaces, &run.ns, &run.name);
    let applied = match run
        .ctx
        .applied
        .apply(
            &workspaces,
            &run.ns,
            &run.name,
            field_manager::OPERATOR,
            ws,
            current.as_deref(),
        )
        .await
    {
        Ok(w) => w,
        Err(kube::Error::Api(e)) if run.deleting && e.message.contains("being terminated") => {
            return Err(stop::namespace_terminating(
                run.draft.last_update.as_ref(),
                &run.name,
                &run.ns,
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if workspace_ctl::is_ready(&applied) {
        return Ok(applied);
    }
    let shown = run
        .draft
        .conditions
        .get(condition::STALLED)
        .map(|c| c.message.clone());
    match workspace_gate::gate(&applied, run.stack, run.deleting, shown.as_deref()) {
        workspace_gate::Gate::Waiting if checking => Err(Stop::Checking {
            recheck: UPDATE_RECHECK,
        }
        .into()),
        gate => Err(gate.into()),
    }
}

/// Creates the Update and holds it (so it stays until its result is absorbed); the Stack
/// records it as in flight first, so a crash in between leaves nothing unaccounted for.
/// `purpose`: a drift check (a preview-only refresh; the conditions stay as they are) or a
/// remediation (an `up` with refresh) instead of an update of the program.
async fn create_update(
    run: &mut Run<'_>,
    applied: &Workspace,
    message: &str,
    commit: &str,
    now: jiff::Timestamp,
    purpose: Option<UpdatePurpose>,
) -> Result<(), Halt> {
    let kind = match purpose {
        Some(UpdatePurpose::DriftCheck) => UpdateType::Refresh,
        Some(UpdatePurpose::Plan) => UpdateType::Preview,
        Some(UpdatePurpose::DriftRemediation | UpdatePurpose::ApprovedPlan) => UpdateType::Up,
        None => updates::kind(run.stack, run.deleting),
    };
    let uname = updates::name(run.stack, now);
    let mut update =
        updates::desired_update(run.stack, applied, kind, message, &uname).map_err(Stop::spec)?;
    match purpose {
        Some(UpdatePurpose::Plan) => {
            update.spec.save_plan = Some(true);
            update.spec.ttl_after_completed = Some(approval::PLAN_TTL.into());
        }
        Some(UpdatePurpose::ApprovedPlan) => {
            let Some(p) = run.draft.pending_plan.as_ref() else {
                return Err(Stop::spec("no plan awaits approval").into());
            };
            update.spec.plan = Some(crate::api::update::PlanRef {
                id: p.id.clone(),
                secret_name: p.secret_name.clone(),
            });
        }
        Some(UpdatePurpose::DriftCheck) => {
            update.spec.preview_only = Some(true);
            update.spec.refresh = None;
            update.spec.ttl_after_completed = Some(drift::CHECK_TTL.into());
        }
        Some(UpdatePurpose::DriftRemediation) => {
            update.spec.refresh = Some(true);
            if let Some(d) = run.draft.drift.as_mut() {
                d.remediation = Some(uname.clone());
            }
        }
        None => {}
    }
    update
        .labels_mut()
        .extend(run.ctx.scope.shard_labels(run.stack.labels()));
    if purpose != Some(UpdatePurpose::DriftCheck) {
        run.draft
            .reconciling(reason::STACK_PROCESSING, "stack is being processed");
    }
    run.draft.current_update = Some(CurrentStackUpdate {
        generation: run.stack.meta().generation,
        reconcile_request: sync::reconcile_request(run.stack),
        name: Some(uname.clone()),
        commit: Some(commit.to_string()),
        reconcile_requested_at: sync::flux_request(run.stack),
        purpose,
    });
    run.save().await?;
    let update_api: Api<Update> = Api::namespaced(run.ctx.client.clone(), &run.ns);
    if let Err(e) = update_api.create(&PostParams::default(), &update).await {
        run.draft.current_update = None;
        run.save().await?;
        return Err(e.into());
    }
    if let Err(e) = update_ctl::hold(&update_api, &uname, true).await {
        let _ = update_api.delete(&uname, &Default::default()).await;
        run.draft.current_update = None;
        run.save().await?;
        return Err(e.into());
    }
    info!(update = %uname, kind = kind.as_str(), reason = %message, "update created");
    Ok(())
}

/// The one way a Stack being deleted is let go, once no destroy is due or one succeeded: its
/// status written, then our finalizer removed (the API server deletes it; the watch's delete
/// makes this process forget it).
async fn cleanup(run: &mut Run<'_>) -> Result<Action, Error> {
    run.save().await?;
    set_finalizer(&run.api, run.stack, run.resource_version.as_deref(), false).await?;
    Ok(Action::await_change())
}

/// Records a finished (or vanished) Update as the Stack's last update ([`absorb::absorb`]
/// decides), reading the outputs Secret it names.
async fn absorb(
    run: &mut Run<'_>,
    current: &CurrentStackUpdate,
    u: Option<&Update>,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let a = absorb::absorb(run.stack, run.draft.last_update.as_ref(), current, u, now);
    if let Some(secret_name) = a.outputs_secret.as_deref() {
        let secrets: Api<Secret> = Api::namespaced(run.ctx.client.clone(), &run.ns);
        match secrets.get_opt(secret_name).await? {
            Some(s) => run.draft.outputs = Some(updates::outputs(&s)),
            None => {
                warn!(secret = secret_name, "the update's outputs Secret is gone")
            }
        }
    }
    run.draft.last_update = Some(a.last);
    // Flux's request is handled once the update it asked for has finished, whatever its end.
    if let Some(at) = &current.reconcile_requested_at {
        run.draft.last_handled_reconcile_at = Some(at.clone());
    }
    if let Some(p) = a.project_info {
        run.draft.project_info = Some(p);
    }
    run.events.extend(a.events);
    Ok(())
}

/// Nothing to run now: say where things stand, then what [`sync::settle`] decides: finish a
/// deletion, apply the reclaim policy, wake up when a back-off ends or a resync or branch
/// poll is due.
async fn synced(
    run: &mut Run<'_>,
    polls_branch: bool,
    now: jiff::Timestamp,
    drift_after: Option<Duration>,
) -> Result<Action, Error> {
    let last = run.draft.last_update.clone().unwrap_or_default();
    match sync::standing(&last, sync::max_backoff(run.stack), now) {
        sync::Standing::Ready => run.draft.ready(),
        sync::Standing::Retrying {
            reason: why,
            message,
        } => run.draft.reconciling(why, &message),
        sync::Standing::Unchanged => {}
    }
    match sync::settle(&run.current(), run.deleting, polls_branch, now) {
        sync::Settle::Release => cleanup(run).await,
        sync::Settle::AwaitDestroy(wait) => {
            run.save().await?;
            Ok(Action::requeue(wait))
        }
        sync::Settle::Idle { reclaim, requeue } => {
            let requeue = requeue.into_iter().chain(drift_after).min();
            if reclaim {
                let workspaces: Api<Workspace> = Api::namespaced(run.ctx.client.clone(), &run.ns);
                if workspaces.get_opt(&run.name).await?.is_some() {
                    workspaces.delete(&run.name, &Default::default()).await?;
                    run.event(
                        EventType::Normal,
                        event::WORKSPACE_DELETED,
                        "Workspace deleted per reclaim policy",
                    );
                }
            }
            run.save().await?;
            Ok(requeue.map_or_else(Action::await_change, Action::requeue))
        }
    }
}

/// The prerequisites, checked; one that failed or is stale is asked to run again (a reconcile
/// request on it). Any unsatisfied: the Stack waits for them.
async fn prerequisites(run: &mut Run<'_>, now: jiff::Timestamp) -> Result<(), Halt> {
    let Some(reqs) = run
        .stack
        .spec
        .0
        .prerequisites
        .as_ref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let stacks: Api<Stack> = Api::namespaced(run.ctx.client.clone(), &run.ns);
    let mut failed = Vec::new();
    for req in reqs {
        let p = stacks.get_opt(&req.name).await?;
        if let Err(u) = prerequisites::check(p.as_ref(), req, now) {
            if let (Some(value), Some(p)) = (&u.rerun_request, &p)
                && sync::reconcile_request(p).as_deref() != Some(value)
            {
                let body = json!({
                    "apiVersion": "pulumi.com/v1", "kind": "Stack",
                    "metadata": {"name": req.name, "annotations": {label::RECONCILE_REQUEST: value}},
                });
                stacks
                    .patch(
                        &req.name,
                        &PatchParams::apply(field_manager::PREREQUISITE_REQUEST).force(),
                        &Patch::Apply(&body),
                    )
                    .await?;
            }
            failed.push((req.name.clone(), u));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Stop::Waiting {
        reason: reason::PREREQUISITE_NOT_SATISFIED,
        message: prerequisites::message(&failed),
        recheck: None,
    }
    .into())
}

/// Drops what this process remembers of a Stack that is gone.
fn forget_stack(ctx: &Context, s: &Stack) {
    let uid = s.uid().unwrap_or_default();
    ctx.events.forget(&uid);
    ctx.statuses.forget(&uid);
    ctx.applied
        .forget::<Workspace>(&s.namespace().unwrap_or_default(), &s.name_any());
}

/// The Update type a Stack would run (for tests and docs).
pub fn planned_kind(stack: &Stack) -> UpdateType {
    updates::kind(stack, stack.meta().deletion_timestamp.is_some())
}
