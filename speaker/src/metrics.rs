//! The speaker's own Prometheus metrics; the responder and the membership export theirs.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What the event loop exports.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Addresses this node announces now.
    pub announced: Gauge,
    /// Addresses this node started announcing (took leadership of).
    pub gained: Counter,
    /// Addresses this node stopped announcing (lost leadership of).
    pub lost: Counter,
    /// Speakers considered alive, this one included.
    pub live_speakers: Gauge,
    /// 1 while the LoadBalancerConfig in the cluster is invalid and the last valid one is used.
    pub config_stale: Gauge,
}

impl Metrics {
    /// Registers the metrics under `registry` (prefixed `ferrolb_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "speaker_announced_addresses",
            "Addresses this node announces now",
            self.announced.clone(),
        );
        registry.register(
            "speaker_leadership_gained",
            "Addresses this node started announcing",
            self.gained.clone(),
        );
        registry.register(
            "speaker_leadership_lost",
            "Addresses this node stopped announcing",
            self.lost.clone(),
        );
        registry.register(
            "speaker_live_speakers",
            "Speakers considered alive, this one included",
            self.live_speakers.clone(),
        );
        registry.register(
            "speaker_config_stale",
            "1 while the LoadBalancerConfig is invalid and the last valid one is used",
            self.config_stale.clone(),
        );
    }
}
