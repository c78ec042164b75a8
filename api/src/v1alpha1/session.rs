//! `BGPSession`: one BGP session of one node's speaker, as that speaker sees it. Written by the
//! speakers only (one object per node and peer, in the operand namespace, owned by the speaker
//! pod), so that `kubectl get bgpsessions -n ferrolb-system` shows every session at once.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which session this is: the node, and the peer of the LoadBalancerConfig's bgpPeers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BGPSession",
    plural = "bgpsessions",
    shortname = "bgps",
    namespaced,
    doc = "One BGP session of one node's speaker with one peer, as that speaker sees it (written by the speakers; read-only for people).",
    category = "ferrolb",
    status = "BgpSessionStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Peer","type":"string","jsonPath":".spec.peer"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Up","type":"date","jsonPath":".status.establishedSince"}"#,
    printcolumn = r#"{"name":"Routes","type":"integer","jsonPath":".status.routesSent"}"#,
    printcolumn = r#"{"name":"BFD","type":"string","jsonPath":".status.bfd.state"}"#,
    printcolumn = r#"{"name":"Last error","type":"string","jsonPath":".status.lastError","priority":0}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BgpSessionSpec {
    /// The node whose speaker holds the session.
    pub node: String,
    /// Name of the peer in the LoadBalancerConfig's spec.bgpPeers.
    pub peer: String,
    /// Address of the peer.
    pub peer_address: String,
    /// AS number of the peer: the configured peerASN or, for a peer with dynamicASN, the one it
    /// presented in its last OPEN (absent until it has sent one).
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    pub peer_asn: Option<u32>,
    /// AS number the speaker presents.
    #[serde(rename = "myASN")]
    pub my_asn: u32,
}

/// The session's state as the node's speaker last reported it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BgpSessionStatus {
    /// BGP finite-state-machine state (RFC 4271): Idle, Connect, Active, OpenSent, OpenConfirm or
    /// Established.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// When the session last became Established, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_since: Option<Time>,
    /// When the session last left Established (or the speaker started without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since: Option<Time>,
    /// Prefixes the peer holds from this node.
    #[serde(default)]
    pub routes_sent: u64,
    /// Why the session, or the last attempt to open it, failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The BFD session with the peer, when the peer names a bfdProfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSessionStatus>,
}

/// A BFD session (RFC 5880) alongside a BGP session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BfdSessionStatus {
    /// AdminDown, Down, Init or Up; absent while the session cannot run (see lastError).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// The negotiated interval between the speaker's control packets, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u64>,
    /// How long the peer may stay silent before the session goes down, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection_time: Option<u64>,
    /// How often the session went from Up to Down, taking the BGP session down with it.
    #[serde(default)]
    pub down_events: u64,
    /// Why the BFD session cannot run (the BGP session then runs without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
