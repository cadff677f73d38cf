//! How the Stack controller is fed: the Stacks it reconciles and what wakes one (its
//! Workspace and Updates, the Programs and prerequisite Stacks it names, its Flux source), and
//! the gauges kept from the Stack cache.

use std::sync::Arc;
use std::time::Duration;

use kube::api::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::{CONTROLLER, Context, approval, drift, forget_stack, reconcile, sync};
use crate::api::names::{condition, label};
use crate::api::program::Program;
use crate::api::stack::{Stack, StackUpdateState};
use crate::api::update::Update;
use crate::controller::runtime::conditions::Conditions;
use crate::controller::runtime::{self, Scope, cache, metrics};

/// Reconcile on a new generation, a new reconcile request (ours or Flux's), or deletion.
fn stack_trigger(s: &Stack) -> Option<u64> {
    runtime::fingerprint((
        s.metadata.generation,
        sync::reconcile_request(s),
        sync::flux_request(s),
        drift::request(s),
        approval::request(s),
        s.metadata.deletion_timestamp.is_some(),
    ))
}

fn dependents(store: &Store<Stack>, s: &Stack) -> Vec<ObjectRef<Stack>> {
    let name = s.name_any();
    let ns = s.namespace();
    store
        .state()
        .iter()
        .filter(|d| d.namespace() == ns)
        .filter(|d| {
            d.spec
                .0
                .prerequisites
                .iter()
                .flatten()
                .any(|p| p.name == name)
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn program_users(store: &Store<Stack>, p: &Program) -> Vec<ObjectRef<Stack>> {
    let name = p.name_any();
    let ns = p.namespace();
    store
        .state()
        .iter()
        .filter(|s| {
            s.namespace() == ns
                && s.spec
                    .0
                    .program_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name)
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

pub async fn run(
    ctx: Arc<Context>,
    scope: &Scope,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let forget = Arc::clone(&ctx);
    let (reader, stacks, feeds) = runtime::primary(
        client.clone(),
        scope,
        CONTROLLER,
        Arc::clone(&ctx.metrics),
        stack_trigger,
        move |s: &Stack| forget_stack(&forget, s),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    ctx.flux_watches.wire(tx, reader.clone(), scope.clone());
    let flux_wakeups =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    spawn_gauges(Arc::clone(&ctx), reader.clone());
    let selector = format!("{}={}", label::PULUMI_COMPONENT, label::COMPONENT_STACK);
    let (deps, users) = (reader.clone(), reader.clone());
    // The Workspaces are kept in a store: a reconcile compares its Workspace with the cached
    // one instead of applying it again unchanged.
    let workspaces = cache::watched(
        &client,
        scope,
        scope.own(watcher::Config::default().labels(&selector)),
        cache::slim_workspace,
        &ctx.workspaces,
    );
    let controller = Controller::for_stream(stacks, reader)
        .owns_stream(feeds.owned(workspaces))
        .owns_stream(feeds.owned(runtime::touched::<PartialObjectMeta<Update>>(
            &client,
            scope,
            scope.own(watcher::Config::default().labels(&selector)),
        )))
        .watches_stream(
            runtime::touched::<Program>(&client, scope, watcher::Config::default()),
            feeds.mapped(move |p: Program| program_users(&users, &p)),
        )
        .watches_stream(
            runtime::touched::<Stack>(&client, scope, watcher::Config::default()),
            feeds.mapped(move |s: Stack| {
                if s.status
                    .as_ref()
                    .and_then(|st| st.last_update.as_ref())
                    .is_some()
                    || s.meta().deletion_timestamp.is_some()
                {
                    dependents(&deps, &s)
                } else {
                    Vec::new()
                }
            }),
        )
        .reconcile_on(feeds.requests(flux_wakeups));
    let reconciler: runtime::Reconcile<Stack, Context> = |s, ctx| Box::pin(reconcile(s, ctx));
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

/// `stacks_active`, `stacks_failing` and `stacks_drifted` from the Stack cache, every few
/// seconds.
fn spawn_gauges(ctx: Arc<Context>, store: Store<Stack>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let state = store.state();
            ctx.metrics.stacks_active.set(state.len() as i64);
            ctx.metrics.stacks_failing.clear();
            ctx.metrics.stacks_drifted.clear();
            for s in state {
                let labels = metrics::StackLabels {
                    namespace: s.namespace().unwrap_or_default(),
                    name: s.name_any(),
                };
                if s.spec.0.drift_detection.is_some() {
                    let drifted =
                        Conditions::from(s.status.as_ref().and_then(|st| st.conditions.as_ref()))
                            .is_true(condition::DRIFTED);
                    ctx.metrics
                        .stacks_drifted
                        .get_or_create(&labels)
                        .set(i64::from(drifted));
                }
                let failing = s
                    .status
                    .as_ref()
                    .and_then(|st| st.last_update.as_ref())
                    .is_some_and(StackUpdateState::failed);
                ctx.metrics
                    .stacks_failing
                    .get_or_create(&labels)
                    .set(i64::from(failing));
            }
        }
    });
}
