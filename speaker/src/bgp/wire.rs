//! The BGP-4 wire format (RFC 4271 §4), limited to what a route-announcing speaker needs: encode
//! what we send, decode what a peer may send without keeping its routes. Every decoder works on a
//! borrowed slice with checked reads and returns the NOTIFICATION the error calls for, so hostile
//! bytes can neither panic nor make us allocate more than one bounded message.

use std::fmt;

use ipnet::IpNet;

mod open;
mod update;

pub use open::{Capability, GracefulRestartFamily, Open, encode_open};
pub use update::{UpdateItem, UpdateSummary, prefix_len, walk_update};
pub(crate) use update::{encode_update, push_attribute, push_prefix};

#[cfg(test)]
mod tests;

/// Largest message without the Extended Message capability (RFC 8654), which we never offer.
pub const MAX_MESSAGE: usize = 4096;
/// Marker, length and type.
pub const HEADER_LEN: usize = 19;
/// The 2-octet AS number that stands for a 4-octet one (RFC 6793).
pub const AS_TRANS: u16 = 23456;
/// The only BGP version there is.
pub const VERSION: u8 = 4;

const TYPE_OPEN: u8 = 1;
const TYPE_UPDATE: u8 = 2;
const TYPE_NOTIFICATION: u8 = 3;
const TYPE_KEEPALIVE: u8 = 4;
const TYPE_ROUTE_REFRESH: u8 = 5;

const PARAM_CAPABILITIES: u8 = 2;

const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;

/// Path attribute type codes.
pub(crate) const ATTR_ORIGIN: u8 = 1;
pub(crate) const ATTR_AS_PATH: u8 = 2;
pub(crate) const ATTR_NEXT_HOP: u8 = 3;
pub(crate) const ATTR_LOCAL_PREF: u8 = 5;
pub(crate) const ATTR_COMMUNITIES: u8 = 8;
pub(crate) const ATTR_MP_REACH: u8 = 14;
pub(crate) const ATTR_MP_UNREACH: u8 = 15;
pub(crate) const ATTR_AS4_PATH: u8 = 17;
pub(crate) const ATTR_LARGE_COMMUNITIES: u8 = 32;

pub(crate) const FLAG_OPTIONAL: u8 = 0x80;
pub(crate) const FLAG_TRANSITIVE: u8 = 0x40;
pub(crate) const FLAG_EXTENDED: u8 = 0x10;

const AFI_IPV4: u16 = 1;
const AFI_IPV6: u16 = 2;
const SAFI_UNICAST: u8 = 1;

/// An address family this speaker can carry routes of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    /// Both families, in wire order.
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    /// (AFI, SAFI) on the wire.
    pub fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4Unicast => (AFI_IPV4, SAFI_UNICAST),
            Family::Ipv6Unicast => (AFI_IPV6, SAFI_UNICAST),
        }
    }

    /// The family of an (AFI, SAFI) pair, if we carry it.
    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (AFI_IPV4, SAFI_UNICAST) => Some(Family::Ipv4Unicast),
            (AFI_IPV6, SAFI_UNICAST) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    /// The family a prefix belongs to.
    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}

/// A NOTIFICATION (RFC 4271 §4.5): what we send on an error, or what the peer told us.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    pub fn with_data(code: u8, subcode: u8, data: &[u8]) -> Notification {
        Notification {
            code,
            subcode,
            data: data.to_vec(),
        }
    }
}

/// Error codes and the subcodes we use (RFC 4271 §4.5, RFC 4486, RFC 6608, RFC 7313).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    pub const OPEN: u8 = 2;
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;

    pub const UPDATE: u8 = 3;
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const INVALID_NETWORK_FIELD: u8 = 10;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;

    pub const FSM: u8 = 5;
    pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    pub const CEASE: u8 = 6;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_COLLISION: u8 = 7;

    pub const ROUTE_REFRESH: u8 = 7;
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.code, self.subcode) {
            (1, 1) => "Message Header Error / Connection Not Synchronized",
            (1, 2) => "Message Header Error / Bad Message Length",
            (1, 3) => "Message Header Error / Bad Message Type",
            (1, _) => "Message Header Error",
            (2, 1) => "OPEN Message Error / Unsupported Version Number",
            (2, 2) => "OPEN Message Error / Bad Peer AS",
            (2, 3) => "OPEN Message Error / Bad BGP Identifier",
            (2, 4) => "OPEN Message Error / Unsupported Optional Parameter",
            (2, 6) => "OPEN Message Error / Unacceptable Hold Time",
            (2, 7) => "OPEN Message Error / Unsupported Capability",
            (2, _) => "OPEN Message Error",
            (3, _) => "UPDATE Message Error",
            (4, _) => "Hold Timer Expired",
            (5, _) => "Finite State Machine Error",
            (6, 2) => "Cease / Administrative Shutdown",
            (6, 4) => "Cease / Administrative Reset",
            (6, 7) => "Cease / Connection Collision Resolution",
            (6, _) => "Cease",
            (7, _) => "ROUTE-REFRESH Message Error",
            _ => "unknown error",
        };
        write!(f, "{name} ({}/{})", self.code, self.subcode)
    }
}

/// A message as the session sees it. UPDATEs are summarised, never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(UpdateSummary),
    Notification(Notification),
    Keepalive,
    RouteRefresh { afi: u16, safi: u8 },
}

/// A bounds-checked reader over a borrowed slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(*first)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes(b.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// How long the first complete message in `buf` is: `Ok(None)` if more bytes are needed, an
/// error (to send) if the header is invalid. Checks the marker, the length bounds of the type
/// (RFC 4271 §6.1) and the type.
pub fn frame_length(buf: &[u8]) -> Result<Option<usize>, Notification> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        // The marker can be judged before the rest arrives.
        if buf.iter().take(16).any(|b| *b != 0xff) {
            return Err(Notification::new(
                code::MESSAGE_HEADER,
                code::CONNECTION_NOT_SYNCHRONIZED,
            ));
        }
        return Ok(None);
    };
    let mut r = Reader::new(header);
    let marker = r.take(16).unwrap_or_default();
    if marker.iter().any(|b| *b != 0xff) {
        return Err(Notification::new(
            code::MESSAGE_HEADER,
            code::CONNECTION_NOT_SYNCHRONIZED,
        ));
    }
    let length = r.u16().unwrap_or_default();
    let kind = r.u8().unwrap_or_default();
    let min = match kind {
        TYPE_OPEN => 29,
        TYPE_UPDATE => 23,
        TYPE_NOTIFICATION => 21,
        TYPE_KEEPALIVE => 19,
        TYPE_ROUTE_REFRESH => 19,
        other => {
            return Err(Notification::with_data(
                code::MESSAGE_HEADER,
                code::BAD_MESSAGE_TYPE,
                &[other],
            ));
        }
    };
    let len = usize::from(length);
    if len < min || len > MAX_MESSAGE || (kind == TYPE_KEEPALIVE && len != HEADER_LEN) {
        return Err(Notification::with_data(
            code::MESSAGE_HEADER,
            code::BAD_MESSAGE_LENGTH,
            &length.to_be_bytes(),
        ));
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Decodes one whole message (as delimited by [`frame_length`]). UPDATEs are walked for their
/// framing and counted, never kept, so their AS_PATH encoding does not matter here.
pub fn decode(message: &[u8]) -> Result<Message, Notification> {
    let len = frame_length(message)?.ok_or_else(|| {
        Notification::with_data(
            code::MESSAGE_HEADER,
            code::BAD_MESSAGE_LENGTH,
            &u16::try_from(message.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        )
    })?;
    let body = message.get(HEADER_LEN..len).unwrap_or_default();
    let kind = message.get(18).copied().unwrap_or_default();
    match kind {
        TYPE_OPEN => open::decode_open(body).map(Message::Open),
        TYPE_UPDATE => {
            let mut summary = UpdateSummary::default();
            let end_of_rib = walk_update(body, |item| match item {
                UpdateItem::Withdraw(_) => summary.withdrawn += 1,
                UpdateItem::Announce(_) => summary.announced += 1,
                _ => {}
            })?;
            summary.end_of_rib = end_of_rib;
            Ok(Message::Update(summary))
        }
        TYPE_NOTIFICATION => {
            let mut r = Reader::new(body);
            let code = r.u8().unwrap_or_default();
            let subcode = r.u8().unwrap_or_default();
            Ok(Message::Notification(Notification::with_data(
                code,
                subcode,
                r.rest(),
            )))
        }
        TYPE_KEEPALIVE => Ok(Message::Keepalive),
        _ => {
            // ROUTE-REFRESH: AFI, reserved/subtype, SAFI (RFC 2918, RFC 7313 §5).
            if body.len() != 4 {
                return Err(Notification::with_data(
                    code::ROUTE_REFRESH,
                    code::INVALID_MESSAGE_LENGTH,
                    message.get(..len).unwrap_or_default(),
                ));
            }
            let mut r = Reader::new(body);
            let afi = r.u16().unwrap_or_default();
            let _subtype = r.u8();
            let safi = r.u8().unwrap_or_default();
            Ok(Message::RouteRefresh { afi, safi })
        }
    }
}

// ---- encoding ----

/// Wraps a body in the header. Callers bound their bodies to [`MAX_MESSAGE`]; the property
/// tests check that no message we send exceeds it.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&[0xff; 16]);
    let len = u16::try_from(HEADER_LEN + body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

pub fn encode_keepalive() -> Vec<u8> {
    frame(TYPE_KEEPALIVE, &[])
}

/// Encodes a NOTIFICATION; data beyond what fits one message is cut.
pub fn encode_notification(n: &Notification) -> Vec<u8> {
    let mut body = vec![n.code, n.subcode];
    let room = MAX_MESSAGE - HEADER_LEN - 2;
    body.extend_from_slice(n.data.get(..room).unwrap_or(&n.data));
    frame(TYPE_NOTIFICATION, &body)
}

pub fn encode_route_refresh(family: Family) -> Vec<u8> {
    let (afi, safi) = family.afi_safi();
    let [a, b] = afi.to_be_bytes();
    frame(TYPE_ROUTE_REFRESH, &[a, b, 0, safi])
}
