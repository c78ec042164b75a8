//! Pure codec for the frames the Layer 2 responder reads and writes: Ethernet + ARP, and
//! Ethernet + IPv6 + ICMPv6 Neighbor Solicitation / Advertisement (RFC 826, RFC 4861).
//!
//! Parsing never panics: every length is checked before it is read, and anything that is not one
//! of the frames above (VLAN tags, IPv6 extension headers, other ICMPv6 types, bad checksums) is
//! rejected with a [`ParseError`]. Trailing bytes after the packet (Ethernet padding) are ignored.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4 (the ARP protocol type for IPv4 addresses).
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IPv6 next-header value of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 type of a Neighbor Solicitation.
pub const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement.
pub const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The hop limit every NDP message must carry (RFC 4861 §7.1: proves it was not routed).
pub const NDP_HOP_LIMIT: u8 = 255;

const ETH_HEADER_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER_LEN: usize = 40;
/// ICMPv6 header (4) + reserved/flags (4) + target (16).
const NDP_FIXED_LEN: usize = 24;
/// Frames shorter than this (without FCS) are padded, as Ethernet requires.
const ETH_MIN_FRAME: usize = 60;
const OPTION_SOURCE_LINK_LAYER: u8 = 1;
const OPTION_TARGET_LINK_LAYER: u8 = 2;
const NA_FLAG_ROUTER: u8 = 0x80;
const NA_FLAG_SOLICITED: u8 = 0x40;
const NA_FLAG_OVERRIDE: u8 = 0x20;

/// An Ethernet (EUI-48) hardware address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`, the "unknown" target hardware address of an ARP request.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The Ethernet multicast address an IPv6 multicast group maps to (RFC 2464 §7): `33:33` and
    /// the low 32 bits of the group.
    pub fn ipv6_multicast(group: Ipv6Addr) -> MacAddr {
        let o = group.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }

    /// Whether the group bit is set (multicast or broadcast).
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The text was not six colon-separated hex octets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address: {0:?}")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// The solicited-node multicast group of an address (RFC 4291 §2.7.1): `ff02::1:ffXX:XXXX`.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// Why a frame was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The frame ends before the header or field being read.
    #[error("truncated")]
    Truncated,
    /// Neither ARP nor IPv6 (VLAN-tagged frames land here too).
    #[error("unsupported EtherType {0:#06x}")]
    EtherType(u16),
    /// ARP for something other than Ethernet/IPv4, or an opcode other than request/reply.
    #[error("unsupported ARP packet")]
    Arp,
    /// Not an IPv6 header directly followed by ICMPv6 (extension headers are not supported).
    #[error("not IPv6 carrying ICMPv6")]
    NotIcmpv6,
    /// An ICMPv6 message other than a Neighbor Solicitation or Advertisement with code 0.
    #[error("not a neighbor solicitation or advertisement")]
    NotNdp,
    /// The ICMPv6 checksum does not match.
    #[error("bad ICMPv6 checksum")]
    Checksum,
    /// An NDP option with length zero, running past the message, or a link-layer address option
    /// that is not Ethernet-sized.
    #[error("malformed NDP option")]
    Option,
}

/// The Ethernet header (no VLAN tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ethernet {
    /// Destination address.
    pub dst: MacAddr,
    /// Source address.
    pub src: MacAddr,
}

/// ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// Who has `target_ip`? (1)
    Request,
    /// `sender_ip` is at `sender_mac` (2)
    Reply,
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address (0.0.0.0 in an RFC 5227 probe).
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (ignored in requests, usually zero).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// A Neighbor Solicitation (RFC 4861 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// The address whose link-layer address is wanted.
    pub target: Ipv6Addr,
    /// The Source Link-Layer Address option, if present.
    pub source_mac: Option<MacAddr>,
}

/// A Neighbor Advertisement (RFC 4861 §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a solicitation.
    pub solicited: bool,
    /// O: replace an existing cached link-layer address.
    pub override_flag: bool,
    /// The address being advertised.
    pub target: Ipv6Addr,
    /// The Target Link-Layer Address option, if present.
    pub target_mac: Option<MacAddr>,
}

/// The NDP message carried in an ICMPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ndp {
    /// Type 135.
    Solicitation(NeighborSolicitation),
    /// Type 136.
    Advertisement(NeighborAdvertisement),
}

/// An NDP message with its Ethernet and IPv6 headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdpFrame {
    /// Ethernet header.
    pub eth: Ethernet,
    /// IPv6 source address (`::` in a DAD probe).
    pub src: Ipv6Addr,
    /// IPv6 destination address.
    pub dst: Ipv6Addr,
    /// IPv6 hop limit (valid NDP carries 255).
    pub hop_limit: u8,
    /// The message.
    pub message: Ndp,
}

/// An ARP packet with its Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    /// Ethernet header.
    pub eth: Ethernet,
    /// The ARP packet.
    pub arp: Arp,
}

/// Every frame the responder understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Ethernet + ARP.
    Arp(ArpFrame),
    /// Ethernet + IPv6 + ICMPv6 NS/NA.
    Ndp(NdpFrame),
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ParseError> {
    match b.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(ParseError::Truncated),
    }
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], ParseError> {
    b.get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(ParseError::Truncated)
}

fn mac_at(b: &[u8], at: usize) -> Result<MacAddr, ParseError> {
    array_at(b, at).map(MacAddr)
}

/// Parses one Ethernet frame as received from an `AF_PACKET` socket.
pub fn parse(frame: &[u8]) -> Result<Frame, ParseError> {
    let eth = Ethernet {
        dst: mac_at(frame, 0)?,
        src: mac_at(frame, 6)?,
    };
    let ethertype = u16_at(frame, 12)?;
    let payload = &frame[ETH_HEADER_LEN..];
    match ethertype {
        ETHERTYPE_ARP => Ok(Frame::Arp(ArpFrame {
            eth,
            arp: parse_arp(payload)?,
        })),
        ETHERTYPE_IPV6 => parse_ipv6(eth, payload).map(Frame::Ndp),
        other => Err(ParseError::EtherType(other)),
    }
}

fn parse_arp(b: &[u8]) -> Result<Arp, ParseError> {
    if b.len() < ARP_LEN {
        return Err(ParseError::Truncated);
    }
    let htype = u16_at(b, 0)?;
    let ptype = u16_at(b, 2)?;
    if htype != 1 || ptype != ETHERTYPE_IPV4 || b[4] != 6 || b[5] != 4 {
        return Err(ParseError::Arp);
    }
    let op = match u16_at(b, 6)? {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        _ => return Err(ParseError::Arp),
    };
    Ok(Arp {
        op,
        sender_mac: mac_at(b, 8)?,
        sender_ip: Ipv4Addr::from(array_at::<4>(b, 14)?),
        target_mac: mac_at(b, 18)?,
        target_ip: Ipv4Addr::from(array_at::<4>(b, 24)?),
    })
}

fn parse_ipv6(eth: Ethernet, b: &[u8]) -> Result<NdpFrame, ParseError> {
    if b.len() < IPV6_HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    if b[0] >> 4 != 6 || b[6] != IPPROTO_ICMPV6 {
        return Err(ParseError::NotIcmpv6);
    }
    let payload_len = usize::from(u16_at(b, 4)?);
    let hop_limit = b[7];
    let src = Ipv6Addr::from(array_at::<16>(b, 8)?);
    let dst = Ipv6Addr::from(array_at::<16>(b, 24)?);
    let icmp = b
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)
        .ok_or(ParseError::Truncated)?;
    if icmp.len() < NDP_FIXED_LEN {
        return Err(ParseError::Truncated);
    }
    let kind = icmp[0];
    if icmp[1] != 0
        || (kind != ICMPV6_NEIGHBOR_SOLICITATION && kind != ICMPV6_NEIGHBOR_ADVERTISEMENT)
    {
        return Err(ParseError::NotNdp);
    }
    if icmpv6_checksum(src, dst, icmp) != 0 {
        return Err(ParseError::Checksum);
    }
    let target = Ipv6Addr::from(array_at::<16>(icmp, 8)?);
    let (source_mac, target_mac) = parse_options(&icmp[NDP_FIXED_LEN..])?;
    let message = if kind == ICMPV6_NEIGHBOR_SOLICITATION {
        Ndp::Solicitation(NeighborSolicitation { target, source_mac })
    } else {
        let flags = icmp[4];
        Ndp::Advertisement(NeighborAdvertisement {
            router: flags & NA_FLAG_ROUTER != 0,
            solicited: flags & NA_FLAG_SOLICITED != 0,
            override_flag: flags & NA_FLAG_OVERRIDE != 0,
            target,
            target_mac,
        })
    };
    Ok(NdpFrame {
        eth,
        src,
        dst,
        hop_limit,
        message,
    })
}

/// Returns the (source, target) link-layer address options; unknown options are skipped.
fn parse_options(mut b: &[u8]) -> Result<(Option<MacAddr>, Option<MacAddr>), ParseError> {
    let (mut source, mut target) = (None, None);
    while !b.is_empty() {
        let (kind, units) = match b {
            [kind, units, ..] => (*kind, usize::from(*units)),
            _ => return Err(ParseError::Option),
        };
        let len = units * 8;
        if len == 0 || len > b.len() {
            return Err(ParseError::Option);
        }
        if kind == OPTION_SOURCE_LINK_LAYER || kind == OPTION_TARGET_LINK_LAYER {
            if units != 1 {
                return Err(ParseError::Option);
            }
            let mac = mac_at(b, 2)?;
            if kind == OPTION_SOURCE_LINK_LAYER {
                source = Some(mac);
            } else {
                target = Some(mac);
            }
        }
        b = &b[len..];
    }
    Ok((source, target))
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `message` (RFC 4443 §2.3). Computed over a
/// message whose checksum field is zero it is the value to store; over a received message it is
/// zero when the stored checksum is right.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for pair in &mut chunks {
            sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(u16::from_be_bytes([*last, 0]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    // Upper-layer packet length (32 bits) and next header; messages here are far below 4 GiB.
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    add(&len.to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(message);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above folded `sum` into 16 bits.
    !(u16::try_from(sum).unwrap_or(u16::MAX))
}

/// Serializes a frame (ARP frames are padded to the Ethernet minimum).
pub fn build(frame: &Frame) -> Vec<u8> {
    match frame {
        Frame::Arp(f) => build_arp(f),
        Frame::Ndp(f) => build_ndp(f),
    }
}

fn push_eth(out: &mut Vec<u8>, eth: &Ethernet, ethertype: u16) {
    out.extend_from_slice(&eth.dst.0);
    out.extend_from_slice(&eth.src.0);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn build_arp(f: &ArpFrame) -> Vec<u8> {
    let mut out = Vec::with_capacity(ETH_MIN_FRAME);
    push_eth(&mut out, &f.eth, ETHERTYPE_ARP);
    let op: u16 = match f.arp.op {
        ArpOp::Request => 1,
        ArpOp::Reply => 2,
    };
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    out.extend_from_slice(&[6, 4]);
    out.extend_from_slice(&op.to_be_bytes());
    out.extend_from_slice(&f.arp.sender_mac.0);
    out.extend_from_slice(&f.arp.sender_ip.octets());
    out.extend_from_slice(&f.arp.target_mac.0);
    out.extend_from_slice(&f.arp.target_ip.octets());
    out.resize(ETH_MIN_FRAME, 0);
    out
}

fn build_ndp(f: &NdpFrame) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(NDP_FIXED_LEN + 8);
    let (kind, flags, target, option) = match f.message {
        Ndp::Solicitation(ns) => (
            ICMPV6_NEIGHBOR_SOLICITATION,
            0,
            ns.target,
            ns.source_mac.map(|m| (OPTION_SOURCE_LINK_LAYER, m)),
        ),
        Ndp::Advertisement(na) => {
            let mut flags = 0;
            if na.router {
                flags |= NA_FLAG_ROUTER;
            }
            if na.solicited {
                flags |= NA_FLAG_SOLICITED;
            }
            if na.override_flag {
                flags |= NA_FLAG_OVERRIDE;
            }
            (
                ICMPV6_NEIGHBOR_ADVERTISEMENT,
                flags,
                na.target,
                na.target_mac.map(|m| (OPTION_TARGET_LINK_LAYER, m)),
            )
        }
    };
    icmp.extend_from_slice(&[kind, 0, 0, 0, flags, 0, 0, 0]);
    icmp.extend_from_slice(&target.octets());
    if let Some((kind, mac)) = option {
        icmp.extend_from_slice(&[kind, 1]);
        icmp.extend_from_slice(&mac.0);
    }
    let checksum = icmpv6_checksum(f.src, f.dst, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

    let mut out = Vec::with_capacity(ETH_HEADER_LEN + IPV6_HEADER_LEN + icmp.len());
    push_eth(&mut out, &f.eth, ETHERTYPE_IPV6);
    // Version 6, traffic class 0, flow label 0.
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    let payload_len = u16::try_from(icmp.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&[IPPROTO_ICMPV6, f.hop_limit]);
    out.extend_from_slice(&f.src.octets());
    out.extend_from_slice(&f.dst.octets());
    out.extend_from_slice(&icmp);
    out
}

#[cfg(test)]
mod tests;
