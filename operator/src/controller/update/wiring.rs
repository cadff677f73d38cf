//! How the Update controller is fed: the Updates, and the Workspaces they wait on becoming
//! ready.

use std::sync::Arc;

use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::{CONTROLLER, Context, is_complete, reconcile};
use crate::api::update::Update;
use crate::api::workspace::Workspace;
use crate::controller::runtime::{self, Scope};
use crate::controller::workspace;

/// Incomplete Updates waiting on `ws`.
fn waiting_on(store: &Store<Update>, ws: &Workspace) -> Vec<ObjectRef<Update>> {
    let ns = ws.namespace();
    let name = ws.name_any();
    store
        .state()
        .iter()
        .filter(|u| u.namespace() == ns && u.spec.workspace_name.as_deref() == Some(name.as_str()))
        .filter(|u| !is_complete(u))
        .map(|u| ObjectRef::from_obj(u.as_ref()))
        .collect()
}

/// Reconcile on a new generation, new owners, completion (for the TTL), or deletion (to
/// release an orphan).
fn update_trigger(u: &Update) -> Option<u64> {
    let owners: Vec<&str> = u
        .owner_references()
        .iter()
        .map(|o| o.uid.as_str())
        .collect();
    runtime::fingerprint((
        u.metadata.generation,
        owners,
        is_complete(u),
        u.meta().deletion_timestamp.is_some(),
    ))
}

pub async fn run(
    ctx: Arc<Context>,
    scope: &Scope,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (reader, updates, feeds) = runtime::primary(
        client.clone(),
        scope,
        CONTROLLER,
        Arc::clone(&ctx.metrics),
        update_trigger,
        |_| {},
    );
    let store = reader.clone();
    let controller = Controller::for_stream(updates, reader).watches_stream(
        runtime::touched::<Workspace>(&client, scope, watcher::Config::default()),
        feeds.mapped(move |ws: Workspace| {
            if workspace::is_ready(&ws) {
                waiting_on(&store, &ws)
            } else {
                Vec::new()
            }
        }),
    );
    let reconciler: runtime::Reconcile<Update, Context> = |u, ctx| Box::pin(reconcile(u, ctx));
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
