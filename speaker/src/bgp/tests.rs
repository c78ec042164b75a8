//! Properties of the whole: the session never panics nor sends routes outside Established, and a
//! simulated peer always ends up with exactly the routes we last asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use proptest::prelude::*;

use super::sim::{LOCAL_ASN, PeerOpen, PeerRib, config};
use super::wire::{self, Capability, Family, Notification};
use super::{Action, ConnId, Session, SessionConfig, State, Stop};
use crate::announce::bgp::RouteAttributes;
use crate::bgp::rib::DEFAULT_LOCAL_PREF;

/// A small universe of prefixes, so sets overlap and change.
fn prefix(i: u8) -> IpNet {
    if i.is_multiple_of(2) {
        format!("192.0.{}.{}/32", i / 64, i % 64).parse().unwrap()
    } else {
        format!("2001:db8::{i:x}/128").parse().unwrap()
    }
}

fn attributes(a: u8) -> RouteAttributes {
    RouteAttributes {
        communities: (0..a % 3).map(|c| 0xfde8_0000 + u32::from(c)).collect(),
        large_communities: if a.is_multiple_of(4) {
            [(65000, u32::from(a), 1)].into()
        } else {
            BTreeSet::new()
        },
        local_pref: a.is_multiple_of(5).then_some(200),
    }
}

fn routes_strategy() -> impl Strategy<Value = BTreeMap<IpNet, RouteAttributes>> {
    proptest::collection::btree_map(
        any::<u8>().prop_map(prefix),
        any::<u8>().prop_map(attributes),
        0..40,
    )
}

#[derive(Clone, Debug)]
enum Peer {
    Open(u8),
    Keepalive,
    Update,
    Notification,
    RouteRefresh(bool),
    Garbage(Vec<u8>),
}

#[derive(Clone, Debug)]
enum Event {
    Start,
    Stop(bool),
    Connected(usize),
    ConnectFailed(usize),
    Accept,
    Closed(usize),
    Receive(usize, Peer),
    /// Connected, the peer's OPEN and KEEPALIVE at once: reaches Established often.
    Handshake(usize),
    Timer(u16),
    SetRoutes(BTreeMap<IpNet, RouteAttributes>),
    BfdDown,
}

fn peer_strategy() -> impl Strategy<Value = Peer> {
    prop_oneof![
        3 => any::<u8>().prop_map(Peer::Open),
        3 => Just(Peer::Keepalive),
        1 => Just(Peer::Update),
        1 => Just(Peer::Notification),
        1 => any::<bool>().prop_map(Peer::RouteRefresh),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Peer::Garbage),
    ]
}

fn event_strategy() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => Just(Event::Start),
        1 => any::<bool>().prop_map(Event::Stop),
        2 => any::<usize>().prop_map(Event::Connected),
        1 => any::<usize>().prop_map(Event::ConnectFailed),
        1 => Just(Event::Accept),
        1 => any::<usize>().prop_map(Event::Closed),
        6 => (any::<usize>(), peer_strategy()).prop_map(|(c, p)| Event::Receive(c, p)),
        2 => any::<usize>().prop_map(Event::Handshake),
        2 => (0u16..300).prop_map(Event::Timer),
        1 => routes_strategy().prop_map(Event::SetRoutes),
        1 => Just(Event::BfdDown),
    ]
}

fn peer_open(variant: u8) -> Vec<u8> {
    let mut open = PeerOpen::new();
    match variant % 8 {
        0 => open.asn = 65099,
        1 => open.hold = 0,
        2 => open.families = vec![Family::Ipv4Unicast],
        3 => open.id = Ipv4Addr::new(10, 0, 0, 200),
        4 => open.hold = 2,
        _ => {}
    }
    open.bytes()
}

fn peer_bytes(p: &Peer) -> Vec<u8> {
    match p {
        Peer::Open(v) => peer_open(*v),
        Peer::Keepalive => wire::encode_keepalive(),
        Peer::Update => super::rib::end_of_rib(Family::Ipv4Unicast),
        Peer::Notification => wire::encode_notification(&Notification::new(6, 4)),
        Peer::RouteRefresh(v6) => wire::encode_route_refresh(if *v6 {
            Family::Ipv6Unicast
        } else {
            Family::Ipv4Unicast
        }),
        Peer::Garbage(bytes) => bytes.clone(),
    }
}

/// Checks that UPDATEs only go out on the Established connection; tracks which one that is.
fn check_actions(actions: &[Action], up: &mut Option<ConnId>, conns: &mut Vec<ConnId>) {
    for a in actions {
        match a {
            Action::Connect(id) => conns.push(*id),
            Action::Established(id) => *up = Some(*id),
            Action::Close(id) => {
                if *up == Some(*id) {
                    *up = None;
                }
                conns.retain(|c| c != id);
            }
            Action::Send(id, bytes) => {
                assert!(bytes.len() <= wire::MAX_MESSAGE);
                let message = wire::decode(bytes).expect("we send valid messages");
                if matches!(message, wire::Message::Update(_)) {
                    assert_eq!(*up, Some(*id), "UPDATE outside Established");
                }
            }
            Action::Down(_) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn random_events_never_panic_nor_send_updates_outside_established(
        events in proptest::collection::vec(event_strategy(), 0..60),
        passive in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let config = SessionConfig { passive, ..config() };
        let mut s = Session::new(config, seed);
        let mut now = Instant::now();
        let mut up = None;
        let mut conns: Vec<ConnId> = Vec::new();
        let pick = |conns: &Vec<ConnId>, i: usize| conns.get(i % conns.len().max(1)).copied();
        for event in events {
            let out = match event {
                Event::Start => s.start(now),
                Event::Stop(reset) => s.stop(now, if reset { Stop::Reset } else { Stop::Shutdown }),
                Event::Connected(i) => match pick(&conns, i) {
                    Some(id) => s.connected(now, id),
                    None => vec![],
                },
                Event::ConnectFailed(i) => match pick(&conns, i) {
                    Some(id) => s.connect_failed(now, id),
                    None => vec![],
                },
                Event::Accept => {
                    let (id, out) = s.accept(now);
                    conns.push(id);
                    out
                }
                Event::Closed(i) => match pick(&conns, i) {
                    Some(id) => s.closed(now, id),
                    None => vec![],
                },
                Event::Receive(i, p) => match pick(&conns, i) {
                    Some(id) => s.receive(now, id, &peer_bytes(&p)),
                    None => vec![],
                },
                Event::Handshake(i) => match pick(&conns, i) {
                    Some(id) => {
                        let mut out = s.connected(now, id);
                        out.extend(s.receive(now, id, &PeerOpen::new().bytes()));
                        out.extend(s.receive(now, id, &wire::encode_keepalive()));
                        out
                    }
                    None => vec![],
                },
                Event::Timer(secs) => {
                    now += Duration::from_secs(u64::from(secs));
                    s.on_timer(now)
                }
                Event::SetRoutes(routes) => s.set_routes(now, routes),
                Event::BfdDown => s.bfd_down(now),
            };
            check_actions(&out, &mut up, &mut conns);
            prop_assert_eq!(up.is_some(), s.state() == State::Established);
            if let Some(deadline) = s.next_deadline() {
                prop_assert!(deadline >= now, "a deadline in the past");
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    SetRoutes(BTreeMap<IpNet, RouteAttributes>),
    Flap,
    RouteRefresh(bool),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => routes_strategy().prop_map(Step::SetRoutes),
        1 => Just(Step::Flap),
        1 => any::<bool>().prop_map(Step::RouteRefresh),
    ]
}

/// The simulated router: one connection, fed every byte we send.
struct Router {
    conn: ConnId,
    rib: PeerRib,
}

impl Router {
    fn feed(&mut self, actions: &[Action]) {
        for a in actions {
            if let Action::Send(id, bytes) = a
                && *id == self.conn
            {
                self.rib.apply(bytes);
            }
        }
    }
}

/// Completes the dial in `out` (from `start` or the redial timer) up to Established.
fn connect(
    s: &mut Session,
    now: Instant,
    out: &[Action],
    peer: &PeerOpen,
    four_octet: bool,
) -> Router {
    let id = out
        .iter()
        .find_map(|a| match a {
            Action::Connect(id) => Some(*id),
            _ => None,
        })
        .expect("the session redials");
    let mut router = Router {
        conn: id,
        rib: PeerRib::new(four_octet),
    };
    router.feed(&s.connected(now, id));
    router.feed(&s.receive(now, id, &peer.bytes()));
    router.feed(&s.receive(now, id, &wire::encode_keepalive()));
    assert_eq!(s.state(), State::Established);
    router
}

/// What the router must hold: the desired routes of the negotiated families, with LOCAL_PREF
/// only (and always) on iBGP.
fn expected(
    desired: &BTreeMap<IpNet, RouteAttributes>,
    families: &BTreeSet<Family>,
    ibgp: bool,
) -> BTreeMap<IpNet, RouteAttributes> {
    desired
        .iter()
        .filter(|(p, _)| families.contains(&Family::of(p)))
        .map(|(p, a)| {
            let mut a = a.clone();
            a.local_pref = ibgp.then(|| a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
            (*p, a)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn the_peer_ends_with_exactly_the_last_desired_routes_of_its_families(
        steps in proptest::collection::vec(step_strategy(), 1..25),
        ibgp in any::<bool>(),
        four_octet in any::<bool>(),
        peer_families in prop_oneof![
            Just(vec![Family::Ipv4Unicast]),
            Just(vec![Family::Ipv6Unicast]),
            Just(Family::ALL.to_vec()),
        ],
    ) {
        let peer_asn = if ibgp { LOCAL_ASN } else { 65001 };
        let config = SessionConfig { peer_as: peer_asn.into(), ..config() };
        let peer = PeerOpen {
            asn: peer_asn,
            four_octet,
            families: peer_families.clone(),
            extra: vec![Capability::Unknown { code: 70, value: vec![] }],
            ..PeerOpen::new()
        };
        let families: BTreeSet<Family> = peer_families.into_iter().collect();
        let mut s = Session::new(config, 9);
        let mut now = Instant::now();
        let out = s.start(now);
        let mut router = connect(&mut s, now, &out, &peer, four_octet);
        let mut desired = BTreeMap::new();
        for step in steps {
            match step {
                Step::SetRoutes(routes) => {
                    desired = routes.clone();
                    let out = s.set_routes(now, routes);
                    router.feed(&out);
                }
                Step::Flap => {
                    s.closed(now, router.conn);
                    now = s.next_deadline().expect("a redial is scheduled");
                    let out = s.on_timer(now);
                    router = connect(&mut s, now, &out, &peer, four_octet);
                }
                Step::RouteRefresh(v6) => {
                    let family = if v6 { Family::Ipv6Unicast } else { Family::Ipv4Unicast };
                    let out = s.receive(now, router.conn, &wire::encode_route_refresh(family));
                    router.feed(&out);
                }
            }
            prop_assert_eq!(router.rib.attributes(), expected(&desired, &families, ibgp));
        }
        prop_assert_eq!(s.prefixes_announced(), router.rib.routes.len());
        prop_assert!(router.rib.end_of_rib.is_superset(&families));
    }
}
