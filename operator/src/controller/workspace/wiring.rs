//! How the Workspace controller is fed: the Workspaces, and the StatefulSets, Services and
//! pods made for them, each kept in a store the reconciles read.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{predicates, watcher};

use super::{CONTROLLER, Context, forget_workspace, reconcile};
use crate::api::names::label;
use crate::api::workspace::Workspace;
use crate::controller::runtime::{self, Scope, cache};

/// Runs the controller until `shutdown` resolves (then lets running reconciles finish).
pub async fn run(
    ctx: Arc<Context>,
    scope: &Scope,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let selector = format!("{}={}", label::AUTO_COMPONENT, label::COMPONENT_WORKSPACE);
    let forget = Arc::clone(&ctx);
    let (reader, workspaces, feeds) = runtime::primary(
        client.clone(),
        scope,
        CONTROLLER,
        Arc::clone(&ctx.metrics),
        predicates::generation,
        move |ws: &Workspace| forget_workspace(&forget, ws),
    );
    // The owned objects are kept in stores, so a reconcile reads them instead of asking, and
    // applies them only when they differ from what it applied last.
    let owned = watcher::Config::default().labels(&selector);
    let statefulsets = cache::watched::<StatefulSet>(
        &client,
        scope,
        owned.clone(),
        cache::slim_statefulset,
        &ctx.statefulsets,
    );
    let services =
        cache::watched::<Service>(&client, scope, owned.clone(), cache::slim, &ctx.services);
    let pods = cache::watched::<Pod>(&client, scope, owned, cache::slim_pod, &ctx.pods);
    let controller = Controller::for_stream(workspaces, reader)
        .owns_stream(feeds.owned(statefulsets))
        .owns_stream(feeds.owned(services))
        .watches_stream(
            pods,
            feeds.mapped(|pod: Pod| {
                let ws = pod.labels().get(label::WORKSPACE_NAME)?.clone();
                Some(ObjectRef::new(&ws).within(&pod.namespace()?))
            }),
        );
    let reconciler: runtime::Reconcile<Workspace, Context> = |w, ctx| Box::pin(reconcile(w, ctx));
    runtime::run(
        controller,
        CONTROLLER,
        reconciler,
        ctx,
        concurrency,
        shutdown,
    )
    .await;
}
