//! OPEN messages and their capabilities (RFC 4271 §4.2, RFC 5492).

use std::net::Ipv4Addr;

use super::{
    CAP_FOUR_OCTET_AS, CAP_GRACEFUL_RESTART, CAP_MULTIPROTOCOL, CAP_ROUTE_REFRESH, Family,
    Notification, PARAM_CAPABILITIES, Reader, TYPE_OPEN, VERSION, code, frame,
};

/// One graceful-restart family entry (RFC 4724 §3): AFI, SAFI, flags (bit 0x80: forwarding
/// state preserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi: u16,
    pub safi: u8,
    pub flags: u8,
}

/// A capability (RFC 5492) in an OPEN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760: the sender carries this (AFI, SAFI). Kept raw so that families we do not carry
    /// are simply not matched.
    Multiprotocol { afi: u16, safi: u8 },
    /// RFC 2918.
    RouteRefresh,
    /// RFC 6793: the sender's real AS number.
    FourOctetAs(u32),
    /// RFC 4724, decoded so the next step (graceful restart) only has to act on it: restart
    /// flags (high 4 bits), restart time in seconds (12 bits) and the families.
    GracefulRestart {
        flags: u8,
        restart_time: u16,
        families: Vec<GracefulRestartFamily>,
    },
    /// Anything else: ignored (RFC 5492 §3), kept only so tests can see it was skipped.
    Unknown { code: u8, value: Vec<u8> },
}

/// An OPEN message (RFC 4271 §4.2), decoded but not yet judged (the session does that).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for a 4-octet AS).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
    /// Types of optional parameters other than Capabilities (2): unsupported (2/4).
    pub unsupported_params: Vec<u8>,
}

impl From<Family> for Capability {
    /// The multiprotocol capability that offers `family`.
    fn from(family: Family) -> Self {
        let (afi, safi) = family.afi_safi();
        Capability::Multiprotocol { afi, safi }
    }
}

impl Open {
    /// The sender's AS: the 4-octet capability if present, else the 2-octet field.
    pub fn peer_as(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    pub fn has_four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    pub fn has_route_refresh(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }

    /// Families the sender carries. Without any Multiprotocol capability, IPv4 unicast is implied
    /// (RFC 4760 §8).
    pub fn families(&self) -> Vec<Family> {
        let mut raw = self.capabilities.iter().filter_map(|c| match c {
            Capability::Multiprotocol { afi, safi } => Some((*afi, *safi)),
            _ => None,
        });
        let Some(first) = raw.next() else {
            return vec![Family::Ipv4Unicast];
        };
        std::iter::once(first)
            .chain(raw)
            .filter_map(|(afi, safi)| Family::from_afi_safi(afi, safi))
            .collect()
    }
}

fn open_error() -> Notification {
    // Malformed optional parameters: no specific subcode fits (RFC 4271 §6.2 allows 0).
    Notification::new(code::OPEN, 0)
}

pub(super) fn decode_open(body: &[u8]) -> Result<Open, Notification> {
    let mut r = Reader::new(body);
    let version = r.u8().ok_or_else(open_error)?;
    if version != VERSION {
        // The data is the largest version we support, as a 2-octet number (RFC 4271 §6.2).
        return Err(Notification::with_data(
            code::OPEN,
            code::UNSUPPORTED_VERSION,
            &u16::from(VERSION).to_be_bytes(),
        ));
    }
    let my_as = r.u16().ok_or_else(open_error)?;
    let hold_time = r.u16().ok_or_else(open_error)?;
    let bgp_id = Ipv4Addr::from(r.u32().ok_or_else(open_error)?);
    let params_len = r.u8().ok_or_else(open_error)?;
    let params = r.take(usize::from(params_len)).ok_or_else(open_error)?;
    if !r.is_empty() {
        return Err(open_error());
    }
    let mut capabilities = Vec::new();
    let mut unsupported_params = Vec::new();
    let mut p = Reader::new(params);
    while !p.is_empty() {
        let kind = p.u8().ok_or_else(open_error)?;
        let len = p.u8().ok_or_else(open_error)?;
        let value = p.take(usize::from(len)).ok_or_else(open_error)?;
        if kind != PARAM_CAPABILITIES {
            unsupported_params.push(kind);
            continue;
        }
        let mut c = Reader::new(value);
        while !c.is_empty() {
            let code = c.u8().ok_or_else(open_error)?;
            let len = c.u8().ok_or_else(open_error)?;
            let value = c.take(usize::from(len)).ok_or_else(open_error)?;
            capabilities.push(decode_capability(code, value).ok_or_else(open_error)?);
        }
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id,
        capabilities,
        unsupported_params,
    })
}

fn decode_capability(code: u8, value: &[u8]) -> Option<Capability> {
    let mut r = Reader::new(value);
    let cap = match code {
        CAP_MULTIPROTOCOL if value.len() == 4 => {
            let afi = r.u16()?;
            let _reserved = r.u8()?;
            Capability::Multiprotocol { afi, safi: r.u8()? }
        }
        CAP_ROUTE_REFRESH if value.is_empty() => Capability::RouteRefresh,
        CAP_FOUR_OCTET_AS if value.len() == 4 => Capability::FourOctetAs(r.u32()?),
        CAP_GRACEFUL_RESTART if value.len() >= 2 && (value.len() - 2).is_multiple_of(4) => {
            let word = r.u16()?;
            let mut families = Vec::new();
            while !r.is_empty() {
                families.push(GracefulRestartFamily {
                    afi: r.u16()?,
                    safi: r.u8()?,
                    flags: r.u8()?,
                });
            }
            Capability::GracefulRestart {
                flags: u8::try_from(word >> 12).ok()?,
                restart_time: word & 0x0fff,
                families,
            }
        }
        // A known capability with a malformed value is ignored like an unknown one: nothing we
        // rely on can come of it, and refusing would make us stricter than RFC 5492 asks.
        code => Capability::Unknown {
            code,
            value: value.to_vec(),
        },
    };
    Some(cap)
}

fn push_capability(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    out.push(code);
    out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(value);
}

/// Encodes an OPEN. Capabilities that do not fit one optional parameter (255 octets) are cut;
/// ours are a few dozen octets.
pub fn encode_open(open: &Open) -> Vec<u8> {
    let mut caps = Vec::new();
    for cap in &open.capabilities {
        match cap {
            Capability::Multiprotocol { afi, safi } => {
                let [a, b] = afi.to_be_bytes();
                push_capability(&mut caps, CAP_MULTIPROTOCOL, &[a, b, 0, *safi]);
            }
            Capability::RouteRefresh => push_capability(&mut caps, CAP_ROUTE_REFRESH, &[]),
            Capability::FourOctetAs(asn) => {
                push_capability(&mut caps, CAP_FOUR_OCTET_AS, &asn.to_be_bytes())
            }
            Capability::GracefulRestart {
                flags,
                restart_time,
                families,
            } => {
                let word = (u16::from(*flags) << 12) | (restart_time & 0x0fff);
                let mut value = word.to_be_bytes().to_vec();
                for f in families {
                    value.extend_from_slice(&f.afi.to_be_bytes());
                    value.push(f.safi);
                    value.push(f.flags);
                }
                push_capability(&mut caps, CAP_GRACEFUL_RESTART, &value);
            }
            Capability::Unknown { code, value } => push_capability(&mut caps, *code, value),
        }
    }
    caps.truncate(255);
    let mut body = vec![open.version];
    body.extend_from_slice(&open.my_as.to_be_bytes());
    body.extend_from_slice(&open.hold_time.to_be_bytes());
    body.extend_from_slice(&open.bgp_id.octets());
    if caps.is_empty() {
        body.push(0);
    } else {
        body.push(u8::try_from(caps.len() + 2).unwrap_or(u8::MAX));
        body.push(PARAM_CAPABILITIES);
        body.push(u8::try_from(caps.len()).unwrap_or(u8::MAX));
        body.extend_from_slice(&caps);
    }
    frame(TYPE_OPEN, &body)
}
