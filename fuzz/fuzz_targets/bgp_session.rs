//! The BGP session's state machine driven by an arbitrary script of events: a peer's bytes
//! (garbage, or messages built to get past OPEN), dial results, timers, route changes, stops.
//! Never panics; never sends an UPDATE outside Established; never asks to be woken in the past.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_speaker::announce::bgp::RouteAttributes;
use ferrolb_speaker::bgp::wire::{self, Capability, Open};
use ferrolb_speaker::bgp::{Action, ConnId, Family, Session, SessionConfig, Stop};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

const UPDATE: u8 = 2;

fn peer_open(hold: u16) -> Vec<u8> {
    wire::encode_open(&Open {
        version: 4,
        my_as: 64512,
        hold_time: hold,
        bgp_id: Ipv4Addr::new(198, 51, 100, 1),
        capabilities: vec![
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::Multiprotocol { afi: 2, safi: 1 },
            Capability::FourOctetAs(64512),
            Capability::RouteRefresh,
        ],
        unsupported_params: Vec::new(),
    })
}

fn routes(seed: u8) -> BTreeMap<IpNet, RouteAttributes> {
    (0..seed % 40)
        .map(|i| {
            let net = if i % 3 == 0 {
                IpNet::new(
                    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)).into(),
                    128,
                )
            } else {
                IpNet::new(Ipv4Addr::new(203, 0, 113, i).into(), 32)
            };
            let attributes = RouteAttributes {
                communities: BTreeSet::from([u32::from(seed)]),
                local_pref: (seed % 2 == 0).then_some(100),
                ..RouteAttributes::default()
            };
            (net.unwrap_or_default(), attributes)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut config = SessionConfig::new(64513, 64512, Ipv4Addr::new(198, 51, 100, 11));
    config.families = BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]);
    config.next_hop_v4 = Some(Ipv4Addr::new(198, 51, 100, 11));
    config.next_hop_v6 = Some(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11));
    let seed = data.first().copied().map_or(0, u64::from);
    let mut session = Session::new(config, seed);
    let mut now = Instant::now();
    let mut conns: Vec<ConnId> = Vec::new();
    // The connection that is Established, as the actions have said so far.
    let mut up: Option<ConnId> = None;
    let mut check =
        |session: &Session, actions: Vec<Action>, conns: &mut Vec<ConnId>, now: Instant| {
            for action in actions {
                match action {
                    Action::Connect(id) => conns.push(id),
                    Action::Established(id) => up = Some(id),
                    Action::Down(_) => up = None,
                    Action::Send(id, bytes) => {
                        if bytes.get(18) == Some(&UPDATE) {
                            assert_eq!(up, Some(id), "an UPDATE on a connection not Established");
                        }
                        assert!(bytes.len() <= 4096, "a message of {} octets", bytes.len());
                    }
                    Action::Close(id) => {
                        conns.retain(|c| *c != id);
                        if up == Some(id) {
                            up = None;
                        }
                    }
                }
            }
            if let Some(deadline) = session.next_deadline() {
                assert!(deadline >= now, "a deadline in the past");
            }
        };
    let actions = session.start(now);
    check(&session, actions, &mut conns, now);
    let mut rest = data.get(1..).unwrap_or_default();
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        let conn = conns.get(usize::from(*arg) % conns.len().max(1)).copied();
        let actions = match op % 11 {
            0 => conn.map(|c| session.connected(now, c)).unwrap_or_default(),
            1 => conn
                .map(|c| session.connect_failed(now, c))
                .unwrap_or_default(),
            2 => {
                let (id, actions) = session.accept(now);
                conns.push(id);
                actions
            }
            3 => conn
                .map(|c| session.receive(now, c, &peer_open(u16::from(*arg))))
                .unwrap_or_default(),
            4 => conn
                .map(|c| session.receive(now, c, &wire::encode_keepalive()))
                .unwrap_or_default(),
            5 => {
                // Raw bytes from the peer: the next `arg` octets of the script.
                let n = usize::from(*arg).min(rest.len());
                let (bytes, tail) = rest.split_at(n);
                rest = tail;
                conn.map(|c| session.receive(now, c, bytes))
                    .unwrap_or_default()
            }
            6 => conn.map(|c| session.closed(now, c)).unwrap_or_default(),
            7 => {
                now += Duration::from_millis(u64::from(*arg) * 500);
                session.on_timer(now)
            }
            8 => session.set_routes(now, routes(*arg)),
            9 => session.stop(
                now,
                if arg % 2 == 0 {
                    Stop::Reset
                } else {
                    Stop::Shutdown
                },
            ),
            _ => session.bfd_down(now),
        };
        check(&session, actions, &mut conns, now);
    }
});
