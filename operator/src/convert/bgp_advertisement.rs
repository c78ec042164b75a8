//! BGPAdvertisement (`metallb.io/v1beta1`) → `spec.bgpAdvertisements[]`.
//!
//! | MetalLB | FerroLB |
//! |---|---|
//! | `metadata.name` | `name` |
//! | `spec.ipAddressPools`, `spec.ipAddressPoolSelectors` | `addressPools` (selectors resolved to names; neither: every pool) |
//! | `spec.aggregationLength`, `spec.aggregationLengthV6` | `aggregationLength`, `aggregationLengthV6` |
//! | `spec.localPref` | `localPref` |
//! | `spec.communities` | `communities` (aliases by the name their Community entry got) |
//! | `spec.peers` | `peers` (BGPPeer names, renamed as the peers are) |
//! | `spec.nodeSelectors` | `nodeSelectors` |
//! | `spec.serviceSelectors` | `serviceSelectors` |

use ferrolb_api::community::{self, Community, CommunityError};
use ferrolb_api::v1alpha1::BgpAdvertisement;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use super::Converter;
use super::findings::{Source, json};
use super::input::Object;

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Spec {
    aggregation_length: Option<i64>,
    #[serde(rename = "aggregationLengthV6")]
    aggregation_length_v6: Option<i64>,
    local_pref: Option<u32>,
    #[serde(default)]
    communities: Vec<String>,
    #[serde(default)]
    ip_address_pools: Vec<String>,
    #[serde(default)]
    ip_address_pool_selectors: Vec<LabelSelector>,
    #[serde(default)]
    node_selectors: Vec<LabelSelector>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    service_selectors: Vec<LabelSelector>,
}

pub(super) fn convert(c: &mut Converter, object: &Object) {
    let source = &object.source;
    let Some(spec) = c.read_known::<Spec>(object) else {
        return;
    };
    let lengths = [
        ("spec.aggregationLength", spec.aggregation_length, 32),
        ("spec.aggregationLengthV6", spec.aggregation_length_v6, 128),
    ];
    let mut aggregation = [32u8, 128u8];
    for (slot, (field, length, default)) in aggregation.iter_mut().zip(lengths) {
        match length.map(u8::try_from) {
            None => *slot = default,
            Some(Ok(length)) => *slot = length,
            Some(Err(_)) => {
                c.essential(
                    source,
                    field,
                    json(&length),
                    "not a prefix length: the advertisement is not carried over",
                );
                return;
            }
        }
    }
    let Some(peers) = peers(c, source, &spec.peers) else {
        return;
    };
    let Some(address_pools) = c.select_pools(
        source,
        &spec.ip_address_pools,
        &spec.ip_address_pool_selectors,
    ) else {
        return;
    };
    let communities = communities(c, source, &spec.communities);
    let name = c.bgp_advertisement_names.assign(&source.name);
    c.renamed(source, &name);
    let path = format!(
        "spec.bgpAdvertisements[{}]",
        c.spec.bgp_advertisements.len()
    );
    c.came_from(path, source);
    c.spec.bgp_advertisements.push(BgpAdvertisement {
        name,
        address_pools,
        aggregation_length: aggregation[0],
        aggregation_length_v6: aggregation[1],
        local_pref: spec.local_pref,
        communities,
        peers,
        node_selectors: spec.node_selectors,
        service_selectors: spec.service_selectors,
    });
}

/// The FerroLB names of the peers listed (empty: every peer); `None` when it lists peers but
/// none of them was carried over, so it announces to no one.
fn peers(c: &mut Converter, source: &Source, names: &[String]) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match c.peers.iter().find(|p| p.metallb == *name) {
            Some(peer) => {
                if !out.contains(&peer.name) {
                    out.push(peer.name.clone());
                }
            }
            None if c.dropped_peers.contains(name) => {}
            None => {
                let message = format!(
                    "no BGPPeer of this name in namespace {}: dropped",
                    c.namespace
                );
                c.cosmetic(source, &format!("spec.peers[{i}]"), json(name), message);
            }
        }
    }
    if !names.is_empty() && out.is_empty() {
        c.cosmetic(
            source,
            "spec.peers",
            json(names),
            "none of these peers was carried over: the advertisement is not either, as it would announce to no one (FerroLB reads an empty list as every peer)",
        );
        return None;
    }
    Some(out)
}

/// The communities: literals as written, aliases by their FerroLB name (see [`super::community`]).
fn communities(c: &mut Converter, source: &Source, listed: &[String]) -> Vec<String> {
    let mut out: Vec<(String, Community)> = Vec::new();
    for (i, text) in listed.iter().enumerate() {
        let field = format!("spec.communities[{i}]");
        // MetalLB reads a string without ':' as the name of a Community alias.
        let entry = if text.contains(':') {
            text.clone()
        } else if let Some(name) = c.communities.get(text) {
            name.clone()
        } else {
            let message = format!(
                "no Community in namespace {} defines this name: dropped, so the routes lack it",
                c.namespace
            );
            c.essential(source, &field, json(text), message);
            continue;
        };
        // Only a literal can fail: every alias was given a name that resolves.
        match community::resolve(&entry, &c.spec.communities) {
            None => c.essential(
                source,
                &field,
                json(text),
                format!("dropped, so the routes lack it: {CommunityError}"),
            ),
            Some(community) if out.iter().any(|(_, seen)| *seen == community) => c.note(
                source,
                &field,
                json(text),
                "the same community as an earlier entry: written once",
            ),
            Some(community) => out.push((entry, community)),
        }
    }
    out.into_iter().map(|(text, _)| text).collect()
}
