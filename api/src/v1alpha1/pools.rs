use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{default_true, is_false, is_true};

/// A named set of addresses that Services can receive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressPool {
    /// Name of the pool (a DNS-1123 label), unique among pools. Services ask for it with the
    /// annotation ferrolb.io/address-pool; advertisements refer to it.
    pub name: String,

    /// Addresses in the pool, each a CIDR (203.0.113.0/28, 2001:db8::/64) or an inclusive range
    /// (198.51.100.10-198.51.100.20). IPv4 and IPv6 may be mixed in one pool, which is how a
    /// dual-stack Service gets both families from it. No address may be in two pools, and none
    /// may be one that no Service can have: 0.0.0.0/8, loopback, multicast, 255.255.255.255, ::,
    /// and IPv4 written as IPv6 (::ffff:0:0/96, ::/96: write the IPv4 range instead).
    #[schemars(length(min = 1))]
    pub addresses: Vec<String>,

    /// Whether Services that name no pool may receive addresses from this pool. When false, only
    /// Services that ask for the pool by annotation, or for one of its IPs, get its addresses.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub auto_assign: bool,

    /// Skip IPv4 addresses ending in .0 and .255, which some old client stacks drop as
    /// network or broadcast addresses.
    #[serde(rename = "avoidBuggyIPs", default, skip_serializing_if = "is_false")]
    pub avoid_buggy_ips: bool,

    /// Restrict or prefer this pool for some Services. Absent: any Service may use the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_to: Option<AllocateTo>,
}

/// Which Services a pool serves, and how strongly it is preferred for them.
///
/// A Service matches when it passes every non-empty criterion: its namespace is listed in
/// `namespaces` or matched by one of `namespaceSelectors` (either suffices when both are set), and
/// it is matched by one of `serviceSelectors`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AllocateTo {
    /// Preference among the pools that match a Service: lower numbers are tried first; pools
    /// without a priority come after all pools with one, then by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,

    /// Namespaces whose Services may use this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// Label selectors on Namespace objects; Services in a matching namespace may use this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,

    /// Label selectors on Services; a Service matching any of them may use this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}
