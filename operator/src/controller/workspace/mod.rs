//! The Workspace controller: applies the workspace Service and StatefulSet, follows the pod
//! until its agent answers, initializes it once (version check, install, stack selection and
//! configuration; a later change of the config alone is applied in place, or by a new pod when
//! it cannot be), and reports every step in the Ready condition. A failed `fetch` init
//! container is reported as `FetchFailed` with the container's own message.

pub mod desired;
mod init;
pub mod readiness;
pub mod reconfigure;
pub mod stop;
mod wiring;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::runtime::conditions::{Conditions, FALSE, TRUE, UNKNOWN};
use super::runtime::connect::{self, Tokens};
use super::runtime::events::{EventType, Recorder};
use super::runtime::metrics::Metrics;
use super::runtime::{cache, status_queue};
use super::settings::Settings;
use super::{Error, update};
use crate::api::names::{condition, event, field_manager, label, workspace_reason as reason};
use crate::api::workspace::{Workspace, WorkspaceStatus};
use reconfigure::{Applied, Setup};
use stop::{Announce, Halt, Stop};

pub const CONTROLLER: &str = "workspace";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub use wiring::run;

/// What the Workspace controller keeps between reconciles.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Tokens for calling the agents.
    pub tokens: Arc<Tokens>,
    pub events: Arc<Recorder>,
    /// Watch-fed copies of the owned objects (empty until the controller runs).
    pub statefulsets: OnceLock<Store<StatefulSet>>,
    pub services: OnceLock<Store<Service>>,
    pub pods: OnceLock<Store<Pod>>,
    /// What was last applied to the owned objects.
    pub applied: cache::Applied,
    /// The last status written per Workspace, and the queue that writes them.
    pub statuses: Arc<cache::Statuses>,
    pub status_queue: status_queue::StatusQueue,
}

impl super::runtime::Measured for Context {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        tokens: Arc<Tokens>,
        events: Arc<Recorder>,
    ) -> Context {
        let statuses = Arc::new(cache::Statuses::default());
        Context {
            status_queue: status_queue::StatusQueue::new(
                status_writer(client.clone()),
                Arc::clone(&statuses),
            ),
            statuses,
            client,
            settings,
            metrics,
            tokens,
            events,
            statefulsets: OnceLock::new(),
            services: OnceLock::new(),
            pods: OnceLock::new(),
            applied: cache::Applied::default(),
        }
    }
}

/// The status this reconcile will write.
pub(crate) struct Draft {
    pub conditions: Conditions,
    pub address: Option<String>,
    pub pulumi_version: Option<String>,
    generation: Option<i64>,
    uid: String,
    /// The status on the server as far as this reconcile knows.
    saved: Option<WorkspaceStatus>,
}

impl Draft {
    fn new(ws: &Workspace) -> Draft {
        let status = ws.status.clone().unwrap_or_default();
        let mut conditions = Conditions::from(status.conditions.as_ref());
        if conditions.get(condition::READY).is_none() {
            conditions.set(
                condition::READY,
                UNKNOWN,
                "Unknown",
                "",
                ws.meta().generation,
            );
        }
        Draft {
            conditions,
            address: status.address,
            pulumi_version: status.pulumi_version,
            generation: ws.meta().generation,
            uid: ws.uid().unwrap_or_default(),
            saved: ws.status.clone(),
        }
    }

    pub fn ready(&mut self, status: &str, reason: &str, message: &str) -> bool {
        self.conditions
            .set(condition::READY, status, reason, message, self.generation)
    }

    pub fn stalled(&mut self, reason: &str, message: &str) {
        self.conditions
            .set(condition::STALLED, TRUE, reason, message, self.generation);
    }

    /// Hands the status to the status queue, unless it would change nothing. The memo
    /// records it first: the queue writes it, or forgets it when it cannot.
    pub fn save(&mut self, ctx: &Context, name: &str, namespace: &str) {
        let status = Some(WorkspaceStatus {
            observed_generation: self.generation,
            address: Some(self.address.clone().unwrap_or_default()),
            pulumi_version: self.pulumi_version.clone(),
            conditions: Some(self.conditions.0.clone()),
        });
        if ctx.statuses.unchanged(&self.uid, &self.saved, &status) {
            return;
        }
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        super::prune_nulls(&mut body);
        ctx.statuses.record(&self.uid, &status);
        ctx.status_queue.submit(status_queue::Job {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: self.uid.clone(),
            status: body,
        });
        self.saved = status;
    }
}

/// How the status queue writes a Workspace status: a JSON patch of the status subresource
/// that first tests the uid, so it is refused (422) if the name now belongs to another object.
pub fn status_writer(client: kube::Client) -> status_queue::Write {
    Arc::new(move |job: &status_queue::Job| {
        let api: Api<Workspace> = Api::namespaced(client.clone(), &job.namespace);
        let name = job.name.clone();
        let patch = serde_json::from_value::<json_patch::Patch>(json!([
            {"op": "test", "path": "/metadata/uid", "value": job.uid},
            {"op": "add", "path": "/status", "value": job.status},
        ]));
        Box::pin(async move {
            let patch = patch.map_err(kube::Error::SerdeError)?;
            let params = kube::api::PatchParams {
                field_manager: Some(field_manager::WORKSPACE_STATUS.into()),
                ..Default::default()
            };
            api.patch_status(&name, &params, &kube::api::Patch::<()>::Json(patch))
                .await
                .map(|_| ())
        })
    })
}

/// Whether a Workspace is ready for Updates: processed at its generation and Ready.
pub fn is_ready(ws: &Workspace) -> bool {
    let Some(status) = ws.status.as_ref() else {
        return false;
    };
    ws.meta().deletion_timestamp.is_none()
        && status.observed_generation == ws.meta().generation
        && Conditions::from(status.conditions.as_ref()).is_true(condition::READY)
}

/// One reconcile of one Workspace: what it writes, and the events that go with it.
struct Run<'a> {
    ctx: &'a Context,
    ws: &'a Workspace,
    ns: String,
    name: String,
    draft: Draft,
}

impl Run<'_> {
    fn save(&mut self) {
        self.draft.save(self.ctx, &self.name, &self.ns);
    }

    async fn warn(&self, reason: &str, message: &str) {
        warn!(reason, message, "workspace not ready");
        self.ctx
            .events
            .publish(self.ws, EventType::Warning, reason, message)
            .await;
    }

    async fn announce(&self, announce: Announce, changed: bool, message: &str) {
        match announce {
            Announce::Always(r) => self.warn(r, message).await,
            Announce::OnChange(r) if changed => self.warn(r, message).await,
            Announce::OnChange(_) | Announce::Never => {}
        }
    }

    /// Ends the reconcile for `stop`: the conditions, the event and the requeue, decided
    /// here alone.
    async fn stop(&mut self, stop: Stop) -> Result<Action, Error> {
        let action = match stop {
            Stop::NotReady {
                reason: why,
                message,
                announce,
                unreachable,
                retry,
            } => {
                if unreachable {
                    self.draft.address = None;
                }
                let changed = self.draft.ready(FALSE, &why, &message);
                self.announce(announce, changed, &message).await;
                retry.map_or_else(Action::await_change, Action::requeue)
            }
            Stop::Stalled {
                reason: why,
                message,
                announce,
            } => {
                let changed = self.draft.ready(FALSE, why, &message);
                self.announce(announce, changed, &message).await;
                self.draft.stalled(why, &message);
                Action::await_change()
            }
            Stop::AgentFailed {
                reason: why,
                message,
                call,
            } => {
                self.warn(event::CONNECTION_FAILURE, &message).await;
                self.draft.ready(FALSE, &why, &message);
                self.save();
                return Err(Error::Agent {
                    call,
                    reason: why,
                    message,
                });
            }
            Stop::Recheck => return Ok(Action::requeue(stop::RECHECK)),
        };
        self.save();
        Ok(action)
    }
}

pub async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut run = Run {
        ctx: &ctx,
        ws: &ws,
        ns: ws.namespace().unwrap_or_default(),
        name: ws.name_any(),
        draft: Draft::new(&ws),
    };
    if ws.meta().deletion_timestamp.is_some() {
        run.draft
            .ready(FALSE, reason::DELETING, "Workspace is being deleted");
        run.save();
        forget_workspace(&ctx, &ws);
        return Ok(Action::await_change());
    }
    match reconcile_steps(&mut run).await {
        Ok(()) => {
            run.draft.ready(TRUE, reason::SUCCEEDED, "");
            run.save();
            Ok(Action::await_change())
        }
        Err(Halt::Stop(stop)) => run.stop(stop).await,
        Err(Halt::Failed(e)) => Err(e),
    }
}

/// The reconcile in order: apply the StatefulSet and the Service, see where the pod stands,
/// dial its agent, initialize the pod once. Every way it ends early is a [`Halt`].
async fn reconcile_steps(run: &mut Run<'_>) -> Result<(), Halt> {
    let (ctx, ws, ns) = (run.ctx, run.ws, run.ns.clone());
    let sts = desired::statefulset(ws, &ctx.settings).map_err(|e| Stop::Stalled {
        reason: reason::SPEC_INVALID,
        message: e.to_string(),
        announce: Announce::OnChange(reason::SPEC_INVALID),
    })?;
    let hash = desired::revision_hash(ws);
    let sts = match apply_owned(ctx, ws, &sts).await {
        Err(kube::Error::Api(e)) if stop::immutable_field_changed(&e) => {
            replace_statefulset(ctx, ws).await?;
            return Err(stop::replaced_statefulset().into());
        }
        applied => applied?,
    };
    if run.draft.conditions.reason(condition::STALLED) == Some(reason::SPEC_INVALID) {
        run.draft.conditions.remove(condition::STALLED);
    }

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_name = desired::pod_name(ws);
    let stacks = Applied::of(ws);
    let setup = pod_setup(ctx, ws, (&pods, &pod_name), (&sts, &hash), &stacks).await?;

    // As PKO does: the agent through the workspace's headless Service, which cluster DNS
    // resolves to the pod (WORKSPACE_LOCALHOST overrides it for an operator run outside the
    // cluster).
    let addr = ctx
        .settings
        .workspace_localhost
        .clone()
        .unwrap_or_else(|| desired::service_address(ws));
    let agent = match ctx.tokens.token(&desired::audience(ws)).await {
        Ok(t) => connect::dial(&addr, &t, CONNECT_TIMEOUT).await,
        Err(e) => Err(e),
    };
    let mut agent = agent.map_err(|e| stop::connection_failed(e.to_string()))?;
    run.draft.address = Some(desired::service_address(ws));

    let (event_reason, note) = match setup {
        // (A Restart never comes back: pod_setup ends the reconcile with it.)
        Setup::Current | Setup::Restart(_) => return Ok(()),
        Setup::Initialize => {
            init::initialize(run, &mut agent).await?;
            (
                event::INITIALIZED,
                format!("Initialized workspace pod \"{pod_name}\""),
            )
        }
        Setup::Reconfigure => {
            init::reconfigure(run, &mut agent).await?;
            (
                event::RECONFIGURED,
                format!(
                    "Applied the new stack configuration to workspace pod \"{pod_name}\" without restarting it"
                ),
            )
        }
    };
    let patch = json!({"metadata": {"annotations": {
        label::INITIALIZED: "true",
        label::INITIALIZED_STACKS: stacks.annotation(),
    }}});
    let params = kube::api::PatchParams {
        field_manager: Some(field_manager::OPERATOR.into()),
        ..Default::default()
    };
    pods.patch(&pod_name, &params, &kube::api::Patch::Merge(&patch))
        .await?;
    info!(pod = %pod_name, reason = event_reason, "workspace pod set up");
    ctx.events
        .publish(ws, EventType::Normal, event_reason, &note)
        .await;
    Ok(())
}

/// Where the pod stands and what it needs to carry the Workspace's stacks; a pod that must be
/// made again is deleted here (after any update running on it).
async fn pod_setup(
    ctx: &Context,
    ws: &Workspace,
    (pods, pod_name): (&Api<Pod>, &str),
    (sts, hash): (&StatefulSet, &str),
    stacks: &Applied,
) -> Result<Setup, Halt> {
    let ns = ws.namespace().unwrap_or_default();
    let cached = match ctx.pods.get() {
        Some(store) => store
            .get(&ObjectRef::new(pod_name).within(&ns))
            .map(|p| (*p).clone()),
        None => pods.get_opt(pod_name).await?,
    };
    let pod = stop::standing(readiness::pod_state(sts, cached.as_ref(), hash))?;
    let setup = setup_of(pod.initialized, cached.as_ref(), stacks);
    if setup == Setup::Current {
        return Ok(setup);
    }
    // About to set the pod up: the cache may not show yet that an earlier reconcile already
    // did (its annotations), and doing it twice would announce it twice.
    let fresh = pods.get_opt(pod_name).await?;
    let pod = stop::standing(readiness::pod_state(sts, fresh.as_ref(), hash))?;
    let setup = setup_of(pod.initialized, fresh.as_ref(), stacks);
    if let Setup::Restart(why) = &setup {
        // An update running there (a Workspace changed under it by hand) ends first; a mark
        // left by one that is over (or gone) holds nothing.
        if let Some(update) = fresh.as_ref().and_then(update::guard::holder)
            && running(ctx, &ns, &update).await?
        {
            return Err(stop::restart_after(&update, why).into());
        }
        return Err(restart_pod(ctx, ws, pods, pod_name, why).await?.into());
    }
    Ok(setup)
}

/// Whether Update `name` exists and has not completed.
async fn running(ctx: &Context, ns: &str, name: &str) -> Result<bool, Error> {
    let updates: Api<crate::api::update::Update> = Api::namespaced(ctx.client.clone(), ns);
    Ok(updates
        .get_opt(name)
        .await?
        .is_some_and(|u| !update::is_complete(&u)))
}

/// How the pod is brought to the Workspace's stacks, from what it records.
fn setup_of(initialized: bool, pod: Option<&Pod>, stacks: &Applied) -> Setup {
    let applied = pod.and_then(|p| Applied::on(p.metadata.annotations.as_ref()));
    reconfigure::setup(initialized, applied.as_ref(), stacks)
}

/// Deletes a pod whose configuration cannot be changed in place; its StatefulSet makes a new
/// one, initialized from the start. Said by a `Restarting` event.
async fn restart_pod(
    ctx: &Context,
    ws: &Workspace,
    pods: &Api<Pod>,
    pod_name: &str,
    why: &str,
) -> Result<Stop, Error> {
    match pods.delete(pod_name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let message = format!("Restarting workspace pod \"{pod_name}\": {why}");
    info!(pod = %pod_name, why, "restarting the workspace pod");
    ctx.events
        .publish(ws, EventType::Normal, event::RESTARTING, &message)
        .await;
    Ok(stop::restarting(message))
}

/// Applies the workspace's StatefulSet, then its Service (when either differs from what was
/// applied last); returns the StatefulSet as the server has it.
async fn apply_owned(
    ctx: &Context,
    ws: &Workspace,
    sts: &StatefulSet,
) -> Result<StatefulSet, kube::Error> {
    let ns = ws.namespace().unwrap_or_default();
    let obj_name = desired::object_name(ws);
    // The StatefulSet first: it is what carries a new source to the pod.
    let current = cache::cached(&ctx.statefulsets, &ns, &obj_name);
    let applied = ctx
        .applied
        .apply(
            &Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns),
            &ns,
            &obj_name,
            field_manager::OPERATOR,
            sts,
            current.as_deref(),
        )
        .await?;
    let current = cache::cached(&ctx.services, &ns, &obj_name);
    ctx.applied
        .apply(
            &Api::<Service>::namespaced(ctx.client.clone(), &ns),
            &ns,
            &obj_name,
            field_manager::OPERATOR,
            &desired::service(ws),
            current.as_deref(),
        )
        .await?;
    Ok(applied)
}

/// Deletes the workspace's StatefulSet (its pod goes with it), so that the next reconcile
/// creates it with the fields an update cannot change.
async fn replace_statefulset(ctx: &Context, ws: &Workspace) -> Result<(), kube::Error> {
    let ns = ws.namespace().unwrap_or_default();
    let obj_name = desired::object_name(ws);
    warn!(statefulset = %obj_name, "replacing the workspace statefulset to change a field an update cannot change");
    let api = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns);
    match api.delete(&obj_name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e),
    }
    ctx.applied.forget::<StatefulSet>(&ns, &obj_name);
    Ok(())
}

/// Drops what this process remembers of a Workspace that is gone or going.
fn forget_workspace(ctx: &Context, ws: &Workspace) {
    let uid = ws.uid().unwrap_or_default();
    let ns = ws.namespace().unwrap_or_default();
    let obj_name = desired::object_name(ws);
    ctx.statuses.forget(&uid);
    ctx.events.forget(&uid);
    ctx.applied.forget::<StatefulSet>(&ns, &obj_name);
    ctx.applied.forget::<Service>(&ns, &obj_name);
}
