//! The Workspace controller: applies the workspace Service and StatefulSet, follows the pod
//! until its agent answers, initializes it once (version check, install, stack selection and
//! configuration), and reports every step in the Ready condition. A failed `fetch` init
//! container is reported as `FetchFailed` with the container's own message.

pub mod desired;
mod init;
pub mod readiness;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::conditions::{Conditions, FALSE, TRUE, UNKNOWN};
use super::events::EventType;
use super::{Context, Error, cache, connect, status_queue};
use crate::api::names::{condition, event, field_manager, label, workspace_reason as reason};
use crate::api::workspace::{Workspace, WorkspaceStatus};
use readiness::PodState;

pub const CONTROLLER: &str = "workspace";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_RETRY: Duration = Duration::from_secs(5);

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
        ctx.workspace_statuses.submit(status_queue::Job {
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

pub async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _measure = ctx.metrics.reconcile(CONTROLLER);
    let ns = ws.namespace().unwrap_or_default();
    let name = ws.name_any();
    let mut draft = Draft::new(&ws);

    if ws.meta().deletion_timestamp.is_some() {
        draft.ready(FALSE, reason::DELETING, "Workspace is being deleted");
        draft.save(&ctx, &name, &ns);
        forget_workspace(&ctx, &ws);
        return Ok(Action::await_change());
    }

    let svc = desired::service(&ws);
    let sts = match desired::statefulset(&ws, &ctx.settings) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            if draft.ready(FALSE, reason::SPEC_INVALID, &msg) {
                ctx.workspace_events
                    .publish(ws.as_ref(), EventType::Warning, reason::SPEC_INVALID, &msg)
                    .await;
            }
            draft.stalled(reason::SPEC_INVALID, &msg);
            draft.save(&ctx, &name, &ns);
            return Ok(Action::await_change());
        }
    };
    let hash = desired::revision_hash(&ws);
    let obj_name = desired::object_name(&ws);
    // The StatefulSet first: it is what carries a new source to the pod.
    let current = cache::cached(&ctx.caches.statefulsets, &ns, &obj_name);
    let sts = ctx
        .applied
        .apply(
            &Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns),
            &ns,
            &obj_name,
            field_manager::OPERATOR,
            &sts,
            current.as_deref(),
        )
        .await?;
    let current = cache::cached(&ctx.caches.services, &ns, &obj_name);
    ctx.applied
        .apply(
            &Api::<Service>::namespaced(ctx.client.clone(), &ns),
            &ns,
            &obj_name,
            field_manager::OPERATOR,
            &svc,
            current.as_deref(),
        )
        .await?;
    if draft.conditions.reason(condition::STALLED) == Some(reason::SPEC_INVALID) {
        draft.conditions.remove(condition::STALLED);
    }

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_name = desired::pod_name(&ws);
    let mut pod = match ctx.caches.pods.get() {
        Some(store) => store
            .get(&ObjectRef::new(&pod_name).within(&ns))
            .map(|p| (*p).clone()),
        None => pods.get_opt(&pod_name).await?,
    };
    let mut state = readiness::pod_state(&sts, pod.as_ref(), &hash);
    if matches!(
        state,
        PodState::Available {
            initialized: false,
            ..
        }
    ) {
        // About to initialize: the cache may not show yet that an earlier reconcile already
        // did (its annotation), and doing it twice would announce it twice.
        pod = pods.get_opt(&pod_name).await?;
        state = readiness::pod_state(&sts, pod.as_ref(), &hash);
    }
    let (ip, initialized) = match state {
        PodState::FetchFailed(msg) => {
            draft.address = None;
            if draft.ready(FALSE, reason::FETCH_FAILED, &msg) {
                warn!(workspace = %name, namespace = %ns, message = %msg, "the fetch init container failed");
                ctx.workspace_events
                    .publish(ws.as_ref(), EventType::Warning, event::FETCH_FAILED, &msg)
                    .await;
            }
            draft.save(&ctx, &name, &ns);
            return Ok(Action::await_change());
        }
        PodState::Rolling => {
            draft.address = None;
            draft.ready(
                FALSE,
                reason::ROLLING_UPDATE,
                "Waiting for the statefulset to be updated",
            );
            draft.save(&ctx, &name, &ns);
            return Ok(Action::await_change());
        }
        PodState::Waiting(why) => {
            draft.address = None;
            let mut msg = "Waiting for the workspace pod to be available".to_string();
            if !why.is_empty() {
                msg.push_str(": ");
                msg.push_str(&why);
            }
            draft.ready(FALSE, reason::WAITING_FOR_REPLICAS, &msg);
            draft.save(&ctx, &name, &ns);
            return Ok(Action::await_change());
        }
        PodState::Stale => return Ok(Action::requeue(Duration::from_secs(2))),
        PodState::Available { ip, initialized } => (ip, initialized),
    };

    // As PKO does: the agent through the workspace's headless Service, which cluster DNS
    // resolves to the pod (WORKSPACE_LOCALHOST overrides it for an operator run outside the
    // cluster). Only a pod with an IP is in the Service's endpoints.
    if ip.is_none() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let addr = ctx
        .settings
        .workspace_localhost
        .clone()
        .unwrap_or_else(|| desired::service_address(&ws));
    let token = ctx.tokens.token(&desired::audience(&ws)).await;
    let agent = match token {
        Ok(t) => connect::dial(&addr, &t, CONNECT_TIMEOUT).await,
        Err(e) => Err(e),
    };
    let mut agent = match agent {
        Ok(a) => a,
        Err(e) => {
            let msg = e.to_string();
            ctx.workspace_events
                .publish(
                    ws.as_ref(),
                    EventType::Warning,
                    event::CONNECTION_FAILURE,
                    &msg,
                )
                .await;
            draft.address = None;
            draft.ready(FALSE, reason::CONNECTION_FAILED, &msg);
            draft.save(&ctx, &name, &ns);
            return Ok(Action::requeue(CONNECT_RETRY));
        }
    };
    draft.address = Some(desired::service_address(&ws));

    if !initialized {
        match init::initialize(&ctx, &ws, &mut agent, &mut draft).await? {
            init::Outcome::Done => {}
            init::Outcome::Stop(action) => return Ok(action),
        }
        let patch = json!({"metadata": {"annotations": {label::INITIALIZED: "true"}}});
        pods.patch(
            &pod_name,
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
        info!(workspace = %name, namespace = %ns, pod = %pod_name, "workspace pod initialized");
        ctx.workspace_events
            .publish(
                ws.as_ref(),
                EventType::Normal,
                event::INITIALIZED,
                &format!("Initialized workspace pod \"{pod_name}\""),
            )
            .await;
    }
    draft.ready(TRUE, reason::SUCCEEDED, "");
    draft.save(&ctx, &name, &ns);
    Ok(Action::await_change())
}

fn error_policy(_ws: Arc<Workspace>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = %err, "workspace reconcile failed");
    ctx.metrics.failure(CONTROLLER, err.kind());
    Action::requeue(Duration::from_secs(5))
}

/// Drops what this process remembers of a Workspace that is gone or going.
fn forget_workspace(ctx: &Context, ws: &Workspace) {
    let uid = ws.uid().unwrap_or_default();
    let ns = ws.namespace().unwrap_or_default();
    let obj_name = desired::object_name(ws);
    ctx.statuses.forget(&uid);
    ctx.workspace_events.forget(&uid);
    ctx.applied.forget::<StatefulSet>(&ns, &obj_name);
    ctx.applied.forget::<Service>(&ns, &obj_name);
}

/// Runs the controller until `shutdown` resolves (then lets running reconciles finish).
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let selector = format!("{}={}", label::AUTO_COMPONENT, label::COMPONENT_WORKSPACE);
    let (reader, writer) = reflector::store();
    let forget = Arc::clone(&ctx);
    let workspaces = cache::on_delete(
        watcher(
            Api::<Workspace>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(crate::controller::cache::slim)
        .reflect(writer),
        move |ws: &Workspace| forget_workspace(&forget, ws),
    )
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    // The owned objects are kept in stores, so a reconcile reads them instead of asking, and
    // applies them only when they differ from what it applied last.
    let owned = watcher::Config::default().labels(&selector);
    let statefulsets = cache::watched(
        Api::<StatefulSet>::all(client.clone()),
        owned.clone(),
        cache::slim_statefulset,
        &ctx.caches.statefulsets,
    );
    let services = cache::watched(
        Api::<Service>::all(client.clone()),
        owned.clone(),
        cache::slim,
        &ctx.caches.services,
    );
    let pods = cache::watched(
        Api::<Pod>::all(client.clone()),
        owned,
        cache::slim_pod,
        &ctx.caches.pods,
    );
    Controller::for_stream(workspaces, reader)
        .owns_stream(statefulsets)
        .owns_stream(services)
        .watches_stream(pods, |pod: Pod| {
            let ws = pod.labels().get(label::WORKSPACE_NAME)?.clone();
            Some(ObjectRef::new(&ws).within(&pod.namespace()?))
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
