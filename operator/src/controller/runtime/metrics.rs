//! Prometheus metrics: PKO's stack gauges (`stacks_active`, `stacks_failing`,
//! `programs_active`) and per-controller reconcile counts, failures and durations.

use std::sync::Mutex;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub error: String,
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
    pub programs_active: Gauge,
    pub reconciles: Family<ControllerLabel, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub durations: Family<ControllerLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let stacks_active = Gauge::default();
        let stacks_failing = Family::<StackLabels, Gauge>::default();
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
        Metrics {
            registry: Mutex::new(registry),
            stacks_active,
            stacks_failing,
            programs_active,
            reconciles,
            failures,
            durations,
        }
    }
}

/// Measures one reconcile; dropped at its end.
pub struct Measure<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for Measure<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&ControllerLabel {
                controller: self.controller.into(),
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn reconcile(&self, controller: &'static str) -> Measure<'_> {
        self.reconciles
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .inc();
        Measure {
            metrics: self,
            controller,
            start: Instant::now(),
        }
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
        drop(m.reconcile("stack"));
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
}
