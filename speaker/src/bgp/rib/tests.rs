use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::*;
use crate::bgp::sim::{NEXT_HOP_V4, NEXT_HOP_V6, PeerRib};
use crate::bgp::wire::{self, Message};

fn ctx() -> UpdateContext {
    UpdateContext {
        local_asn: 65000,
        ibgp: false,
        four_octet: true,
        next_hop_v4: Some(NEXT_HOP_V4),
        next_hop_v6: Some(NEXT_HOP_V6),
    }
}

fn both() -> BTreeSet<Family> {
    Family::ALL.into_iter().collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn attrs(communities: &[u32]) -> RouteAttributes {
    RouteAttributes {
        communities: communities.iter().copied().collect(),
        ..RouteAttributes::default()
    }
}

fn routes(list: &[(&str, RouteAttributes)]) -> BTreeMap<IpNet, RouteAttributes> {
    list.iter().map(|(p, a)| (net(p), a.clone())).collect()
}

/// /32s (or /128s) counting up from a base address.
fn many(n: u32, v6: bool) -> BTreeMap<IpNet, RouteAttributes> {
    (0..n)
        .map(|i| {
            let p = if v6 {
                format!("2001:db8::{:x}:{:x}/128", i >> 16, i & 0xffff)
            } else {
                format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 0xff, i & 0xff)
            };
            (net(&p), attrs(&[1]))
        })
        .collect()
}

fn apply(rib: &mut PeerRib, messages: &[Vec<u8>]) {
    for m in messages {
        rib.apply(m);
    }
}

#[test]
fn ebgp_routes_carry_origin_igp_our_asn_and_the_node_next_hop() {
    let mut out = AdjRibOut::default();
    let desired = routes(&[("192.0.2.1/32", attrs(&[0xfde8_0001]))]);
    let sync = out.sync(&desired, &both(), &ctx());
    let mut peer = PeerRib::new(true);
    apply(&mut peer, &sync.messages);
    let got = &peer.routes[&net("192.0.2.1/32")];
    assert_eq!(got.origin, Some(0));
    assert_eq!(got.as_path, vec![65000]);
    assert_eq!(got.next_hop, Some(IpAddr::V4(NEXT_HOP_V4)));
    assert_eq!(got.attributes.communities, [0xfde8_0001].into());
}

#[test]
fn ibgp_routes_have_an_empty_as_path_and_a_local_pref() {
    let ibgp = UpdateContext {
        ibgp: true,
        ..ctx()
    };
    let with_pref = RouteAttributes {
        local_pref: Some(200),
        ..RouteAttributes::default()
    };
    let desired = routes(&[
        ("192.0.2.1/32", with_pref),
        ("192.0.2.2/32", RouteAttributes::default()),
    ]);
    let sync = AdjRibOut::default().sync(&desired, &both(), &ibgp);
    let mut peer = PeerRib::new(true);
    apply(&mut peer, &sync.messages);
    assert!(peer.routes.values().all(|r| r.as_path.is_empty()));
    assert_eq!(
        peer.routes[&net("192.0.2.1/32")].attributes.local_pref,
        Some(200)
    );
    assert_eq!(
        peer.routes[&net("192.0.2.2/32")].attributes.local_pref,
        Some(DEFAULT_LOCAL_PREF)
    );
}

#[test]
fn local_pref_is_never_sent_to_an_ebgp_peer() {
    let desired = routes(&[(
        "192.0.2.1/32",
        RouteAttributes {
            local_pref: Some(200),
            ..RouteAttributes::default()
        },
    )]);
    let sync = AdjRibOut::default().sync(&desired, &both(), &ctx());
    let mut peer = PeerRib::new(true);
    apply(&mut peer, &sync.messages);
    assert_eq!(
        peer.routes[&net("192.0.2.1/32")].attributes.local_pref,
        None
    );
}

#[test]
fn without_four_octet_as_the_path_has_as_trans_and_an_as4_path() {
    let old = UpdateContext {
        local_asn: 4_200_000_000,
        four_octet: false,
        ..ctx()
    };
    let desired = routes(&[("192.0.2.1/32", RouteAttributes::default())]);
    let sync = AdjRibOut::default().sync(&desired, &both(), &old);
    let mut peer = PeerRib::new(false);
    apply(&mut peer, &sync.messages);
    let got = &peer.routes[&net("192.0.2.1/32")];
    assert_eq!(got.as_path, vec![u32::from(wire::AS_TRANS)]);
    assert_eq!(got.as4_path, vec![4_200_000_000]);
}

#[test]
fn two_octet_asn_without_four_octet_as_needs_no_as4_path() {
    let old = UpdateContext {
        four_octet: false,
        ..ctx()
    };
    let desired = routes(&[("192.0.2.1/32", RouteAttributes::default())]);
    let sync = AdjRibOut::default().sync(&desired, &both(), &old);
    let mut peer = PeerRib::new(false);
    apply(&mut peer, &sync.messages);
    let got = &peer.routes[&net("192.0.2.1/32")];
    assert_eq!(
        (got.as_path.clone(), got.as4_path.clone()),
        (vec![65000], vec![])
    );
}

#[test]
fn large_communities_are_sent() {
    let a = RouteAttributes {
        large_communities: [(65000, 1, 2), (4_200_000_000, 3, 4)].into(),
        ..RouteAttributes::default()
    };
    let desired = routes(&[("2001:db8::1/128", a.clone())]);
    let sync = AdjRibOut::default().sync(&desired, &both(), &ctx());
    let mut peer = PeerRib::new(true);
    apply(&mut peer, &sync.messages);
    assert_eq!(peer.attributes(), desired);
}

#[test]
fn ipv6_routes_go_in_mp_reach_with_the_node_ipv6_next_hop() {
    let desired = routes(&[("2001:db8::1/128", attrs(&[]))]);
    let sync = AdjRibOut::default().sync(&desired, &both(), &ctx());
    assert_eq!(sync.messages.len(), 1);
    let mut peer = PeerRib::new(true);
    apply(&mut peer, &sync.messages);
    assert_eq!(
        peer.routes[&net("2001:db8::1/128")].next_hop,
        Some(IpAddr::V6(NEXT_HOP_V6))
    );
}

#[test]
fn many_routes_with_equal_attributes_share_few_updates_within_4096_octets() {
    for v6 in [false, true] {
        let desired = many(5000, v6);
        let sync = AdjRibOut::default().sync(&desired, &both(), &ctx());
        let per_prefix = if v6 { 17 } else { 5 };
        let fewest = (5000 * per_prefix) / (wire::MAX_MESSAGE - 100) + 1;
        assert!(
            sync.messages.len() <= fewest + 1,
            "{} UPDATEs for 5000 prefixes (v6: {v6})",
            sync.messages.len()
        );
        assert!(sync.messages.iter().all(|m| m.len() <= wire::MAX_MESSAGE));
        let mut peer = PeerRib::new(true);
        apply(&mut peer, &sync.messages);
        assert_eq!(peer.attributes(), desired);
    }
}

#[test]
fn routes_are_grouped_by_attributes() {
    let desired = routes(&[
        ("192.0.2.1/32", attrs(&[1])),
        ("192.0.2.2/32", attrs(&[2])),
        ("192.0.2.3/32", attrs(&[1])),
        ("192.0.2.4/32", attrs(&[2])),
    ]);
    let sync = AdjRibOut::default().sync(&desired, &both(), &ctx());
    assert_eq!(sync.messages.len(), 2, "one UPDATE per attribute set");
}

#[test]
fn a_second_sync_sends_only_the_difference_withdrawals_first() {
    let mut out = AdjRibOut::default();
    let before = routes(&[
        ("192.0.2.1/32", attrs(&[1])),
        ("192.0.2.2/32", attrs(&[1])),
        ("2001:db8::1/128", attrs(&[1])),
    ]);
    let mut peer = PeerRib::new(true);
    apply(&mut peer, &out.sync(&before, &both(), &ctx()).messages);
    let after = routes(&[
        ("192.0.2.1/32", attrs(&[1])),
        ("192.0.2.3/32", attrs(&[1])),
        ("2001:db8::1/128", attrs(&[2])),
    ]);
    let sync = out.sync(&after, &both(), &ctx());
    assert_eq!((sync.withdrawn, sync.announced), (1, 2));
    let first = wire::decode(&sync.messages[0]).unwrap();
    assert!(
        matches!(first, Message::Update(s) if s.withdrawn == 1 && s.announced == 0),
        "withdrawal first: {first:?}"
    );
    apply(&mut peer, &sync.messages);
    assert_eq!(peer.attributes(), after);
    assert!(out.sync(&after, &both(), &ctx()).messages.is_empty());
}

#[test]
fn a_family_not_negotiated_is_skipped_and_counted() {
    let desired = routes(&[
        ("192.0.2.1/32", attrs(&[])),
        ("2001:db8::1/128", attrs(&[])),
    ]);
    let v4: BTreeSet<Family> = [Family::Ipv4Unicast].into();
    let mut out = AdjRibOut::default();
    let sync = out.sync(&desired, &v4, &ctx());
    assert_eq!((sync.announced, sync.skipped), (1, 1));
    assert_eq!(out.len(), 1);
}

#[test]
fn a_family_without_a_next_hop_is_skipped() {
    let no_v6 = UpdateContext {
        next_hop_v6: None,
        ..ctx()
    };
    let desired = routes(&[("2001:db8::1/128", attrs(&[]))]);
    let sync = AdjRibOut::default().sync(&desired, &both(), &no_v6);
    assert_eq!((sync.announced, sync.skipped), (0, 1));
    assert!(sync.messages.is_empty());
}

#[test]
fn attributes_too_large_for_one_message_are_counted_not_sent() {
    let huge = attrs(&(0..1100).collect::<Vec<u32>>());
    let desired = routes(&[("192.0.2.1/32", huge)]);
    let mut out = AdjRibOut::default();
    let sync = out.sync(&desired, &both(), &ctx());
    assert_eq!((sync.announced, sync.oversized), (0, 1));
    assert!(sync.messages.is_empty());
    assert!(out.is_empty());
}

#[test]
fn end_of_rib_is_an_empty_update_for_ipv4_and_a_bare_mp_unreach_for_ipv6() {
    assert_eq!(end_of_rib(Family::Ipv4Unicast).len(), 23);
    for family in Family::ALL {
        let Ok(Message::Update(s)) = wire::decode(&end_of_rib(family)) else {
            panic!("not an UPDATE");
        };
        assert_eq!(s.end_of_rib, Some(family));
    }
}

#[test]
fn forgetting_a_family_resends_all_of_it() {
    let desired = routes(&[
        ("192.0.2.1/32", attrs(&[])),
        ("2001:db8::1/128", attrs(&[])),
    ]);
    let mut out = AdjRibOut::default();
    out.sync(&desired, &both(), &ctx());
    out.forget(Family::Ipv6Unicast);
    let sync = out.sync(&desired, &both(), &ctx());
    assert_eq!((sync.withdrawn, sync.announced), (0, 1));
}
