//! The OPEN exchange: what we offer, each refusal with its exact code, and what is negotiated.

use super::*;

/// The NOTIFICATION a session sends on the OPEN `peer`, from OpenSent.
pub(super) fn open_refusal(config: SessionConfig, peer: &PeerOpen) -> (Session, Vec<Action>) {
    let now = t0();
    let mut s = Session::new(config, 1);
    let (id, _) = dial(&mut s, now);
    let out = s.receive(now, id, &peer.bytes());
    (s, out)
}

#[test]
fn connected_sends_our_open_with_our_capabilities() {
    let mut s = session();
    let (_, out) = dial(&mut s, t0());
    assert_eq!(s.state(), State::OpenSent);
    let [Message::Open(open)] = one(messages(&out)) else {
        panic!("not one OPEN");
    };
    assert_eq!(open.my_as, 65000);
    assert_eq!(open.hold_time, 90);
    assert_eq!(open.bgp_id, ROUTER_ID);
    assert_eq!(open.families(), Family::ALL.to_vec());
    assert!(open.has_route_refresh());
    assert_eq!(open.peer_as(), LOCAL_ASN);
}

#[test]
fn a_four_octet_local_asn_sends_as_trans_in_the_two_octet_field() {
    let mut s = Session::new(
        SessionConfig {
            local_asn: 4_200_000_000,
            ..config()
        },
        1,
    );
    let (_, out) = dial(&mut s, t0());
    let [Message::Open(open)] = one(messages(&out)) else {
        panic!("not one OPEN");
    };
    assert_eq!(open.my_as, wire::AS_TRANS);
    assert_eq!(open.peer_as(), 4_200_000_000);
}

#[test]
fn open_errors_send_the_exact_notification() {
    let cases: Vec<(&str, PeerOpen, SessionConfig, (u8, u8))> = vec![
        (
            "bad peer AS",
            PeerOpen {
                asn: 65099,
                ..PeerOpen::new()
            },
            config(),
            (2, 2),
        ),
        (
            "dynamic internal peer presenting another AS",
            PeerOpen::new(),
            SessionConfig {
                peer_as: PeerAs::Internal,
                ..config()
            },
            (2, 2),
        ),
        (
            "dynamic external peer presenting our AS",
            PeerOpen {
                asn: LOCAL_ASN,
                ..PeerOpen::new()
            },
            SessionConfig {
                peer_as: PeerAs::External,
                ..config()
            },
            (2, 2),
        ),
        (
            "hold time 1 s",
            PeerOpen {
                hold: 1,
                ..PeerOpen::new()
            },
            config(),
            (2, 6),
        ),
        (
            "hold time 2 s",
            PeerOpen {
                hold: 2,
                ..PeerOpen::new()
            },
            config(),
            (2, 6),
        ),
        (
            "zero BGP identifier",
            PeerOpen {
                id: Ipv4Addr::UNSPECIFIED,
                ..PeerOpen::new()
            },
            config(),
            (2, 3),
        ),
        (
            "iBGP peer with our BGP identifier",
            PeerOpen {
                asn: LOCAL_ASN,
                id: ROUTER_ID,
                ..PeerOpen::new()
            },
            SessionConfig {
                peer_as: LOCAL_ASN.into(),
                ..config()
            },
            (2, 3),
        ),
        (
            "4-octet local ASN and a peer without the capability",
            PeerOpen {
                four_octet: false,
                ..PeerOpen::new()
            },
            SessionConfig {
                local_asn: 4_200_000_000,
                ..config()
            },
            (2, 7),
        ),
        (
            "unsupported version",
            PeerOpen {
                version: 3,
                ..PeerOpen::new()
            },
            config(),
            (2, 1),
        ),
    ];
    for (rule, peer, config, expected) in cases {
        let (s, out) = open_refusal(config, &peer);
        assert_eq!(notifications(&out), vec![expected], "{rule}");
        assert!(
            out.iter().any(|a| matches!(a, Action::Close(_))),
            "{rule}: closes"
        );
        assert_eq!(s.state(), State::Idle, "{rule}: Idle after an OPEN error");
        let error = s.counters().last_error.clone().unwrap();
        assert!(
            error.to_string().starts_with("sent OPEN Message Error"),
            "{rule}: {error}"
        );
    }
}

#[test]
fn unsupported_version_names_version_4_in_the_data() {
    let (_, out) = open_refusal(
        config(),
        &PeerOpen {
            version: 5,
            ..PeerOpen::new()
        },
    );
    let [Message::Notification(n)] = one(messages(&out)) else {
        panic!("not one NOTIFICATION");
    };
    assert_eq!(n.data, vec![0, 4]);
}

#[test]
fn an_ebgp_peer_may_share_our_bgp_identifier() {
    let (s, out) = open_refusal(
        config(),
        &PeerOpen {
            id: ROUTER_ID,
            ..PeerOpen::new()
        },
    );
    assert!(notifications(&out).is_empty());
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn unsupported_optional_parameter_is_2_4() {
    let now = t0();
    let mut s = session();
    let (id, _) = dial(&mut s, now);
    let mut open = PeerOpen::new().bytes();
    // Append an optional parameter of type 1, and fix the lengths.
    open.extend_from_slice(&[1, 0]);
    open[28] += 2;
    let len = u16::try_from(open.len()).unwrap().to_be_bytes();
    open[16..18].copy_from_slice(&len);
    let out = s.receive(now, id, &open);
    assert_eq!(notifications(&out), vec![(2, 4)]);
}

#[test]
fn unknown_capabilities_are_ignored() {
    let peer = PeerOpen {
        extra: vec![Capability::Unknown {
            code: 200,
            value: vec![1, 2, 3],
        }],
        ..PeerOpen::new()
    };
    let mut s = session();
    establish(&mut s, t0(), &peer);
}

#[test]
fn the_peers_graceful_restart_capability_is_kept() {
    let gr = Capability::GracefulRestart {
        flags: 0,
        restart_time: 120,
        families: vec![],
    };
    let peer = PeerOpen {
        extra: vec![gr.clone()],
        ..PeerOpen::new()
    };
    let mut s = session();
    establish(&mut s, t0(), &peer);
    assert_eq!(s.negotiated().unwrap().peer_graceful_restart, Some(gr));
}

#[test]
fn hold_time_is_the_smaller_of_both_and_keepalive_a_third_of_it() {
    for (ours, theirs, hold, keepalive) in [(90, 30, 30, 10), (9, 90, 9, 3), (90, 0, 0, 0)] {
        let mut s = Session::new(
            SessionConfig {
                hold_time: secs(ours),
                ..config()
            },
            1,
        );
        let peer = PeerOpen {
            hold: u16::try_from(theirs).unwrap(),
            ..PeerOpen::new()
        };
        establish(&mut s, t0(), &peer);
        let n = s.negotiated().unwrap();
        assert_eq!(
            (n.hold_time, n.keepalive),
            (secs(hold), secs(keepalive)),
            "ours {ours}, theirs {theirs}"
        );
    }
}

#[test]
fn a_configured_keepalive_is_kept_below_a_third_of_the_negotiated_hold_time() {
    let mut s = Session::new(
        SessionConfig {
            keepalive: Some(secs(5)),
            ..config()
        },
        1,
    );
    establish(&mut s, t0(), &PeerOpen::new());
    assert_eq!(s.negotiated().unwrap().keepalive, secs(5));
    let mut s = Session::new(
        SessionConfig {
            keepalive: Some(secs(20)),
            ..config()
        },
        1,
    );
    let peer = PeerOpen {
        hold: 30,
        ..PeerOpen::new()
    };
    establish(&mut s, t0(), &peer);
    assert_eq!(s.negotiated().unwrap().keepalive, secs(10));
}

#[test]
fn a_peer_without_multiprotocol_capabilities_gets_ipv4_only() {
    let now = t0();
    let mut s = session();
    let peer = PeerOpen {
        families: vec![],
        ..PeerOpen::new()
    };
    establish(&mut s, now, &peer);
    assert_eq!(
        s.negotiated().unwrap().families,
        [Family::Ipv4Unicast].into()
    );
}

/// A dynamicASN peer is accepted with whatever AS its kind allows; the AS it presented is what
/// the session reports, and whether it is iBGP comes from the configuration.
#[test]
fn a_dynamic_peer_as_is_learned_from_the_open() {
    for (peer_as, asn, ibgp) in [
        (PeerAs::External, 65001, false),
        (PeerAs::External, 4_200_000_000, false),
        (PeerAs::Internal, LOCAL_ASN, true),
    ] {
        let now = t0();
        let mut s = Session::new(
            SessionConfig {
                peer_as,
                ..config()
            },
            1,
        );
        s.set_routes(now, routes(&["192.0.2.1/32"]));
        let peer = PeerOpen {
            asn,
            ..PeerOpen::new()
        };
        let (id, out) = establish(&mut s, now, &peer);
        assert_eq!(s.state(), State::Established, "{peer_as} presenting {asn}");
        assert_eq!(s.negotiated().map(|n| n.peer_as), Some(asn));
        let mut rib = PeerRib::new(true);
        for m in sent_on(&out, id) {
            rib.apply(&m);
        }
        let attributes = rib.attributes();
        let route = attributes.values().next().unwrap();
        // LOCAL_PREF goes to iBGP peers only.
        assert_eq!(route.local_pref.is_some(), ibgp, "{peer_as}");
    }
}

fn graceful() -> SessionConfig {
    SessionConfig {
        graceful_restart: Some(secs(120)),
        ..config()
    }
}

fn peer_graceful() -> PeerOpen {
    PeerOpen {
        extra: vec![Capability::GracefulRestart {
            flags: 0,
            restart_time: 90,
            families: vec![],
        }],
        ..PeerOpen::new()
    }
}

/// Our OPEN's Graceful Restart capability, if it has one.
fn our_graceful_restart(out: &[Action]) -> Option<Capability> {
    messages(out).into_iter().find_map(|m| match m {
        Message::Open(open) => open
            .capabilities
            .into_iter()
            .find(|c| matches!(c, Capability::GracefulRestart { .. })),
        _ => None,
    })
}

#[test]
fn graceful_restart_is_offered_with_restart_state_on_the_first_open_and_forwarding_kept() {
    let now = t0();
    let mut s = Session::new(graceful(), 1);
    let (_, out) = dial(&mut s, now);
    let families: Vec<wire::GracefulRestartFamily> = Family::ALL
        .iter()
        .map(|f| {
            let (afi, safi) = f.afi_safi();
            wire::GracefulRestartFamily {
                afi,
                safi,
                flags: 0x80,
            }
        })
        .collect();
    assert_eq!(
        our_graceful_restart(&out),
        Some(Capability::GracefulRestart {
            flags: 0x8,
            restart_time: 120,
            families: families.clone(),
        }),
        "Restart State on a new session's OPEN; Forwarding State for both families"
    );
    // Once established, a reconnect is no restart.
    let mut s = Session::new(graceful(), 1);
    establish(&mut s, now, &peer_graceful());
    let out = s.stop(now, Stop::Reset);
    let id = out
        .iter()
        .find_map(|a| match a {
            Action::Connect(id) => Some(*id),
            _ => None,
        })
        .unwrap();
    let out = s.connected(now, id);
    assert_eq!(
        our_graceful_restart(&out),
        Some(Capability::GracefulRestart {
            flags: 0,
            restart_time: 120,
            families,
        })
    );
    // Not configured: not offered.
    let (_, out) = dial(&mut session(), now);
    assert_eq!(our_graceful_restart(&out), None);
}

#[test]
fn graceful_restart_is_negotiated_only_when_both_offer_it() {
    for (config, peer, want) in [
        (graceful(), peer_graceful(), true),
        (graceful(), PeerOpen::new(), false),
        (super::config(), peer_graceful(), false),
    ] {
        let mut s = Session::new(config.clone(), 1);
        establish(&mut s, t0(), &peer);
        assert_eq!(
            s.negotiated().unwrap().graceful_restart,
            want,
            "{:?} / {:?}",
            config.graceful_restart,
            peer.extra
        );
    }
}

#[test]
fn a_restart_closes_without_notification_only_where_graceful_restart_keeps_the_routes() {
    let now = t0();
    // Negotiated: a silent close, so the peer keeps our routes.
    let mut s = Session::new(graceful(), 1);
    let (id, _) = establish(&mut s, now, &peer_graceful());
    let out = s.stop(now, Stop::Restart);
    assert_eq!(notifications(&out), Vec::<(u8, u8)>::new());
    assert!(out.contains(&Action::Close(id)));
    assert_eq!(s.state(), State::Idle);
    // Not negotiated (the peer did not offer it): Cease, the routes go at once.
    let mut s = Session::new(graceful(), 1);
    establish(&mut s, now, &PeerOpen::new());
    assert_eq!(notifications(&s.stop(now, Stop::Restart)), vec![(6, 2)]);
    // A peer removed from the configuration always ceases, negotiated or not.
    let mut s = Session::new(graceful(), 1);
    establish(&mut s, now, &peer_graceful());
    assert_eq!(notifications(&s.stop(now, Stop::Shutdown)), vec![(6, 2)]);
    // A connection still opening is ceased: there is no promise yet.
    let mut s = Session::new(graceful(), 1);
    let (id, _) = dial(&mut s, now);
    s.receive(now, id, &peer_graceful().bytes());
    assert_eq!(notifications(&s.stop(now, Stop::Restart)), vec![(6, 2)]);
}
