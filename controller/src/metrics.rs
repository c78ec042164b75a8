//! The controller's Prometheus metrics (names follow MetalLB's where they mean the same).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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

/// Labels of the allocation latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `queued`: from the watch event being received to the reconcile starting; `api`: the
    /// writes (pool annotation, then status) until the API server acknowledged the status;
    /// `total`: from the watch event being received to that acknowledgement.
    pub stage: &'static str,
}

/// Labels of failed API writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `service_status`, `annotation` or `pool_usage`.
    pub target: &'static str,
    /// `error` (the API server refused or the connection failed) or `timeout`.
    pub cause: &'static str,
}

/// Buckets from 0.25 ms to about 4 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// Every metric the controller exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Addresses a pool can hand out (f64: a /64 does not fit an i64 gauge).
    pub addresses_total: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Addresses in use.
    pub addresses_in_use: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Allocation attempts by outcome.
    pub allocations: Family<ResultLabels, Counter>,
    /// 1 while the newest LoadBalancerConfig is rejected and an older one is in force.
    pub config_stale: Gauge,
    /// Where the time goes between a Service's watch event and its new addresses in status.
    pub allocation_latency: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// API writes that failed or timed out (each is retried).
    pub write_failures: Family<WriteLabels, Counter>,
    /// Services waiting to be written again after a failed write.
    pub retries_pending: Gauge,
    /// Periodic resyncs done.
    pub resyncs: Counter,
    /// 1 while this replica leads (holds the Lease and may write).
    pub leader: Gauge,
    /// Times this replica became or stopped being the leader.
    pub leader_transitions: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            addresses_total: Family::default(),
            addresses_in_use: Family::default(),
            allocations: Family::default(),
            config_stale: Gauge::default(),
            allocation_latency: Family::new_with_constructor(latency_histogram),
            write_failures: Family::default(),
            retries_pending: Gauge::default(),
            resyncs: Counter::default(),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
        }
    }
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
        registry.register(
            "controller_allocation_latency_seconds",
            "Seconds from a Service's watch event to the API server acknowledging its new addresses, by stage (queued, api, total)",
            self.allocation_latency.clone(),
        );
        registry.register(
            "controller_write_failures",
            "API writes that failed or timed out, by target (service_status, annotation, pool_usage) and cause (error, timeout); each is retried",
            self.write_failures.clone(),
        );
        registry.register(
            "controller_retries_pending",
            "Services waiting to be written again after a failed write",
            self.retries_pending.clone(),
        );
        registry.register(
            "controller_resyncs",
            "Periodic resyncs: every Service compared with its decision again",
            self.resyncs.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the controller Lease and may write",
            self.leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this replica became or stopped being the leader",
            self.leader_transitions.clone(),
        );
    }
}
