//! controller-runtime's `workqueue_depth`, `workqueue_adds_total` and
//! `workqueue_queue_duration_seconds`, from a model of each controller's queue: kube-runtime's
//! scheduler keeps its queue to itself, so the model sees what goes in (every trigger, at the
//! streams that feed the controller, and every retry after a failure) and what comes out (each
//! reconcile's start), and keeps, as client-go's queue does, one entry per object: an object
//! triggered again while it waits is one item (counted as an add, as client-go counts it), and
//! one triggered while it is being reconciled waits for that reconcile to end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, TryStreamExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::metrics::{Metrics, QueueLabels};

/// One controller's queue.
#[derive(Default)]
struct State {
    /// Objects waiting for a reconcile, since when.
    waiting: HashMap<String, Instant>,
    /// Objects to be retried after a failure, and when.
    retries: HashMap<String, Instant>,
    /// Objects being reconciled.
    processing: HashSet<String>,
}

impl State {
    /// Retries that are due join the waiting objects, each counted as an add (client-go's
    /// `AddAfter` adds when the delay is over).
    fn promote(&mut self, now: Instant) -> u64 {
        let due: Vec<(String, Instant)> = self
            .retries
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, at)| (k.clone(), *at))
            .collect();
        for (key, at) in &due {
            self.retries.remove(key);
            self.waiting.entry(key.clone()).or_insert(*at);
        }
        due.len() as u64
    }

    /// Waiting and not being reconciled: what client-go's queue holds.
    fn depth(&self) -> usize {
        self.waiting
            .keys()
            .filter(|k| !self.processing.contains(*k))
            .count()
    }
}

/// The queues of every controller, and their metrics.
pub struct Queues {
    state: Mutex<HashMap<String, State>>,
    depth: Family<QueueLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    queue_duration: Family<QueueLabels, Histogram>,
}

impl Queues {
    pub(super) fn register(registry: &mut Registry) -> Queues {
        let q = Queues {
            state: Mutex::new(HashMap::new()),
            depth: Family::default(),
            adds: Family::default(),
            queue_duration: Family::new_with_constructor(|| {
                Histogram::new(super::metrics::work_duration_buckets())
            }),
        };
        registry.register(
            "workqueue_depth",
            "Current depth of workqueue",
            q.depth.clone(),
        );
        // prometheus_client adds `_total` to counters.
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            q.adds.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            q.queue_duration.clone(),
        );
        q
    }

    /// `f` on `controller`'s queue (made on first use; every trigger comes here, so the
    /// name is copied only then).
    fn with<T>(&self, controller: &str, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        let mut all = self.state.lock().ok()?;
        if !all.contains_key(controller) {
            all.insert(controller.to_string(), State::default());
        }
        all.get_mut(controller).map(f)
    }

    fn labels(controller: &str) -> QueueLabels {
        super::metrics::ControllerRuntime::queue(controller)
    }

    /// A controller starts: its queue's series exist, at zero.
    pub(super) fn started(&self, controller: &str) {
        let labels = Self::labels(controller);
        let _ = self.depth.get_or_create(&labels);
        let _ = self.adds.get_or_create(&labels);
        let _ = self.queue_duration.get_or_create(&labels);
        self.with(controller, |_| ());
    }

    /// A trigger for `key`.
    pub fn added(&self, controller: &str, key: String, now: Instant) {
        self.with(controller, |s| {
            s.waiting.entry(key).or_insert(now);
        });
        self.adds.get_or_create(&Self::labels(controller)).inc();
    }

    /// `key` failed and is retried after `wait`.
    pub fn retry_after(&self, controller: &str, key: String, wait: Duration, now: Instant) {
        self.with(controller, |s| {
            let at = now + wait;
            let e = s.retries.entry(key).or_insert(at);
            *e = (*e).min(at);
        });
    }

    /// A reconcile of `key` starts: how long it waited is observed. One that nothing the
    /// model saw asked for was asked for by its own requeue (kube-runtime's scheduler keeps
    /// those to itself): an add, its wait unknown and not observed.
    pub fn taken(&self, controller: &str, key: &str, now: Instant) {
        let labels = Self::labels(controller);
        let Some((promoted, waited)) = self.with(controller, |s| {
            let promoted = s.promote(now);
            s.retries.remove(key);
            s.processing.insert(key.to_string());
            (promoted, s.waiting.remove(key))
        }) else {
            return;
        };
        let adds = promoted + u64::from(waited.is_none());
        if adds > 0 {
            self.adds.get_or_create(&labels).inc_by(adds);
        }
        if let Some(since) = waited {
            self.queue_duration
                .get_or_create(&labels)
                .observe(now.saturating_duration_since(since).as_secs_f64());
        }
    }

    /// A reconcile of `key` ended.
    pub fn done(&self, controller: &str, key: &str) {
        self.with(controller, |s| s.processing.remove(key));
    }

    /// `key`'s object is gone: nothing will take it from the queue.
    pub fn forget(&self, controller: &str, key: &str) {
        self.with(controller, |s| {
            s.waiting.remove(key);
            s.retries.remove(key);
        });
    }

    /// The depth of every queue as of `now` (set when the metrics are read).
    pub(super) fn measure(&self, now: Instant) {
        let Ok(mut all) = self.state.lock() else {
            return;
        };
        for (controller, s) in all.iter_mut() {
            let labels = Self::labels(controller);
            let promoted = s.promote(now);
            if promoted > 0 {
                self.adds.get_or_create(&labels).inc_by(promoted);
            }
            self.depth.get_or_create(&labels).set(s.depth() as i64);
        }
    }
}

/// The key of an object in the queue model.
pub fn key<K: Resource>(r: &ObjectRef<K>) -> String {
    format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name)
}

/// What feeds one controller's queue, wrapped so the model sees each trigger. Triggers for an
/// object not in the controller's cache are not counted: kube-runtime drops them too (a child
/// deleted after its owner, by the garbage collector, names an owner that is gone).
pub struct Feeds<K: Resource<DynamicType = ()> + Clone + 'static> {
    controller: &'static str,
    metrics: Arc<Metrics>,
    store: Store<K>,
}

impl<K> Clone for Feeds<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn clone(&self) -> Self {
        Feeds {
            controller: self.controller,
            metrics: Arc::clone(&self.metrics),
            store: self.store.clone(),
        }
    }
}

impl<K> Feeds<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    pub fn new(controller: &'static str, metrics: Arc<Metrics>, store: Store<K>) -> Feeds<K> {
        Feeds {
            controller,
            metrics,
            store,
        }
    }

    fn add(&self, r: &ObjectRef<K>) {
        if self.store.get(r).is_some() {
            self.metrics
                .controller_runtime
                .queues
                .added(self.controller, key(r), Instant::now());
        }
    }

    /// The controller's own objects (`Controller::for_stream`).
    pub fn own<E, S>(&self, objects: S) -> impl Stream<Item = Result<K, E>> + Send + use<K, E, S>
    where
        S: Stream<Item = Result<K, E>> + Send + 'static,
    {
        let feeds = self.clone();
        objects.inspect_ok(move |o| feeds.add(&ObjectRef::from_obj(o)))
    }

    /// Objects whose owners are the controller's (`Controller::owns_stream`): each owner of
    /// this kind, as kube-runtime maps them.
    pub fn owned<Child, E, S>(
        &self,
        children: S,
    ) -> impl Stream<Item = Result<Child, E>> + Send + use<K, Child, E, S>
    where
        Child: Resource + Send + 'static,
        S: Stream<Item = Result<Child, E>> + Send + 'static,
    {
        let feeds = self.clone();
        children.inspect_ok(move |child| {
            let ns = child.meta().namespace.as_deref();
            for owner in child.owner_references() {
                if let Some(r) = ObjectRef::<K>::from_owner_ref(ns, owner, ()) {
                    feeds.add(&r);
                }
            }
        })
    }

    /// A mapping from other objects to the controller's (`Controller::watches_stream`).
    pub fn mapped<Other, I, F>(
        &self,
        mapper: F,
    ) -> impl Fn(Other) -> Vec<ObjectRef<K>> + Send + Sync + use<K, Other, I, F>
    where
        I: IntoIterator<Item = ObjectRef<K>>,
        F: Fn(Other) -> I + Send + Sync + 'static,
    {
        let feeds = self.clone();
        move |other| {
            let refs: Vec<ObjectRef<K>> = mapper(other).into_iter().collect();
            refs.iter().for_each(|r| feeds.add(r));
            refs
        }
    }

    /// Requests made directly (`Controller::reconcile_on`).
    pub fn requests<S>(&self, requests: S) -> impl Stream<Item = ObjectRef<K>> + Send + use<K, S>
    where
        S: Stream<Item = ObjectRef<K>> + Send + 'static,
    {
        use futures::StreamExt;
        let feeds = self.clone();
        requests.inspect(move |r| feeds.add(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(m: &Metrics) -> String {
        m.render()
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    const Q: &str = "{name=\"stack-controller\",controller=\"stack-controller\"}";

    #[test]
    fn the_queue_holds_one_item_per_object_and_says_how_long_it_waited() {
        let m = Metrics::default();
        let q = &m.controller_runtime.queues;
        q.started("stack");
        let t0 = Instant::now();
        q.added("stack", "ns/a".into(), t0);
        q.added("stack", "ns/a".into(), t0 + Duration::from_millis(5));
        q.added("stack", "ns/b".into(), t0);
        let text = render(&m);
        assert_eq!(value(&text, &format!("workqueue_depth{Q}")), 2.0);
        assert_eq!(value(&text, &format!("workqueue_adds_total{Q}")), 3.0);

        // Taken after 2 s: observed from the first trigger.
        q.taken("stack", "ns/a", t0 + Duration::from_secs(2));
        // Triggered while it is reconciled: waiting, yet not in the queue until it is done.
        q.added("stack", "ns/a".into(), t0 + Duration::from_secs(3));
        let text = render(&m);
        assert_eq!(value(&text, &format!("workqueue_depth{Q}")), 1.0);
        assert_eq!(
            value(&text, &format!("workqueue_queue_duration_seconds_sum{Q}")),
            2.0
        );
        q.done("stack", "ns/a");
        assert_eq!(value(&render(&m), &format!("workqueue_depth{Q}")), 2.0);

        // Gone: out of the queue.
        q.forget("stack", "ns/a");
        q.forget("stack", "ns/b");
        assert_eq!(value(&render(&m), &format!("workqueue_depth{Q}")), 0.0);
    }

    #[test]
    fn retries_join_the_queue_when_due_and_requeues_count_when_taken() {
        let m = Metrics::default();
        let q = &m.controller_runtime.queues;
        q.started("stack");
        let t0 = Instant::now();
        q.retry_after("stack", "ns/a".into(), Duration::from_secs(3600), t0);
        let text = render(&m);
        assert_eq!(value(&text, &format!("workqueue_depth{Q}")), 0.0);
        assert_eq!(value(&text, &format!("workqueue_adds_total{Q}")), 0.0);
        q.retry_after("stack", "ns/a".into(), Duration::ZERO, t0);
        let text = render(&m);
        assert_eq!(value(&text, &format!("workqueue_depth{Q}")), 1.0);
        assert_eq!(value(&text, &format!("workqueue_adds_total{Q}")), 1.0);
        q.taken("stack", "ns/a", t0 + Duration::from_secs(1));
        q.done("stack", "ns/a");
        // A reconcile nothing asked for: its own requeue, an add with no wait observed.
        q.taken("stack", "ns/b", t0 + Duration::from_secs(2));
        q.done("stack", "ns/b");
        let text = render(&m);
        assert_eq!(value(&text, &format!("workqueue_depth{Q}")), 0.0);
        assert_eq!(value(&text, &format!("workqueue_adds_total{Q}")), 2.0);
        assert_eq!(
            value(&text, &format!("workqueue_queue_duration_seconds_count{Q}")),
            1.0
        );
    }
}
