//! The CRD's CEL rules (`x-kubernetes-validations`): defence in depth for when the admission
//! webhook is down. Each is a cheap check of one list item that the OpenAPI schema alone cannot
//! express, and each rejects only what [`crate::validate`] rejects too (the CRD's tests walk the
//! generated schema for every rule and name the validator's case it stands for).
//!
//! The API server runs these rules before any admission webhook, so a rule's message replaces
//! the webhook's report of every problem for the objects it rejects. Hence few rules, each for a
//! value that is clearly wrong; a malformed value, which the webhook explains better, passes them.

use schemars::Schema;
use serde_json::{Value, json};

/// A duration that CEL's `duration()` (Go's syntax) parses to the same value as
/// [`crate::duration::parse_duration`]: at most five digits a number, so no sum of them passes
/// Go's limit of about 292 years. A timer rule checks this first and lets anything else (a
/// malformed timer, or a bare 0) pass to the webhook. Short, since the API server counts a
/// regex's cost by its length.
const DURATION: &str = "^([0-9]{1,5}(ms|[hms]))+$";

/// The rules, messages and field paths of each `spec.bgpPeers[*]`. They sit on the peer, not on
/// its fields, because the API server estimates a rule's cost times the times it may run, and a
/// string may occur far more often in a request than a peer.
pub(crate) fn bgp_peer_rules() -> [(String, &'static str, &'static str); 4] {
    [
        (
            "has(self.peerASN) != has(self.dynamicASN)".to_owned(),
            "exactly one of peerASN and dynamicASN must be set",
            ".peerASN",
        ),
        (
            format!(
                "!has(self.holdTime) || !self.holdTime.matches('{DURATION}') || duration(self.holdTime) == duration('0s') || duration(self.holdTime) >= duration('3s')"
            ),
            "holdTime must be 0s (no keepalives) or at least 3s",
            ".holdTime",
        ),
        (
            format!(
                "!has(self.holdTime) || !has(self.keepaliveTime) || !self.holdTime.matches('{DURATION}') || !self.keepaliveTime.matches('{DURATION}') || duration(self.keepaliveTime) <= duration(self.holdTime)"
            ),
            "keepaliveTime must not exceed holdTime",
            ".keepaliveTime",
        ),
        (
            "!has(self.ebgpMultiHop) || !self.ebgpMultiHop || (has(self.peerASN) ? self.myASN != self.peerASN : !has(self.dynamicASN) || self.dynamicASN != 'internal')"
                .to_owned(),
            "ebgpMultiHop applies to eBGP only; this peer is iBGP (myASN equals peerASN, or dynamicASN is internal)",
            ".ebgpMultiHop",
        ),
    ]
}

/// The rules, messages and field paths of each `spec.bgpAdvertisements[*]`: MetalLB's rule that
/// serviceSelectors come with host routes only (its CRD has it as CEL too). Cheap: a size and
/// two comparisons per advertisement.
pub(crate) fn bgp_advertisement_rules() -> [(String, &'static str, &'static str); 2] {
    let selective = "has(self.serviceSelectors) && size(self.serviceSelectors) > 0";
    [
        (
            format!(
                "!({selective}) || !has(self.aggregationLength) || self.aggregationLength == 32"
            ),
            "aggregationLength must be 32 when serviceSelectors is set",
            ".aggregationLength",
        ),
        (
            format!(
                "!({selective}) || !has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128"
            ),
            "aggregationLengthV6 must be 128 when serviceSelectors is set",
            ".aggregationLengthV6",
        ),
    ]
}

/// Schema transform of `BgpPeer`.
pub(super) fn bgp_peer(schema: &mut Schema) {
    insert_rules(schema, &bgp_peer_rules());
}

/// Schema transform of `BgpAdvertisement`.
pub(super) fn bgp_advertisement(schema: &mut Schema) {
    insert_rules(schema, &bgp_advertisement_rules());
}

fn insert_rules(schema: &mut Schema, rules: &[(String, &str, &str)]) {
    let rules = rules.iter().map(|(rule, message, field_path)| {
        json!({"rule": rule, "message": message, "fieldPath": field_path})
    });
    schema.insert(
        "x-kubernetes-validations".to_owned(),
        Value::Array(rules.collect()),
    );
}
