//! What the four controllers share around their reconcilers: the watch of their own kind, one
//! error policy (a warning that names the object, the failure metric, and a back-off per
//! object that a success resets) and one way to run a controller until shutdown.
//!
//! Beside it, what they share around the API server: watch-fed caches and write memos
//! (`cache`, `status_queue`), conditions, events, metrics, the strategic merge of pod
//! templates (`merge`), the agent connection (`connect`) and leader election (`leader`).

pub mod cache;
pub mod conditions;
pub mod connect;
pub mod events;
pub mod leader;
pub mod merge;
pub mod metrics;
pub mod outage;
pub mod queue;
pub mod scope;
pub mod status_queue;

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{Instrument, info_span, warn};

use super::Error;
use metrics::{Metrics, Outcome};
pub use queue::Feeds;
pub use scope::Scope;

/// The first retry after a failed reconcile.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between retries: an outage of the API server or an agent does not turn
/// into a storm of reconciles, and a fix is noticed within minutes.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The wait after the `failures`-th consecutive failure: 5 s, doubling, at most 5 minutes.
pub fn retry_after(failures: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_RETRY)
}

/// Consecutive failed reconciles per object, and when the last one was.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, (u32, Instant)>>);

impl Failures {
    /// Counts one more failure of `key`; returns how many in a row.
    pub fn failed(&self, key: &str) -> u32 {
        self.failed_at(key, Instant::now())
    }

    fn failed_at(&self, key: &str, now: Instant) -> u32 {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A failing object is retried at least every MAX_RETRY: one not seen for twice that
        // is gone (deleted while failing), and its count with it.
        m.retain(|_, (_, last)| now.saturating_duration_since(*last) <= 2 * MAX_RETRY);
        let entry = m.entry(key.to_string()).or_insert((0, now));
        *entry = (entry.0.saturating_add(1), now);
        entry.0
    }

    pub fn succeeded(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// How a reconcile's steps end early: the controller's typed stop `S`, which it turns into a
/// condition, an event and a requeue; or a call that failed, which the runtime retries with
/// back-off.
#[derive(Debug)]
pub enum Halt<S> {
    Stop(S),
    Failed(Error),
}

impl<S> From<Error> for Halt<S> {
    fn from(e: Error) -> Halt<S> {
        Halt::Failed(e)
    }
}

impl<S> From<kube::Error> for Halt<S> {
    fn from(e: kube::Error) -> Halt<S> {
        Halt::Failed(e.into())
    }
}

/// What the runtime needs of a controller's context: the metrics its failures are counted in.
pub trait Measured: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
}

/// A reconciler as the controllers write them, over the controller's own context `C`.
pub type Reconcile<K, C> = fn(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, Error>>;

/// A trigger's value from the parts of an object whose change should start a reconcile (for
/// `predicate_filter`): equal parts, no reconcile.
pub fn fingerprint(parts: impl Hash) -> Option<u64> {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    Some(h.finish())
}

/// The watch of a controller's own kind in `scope`: each object slimmed into the store
/// the controller reads, `gone` called with each deleted one (so what is remembered of it goes
/// too, its place in the queue model included), and only the changes `trigger` notices passed
/// on to be reconciled. With it, the [`Feeds`] through which the controller's other triggers
/// go, so the queue model sees them.
pub fn primary<K>(
    client: Client,
    scope: &Scope,
    controller: &'static str,
    metrics: Arc<Metrics>,
    trigger: fn(&K) -> Option<u64>,
    gone: impl Fn(&K) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Feeds<K>,
)
where
    K: scope::Watched,
{
    let (reader, writer) = reflector::store();
    let feeds = Feeds::new(controller, Arc::clone(&metrics), reader.clone());
    let gone = move |o: &K| {
        metrics
            .controller_runtime
            .queues
            .forget(controller, &queue::key(&ObjectRef::from_obj(o)));
        gone(o)
    };
    let objects = cache::on_delete(
        scope
            .watch(
                scope.apis::<K>(&client),
                scope.own(watcher::Config::default()),
                Some(reader.clone()),
            )
            .modify(cache::slim)
            .reflect(writer),
        gone,
    )
    .applied_objects()
    .predicate_filter(trigger, Default::default());
    (reader, feeds.own(objects), feeds)
}

/// The watch of another kind in `scope`, every object that changes or goes (what
/// `Controller::owns` and `Controller::watches` make themselves, made here so that it can go
/// through [`Feeds`]). `PartialObjectMeta<T>` watches metadata only, as `Controller::owns`
/// does.
pub fn touched<T>(
    client: &Client,
    scope: &Scope,
    config: watcher::Config,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static
where
    T: scope::Watched,
{
    scope
        .watch(scope.apis::<T>(client), config, None)
        .touched_objects()
}

/// Runs `controller` (its watches already set) until `shutdown` resolves, then lets running
/// reconciles finish. A reconcile that fails is retried after [`retry_after`] its consecutive
/// failures; one that succeeds (a stop with a condition is a success) resets the count.
pub async fn run<K, C>(
    controller: Controller<K>,
    name: &'static str,
    reconcile: Reconcile<K, C>,
    ctx: Arc<C>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: Clone + Resource + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Unpin + Eq + Hash + Clone + Default,
    C: Measured,
{
    ctx.metrics().controller_runtime.started(name, concurrency);
    let failures = Arc::new(Failures::default());
    let succeeded = Arc::clone(&failures);
    let reconciler = move |obj: Arc<K>, ctx: Arc<C>| {
        let key = queue::key(&ObjectRef::from_obj(obj.as_ref()));
        let failures = Arc::clone(&succeeded);
        // Every log line of the reconcile carries the object.
        let span = info_span!(
            "reconcile",
            controller = name,
            namespace = %obj.namespace().unwrap_or_default(),
            name = %obj.name_any()
        );
        async move {
            let metrics = ctx.metrics();
            let queues = &metrics.controller_runtime.queues;
            queues.taken(name, &key, Instant::now());
            let running = metrics.controller_runtime.processing(name);
            let started = Instant::now();
            let result = reconcile(obj, Arc::clone(&ctx)).await;
            queues.done(name, &key);
            let outcome = match &result {
                Ok(a) if *a == Action::await_change() => Outcome::Success,
                Ok(_) => Outcome::RequeueAfter,
                Err(_) => Outcome::Error,
            };
            metrics.reconciled(name, outcome, started.elapsed().as_secs_f64());
            drop(running);
            if result.is_ok() {
                failures.succeeded(&key);
            }
            result
        }
        .instrument(span)
    };
    let error_policy = move |obj: Arc<K>, err: &Error, ctx: Arc<C>| {
        let key = queue::key(&ObjectRef::from_obj(obj.as_ref()));
        let n = failures.failed(&key);
        let wait = retry_after(n);
        warn!(
            controller = name,
            namespace = %obj.namespace().unwrap_or_default(),
            name = %obj.name_any(),
            error = %fetch::error::chain(err),
            failures = n,
            retry_in_s = wait.as_secs(),
            "reconcile failed"
        );
        ctx.metrics().failure(name, err.kind());
        ctx.metrics()
            .controller_runtime
            .queues
            .retry_after(name, key, wait, Instant::now());
        Action::requeue(wait)
    };
    controller
        .with_config(Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconciler, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_logged_with_its_causes() {
        let e = Error::Artifact(crate::controller::program::ArtifactError::Yaml(
            "bad".into(),
        ));
        assert_eq!(
            fetch::error::chain(&e),
            "packing the Program's artifact: the program cannot be written as YAML: bad"
        );
    }

    #[test]
    fn retries_double_from_five_seconds_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_after(0), FIRST_RETRY);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY, "no overflow");
    }

    #[test]
    fn a_success_starts_the_count_again_for_that_object_only() {
        let f = Failures::default();
        assert_eq!(f.failed("stack/a/x"), 1);
        assert_eq!(f.failed("stack/a/x"), 2);
        assert_eq!(f.failed("stack/a/y"), 1);
        f.succeeded("stack/a/x");
        assert_eq!(f.failed("stack/a/x"), 1);
        assert_eq!(f.failed("stack/a/y"), 2);
    }

    #[test]
    fn the_count_of_an_object_no_longer_retried_is_dropped() {
        let f = Failures::default();
        let t0 = Instant::now();
        assert_eq!(f.failed_at("update/a/gone", t0), 1);
        assert_eq!(f.failed_at("update/a/gone", t0 + MAX_RETRY), 2);
        let later = t0 + MAX_RETRY * 4;
        assert_eq!(f.failed_at("update/a/other", later), 1);
        assert_eq!(
            f.0.lock().expect("lock").len(),
            1,
            "the gone object's entry went"
        );
        assert_eq!(f.failed_at("update/a/gone", later), 1);
    }
}
