//! The Update controller: runs one Pulumi operation through the Workspace's agent, streams it
//! to its end, records the result (conditions, times, message, permalink, outputs Secret) and
//! reports it on the Workspace (`UpdateSucceeded`, `UpdateFailed`). Completed Updates are
//! deleted after `ttlAfterCompleted`; a run cut off by an operator restart ends `Aborted`.

pub mod changes;
pub mod guard;
pub mod outcome;
pub mod plan;
mod wiring;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::runtime::connect::{self, Tokens};
use super::runtime::events::{EventType, Recorder};
use super::runtime::metrics::Metrics;
use super::runtime::outage;
use super::{Error, apply_status, duration, runtime, workspace};
use crate::api::names::{condition, event, field_manager, finalizer, update_reason as reason};
use crate::api::stack::Stack;
use crate::api::update::{Update, UpdateType};
use crate::api::workspace::Workspace;
use crate::proto as pb;
use outcome::Draft;
use plan::{Blocked, Plan};

pub const CONTROLLER: &str = "update";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub use wiring::run;

/// What the Update controller needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Tokens for calling the agents.
    pub tokens: Arc<Tokens>,
    pub events: Recorder,
    /// Results are announced on the Workspace too (`UpdateSucceeded`, `UpdateFailed`).
    pub workspace_events: Arc<Recorder>,
    /// Where to reach the agents instead of their Service (`WORKSPACE_LOCALHOST`).
    pub workspace_localhost: Option<String>,
}

impl super::runtime::Measured for Context {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

pub fn is_complete(u: &Update) -> bool {
    u.status.as_ref().is_some_and(|s| {
        s.observed_generation == u.metadata.generation
            && super::runtime::conditions::Conditions::from(s.conditions.as_ref())
                .is_true(condition::COMPLETE)
    })
}

/// The result of a finished operation, whatever its type.
pub struct RunResult {
    pub summary: Option<pb::UpdateSummary>,
    pub permalink: Option<String>,
    pub project: Option<pb::ProjectInfo>,
    pub outputs: Option<std::collections::HashMap<String, pb::OutputValue>>,
    /// The plan a preview saved (`savePlan`).
    pub plan: Option<Vec<u8>>,
}

/// A [`RunResult`] from any of the four operations' result messages (they share these
/// fields; only `up` has outputs, only a preview a plan).
macro_rules! run_result {
    ($r:ident, $outputs:expr) => {
        run_result!($r, $outputs, None)
    };
    ($r:ident, $outputs:expr, $plan:expr) => {
        RunResult {
            summary: $r.summary,
            permalink: $r.permalink,
            project: $r.project_info,
            outputs: $outputs,
            plan: $plan,
        }
    };
}

/// Reads the server stream a call opened to its result; events are not needed here. A
/// broken connection, on the call or in the stream, says so ([`connection_lost`]).
async fn drain<T>(
    call: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    mut result_of: impl FnMut(T) -> Option<RunResult>,
) -> Result<RunResult, tonic::Status> {
    let mut stream = call.map_err(connection_lost)?.into_inner();
    while let Some(msg) = stream.message().await.map_err(connection_lost)? {
        if let Some(r) = result_of(msg) {
            return Ok(r);
        }
    }
    Err(tonic::Status::aborted(
        "the agent ended the operation without a result (the workspace pod may have stopped)",
    ))
}

/// A call or stream broken under the operation (no answer to pings, a reset) carries only
/// the transport's words ("http2 error"): say what they mean for the Update. An agent's own
/// error comes as a status with neither a transport error beneath nor the words of one
/// (hyper's and h2's: a keep-alive timeout reaches here as a bare "http2 error"), and is kept
/// as it is.
fn connection_lost(st: tonic::Status) -> tonic::Status {
    let beneath = std::error::Error::source(&st);
    let transport_words = matches!(st.message(), "http2 error" | "transport error")
        || st.message().starts_with("h2 protocol error");
    if beneath.is_none() && !transport_words {
        return st;
    }
    let mut why = st.message().to_string();
    if let Some(cause) = beneath.map(fetch::error::chain)
        && !why.ends_with(&cause)
    {
        why = format!("{why}: {cause}");
    }
    tonic::Status::unavailable(format!(
        "the connection to the workspace's agent was lost during the operation ({}); its \
         outcome is unknown: the agent interrupts an operation whose caller is gone, and the \
         Stack retries",
        why.trim_start_matches(": ")
    ))
}

/// What an operation's stream told besides its result, kept whatever the result.
#[derive(Debug, Default)]
pub struct Observed {
    /// What the agent did first about an update cut off earlier.
    pub recovered: Vec<pb::Recovery>,
    /// The resources changed, or (preview, preview-only refresh) to be changed.
    pub changes: changes::Changes,
}

/// Runs the Update's operation through an agent (ours or PKO's: the interop test drives PKO's
/// Go agent with it) and reads the stream to its result, taking in what it says on the way.
pub async fn run_operation(
    agent: &mut connect::AgentClient,
    u: &Update,
    plan: Option<Vec<u8>>,
    seen: &mut Observed,
) -> Result<RunResult, tonic::Status> {
    let s = &u.spec;
    let t = s.update_type.unwrap_or(UpdateType::Up);
    match t {
        UpdateType::Preview => {
            let req = pb::PreviewRequest {
                parallel: s.parallel,
                message: s.message.clone(),
                expect_no_changes: s.expect_no_changes,
                replace: s.replace.clone().unwrap_or_default(),
                target: s.target.clone().unwrap_or_default(),
                target_dependents: s.target_dependents,
                policy_pack: vec![],
                refresh: s.refresh,
                save_plan: s.save_plan,
            };
            drain(agent.preview(req).await, |m| match m.response {
                Some(pb::preview_stream::Response::Event(e)) => {
                    seen.changes.observe(&e);
                    None
                }
                Some(pb::preview_stream::Response::Result(r)) => Some(run_result!(r, None, r.plan)),
                _ => None,
            })
            .await
        }
        UpdateType::Up => {
            let req = pb::UpRequest {
                parallel: s.parallel,
                message: s.message.clone(),
                expect_no_changes: s.expect_no_changes,
                replace: s.replace.clone().unwrap_or_default(),
                target: s.target.clone().unwrap_or_default(),
                target_dependents: s.target_dependents,
                policy_pack: vec![],
                refresh: s.refresh,
                continue_on_error: s.continue_on_error,
                pending_operations: s.pending_operations.map(|p| p.to_proto() as i32),
                plan,
            };
            drain(agent.up(req).await, |m| match m.response {
                Some(pb::up_stream::Response::Event(e)) => {
                    seen.changes.observe(&e);
                    None
                }
                Some(pb::up_stream::Response::Result(r)) => Some(run_result!(r, Some(r.outputs))),
                Some(pb::up_stream::Response::Recovery(r)) => {
                    seen.recovered.push(r);
                    None
                }
                _ => None,
            })
            .await
        }
        UpdateType::Refresh => {
            let req = pb::RefreshRequest {
                parallel: s.parallel,
                message: s.message.clone(),
                expect_no_changes: s.expect_no_changes,
                target: s.target.clone().unwrap_or_default(),
                run_program: s.run_program,
                preview_only: s.preview_only,
            };
            drain(agent.refresh(req).await, |m| match m.response {
                Some(pb::refresh_stream::Response::Event(e)) => {
                    seen.changes.observe(&e);
                    None
                }
                Some(pb::refresh_stream::Response::Result(r)) => Some(run_result!(r, None)),
                _ => None,
            })
            .await
        }
        UpdateType::Destroy => {
            let req = pb::DestroyRequest {
                parallel: s.parallel,
                message: s.message.clone(),
                target: s.target.clone().unwrap_or_default(),
                target_dependents: s.target_dependents,
                refresh: s.refresh,
                continue_on_error: s.continue_on_error,
                remove: s.remove,
                run_program: s.run_program,
                pending_operations: s.pending_operations.map(|p| p.to_proto() as i32),
            };
            drain(agent.destroy(req).await, |m| match m.response {
                Some(pb::destroy_stream::Response::Event(e)) => {
                    seen.changes.observe(&e);
                    None
                }
                Some(pb::destroy_stream::Response::Result(r)) => Some(run_result!(r, None)),
                Some(pb::destroy_stream::Response::Recovery(r)) => {
                    seen.recovered.push(r);
                    None
                }
                _ => None,
            })
            .await
        }
        UpdateType::Unsupported => Err(unsupported_type()),
    }
}

/// What an Update whose `spec.type` is none of PKO's four fails with (before any call).
fn unsupported_type() -> tonic::Status {
    tonic::Status::invalid_argument(
        "spec.type must be one of preview, up, destroy or refresh; nothing was run",
    )
}

/// The Stack controller's finalizer on an Update, which keeps a finished Update until its
/// result is absorbed into the Stack. Owned by its own field manager, so that removing it (an
/// empty apply) leaves anyone else's finalizers alone.
pub async fn hold(api: &Api<Update>, name: &str, present: bool) -> Result<(), kube::Error> {
    let finalizers: Vec<&str> = if present {
        vec![finalizer::STACK]
    } else {
        vec![]
    };
    let body = serde_json::json!({
        "apiVersion": "auto.pulumi.com/v1alpha1",
        "kind": "Update",
        "metadata": {"name": name, "finalizers": finalizers},
    });
    match api
        .patch(
            name,
            &PatchParams::apply(field_manager::STACK_FINALIZER),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn held(u: &Update) -> bool {
    u.finalizers().iter().any(|f| f == finalizer::STACK)
}

/// The Stack that will absorb this Update's result: its controller owner, if that Stack still
/// exists under the same uid. A Stack deleted with its finalizers stripped, or deleted and
/// created again under the same name, will never absorb it.
async fn absorbing_stack(ctx: &Context, u: &Update) -> Result<Option<Stack>, Error> {
    let Some(owner) = u
        .owner_references()
        .iter()
        .find(|o| o.kind == "Stack" && o.controller == Some(true))
    else {
        return Ok(None);
    };
    let stacks: Api<Stack> =
        Api::namespaced(ctx.client.clone(), &u.namespace().unwrap_or_default());
    Ok(stacks
        .get_opt(&owner.name)
        .await?
        .filter(|s| s.uid().as_deref() == Some(owner.uid.as_str())))
}

async fn save(api: &Api<Update>, name: &str, draft: &Draft) -> Result<(), Error> {
    write_status(api, name, draft).await?;
    Ok(())
}

/// Whether the Update CRD takes our status fields. A PKO user who switches keeps PKO's CRDs
/// (its chart's, or its quickstart's), which do not declare them, and server-side apply
/// refuses a field the schema does not declare ("field not declared in schema"); then they
/// are left out, from that write on, until the operator restarts.
static STATUS_ADDITIONS: AtomicBool = AtomicBool::new(true);

fn undeclared(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.message.contains("field not declared in schema"))
}

/// Applies the Update's status: with our fields while the CRD takes them.
async fn write_status(api: &Api<Update>, name: &str, draft: &Draft) -> Result<Update, kube::Error> {
    if STATUS_ADDITIONS.load(Ordering::Relaxed) {
        match apply_status(api, name, field_manager::UPDATE_STATUS, draft.body(true)).await {
            Err(e) if undeclared(&e) => {
                STATUS_ADDITIONS.store(false, Ordering::Relaxed);
                warn!(error = %e, "the Update CRD lacks this operator's status fields (PKO's CRDs?); writing PKO's fields only: install config/crd for status.changes and update plans");
            }
            other => return other,
        }
    }
    apply_status(api, name, field_manager::UPDATE_STATUS, draft.body(false)).await
}

pub async fn reconcile(u: Arc<Update>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = u.namespace().unwrap_or_default();
    let name = u.name_any();
    let api: Api<Update> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh, not cached: a stale status could make a finished run look interrupted.
    let Some(u) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let mut draft = Draft::new(&u);
    let mut seen = plan::Seen {
        deleting: u.meta().deletion_timestamp.is_some(),
        held: held(&u),
        complete: draft.conditions.is_true(condition::COMPLETE),
        progressing: draft.conditions.is_true(condition::PROGRESSING),
        absorbed_later: None,
    };
    if plan::needs_stack(&seen) {
        seen.absorbed_later = Some(absorbing_stack(&ctx, &u).await?.is_some());
    }
    match plan::plan(&seen) {
        Plan::Release { cancel } => {
            info!("the Stack of this deleted Update is gone; releasing its finalizer");
            if cancel {
                draft.failed(reason::CANCELED, "the update was deleted before it ran");
                save(&api, &name, &draft).await?;
            }
            hold(&api, &name, false).await?;
            Ok(Action::await_change())
        }
        Plan::Expire => expire(&u, &ctx, &api, &draft).await,
        Plan::Abort => {
            draft.failed(
                reason::ABORTED,
                "the operator restarted while the update was running; its outcome is unknown",
            );
            unmark_after_abort(&ctx, &u).await?;
            save(&api, &name, &draft).await?;
            Ok(Action::await_change())
        }
        // (PKO also cancels Updates without a controller owner; here an Update made by hand,
        // with no owner at all, runs like any other.)
        Plan::Cancel => {
            draft.failed(reason::CANCELED, "the update was deleted before it ran");
            save(&api, &name, &draft).await?;
            Ok(Action::await_change())
        }
        Plan::Run => match connect_agent(&ctx, &u).await {
            Ok((ws, agent)) => execute(&ctx, &api, &u, draft, &ws, agent).await,
            Err(Halt::Stop(b)) => {
                draft.blocked(b.reason, &b.message);
                save(&api, &name, &draft).await?;
                Ok(b.retry.map_or_else(Action::await_change, Action::requeue))
            }
            Err(Halt::Failed(e)) => Err(e),
        },
    }
}

/// How getting to the agent ends early.
type Halt = runtime::Halt<Blocked>;

/// The Update's Workspace, ready, and a connection to its agent.
async fn connect_agent(
    ctx: &Context,
    u: &Update,
) -> Result<(Workspace, connect::AgentClient), Halt> {
    let Some(ws_name) = u.spec.workspace_name.as_deref().filter(|n| !n.is_empty()) else {
        return Err(Halt::Stop(Blocked::no_workspace_name()));
    };
    let workspaces: Api<Workspace> =
        Api::namespaced(ctx.client.clone(), &u.namespace().unwrap_or_default());
    let Some(ws) = workspaces.get_opt(ws_name).await? else {
        return Err(Halt::Stop(Blocked::no_workspace(ws_name)));
    };
    if !workspace::is_ready(&ws) {
        return Err(Halt::Stop(Blocked::workspace_not_ready(ws_name)));
    }
    // As PKO does: the agent through the workspace's headless Service (cluster DNS), unless
    // WORKSPACE_LOCALHOST says otherwise (an operator run outside the cluster).
    if workspace_ip(ctx, &ws).await?.is_none() {
        return Err(Halt::Stop(Blocked::no_pod_ip()));
    }
    let addr = ctx
        .workspace_localhost
        .clone()
        .unwrap_or_else(|| workspace::desired::service_address(&ws));
    let audience = workspace::desired::audience(&ws);
    let agent = match ctx.tokens.token(&audience).await {
        Ok(t) => connect::dial(&addr, &t, CONNECT_TIMEOUT).await,
        Err(e) => Err(e),
    };
    match agent {
        Ok(a) => Ok((ws, a)),
        Err(e) => {
            let msg = e.to_string();
            ctx.workspace_events
                .publish(&ws, EventType::Warning, event::CONNECTION_FAILURE, &msg)
                .await;
            Err(Halt::Stop(Blocked::unreachable(msg)))
        }
    }
}

/// Runs the operation through `agent` to its end and records the result: conditions, the
/// outputs Secret, an event on the Workspace; then the TTL takes over.
async fn execute(
    ctx: &Context,
    api: &Api<Update>,
    u: &Update,
    mut draft: Draft,
    ws: &Workspace,
    mut agent: connect::AgentClient,
) -> Result<Action, Error> {
    let name = u.name_any();
    let started = super::now_rfc3339();
    draft.start_time = Some(started.clone());
    draft.end_time = None;
    draft.plan = None;
    draft.progressing();
    save(api, &name, &draft).await?;

    let stack = u.spec.stack_name.clone().unwrap_or_default();
    let kind = u.spec.update_type.unwrap_or(UpdateType::Up);
    info!(stack = %stack, kind = outcome::verbs(kind).1, "running the update");
    mark(ctx, u, ws, true).await;
    let plan = match &u.spec.plan {
        Some(want) if kind == UpdateType::Up => {
            let secrets: Api<Secret> =
                Api::namespaced(ctx.client.clone(), &u.namespace().unwrap_or_default());
            match outcome::plan_from(secrets.get_opt(&want.secret_name).await?.as_ref(), want) {
                Ok(p) => Some(p),
                Err(why) => {
                    draft.failed(reason::PLAN_UNAVAILABLE, &why);
                    warn!(error = %why, "the update's plan cannot be used");
                    record(api, &name, &draft).await?;
                    return expire(u, ctx, api, &draft).await;
                }
            }
        }
        _ => None,
    };
    let mut seen = Observed::default();
    let result = operate(&mut agent, u, &stack, plan, &mut seen).await;
    mark(ctx, u, ws, false).await;
    for r in &seen.recovered {
        announce_recovery(ctx, u, &stack, r).await;
    }
    draft.changes(&seen.changes);
    let succeeded = match result {
        Ok(r) => {
            let succeeded = draft.result(
                r.summary.as_ref(),
                r.permalink,
                r.project.as_ref(),
                &started,
            );
            if let Some(outputs) = r.outputs.filter(|o| !o.is_empty())
                && write_outputs(ctx, u, &outputs).await?
            {
                draft.outputs = Some(outcome::outputs_secret_name(&name));
            }
            if let Some(plan) = r.plan {
                draft.plan = Some(write_plan(ctx, u, &plan).await?);
            }
            succeeded
        }
        Err(st) => {
            draft.error(&st);
            warn!(error = %draft.message.as_deref().unwrap_or_default(), "the update failed");
            false
        }
    };
    let (kind_of_event, reason, note) =
        outcome::announcement(kind, &stack, succeeded, draft.message.as_deref());
    ctx.workspace_events
        .publish(ws, kind_of_event, reason, &note)
        .await;
    record(api, &name, &draft).await?;
    expire(u, ctx, api, &draft).await
}

/// Says on the Update, and on the Stack that made it, what was done about an update cut off
/// earlier.
async fn announce_recovery(ctx: &Context, u: &Update, stack: &str, r: &pb::Recovery) {
    let note = outcome::recovery_note(stack, r);
    warn!(stack, "{note}");
    let reason = event::INTERRUPTED_UPDATE_RECOVERED;
    ctx.events
        .publish(u, EventType::Warning, reason, &note)
        .await;
    if let Some(owner) = u.owner_references().iter().find(|o| o.kind == "Stack") {
        let regarding = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: u.namespace(),
            uid: Some(owner.uid.clone()),
            ..Default::default()
        };
        ctx.events
            .publish_ref(regarding, EventType::Warning, reason, &note)
            .await;
    }
}

/// Saves the result of an operation that has run, held through an outage of the API server:
/// lost, the Update would end `Aborted` and the Stack run the same revision again.
async fn record(api: &Api<Update>, name: &str, draft: &Draft) -> Result<(), Error> {
    outage::until_written("the Update's result", outage::PATIENCE, || {
        write_status(api, name, draft)
    })
    .await?;
    Ok(())
}

/// Marks the workspace pod as not to be evicted while `u` runs, or unmarks it. A refusal is
/// logged, never fatal: the update matters more than the mark. The mark is taken off through
/// an outage of the API server: a pod left marked would block node drains for good.
async fn mark(ctx: &Context, u: &Update, ws: &Workspace, on: bool) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ws.namespace().unwrap_or_default());
    let pod = workspace::desired::pod_name(ws);
    let update = u.name_any();
    let patience = if on { Duration::ZERO } else { outage::PATIENCE };
    let set = || guard::set(&pods, &pod, &update, on);
    if let Err(e) = outage::until_written("the eviction guard", patience, set).await {
        warn!(pod = %pod, error = %e, marking = on, "cannot mark the workspace pod as not to be evicted during the update");
    }
}

/// A run cut off by a restart left its pod marked: take the mark off (the Workspace gone,
/// there is no pod to unmark).
async fn unmark_after_abort(ctx: &Context, u: &Update) -> Result<(), Error> {
    let Some(ws_name) = u.spec.workspace_name.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(());
    };
    let workspaces: Api<Workspace> =
        Api::namespaced(ctx.client.clone(), &u.namespace().unwrap_or_default());
    if let Some(ws) = workspaces.get_opt(ws_name).await? {
        mark(ctx, u, &ws, false).await;
    }
    Ok(())
}

/// Selects the Update's stack and runs its operation to the result.
async fn operate(
    agent: &mut connect::AgentClient,
    u: &Update,
    stack: &str,
    plan: Option<Vec<u8>>,
    seen: &mut Observed,
) -> Result<RunResult, tonic::Status> {
    if u.spec.update_type == Some(UpdateType::Unsupported) {
        return Err(unsupported_type());
    }
    agent
        .select_stack(pb::SelectStackRequest {
            stack_name: stack.to_string(),
            create: Some(true),
            secrets_provider: None,
        })
        .await?;
    run_operation(agent, u, plan, seen).await
}

/// Writes the Secret holding the plan a preview saved; returns where it is.
async fn write_plan(
    ctx: &Context,
    u: &Update,
    plan: &[u8],
) -> Result<crate::api::update::PlanRef, Error> {
    let secret = outcome::plan_secret(u, plan);
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &u.namespace().unwrap_or_default());
    let params = PostParams::default();
    let create = || secrets.create(&params, &secret);
    match outage::until_written("the plan Secret", outage::PATIENCE, create).await {
        Ok(_) => {}
        // Already written: this is a retry of the same result.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(crate::api::update::PlanRef {
        id: outcome::plan_id(plan),
        secret_name: outcome::plan_secret_name(&u.name_any()),
    })
}

/// Writes the outputs Secret (owned by the Update's owner, so it outlives the Update until
/// the Stack goes); returns whether there is one. An Update without an owner keeps none.
async fn write_outputs(
    ctx: &Context,
    u: &Update,
    outputs: &std::collections::HashMap<String, pb::OutputValue>,
) -> Result<bool, Error> {
    let Some(owner) = u.controller_owner_ref(&()).map(|mut o| {
        o.controller = None;
        o.block_owner_deletion = None;
        o
    }) else {
        return Ok(false);
    };
    let secret = outcome::outputs_secret(u, owner, outputs);
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &u.namespace().unwrap_or_default());
    let params = PostParams::default();
    let create = || secrets.create(&params, &secret);
    match outage::until_written("the outputs Secret", outage::PATIENCE, create).await {
        Ok(_) => Ok(true),
        // Already written: this is a retry of the same result.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(true),
        Err(e) => Err(e.into()),
    }
}

async fn workspace_ip(ctx: &Context, ws: &Workspace) -> Result<Option<String>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ws.namespace().unwrap_or_default());
    Ok(pods
        .get_opt(&workspace::desired::pod_name(ws))
        .await?
        .and_then(|p| p.status?.pod_ip))
}

/// Deletes a completed Update once its TTL has passed; otherwise wakes up when it will have.
async fn expire(
    u: &Update,
    ctx: &Context,
    api: &Api<Update>,
    draft: &Draft,
) -> Result<Action, Error> {
    let Some(ttl) = u.spec.ttl_after_completed.as_deref() else {
        return Ok(Action::await_change());
    };
    if u.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ttl = match duration::parse(ttl) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "ignoring ttlAfterCompleted");
            return Ok(Action::await_change());
        }
    };
    let done = draft
        .conditions
        .get(condition::COMPLETE)
        .map(|c| c.last_transition_time.0)
        .unwrap_or_else(jiff::Timestamp::now);
    if let Some(wait) = ttl_remaining(ttl, done, jiff::Timestamp::now()) {
        return Ok(Action::requeue(wait + Duration::from_millis(100)));
    }
    ctx.events
        .publish(
            u,
            EventType::Normal,
            event::UPDATE_EXPIRED,
            "ttl expired and was deleted",
        )
        .await;
    match api.delete(&u.name_any(), &Default::default()).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// How long until a completed Update's TTL ends; `None` once it has. Saturating throughout:
/// a TTL of years, a completion time in the future (clock skew) or far in the past never
/// overflows.
fn ttl_remaining(ttl: Duration, done: jiff::Timestamp, now: jiff::Timestamp) -> Option<Duration> {
    let elapsed = Duration::try_from(now.duration_since(done)).unwrap_or(Duration::ZERO);
    let remaining = ttl.saturating_sub(elapsed);
    (!remaining.is_zero()).then_some(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_broken_beneath_says_the_connection_was_lost_and_an_agent_error_stays() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "keep-alive timed out",
        )));
        let lost = connection_lost(broken);
        assert_eq!(lost.code(), tonic::Code::Unavailable);
        assert!(
            lost.message()
                .starts_with("the connection to the workspace's agent was lost")
                && lost.message().contains("keep-alive timed out"),
            "{}",
            lost.message()
        );
        let agent = tonic::Status::unknown("failed to run update: exit status 255");
        assert_eq!(connection_lost(agent.clone()).message(), agent.message());
        let shutting = tonic::Status::unavailable("the agent is shutting down");
        assert_eq!(
            connection_lost(shutting.clone()).message(),
            shutting.message()
        );
        // A keep-alive timeout, as tonic hands it over: hyper's words and nothing beneath.
        let timed_out = connection_lost(tonic::Status::unavailable("http2 error"));
        assert!(
            timed_out
                .message()
                .starts_with("the connection to the workspace's agent was lost during the operation (http2 error)"),
            "{}",
            timed_out.message()
        );
    }

    #[test]
    fn the_ttl_countdown_never_overflows() {
        let t = |s: i64| jiff::Timestamp::from_second(s).expect("t");
        let h = Duration::from_secs(3600);
        assert_eq!(
            ttl_remaining(h, t(1_000), t(1_600)),
            Some(Duration::from_secs(3000))
        );
        assert_eq!(ttl_remaining(h, t(1_000), t(1_000 + 3600)), None);
        assert_eq!(ttl_remaining(h, t(1_000), t(9_000)), None);
        // Completed "in the future" (skew): the whole TTL is left.
        assert_eq!(ttl_remaining(h, t(9_000), t(1_000)), Some(h));
        // Absurd values saturate instead of panicking.
        assert!(ttl_remaining(Duration::MAX, t(0), t(1)).is_some());
        assert_eq!(
            ttl_remaining(h, jiff::Timestamp::MIN, jiff::Timestamp::MAX),
            None
        );
    }
}
