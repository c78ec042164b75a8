use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ferrolb_api::v1alpha1::{BgpPeer, DynamicAsn, SecretKeyRef};

use super::bfd::bfd_config;
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

fn bfd_profile() -> ferrolb_api::v1alpha1::BfdProfile {
    serde_json::from_value(serde_json::json!({
        "name": "fast", "receiveInterval": 100, "transmitInterval": 50, "detectMultiplier": 4,
        "passiveMode": true, "minimumTtl": 200,
    }))
    .unwrap()
}

#[test]
fn bfd_runs_from_the_sessions_source_with_the_profiles_timers() {
    use crate::bfd::Hop;
    let w = bfd_config(
        &peer(),
        &peer_config(&peer(), node(), None).unwrap(),
        node(),
        &bfd_profile(),
    )
    .unwrap();
    assert_eq!(w.key.peer, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    assert_eq!(
        w.key.local,
        IpAddr::V4(V4),
        "the node's address of the peer's family"
    );
    assert_eq!((w.key.hop, w.key.interface.as_deref()), (Hop::Single, None));
    let t = w.profile.timers;
    assert_eq!(
        (t.desired_min_tx, t.required_min_rx, t.detect_mult),
        (Duration::from_millis(50), Duration::from_millis(100), 4)
    );
    assert!(w.profile.passive);
    assert_eq!(w.profile.minimum_ttl, 200);

    // sourceAddress of the peer's family wins; multihop and the VRF follow the peer.
    let mut p = peer();
    p.source_address = Some("198.51.100.99".into());
    p.ebgp_multi_hop = true;
    p.vrf = Some("red".into());
    let w = bfd_config(
        &p,
        &peer_config(&p, node(), None).unwrap(),
        node(),
        &bfd_profile(),
    )
    .unwrap();
    assert_eq!(w.key.local, "198.51.100.99".parse::<IpAddr>().unwrap());
    assert_eq!(
        (w.key.hop, w.key.interface.as_deref()),
        (Hop::Multi, Some("red"))
    );

    // An IPv6 peer runs from the node's IPv6 address, or says why it cannot.
    let mut p = peer();
    p.peer_address = "2001:db8:100::1".into();
    p.source_address = Some("198.51.100.99".into());
    let w = bfd_config(
        &p,
        &peer_config(&p, node(), None).unwrap(),
        node(),
        &bfd_profile(),
    )
    .unwrap();
    assert_eq!(
        w.key.local,
        IpAddr::V6(V6),
        "a source of the other family is not used"
    );
    let v4_only = NodeAddresses {
        v4: Some(V4),
        v6: None,
    };
    assert_eq!(
        bfd_config(
            &p,
            &peer_config(&p, node(), None).unwrap(),
            v4_only,
            &bfd_profile()
        )
        .unwrap_err(),
        "bgpPeers[tor].bfdProfile: the node has no IPv6 InternalIP to run BFD from"
    );
}

#[test]
fn only_a_failure_of_an_up_session_takes_bgp_down() {
    use crate::bfd::{BfdState, Diag, State};
    let state = |state, remote_state| BfdState {
        state,
        diag: Diag::None,
        remote_state,
        local_discriminator: 1,
        remote_discriminator: 2,
        tx_interval: Duration::from_millis(300),
        detection_time: None,
        source_port: 49152,
    };
    let (up, down, init, admin) = (State::Up, State::Down, State::Init, State::AdminDown);
    // (last seen, now, the peer's state now) → what BGP is told.
    let cases = [
        (Some(up), down, down, Some(true)),
        (Some(up), down, init, Some(true)),
        (Some(up), init, down, Some(true)),
        (Some(up), down, admin, Some(false)),
        (Some(up), up, up, None),
        (None, up, up, None),
        (Some(init), up, up, None),
        (None, down, down, None),
        (Some(down), down, admin, None),
        (Some(init), down, down, None),
    ];
    for (last, now, remote, want) in cases {
        assert_eq!(
            bfd::takes_bgp_down(last, &state(now, remote)),
            want,
            "{last:?} -> {now:?} (peer {remote:?})"
        );
    }
    // Whatever the states: a session that was not Up never takes BGP down.
    let all = [admin, down, init, up];
    for last in all
        .iter()
        .copied()
        .filter(|s| *s != up)
        .map(Some)
        .chain([None])
    {
        for now in all {
            for remote in all {
                assert_eq!(bfd::takes_bgp_down(last, &state(now, remote)), None);
            }
        }
    }
}

/// Sessions against a scripted router on loopback (127.0.0.4) whose BFD is a second BFD task:
/// the BGP session survives the router's AdminDown, and goes down (Cease, BFD Down) when the
/// router's BFD falls silent, long before any hold time.
#[tokio::test]
async fn a_silent_bfd_peer_takes_the_bgp_session_down_and_admin_down_does_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    use crate::bfd::{self as bfd_task, PeerKey, State};
    use crate::bgp::sim::{PeerOpen, config};
    use crate::bgp::wire::{self, Message};

    const WAIT: Duration = Duration::from_secs(10);
    async fn read_message(conn: &mut TcpStream) -> Option<Vec<u8>> {
        let mut message = vec![0u8; wire::HEADER_LEN];
        conn.read_exact(&mut message).await.ok()?;
        let len = usize::from(u16::from_be_bytes([message[16], message[17]]));
        message.resize(len, 0);
        conn.read_exact(&mut message[wire::HEADER_LEN..])
            .await
            .ok()?;
        Some(message)
    }
    /// The NOTIFICATION the router is sent before EOF, if any.
    async fn notification(conn: &mut TcpStream) -> Option<(u8, u8)> {
        let mut seen = None;
        while let Some(m) = timeout(WAIT, read_message(conn))
            .await
            .expect("EOF in time")
        {
            if let Ok(Message::Notification(n)) = wire::decode(&m) {
                seen = Some((n.code, n.subcode));
            }
        }
        seen
    }

    let (us, router): (IpAddr, IpAddr) =
        ("127.0.0.3".parse().unwrap(), "127.0.0.4".parse().unwrap());
    let listener = TcpListener::bind((router, 0)).await.unwrap();
    let mut session = PeerConfig::new(config(), router);
    session.port = listener.local_addr().unwrap().port();
    session.source = Some(us);
    let ours = bfd_config(
        &BgpPeer {
            peer_address: router.to_string(),
            source_address: Some(us.to_string()),
            ..peer()
        },
        &session,
        node(),
        &serde_json::from_value(serde_json::json!({
            "name": "fast", "receiveInterval": 20, "transmitInterval": 20, "detectMultiplier": 3,
        }))
        .unwrap(),
    )
    .unwrap();
    let theirs = PeerKey {
        peer: us,
        local: router,
        ..ours.key.clone()
    };
    let wanted = || {
        BTreeMap::from([(
            "tor".to_owned(),
            Ok(Wanted {
                session: session.clone(),
                bfd: Some(Ok(ours.clone())),
            }),
        )])
    };
    let tor = BgpPeer {
        peer_address: router.to_string(),
        ..peer()
    };
    let bfd_state = |sessions: &Sessions| {
        let report = sessions.report(&[&tor]);
        report[0].bfd.clone().unwrap()
    };
    let wait_bfd = async |sessions: &Sessions, want: State| {
        timeout(WAIT, async {
            while bfd_state(sessions).state.map(|s| s.state) != Some(want) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("BFD never {want}: {:?}", bfd_state(sessions)));
    };
    let establish = async || {
        let (mut conn, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        read_message(&mut conn).await.unwrap();
        conn.write_all(&PeerOpen::new().bytes()).await.unwrap();
        conn.write_all(&wire::encode_keepalive()).await.unwrap();
        conn
    };

    let mut sessions = Sessions::default();
    sessions.update(wanted(), &BTreeMap::new());
    let mut conn = establish().await;
    let router_bfd = bfd_task::Bfd::spawn(7);
    router_bfd
        .add_peer(theirs.clone(), ours.profile)
        .await
        .unwrap();
    wait_bfd(&sessions, State::Up).await;

    // The router's operator removes BFD: AdminDown, and the BGP session stays.
    router_bfd.remove_peer(&theirs).await;
    wait_bfd(&sessions, State::Down).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = sessions.report(&[&tor]);
    assert_eq!(report[0].status.state, crate::bgp::State::Established);
    assert_eq!(report[0].bfd.as_ref().unwrap().down_events, 0);

    // BFD back, then the router goes silent (its task ends without a word).
    router_bfd
        .add_peer(theirs.clone(), ours.profile)
        .await
        .unwrap();
    wait_bfd(&sessions, State::Up).await;
    drop(router_bfd);
    assert_eq!(
        notification(&mut conn).await,
        Some((6, 10)),
        "Cease, BFD Down"
    );
    let report = sessions.report(&[&tor]);
    assert_eq!(report[0].bfd.as_ref().unwrap().down_events, 1);
    assert!(
        report[0]
            .status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("BFD")),
        "{:?}",
        report[0].status.last_error
    );

    // New timers re-time the BFD session and leave the BGP session alone.
    let mut conn = establish().await;
    let router_bfd = bfd_task::Bfd::spawn(8);
    router_bfd
        .add_peer(theirs.clone(), ours.profile)
        .await
        .unwrap();
    wait_bfd(&sessions, State::Up).await;
    let mut slower = ours.clone();
    slower.profile.timers.desired_min_tx = Duration::from_millis(40);
    sessions.update(
        BTreeMap::from([(
            "tor".to_owned(),
            Ok(Wanted {
                session: session.clone(),
                bfd: Some(Ok(slower)),
            }),
        )]),
        &BTreeMap::new(),
    );
    timeout(WAIT, async {
        while bfd_state(&sessions).state.map(|s| s.tx_interval) != Some(Duration::from_millis(40)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the new interval negotiated");
    assert_eq!(
        sessions.report(&[&tor])[0].status.state,
        crate::bgp::State::Established
    );
    assert_eq!(
        bfd_state(&sessions).down_events,
        1,
        "the count carries over"
    );

    sessions.shutdown().await;
    assert_eq!(notification(&mut conn).await, Some((6, 2)));
    router_bfd.shutdown().await;
}

#[test]
fn graceful_restart_offers_the_restart_time_only_when_the_peer_asks_for_it() {
    assert_eq!(
        peer_config(&peer(), node(), None)
            .unwrap()
            .session
            .graceful_restart,
        None
    );
    let mut p = peer();
    p.graceful_restart = true;
    assert_eq!(
        peer_config(&p, node(), None)
            .unwrap()
            .session
            .graceful_restart,
        Some(RESTART_TIME)
    );
}

#[tokio::test]
async fn a_bfd_start_that_fails_is_retried_until_it_runs() {
    use super::bfd::{BfdWanted, Link, RETRY_FIRST};
    use crate::bfd::{Bfd, Hop, PeerKey, Profile, Timers};
    use crate::bgp::shell::BfdDownSignal;

    let key = PeerKey {
        peer: "127.0.0.6".parse().unwrap(),
        local: "127.0.0.5".parse().unwrap(),
        interface: None,
        hop: Hop::Single,
    };
    // Something else holds the single-hop BFD port on our address: the start fails.
    let squatter = std::net::UdpSocket::bind((key.local, Hop::Single.port())).unwrap();
    let wanted = BfdWanted {
        key,
        profile: Profile {
            timers: Timers {
                desired_min_tx: Duration::from_millis(50),
                required_min_rx: Duration::from_millis(50),
                detect_mult: 3,
            },
            passive: false,
            minimum_ttl: 254,
        },
    };
    let bfd = Bfd::spawn(3);
    let (signal, _signals) = BfdDownSignal::pair();
    let link = Link::start(&bfd, "tor", wanted, signal, 2);
    let seen = async |done: fn(&super::bfd::BfdSeen) -> bool| {
        tokio::time::timeout(RETRY_FIRST * 5, async {
            while !done(&link.seen()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{:?}", link.seen()));
    };
    seen(|s| s.error.is_some()).await;
    let failed = link.seen();
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .starts_with("cannot run BFD: "),
        "{failed:?}"
    );
    assert_eq!((failed.state, failed.down_events), (None, 2));

    // The port is free again: a retry starts the session and the error goes.
    drop(squatter);
    seen(|s| s.state.is_some()).await;
    let running = link.seen();
    assert_eq!((running.error, running.down_events), (None, 2));
    link.stop(&bfd);
    bfd.shutdown().await;
}
