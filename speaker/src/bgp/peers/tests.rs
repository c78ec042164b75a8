use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ferrolb_api::v1alpha1::{BgpPeer, DynamicAsn, SecretKeyRef};

use super::*;
use crate::announce::bgp::RouteAttributes;
use crate::bgp::shell::BGP_PORT;

fn peer() -> BgpPeer {
    serde_json::from_value(serde_json::json!({
        "name": "tor", "myASN": 64513, "peerASN": 64512, "peerAddress": "198.51.100.1",
    }))
    .unwrap()
}

const V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11);

fn node() -> NodeAddresses {
    NodeAddresses {
        v4: Some(V4),
        v6: Some(V6),
    }
}

#[test]
fn node_addresses_take_the_first_of_each_family() {
    let a: Vec<IpAddr> = ["2001:db8::1", "10.0.0.1", "10.0.0.2", "2001:db8::2"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let n = NodeAddresses::of(&a);
    assert_eq!(n.v4, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(n.v6, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(NodeAddresses::of(&[]), NodeAddresses::default());
}

#[test]
fn defaults_come_from_the_node_and_metallb_timers() {
    let c = peer_config(&peer(), node(), None).unwrap();
    assert_eq!(c.address, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    assert_eq!(c.port, BGP_PORT);
    assert_eq!(c.source, None);
    assert_eq!(c.password, None);
    assert_eq!(c.session.local_asn, 64513);
    assert_eq!(c.session.peer_as, PeerAs::Exactly(64512));
    assert_eq!(c.session.router_id, V4);
    assert_eq!(c.session.next_hop_v4, Some(V4));
    assert_eq!(c.session.next_hop_v6, Some(V6));
    assert_eq!(c.session.hold_time, Duration::from_secs(90));
    assert_eq!(c.session.keepalive, Some(Duration::from_secs(30)));
    assert!(!c.session.passive);
    assert_eq!(
        c.session.connect_retry,
        crate::bgp::config::DEFAULT_CONNECT_RETRY
    );
    assert_eq!(
        c.session.connect_retry_max,
        crate::bgp::config::DEFAULT_CONNECT_RETRY_MAX
    );
}

#[test]
fn settings_override_the_defaults() {
    let mut p = peer();
    p.peer_port = 1179;
    p.router_id = Some("10.255.0.1".into());
    p.source_address = Some("2001:db8:100::99".into());
    p.hold_time = Some("9s".into());
    p.connect_time = Some("5s".into());
    let c = peer_config(&p, node(), None).unwrap();
    assert_eq!(c.session.connect_retry, Duration::from_secs(5));
    assert_eq!(c.session.connect_retry_max, Duration::from_secs(5));
    assert_eq!(c.port, 1179);
    assert_eq!(c.session.router_id, Ipv4Addr::new(10, 255, 0, 1));
    assert_eq!(c.source, Some("2001:db8:100::99".parse().unwrap()));
    // The source is the next hop of its family; the other family keeps the node's.
    assert_eq!(
        c.session.next_hop_v6,
        Some("2001:db8:100::99".parse().unwrap())
    );
    assert_eq!(c.session.next_hop_v4, Some(V4));
    assert_eq!(c.session.hold_time, Duration::from_secs(9));
    assert_eq!(c.session.keepalive, Some(Duration::from_secs(3)));
}

#[test]
fn an_ipv6_only_node_needs_a_router_id() {
    let v6_only = NodeAddresses {
        v4: None,
        v6: Some(V6),
    };
    let err = peer_config(&peer(), v6_only, None).unwrap_err();
    assert_eq!(
        err,
        "bgpPeers[tor].routerID: unset, and the node has no IPv4 InternalIP to use instead"
    );
    let mut p = peer();
    p.router_id = Some("192.0.2.7".into());
    let c = peer_config(&p, v6_only, None).unwrap();
    assert_eq!(c.session.next_hop_v4, None, "IPv4 routes are not announced");
    assert_eq!(c.session.next_hop_v6, Some(V6));
}

#[test]
fn bad_values_name_the_field_and_the_value() {
    type Change = fn(&mut BgpPeer);
    let cases: [(Change, &str); 5] = [
        (
            |p| p.peer_address = "tor.example".into(),
            r#"bgpPeers[tor].peerAddress: "tor.example" is not an IP address"#,
        ),
        (
            |p| p.source_address = Some("eth0".into()),
            r#"bgpPeers[tor].sourceAddress: "eth0" is not an IP address"#,
        ),
        (
            |p| p.router_id = Some("2001:db8::1".into()),
            r#"bgpPeers[tor].routerID: "2001:db8::1" is not an IPv4 address"#,
        ),
        (
            |p| p.hold_time = Some("90".into()),
            r#"bgpPeers[tor].holdTime: "90" is not a duration"#,
        ),
        (
            |p| p.keepalive_time = Some("1 s".into()),
            r#"bgpPeers[tor].keepaliveTime: "1 s" is not a duration"#,
        ),
    ];
    for (change, want) in cases {
        let mut p = peer();
        change(&mut p);
        assert_eq!(peer_config(&p, node(), None).unwrap_err(), want);
    }
}

#[test]
fn the_password_comes_from_the_read_secret_and_problems_say_why() {
    let mut p = peer();
    p.password_secret_ref = Some(SecretKeyRef {
        name: "bgp-tor".into(),
        key: "password".into(),
    });
    let err = peer_config(&p, node(), None).unwrap_err();
    assert_eq!(
        err,
        r#"bgpPeers[tor].passwordSecretRef: the Secret "bgp-tor" was not read yet"#
    );
    let ok: PasswordRead = Ok(Password::new("s3cret"));
    let c = peer_config(&p, node(), Some(&ok)).unwrap();
    assert_eq!(c.password, Some(Password::new("s3cret")));
    let bad: PasswordRead = Err(r#"Secret "bgp-tor" not found"#.into());
    assert_eq!(
        peer_config(&p, node(), Some(&bad)).unwrap_err(),
        r#"bgpPeers[tor].passwordSecretRef: Secret "bgp-tor" not found"#
    );
    // A peer without a reference ignores whatever was read.
    assert_eq!(
        peer_config(&peer(), node(), Some(&ok)).unwrap().password,
        None
    );
}

#[test]
fn passwords_are_read_exactly_and_never_shown() {
    let data = |v: &[u8]| BTreeMap::from([("password".to_owned(), v.to_vec())]);
    assert_eq!(
        password_from("s", "password", Some(&data(b"s3cret\n"))),
        Ok(Password::new("s3cret\n")),
        "taken as it is: a trailing newline is part of the key"
    );
    type Data = Option<BTreeMap<String, Vec<u8>>>;
    let cases: [(Data, &str, &str); 5] = [
        (None, "password", r#"Secret "s" not found"#),
        (Some(data(b"x")), "key", r#"Secret "s" has no key "key""#),
        (
            Some(data(b"")),
            "password",
            r#"Secret "s" key "password" is empty"#,
        ),
        (
            Some(data(&[b'k'; 81])),
            "password",
            r#"Secret "s" key "password" is 81 bytes long, more than the 80 TCP-MD5 allows"#,
        ),
        (
            Some(data(&[0xff, 0xfe])),
            "password",
            r#"Secret "s" key "password" is not UTF-8 text"#,
        ),
    ];
    for (data, key, want) in cases {
        assert_eq!(password_from("s", key, data.as_ref()), Err(want.to_owned()));
    }
    assert!(password_from("s", "password", Some(&data(&[b'k'; 80]))).is_ok());
    let shown = format!(
        "{:?}",
        password_from("s", "password", Some(&data(b"hunter2")))
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_peer_without_a_session_is_reported_idle_with_the_reason() {
    let mut sessions = Sessions::default();
    let why = r#"bgpPeers[tor].passwordSecretRef: Secret "bgp-tor" not found"#.to_owned();
    sessions.update(
        BTreeMap::from([("tor".to_owned(), Err(why.clone()))]),
        &BTreeMap::new(),
    );
    assert!(sessions.is_empty());
    assert_eq!(sessions.problems().get("tor"), Some(&why));
    let p = peer();
    let other = BgpPeer {
        name: "unknown".into(),
        ..peer()
    };
    let report = sessions.report(&[&p, &other]);
    assert_eq!(
        report.len(),
        1,
        "a peer the sessions never heard of is not reported"
    );
    let r = &report[0];
    assert_eq!(
        (r.name.as_str(), r.address.as_str()),
        ("tor", "198.51.100.1")
    );
    assert_eq!((r.my_asn, r.peer_asn), (64513, Some(64512)));
    assert_eq!(r.status.state, crate::bgp::State::Idle);
    assert_eq!(r.status.last_error.as_deref(), Some(why.as_str()));
}

#[test]
fn dynamic_asn_accepts_the_peers_as_by_kind() {
    for (dynamic, want) in [
        (DynamicAsn::Internal, PeerAs::Internal),
        (DynamicAsn::External, PeerAs::External),
    ] {
        let mut p = peer();
        p.peer_asn = None;
        p.dynamic_asn = Some(dynamic);
        let c = peer_config(&p, node(), None).unwrap();
        assert_eq!(c.session.peer_as, want);
    }
    let mut p = peer();
    p.peer_asn = None;
    let err = peer_config(&p, node(), None).unwrap_err();
    assert_eq!(err, "bgpPeers[tor].peerASN: unset, and so is dynamicASN");
}

#[test]
fn equal_routes_are_kept_once_for_all_peers() {
    let routes = |prefixes: &[&str]| -> PeerRoutes {
        prefixes
            .iter()
            .map(|p| (p.parse().unwrap(), RouteAttributes::default()))
            .collect()
    };
    let mut shared = SharedRoutes::default();
    let held = Arc::new(routes(&["203.0.113.1/32"]));
    shared.hold(&held);
    shared.hold(&held);
    assert_eq!(shared.0.len(), 1, "a copy is held once");
    // Equal to a held copy: that copy.
    assert!(Arc::ptr_eq(
        &shared.share(&routes(&["203.0.113.1/32"])),
        &held
    ));
    // New: kept, and shared with the next equal set.
    let first = shared.share(&routes(&["203.0.113.2/32"]));
    let second = shared.share(&routes(&["203.0.113.2/32"]));
    assert!(Arc::ptr_eq(&first, &second));
    assert!(!Arc::ptr_eq(&first, &held));
    assert_eq!(shared.0.len(), 2);
}
