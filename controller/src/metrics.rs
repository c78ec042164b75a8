//! The controller's Prometheus metrics (names follow MetalLB's where they mean the same).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-pool gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Labels of allocation outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `IPAllocated` or the failure reason.
    pub result: String,
}

/// Every metric the controller exports.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Addresses a pool can hand out (f64: a /64 does not fit an i64 gauge).
    pub addresses_total: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Addresses in use.
    pub addresses_in_use: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Allocation attempts by outcome.
    pub allocations: Family<ResultLabels, Counter>,
    /// 1 while the newest LoadBalancerConfig is rejected and an older one is in force.
    pub config_stale: Gauge,
}

impl Metrics {
    /// Registers the metrics under `registry` (prefixed `ferrolb_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "allocator_addresses_total",
            "Addresses an address pool can assign",
            self.addresses_total.clone(),
        );
        registry.register(
            "allocator_addresses_in_use",
            "Addresses of an address pool assigned to Services",
            self.addresses_in_use.clone(),
        );
        registry.register(
            "controller_allocations",
            "Allocation attempts by outcome",
            self.allocations.clone(),
        );
        registry.register(
            "controller_config_stale",
            "1 when the current LoadBalancerConfig is rejected and the last valid one is in force",
            self.config_stale.clone(),
        );
    }
}
