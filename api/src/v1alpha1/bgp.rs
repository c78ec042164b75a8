use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_false;

/// A BGP router that speakers on the selected nodes open a session with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeer {
    /// Name of the peer (a DNS-1123 label), unique among peers; BGP advertisements select peers by
    /// this name.
    pub name: String,

    /// Autonomous system number of the speakers (1-4294967295; 4-byte ASNs are supported).
    #[serde(rename = "myASN")]
    #[schemars(range(min = 1))]
    pub my_asn: u32,

    /// Autonomous system number of the peer (1-4294967295). Equal to myASN: an iBGP session.
    #[serde(rename = "peerASN")]
    #[schemars(range(min = 1))]
    pub peer_asn: u32,

    /// IPv4 or IPv6 address of the peer.
    pub peer_address: String,

    /// TCP port of the peer (1-65535).
    #[serde(
        default = "default_peer_port",
        skip_serializing_if = "is_default_peer_port"
    )]
    #[schemars(range(min = 1))]
    pub peer_port: u16,

    /// Local address the session is opened from; it must be configured on the nodes. Absent: the
    /// kernel chooses by route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,

    /// BGP router ID (an IPv4 address) the speakers present. Absent: the node's IPv4 address that
    /// faces the peer.
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,

    /// Hold time proposed to the peer, as a duration in whole seconds (90s, 3m): 0s disables
    /// keepalives, otherwise at least 3s.
    #[serde(default = "default_hold_time")]
    pub hold_time: String,

    /// Interval between keepalives, at most the hold time. Absent: a third of the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,

    /// Secret holding the TCP-MD5 password of the session, in the operand namespace. Passwords
    /// are never accepted inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,

    /// Allow an eBGP peer that is more than one hop away (sends with TTL 255). Not valid for iBGP,
    /// which is never limited to one hop.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ebgp_multi_hop: bool,

    /// Name of a BFD profile in spec.bfdProfiles: run BFD with this peer and drop the session as
    /// soon as BFD declares it down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,

    /// Advertise the graceful restart capability (RFC 4724), so the peer keeps our routes while a
    /// speaker restarts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub graceful_restart: bool,

    /// Nodes that peer with this router, as label selectors on Node objects (a node matching any
    /// of them qualifies). Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
}

/// A key of a Secret in the operand namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_password_key")]
    pub key: String,
}

/// Announce some pools over BGP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpAdvertisement {
    /// Name of the advertisement (a DNS-1123 label), unique among BGP advertisements.
    pub name: String,

    /// Pools announced by this advertisement. Empty: every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_pools: Vec<String>,

    /// Prefix length announced for IPv4 addresses (0-32). 32 announces each IP; shorter lengths
    /// aggregate, but may not be shorter than the prefix of any selected pool's address entry.
    #[serde(default = "default_aggregation_length")]
    #[schemars(range(max = 32))]
    pub aggregation_length: u8,

    /// Prefix length announced for IPv6 addresses (0-128), as aggregationLength for IPv4.
    #[serde(
        rename = "aggregationLengthV6",
        default = "default_aggregation_length_v6"
    )]
    #[schemars(range(max = 128))]
    pub aggregation_length_v6: u8,

    /// LOCAL_PREF attribute of the announced routes (sent to iBGP peers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,

    /// Communities attached to the announced routes: standard (65000:100), large
    /// (large:65000:1:2) or well-known names (no-export, no-advertise, no-peer, blackhole, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,

    /// Names of the BGP peers to announce to. Empty: every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,

    /// Nodes that announce (become next hops), as label selectors on Node objects. Empty: every
    /// node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
}

/// Timers of a BFD session (RFC 5880), shared by the peers that name the profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdProfile {
    /// Name of the profile (a DNS-1123 label), unique among BFD profiles.
    pub name: String,

    /// Minimum interval between received control packets, in milliseconds (10-60000).
    #[serde(default = "default_bfd_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: u32,

    /// Minimum interval between transmitted control packets, in milliseconds (10-60000).
    #[serde(default = "default_bfd_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: u32,

    /// Number of missed packets after which the session is declared down (2-255).
    #[serde(default = "default_detect_multiplier")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: u32,

    /// Minimum interval between echo packets, in milliseconds (10-60000), when echoMode is on.
    #[serde(default = "default_echo_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: u32,

    /// Use BFD echo packets (IPv4 single-hop only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub echo_mode: bool,

    /// Wait for the peer to start the session instead of sending first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub passive_mode: bool,

    /// Lowest TTL accepted on incoming packets of multi-hop sessions (1-254).
    #[serde(default = "default_minimum_ttl")]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: u32,
}

/// BGP's registered port.
pub const BGP_PORT: u16 = 179;

fn default_peer_port() -> u16 {
    BGP_PORT
}

fn is_default_peer_port(port: &u16) -> bool {
    *port == BGP_PORT
}

fn default_hold_time() -> String {
    "90s".to_owned()
}

fn default_password_key() -> String {
    "password".to_owned()
}

fn default_aggregation_length() -> u8 {
    32
}

fn default_aggregation_length_v6() -> u8 {
    128
}

fn default_bfd_interval() -> u32 {
    300
}

fn default_detect_multiplier() -> u32 {
    3
}

fn default_echo_interval() -> u32 {
    50
}

fn default_minimum_ttl() -> u32 {
    254
}
