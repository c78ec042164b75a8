//! Warnings: what a valid configuration says that is probably not what its admin meant, such as
//! a pool that nothing announces. They never reject; the webhook returns them as admission
//! warnings and `ferrolb-operator validate` prints them.
//!
//! Pure, like the validator, and meant for configurations that pass [`super::validate`]: on an
//! invalid one they may be incomplete, but they never panic.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::selector::{list_matches, selector_lists_overlap};
use crate::v1alpha1::LoadBalancerConfigSpec;

/// Something valid but probably wrong in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// JSON path of the field, e.g. `spec.addressPools[1]`.
    pub path: String,
    /// What is probably wrong, and what follows from it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The warnings about `spec`, in the order of the fields. `nodes` are the label maps of the
/// cluster's nodes; `None` when they are unknown (offline), which skips the warnings about
/// selectors that select no node.
pub fn warnings(
    spec: &LoadBalancerConfigSpec,
    nodes: Option<&[BTreeMap<String, String>]>,
) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut warn = |path: String, message: String| out.push(Warning { path, message });

    // The nodes a speaker runs on: only there can anything be announced.
    let speaker_nodes: Option<Vec<&BTreeMap<String, String>>> = nodes.map(|nodes| {
        let wanted = &spec.speaker.placement.node_selector;
        nodes
            .iter()
            .filter(|labels| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .collect()
    });
    if let (Some(nodes), Some(speakers)) = (nodes, &speaker_nodes)
        && !nodes.is_empty()
        && speakers.is_empty()
    {
        warn(
            "spec.speaker.nodeSelector".to_owned(),
            format!(
                "matches none of the cluster's {}: no speaker would run, so no address would be announced",
                match nodes.len() {
                    1 => "1 node".to_owned(),
                    n => format!("{n} nodes"),
                }
            ),
        );
    }
    // Selectors that select none of the speakers' nodes (when some exist: else the speaker's own
    // warning says it all).
    let selects_no_speaker = |selectors: &[LabelSelector]| -> Option<usize> {
        let speakers = speaker_nodes.as_ref().filter(|s| !s.is_empty())?;
        let none = !selectors.is_empty()
            && !speakers
                .iter()
                .any(|labels| list_matches(selectors, labels));
        none.then_some(speakers.len())
    };
    let nodes_phrase = |n: usize| {
        if n == 1 {
            "the 1 node that runs a speaker".to_owned()
        } else {
            format!("the {n} nodes that run a speaker")
        }
    };

    let in_list = |list: &[String], name: &str| list.is_empty() || list.iter().any(|n| n == name);
    for (i, pool) in spec.address_pools.iter().enumerate() {
        let announced = spec
            .l2_advertisements
            .iter()
            .any(|ad| in_list(&ad.address_pools, &pool.name))
            || spec
                .bgp_advertisements
                .iter()
                .any(|ad| in_list(&ad.address_pools, &pool.name));
        if !announced {
            warn(
                format!("spec.addressPools[{i}]"),
                format!(
                    "no L2 or BGP advertisement selects pool {:?}: Services would get its addresses, but no node would announce them",
                    pool.name
                ),
            );
        }
        if !pool.auto_assign
            && let Some(priority) = pool.allocate_to.as_ref().and_then(|to| to.priority)
        {
            warn(
                format!("spec.addressPools[{i}].allocateTo.priority"),
                format!(
                    "{priority} has no effect while autoAssign is false: priority only orders the pools chosen for Services that name none"
                ),
            );
        }
    }

    for (i, ad) in spec.l2_advertisements.iter().enumerate() {
        if let Some(n) = selects_no_speaker(&ad.node_selectors) {
            warn(
                format!("spec.l2Advertisements[{i}].nodeSelectors"),
                format!(
                    "select none of {}: no node would announce this advertisement's pools",
                    nodes_phrase(n)
                ),
            );
        }
    }

    for (i, peer) in spec.bgp_peers.iter().enumerate() {
        let path = format!("spec.bgpPeers[{i}]");
        if let Some(n) = selects_no_speaker(&peer.node_selectors) {
            warn(
                format!("{path}.nodeSelectors"),
                format!(
                    "select none of {}: no node would open a session with peer {:?}",
                    nodes_phrase(n),
                    peer.name
                ),
            );
        }
        let mut announcing = spec
            .bgp_advertisements
            .iter()
            .filter(|ad| in_list(&ad.peers, &peer.name))
            .peekable();
        if announcing.peek().is_none() {
            warn(
                path,
                format!(
                    "no BGP advertisement announces to peer {:?} (none lists it, and none has an empty peers list): its sessions would carry no routes",
                    peer.name
                ),
            );
        } else if !announcing
            .any(|ad| selector_lists_overlap(&ad.node_selectors, &peer.node_selectors))
        {
            warn(
                path,
                format!(
                    "the BGP advertisements that announce to peer {:?} select none of the nodes its nodeSelectors select: its sessions would carry no routes",
                    peer.name
                ),
            );
        }
    }

    for (i, ad) in spec.bgp_advertisements.iter().enumerate() {
        let path = format!("spec.bgpAdvertisements[{i}]");
        if spec.bgp_peers.is_empty() {
            warn(
                path.clone(),
                "spec.bgpPeers is empty: this advertisement announces to no one".to_owned(),
            );
        }
        if let Some(n) = selects_no_speaker(&ad.node_selectors) {
            warn(
                format!("{path}.nodeSelectors"),
                format!(
                    "select none of {}: no node would announce this advertisement's pools",
                    nodes_phrase(n)
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
