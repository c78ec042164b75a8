//! What this node announces with Layer 2: a pure function of the configuration, the Services, their
//! endpoints, the Nodes and the live speakers. Every speaker computes the same answer, so each IP
//! has exactly one leader without any coordination beyond knowing who is alive.
//!
//! The leader of an IP is chosen by rendezvous hashing: each candidate node scores
//! `hash(node, ip)` and the highest score leads. Adding a node moves only the IPs it now scores
//! highest on (about 1/n of them); removing a node that leads nothing moves nothing. When the
//! advertisements of the IP have `preferredNodeSelectors`, only the candidates of the highest
//! total weight are ranked, so a preferred node leads while one is eligible.
//!
//! [`bgp`] decides, from the same inputs and with the same node rules, which routes this node sends
//! to which BGP peer; a pool may be announced both ways at once.
//!
//! [`condition`] decides, as purely, the `ferrolb.io/Announced` condition each Service gets and
//! which speaker writes it.

pub mod bgp;
pub mod condition;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_api::address::AddressRange;
use ferrolb_api::selector::{Labels, list_matches, matches};
use ferrolb_api::v1alpha1::{L2Advertisement, LoadBalancerConfigSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The node label that keeps a node out of external load balancing (as the Kubernetes service
/// controller defines it).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// What the speakers know about a Node.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeView {
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// The Ready condition is True.
    pub ready: bool,
    /// The NetworkUnavailable condition is True.
    pub network_unavailable: bool,
    /// Its InternalIP addresses, in the order of its status (BGP router ID and next hops).
    pub addresses: Vec<IpAddr>,
}

impl NodeView {
    /// Whether the node may announce anything at all: Ready, its network available, and not
    /// labelled [`EXCLUDE_LABEL`] unless `spec.speaker.ignoreExcludeLBLabel` says to ignore it.
    fn usable(&self, config: &LoadBalancerConfigSpec) -> bool {
        self.ready
            && !self.network_unavailable
            && (config.speaker.ignore_exclude_lb_label || !self.labels.contains_key(EXCLUDE_LABEL))
    }
}

/// What the speakers know about a Service that holds addresses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServiceView {
    /// `namespace/name`.
    pub key: String,
    /// Addresses in its status.
    pub ips: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`: only nodes with a ready local endpoint may lead.
    pub local: bool,
    /// Nodes hosting a ready (or serving) endpoint of the Service.
    pub endpoint_nodes: BTreeSet<String>,
    /// The advertisements whose serviceSelectors select it.
    pub selected_by: SelectedBy,
}

/// The advertisements whose `serviceSelectors` select a Service, by name (unique per kind).
/// Advertisements without serviceSelectors select every Service and are not listed, so while
/// none has any (the usual case) both lists are empty: a view carries no labels, and no
/// allocation for them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SelectedBy {
    /// Names of L2 advertisements, sorted.
    pub l2: Vec<String>,
    /// Names of BGP advertisements, sorted.
    pub bgp: Vec<String>,
}

impl SelectedBy {
    /// What selects a Service with `labels` in `config`.
    pub fn of(config: &LoadBalancerConfigSpec, labels: &(impl Labels + ?Sized)) -> Self {
        fn names<'a>(
            ads: impl Iterator<Item = (&'a str, &'a [LabelSelector])>,
            labels: &(impl Labels + ?Sized),
        ) -> Vec<String> {
            let mut names: Vec<String> = ads
                .filter(|(_, s)| !s.is_empty() && list_matches(s, labels))
                .map(|(name, _)| name.to_owned())
                .collect();
            names.sort_unstable();
            names
        }
        let l2 = config.l2_advertisements.iter();
        let bgp = config.bgp_advertisements.iter();
        Self {
            l2: names(
                l2.map(|ad| (ad.name.as_str(), ad.service_selectors.as_slice())),
                labels,
            ),
            bgp: names(
                bgp.map(|ad| (ad.name.as_str(), ad.service_selectors.as_slice())),
                labels,
            ),
        }
    }
}

/// Whether the advertisement `name`, with `selectors`, announces an address all of `users`
/// share: it selects every one of them (a shared address carries the traffic of all). As for
/// serving (see [`bgp`]), a Service without a ready endpoint imposes nothing while another on
/// the address has one. `selected_by` picks the list of the advertisement's kind.
fn selects_all(
    name: &str,
    selectors: &[LabelSelector],
    users: &[&ServiceView],
    selected_by: impl Fn(&SelectedBy) -> &[String],
) -> bool {
    let some_live = users.iter().any(|u| !u.endpoint_nodes.is_empty());
    selectors.is_empty()
        || users
            .iter()
            .filter(|u| !some_live || !u.endpoint_nodes.is_empty())
            .all(|u| {
                selected_by(&u.selected_by)
                    .binary_search_by(|n| n.as_str().cmp(name))
                    .is_ok()
            })
}

/// One IP this node must answer for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Announcement {
    /// The address.
    pub ip: IpAddr,
    /// Interfaces to answer on; empty means every eligible interface.
    pub interfaces: BTreeSet<String>,
    /// Services using the address.
    pub services: Vec<String>,
}

/// The score of `node` for `ip`: FNV-1a over the node name, a separator and the address bytes.
/// Stable across versions and platforms, which is what matters: every speaker must agree.
pub fn score(node: &str, ip: IpAddr) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut hash = OFFSET;
    for b in node.as_bytes().iter().chain(&[0u8]).chain(&bytes) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(PRIME);
    }
    // FNV's low bits mix poorly for similar inputs; a final avalanche (from SplitMix64) fixes it.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The leader among `candidates` for `ip`: the highest score, ties broken by name.
pub fn leader<'a>(ip: IpAddr, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .max_by(|a, b| score(a, ip).cmp(&score(b, ip)).then_with(|| b.cmp(a)))
}

/// The pools' address entries, parsed once, so that finding the pool of each of 10,000 IPs parses
/// nothing. Shared by Layer 2 and BGP.
#[derive(Debug)]
struct PoolIndex {
    /// Every entry that parses, with the position of its pool, in configuration order.
    entries: Vec<(AddressRange, usize)>,
}

impl PoolIndex {
    fn new(config: &LoadBalancerConfigSpec) -> Self {
        let entries = config
            .address_pools
            .iter()
            .enumerate()
            .flat_map(|(i, pool)| {
                pool.addresses
                    .iter()
                    .filter_map(move |a| Some((AddressRange::parse(a).ok()?, i)))
            })
            .collect();
        Self { entries }
    }

    /// The position in `spec.addressPools` of the first pool that holds `ip` (validation keeps
    /// pools from overlapping, so there is at most one).
    fn pool_of(&self, ip: IpAddr) -> Option<usize> {
        self.entries
            .iter()
            .find(|(range, _)| range.contains(ip))
            .map(|&(_, i)| i)
    }
}

/// The L2 advertisements that cover `ip` (by the pool that holds it) for `users`, the Services
/// using it (by their serviceSelectors).
fn advertisements_for<'a>(
    config: &'a LoadBalancerConfigSpec,
    pools: &PoolIndex,
    ip: IpAddr,
    users: &[&ServiceView],
) -> Vec<&'a L2Advertisement> {
    let Some(pool) = pools.pool_of(ip).and_then(|i| config.address_pools.get(i)) else {
        return Vec::new();
    };
    config
        .l2_advertisements
        .iter()
        .filter(|ad| {
            (ad.address_pools.is_empty() || ad.address_pools.contains(&pool.name))
                && selects_all(&ad.name, &ad.service_selectors, users, |s| &s.l2)
        })
        .collect()
}

/// The candidates of the highest preference weight: a node's weight is the sum of the weights
/// of the `preferredNodeSelectors` it matches, over every advertisement of the address (as
/// MetalLB sums them). All candidates when no advertisement prefers any node.
fn most_preferred<'a>(
    ads: &[&L2Advertisement],
    nodes: &BTreeMap<String, NodeView>,
    candidates: Vec<&'a str>,
) -> Vec<&'a str> {
    let preferences: Vec<_> = ads
        .iter()
        .flat_map(|ad| &ad.preferred_node_selectors)
        .collect();
    if preferences.is_empty() {
        return candidates;
    }
    let weight = |node: &str| -> i64 {
        nodes.get(node).map_or(0, |view| {
            preferences
                .iter()
                .filter(|p| matches(&p.preference, &view.labels))
                .map(|p| i64::from(p.weight))
                .sum()
        })
    };
    let weighted: Vec<(&str, i64)> = candidates.into_iter().map(|c| (c, weight(c))).collect();
    let top = weighted.iter().map(|&(_, w)| w).max();
    weighted
        .into_iter()
        .filter(|&(_, w)| Some(w) == top)
        .map(|(c, _)| c)
        .collect()
}

/// The Services using each address.
fn users_by_ip(services: &[ServiceView]) -> BTreeMap<IpAddr, Vec<&ServiceView>> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&ServiceView>> = BTreeMap::new();
    for svc in services {
        for &ip in &svc.ips {
            by_ip.entry(ip).or_default().push(svc);
        }
    }
    by_ip
}

/// One address with an L2 advertisement, and who leads it.
struct Decision<'a> {
    ip: IpAddr,
    leader: Option<&'a str>,
    ads: Vec<&'a L2Advertisement>,
    users: Vec<&'a ServiceView>,
}

/// The leader of every address that has an L2 advertisement. An address leads nowhere (None)
/// when no Service using it has a ready endpoint, or no live node may announce it.
fn decide<'a>(
    config: &'a LoadBalancerConfigSpec,
    services: &'a [ServiceView],
    nodes: &'a BTreeMap<String, NodeView>,
    members: &BTreeSet<String>,
) -> Vec<Decision<'a>> {
    // Services by IP, so a shared IP gets one leader.
    let by_ip = users_by_ip(services);
    let pools = PoolIndex::new(config);
    let mut out = Vec::new();
    for (ip, users) in by_ip {
        let ads = advertisements_for(config, &pools, ip, &users);
        if ads.is_empty() {
            continue;
        }
        let leader = if users.iter().all(|s| s.endpoint_nodes.is_empty()) {
            None
        } else {
            let eligible = |node: &str, view: &NodeView| {
                view.usable(config)
                    && members.contains(node)
                    && ads
                        .iter()
                        .any(|ad| list_matches(&ad.node_selectors, &view.labels))
                    && users
                        .iter()
                        .all(|s| !s.local || s.endpoint_nodes.contains(node))
            };
            let candidates = nodes
                .iter()
                .filter(|(name, view)| eligible(name, view))
                .map(|(name, _)| name.as_str());
            leader(ip, most_preferred(&ads, nodes, candidates.collect()))
        };
        out.push(Decision {
            ip,
            leader,
            ads,
            users,
        });
    }
    out
}

/// The leader of every address that has an L2 advertisement (None: nobody announces it).
pub fn l2_leaders(
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
    members: &BTreeSet<String>,
) -> BTreeMap<IpAddr, Option<String>> {
    leaders(&decide(config, services, nodes, members))
}

/// Every IP `me` leads, with the interfaces to answer on.
///
/// `members` are the nodes whose speakers are alive (from the liveness protocol, or from Node
/// readiness when it is blocked). An IP is announced only if at least one Service using it has a
/// ready endpoint; with `externalTrafficPolicy: Local` only nodes hosting one may lead. Only the
/// advertisements that select every Service using the IP (by serviceSelectors) count.
pub fn l2_announcements(
    me: &str,
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
    members: &BTreeSet<String>,
) -> Vec<L2Announcement> {
    announcements(me, nodes, &decide(config, services, nodes, members))
}

/// [`l2_announcements`] and [`l2_leaders`] at once, from one ranking.
pub fn l2_plan(
    me: &str,
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
    members: &BTreeSet<String>,
) -> (Vec<L2Announcement>, BTreeMap<IpAddr, Option<String>>) {
    let decisions = decide(config, services, nodes, members);
    (announcements(me, nodes, &decisions), leaders(&decisions))
}

fn leaders(decisions: &[Decision<'_>]) -> BTreeMap<IpAddr, Option<String>> {
    decisions
        .iter()
        .map(|d| (d.ip, d.leader.map(str::to_owned)))
        .collect()
}

fn announcements(
    me: &str,
    nodes: &BTreeMap<String, NodeView>,
    decisions: &[Decision<'_>],
) -> Vec<L2Announcement> {
    let my_labels = nodes.get(me).map(|n| &n.labels);
    decisions
        .iter()
        .filter(|d| d.leader == Some(me))
        .map(|d| {
            let interfaces: BTreeSet<String> = if d.ads.iter().any(|ad| ad.interfaces.is_empty()) {
                BTreeSet::new()
            } else {
                d.ads
                    .iter()
                    .filter(|ad| my_labels.is_some_and(|l| list_matches(&ad.node_selectors, l)))
                    .flat_map(|ad| ad.interfaces.iter().cloned())
                    .collect()
            };
            L2Announcement {
                ip: d.ip,
                interfaces,
                services: d.users.iter().map(|s| s.key.clone()).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
