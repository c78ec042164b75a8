//! UPDATE messages (RFC 4271 §4.3, RFC 4760): walked on receipt, built for sending.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    ATTR_MP_REACH, ATTR_MP_UNREACH, FLAG_EXTENDED, Family, MAX_MESSAGE, Notification, Reader,
    TYPE_UPDATE, code, frame,
};

/// What the session keeps of a received UPDATE: counts, and whether it is an End-of-RIB marker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub withdrawn: usize,
    pub announced: usize,
    pub end_of_rib: Option<Family>,
}

/// One thing found while walking an UPDATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateItem<'a> {
    Withdraw(IpNet),
    Announce(IpNet),
    /// A path attribute other than MP_REACH/MP_UNREACH: flags, type code, value.
    Attribute {
        flags: u8,
        code: u8,
        value: &'a [u8],
    },
    /// MP_REACH_NLRI's next hop (global address, then link-local if given).
    MpNextHop(&'a [u8]),
}

fn update_error(subcode: u8) -> Notification {
    Notification::new(code::UPDATE, subcode)
}

/// Reads prefixes of `family` (length in bits, then the significant octets) until `buf` ends.
fn walk_prefixes(
    buf: &[u8],
    family: Family,
    mut each: impl FnMut(IpNet),
) -> Result<(), Notification> {
    let invalid = || update_error(code::INVALID_NETWORK_FIELD);
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let bits = r.u8().ok_or_else(invalid)?;
        let octets = usize::from(bits).div_ceil(8);
        let significant = r.take(octets).ok_or_else(invalid)?;
        let prefix = match family {
            Family::Ipv4Unicast => {
                let mut addr = [0u8; 4];
                addr.get_mut(..octets)
                    .ok_or_else(invalid)?
                    .copy_from_slice(significant);
                IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(addr), bits)
                        .map_err(|_| invalid())?
                        .trunc(),
                )
            }
            Family::Ipv6Unicast => {
                let mut addr = [0u8; 16];
                addr.get_mut(..octets)
                    .ok_or_else(invalid)?
                    .copy_from_slice(significant);
                IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(addr), bits)
                        .map_err(|_| invalid())?
                        .trunc(),
                )
            }
        };
        each(prefix);
    }
    Ok(())
}

/// Walks the body of an UPDATE (after the header), checking its framing (RFC 4271 §6.3: lengths
/// that fit, prefixes that parse) and handing each item to `each`. Returns the family if the
/// UPDATE is an End-of-RIB marker (RFC 4724 §2). MP_REACH/MP_UNREACH of families we do not carry
/// are skipped whole.
pub fn walk_update<'a>(
    body: &'a [u8],
    mut each: impl FnMut(UpdateItem<'a>),
) -> Result<Option<Family>, Notification> {
    let malformed = || update_error(code::MALFORMED_ATTRIBUTE_LIST);
    let mut r = Reader::new(body);
    let withdrawn_len = r.u16().ok_or_else(malformed)?;
    let withdrawn = r.take(usize::from(withdrawn_len)).ok_or_else(malformed)?;
    walk_prefixes(withdrawn, Family::Ipv4Unicast, |p| {
        each(UpdateItem::Withdraw(p))
    })?;
    let attrs_len = r.u16().ok_or_else(malformed)?;
    let attrs = r.take(usize::from(attrs_len)).ok_or_else(malformed)?;
    let nlri = r.rest();
    if withdrawn.is_empty() && attrs.is_empty() && nlri.is_empty() {
        return Ok(Some(Family::Ipv4Unicast));
    }
    let mut end_of_rib = None;
    let mut a = Reader::new(attrs);
    let mut count = 0usize;
    while !a.is_empty() {
        count += 1;
        let flags = a.u8().ok_or_else(malformed)?;
        let code = a.u8().ok_or_else(malformed)?;
        let len = if flags & FLAG_EXTENDED != 0 {
            a.u16().ok_or_else(malformed)?
        } else {
            u16::from(a.u8().ok_or_else(malformed)?)
        };
        let value = a.take(usize::from(len)).ok_or_else(malformed)?;
        match code {
            ATTR_MP_REACH => {
                let mut v = Reader::new(value);
                let afi = v.u16().ok_or_else(malformed)?;
                let safi = v.u8().ok_or_else(malformed)?;
                let nh_len = v.u8().ok_or_else(malformed)?;
                let next_hop = v.take(usize::from(nh_len)).ok_or_else(malformed)?;
                let _reserved = v.u8().ok_or_else(malformed)?;
                if let Some(family) = Family::from_afi_safi(afi, safi) {
                    each(UpdateItem::MpNextHop(next_hop));
                    walk_prefixes(v.rest(), family, |p| each(UpdateItem::Announce(p)))?;
                }
            }
            ATTR_MP_UNREACH => {
                let mut v = Reader::new(value);
                let afi = v.u16().ok_or_else(malformed)?;
                let safi = v.u8().ok_or_else(malformed)?;
                let family = Family::from_afi_safi(afi, safi);
                let rest = v.rest();
                if let Some(family) = family {
                    if rest.is_empty() {
                        end_of_rib = Some(family);
                    }
                    walk_prefixes(rest, family, |p| each(UpdateItem::Withdraw(p)))?;
                }
            }
            code => each(UpdateItem::Attribute { flags, code, value }),
        }
    }
    walk_prefixes(nlri, Family::Ipv4Unicast, |p| each(UpdateItem::Announce(p)))?;
    // An End-of-RIB for a multiprotocol family is an UPDATE with only an empty MP_UNREACH.
    let only_mp_unreach = count == 1 && withdrawn.is_empty() && nlri.is_empty();
    Ok(end_of_rib.filter(|_| only_mp_unreach))
}

/// The wire size of a prefix in NLRI: length octet plus significant octets.
pub fn prefix_len(prefix: &IpNet) -> usize {
    1 + usize::from(prefix.prefix_len()).div_ceil(8)
}

pub(crate) fn push_prefix(out: &mut Vec<u8>, prefix: &IpNet) {
    let bits = prefix.prefix_len();
    let octets = usize::from(bits).div_ceil(8);
    out.push(bits);
    match prefix {
        IpNet::V4(p) => out.extend_from_slice(p.network().octets().get(..octets).unwrap_or(&[])),
        IpNet::V6(p) => out.extend_from_slice(p.network().octets().get(..octets).unwrap_or(&[])),
    }
}

/// Appends one path attribute, with the extended length only when the value needs it.
pub(crate) fn push_attribute(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if let Ok(len) = u8::try_from(value.len()) {
        out.extend_from_slice(&[flags & !FLAG_EXTENDED, code, len]);
    } else {
        out.extend_from_slice(&[flags | FLAG_EXTENDED, code]);
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    }
    out.extend_from_slice(value);
}

/// Encodes an UPDATE from its three parts: withdrawn IPv4 prefixes, encoded path attributes,
/// IPv4 NLRI. Callers keep the total within [`MAX_MESSAGE`].
pub(crate) fn encode_update(withdrawn: &[IpNet], attrs: &[u8], nlri: &[IpNet]) -> Vec<u8> {
    let mut w = Vec::new();
    for p in withdrawn {
        push_prefix(&mut w, p);
    }
    let mut body = Vec::with_capacity(MAX_MESSAGE);
    body.extend_from_slice(&u16::try_from(w.len()).unwrap_or(u16::MAX).to_be_bytes());
    body.extend_from_slice(&w);
    body.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(u16::MAX).to_be_bytes());
    body.extend_from_slice(attrs);
    for p in nlri {
        push_prefix(&mut body, p);
    }
    frame(TYPE_UPDATE, &body)
}
