use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_false;
use crate::duration::parse_duration;

/// A BGP router that speakers on the selected nodes open a session with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::cel::bgp_peer)]
pub struct BgpPeer {
    /// Name of the peer (a DNS-1123 label), unique among peers; BGP advertisements select peers by
    /// this name.
    pub name: String,

    /// Autonomous system number of the speakers (1-4294967295; 4-byte ASNs are supported).
    #[serde(rename = "myASN")]
    #[schemars(range(min = 1))]
    pub my_asn: u32,

    /// Autonomous system number of the peer (1-4294967295). Equal to myASN: an iBGP session.
    /// Exactly one of peerASN and dynamicASN is set.
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub peer_asn: Option<u32>,

    /// Accept the peer's AS number from its OPEN instead of configuring it: `internal` accepts only
    /// myASN (iBGP), `external` any other AS (eBGP), as with FRR's `remote-as internal` and
    /// `remote-as external`. For routers whose AS differs per rack while one peer entry serves all
    /// racks. Exactly one of peerASN and dynamicASN is set.
    #[serde(
        rename = "dynamicASN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicAsn>,

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
    /// keepalives, otherwise at least 3s and at most 65535s. Absent: three times keepaliveTime
    /// when that is set (as MetalLB derives it), otherwise 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::validate::MAX_TIMER_TEXT))]
    pub hold_time: Option<String>,

    /// Interval between keepalives, as a duration in whole seconds, at most the hold time.
    /// Absent: a third of the hold time, rounded down to whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::validate::MAX_TIMER_TEXT))]
    pub keepalive_time: Option<String>,

    /// Time between two attempts to open the session while it is down, as a duration in whole
    /// seconds (1s-65535s), like FRR's `timers connect`. Absent: 1s, doubling after each failed
    /// attempt up to 60s (with jitter), back to 1s once a session has stayed up for a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::validate::MAX_TIMER_TEXT))]
    pub connect_time: Option<String>,

    /// Linux VRF device on the nodes that the session runs in (the socket is bound to it with
    /// SO_BINDTODEVICE), as MetalLB's `vrf`: the peer is reached through the VRF's routing table
    /// and the routes go to the router on the VRF's side. Absent: the default VRF. A node without
    /// the device has no session with this peer, and its BGPSession says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,

    /// Secret holding the TCP-MD5 password of the session, in the operand namespace. Passwords
    /// are never accepted inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,

    /// Allow an eBGP peer that is more than one hop away. Not valid for iBGP, which is never
    /// limited to one hop. The speakers send with TTL 255 on every session either way, which
    /// single-hop peers accept and GTSM (ttl-security) requires.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ebgp_multi_hop: bool,

    /// Name of a BFD profile in spec.bfdProfiles: run BFD with this peer and drop the session as
    /// soon as BFD declares it down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,

    /// Advertise the graceful restart capability (RFC 4724, restart time 120s): a speaker that
    /// restarts (an upgrade, a crash) closes the session without a NOTIFICATION, and the peer
    /// keeps its routes until the new process has sent them again. The router must be a
    /// graceful-restart helper (FRR and BIRD are by default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub graceful_restart: bool,

    /// Nodes that peer with this router, as label selectors on Node objects (a node matching any
    /// of them qualifies). Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
}

/// Accept the peer's AS number from its OPEN instead of configuring it: `internal` accepts only
/// myASN (iBGP), `external` any other AS (eBGP), as with FRR's `remote-as internal` and
/// `remote-as external`. For routers whose AS differs per rack while one peer entry serves all
/// racks. Exactly one of peerASN and dynamicASN is set.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsn {
    /// myASN only: an iBGP session.
    Internal,
    /// Any AS but myASN: an eBGP session.
    External,
}

/// The hold time of a peer that sets neither holdTime nor keepaliveTime (RFC 4271 suggests 90 s).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);

impl BgpPeer {
    /// Whether the session is iBGP: peerASN equals myASN, or dynamicASN is `internal`.
    pub fn is_ibgp(&self) -> bool {
        match (self.peer_asn, self.dynamic_asn) {
            (Some(asn), _) => asn == self.my_asn,
            (None, dynamic) => dynamic == Some(DynamicAsn::Internal),
        }
    }

    /// The peer's AS as people read it: `AS 64512`, or `iBGP` / `eBGP` for a dynamic AS.
    pub fn peer_as_text(&self) -> String {
        match (self.peer_asn, self.dynamic_asn) {
            (Some(asn), _) => format!("AS {asn}"),
            (None, Some(DynamicAsn::Internal)) => "iBGP".to_owned(),
            (None, Some(DynamicAsn::External)) => "eBGP".to_owned(),
            (None, None) => "AS unset".to_owned(),
        }
    }

    /// The hold time in force: holdTime; absent, three times keepaliveTime when that is set (as
    /// MetalLB derives it), otherwise [`DEFAULT_HOLD_TIME`]. `None` when a timer that is set is
    /// not a duration (which `validate` rejects).
    pub fn effective_hold_time(&self) -> Option<Duration> {
        match (&self.hold_time, &self.keepalive_time) {
            (Some(hold), _) => parse_duration(hold).ok(),
            (None, Some(keepalive)) => parse_duration(keepalive).ok()?.checked_mul(3),
            (None, None) => Some(DEFAULT_HOLD_TIME),
        }
    }

    /// The keepalive interval in force: keepaliveTime; absent, a third of the hold time in force,
    /// rounded down to whole seconds (0 when the hold time is 0: no keepalives). `None` when a
    /// timer that is set is not a duration.
    pub fn effective_keepalive_time(&self) -> Option<Duration> {
        match &self.keepalive_time {
            Some(keepalive) => parse_duration(keepalive).ok(),
            None => Some(Duration::from_secs(
                self.effective_hold_time()?.as_secs() / 3,
            )),
        }
    }
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
#[schemars(transform = super::cel::bgp_advertisement)]
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
    /// (large:65000:1:2), well-known names (no-export, no-advertise, no-peer, blackhole, ...) or
    /// names of spec.communities entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,

    /// Names of the BGP peers to announce to. Empty: every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,

    /// Nodes that announce (become next hops), as label selectors on Node objects. Empty: every
    /// node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,

    /// Services announced, as label selectors on Service objects (a Service matching any of them
    /// qualifies). Empty: every Service of the pools. An address Services share is announced
    /// only if every one of them that has a ready endpoint qualifies. Requires aggregationLength 32 and
    /// aggregationLengthV6 128 (the defaults), as an aggregate would carry other Services too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
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

    /// Minimum interval between echo packets, in milliseconds (10-60000). Unused: echo mode is
    /// not supported (see echoMode); kept so profiles written for MetalLB still read.
    #[serde(default = "default_echo_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: u32,

    /// Use BFD echo packets. Not supported: validation refuses true, because the speaker runs
    /// BFD in asynchronous mode only; lower the intervals for faster detection instead.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(hold: Option<&str>, keepalive: Option<&str>) -> BgpPeer {
        BgpPeer {
            name: "tor".to_owned(),
            my_asn: 64512,
            peer_asn: Some(64513),
            dynamic_asn: None,
            peer_address: "198.51.100.1".to_owned(),
            peer_port: BGP_PORT,
            source_address: None,
            router_id: None,
            hold_time: hold.map(str::to_owned),
            keepalive_time: keepalive.map(str::to_owned),
            connect_time: None,
            vrf: None,
            password_secret_ref: None,
            ebgp_multi_hop: false,
            bfd_profile: None,
            graceful_restart: false,
            node_selectors: Vec::new(),
        }
    }

    #[test]
    fn timers_in_force_derive_each_other_as_metallb_does() {
        let secs = Duration::from_secs;
        let rows = [
            (None, None, Some(secs(90)), Some(secs(30))),
            (Some("9s"), None, Some(secs(9)), Some(secs(3))),
            (Some("10s"), None, Some(secs(10)), Some(secs(3))),
            (Some("0s"), None, Some(secs(0)), Some(secs(0))),
            (None, Some("120s"), Some(secs(360)), Some(secs(120))),
            (None, Some("0s"), Some(secs(0)), Some(secs(0))),
            (Some("90s"), Some("10s"), Some(secs(90)), Some(secs(10))),
            (Some("90"), None, None, None),
            (None, Some("1 s"), None, None),
        ];
        for (hold, keepalive, want_hold, want_keepalive) in rows {
            let p = peer(hold, keepalive);
            assert_eq!(
                (p.effective_hold_time(), p.effective_keepalive_time()),
                (want_hold, want_keepalive),
                "holdTime {hold:?}, keepaliveTime {keepalive:?}"
            );
        }
    }

    #[test]
    fn an_absent_hold_time_is_not_written_back() {
        let yaml = serde_saphyr::to_string(&peer(None, Some("120s"))).unwrap();
        assert!(!yaml.contains("holdTime"), "{yaml}");
    }
}
