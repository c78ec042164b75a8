//! `ferrolb.io/v1alpha1`: the one `LoadBalancerConfig` that describes a whole FerroLB installation.
//!
//! Doc comments on every field become the CRD's descriptions, so they are written for the admin who
//! runs `kubectl explain loadbalancerconfig.spec`.

mod bgp;
pub(crate) mod cel;
mod communities;
mod l2;
mod pools;
mod session;
mod status;
mod workloads;

pub use bgp::{BfdProfile, BgpAdvertisement, BgpPeer, DEFAULT_HOLD_TIME, DynamicAsn, SecretKeyRef};
pub use communities::NamedCommunity;
pub use l2::{L2Advertisement, PreferredNodeSelector};
pub use pools::{AddressPool, AllocateTo};
pub use session::{BGPSession, BfdSessionStatus, BgpSessionSpec, BgpSessionStatus};
pub use status::{
    FamilyUsage, LoadBalancerConfigStatus, OperatorVersions, PoolUsage, RolloutStatus,
    condition_types,
};
pub use workloads::{ControllerSpec, Placement, SpeakerSpec};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of FerroLB: where it runs, how it logs, which Services it serves, the address pools
/// it hands out and how those addresses are announced (Layer 2 and/or BGP).
///
/// Exactly one LoadBalancerConfig may exist in a cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "LoadBalancerConfig",
    shortname = "lbc",
    doc = "The one cluster-wide configuration of FerroLB: address pools, how they are announced, and how the operator runs the controller and speakers.",
    category = "ferrolb",
    status = "LoadBalancerConfigStatus",
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Progressing","type":"string","jsonPath":".status.conditions[?(@.type==\"Progressing\")].status"}"#,
    printcolumn = r#"{"name":"Degraded","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerConfigSpec {
    /// Namespace in which the operator runs the controller and the speakers. The operator creates
    /// it and labels it for privileged pods (the speaker needs host networking and raw sockets).
    #[serde(default = "default_namespace")]
    pub namespace: String,

    /// Verbosity of the controller and speakers: one of error, warn, info, debug, trace.
    #[serde(default = "default_log_level")]
    #[schemars(extend("enum" = ["error", "warn", "info", "debug", "trace"]))]
    pub log_level: String,

    /// Services whose spec.loadBalancerClass equals this value are handled. Empty (the default):
    /// only Services without a loadBalancerClass are handled, as with a cloud provider's
    /// built-in load balancer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub load_balancer_class: String,

    /// Scheduling and resources of the controller Deployment, which assigns IPs to Services.
    #[serde(default)]
    pub controller: ControllerSpec,

    /// Scheduling and resources of the speaker DaemonSet, which announces IPs from every node.
    #[serde(default)]
    pub speaker: SpeakerSpec,

    /// Ranges of IP addresses that Services of type LoadBalancer may receive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_pools: Vec<AddressPool>,

    /// Which pools are announced with Layer 2 (ARP for IPv4, NDP for IPv6), and from which nodes
    /// and interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub l2_advertisements: Vec<L2Advertisement>,

    /// BGP routers the speakers open sessions with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bgp_peers: Vec<BgpPeer>,

    /// Which pools are announced over BGP, to which peers, from which nodes, and with which
    /// attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bgp_advertisements: Vec<BgpAdvertisement>,

    /// Named BGP communities, which bgpAdvertisements[].communities may use by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<NamedCommunity>,

    /// BFD timer profiles that BGP peers refer to by name for fast failure detection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bfd_profiles: Vec<BfdProfile>,
}

/// The namespace the operands run in when `spec.namespace` is not set.
pub const DEFAULT_NAMESPACE: &str = "ferrolb-system";

/// Log levels accepted by `spec.logLevel`, from least to most verbose.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for LoadBalancerConfigSpec {
    fn default() -> Self {
        Self {
            namespace: default_namespace(),
            log_level: default_log_level(),
            load_balancer_class: String::new(),
            controller: ControllerSpec::default(),
            speaker: SpeakerSpec::default(),
            address_pools: Vec::new(),
            l2_advertisements: Vec::new(),
            bgp_peers: Vec::new(),
            bgp_advertisements: Vec::new(),
            communities: Vec::new(),
            bfd_profiles: Vec::new(),
        }
    }
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_true(b: &bool) -> bool {
    *b
}

pub(crate) fn default_true() -> bool {
    true
}
