//! Named BGP communities (MetalLB's Community resource), for advertisements to use by name.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A BGP community with a name, so advertisements can write `vpn-only` instead of `64512:300`
/// (MetalLB's Community resource).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedCommunity {
    /// Name that bgpAdvertisements[].communities may use (a DNS-1123 label), unique among named
    /// communities, and not a well-known community's name (no-export, blackhole, ...).
    pub name: String,

    /// The community: standard (64512:300), large (large:64512:1:2) or well-known (no-export,
    /// no-advertise, ...).
    pub value: String,
}
