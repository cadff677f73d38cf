//! Prometheus metrics: PKO's stack gauges (`stacks_active`, `stacks_failing`,
//! `programs_active`), per-controller reconcile counts, failures and durations, and the
//! reconcile metrics controller-runtime gives PKO (`controller_runtime_*`, with PKO's
//! controller names), so dashboards and alerts written for PKO keep working, with its
//! workqueue metrics: those of the work from the reconciles (`workqueue_work_duration_seconds`,
//! `_unfinished_work_seconds`, `_longest_running_processor_seconds`, `_retries_total`), those
//! of the queue itself (`_depth`, `_adds_total`, `_queue_duration_seconds`) from a model of it
//! (`queue`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

/// controller-runtime's workqueue labels: the queue's name and its controller (the same).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub name: String,
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: String,
    pub result: String,
}

/// controller-runtime's `result` label: how a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    RequeueAfter,
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RequeueAfter => "requeue_after",
            Outcome::Error => "error",
        }
    }
}

/// controller-runtime's reconcile metrics, named as PKO's manager serves them.
pub struct ControllerRuntime {
    pub reconcile_total: Family<ResultLabels, Counter>,
    pub reconcile_errors_total: Family<ControllerLabel, Counter>,
    pub reconcile_time_seconds: Family<ControllerLabel, Histogram>,
    pub max_concurrent_reconciles: Family<ControllerLabel, Gauge>,
    pub active_workers: Family<ControllerLabel, Gauge>,
    pub work_duration_seconds: Family<QueueLabels, Histogram>,
    pub unfinished_work_seconds: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    pub longest_running_processor_seconds: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    pub retries_total: Family<QueueLabels, Counter>,
    pub queues: super::queue::Queues,
    /// The controllers started, for the gauges of work in progress.
    known: Mutex<Vec<String>>,
    /// The reconciles running now, by a number each: (controller, start).
    running: Mutex<HashMap<u64, (String, Instant)>>,
    next_id: AtomicU64,
}

/// controller-runtime's workqueue duration buckets: 10 ns to 1000 s, ×10 each.
pub(super) fn work_duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(10e-9, 10.0, 12)
}

/// A reconcile in progress; its end is counted when this is dropped (a reconcile cut short at
/// shutdown too).
pub struct Processing<'a> {
    cr: &'a ControllerRuntime,
    controller: String,
    id: u64,
}

impl Drop for Processing<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.cr.running.lock() {
            running.remove(&self.id);
        }
        self.cr.worker(&self.controller, -1);
    }
}

/// controller-runtime's buckets for `controller_runtime_reconcile_time_seconds`.
const RECONCILE_TIME_BUCKETS: [f64; 40] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0,
    25.0, 30.0, 40.0, 50.0, 60.0,
];

impl ControllerRuntime {
    fn register(registry: &mut Registry) -> ControllerRuntime {
        let c = ControllerRuntime {
            reconcile_total: Family::default(),
            reconcile_errors_total: Family::default(),
            reconcile_time_seconds: Family::new_with_constructor(|| {
                Histogram::new(RECONCILE_TIME_BUCKETS)
            }),
            max_concurrent_reconciles: Family::default(),
            active_workers: Family::default(),
            work_duration_seconds: Family::new_with_constructor(|| {
                Histogram::new(work_duration_buckets())
            }),
            unfinished_work_seconds: Family::default(),
            longest_running_processor_seconds: Family::default(),
            retries_total: Family::default(),
            queues: super::queue::Queues::register(registry),
            known: Mutex::new(Vec::new()),
            running: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        };
        // prometheus_client adds `_total` to counters.
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            c.reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            c.reconcile_errors_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            c.reconcile_time_seconds.clone(),
        );
        registry.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            c.max_concurrent_reconciles.clone(),
        );
        registry.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            c.active_workers.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            c.work_duration_seconds.clone(),
        );
        registry.register(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been \
             observed by work_duration. Large values indicate stuck threads. One can deduce the \
             number of stuck threads by observing the rate at which this increases.",
            c.unfinished_work_seconds.clone(),
        );
        registry.register(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.",
            c.longest_running_processor_seconds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            c.retries_total.clone(),
        );
        c
    }

    /// controller-runtime names a controller's queue after the controller.
    pub(super) fn queue(controller: &str) -> QueueLabels {
        let name = Self::label(controller).controller;
        QueueLabels {
            name: name.clone(),
            controller: name,
        }
    }

    /// A reconcile starts: a worker is busy until the returned guard is dropped.
    pub fn processing(&self, controller: &str) -> Processing<'_> {
        self.worker(controller, 1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut running) = self.running.lock() {
            running.insert(id, (controller.to_string(), Instant::now()));
        }
        Processing {
            cr: self,
            controller: controller.to_string(),
            id,
        }
    }

    /// The gauges of work in progress, as of now (set when the metrics are read).
    fn measure_running(&self) {
        let (Ok(running), Ok(known)) = (self.running.lock(), self.known.lock()) else {
            return;
        };
        let mut per: HashMap<&str, (f64, f64)> = HashMap::new();
        for (controller, start) in running.values() {
            let secs = start.elapsed().as_secs_f64();
            let e = per.entry(controller.as_str()).or_default();
            e.0 += secs;
            e.1 = e.1.max(secs);
        }
        // Every controller known, so that an idle one reads 0 rather than its last value.
        for controller in known.iter() {
            let (sum, longest) = per.get(controller.as_str()).copied().unwrap_or_default();
            let queue = Self::queue(controller);
            self.unfinished_work_seconds.get_or_create(&queue).set(sum);
            self.longest_running_processor_seconds
                .get_or_create(&queue)
                .set(longest);
        }
    }

    /// PKO's name for a controller (`stack` -> `stack-controller`).
    fn label(controller: &str) -> ControllerLabel {
        ControllerLabel {
            controller: format!("{controller}-controller"),
        }
    }

    /// A controller starts: its concurrency (0 for the Program controller: unbounded), and
    /// every result at zero, as controller-runtime does.
    pub fn started(&self, controller: &str, concurrency: u16) {
        if let Ok(mut known) = self.known.lock()
            && !known.iter().any(|k| k == controller)
        {
            known.push(controller.to_string());
        }
        let queue = Self::queue(controller);
        self.queues.started(controller);
        let _ = self.retries_total.get_or_create(&queue);
        let _ = self.work_duration_seconds.get_or_create(&queue);
        let label = Self::label(controller);
        self.max_concurrent_reconciles
            .get_or_create(&label)
            .set(i64::from(concurrency));
        for outcome in [Outcome::Success, Outcome::RequeueAfter, Outcome::Error] {
            let _ = self.reconcile_total.get_or_create(&ResultLabels {
                controller: label.controller.clone(),
                result: outcome.label().into(),
            });
        }
        let _ = self.reconcile_errors_total.get_or_create(&label);
    }

    pub fn worker(&self, controller: &str, delta: i64) {
        self.active_workers
            .get_or_create(&Self::label(controller))
            .inc_by(delta);
    }

    fn finished(&self, controller: &str, outcome: Outcome, seconds: f64) {
        let queue = Self::queue(controller);
        let label = Self::label(controller);
        self.work_duration_seconds
            .get_or_create(&queue)
            .observe(seconds);
        self.reconcile_time_seconds
            .get_or_create(&label)
            .observe(seconds);
        if outcome == Outcome::Error {
            self.reconcile_errors_total.get_or_create(&label).inc();
            // controller-runtime puts a failed item back rate-limited: a retry.
            self.retries_total.get_or_create(&queue).inc();
        }
        self.reconcile_total
            .get_or_create(&ResultLabels {
                controller: label.controller,
                result: outcome.label().into(),
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StackLabels {
    pub namespace: String,
    pub name: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub stacks_active: Gauge,
    pub stacks_failing: Family<StackLabels, Gauge>,
    pub stacks_drifted: Family<StackLabels, Gauge>,
    pub programs_active: Gauge,
    pub reconciles: Family<ControllerLabel, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub durations: Family<ControllerLabel, Histogram>,
    pub controller_runtime: ControllerRuntime,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let stacks_active = Gauge::default();
        let stacks_failing = Family::<StackLabels, Gauge>::default();
        let stacks_drifted = Family::<StackLabels, Gauge>::default();
        let programs_active = Gauge::default();
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
            ])
        });
        registry.register("stacks_active", "Number of Stacks", stacks_active.clone());
        registry.register(
            "stacks_failing",
            "1 when the Stack's last update failed",
            stacks_failing.clone(),
        );
        registry.register(
            "stacks_drifted",
            "1 when the Stack's last drift check found drift (Stacks with spec.driftDetection)",
            stacks_drifted.clone(),
        );
        registry.register(
            "programs_active",
            "Number of Programs",
            programs_active.clone(),
        );
        registry.register("reconcile", "Reconciles by controller", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by controller and error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by controller",
            durations.clone(),
        );
        let controller_runtime = ControllerRuntime::register(&mut registry);
        Metrics {
            controller_runtime,
            registry: Mutex::new(registry),
            stacks_active,
            stacks_failing,
            stacks_drifted,
            programs_active,
            reconciles,
            failures,
            durations,
        }
    }
}

impl Metrics {
    /// One reconcile ended after `seconds`: our count and duration, and controller-runtime's.
    pub fn reconciled(&self, controller: &str, outcome: Outcome, seconds: f64) {
        let label = ControllerLabel {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&label).inc();
        self.durations.get_or_create(&label).observe(seconds);
        self.controller_runtime
            .finished(controller, outcome, seconds);
    }

    pub fn failure(&self, controller: &str, error: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                error: error.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.controller_runtime.measure_running();
        self.controller_runtime.queues.measure(Instant::now());
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_their_names() {
        let m = Metrics::default();
        m.stacks_active.set(2);
        m.stacks_failing
            .get_or_create(&StackLabels {
                namespace: "ns".into(),
                name: "s".into(),
            })
            .set(1);
        m.reconciled("stack", Outcome::Success, 0.01);
        m.failure("stack", "kube");
        let text = m.render();
        for needle in [
            "stacks_active 2",
            "stacks_failing{namespace=\"ns\",name=\"s\"} 1",
            "reconcile_total{controller=\"stack\"} 1",
            "reconcile_failures_total{controller=\"stack\",error=\"kube\"} 1",
            "reconcile_duration_seconds_count{controller=\"stack\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }

    #[test]
    fn controller_runtime_s_reconcile_metrics_carry_pko_s_names() {
        let m = Metrics::default();
        let cr = &m.controller_runtime;
        cr.started("stack", 25);
        let running = cr.processing("stack");
        m.reconciled("stack", Outcome::Success, 0.02);
        m.reconciled("stack", Outcome::Error, 0.3);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let busy = m.render();
        let seconds = |text: &str, metric: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(metric))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{metric} missing in:\n{text}"))
        };
        let queue = "{name=\"stack-controller\",controller=\"stack-controller\"}";
        assert!(
            seconds(
                &busy,
                &format!("workqueue_longest_running_processor_seconds{queue}")
            ) >= 0.02
        );
        assert!(seconds(&busy, &format!("workqueue_unfinished_work_seconds{queue}")) >= 0.02);
        assert!(
            busy.contains("controller_runtime_active_workers{controller=\"stack-controller\"} 1")
        );
        drop(running);
        let text = m.render();
        assert_eq!(
            seconds(
                &text,
                &format!("workqueue_longest_running_processor_seconds{queue}")
            ),
            0.0
        );
        for needle in [
            "controller_runtime_reconcile_total{controller=\"stack-controller\",result=\"success\"} 1",
            "controller_runtime_reconcile_total{controller=\"stack-controller\",result=\"error\"} 1",
            "controller_runtime_reconcile_total{controller=\"stack-controller\",result=\"requeue_after\"} 0",
            "controller_runtime_reconcile_errors_total{controller=\"stack-controller\"} 1",
            "controller_runtime_reconcile_time_seconds_count{controller=\"stack-controller\"} 2",
            "controller_runtime_reconcile_time_seconds_bucket{le=\"0.025\",controller=\"stack-controller\"} 1",
            "controller_runtime_max_concurrent_reconciles{controller=\"stack-controller\"} 25",
            "controller_runtime_active_workers{controller=\"stack-controller\"} 0",
            "workqueue_retries_total{name=\"stack-controller\",controller=\"stack-controller\"} 1",
            "workqueue_work_duration_seconds_count{name=\"stack-controller\",controller=\"stack-controller\"} 2",
            "workqueue_work_duration_seconds_bucket{le=\"0.1\",name=\"stack-controller\",controller=\"stack-controller\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }
}
