//! The announcement rules, each as a small world.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_api::v1alpha1::{
    AddressPool, L2Advertisement, LoadBalancerConfigSpec, PreferredNodeSelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use proptest::prelude::*;

use super::*;

fn config(ads: Vec<L2Advertisement>) -> LoadBalancerConfigSpec {
    LoadBalancerConfigSpec {
        address_pools: vec![
            AddressPool {
                name: "lan".into(),
                addresses: vec!["203.0.113.0/24".into(), "2001:db8::/64".into()],
                auto_assign: true,
                avoid_buggy_ips: false,
                allocate_to: None,
            },
            AddressPool {
                name: "bgp-only".into(),
                addresses: vec!["198.51.100.0/24".into()],
                auto_assign: true,
                avoid_buggy_ips: false,
                allocate_to: None,
            },
        ],
        l2_advertisements: ads,
        ..LoadBalancerConfigSpec::default()
    }
}

fn ad(pools: &[&str], selector: Option<(&str, &str)>, interfaces: &[&str]) -> L2Advertisement {
    L2Advertisement {
        name: "ad".into(),
        address_pools: pools.iter().map(|p| (*p).to_owned()).collect(),
        node_selectors: selector
            .map(|(k, v)| LabelSelector {
                match_labels: Some([(k.to_owned(), v.to_owned())].into()),
                match_expressions: None,
            })
            .into_iter()
            .collect(),
        service_selectors: Vec::new(),
        preferred_node_selectors: Vec::new(),
        interfaces: interfaces.iter().map(|i| (*i).to_owned()).collect(),
    }
}

/// A preference of `weight` for the nodes labelled `key: value`.
fn prefer(weight: i32, key: &str, value: &str) -> PreferredNodeSelector {
    PreferredNodeSelector {
        weight,
        preference: LabelSelector {
            match_labels: Some([(key.to_owned(), value.to_owned())].into()),
            match_expressions: None,
        },
    }
}

/// `ad` named `name`, for the Services labelled `tier: {tier}` only.
fn for_tier(name: &str, tier: &str, ad: L2Advertisement) -> L2Advertisement {
    L2Advertisement {
        name: name.into(),
        service_selectors: vec![LabelSelector {
            match_labels: Some([("tier".to_owned(), tier.to_owned())].into()),
            match_expressions: None,
        }],
        ..ad
    }
}

/// `svc` with the labels `tier: {tier}`, as `config`'s advertisements select it.
fn labelled(config: &LoadBalancerConfigSpec, tier: &str, svc: ServiceView) -> ServiceView {
    let labels: BTreeMap<String, String> = [("tier".to_owned(), tier.to_owned())].into();
    ServiceView {
        selected_by: SelectedBy::of(config, &labels),
        ..svc
    }
}

fn nodes(n: usize) -> BTreeMap<String, NodeView> {
    (1..=n)
        .map(|i| {
            (
                format!("node-{i}"),
                NodeView {
                    labels: [(
                        "zone".to_owned(),
                        if i % 2 == 0 { "b" } else { "a" }.to_owned(),
                    )]
                    .into(),
                    ready: true,
                    network_unavailable: false,
                    addresses: Vec::new(),
                },
            )
        })
        .collect()
}

fn all(nodes: &BTreeMap<String, NodeView>) -> BTreeSet<String> {
    nodes.keys().cloned().collect()
}

fn svc(key: &str, ip: &str, endpoints: &[&str]) -> ServiceView {
    ServiceView {
        key: key.into(),
        ips: vec![ip.parse().unwrap()],
        local: false,
        endpoint_nodes: endpoints.iter().map(|n| (*n).to_owned()).collect(),
        selected_by: SelectedBy::default(),
    }
}

/// Who announces each IP, asking every node.
fn leaders(
    config: &LoadBalancerConfigSpec,
    services: &[ServiceView],
    nodes: &BTreeMap<String, NodeView>,
    members: &BTreeSet<String>,
) -> BTreeMap<IpAddr, Vec<String>> {
    let mut out: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for me in nodes.keys() {
        for a in l2_announcements(me, config, services, nodes, members) {
            out.entry(a.ip).or_default().push(me.clone());
        }
    }
    out
}

#[test]
fn exactly_one_node_answers_for_each_ip() {
    let n = nodes(5);
    let services: Vec<ServiceView> = (0..50)
        .map(|i| svc(&format!("ns/s{i}"), &format!("203.0.113.{i}"), &["node-1"]))
        .collect();
    let got = leaders(&config(vec![ad(&[], None, &[])]), &services, &n, &all(&n));
    assert_eq!(got.len(), 50);
    assert!(got.values().all(|l| l.len() == 1));
    // The work is spread: every node leads some of the 50.
    let per_node: BTreeSet<&String> = got.values().flatten().collect();
    assert_eq!(per_node.len(), 5);
}

#[test]
fn services_without_ready_endpoints_are_not_announced() {
    let n = nodes(3);
    let got = leaders(
        &config(vec![ad(&[], None, &[])]),
        &[svc("ns/a", "203.0.113.1", &[])],
        &n,
        &all(&n),
    );
    assert!(got.is_empty());
}

#[test]
fn only_pools_with_an_l2_advertisement_are_announced() {
    let n = nodes(3);
    let services = [
        svc("ns/a", "203.0.113.1", &["node-1"]),
        svc("ns/b", "198.51.100.1", &["node-1"]),
    ];
    let got = leaders(
        &config(vec![ad(&["lan"], None, &[])]),
        &services,
        &n,
        &all(&n),
    );
    assert_eq!(
        got.keys().map(ToString::to_string).collect::<Vec<_>>(),
        ["203.0.113.1"]
    );
}

#[test]
fn local_policy_leads_only_from_nodes_with_an_endpoint() {
    let n = nodes(5);
    for i in 0..40 {
        let mut s = svc("ns/a", &format!("203.0.113.{i}"), &["node-2", "node-4"]);
        s.local = true;
        let got = leaders(&config(vec![ad(&[], None, &[])]), &[s], &n, &all(&n));
        let leader = &got.values().next().unwrap()[0];
        assert!(leader == "node-2" || leader == "node-4", "{leader}");
    }
}

#[test]
fn unusable_nodes_never_lead() {
    let mut n = nodes(3);
    n.get_mut("node-1").unwrap().ready = false;
    n.get_mut("node-2").unwrap().network_unavailable = true;
    let members = all(&n);
    let mut excluded = n.clone();
    excluded
        .get_mut("node-3")
        .unwrap()
        .labels
        .insert(EXCLUDE_LABEL.into(), String::new());
    let services: Vec<ServiceView> = (0..20)
        .map(|i| svc("ns/a", &format!("203.0.113.{i}"), &["node-1"]))
        .collect();
    let cfg = config(vec![ad(&[], None, &[])]);
    let got = leaders(&cfg, &services, &n, &members);
    assert!(got.values().flatten().all(|l| l == "node-3"));
    assert!(leaders(&cfg, &services, &excluded, &members).is_empty());
}

#[test]
fn the_exclude_label_is_ignored_when_the_speaker_settings_say_so() {
    let mut n = nodes(3);
    for view in n.values_mut() {
        view.labels.insert(EXCLUDE_LABEL.into(), String::new());
    }
    let services: Vec<ServiceView> = (0..20)
        .map(|i| svc("ns/a", &format!("203.0.113.{i}"), &["node-1"]))
        .collect();
    let mut cfg = config(vec![ad(&[], None, &[])]);
    assert!(leaders(&cfg, &services, &n, &all(&n)).is_empty());
    cfg.speaker.ignore_exclude_lb_label = true;
    let got = leaders(&cfg, &services, &n, &all(&n));
    assert_eq!(got.len(), 20, "every address has its one leader again");
    assert!(got.values().all(|l| l.len() == 1));
    // It lifts the label only: a node that is not Ready still never leads.
    n.get_mut("node-1").unwrap().ready = false;
    let got = leaders(&cfg, &services, &n, &all(&n));
    assert!(got.values().flatten().all(|l| l != "node-1"));
}

#[test]
fn dead_speakers_never_lead() {
    let n = nodes(3);
    let members: BTreeSet<String> = ["node-2".to_owned()].into();
    let services: Vec<ServiceView> = (0..20)
        .map(|i| svc("ns/a", &format!("203.0.113.{i}"), &["node-1"]))
        .collect();
    let got = leaders(&config(vec![ad(&[], None, &[])]), &services, &n, &members);
    assert!(got.values().flatten().all(|l| l == "node-2"));
}

#[test]
fn node_selectors_and_interfaces_of_the_advertisement_apply() {
    let n = nodes(4);
    let services: Vec<ServiceView> = (0..20)
        .map(|i| svc("ns/a", &format!("203.0.113.{i}"), &["node-1"]))
        .collect();
    let cfg = config(vec![ad(&["lan"], Some(("zone", "b")), &["eth1"])]);
    for me in n.keys() {
        for a in l2_announcements(me, &cfg, &services, &n, &all(&n)) {
            assert!(me == "node-2" || me == "node-4");
            assert_eq!(a.interfaces, BTreeSet::from(["eth1".to_owned()]));
        }
    }
}

#[test]
fn a_shared_ip_has_one_leader_for_all_its_services() {
    let n = nodes(4);
    let cfg = config(vec![ad(&[], None, &[])]);
    let services = [
        svc("ns/dns-tcp", "203.0.113.53", &["node-1"]),
        svc("ns/dns-udp", "203.0.113.53", &["node-3"]),
    ];
    let who = leaders(&cfg, &services, &n, &all(&n));
    let ip: IpAddr = "203.0.113.53".parse().unwrap();
    assert_eq!(who[&ip].len(), 1);
    let got = l2_announcements(&who[&ip][0], &cfg, &services, &n, &all(&n));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].services, ["ns/dns-tcp", "ns/dns-udp"]);
}

#[test]
fn service_selectors_limit_an_advertisement_to_the_services_they_select() {
    let n = nodes(4);
    // Web Services from zone a's nodes on eth1; every Service of pool lan from zone b's on eth2.
    let cfg = config(vec![
        for_tier("web", "web", ad(&["lan"], Some(("zone", "a")), &["eth1"])),
        ad(&["lan"], Some(("zone", "b")), &["eth2"]),
    ]);
    let web = labelled(&cfg, "web", svc("ns/web", "203.0.113.10", &["node-1"]));
    let dns = labelled(&cfg, "dns", svc("ns/dns", "203.0.113.53", &["node-1"]));
    assert_eq!(web.selected_by.l2, ["web"]);
    assert!(dns.selected_by.l2.is_empty());
    for me in n.keys() {
        for a in l2_announcements(me, &cfg, &[web.clone(), dns.clone()], &n, &all(&n)) {
            if a.ip == dns.ips[0] {
                assert!(me == "node-2" || me == "node-4", "{me} leads dns");
                assert_eq!(a.interfaces, BTreeSet::from(["eth2".to_owned()]));
            }
        }
    }
    // With only the selective advertisement, the unselected Service is not announced at all.
    let only_web = config(vec![for_tier(
        "web",
        "web",
        ad(&["lan"], Some(("zone", "a")), &["eth1"]),
    )]);
    let web = labelled(&only_web, "web", svc("ns/web", "203.0.113.10", &["node-1"]));
    let dns = labelled(&only_web, "dns", svc("ns/dns", "203.0.113.53", &["node-1"]));
    let got = l2_leaders(&only_web, &[web.clone(), dns.clone()], &n, &all(&n));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), web.ips);
    // A shared address is announced only when the advertisement selects every Service on it.
    let shared = ServiceView {
        ips: web.ips.clone(),
        ..dns.clone()
    };
    assert!(l2_leaders(&only_web, &[web.clone(), shared], &n, &all(&n)).is_empty());
    let both = ServiceView {
        key: "ns/web-udp".into(),
        ..web.clone()
    };
    assert_eq!(l2_leaders(&only_web, &[web, both], &n, &all(&n)).len(), 1);
}

#[test]
fn a_preferred_node_leads_while_it_is_eligible_and_takes_its_addresses_back() {
    let n = nodes(5);
    let services: Vec<ServiceView> = (0..30)
        .map(|i| svc(&format!("ns/s{i}"), &format!("203.0.113.{i}"), &["node-1"]))
        .collect();
    let cfg = config(vec![L2Advertisement {
        preferred_node_selectors: vec![prefer(50, "zone", "b")],
        ..ad(&[], None, &[])
    }]);
    // node-2 and node-4 are in zone b: they share every address, by the usual ranking.
    let got = leaders(&cfg, &services, &n, &all(&n));
    assert_eq!(got.len(), 30);
    let used: BTreeSet<&str> = got.values().flatten().map(String::as_str).collect();
    assert_eq!(used, BTreeSet::from(["node-2", "node-4"]));
    for (ip, l) in &got {
        let ranked = leader(*ip, ["node-2", "node-4"]).unwrap();
        assert_eq!(l, &[ranked.to_owned()]);
    }
    // With zone b's speakers dead the others lead as without preferences; back, they reclaim.
    let mut members = all(&n);
    members.remove("node-2");
    members.remove("node-4");
    let plain = config(vec![ad(&[], None, &[])]);
    assert_eq!(
        leaders(&cfg, &services, &n, &members),
        leaders(&plain, &services, &n, &members)
    );
    assert_eq!(leaders(&cfg, &services, &n, &all(&n)), got);
}

#[test]
fn preference_weights_add_up_over_selectors_and_advertisements() {
    let mut n = nodes(4);
    n.get_mut("node-3")
        .unwrap()
        .labels
        .insert("ssd".into(), "yes".into());
    let services = [svc("ns/a", "203.0.113.7", &["node-1"])];
    // node-1 and node-3 (zone a) weigh 30; node-3 also 20 for its disk, from the other
    // advertisement: 50 beats node-2 and node-4's 40.
    let cfg = config(vec![
        L2Advertisement {
            name: "zones".into(),
            preferred_node_selectors: vec![prefer(30, "zone", "a"), prefer(40, "zone", "b")],
            ..ad(&[], None, &[])
        },
        L2Advertisement {
            name: "disks".into(),
            preferred_node_selectors: vec![prefer(20, "ssd", "yes")],
            ..ad(&["lan"], None, &[])
        },
    ]);
    let got = leaders(&cfg, &services, &n, &all(&n));
    assert_eq!(got.values().next().unwrap(), &["node-3".to_owned()]);
}

#[test]
fn ipv6_addresses_are_ranked_too() {
    let n = nodes(3);
    let got = leaders(
        &config(vec![ad(&[], None, &[])]),
        &[svc("ns/a", "2001:db8::5", &["node-1"])],
        &n,
        &all(&n),
    );
    assert_eq!(got.len(), 1);
}

/// Nodes for the preference properties: `node-1` .. `node-6` in zone a or b and rack r1-r3,
/// some not Ready.
fn arb_preference_world() -> impl Strategy<Value = (BTreeMap<String, NodeView>, BTreeSet<String>)> {
    let node = (
        prop::sample::select(vec!["a", "b"]),
        prop::sample::select(vec!["r1", "r2", "r3"]),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
    );
    prop::collection::vec(node, 6).prop_map(|views| {
        let mut nodes = BTreeMap::new();
        let mut members = BTreeSet::new();
        for (i, (zone, rack, ready, live)) in views.into_iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let labels = [("zone", zone), ("rack", rack)]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into();
            nodes.insert(
                name.clone(),
                NodeView {
                    labels,
                    ready,
                    network_unavailable: false,
                    addresses: Vec::new(),
                },
            );
            if live {
                members.insert(name);
            }
        }
        (nodes, members)
    })
}

fn arb_preferring_ads() -> impl Strategy<Value = Vec<L2Advertisement>> {
    let preference = (
        1i32..=100,
        prop::sample::select(vec![
            ("zone", "a"),
            ("zone", "b"),
            ("rack", "r1"),
            ("rack", "r2"),
            ("rack", "r3"),
        ]),
    )
        .prop_map(|(w, (k, v))| prefer(w, k, v));
    let one = (
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        prop::collection::vec(preference, 0..3),
    );
    prop::collection::vec(one, 1..3).prop_map(|ads| {
        ads.into_iter()
            .enumerate()
            .map(|(i, (zone, preferred))| L2Advertisement {
                name: format!("ad-{i}"),
                preferred_node_selectors: preferred,
                ..ad(&[], zone.map(|z| ("zone", z)), &[])
            })
            .collect()
    })
}

proptest! {
    /// The leader is always an eligible node of the highest weight among the eligible ones,
    /// ranked as usual among those; with no preferred node eligible, the ordinary ranking
    /// applies.
    #[test]
    fn the_leader_is_an_eligible_node_of_maximal_weight(
        (n, members) in arb_preference_world(),
        ads in arb_preferring_ads(),
        hosts in prop::collection::vec(0u8..=255, 1..8),
    ) {
        let cfg = config(ads);
        let services: Vec<ServiceView> = hosts
            .iter()
            .map(|h| svc(&format!("ns/s{h}"), &format!("203.0.113.{h}"), &["node-1"]))
            .collect();
        let eligible: Vec<&str> = n
            .iter()
            .filter(|(name, view)| {
                view.ready
                    && members.contains(*name)
                    && cfg.l2_advertisements.iter().any(|ad| list_matches(&ad.node_selectors, &view.labels))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        let weight = |node: &str| -> i64 {
            cfg.l2_advertisements
                .iter()
                .flat_map(|ad| &ad.preferred_node_selectors)
                .filter(|p| list_matches(std::slice::from_ref(&p.preference), &n[node].labels))
                .map(|p| i64::from(p.weight))
                .sum()
        };
        let top = eligible.iter().map(|e| weight(e)).max();
        let mut plain = cfg.clone();
        for ad in &mut plain.l2_advertisements {
            ad.preferred_node_selectors.clear();
        }
        let without = l2_leaders(&plain, &services, &n, &members);
        for (ip, got) in l2_leaders(&cfg, &services, &n, &members) {
            match got {
                None => prop_assert!(eligible.is_empty()),
                Some(l) => {
                    prop_assert!(eligible.contains(&l.as_str()), "{} is not eligible", l);
                    prop_assert_eq!(Some(weight(&l)), top, "{} is not of the top weight", l);
                    let class = eligible.iter().copied().filter(|e| Some(weight(e)) == top);
                    prop_assert_eq!(Some(l.as_str()), leader(ip, class));
                    if top == Some(0) {
                        prop_assert_eq!(Some(&Some(l.clone())), without.get(&ip));
                    }
                }
            }
        }
    }

    /// For a Service alone, an advertisement whose serviceSelectors leave it out is as if it did
    /// not exist, and one that selects it as if it selected every Service.
    #[test]
    fn an_advertisement_that_does_not_select_a_service_is_as_if_it_did_not_exist(
        tiers in prop::collection::vec(prop::option::of(prop::sample::select(vec!["web", "dns"])), 1..4),
        zones in prop::collection::vec(prop::option::of(prop::sample::select(vec!["a", "b"])), 4),
        tier in prop::sample::select(vec!["web", "dns", "db"]),
        host in 0u8..=255,
        dead in prop::option::of(1usize..=5),
    ) {
        let n = nodes(5);
        let ads: Vec<L2Advertisement> = tiers
            .iter()
            .zip(&zones)
            .enumerate()
            .map(|(i, (t, z))| {
                let plain = L2Advertisement { name: format!("ad-{i}"), ..ad(&[], z.map(|z| ("zone", z)), &[]) };
                match t {
                    Some(t) => for_tier(&format!("ad-{i}"), t, plain),
                    None => plain,
                }
            })
            .collect();
        let cfg = config(ads);
        let svc = labelled(&cfg, tier, svc("ns/a", &format!("203.0.113.{host}"), &["node-1"]));
        let mut without = cfg.clone();
        without.l2_advertisements.retain(|ad| {
            ad.service_selectors.is_empty() || svc.selected_by.l2.contains(&ad.name)
        });
        for ad in &mut without.l2_advertisements {
            ad.service_selectors.clear();
        }
        let plain = ServiceView { selected_by: SelectedBy::default(), ..svc.clone() };
        let mut members = all(&n);
        if let Some(d) = dead {
            members.remove(&format!("node-{d}"));
        }
        prop_assert_eq!(
            l2_leaders(&cfg, std::slice::from_ref(&svc), &n, &members),
            l2_leaders(&without, std::slice::from_ref(&plain), &n, &members)
        );
        for me in n.keys() {
            prop_assert_eq!(
                l2_announcements(me, &cfg, std::slice::from_ref(&svc), &n, &members),
                l2_announcements(me, &without, std::slice::from_ref(&plain), &n, &members)
            );
        }
    }

    /// Adding a node only moves IPs to that node, and about 1/n of them.
    #[test]
    fn adding_a_node_moves_few_ips_and_only_to_it(count in 2usize..12) {
        let ips: Vec<IpAddr> = (0..1000u32).map(|i| IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8])).collect();
        let before: Vec<String> = (0..count).map(|i| format!("node-{i}")).collect();
        let mut after = before.clone();
        after.push("node-new".into());
        let mut moved = 0;
        for &ip in &ips {
            let a = leader(ip, before.iter().map(String::as_str)).unwrap();
            let b = leader(ip, after.iter().map(String::as_str)).unwrap();
            if a != b {
                prop_assert_eq!(b, "node-new");
                moved += 1;
            }
        }
        // Expected 1000/(count+1); allow generous noise.
        prop_assert!(moved <= 2 * 1000 / (count + 1) + 30, "moved {moved} of 1000 with {count}+1 nodes");
    }

    /// Removing a node that leads nothing moves nothing; removing a leader moves only its IPs.
    #[test]
    fn removing_a_node_moves_only_its_ips(count in 2usize..12, gone in 0usize..12) {
        let gone = gone % count;
        let ips: Vec<IpAddr> = (0..300u32).map(|i| IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8])).collect();
        let before: Vec<String> = (0..count).map(|i| format!("node-{i}")).collect();
        let after: Vec<String> = before.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, n)| n.clone()).collect();
        for &ip in &ips {
            let a = leader(ip, before.iter().map(String::as_str)).unwrap();
            let b = leader(ip, after.iter().map(String::as_str)).unwrap();
            if a != before[gone] {
                prop_assert_eq!(a, b);
            }
        }
    }
}

#[test]
fn l2_leaders_names_exactly_the_node_that_announces() {
    let n = nodes(6);
    let mut services: Vec<ServiceView> = (0..40)
        .map(|i| {
            svc(
                &format!("ns/s{i}"),
                &format!("203.0.113.{i}"),
                &["node-1", "node-4"],
            )
        })
        .collect();
    services.push(svc("ns/idle", "203.0.113.200", &[]));
    let mut members = all(&n);
    members.remove("node-2");
    let cfg = config(vec![ad(&[], None, &[])]);
    let announced = leaders(&cfg, &services, &n, &members);
    let decided = l2_leaders(&cfg, &services, &n, &members);
    assert_eq!(decided.len(), 41, "every advertised IP has a decision");
    for (ip, leader) in &decided {
        match leader {
            Some(node) => assert_eq!(announced.get(ip), Some(&vec![node.clone()])),
            None => assert!(!announced.contains_key(ip)),
        }
    }
    assert_eq!(decided[&"203.0.113.200".parse::<IpAddr>().unwrap()], None);
}
