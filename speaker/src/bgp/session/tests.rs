use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::*;
use crate::bgp::config::{DEFAULT_CONNECT_RETRY_MAX, PeerAs, SessionConfig};
use crate::bgp::sim::{
    LOCAL_ASN, PEER_ID, PeerOpen, PeerRib, ROUTER_ID, config, dial, establish, messages,
    notifications, sent_on,
};
use crate::bgp::wire::{self, Message};

mod collision;
mod open;
mod timers;

fn one(mut messages: Vec<Message>) -> [Message; 1] {
    assert_eq!(messages.len(), 1, "{messages:?}");
    [messages.remove(0)]
}

fn t0() -> Instant {
    Instant::now()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn session() -> Session {
    Session::new(config(), 7)
}

fn routes(list: &[&str]) -> BTreeMap<IpNet, RouteAttributes> {
    list.iter()
        .map(|p| (p.parse().unwrap(), RouteAttributes::default()))
        .collect()
}

#[test]
fn a_new_session_is_idle_until_started() {
    let mut s = session();
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None);
    let (id, out) = s.accept(t0());
    assert_eq!(out, vec![Action::Close(id)], "Idle refuses connections");
}

#[test]
fn start_dials_and_enters_connect() {
    let mut s = session();
    let out = s.start(t0());
    assert!(matches!(out.as_slice(), [Action::Connect(_)]));
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn passive_session_waits_in_active_and_never_dials() {
    let mut s = Session::new(
        SessionConfig {
            passive: true,
            ..config()
        },
        1,
    );
    let now = t0();
    assert!(s.start(now).is_empty());
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.next_deadline(), None);
    let (id, out) = s.accept(now);
    assert!(matches!(messages(&out).as_slice(), [Message::Open(_)]));
    assert_eq!(s.state(), State::OpenSent);
    s.receive(now, id, &PeerOpen::new().bytes());
    s.receive(now, id, &wire::encode_keepalive());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn open_then_keepalive_establishes_and_sends_the_table_then_end_of_rib() {
    let now = t0();
    let mut s = session();
    s.set_routes(now, routes(&["192.0.2.1/32", "2001:db8::1/128"]));
    let (id, out) = establish(&mut s, now, &PeerOpen::new());
    assert_eq!(s.state(), State::Established);
    let mut peer = PeerRib::new(true);
    let sent = sent_on(&out, id);
    for m in &sent {
        peer.apply(m);
    }
    assert_eq!(peer.routes.len(), 2);
    assert_eq!(peer.end_of_rib, Family::ALL.into_iter().collect());
    // The End-of-RIB markers come after the routes.
    let last_two: Vec<_> = sent[sent.len() - 2..]
        .iter()
        .map(|m| wire::decode(m).unwrap())
        .collect();
    assert!(
        last_two
            .iter()
            .all(|m| matches!(m, Message::Update(u) if u.end_of_rib.is_some()))
    );
    assert_eq!(s.prefixes_announced(), 2);
    assert_eq!(s.counters().established, 1);
}

#[test]
fn updates_are_never_sent_before_established() {
    let now = t0();
    let mut s = session();
    let (id, _) = dial(&mut s, now);
    assert!(s.set_routes(now, routes(&["192.0.2.1/32"])).is_empty());
    let out = s.receive(now, id, &PeerOpen::new().bytes());
    assert!(
        messages(&out)
            .iter()
            .all(|m| !matches!(m, Message::Update(_)))
    );
}

#[test]
fn unexpected_messages_are_fsm_errors_by_state() {
    let now = t0();
    // OpenSent: a KEEPALIVE before the OPEN.
    let mut s = session();
    let (id, _) = dial(&mut s, now);
    let out = s.receive(now, id, &wire::encode_keepalive());
    assert_eq!(notifications(&out), vec![(5, 1)]);
    // OpenConfirm: a second OPEN.
    let mut s = session();
    let (id, _) = dial(&mut s, now);
    s.receive(now, id, &PeerOpen::new().bytes());
    let out = s.receive(now, id, &PeerOpen::new().bytes());
    assert_eq!(notifications(&out), vec![(5, 2)]);
    // Established: an OPEN.
    let mut s = session();
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    let out = s.receive(now, id, &PeerOpen::new().bytes());
    assert_eq!(notifications(&out), vec![(5, 3)]);
    assert!(matches!(out.last(), Some(Action::Down(_))));
}

#[test]
fn a_message_longer_than_4096_octets_is_bad_message_length() {
    let now = t0();
    let mut s = session();
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    let mut bytes = vec![0xff; 16];
    bytes.extend_from_slice(&4097u16.to_be_bytes());
    bytes.push(2);
    let out = s.receive(now, id, &bytes);
    assert_eq!(notifications(&out), vec![(1, 2)]);
}

#[test]
fn messages_split_across_reads_are_reassembled() {
    let now = t0();
    let mut s = session();
    let (id, _) = dial(&mut s, now);
    let mut stream = PeerOpen::new().bytes();
    stream.extend(wire::encode_keepalive());
    stream.extend(wire::encode_keepalive());
    for byte in &stream {
        s.receive(now, id, std::slice::from_ref(byte));
    }
    assert_eq!(s.state(), State::Established);
}

#[test]
fn received_updates_are_counted_and_dropped() {
    let now = t0();
    let mut s = session();
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    let mut peer_routes = AdjRibOut::default();
    let desired = routes(&["198.51.100.0/24", "198.51.101.0/24", "2001:db8:1::/48"]);
    let ctx = UpdateContext {
        local_asn: 65001,
        ibgp: false,
        four_octet: true,
        next_hop_v4: Some(PEER_ID),
        next_hop_v6: Some("2001:db8::1".parse().unwrap()),
    };
    let sync = peer_routes.sync(&desired, &Family::ALL.into_iter().collect(), &ctx);
    let mut stream = Vec::new();
    for m in &sync.messages {
        stream.extend_from_slice(m);
    }
    assert!(s.receive(now, id, &stream).is_empty());
    assert_eq!(s.counters().updates_received, sync.messages.len() as u64);
    assert_eq!(s.counters().prefixes_received, 3);
}

#[test]
fn a_notification_from_the_peer_is_counted_and_ends_the_session() {
    let now = t0();
    let mut s = session();
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    let n = Notification::new(6, 2);
    let out = s.receive(now, id, &wire::encode_notification(&n));
    assert_eq!(
        out,
        vec![
            Action::Close(id),
            Action::Down(SessionError::NotificationReceived(n))
        ]
    );
    assert_eq!(s.counters().notifications_received.get(&(6, 2)), Some(&1));
    assert_eq!(
        s.counters().last_error.as_ref().unwrap().to_string(),
        "peer sent Cease / Administrative Shutdown (6/2)"
    );
}

#[test]
fn admin_shutdown_sends_6_2_and_stays_idle() {
    let now = t0();
    let mut s = session();
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    let out = s.stop(now, Stop::Shutdown);
    assert_eq!(notifications(&out), vec![(6, 2)]);
    assert!(out.contains(&Action::Close(id)));
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn admin_reset_sends_6_4_and_dials_again() {
    let now = t0();
    let mut s = session();
    establish(&mut s, now, &PeerOpen::new());
    let out = s.stop(now, Stop::Reset);
    assert_eq!(notifications(&out), vec![(6, 4)]);
    assert!(matches!(out.last(), Some(Action::Connect(_))));
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn bfd_down_tears_the_session_down_at_once() {
    let now = t0();
    let mut s = session();
    establish(&mut s, now, &PeerOpen::new());
    let out = s.bfd_down(now);
    assert_eq!(notifications(&out), vec![(6, 10)]);
    assert_eq!(out.last(), Some(&Action::Down(SessionError::BfdDown)));
}

#[test]
fn route_refresh_resends_the_whole_family() {
    let now = t0();
    let mut s = session();
    s.set_routes(
        now,
        routes(&["192.0.2.1/32", "192.0.2.2/32", "2001:db8::1/128"]),
    );
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    let out = s.receive(now, id, &wire::encode_route_refresh(Family::Ipv4Unicast));
    let mut peer = PeerRib::new(true);
    for m in sent_on(&out, id) {
        peer.apply(&m);
    }
    assert_eq!(peer.routes.len(), 2, "both IPv4 routes, no IPv6");
}

#[test]
fn route_refresh_for_a_family_not_negotiated_is_ignored() {
    let now = t0();
    let mut s = session();
    s.set_routes(now, routes(&["192.0.2.1/32"]));
    let peer = PeerOpen {
        families: vec![Family::Ipv4Unicast],
        ..PeerOpen::new()
    };
    let (id, _) = establish(&mut s, now, &peer);
    let out = s.receive(now, id, &wire::encode_route_refresh(Family::Ipv6Unicast));
    assert!(out.is_empty());
}

#[test]
fn ipv6_routes_go_over_an_ipv4_session_when_the_peer_negotiated_ipv6() {
    let now = t0();
    let mut s = session();
    s.set_routes(now, routes(&["2001:db8::1/128"]));
    let (id, out) = establish(&mut s, now, &PeerOpen::new());
    let mut peer = PeerRib::new(true);
    for m in sent_on(&out, id) {
        peer.apply(&m);
    }
    assert!(
        peer.routes
            .contains_key(&"2001:db8::1/128".parse().unwrap())
    );
}

#[test]
fn a_family_the_peer_did_not_negotiate_is_not_sent_but_reported() {
    let now = t0();
    let mut s = session();
    s.set_routes(now, routes(&["192.0.2.1/32", "2001:db8::1/128"]));
    let peer = PeerOpen {
        families: vec![Family::Ipv4Unicast],
        ..PeerOpen::new()
    };
    let (id, out) = establish(&mut s, now, &peer);
    let mut rib = PeerRib::new(true);
    for m in sent_on(&out, id) {
        rib.apply(&m);
    }
    assert_eq!(rib.routes.len(), 1);
    assert_eq!(rib.end_of_rib, [Family::Ipv4Unicast].into());
    assert_eq!(s.unsent_families(), [Family::Ipv6Unicast].into());
    assert_eq!(s.counters().prefixes_skipped, 1);
}

#[test]
fn after_a_reset_the_next_session_resends_everything() {
    let now = t0();
    let mut s = session();
    s.set_routes(now, routes(&["192.0.2.1/32"]));
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    s.closed(now, id);
    assert_eq!(s.prefixes_announced(), 0);
    let at = s.next_deadline().unwrap();
    let out = s.on_timer(at);
    let Some(Action::Connect(id)) = out.last().cloned() else {
        panic!("no redial: {out:?}");
    };
    s.connected(at, id);
    s.receive(at, id, &PeerOpen::new().bytes());
    let out = s.receive(at, id, &wire::encode_keepalive());
    let mut peer = PeerRib::new(true);
    for m in sent_on(&out, id) {
        peer.apply(&m);
    }
    assert_eq!(peer.routes.len(), 1);
}
