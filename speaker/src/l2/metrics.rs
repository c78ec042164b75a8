//! The Layer 2 responder's Prometheus metrics (names follow MetalLB's `metallb_layer2_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of every Layer 2 counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L2Labels {
    /// `ipv4` (ARP) or `ipv6` (NDP).
    pub family: String,
    /// The interface the frame was received or sent on.
    pub interface: String,
}

impl L2Labels {
    /// Labels for `ip`'s family on `interface`.
    pub fn new(ip: std::net::IpAddr, interface: &str) -> L2Labels {
        L2Labels {
            family: if ip.is_ipv4() { "ipv4" } else { "ipv6" }.to_owned(),
            interface: interface.to_owned(),
        }
    }
}

/// Every metric the Layer 2 responder exports.
#[derive(Clone, Debug, Default)]
pub struct L2Metrics {
    /// ARP requests and neighbor solicitations received for an address answered on the interface.
    pub requests_received: Family<L2Labels, Counter>,
    /// ARP replies and solicited neighbor advertisements sent.
    pub replies_sent: Family<L2Labels, Counter>,
    /// Gratuitous ARP and unsolicited neighbor advertisement frames sent.
    pub gratuitous_sent: Family<L2Labels, Counter>,
}

impl L2Metrics {
    /// Registers the metrics under `registry` (prefixed `ferrolb_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "layer2_requests_received",
            "ARP requests and neighbor solicitations received for an address this node answers for",
            self.requests_received.clone(),
        );
        registry.register(
            "layer2_responses_sent",
            "ARP replies and solicited neighbor advertisements sent",
            self.replies_sent.clone(),
        );
        registry.register(
            "layer2_gratuitous_sent",
            "Gratuitous ARP and unsolicited neighbor advertisement frames sent",
            self.gratuitous_sent.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_counters_are_encoded_with_family_and_interface() {
        let metrics = L2Metrics::default();
        let mut registry = Registry::with_prefix("ferrolb");
        metrics.register(&mut registry);
        metrics
            .replies_sent
            .get_or_create(&L2Labels::new("198.51.100.250".parse().unwrap(), "eth0"))
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"ferrolb_layer2_responses_sent_total{family="ipv4",interface="eth0"} 1"#
            ),
            "{text}"
        );
    }
}
