//! What this node announces over BGP, to which peer, with which attributes: a pure function of the
//! configuration, the Services, their endpoints and the Nodes. Unlike Layer 2 there is no leader:
//! every eligible node announces (the routers spread traffic over them, ECMP).
//!
//! The rules (MetalLB's, `speaker/bgp_controller.go`, except where said):
//! - A node has a session with every `bgpPeers` entry whose nodeSelectors match its labels
//!   ([`bgp_peers_for`]). Whether the node is usable does not count: a NotReady node keeps its
//!   sessions and announces nothing on them, so it is back the moment it is Ready.
//! - An IP is announced over BGP when its pool is selected by a BGP advertisement (an empty
//!   addressPools selects every pool) whose serviceSelectors select every Service using it (an
//!   empty list selects every Service). A node sends it through an advertisement when the node is
//!   usable (Ready, network available, not excluded unless `ignoreExcludeLBLabel`: the Layer 2
//!   rule), matches the
//!   advertisement's nodeSelectors and serves the IP (below), to each of its peers the
//!   advertisement names (every one when it names none).
//! - The route is the IP masked to the advertisement's aggregationLength (aggregationLengthV6 for
//!   IPv6). Advertisements, or IPs, that give one prefix to one peer give one route: the attributes
//!   are merged by [`RouteAttributes::merge`]. LOCAL_PREF goes to iBGP peers (peerASN = myASN, or dynamicASN internal)
//!   only; communities go to every peer, a name standing for the value `spec.communities` gives it.
//!
//! Serving. A Service with `externalTrafficPolicy: Cluster` is served from every node once it has
//! a ready endpoint anywhere (kube-proxy forwards); with `Local`, only from the nodes that host
//! one. A shared IP carries the traffic of all its Services, so a node announces it only if it
//! serves *every* Service on it that has a ready endpoint: otherwise the routers would send some of
//! one Service's connections to a node that drops them. A Service with no ready endpoint imposes
//! nothing (no node could serve it), and the IP is announced as long as one of its Services has a
//! ready endpoint. The controller lets Local Services share an IP only when they select the same
//! pods and never mixes Local with Cluster, so this differs from "every node some sharer allows"
//! (MetalLB's outcome, which announces per Service) only while the sharers' endpoint lists
//! disagree for a moment; we then withdraw a node rather than blackhole part of its traffic.
//!
//! Conflicting LOCAL_PREF. Validation rejects two advertisements that could send one prefix to one
//! peer from one node with different localPref, so a conflict reaches the speaker only from a
//! configuration that bypassed it. MetalLB then announces nothing for the Service on that node.
//! We send the highest LOCAL_PREF (a set one over an unset one) instead: it is what the peer itself
//! would choose between the two routes, every node picks the same, a mistake that admission
//! reports does not take a Service off the network, and merging stays free of order (the routes
//! of a set of Services are the merge of each one's routes), which the incremental path builds on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_api::community::{self, Community};
use ferrolb_api::selector::list_matches;
use ferrolb_api::v1alpha1::{BgpAdvertisement, BgpPeer, LoadBalancerConfigSpec};
use ipnet::IpNet;

use super::condition::BgpAnnounced;
use super::{NodeView, PoolIndex, ServiceView, selects_all, users_by_ip};

/// The path attributes FerroLB sets on a route; everything else (ORIGIN, AS_PATH, NEXT_HOP) the
/// session derives from the peer. Ordered, so routes with equal attributes group into one UPDATE.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteAttributes {
    /// Standard communities (RFC 1997), as 32-bit values.
    pub communities: BTreeSet<u32>,
    /// Large communities (RFC 8092): global administrator, local data 1, local data 2.
    pub large_communities: BTreeSet<(u32, u32, u32)>,
    /// LOCAL_PREF; only ever set for iBGP peers.
    pub local_pref: Option<u32>,
}

impl RouteAttributes {
    /// Folds in what another advertisement says about the same route: communities are unioned
    /// (as MetalLB merges duplicate prefixes) and the highest LOCAL_PREF wins (see the module
    /// documentation). Commutative, associative and idempotent, so the order in which Services
    /// and advertisements are visited never shows.
    pub fn merge(&mut self, other: &Self) {
        self.communities.extend(&other.communities);
        self.large_communities.extend(&other.large_communities);
        self.local_pref = self.local_pref.max(other.local_pref);
    }
}

/// The routes one node sends to one peer.
pub type PeerRoutes = BTreeMap<IpNet, RouteAttributes>;

/// The routes one node sends, by peer name. Every peer the node has a session with is present,
/// with no routes when it is sent none.
pub type BgpRoutes = BTreeMap<String, PeerRoutes>;

/// Who announces one IP: for each peer (by name), the nodes that send it a route covering the IP.
pub type Announcers = BTreeMap<String, BTreeSet<String>>;

/// The peers `me` has sessions with: those whose nodeSelectors match its labels (an empty list
/// matches every node). None when `me` is not among `nodes`: nothing is known of it.
pub fn bgp_peers_for<'a>(
    me: &str,
    config: &'a LoadBalancerConfigSpec,
    nodes: &BTreeMap<String, NodeView>,
) -> Vec<&'a BgpPeer> {
    let Some(node) = nodes.get(me) else {
        return Vec::new();
    };
    config
        .bgp_peers
        .iter()
        .filter(|peer| list_matches(&peer.node_selectors, &node.labels))
        .collect()
}

/// The routes `me` sends to each of its peers.
pub fn bgp_routes(
    me: &str,
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
) -> BgpRoutes {
    BgpPlan::new(config, nodes).routes(me, services)
}

/// Who announces each IP that a BGP advertisement covers, asking every node (every speaker
/// computes the same): for each peer, the nodes that send it the IP. An IP whose pool has a BGP
/// advertisement but that nobody announces has no peers; an IP without one is absent.
///
/// The answer holds a node name per IP, peer and announcing node (10,000 Services on 100 nodes
/// take about a second in a test build); a speaker that writes the conditions of some Services asks
/// [`BgpPlan::announcers`] for their IPs only.
pub fn bgp_announcers(
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
) -> BTreeMap<IpAddr, Announcers> {
    let plan = BgpPlan::new(config, nodes);
    users_by_ip(services)
        .into_iter()
        .filter_map(|(ip, users)| Some((ip, plan.announcers(ip, &users)?)))
        .collect()
}

/// What the Service condition says of each address of `services` that a BGP advertisement
/// covers (see [`BgpPlan::announcers`] and [`announcers_text`]).
pub fn bgp_reports(
    plan: &BgpPlan<'_>,
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
) -> BTreeMap<IpAddr, BgpAnnounced> {
    users_by_ip(services)
        .into_iter()
        .filter_map(|(ip, users)| {
            let announcers = plan.announcers(ip, &users)?;
            Some((
                ip,
                BgpAnnounced {
                    announced: announcers.values().any(|nodes| !nodes.is_empty()),
                    text: announcers_text(ip, &announcers, config),
                },
            ))
        })
        .collect()
}

/// How a Service condition tells who announces `ip`:
/// `203.0.113.200 to tor-rack-a (198.51.100.1, AS 64512) from node-1, node-2`, with `; ` between
/// peers, or `203.0.113.200 not announced`.
pub fn announcers_text(
    ip: IpAddr,
    announcers: &Announcers,
    config: &LoadBalancerConfigSpec,
) -> String {
    if announcers.is_empty() {
        return format!("{ip} not announced");
    }
    let parts: Vec<String> = announcers
        .iter()
        .map(|(peer, nodes)| {
            let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
            let whom = match config.bgp_peers.iter().find(|p| p.name == *peer) {
                Some(p) => format!("{peer} ({}, {})", p.peer_address, p.peer_as_text()),
                None => peer.clone(),
            };
            format!("to {whom} from {}", nodes.join(", "))
        })
        .collect();
    format!("{ip} {}", parts.join("; "))
}

/// The configuration and the Nodes resolved once for BGP (pools parsed, communities parsed, node
/// selectors evaluated), so that routes and announcers of many Services cost a lookup per IP.
#[derive(Debug)]
pub struct BgpPlan<'a> {
    pools: PoolIndex,
    /// For each pool (by position), the advertisements (positions in `ads`) that select it.
    ads_by_pool: Vec<Vec<usize>>,
    ads: Vec<ResolvedAd<'a>>,
    /// For each node, the peers it has sessions with.
    peers_by_node: BTreeMap<&'a str, Vec<&'a BgpPeer>>,
}

/// One BGP advertisement, resolved.
#[derive(Debug)]
struct ResolvedAd<'a> {
    spec: &'a BgpAdvertisement,
    /// The peers it sends to, each with the attributes it gets.
    peers: Vec<(&'a BgpPeer, RouteAttributes)>,
    /// The usable nodes it selects, by name, each with the positions in `peers` of the peers it
    /// has a session with.
    announcers: Vec<(&'a str, Vec<usize>)>,
}

impl<'a> BgpPlan<'a> {
    /// Resolves `config` against `nodes`.
    pub fn new(config: &'a LoadBalancerConfigSpec, nodes: &'a BTreeMap<String, NodeView>) -> Self {
        let peers_by_node: BTreeMap<&str, Vec<&BgpPeer>> = nodes
            .keys()
            .map(|name| (name.as_str(), bgp_peers_for(name, config, nodes)))
            .collect();
        let ads: Vec<ResolvedAd<'_>> = config
            .bgp_advertisements
            .iter()
            .map(|spec| ResolvedAd::new(spec, config, nodes))
            .collect();
        let ads_by_pool = config
            .address_pools
            .iter()
            .map(|pool| {
                ads.iter()
                    .enumerate()
                    .filter(|(_, ad)| {
                        ad.spec.address_pools.is_empty()
                            || ad.spec.address_pools.contains(&pool.name)
                    })
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        Self {
            pools: PoolIndex::new(config),
            ads_by_pool,
            ads,
            peers_by_node,
        }
    }

    /// The peers `me` has sessions with ([`bgp_peers_for`]).
    pub fn peers_for(&self, me: &str) -> &[&'a BgpPeer] {
        self.peers_by_node.get(me).map_or(&[], Vec::as_slice)
    }

    /// The routes `me` sends to each of its peers.
    pub fn routes(&self, me: &str, services: &[ServiceView]) -> BgpRoutes {
        let mut out: BgpRoutes = self
            .peers_for(me)
            .iter()
            .map(|peer| (peer.name.clone(), PeerRoutes::new()))
            .collect();
        // What each advertisement sends from `me`: nothing when it does not select `me`.
        let sends: Vec<Vec<&(&BgpPeer, RouteAttributes)>> =
            self.ads.iter().map(|ad| ad.sends_from(me)).collect();
        if sends.iter().all(Vec::is_empty) {
            return out;
        }
        for (ip, users) in users_by_ip(services) {
            if !serves(&users, me) {
                continue;
            }
            for &a in self.ads_for(ip) {
                let (Some(ad), Some(sends)) = (self.ads.get(a), sends.get(a)) else {
                    continue;
                };
                if sends.is_empty() || !ad.selects_all(&users) {
                    continue;
                }
                let Some(prefix) = route_prefix(ip, ad.spec) else {
                    continue;
                };
                for (peer, attributes) in sends {
                    if let Some(routes) = out.get_mut(&peer.name) {
                        routes.entry(prefix).or_default().merge(attributes);
                    }
                }
            }
        }
        out
    }

    /// Brings `routes`, what `me` sends as [`BgpPlan::routes`] computed it, up to date after the
    /// Services holding the `changed` addresses changed (appeared, went, or their endpoints did),
    /// touching only the routes those addresses go into. `views_in(prefixes)` must give every
    /// Service holding an address inside any of `prefixes`: an aggregate's attributes and its
    /// existence depend on every address under it, so those are recomputed together. The
    /// configuration and the Nodes must be those `routes` was computed with (any change to them
    /// means a full [`BgpPlan::routes`]).
    pub fn update_routes(
        &self,
        me: &str,
        routes: &mut BgpRoutes,
        changed: &BTreeSet<IpAddr>,
        views_in: impl FnOnce(&BTreeSet<IpNet>) -> Vec<ServiceView>,
    ) {
        // Which prefix an address goes under depends on its pool and the advertisements only,
        // so it is the same before and after the change.
        let touched: BTreeSet<IpNet> = changed
            .iter()
            .flat_map(|&ip| {
                self.ads_for(ip)
                    .iter()
                    .filter_map(move |&a| route_prefix(ip, self.ads.get(a)?.spec))
            })
            .collect();
        if touched.is_empty() {
            return;
        }
        let mut fresh = self.routes(me, &views_in(&touched));
        for (peer, sent) in routes.iter_mut() {
            let mut now = fresh.remove(peer).unwrap_or_default();
            for prefix in &touched {
                match now.remove(prefix) {
                    Some(attributes) => {
                        sent.insert(*prefix, attributes);
                    }
                    None => {
                        sent.remove(prefix);
                    }
                }
            }
        }
    }

    /// Who announces `ip`, used by `users`, to which peer; None when no BGP advertisement covers
    /// it (for its pool and, by serviceSelectors, for every one of `users`). Costs a look at each node each advertisement of the IP's pool selects.
    pub fn announcers(&self, ip: IpAddr, users: &[&ServiceView]) -> Option<Announcers> {
        let ads: Vec<&ResolvedAd<'_>> = self
            .ads_for(ip)
            .iter()
            .filter_map(|&a| self.ads.get(a).filter(|ad| ad.selects_all(users)))
            .collect();
        if ads.is_empty() {
            return None;
        }
        let mut out = Announcers::new();
        for ad in ads {
            if route_prefix(ip, ad.spec).is_none() {
                continue;
            }
            for (node, peers) in &ad.announcers {
                if !serves(users, node) {
                    continue;
                }
                for (peer, _) in peers.iter().filter_map(|&k| ad.peers.get(k)) {
                    out.entry(peer.name.clone())
                        .or_default()
                        .insert((*node).to_owned());
                }
            }
        }
        Some(out)
    }

    /// The advertisements (positions in `ads`) that cover `ip`, by the pool that holds it.
    fn ads_for(&self, ip: IpAddr) -> &[usize] {
        self.pools
            .pool_of(ip)
            .and_then(|p| self.ads_by_pool.get(p))
            .map_or(&[], Vec::as_slice)
    }
}

impl<'a> ResolvedAd<'a> {
    fn new(
        spec: &'a BgpAdvertisement,
        config: &'a LoadBalancerConfigSpec,
        nodes: &'a BTreeMap<String, NodeView>,
    ) -> Self {
        let mut common = RouteAttributes::default();
        // Names resolve to their spec.communities value. Validation rejects an entry that is
        // neither a community nor a defined name; should one get here, it is left out.
        let resolved = spec
            .communities
            .iter()
            .filter_map(|c| community::resolve(c, &config.communities));
        for community in resolved {
            match community {
                Community::Standard(..) => common.communities.extend(community.standard_value()),
                Community::Large(a, b, c) => {
                    common.large_communities.insert((a, b, c));
                }
            }
        }
        let peers: Vec<(&BgpPeer, RouteAttributes)> = config
            .bgp_peers
            .iter()
            .filter(|peer| spec.peers.is_empty() || spec.peers.contains(&peer.name))
            .map(|peer| {
                let ibgp = peer.is_ibgp();
                let local_pref = spec.local_pref.filter(|_| ibgp);
                let attributes = RouteAttributes {
                    local_pref,
                    ..common.clone()
                };
                (peer, attributes)
            })
            .collect();
        let announcers = nodes
            .iter()
            .filter(|(_, view)| {
                view.usable(config) && list_matches(&spec.node_selectors, &view.labels)
            })
            .map(|(name, view)| {
                let with: Vec<usize> = peers
                    .iter()
                    .enumerate()
                    .filter(|(_, (peer, _))| list_matches(&peer.node_selectors, &view.labels))
                    .map(|(k, _)| k)
                    .collect();
                (name.as_str(), with)
            })
            .collect();
        Self {
            spec,
            peers,
            announcers,
        }
    }

    /// Whether this advertisement selects every one of `users` by its serviceSelectors.
    fn selects_all(&self, users: &[&ServiceView]) -> bool {
        let spec = self.spec;
        selects_all(&spec.name, &spec.service_selectors, users, |s| &s.bgp)
    }

    /// The peers this advertisement sends to from `me`, with their attributes; none when it does
    /// not select `me` (or `me` may not announce).
    fn sends_from(&self, me: &str) -> Vec<&(&'a BgpPeer, RouteAttributes)> {
        let Ok(i) = self
            .announcers
            .binary_search_by(|(name, _)| (*name).cmp(me))
        else {
            return Vec::new();
        };
        self.announcers
            .get(i)
            .map(|(_, with)| with.iter().filter_map(|&k| self.peers.get(k)).collect())
            .unwrap_or_default()
    }
}

/// Whether a node may carry the traffic of an IP used by `users` (see the module documentation):
/// some user has a ready endpoint, and each that has one is served from `node`.
fn serves(users: &[&ServiceView], node: &str) -> bool {
    let mut live = users
        .iter()
        .filter(|svc| !svc.endpoint_nodes.is_empty())
        .peekable();
    live.peek().is_some() && live.all(|svc| !svc.local || svc.endpoint_nodes.contains(node))
}

/// The prefix announced for `ip` through `ad`: the IP masked to the aggregation length of its
/// family. None for a length the family cannot have (validation rejects it).
fn route_prefix(ip: IpAddr, ad: &BgpAdvertisement) -> Option<IpNet> {
    let length = match ip {
        IpAddr::V4(_) => ad.aggregation_length,
        IpAddr::V6(_) => ad.aggregation_length_v6,
    };
    IpNet::new(ip, length).ok().map(|net| net.trunc())
}

#[cfg(test)]
mod tests;
