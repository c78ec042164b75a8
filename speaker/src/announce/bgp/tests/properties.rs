//! Properties of the BGP announcement rules that hold in any world.

use proptest::prelude::*;

use super::*;

const NODE_NAMES: [&str; 5] = ["node-1", "node-2", "node-3", "node-4", "node-5"];

/// Addresses Services get: two pools, several per aggregate, one outside every pool.
const ADDRESSES: [&str; 9] = [
    "203.0.113.1",
    "203.0.113.2",
    "203.0.113.130",
    "192.0.2.1",
    "192.0.2.77",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8::1:1",
    "10.9.9.9",
];

const COMMUNITIES: [&str; 5] = [
    "65000:100",
    "65000:200",
    "no-export",
    "large:64512:1:2",
    "bogus",
];

/// Two iBGP peers on one zone each, one iBGP and one eBGP peer on every node.
fn peers_of_every_world() -> Vec<BgpPeer> {
    vec![
        in_zone(ibgp("tor-a", "198.51.100.1"), "a"),
        in_zone(ibgp("tor-b", "198.51.100.2"), "b"),
        ibgp("core", "198.51.100.3"),
        ebgp("isp", "198.51.100.4"),
    ]
}

fn subset<T: Clone + std::fmt::Debug>(items: &'static [T]) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(items, 0..=items.len())
}

fn arb_ad() -> impl Strategy<Value = BgpAdvertisement> {
    (
        subset(&["web", "dns"]),
        prop::sample::select(vec![24u8, 25, 32]),
        prop::sample::select(vec![64u8, 112, 128]),
        prop::option::of(prop::sample::select(vec![100u32, 200])),
        subset(&COMMUNITIES),
        subset(&["tor-a", "tor-b", "core", "isp"]),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(pools, v4, v6, local_pref, communities, peers, zone, selective)| {
                // serviceSelectors come with host routes only, as validation requires.
                let (v4, v6) = if selective { (32, 128) } else { (v4, v6) };
                BgpAdvertisement {
                    aggregation_length: v4,
                    aggregation_length_v6: v6,
                    local_pref,
                    communities: strings(&communities),
                    peers: strings(&peers),
                    node_selectors: zone.map(|z| selector("zone", z)).into_iter().collect(),
                    service_selectors: selective
                        .then(|| selector("tier", "web"))
                        .into_iter()
                        .collect(),
                    ..ad(&pools)
                }
            },
        )
}

/// The names [`arb_config`] gives its advertisements.
const AD_NAMES: [&str; 4] = ["ad-0", "ad-1", "ad-2", "ad-3"];

fn arb_config() -> impl Strategy<Value = LoadBalancerConfigSpec> {
    prop::collection::vec(arb_ad(), 0..4).prop_map(|ads| {
        let ads = ads
            .into_iter()
            .enumerate()
            .map(|(i, a)| BgpAdvertisement {
                name: format!("ad-{i}"),
                ..a
            })
            .collect();
        world(peers_of_every_world(), ads)
    })
}

fn arb_nodes() -> impl Strategy<Value = BTreeMap<String, NodeView>> {
    let node = (
        any::<bool>(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(zone_a, ready, network_unavailable, excluded)| {
            let mut labels: BTreeMap<String, String> =
                [("zone".to_owned(), if zone_a { "a" } else { "b" }.to_owned())].into();
            if excluded {
                labels.insert(EXCLUDE_LABEL.into(), String::new());
            }
            NodeView {
                labels,
                ready,
                network_unavailable,
                addresses: Vec::new(),
            }
        });
    prop::collection::vec(node, 1..=NODE_NAMES.len()).prop_map(|views| {
        NODE_NAMES
            .iter()
            .zip(views)
            .map(|(name, view)| ((*name).to_owned(), view))
            .collect()
    })
}

fn arb_services() -> impl Strategy<Value = Vec<ServiceView>> {
    // Which advertisements' serviceSelectors select it is drawn, not derived from labels: the
    // rules read only the result, so any result is a world to check.
    let service = (
        proptest::sample::subsequence(&ADDRESSES[..], 1..=2),
        any::<bool>(),
        subset(&NODE_NAMES),
        subset(&AD_NAMES),
    );
    prop::collection::vec(service, 0..10).prop_map(|services| {
        services
            .into_iter()
            .enumerate()
            .map(|(i, (ips, local, endpoints, ads))| ServiceView {
                key: format!("ns/s{i}"),
                ips: ips.iter().map(|a| ip(a)).collect(),
                local,
                endpoint_nodes: endpoints.iter().map(|n| (*n).to_owned()).collect(),
                selected_by: SelectedBy {
                    l2: Vec::new(),
                    bgp: strings(&ads),
                },
            })
            .collect()
    })
}

/// Services that share no address: each keeps only the addresses no earlier one uses.
fn unshared(services: Vec<ServiceView>) -> Vec<ServiceView> {
    let mut used = BTreeSet::new();
    services
        .into_iter()
        .map(|svc| ServiceView {
            ips: svc.ips.into_iter().filter(|ip| used.insert(*ip)).collect(),
            ..svc
        })
        .collect()
}

fn merge_into(into: &mut BgpRoutes, from: &BgpRoutes) {
    for (peer, routes) in from {
        let mine = into.entry(peer.clone()).or_default();
        for (prefix, attributes) in routes {
            mine.entry(*prefix).or_default().merge(attributes);
        }
    }
}

/// Every (peer, prefix) a node sends.
fn keys(routes: &BgpRoutes) -> BTreeSet<(String, IpNet)> {
    routes
        .iter()
        .flat_map(|(peer, r)| r.keys().map(move |p| (peer.clone(), *p)))
        .collect()
}

/// Whether `me` sends some peer a route covering `ip`.
fn covers(routes: &BgpRoutes, ip: IpAddr) -> bool {
    routes
        .values()
        .flat_map(BTreeMap::keys)
        .any(|p| p.contains(&ip))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn routes_do_not_depend_on_the_order_of_the_inputs(
        config in arb_config(), nodes in arb_nodes(), services in arb_services(),
    ) {
        let mut shuffled = config.clone();
        shuffled.address_pools.reverse();
        shuffled.bgp_peers.reverse();
        shuffled.bgp_advertisements.reverse();
        let mut reversed = services.clone();
        reversed.reverse();
        for s in &mut reversed {
            s.ips.reverse();
        }
        for me in nodes.keys() {
            let want = bgp_routes(me, &config, &services, &nodes);
            prop_assert_eq!(&bgp_routes(me, &config, &services, &nodes), &want);
            prop_assert_eq!(&bgp_routes(me, &shuffled, &reversed, &nodes), &want);
        }
        prop_assert_eq!(
            bgp_announcers(&shuffled, &reversed, &nodes),
            bgp_announcers(&config, &services, &nodes)
        );
    }

    #[test]
    fn a_local_service_is_announced_exactly_by_the_eligible_nodes_with_a_ready_local_endpoint(
        config in arb_config(), nodes in arb_nodes(), services in arb_services(),
    ) {
        for svc in services.iter().filter(|s| !s.endpoint_nodes.is_empty()) {
            let cluster = [ServiceView { local: false, ..svc.clone() }];
            let local = [ServiceView { local: true, ..svc.clone() }];
            for &address in &svc.ips {
                for me in nodes.keys() {
                    // Eligible: it would announce the address were the Service's policy Cluster.
                    let eligible = covers(&bgp_routes(me, &config, &cluster, &nodes), address);
                    let announces = covers(&bgp_routes(me, &config, &local, &nodes), address);
                    prop_assert_eq!(
                        announces,
                        eligible && svc.endpoint_nodes.contains(me),
                        "{} on {}", address, me
                    );
                }
            }
        }
    }

    #[test]
    fn an_advertisement_that_does_not_select_a_service_is_as_if_it_did_not_exist(
        config in arb_config(), nodes in arb_nodes(), services in arb_services(),
    ) {
        for svc in &services {
            let mut without = config.clone();
            without.bgp_advertisements.retain(|ad| {
                ad.service_selectors.is_empty() || svc.selected_by.bgp.contains(&ad.name)
            });
            for ad in &mut without.bgp_advertisements {
                ad.service_selectors.clear();
            }
            let alone = std::slice::from_ref(svc);
            let plain = [ServiceView { selected_by: SelectedBy::default(), ..svc.clone() }];
            for me in nodes.keys() {
                prop_assert_eq!(
                    bgp_routes(me, &config, alone, &nodes),
                    bgp_routes(me, &without, &plain, &nodes)
                );
            }
            prop_assert_eq!(
                bgp_announcers(&config, alone, &nodes),
                bgp_announcers(&without, &plain, &nodes)
            );
        }
    }

    #[test]
    fn no_route_goes_to_a_peer_that_is_not_selected(
        config in arb_config(), nodes in arb_nodes(), services in arb_services(),
    ) {
        for (me, view) in &nodes {
            let routes = bgp_routes(me, &config, &services, &nodes);
            let sessions: BTreeSet<String> =
                bgp_peers_for(me, &config, &nodes).iter().map(|p| p.name.clone()).collect();
            prop_assert_eq!(routes.keys().cloned().collect::<BTreeSet<_>>(), sessions);
            for (peer, r) in &routes {
                if r.is_empty() {
                    continue;
                }
                let named = config.bgp_advertisements.iter().any(|ad| {
                    (ad.peers.is_empty() || ad.peers.contains(peer))
                        && list_matches(&ad.node_selectors, &view.labels)
                });
                prop_assert!(named, "{} sends to {} though no advertisement names it", me, peer);
            }
        }
    }

    #[test]
    fn local_pref_is_never_sent_to_an_ebgp_peer(
        config in arb_config(), nodes in arb_nodes(), services in arb_services(),
    ) {
        let prefs: BTreeSet<u32> =
            config.bgp_advertisements.iter().filter_map(|ad| ad.local_pref).collect();
        for me in nodes.keys() {
            for (peer, routes) in bgp_routes(me, &config, &services, &nodes) {
                let spec = config.bgp_peers.iter().find(|p| p.name == peer).unwrap();
                for attributes in routes.values() {
                    if spec.is_ibgp() {
                        prop_assert!(attributes.local_pref.is_none_or(|p| prefs.contains(&p)));
                    } else {
                        prop_assert_eq!(attributes.local_pref, None, "to {}", peer);
                    }
                }
            }
        }
    }

    #[test]
    fn every_prefix_contains_the_ip_it_came_from(
        config in arb_config(), nodes in arb_nodes(), services in arb_services(),
    ) {
        for svc in &services {
            for me in nodes.keys() {
                let routes = bgp_routes(me, &config, std::slice::from_ref(svc), &nodes);
                for prefix in routes.values().flat_map(BTreeMap::keys) {
                    prop_assert!(
                        svc.ips.iter().any(|ip| prefix.contains(ip)),
                        "{} from {:?}", prefix, svc.ips
                    );
                    let lengths = [24, 25, 32, 64, 112, 128];
                    prop_assert!(lengths.contains(&prefix.prefix_len()));
                }
            }
        }
    }

    #[test]
    fn the_routes_of_services_are_the_merge_of_each_ones_routes(
        config in arb_config(), nodes in arb_nodes(), services in arb_services(),
    ) {
        let services = unshared(services);
        for me in nodes.keys() {
            let mut merged = bgp_routes(me, &config, &[], &nodes);
            for svc in &services {
                let its = bgp_routes(me, &config, std::slice::from_ref(svc), &nodes);
                merge_into(&mut merged, &its);
            }
            prop_assert_eq!(merged, bgp_routes(me, &config, &services, &nodes));
        }
    }

    #[test]
    fn removing_a_service_removes_exactly_the_routes_only_it_produced(
        config in arb_config(),
        nodes in arb_nodes(),
        services in arb_services(),
        pick in any::<usize>(),
    ) {
        let services = unshared(services);
        if services.is_empty() {
            return Ok(());
        }
        let gone = pick % services.len();
        let mut rest = services.clone();
        let removed = rest.remove(gone);
        for me in nodes.keys() {
            let before = keys(&bgp_routes(me, &config, &services, &nodes));
            let after = keys(&bgp_routes(me, &config, &rest, &nodes));
            let its = keys(&bgp_routes(me, &config, std::slice::from_ref(&removed), &nodes));
            let gone: BTreeSet<_> = before.difference(&after).cloned().collect();
            let only_its: BTreeSet<_> = its.difference(&after).cloned().collect();
            prop_assert_eq!(gone, only_its);
            prop_assert!(after.is_subset(&before));
        }
    }

    #[test]
    fn the_announcers_of_an_ip_are_the_nodes_whose_routes_cover_it(
        config in arb_config(), nodes in arb_nodes(), services in arb_services(),
    ) {
        let all = bgp_announcers(&config, &services, &nodes);
        for me in nodes.keys() {
            let routes = bgp_routes(me, &config, &services, &nodes);
            for (address, peers) in &all {
                for (peer, from) in peers {
                    if from.contains(me) {
                        let sent = routes
                            .get(peer)
                            .is_some_and(|r| r.keys().any(|p| p.contains(address)));
                        prop_assert!(sent, "{} does not send {} to {}", me, address, peer);
                    }
                }
            }
        }
        // Alone, a Service's routes are exactly what its announcers say.
        for svc in &services {
            let alone = std::slice::from_ref(svc);
            let announcers = bgp_announcers(&config, alone, &nodes);
            for me in nodes.keys() {
                let routes = bgp_routes(me, &config, alone, &nodes);
                for (peer, r) in &routes {
                    for address in &svc.ips {
                        let sent = r.keys().any(|p| p.contains(address));
                        let said = announcers
                            .get(address)
                            .and_then(|a| a.get(peer))
                            .is_some_and(|from| from.contains(me));
                        prop_assert_eq!(sent, said, "{} to {} from {}", address, peer, me);
                    }
                }
            }
        }
    }

    #[test]
    fn a_service_without_ready_endpoints_changes_no_route(
        config in arb_config(),
        nodes in arb_nodes(),
        services in arb_services(),
        idle in arb_services(),
    ) {
        let mut with_idle = services.clone();
        with_idle.extend(idle.into_iter().map(|s| ServiceView {
            key: format!("idle/{}", s.key),
            endpoint_nodes: BTreeSet::new(),
            ..s
        }));
        for me in nodes.keys() {
            prop_assert_eq!(
                bgp_routes(me, &config, &with_idle, &nodes),
                bgp_routes(me, &config, &services, &nodes)
            );
        }
    }

    #[test]
    fn updating_the_routes_of_changed_addresses_gives_what_a_full_recompute_gives(
        config in arb_config(),
        nodes in arb_nodes(),
        before in arb_services(),
        after in arb_services(),
        keep in prop::collection::vec(any::<bool>(), 10),
    ) {
        // Services that stay as they were, Services that change (endpoints, policy, addresses),
        // appear or go: `before` and `after` share keys, and `keep` says which stay unchanged.
        let mut now: BTreeMap<String, ServiceView> =
            before.iter().map(|s| (s.key.clone(), s.clone())).collect();
        for (i, svc) in after.iter().enumerate() {
            if !keep.get(i).copied().unwrap_or(false) {
                now.insert(svc.key.clone(), svc.clone());
            }
        }
        for (i, svc) in before.iter().enumerate() {
            if keep.get(i) == Some(&false) && !after.iter().any(|a| a.key == svc.key) {
                now.remove(&svc.key);
            }
        }
        let now: Vec<ServiceView> = now.into_values().collect();
        // What the world reports: the addresses of every Service that changed, old and new.
        let mut changed = BTreeSet::new();
        for svc in before.iter().chain(&now) {
            let old = before.iter().find(|b| b.key == svc.key);
            let new = now.iter().find(|n| n.key == svc.key);
            if old != new {
                changed.extend(&svc.ips);
            }
        }
        let plan = BgpPlan::new(&config, &nodes);
        for me in nodes.keys() {
            let mut routes = plan.routes(me, &before);
            plan.update_routes(me, &mut routes, &changed, |prefixes| {
                now.iter()
                    .filter(|s| s.ips.iter().any(|ip| prefixes.iter().any(|p| p.contains(ip))))
                    .cloned()
                    .collect()
            });
            prop_assert_eq!(&routes, &plan.routes(me, &now), "on {}", me);
        }
    }
}
