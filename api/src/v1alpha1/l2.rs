use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Announce some pools with Layer 2: one node at a time answers ARP (IPv4) and NDP (IPv6) for each
/// IP, and another takes over within a second when it fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L2Advertisement {
    /// Name of the advertisement (a DNS-1123 label), unique among L2 advertisements.
    pub name: String,

    /// Pools announced by this advertisement. Empty: every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_pools: Vec<String>,

    /// Nodes that may announce, as label selectors on Node objects (a node matching any of them
    /// qualifies). Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,

    /// Services announced, as label selectors on Service objects (a Service matching any of them
    /// qualifies). Empty: every Service of the pools. An address Services share is announced
    /// only if every one of them that has a ready endpoint qualifies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,

    /// Nodes preferred as the one that announces each address: among the nodes that may, the
    /// leader is one with the highest total weight of the preferences it matches (summed over
    /// every advertisement of the address), and the usual ranking picks among those. Preferred
    /// nodes take their addresses back when they return. Empty: no preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,

    /// Network interfaces to announce on (names as on the nodes, e.g. eth0). Empty: every
    /// eligible interface that spec.speaker.excludeInterfaces does not exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

/// A weighted preference for some nodes, as in a Pod's preferred node affinity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferredNodeSelector {
    /// Weight (1-100) a matching node gains.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,

    /// The nodes preferred, as a label selector on Node objects.
    pub preference: LabelSelector,
}
