//! Pool address entries: a CIDR (`203.0.113.0/28`) or an inclusive range (`198.51.100.10-198.51.100.20`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// An IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Bits in an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// A contiguous, inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressRange {
    family: IpFamily,
    start: u128,
    end: u128,
}

/// Why a pool address entry does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressRangeError {
    /// Neither a CIDR nor a range.
    #[error("not a CIDR (203.0.113.0/28) or a range (203.0.113.10-203.0.113.20)")]
    Syntax,
    /// A bare IP, which is most likely a forgotten prefix length.
    #[error("a single address must be written as a CIDR: {0}/{1}")]
    BareAddress(IpAddr, u8),
    /// A CIDR with bits set after the prefix, which is ambiguous.
    #[error("host bits are set after the prefix; the network is {0}")]
    HostBits(IpNet),
    /// A range whose ends are of different families.
    #[error("range ends are of different IP families")]
    MixedFamilies,
    /// A range whose start is after its end.
    #[error("range start is after its end")]
    Reversed,
}

impl AddressRange {
    /// Parses a pool address entry.
    pub fn parse(entry: &str) -> Result<Self, AddressRangeError> {
        let entry = entry.trim();
        if let Some((start, end)) = entry.split_once('-') {
            let start = parse_ip(start.trim())?;
            let end = parse_ip(end.trim())?;
            if IpFamily::of(start) != IpFamily::of(end) {
                return Err(AddressRangeError::MixedFamilies);
            }
            let range = Self::from_ips(start, end);
            if range.start > range.end {
                return Err(AddressRangeError::Reversed);
            }
            return Ok(range);
        }
        if entry.contains('/') {
            let net = IpNet::from_str(entry).map_err(|_| AddressRangeError::Syntax)?;
            if net.addr() != net.network() {
                return Err(AddressRangeError::HostBits(net.trunc()));
            }
            return Ok(Self::from_ips(net.network(), net.broadcast()));
        }
        let ip = parse_ip(entry)?;
        Err(AddressRangeError::BareAddress(ip, IpFamily::of(ip).bits()))
    }

    /// The range `start..=end`; both ends must be of one family.
    pub fn from_ips(start: IpAddr, end: IpAddr) -> Self {
        Self {
            family: IpFamily::of(start),
            start: to_u128(start),
            end: to_u128(end),
        }
    }

    /// The family of the addresses.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The first address.
    pub fn start(&self) -> IpAddr {
        from_u128(self.family, self.start)
    }

    /// The last address.
    pub fn end(&self) -> IpAddr {
        from_u128(self.family, self.end)
    }

    /// The first address as an integer.
    pub fn start_bits(&self) -> u128 {
        self.start
    }

    /// The last address as an integer.
    pub fn end_bits(&self) -> u128 {
        self.end
    }

    /// Number of addresses, saturating at u128::MAX for the whole IPv6 space.
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the range holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        IpFamily::of(ip) == self.family && (self.start..=self.end).contains(&to_u128(ip))
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }

    /// The smallest list of CIDRs that covers exactly this range, in address order.
    pub fn cidrs(&self) -> Vec<IpNet> {
        let bits = u32::from(self.family.bits());
        let mut out = Vec::new();
        let mut cur = self.start;
        loop {
            // The largest aligned block that starts at `cur` and does not pass `end`.
            let align = if cur == 0 {
                bits
            } else {
                cur.trailing_zeros().min(bits)
            };
            let remaining = self.end - cur; // count - 1
            let fit = if remaining == u128::MAX {
                128
            } else {
                127 - (remaining + 1).leading_zeros()
            };
            let host_bits = align.min(fit);
            let prefix = u8::try_from(bits - host_bits).unwrap_or(0);
            if let Ok(net) = IpNet::new(from_u128(self.family, cur), prefix) {
                out.push(net);
            }
            let last = if host_bits >= 128 {
                u128::MAX
            } else {
                cur + ((1u128 << host_bits) - 1)
            };
            if last >= self.end {
                return out;
            }
            cur = last + 1;
        }
    }

    /// The longest prefix length among [`Self::cidrs`]: a BGP aggregate shorter than this would
    /// cover addresses outside the range (203.0.113.32-203.0.113.40 ends in a /32).
    pub fn longest_prefix(&self) -> u8 {
        self.cidrs()
            .iter()
            .map(IpNet::prefix_len)
            .max()
            .unwrap_or(self.family.bits())
    }
}

/// A block of addresses that no Service can be given: they are not unicast addresses a client
/// could reach (RFC 6890's "destination: false" blocks, loopback, multicast), or they are IPv4
/// addresses written as IPv6, which the kernel never puts on the wire as such.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedBlock {
    /// The block as an admin would write it, e.g. `127.0.0.0/8`.
    pub block: &'static str,
    /// What the block is for, e.g. `loopback`.
    pub purpose: &'static str,
    family: IpFamily,
    start: u128,
    end: u128,
    /// For IPv4 written as IPv6 (IPv4-mapped, IPv4-compatible): the block's IPv4 address 0.0.0.0.
    ipv4_base: Option<u128>,
}

const fn reserved(
    family: IpFamily,
    block: &'static str,
    purpose: &'static str,
    (start, end): (u128, u128),
    ipv4_base: Option<u128>,
) -> ReservedBlock {
    ReservedBlock {
        block,
        purpose,
        family,
        start,
        end,
        ipv4_base,
    }
}

/// Every [`ReservedBlock`], disjoint, in address order per family.
pub static RESERVED_BLOCKS: [ReservedBlock; 9] = [
    reserved(
        IpFamily::V4,
        "0.0.0.0/8",
        "this network",
        (0, 0x00ff_ffff),
        None,
    ),
    reserved(
        IpFamily::V4,
        "127.0.0.0/8",
        "loopback",
        (0x7f00_0000, 0x7fff_ffff),
        None,
    ),
    reserved(
        IpFamily::V4,
        "224.0.0.0/4",
        "multicast",
        (0xe000_0000, 0xefff_ffff),
        None,
    ),
    reserved(
        IpFamily::V4,
        "255.255.255.255/32",
        "limited broadcast",
        (0xffff_ffff, 0xffff_ffff),
        None,
    ),
    reserved(IpFamily::V6, "::/128", "unspecified", (0, 0), None),
    reserved(IpFamily::V6, "::1/128", "loopback", (1, 1), None),
    // ::/96 but for :: and ::1, which are named on their own.
    reserved(
        IpFamily::V6,
        "::/96",
        "deprecated IPv4-compatible",
        (2, 0xffff_ffff),
        Some(0),
    ),
    reserved(
        IpFamily::V6,
        "::ffff:0:0/96",
        "IPv4-mapped",
        (0xffff_0000_0000, 0xffff_ffff_ffff),
        Some(0xffff_0000_0000),
    ),
    reserved(
        IpFamily::V6,
        "ff00::/8",
        "multicast",
        (0xff00 << 112, u128::MAX),
        None,
    ),
];

impl ReservedBlock {
    /// Whether the block shares an address with `range`.
    pub fn overlaps(&self, range: &AddressRange) -> bool {
        range.overlaps(&AddressRange {
            family: self.family,
            start: self.start,
            end: self.end,
        })
    }

    /// The IPv4 addresses `range` writes as IPv6, when it lies wholly in this block and the
    /// block is one of IPv4 addresses written as IPv6 (`::ffff:192.0.2.0/120` is 192.0.2.0/24).
    pub fn embedded_ipv4(&self, range: &AddressRange) -> Option<AddressRange> {
        let base = self.ipv4_base?;
        (range.family == self.family && self.start <= range.start && range.end <= self.end).then(
            || AddressRange {
                family: IpFamily::V4,
                start: range.start - base,
                end: range.end - base,
            },
        )
    }
}

impl AddressRange {
    /// The reserved blocks this range shares an address with, in address order: none for a
    /// range whose every address may be a Service IP.
    pub fn reserved_blocks(&self) -> Vec<&'static ReservedBlock> {
        RESERVED_BLOCKS
            .iter()
            .filter(|b| b.overlaps(self))
            .collect()
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start(), self.end())
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, AddressRangeError> {
    IpAddr::from_str(s).map_err(|_| AddressRangeError::Syntax)
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `family` whose integer is `bits` (IPv4 keeps the low 32 bits).
pub fn from_u128(family: IpFamily, bits: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(
            u32::try_from(bits & 0xffff_ffff).unwrap_or(0),
        )),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> AddressRange {
        AddressRange::parse(s).unwrap()
    }

    #[test]
    fn cidr_covers_network_to_broadcast() {
        let range = r("203.0.113.0/28");
        assert_eq!(range.start().to_string(), "203.0.113.0");
        assert_eq!(range.end().to_string(), "203.0.113.15");
        assert_eq!(range.len(), 16);
    }

    #[test]
    fn range_is_inclusive() {
        assert_eq!(r("198.51.100.10-198.51.100.20").len(), 11);
        assert_eq!(r("2001:db8::1 - 2001:db8::1").len(), 1);
    }

    #[test]
    fn ipv6_slash_64_counts_two_to_the_64() {
        assert_eq!(r("2001:db8::/64").len(), 1u128 << 64);
        assert_eq!(r("::/0").len(), u128::MAX);
    }

    #[test]
    fn rejects_what_is_ambiguous_or_wrong() {
        use AddressRangeError::*;
        let cases = [
            ("", Syntax),
            ("banana", Syntax),
            ("203.0.113.0/33", Syntax),
            ("203.0.113.300/24", Syntax),
            (
                "203.0.113.5",
                BareAddress("203.0.113.5".parse().unwrap(), 32),
            ),
            (
                "203.0.113.5/24",
                HostBits("203.0.113.0/24".parse().unwrap()),
            ),
            ("203.0.113.1-2001:db8::1", MixedFamilies),
            ("203.0.113.9-203.0.113.1", Reversed),
            ("203.0.113.1-", Syntax),
        ];
        for (entry, want) in cases {
            assert_eq!(AddressRange::parse(entry), Err(want), "{entry:?}");
        }
    }

    #[test]
    fn cidrs_summarize_a_range() {
        let nets: Vec<String> = r("198.51.100.10-198.51.100.20")
            .cidrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            nets,
            [
                "198.51.100.10/31",
                "198.51.100.12/30",
                "198.51.100.16/30",
                "198.51.100.20/32"
            ]
        );
        assert_eq!(r("198.51.100.10-198.51.100.20").longest_prefix(), 32);
        assert_eq!(r("198.51.100.16-198.51.100.31").longest_prefix(), 28);
        assert_eq!(r("0.0.0.0/0").cidrs().len(), 1);
        assert_eq!(r("::/0").longest_prefix(), 0);
    }

    #[test]
    fn reserved_blocks_are_what_no_service_can_have() {
        let blocks =
            |s: &str| -> Vec<&str> { r(s).reserved_blocks().iter().map(|b| b.block).collect() };
        assert!(blocks("203.0.113.0/24").is_empty());
        assert!(blocks("1.0.0.0-126.255.255.255").is_empty());
        assert!(blocks("128.0.0.0-223.255.255.255").is_empty());
        assert!(blocks("240.0.0.0-255.255.255.254").is_empty());
        assert!(blocks("2001:db8::/32").is_empty());
        assert!(blocks("::1:0:0:0/96").is_empty());
        assert!(blocks("fe80::/10").is_empty());
        assert_eq!(
            blocks("0.0.0.0/0"),
            [
                "0.0.0.0/8",
                "127.0.0.0/8",
                "224.0.0.0/4",
                "255.255.255.255/32"
            ]
        );
        assert_eq!(blocks("127.0.0.1/32"), ["127.0.0.0/8"]);
        assert_eq!(blocks("::/127"), ["::/128", "::1/128"]);
        assert_eq!(
            blocks("::/64"),
            ["::/128", "::1/128", "::/96", "::ffff:0:0/96"]
        );
        assert_eq!(blocks("ff02::1/128"), ["ff00::/8"]);
        assert_eq!(blocks("::/0").len(), 5);
        for block in &RESERVED_BLOCKS {
            assert!(
                r(block.block).reserved_blocks().contains(&block),
                "{}",
                block.block
            );
        }
    }

    #[test]
    fn ipv4_written_as_ipv6_is_recognized() {
        let embedded = |s: &str| {
            let range = r(s);
            range
                .reserved_blocks()
                .iter()
                .find_map(|b| b.embedded_ipv4(&range))
                .map(|v4| v4.to_string())
        };
        assert_eq!(
            embedded("::ffff:192.0.2.0/120").as_deref(),
            Some("192.0.2.0-192.0.2.255")
        );
        assert_eq!(
            embedded("::192.0.2.10-::192.0.2.20").as_deref(),
            Some("192.0.2.10-192.0.2.20")
        );
        // Partly outside the block: not one IPv4 range.
        assert_eq!(embedded("::fffe:ffff:ffff-::ffff:0.0.0.1"), None);
        assert_eq!(embedded("ff02::/16"), None);
    }

    proptest! {
        #[test]
        fn cidrs_cover_exactly_the_range(a: u32, b: u32) {
            let (lo, hi) = (a.min(b), a.max(b));
            let range = AddressRange::from_ips(Ipv4Addr::from(lo).into(), Ipv4Addr::from(hi).into());
            let nets = range.cidrs();
            prop_assert!(nets.len() <= 62);
            let mut next = u128::from(lo);
            for net in &nets {
                prop_assert_eq!(to_u128(net.network()), next);
                next = to_u128(net.broadcast()) + 1;
            }
            prop_assert_eq!(next, u128::from(hi) + 1);
        }

        #[test]
        fn cidrs_cover_exactly_the_v6_range(a: u128, b: u128) {
            let (lo, hi) = (a.min(b), a.max(b));
            let range = AddressRange::from_ips(Ipv6Addr::from(lo).into(), Ipv6Addr::from(hi).into());
            let nets = range.cidrs();
            prop_assert!(nets.len() <= 254);
            let mut next = lo;
            for net in &nets {
                prop_assert_eq!(to_u128(net.network()), next);
                let last = to_u128(net.broadcast());
                if last == u128::MAX { prop_assert_eq!(hi, u128::MAX); break; }
                next = last + 1;
            }
        }
    }
}
