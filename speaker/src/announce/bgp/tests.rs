//! The BGP announcement rules, each as a small world, then the properties that hold in any world.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_api::v1alpha1::{
    AddressPool, BgpAdvertisement, BgpPeer, L2Advertisement, LoadBalancerConfigSpec, NamedCommunity,
};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;
use crate::announce::{EXCLUDE_LABEL, SelectedBy, l2_announcements};

const MY_ASN: u32 = 64512;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(key.to_owned(), value.to_owned())].into()),
        match_expressions: None,
    }
}

fn pool(name: &str, addresses: &[&str]) -> AddressPool {
    AddressPool {
        name: name.into(),
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        allocate_to: None,
    }
}

fn peer(name: &str, address: &str, peer_asn: u32) -> BgpPeer {
    BgpPeer {
        name: name.into(),
        my_asn: MY_ASN,
        peer_asn: Some(peer_asn),
        dynamic_asn: None,
        peer_address: address.into(),
        peer_port: 179,
        source_address: None,
        router_id: None,
        hold_time: None,
        keepalive_time: None,
        connect_time: None,
        vrf: None,
        password_secret_ref: None,
        ebgp_multi_hop: false,
        bfd_profile: None,
        graceful_restart: false,
        node_selectors: Vec::new(),
    }
}

/// A route reflector in our AS.
fn ibgp(name: &str, address: &str) -> BgpPeer {
    peer(name, address, MY_ASN)
}

/// An upstream router in another AS.
fn ebgp(name: &str, address: &str) -> BgpPeer {
    peer(name, address, 65000)
}

/// Only nodes in `zone` peer with it.
fn in_zone(peer: BgpPeer, zone: &str) -> BgpPeer {
    BgpPeer {
        node_selectors: vec![selector("zone", zone)],
        ..peer
    }
}

/// An advertisement of `pools` (all when empty) with MetalLB's defaults: host routes, every peer,
/// every node, no attributes.
fn ad(pools: &[&str]) -> BgpAdvertisement {
    BgpAdvertisement {
        name: "ad".into(),
        address_pools: pools.iter().map(|p| (*p).to_owned()).collect(),
        aggregation_length: 32,
        aggregation_length_v6: 128,
        local_pref: None,
        communities: Vec::new(),
        peers: Vec::new(),
        node_selectors: Vec::new(),
        service_selectors: Vec::new(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Pool `web` (IPv4 and IPv6) and pool `dns` (IPv4), announced by `ads` to `peers`.
fn world(peers: Vec<BgpPeer>, ads: Vec<BgpAdvertisement>) -> LoadBalancerConfigSpec {
    LoadBalancerConfigSpec {
        address_pools: vec![
            pool("web", &["203.0.113.0/24", "2001:db8::/64"]),
            pool("dns", &["192.0.2.0/24"]),
        ],
        bgp_peers: peers,
        bgp_advertisements: ads,
        ..LoadBalancerConfigSpec::default()
    }
}

/// `node-1` .. `node-n`, Ready, odd ones in zone a, even ones in zone b.
fn nodes(n: usize) -> BTreeMap<String, NodeView> {
    (1..=n)
        .map(|i| {
            let zone = if i % 2 == 0 { "b" } else { "a" };
            let view = NodeView {
                labels: [("zone".to_owned(), zone.to_owned())].into(),
                ready: true,
                network_unavailable: false,
                addresses: Vec::new(),
            };
            (format!("node-{i}"), view)
        })
        .collect()
}

fn svc(key: &str, address: &str, endpoints: &[&str]) -> ServiceView {
    ServiceView {
        key: key.into(),
        ips: vec![ip(address)],
        local: false,
        endpoint_nodes: endpoints.iter().map(|n| (*n).to_owned()).collect(),
        selected_by: SelectedBy::default(),
    }
}

/// `svc` as the BGP advertisements `ads` select it by their serviceSelectors.
fn selected_by(svc: ServiceView, ads: &[&str]) -> ServiceView {
    ServiceView {
        selected_by: SelectedBy {
            l2: Vec::new(),
            bgp: strings(ads),
        },
        ..svc
    }
}

fn local(svc: ServiceView) -> ServiceView {
    ServiceView { local: true, ..svc }
}

/// The prefixes `me` sends, by peer, as text.
fn sent(
    me: &str,
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
) -> BTreeMap<String, Vec<String>> {
    bgp_routes(me, config, services, nodes)
        .into_iter()
        .map(|(peer, routes)| (peer, routes.keys().map(ToString::to_string).collect()))
        .collect()
}

/// The nodes that send `ip` to each peer, as [`bgp_announcers`] says.
fn announcing(
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
    address: &str,
) -> Option<BTreeMap<String, Vec<String>>> {
    let all = bgp_announcers(config, services, nodes);
    let of_ip = all.get(&ip(address))?;
    Some(
        of_ip
            .iter()
            .map(|(peer, nodes)| (peer.clone(), nodes.iter().cloned().collect()))
            .collect(),
    )
}

/// The nodes that send anything at all, asking each node.
fn senders(
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
) -> Vec<String> {
    nodes
        .keys()
        .filter(|me| {
            bgp_routes(me, config, services, nodes)
                .values()
                .any(|routes| !routes.is_empty())
        })
        .cloned()
        .collect()
}

fn only(peer: &str, prefixes: &[&str]) -> BTreeMap<String, Vec<String>> {
    [(peer.to_owned(), strings(prefixes))].into()
}

#[test]
fn a_node_peers_with_the_peers_whose_node_selectors_match_it() {
    let n = nodes(2);
    let cfg = world(
        vec![
            ibgp("everywhere", "198.51.100.1"),
            in_zone(ibgp("rack-a", "198.51.100.2"), "a"),
            in_zone(ibgp("rack-b", "198.51.100.3"), "b"),
        ],
        vec![],
    );
    let names = |me: &str| -> Vec<String> {
        bgp_peers_for(me, &cfg, &n)
            .iter()
            .map(|p| p.name.clone())
            .collect()
    };
    assert_eq!(names("node-1"), ["everywhere", "rack-a"]);
    assert_eq!(names("node-2"), ["everywhere", "rack-b"]);
    assert!(names("node-unknown").is_empty());
    let plan = BgpPlan::new(&cfg, &n);
    let planned: Vec<&str> = plan
        .peers_for("node-2")
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(planned, ["everywhere", "rack-b"]);
}

#[test]
fn every_eligible_node_announces_a_cluster_service() {
    let n = nodes(3);
    let cfg = world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&[])]);
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    for me in n.keys() {
        assert_eq!(
            sent(me, &cfg, &services, &n),
            only("tor", &["203.0.113.10/32"]),
            "{me}"
        );
    }
    assert_eq!(
        announcing(&cfg, &services, &n, "203.0.113.10"),
        Some([("tor".to_owned(), strings(&["node-1", "node-2", "node-3"]))].into())
    );
}

#[test]
fn services_without_ready_endpoints_are_not_announced() {
    let n = nodes(3);
    let cfg = world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&[])]);
    let services = [svc("ns/web", "203.0.113.10", &[])];
    assert!(senders(&cfg, &services, &n).is_empty());
    // The IP is covered, so the condition can say nobody announces it.
    assert_eq!(
        announcing(&cfg, &services, &n, "203.0.113.10"),
        Some(BTreeMap::new())
    );
}

#[test]
fn local_policy_announces_only_from_nodes_with_a_ready_local_endpoint() {
    let n = nodes(4);
    let cfg = world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&[])]);
    let services = [local(svc("ns/web", "203.0.113.10", &["node-2", "node-4"]))];
    assert_eq!(senders(&cfg, &services, &n), ["node-2", "node-4"]);
}

#[test]
fn unusable_nodes_announce_nothing_but_keep_their_sessions() {
    let mut n = nodes(4);
    n.get_mut("node-1").unwrap().ready = false;
    n.get_mut("node-2").unwrap().network_unavailable = true;
    n.get_mut("node-3")
        .unwrap()
        .labels
        .insert(EXCLUDE_LABEL.into(), String::new());
    let cfg = world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&[])]);
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    assert_eq!(senders(&cfg, &services, &n), ["node-4"]);
    for me in ["node-1", "node-2", "node-3"] {
        assert_eq!(sent(me, &cfg, &services, &n), only("tor", &[]), "{me}");
    }
}

#[test]
fn excluded_nodes_announce_when_the_speaker_settings_ignore_the_label() {
    let mut n = nodes(3);
    n.get_mut("node-1").unwrap().ready = false;
    for view in n.values_mut() {
        view.labels.insert(EXCLUDE_LABEL.into(), String::new());
    }
    let mut cfg = world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&[])]);
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    assert!(senders(&cfg, &services, &n).is_empty());
    cfg.speaker.ignore_exclude_lb_label = true;
    assert_eq!(senders(&cfg, &services, &n), ["node-2", "node-3"]);
}

#[test]
fn only_pools_selected_by_a_bgp_advertisement_are_announced() {
    let n = nodes(1);
    let services = [
        svc("ns/web", "203.0.113.10", &["node-1"]),
        svc("ns/dns", "192.0.2.53", &["node-1"]),
        svc("ns/stray", "10.0.0.1", &["node-1"]),
    ];
    let tor = || vec![ibgp("tor", "198.51.100.1")];
    let web_only = world(tor(), vec![ad(&["web"])]);
    assert_eq!(
        sent("node-1", &web_only, &services, &n),
        only("tor", &["203.0.113.10/32"])
    );
    assert_eq!(announcing(&web_only, &services, &n, "192.0.2.53"), None);
    // No addressPools: every pool, but never an address outside them.
    let every_pool = world(tor(), vec![ad(&[])]);
    assert_eq!(
        sent("node-1", &every_pool, &services, &n),
        only("tor", &["192.0.2.53/32", "203.0.113.10/32"])
    );
    assert_eq!(announcing(&every_pool, &services, &n, "10.0.0.1"), None);
}

#[test]
fn the_advertisement_node_selectors_choose_the_announcing_nodes() {
    let n = nodes(4);
    let cfg = world(
        vec![ibgp("tor", "198.51.100.1")],
        vec![BgpAdvertisement {
            node_selectors: vec![selector("zone", "b")],
            ..ad(&[])
        }],
    );
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    assert_eq!(senders(&cfg, &services, &n), ["node-2", "node-4"]);
}

#[test]
fn a_node_sends_only_to_peers_it_has_a_session_with() {
    let n = nodes(2);
    let cfg = world(
        vec![in_zone(ibgp("rack-a", "198.51.100.1"), "a")],
        vec![ad(&[])],
    );
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    assert_eq!(
        sent("node-1", &cfg, &services, &n),
        only("rack-a", &["203.0.113.10/32"])
    );
    assert!(sent("node-2", &cfg, &services, &n).is_empty());
}

#[test]
fn an_advertisement_naming_peers_sends_only_to_them() {
    let n = nodes(1);
    let cfg = world(
        vec![ibgp("tor-1", "198.51.100.1"), ibgp("tor-2", "198.51.100.2")],
        vec![BgpAdvertisement {
            peers: strings(&["tor-2", "not-a-peer"]),
            ..ad(&[])
        }],
    );
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    assert_eq!(
        sent("node-1", &cfg, &services, &n),
        [
            ("tor-1".to_owned(), vec![]),
            ("tor-2".to_owned(), strings(&["203.0.113.10/32"]))
        ]
        .into()
    );
}

#[test]
fn the_prefix_is_the_ip_masked_to_the_aggregation_length_of_its_family() {
    let n = nodes(1);
    let services = [
        svc("ns/v4", "203.0.113.77", &["node-1"]),
        svc("ns/v6", "2001:db8::5", &["node-1"]),
    ];
    let tor = || vec![ibgp("tor", "198.51.100.1")];
    let host_routes = world(tor(), vec![ad(&[])]);
    assert_eq!(
        sent("node-1", &host_routes, &services, &n),
        only("tor", &["203.0.113.77/32", "2001:db8::5/128"])
    );
    let aggregated = world(
        tor(),
        vec![BgpAdvertisement {
            aggregation_length: 26,
            aggregation_length_v6: 64,
            ..ad(&[])
        }],
    );
    assert_eq!(
        sent("node-1", &aggregated, &services, &n),
        only("tor", &["203.0.113.64/26", "2001:db8::/64"])
    );
}

#[test]
fn addresses_aggregated_into_one_prefix_give_one_route() {
    let n = nodes(1);
    let cfg = world(
        vec![ibgp("tor", "198.51.100.1")],
        vec![BgpAdvertisement {
            aggregation_length: 24,
            ..ad(&[])
        }],
    );
    let services = [
        svc("ns/a", "203.0.113.1", &["node-1"]),
        svc("ns/b", "203.0.113.200", &["node-1"]),
    ];
    assert_eq!(
        sent("node-1", &cfg, &services, &n),
        only("tor", &["203.0.113.0/24"])
    );
}

#[test]
fn an_aggregate_stays_while_any_address_in_it_is_announced() {
    let n = nodes(2);
    let cfg = world(
        vec![ibgp("tor", "198.51.100.1")],
        vec![BgpAdvertisement {
            aggregation_length: 24,
            ..ad(&[])
        }],
    );
    let services = [
        local(svc("ns/a", "203.0.113.1", &["node-1"])),
        svc("ns/b", "203.0.113.2", &[]),
    ];
    assert_eq!(senders(&cfg, &services, &n), ["node-1"]);
    // The aggregate covers b's address too, but only a's endpoints put it on node-1.
    assert_eq!(
        announcing(&cfg, &services, &n, "203.0.113.2"),
        Some(BTreeMap::new())
    );
}

#[test]
fn communities_standard_large_and_well_known_are_attached() {
    let n = nodes(1);
    let cfg = world(
        vec![ebgp("isp", "198.51.100.1")],
        vec![BgpAdvertisement {
            communities: strings(&["65000:100", "no-export", "large:64512:1:2"]),
            ..ad(&[])
        }],
    );
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    let routes = bgp_routes("node-1", &cfg, &services, &n);
    assert_eq!(
        routes["isp"][&net("203.0.113.10/32")],
        RouteAttributes {
            communities: [65000 << 16 | 100, 0xFFFF_FF01].into(),
            large_communities: [(64512, 1, 2)].into(),
            local_pref: None,
        }
    );
}

#[test]
fn named_communities_are_sent_as_their_values() {
    let n = nodes(1);
    let named = |name: &str, value: &str| NamedCommunity {
        name: name.into(),
        value: value.into(),
    };
    let cfg = LoadBalancerConfigSpec {
        communities: vec![
            named("vpn-only", "64512:300"),
            named("region", "large:64512:7:1"),
            named("broken", "64512"),
        ],
        ..world(
            vec![ebgp("isp", "198.51.100.1")],
            vec![BgpAdvertisement {
                communities: strings(&["vpn-only", "region", "broken", "undefined", "65000:1"]),
                ..ad(&[])
            }],
        )
    };
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    let routes = bgp_routes("node-1", &cfg, &services, &n);
    assert_eq!(
        routes["isp"][&net("203.0.113.10/32")],
        RouteAttributes {
            communities: [64512 << 16 | 300, 65000 << 16 | 1].into(),
            large_communities: [(64512, 7, 1)].into(),
            local_pref: None,
        }
    );
}

#[test]
fn a_community_that_does_not_parse_is_left_out() {
    let n = nodes(1);
    let cfg = world(
        vec![ebgp("isp", "198.51.100.1")],
        vec![BgpAdvertisement {
            communities: strings(&["65536:1", "no_export", "large:1:2", "65000:7"]),
            ..ad(&[])
        }],
    );
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    let routes = bgp_routes("node-1", &cfg, &services, &n);
    let attributes = &routes["isp"][&net("203.0.113.10/32")];
    assert_eq!(attributes.communities, [65000 << 16 | 7].into());
    assert!(attributes.large_communities.is_empty());
}

#[test]
fn local_pref_is_sent_to_ibgp_peers_only() {
    let n = nodes(1);
    let cfg = world(
        vec![
            ibgp("reflector", "198.51.100.1"),
            ebgp("isp", "198.51.100.2"),
        ],
        vec![BgpAdvertisement {
            local_pref: Some(150),
            ..ad(&[])
        }],
    );
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    let routes = bgp_routes("node-1", &cfg, &services, &n);
    let route = net("203.0.113.10/32");
    assert_eq!(routes["reflector"][&route].local_pref, Some(150));
    assert_eq!(routes["isp"][&route].local_pref, None);
}

#[test]
fn advertisements_giving_one_prefix_to_one_peer_merge_their_communities() {
    let n = nodes(1);
    let cfg = world(
        vec![ebgp("isp", "198.51.100.1")],
        vec![
            BgpAdvertisement {
                communities: strings(&["65000:1", "large:1:1:1"]),
                ..ad(&["web"])
            },
            BgpAdvertisement {
                communities: strings(&["65000:2", "large:2:2:2"]),
                ..ad(&[])
            },
        ],
    );
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    let routes = bgp_routes("node-1", &cfg, &services, &n);
    assert_eq!(routes["isp"].len(), 1);
    let attributes = &routes["isp"][&net("203.0.113.10/32")];
    assert_eq!(
        attributes.communities,
        [65000 << 16 | 1, 65000 << 16 | 2].into()
    );
    assert_eq!(attributes.large_communities, [(1, 1, 1), (2, 2, 2)].into());
}

#[test]
fn advertisements_with_different_aggregation_lengths_give_separate_routes() {
    let n = nodes(1);
    let cfg = world(
        vec![ebgp("isp", "198.51.100.1")],
        vec![
            BgpAdvertisement {
                communities: strings(&["65000:32"]),
                ..ad(&[])
            },
            BgpAdvertisement {
                aggregation_length: 24,
                communities: strings(&["65000:24"]),
                ..ad(&[])
            },
        ],
    );
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    let routes = bgp_routes("node-1", &cfg, &services, &n);
    assert_eq!(
        routes["isp"][&net("203.0.113.10/32")].communities,
        [65000 << 16 | 32].into()
    );
    assert_eq!(
        routes["isp"][&net("203.0.113.0/24")].communities,
        [65000 << 16 | 24].into()
    );
}

#[test]
fn conflicting_local_prefs_for_one_route_give_the_highest() {
    let n = nodes(1);
    let with_pref = |pref: Option<u32>| BgpAdvertisement {
        local_pref: pref,
        ..ad(&[])
    };
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    let route = net("203.0.113.10/32");
    let rows = [
        (vec![Some(100), Some(200)], Some(200)),
        (vec![Some(200), Some(100)], Some(200)),
        (vec![None, Some(50)], Some(50)),
        (vec![Some(50), None], Some(50)),
        (vec![None, None], None),
    ];
    for (prefs, want) in rows {
        let cfg = world(
            vec![
                ibgp("reflector", "198.51.100.1"),
                ebgp("isp", "198.51.100.2"),
            ],
            prefs.iter().map(|p| with_pref(*p)).collect(),
        );
        let routes = bgp_routes("node-1", &cfg, &services, &n);
        assert_eq!(routes["reflector"][&route].local_pref, want, "{prefs:?}");
        assert_eq!(routes["isp"][&route].local_pref, None, "{prefs:?}");
    }
}

#[test]
fn a_shared_ip_is_announced_while_any_of_its_services_has_a_ready_endpoint() {
    let n = nodes(2);
    let cfg = world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&[])]);
    let services = [
        svc("ns/dns-tcp", "192.0.2.53", &[]),
        svc("ns/dns-udp", "192.0.2.53", &["node-2"]),
    ];
    assert_eq!(senders(&cfg, &services, &n), ["node-1", "node-2"]);
    let idle = [
        svc("ns/dns-tcp", "192.0.2.53", &[]),
        svc("ns/dns-udp", "192.0.2.53", &[]),
    ];
    assert!(senders(&cfg, &idle, &n).is_empty());
}

#[test]
fn a_shared_local_ip_is_announced_only_from_nodes_that_serve_every_sharer_with_endpoints() {
    let n = nodes(4);
    let cfg = world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&[])]);
    let services = [
        local(svc("ns/dns-tcp", "192.0.2.53", &["node-1", "node-2"])),
        local(svc("ns/dns-udp", "192.0.2.53", &["node-2", "node-3"])),
        // No ready endpoint anywhere: no node could serve it, so it restricts nothing.
        local(svc("ns/dns-tls", "192.0.2.53", &[])),
    ];
    assert_eq!(senders(&cfg, &services, &n), ["node-2"]);
    assert_eq!(
        announcing(&cfg, &services, &n, "192.0.2.53"),
        Some([("tor".to_owned(), strings(&["node-2"]))].into())
    );
    // Sharers whose endpoints share no node: withdrawn rather than half blackholed.
    let apart = [
        local(svc("ns/dns-tcp", "192.0.2.53", &["node-1"])),
        local(svc("ns/dns-udp", "192.0.2.53", &["node-3"])),
    ];
    assert!(senders(&cfg, &apart, &n).is_empty());
}

#[test]
fn service_selectors_limit_an_advertisement_to_the_services_they_select() {
    let n = nodes(2);
    let cfg = world(
        vec![ebgp("isp", "198.51.100.1")],
        vec![
            BgpAdvertisement {
                name: "web-only".into(),
                communities: strings(&["65000:80"]),
                service_selectors: vec![selector("tier", "web")],
                ..ad(&[])
            },
            BgpAdvertisement {
                name: "dns-pool".into(),
                communities: strings(&["65000:53"]),
                ..ad(&["dns"])
            },
        ],
    );
    let web = selected_by(svc("ns/web", "203.0.113.10", &["node-1"]), &["web-only"]);
    let other = svc("ns/other", "203.0.113.11", &["node-1"]);
    let dns = svc("ns/dns", "192.0.2.53", &["node-1"]);
    let routes = bgp_routes("node-1", &cfg, &[web.clone(), other.clone(), dns], &n);
    let sent: Vec<(String, Vec<u32>)> = routes["isp"]
        .iter()
        .map(|(p, a)| (p.to_string(), a.communities.iter().copied().collect()))
        .collect();
    assert_eq!(
        sent,
        [
            ("192.0.2.53/32".to_owned(), vec![65000 << 16 | 53]),
            ("203.0.113.10/32".to_owned(), vec![65000 << 16 | 80]),
        ],
        "the unselected Service of pool web has no route; pool dns's advertisement selects all"
    );
    // Its announcers agree: no advertisement covers the unselected Service's address.
    assert_eq!(announcing(&cfg, &[other], &n, "203.0.113.11"), None);
    assert_eq!(
        announcing(&cfg, std::slice::from_ref(&web), &n, "203.0.113.10"),
        Some([("isp".to_owned(), strings(&["node-1", "node-2"]))].into())
    );
    // A shared address is announced only by advertisements that select every Service on it.
    let sharing = [web.clone(), svc("ns/web-udp", "203.0.113.10", &["node-1"])];
    assert!(senders(&cfg, &sharing, &n).is_empty());
    let both = [
        web,
        selected_by(
            svc("ns/web-udp", "203.0.113.10", &["node-1"]),
            &["web-only"],
        ),
    ];
    assert_eq!(senders(&cfg, &both, &n), ["node-1", "node-2"]);
}

#[test]
fn a_pool_can_be_announced_with_layer_2_and_bgp_at_once() {
    let n = nodes(3);
    let cfg = LoadBalancerConfigSpec {
        l2_advertisements: vec![L2Advertisement {
            name: "l2".into(),
            address_pools: strings(&["web"]),
            node_selectors: Vec::new(),
            service_selectors: Vec::new(),
            preferred_node_selectors: Vec::new(),
            interfaces: Vec::new(),
        }],
        ..world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&["web"])])
    };
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    let members: BTreeSet<String> = n.keys().cloned().collect();
    let l2_leaders: Vec<&String> = n
        .keys()
        .filter(|me| !l2_announcements(me, &cfg, &services, &n, &members).is_empty())
        .collect();
    assert_eq!(l2_leaders.len(), 1);
    assert_eq!(senders(&cfg, &services, &n), ["node-1", "node-2", "node-3"]);
}

#[test]
fn an_impossible_aggregation_length_announces_nothing() {
    let n = nodes(1);
    let cfg = world(
        vec![ibgp("tor", "198.51.100.1")],
        vec![BgpAdvertisement {
            aggregation_length: 33,
            aggregation_length_v6: 129,
            ..ad(&[])
        }],
    );
    let services = [
        svc("ns/v4", "203.0.113.10", &["node-1"]),
        svc("ns/v6", "2001:db8::1", &["node-1"]),
    ];
    assert!(senders(&cfg, &services, &n).is_empty());
    assert_eq!(
        announcing(&cfg, &services, &n, "203.0.113.10"),
        Some(BTreeMap::new())
    );
}

#[test]
fn a_node_absent_from_the_node_list_announces_nothing() {
    let n = nodes(1);
    let cfg = world(vec![ibgp("tor", "198.51.100.1")], vec![ad(&[])]);
    let services = [svc("ns/web", "203.0.113.10", &["node-1"])];
    assert!(bgp_routes("node-9", &cfg, &services, &n).is_empty());
}

#[test]
fn the_condition_names_the_peers_and_nodes_announcing_each_ip() {
    let n = nodes(3);
    let cfg = world(
        vec![
            ibgp("tor-rack-a", "198.51.100.1"),
            in_zone(ebgp("isp", "2001:db8:ffff::1"), "b"),
        ],
        vec![ad(&["web"])],
    );
    let services = [
        svc("ns/web", "203.0.113.200", &["node-3"]),
        svc("ns/idle", "203.0.113.201", &[]),
    ];
    let all = bgp_announcers(&cfg, &services, &n);
    let text = |address: &str| announcers_text(ip(address), &all[&ip(address)], &cfg);
    assert_eq!(
        text("203.0.113.200"),
        "203.0.113.200 to isp (2001:db8:ffff::1, AS 65000) from node-2; to tor-rack-a (198.51.100.1, AS 64512) from node-1, node-2, node-3"
    );
    assert_eq!(text("203.0.113.201"), "203.0.113.201 not announced");
}

#[test]
fn merging_attributes_unions_communities_and_keeps_the_highest_local_pref() {
    let mut a = RouteAttributes {
        communities: [1].into(),
        large_communities: [(1, 1, 1)].into(),
        local_pref: Some(100),
    };
    a.merge(&RouteAttributes {
        communities: [2].into(),
        large_communities: [(2, 2, 2)].into(),
        local_pref: None,
    });
    assert_eq!(
        a,
        RouteAttributes {
            communities: [1, 2].into(),
            large_communities: [(1, 1, 1), (2, 2, 2)].into(),
            local_pref: Some(100),
        }
    );
}

mod properties;
