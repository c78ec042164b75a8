//! Which interfaces the responder may answer on: up, broadcast-capable Ethernet that is neither
//! loopback nor enslaved to a bond or bridge, and whose name no exclusion pattern matches.
//!
//! Facts come from `/sys/class/net` and `/proc/net/if_inet6`, which both show the network
//! namespace of the process (the speaker runs with host networking; `ip netns exec` remounts
//! `/sys` for the namespace).

use std::fs;
use std::io;
use std::net::Ipv6Addr;
use std::path::Path;

use regex::Regex;

use super::packet::MacAddr;

/// Interface names never answered on, whatever the configuration says: loopback, container
/// runtimes, CNI plugins and tunnels. Each pattern must match the whole name, so a veth named
/// `eth0` (the node interface on the testbed) stays eligible while `veth1234` does not.
pub const DEFAULT_EXCLUDE: &[&str] = &[
    r"lo",
    r"docker\d*",
    r"cni\d*",
    r"flannel\..*",
    r"cali.*",
    r"cilium_.*",
    r"lxc.*",
    r"kube-ipvs\d*",
    r"nodelocaldns",
    r"tunl\d*",
    r"vxlan\..*",
    r"genev_sys_.*",
    r"kube-bridge",
    r"weave",
    r"veth.*",
];

const IFF_UP: u32 = 0x1;
const IFF_BROADCAST: u32 = 0x2;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_NOARP: u32 = 0x80;
const ARPHRD_ETHER: u16 = 1;
/// `/proc/net/if_inet6` scope of link-local addresses.
const SCOPE_LINK: u32 = 0x20;
/// Addresses still in duplicate address detection, or that failed it, are not usable sources.
const IFA_F_TENTATIVE: u32 = 0x40;
const IFA_F_DADFAILED: u32 = 0x08;

/// An interface the responder can answer on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name (`eth0`).
    pub name: String,
    /// Kernel index.
    pub index: u32,
    /// Hardware address.
    pub mac: MacAddr,
    /// `IFF_*` flags as in `/sys/class/net/IF/flags`.
    pub flags: u32,
    /// A usable (not tentative) link-local IPv6 address; NDP is only spoken where there is one
    /// (it shows that IPv6 is up on the interface).
    pub link_local: Option<Ipv6Addr>,
}

/// What eligibility is decided from, read from sysfs (kept apart so the rule is tested purely).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    /// Kernel name.
    pub name: String,
    /// `IFF_*` flags.
    pub flags: u32,
    /// `ARPHRD_*` hardware type.
    pub hardware_type: u16,
    /// Has a `master` (bond, bridge, VRF or team).
    pub has_master: bool,
    /// Is a bridge port.
    pub bridge_port: bool,
    /// Is a bond slave.
    pub bond_slave: bool,
}

/// Why an interface is not answered on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    /// Administratively down.
    #[error("down")]
    Down,
    /// Loopback.
    #[error("loopback")]
    Loopback,
    /// No broadcast, or ARP disabled (`NOARP`): nothing to answer.
    #[error("not broadcast-capable or ARP disabled")]
    NoBroadcast,
    /// Not Ethernet (tunnels, InfiniBand, ...): the codec only speaks Ethernet.
    #[error("not Ethernet (hardware type {0})")]
    NotEthernet(u16),
    /// Enslaved to a bond or bridge: its master answers instead.
    #[error("member of a bond or bridge")]
    Enslaved,
    /// The name matches an exclusion pattern.
    #[error("excluded by pattern {0:?}")]
    Excluded(String),
}

/// The exclusion patterns in force: the defaults plus the configured ones, each anchored so it
/// must match the whole interface name.
#[derive(Clone, Debug)]
pub struct Exclusions {
    patterns: Vec<(String, Regex)>,
}

impl Exclusions {
    /// The defaults plus `extra` (each also anchored to the whole name).
    pub fn new(extra: &[Regex]) -> io::Result<Exclusions> {
        let sources = DEFAULT_EXCLUDE
            .iter()
            .map(|s| (*s).to_owned())
            .chain(extra.iter().map(|r| r.as_str().to_owned()));
        let mut patterns = Vec::new();
        for source in sources {
            let anchored = Regex::new(&format!("^(?:{source})$")).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("interface exclusion {source:?}: {e}"),
                )
            })?;
            patterns.push((source, anchored));
        }
        Ok(Exclusions { patterns })
    }

    /// The first pattern that matches the whole of `name`.
    pub fn matching(&self, name: &str) -> Option<&str> {
        self.patterns
            .iter()
            .find(|(_, re)| re.is_match(name))
            .map(|(source, _)| source.as_str())
    }
}

/// The eligibility rule.
pub fn check(facts: &LinkFacts, exclusions: &Exclusions) -> Result<(), Ineligible> {
    if facts.flags & IFF_LOOPBACK != 0 {
        return Err(Ineligible::Loopback);
    }
    if facts.flags & IFF_UP == 0 {
        return Err(Ineligible::Down);
    }
    if facts.flags & IFF_BROADCAST == 0 || facts.flags & IFF_NOARP != 0 {
        return Err(Ineligible::NoBroadcast);
    }
    if facts.hardware_type != ARPHRD_ETHER {
        return Err(Ineligible::NotEthernet(facts.hardware_type));
    }
    if facts.has_master || facts.bridge_port || facts.bond_slave {
        return Err(Ineligible::Enslaved);
    }
    if let Some(pattern) = exclusions.matching(&facts.name) {
        return Err(Ineligible::Excluded(pattern.to_owned()));
    }
    Ok(())
}

/// The interfaces of this network namespace that may be answered on, sorted by name.
/// `exclude` adds to [`DEFAULT_EXCLUDE`]; each pattern must match a whole name.
pub fn eligible_interfaces(exclude: &[Regex]) -> io::Result<Vec<Interface>> {
    scan(&Exclusions::new(exclude)?)
}

/// [`eligible_interfaces`] with exclusions compiled once.
pub fn scan(exclusions: &Exclusions) -> io::Result<Vec<Interface>> {
    let root = Path::new("/sys/class/net");
    let link_locals = fs::read_to_string("/proc/net/if_inet6")
        .map(|text| parse_if_inet6(&text))
        .unwrap_or_default();
    let mut out = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // An interface can vanish between listing and reading: skip it, the next scan knows.
        let Ok(Some(interface)) = read_interface(&root.join(&name), &name, exclusions) else {
            continue;
        };
        let link_local = link_locals
            .iter()
            .find(|(index, _)| *index == interface.index)
            .map(|(_, addr)| *addr);
        out.push(Interface {
            link_local,
            ..interface
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

fn invalid(what: &str, text: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {text:?}"))
}

fn read_interface(
    dir: &Path,
    name: &str,
    exclusions: &Exclusions,
) -> io::Result<Option<Interface>> {
    let flags_text = read_trimmed(&dir.join("flags"))?;
    let flags = u32::from_str_radix(flags_text.trim_start_matches("0x"), 16)
        .map_err(|_| invalid("flags", &flags_text))?;
    let type_text = read_trimmed(&dir.join("type"))?;
    let facts = LinkFacts {
        name: name.to_owned(),
        flags,
        hardware_type: type_text.parse().map_err(|_| invalid("type", &type_text))?,
        has_master: dir.join("master").exists(),
        bridge_port: dir.join("brport").exists(),
        bond_slave: dir.join("bonding_slave").exists(),
    };
    if let Err(why) = check(&facts, exclusions) {
        tracing::trace!(interface = name, %why, "not answering on interface");
        return Ok(None);
    }
    let index_text = read_trimmed(&dir.join("ifindex"))?;
    let mac_text = read_trimmed(&dir.join("address"))?;
    Ok(Some(Interface {
        name: name.to_owned(),
        index: index_text
            .parse()
            .map_err(|_| invalid("ifindex", &index_text))?,
        mac: mac_text
            .parse()
            .map_err(|_| invalid("address", &mac_text))?,
        flags,
        link_local: None,
    }))
}

/// (interface index, usable link-local address) pairs from `/proc/net/if_inet6`, first per
/// interface in file order.
pub fn parse_if_inet6(text: &str) -> Vec<(u32, Ipv6Addr)> {
    let mut out: Vec<(u32, Ipv6Addr)> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [addr, index, _prefix, scope, flags, ..] = fields.as_slice() else {
            continue;
        };
        let (Ok(raw), Ok(index), Ok(scope), Ok(flags)) = (
            u128::from_str_radix(addr, 16),
            u32::from_str_radix(index, 16),
            u32::from_str_radix(scope, 16),
            u32::from_str_radix(flags, 16),
        ) else {
            continue;
        };
        if addr.len() != 32
            || scope != SCOPE_LINK
            || flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0
            || out.iter().any(|(i, _)| *i == index)
        {
            continue;
        }
        out.push((index, Ipv6Addr::from(raw)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_ethernet(name: &str) -> LinkFacts {
        LinkFacts {
            name: name.to_owned(),
            flags: 0x1003,
            hardware_type: 1,
            has_master: false,
            bridge_port: false,
            bond_slave: false,
        }
    }

    fn defaults() -> Exclusions {
        Exclusions::new(&[]).unwrap()
    }

    #[test]
    fn an_up_ethernet_interface_is_eligible_even_when_it_is_a_veth_named_eth0() {
        for name in ["eth0", "ens3", "enp1s0f0", "bond0", "br0", "eth0.100"] {
            assert_eq!(check(&up_ethernet(name), &defaults()), Ok(()), "{name}");
        }
    }

    #[test]
    fn default_exclusions_cover_loopback_containers_cni_and_tunnels() {
        for name in [
            "lo",
            "docker0",
            "cni0",
            "flannel.1",
            "cali12ab",
            "cilium_host",
            "lxc1234",
            "kube-ipvs0",
            "nodelocaldns",
            "tunl0",
            "vxlan.calico",
            "genev_sys_6081",
            "kube-bridge",
            "weave",
            "veth12ab34",
        ] {
            assert!(
                matches!(
                    check(&up_ethernet(name), &defaults()),
                    Err(Ineligible::Excluded(_))
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn patterns_match_the_whole_name_only() {
        let extra = Exclusions::new(&[Regex::new("eth1|eth").unwrap()]).unwrap();
        assert_eq!(check(&up_ethernet("eth0"), &extra), Ok(()));
        assert_eq!(
            check(&up_ethernet("eth1"), &extra),
            Err(Ineligible::Excluded("eth1|eth".to_owned()))
        );
        assert_eq!(check(&up_ethernet("weave2"), &defaults()), Ok(()));
        assert_eq!(check(&up_ethernet("mylo"), &defaults()), Ok(()));
    }

    #[test]
    fn configured_patterns_add_to_the_defaults() {
        let extra = Exclusions::new(&[Regex::new("ens.*").unwrap()]).unwrap();
        assert!(check(&up_ethernet("ens3"), &extra).is_err());
        assert!(check(&up_ethernet("docker0"), &extra).is_err());
        assert_eq!(check(&up_ethernet("eth0"), &extra), Ok(()));
    }

    #[test]
    fn down_loopback_pointopoint_noarp_and_non_ethernet_are_ineligible() {
        let mut down = up_ethernet("eth0");
        down.flags = 0x1002;
        assert_eq!(check(&down, &defaults()), Err(Ineligible::Down));
        let mut lo = up_ethernet("myloop");
        lo.flags = 0x9;
        assert_eq!(check(&lo, &defaults()), Err(Ineligible::Loopback));
        let mut ptp = up_ethernet("ppp0");
        ptp.flags = 0x91; // UP | POINTOPOINT | NOARP
        assert_eq!(check(&ptp, &defaults()), Err(Ineligible::NoBroadcast));
        let mut noarp = up_ethernet("eth0");
        noarp.flags |= IFF_NOARP;
        assert_eq!(check(&noarp, &defaults()), Err(Ineligible::NoBroadcast));
        let mut ipip = up_ethernet("ipip0");
        ipip.hardware_type = 768;
        assert_eq!(check(&ipip, &defaults()), Err(Ineligible::NotEthernet(768)));
    }

    #[test]
    fn bond_and_bridge_members_are_ineligible() {
        for mark in 0..3 {
            let mut member = up_ethernet("eth1");
            match mark {
                0 => member.has_master = true,
                1 => member.bridge_port = true,
                _ => member.bond_slave = true,
            }
            assert_eq!(check(&member, &defaults()), Err(Ineligible::Enslaved));
        }
    }

    #[test]
    fn a_pattern_that_breaks_when_anchored_is_an_error_naming_it() {
        // Valid alone, but its verbose-mode comment swallows the closing anchor group.
        let sneaky = Regex::new("(?x)eth#").unwrap();
        let err = Exclusions::new(&[sneaky]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("(?x)eth#"), "{err}");
    }

    #[test]
    fn if_inet6_yields_usable_link_locals_only() {
        let text = "\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
fe800000000000000000000000000009 05 40 20 40     eth1
fe80000000000000000000000000000a 06 40 20 88     eth2
fe80000000000000000000000000000b 06 40 20 80     eth2
garbage line
";
        assert_eq!(
            parse_if_inet6(text),
            vec![
                (4, "fe80::fc:ff:fe00:1".parse().unwrap()),
                (6, "fe80::b".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn eligible_interfaces_of_this_namespace_never_include_loopback() {
        let found = eligible_interfaces(&[]).unwrap();
        assert!(found.iter().all(|i| i.name != "lo"));
    }
}
