//! A simulated peer for the tests: builds the OPENs a router would send, drives a session to
//! Established, and decodes our UPDATEs into the RIB the router would hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ipnet::IpNet;

use super::config::SessionConfig;
use super::session::{Action, ConnId, Session};
use super::wire::{self, Capability, Family, Message, Open, UpdateItem};
use crate::announce::bgp::RouteAttributes;

pub(crate) const LOCAL_ASN: u32 = 65000;
pub(crate) const PEER_ASN: u32 = 65001;
pub(crate) const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub(crate) const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub(crate) const NEXT_HOP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub(crate) const NEXT_HOP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

/// An eBGP session 65000 → 65001 with both next hops.
pub(crate) fn config() -> SessionConfig {
    SessionConfig {
        next_hop_v4: Some(NEXT_HOP_V4),
        next_hop_v6: Some(NEXT_HOP_V6),
        ..SessionConfig::new(LOCAL_ASN, PEER_ASN, ROUTER_ID)
    }
}

/// The OPEN a peer sends.
#[derive(Clone, Debug)]
pub(crate) struct PeerOpen {
    pub(crate) version: u8,
    pub(crate) asn: u32,
    pub(crate) id: Ipv4Addr,
    pub(crate) hold: u16,
    pub(crate) families: Vec<Family>,
    pub(crate) four_octet: bool,
    pub(crate) route_refresh: bool,
    pub(crate) extra: Vec<Capability>,
}

impl PeerOpen {
    pub(crate) fn new() -> PeerOpen {
        PeerOpen {
            version: 4,
            asn: PEER_ASN,
            id: PEER_ID,
            hold: 90,
            families: Family::ALL.to_vec(),
            four_octet: true,
            route_refresh: true,
            extra: Vec::new(),
        }
    }

    pub(crate) fn open(&self) -> Open {
        let mut capabilities: Vec<Capability> =
            self.families.iter().map(|&f| Capability::from(f)).collect();
        if self.route_refresh {
            capabilities.push(Capability::RouteRefresh);
        }
        if self.four_octet {
            capabilities.push(Capability::FourOctetAs(self.asn));
        }
        capabilities.extend(self.extra.iter().cloned());
        Open {
            version: self.version,
            my_as: u16::try_from(self.asn).unwrap_or(wire::AS_TRANS),
            hold_time: self.hold,
            bgp_id: self.id,
            capabilities,
            unsupported_params: Vec::new(),
        }
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        wire::encode_open(&self.open())
    }
}

/// The bytes sent on `id`, in order.
pub(crate) fn sent_on(actions: &[Action], id: ConnId) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, bytes) if *c == id => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}

/// Every message sent, decoded.
pub(crate) fn messages(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(_, bytes) => Some(wire::decode(bytes).expect("we send valid messages")),
            _ => None,
        })
        .collect()
}

/// The NOTIFICATIONs sent, as (code, subcode).
pub(crate) fn notifications(actions: &[Action]) -> Vec<(u8, u8)> {
    messages(actions)
        .into_iter()
        .filter_map(|m| match m {
            Message::Notification(n) => Some((n.code, n.subcode)),
            _ => None,
        })
        .collect()
}

/// Starts an active session and completes the dial: returns the connection and the OPEN sent.
pub(crate) fn dial(session: &mut Session, now: Instant) -> (ConnId, Vec<Action>) {
    let start = session.start(now);
    let id = start
        .iter()
        .find_map(|a| match a {
            Action::Connect(id) => Some(*id),
            _ => None,
        })
        .expect("an active session dials");
    (id, session.connected(now, id))
}

/// Drives a fresh session to Established with `peer`; returns the connection and every action.
pub(crate) fn establish(
    session: &mut Session,
    now: Instant,
    peer: &PeerOpen,
) -> (ConnId, Vec<Action>) {
    let (id, mut out) = dial(session, now);
    out.extend(session.receive(now, id, &peer.bytes()));
    out.extend(session.receive(now, id, &wire::encode_keepalive()));
    assert!(
        out.contains(&Action::Established(id)),
        "not established: {out:?}"
    );
    (id, out)
}

/// A route as the peer holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) attributes: RouteAttributes,
    pub(crate) next_hop: Option<IpAddr>,
    pub(crate) as_path: Vec<u32>,
    pub(crate) as4_path: Vec<u32>,
    pub(crate) origin: Option<u8>,
}

/// The peer's Adj-RIB-In from us.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerRib {
    pub(crate) four_octet: bool,
    pub(crate) routes: BTreeMap<IpNet, Received>,
    pub(crate) end_of_rib: BTreeSet<Family>,
    pub(crate) updates: usize,
}

fn asns(value: &[u8], width: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let mut rest = value;
    while let [_kind, count, tail @ ..] = rest {
        let len = usize::from(*count) * width;
        let (seg, tail) = tail.split_at(len.min(tail.len()));
        out.extend(
            seg.chunks(width)
                .map(|c| c.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))),
        );
        rest = tail;
    }
    out
}

impl PeerRib {
    pub(crate) fn new(four_octet: bool) -> PeerRib {
        PeerRib {
            four_octet,
            ..PeerRib::default()
        }
    }

    /// Applies one of our messages (UPDATEs; anything else is ignored).
    pub(crate) fn apply(&mut self, message: &[u8]) {
        assert!(
            message.len() <= wire::MAX_MESSAGE,
            "UPDATE of {} octets",
            message.len()
        );
        if message.get(18) != Some(&2) {
            return;
        }
        self.updates += 1;
        let body = message.get(wire::HEADER_LEN..).expect("a header");
        let mut route = Received::default();
        let mut withdrawn = Vec::new();
        let mut announced = Vec::new();
        let width = if self.four_octet { 4 } else { 2 };
        let eor = wire::walk_update(body, |item| match item {
            UpdateItem::Withdraw(p) => withdrawn.push(p),
            UpdateItem::Announce(p) => announced.push(p),
            UpdateItem::MpNextHop(nh) => {
                let octets: [u8; 16] = nh.get(..16).expect("16").try_into().expect("16");
                route.next_hop = Some(IpAddr::V6(Ipv6Addr::from(octets)));
            }
            UpdateItem::Attribute { code, value, .. } => match code {
                wire::ATTR_ORIGIN => route.origin = value.first().copied(),
                wire::ATTR_AS_PATH => route.as_path = asns(value, width),
                wire::ATTR_AS4_PATH => route.as4_path = asns(value, 4),
                wire::ATTR_NEXT_HOP => {
                    let octets: [u8; 4] = value.try_into().expect("4 octets");
                    route.next_hop = Some(IpAddr::V4(Ipv4Addr::from(octets)));
                }
                wire::ATTR_LOCAL_PREF => {
                    let octets: [u8; 4] = value.try_into().expect("4 octets");
                    route.attributes.local_pref = Some(u32::from_be_bytes(octets));
                }
                wire::ATTR_COMMUNITIES => {
                    route.attributes.communities = value
                        .chunks(4)
                        .map(|c| u32::from_be_bytes(c.try_into().expect("4")))
                        .collect();
                }
                wire::ATTR_LARGE_COMMUNITIES => {
                    route.attributes.large_communities = value
                        .chunks(12)
                        .map(|c| {
                            let n =
                                |i: usize| u32::from_be_bytes(c[i..i + 4].try_into().expect("4"));
                            (n(0), n(4), n(8))
                        })
                        .collect();
                }
                other => panic!("unexpected attribute {other}"),
            },
        })
        .expect("our UPDATEs are well formed");
        if let Some(family) = eor {
            self.end_of_rib.insert(family);
        }
        for p in withdrawn {
            self.routes.remove(&p);
        }
        for p in announced {
            self.routes.insert(p, route.clone());
        }
    }

    /// The prefixes with their attributes, as comparable with what we asked for.
    pub(crate) fn attributes(&self) -> BTreeMap<IpNet, RouteAttributes> {
        self.routes
            .iter()
            .map(|(p, r)| (*p, r.attributes.clone()))
            .collect()
    }
}
