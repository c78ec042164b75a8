//! BGP communities as admins write them: `65000:100`, `large:65000:1:2`, a well-known name, or
//! the name of a `spec.communities` entry.

use std::fmt;
use std::str::FromStr;

use crate::v1alpha1::NamedCommunity;

/// A BGP community (RFC 1997) or large community (RFC 8092).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    /// A standard community: two 16-bit halves, conventionally ASN:value.
    Standard(u16, u16),
    /// A large community: global administrator, two local data parts.
    Large(u32, u32, u32),
}

/// Well-known standard communities (IANA registry), by the names routers print.
pub const WELL_KNOWN: [(&str, u32); 9] = [
    ("graceful-shutdown", 0xFFFF_0000),
    ("accept-own", 0xFFFF_0001),
    ("llgr-stale", 0xFFFF_0006),
    ("no-llgr", 0xFFFF_0007),
    ("blackhole", 0xFFFF_029A),
    ("no-export", 0xFFFF_FF01),
    ("no-advertise", 0xFFFF_FF02),
    ("no-export-subconfed", 0xFFFF_FF03),
    ("no-peer", 0xFFFF_FF04),
];

/// Why a community does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a community: use A:B with A and B in 0-65535, large:A:B:C with each in 0-4294967295, or a well-known name (no-export, no-advertise, no-export-subconfed, no-peer, blackhole, graceful-shutdown, accept-own, llgr-stale, no-llgr)"
)]
pub struct CommunityError;

impl Community {
    /// The 32-bit value of a standard community.
    pub fn standard_value(self) -> Option<u32> {
        match self {
            Self::Standard(hi, lo) => Some(u32::from(hi) << 16 | u32::from(lo)),
            Self::Large(..) => None,
        }
    }
}

/// Whether `name` is a well-known community's name (which a named community may not take).
pub fn is_well_known(name: &str) -> bool {
    WELL_KNOWN.iter().any(|(n, _)| *n == name)
}

/// An advertisement's community entry as a community: the value of the named community of that
/// name (`named` being `spec.communities`), else the entry itself. `None` when it is neither (a
/// name defined nowhere, or a value that does not parse).
pub fn resolve(entry: &str, named: &[NamedCommunity]) -> Option<Community> {
    match named.iter().find(|n| n.name == entry) {
        Some(n) => n.value.parse().ok(),
        None => entry.parse().ok(),
    }
}

impl FromStr for Community {
    type Err = CommunityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((_, value)) = WELL_KNOWN.iter().find(|(name, _)| *name == s) {
            let [a, b, c, d] = value.to_be_bytes();
            return Ok(Self::Standard(
                u16::from_be_bytes([a, b]),
                u16::from_be_bytes([c, d]),
            ));
        }
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| -> Result<u32, CommunityError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CommunityError);
            }
            p.parse().map_err(|_| CommunityError)
        };
        let half = |p: &str| u16::try_from(num(p)?).map_err(|_| CommunityError);
        match parts.as_slice() {
            [a, b] => Ok(Self::Standard(half(a)?, half(b)?)),
            ["large", a, b, c] => Ok(Self::Large(num(a)?, num(b)?, num(c)?)),
            _ => Err(CommunityError),
        }
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standard(a, b) => write!(f, "{a}:{b}"),
            Self::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_standard_large_and_well_known() {
        assert_eq!("65000:100".parse(), Ok(Community::Standard(65000, 100)));
        assert_eq!(
            "large:4200000000:1:2".parse(),
            Ok(Community::Large(4_200_000_000, 1, 2))
        );
        assert_eq!("no-export".parse(), Ok(Community::Standard(0xFFFF, 0xFF01)));
        assert_eq!(
            "no-export".parse::<Community>().unwrap().standard_value(),
            Some(0xFFFF_FF01)
        );
    }

    #[test]
    fn rejects_out_of_range_and_malformed() {
        for bad in [
            "65536:1",
            "1:65536",
            "1",
            "1:2:3",
            "large:1:2",
            "large:1:2:4294967296",
            "a:b",
            "-1:2",
            "+1:2",
            " 1:2",
            "no_export",
            "",
        ] {
            assert_eq!(bad.parse::<Community>(), Err(CommunityError), "{bad:?}");
        }
    }

    #[test]
    fn names_resolve_to_their_value_before_being_parsed() {
        let named = [NamedCommunity {
            name: "vpn-only".into(),
            value: "64512:300".into(),
        }];
        assert_eq!(
            resolve("vpn-only", &named),
            Some(Community::Standard(64512, 300))
        );
        assert_eq!(resolve("1:2", &named), Some(Community::Standard(1, 2)));
        assert_eq!(
            resolve("no-export", &named),
            Some(Community::Standard(0xFFFF, 0xFF01))
        );
        assert_eq!(resolve("vpn", &named), None);
        assert!(is_well_known("no-peer"));
        assert!(!is_well_known("vpn-only"));
    }

    #[test]
    fn display_round_trips() {
        for text in ["0:0", "65535:65535", "large:1:2:3"] {
            assert_eq!(text.parse::<Community>().unwrap().to_string(), text);
        }
    }
}
