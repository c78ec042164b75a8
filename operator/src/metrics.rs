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

/// Labels of admission requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `allowed`, `denied` or `malformed`.
    pub outcome: &'static str,
}

/// Labels of webhook certificate loads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// `loaded` or `invalid`.
    pub result: &'static str,
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
    /// Admission requests answered, by outcome.
    pub webhook_requests: Family<WebhookLabels, Counter>,
    /// Seconds one admission request took to decide.
    pub webhook_duration: Histogram,
    /// Serving certificates loaded (or refused), by result.
    pub webhook_cert_loads: Family<CertLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            // 1 ms to about 16 s, doubling.
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            webhook_requests: Family::default(),
            // 0.1 ms to about 3 s, doubling.
            webhook_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            webhook_cert_loads: Family::default(),
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
        registry.register(
            "operator_webhook_requests",
            "Admission requests answered, by outcome (allowed, denied, malformed)",
            self.webhook_requests.clone(),
        );
        registry.register(
            "operator_webhook_duration_seconds",
            "Seconds one admission request took to decide",
            self.webhook_duration.clone(),
        );
        registry.register(
            "operator_webhook_certificate_loads",
            "Webhook serving certificates loaded or refused, by result (loaded, invalid)",
            self.webhook_cert_loads.clone(),
        );
    }
}
