//! The operator's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of failed reconciles.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `apply`, `status`, `cleanup` or `finalizer`.
    pub reason: &'static str,
}

/// Every metric the operator exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed, by reason.
    pub failures: Family<ReasonLabels, Counter>,
    /// Seconds one reconcile took.
    pub duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            // 1 ms to about 16 s, doubling.
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl Metrics {
    /// Registers the metrics (prefixed `ferrolb_` by the registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "operator_reconciles",
            "Reconciles of the LoadBalancerConfig",
            self.reconciles.clone(),
        );
        registry.register(
            "operator_reconcile_failures",
            "Reconciles that failed, by reason (apply, status, cleanup, finalizer)",
            self.failures.clone(),
        );
        registry.register(
            "operator_reconcile_duration_seconds",
            "Seconds one reconcile took",
            self.duration.clone(),
        );
    }
}
