//! BGP peers, named communities, BGP advertisements and BFD profiles.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::address::IpFamily;
use crate::community::{self, Community, CommunityError};
use crate::duration::parse_duration;
use crate::v1alpha1::{
    BfdProfile, BgpAdvertisement, BgpPeer, LoadBalancerConfigSpec, NamedCommunity,
};

use super::Report;
use super::names::{DNS1123_SUBDOMAIN, is_dns1123_subdomain, is_interface_name, is_secret_key};
use super::pools::PoolIndex;
use super::selectors::check_list;
use crate::selector::selector_lists_overlap;

const MAX_TIMER_SECONDS: u64 = 65_535;

pub(super) fn check(report: &mut Report, spec: &LoadBalancerConfigSpec, pools: &PoolIndex<'_>) {
    let profiles = report.names("spec.bfdProfiles", &spec.bfd_profiles, |p| p.name.as_str());
    for (i, profile) in spec.bfd_profiles.iter().enumerate() {
        check_bfd_profile(report, &format!("spec.bfdProfiles[{i}]"), profile);
    }

    let peers = report.names("spec.bgpPeers", &spec.bgp_peers, |p| p.name.as_str());
    for (i, peer) in spec.bgp_peers.iter().enumerate() {
        check_peer(report, &format!("spec.bgpPeers[{i}]"), peer, &profiles);
    }
    check_duplicate_sessions(report, &spec.bgp_peers);

    check_named_communities(report, &spec.communities);

    report.names("spec.bgpAdvertisements", &spec.bgp_advertisements, |a| {
        a.name.as_str()
    });
    let ads = &spec.bgp_advertisements;
    // Pools each advertisement selects (all when it lists none), resolved once.
    let selected: Vec<Vec<usize>> = ads
        .iter()
        .map(|ad| selected_pools(ad, pools, spec.address_pools.len()))
        .collect();
    for (i, ad) in ads.iter().enumerate() {
        let path = format!("spec.bgpAdvertisements[{i}]");
        check_advertisement(report, &path, ad, pools, &peers, &selected[i], spec);
    }
    check_local_pref_conflicts(report, spec, pools, &selected);
}

fn check_bfd_profile(report: &mut Report, path: &str, profile: &BfdProfile) {
    let intervals = [
        ("receiveInterval", profile.receive_interval),
        ("transmitInterval", profile.transmit_interval),
        ("echoInterval", profile.echo_interval),
    ];
    for (field, value) in intervals {
        if !(10..=60_000).contains(&value) {
            report.add(
                format!("{path}.{field}"),
                value,
                "must be between 10 and 60000 (milliseconds)",
            );
        }
    }
    if !(2..=255).contains(&profile.detect_multiplier) {
        report.add(
            format!("{path}.detectMultiplier"),
            profile.detect_multiplier,
            "must be between 2 and 255",
        );
    }
    if !(1..=254).contains(&profile.minimum_ttl) {
        report.add(
            format!("{path}.minimumTtl"),
            profile.minimum_ttl,
            "must be between 1 and 254",
        );
    }
    if profile.echo_mode {
        report.add(
            format!("{path}.echoMode"),
            profile.echo_mode,
            ECHO_MODE_UNSUPPORTED,
        );
    }
}

/// Why `echoMode` is refused (docs/operations.md, "BFD", says more).
pub const ECHO_MODE_UNSUPPORTED: &str = "is not supported: the speaker runs BFD in asynchronous mode only (echo works for IPv4 single hop only and needs the router to loop packets back); lower receiveInterval and transmitInterval for faster detection instead";

/// Longest text of a BGP timer: the CRD's maxLength, which keeps its CEL rules cheap. No sensible
/// timer needs more (18h12m15s is the longest hold time).
pub(crate) const MAX_TIMER_TEXT: usize = 12;

/// Parses a BGP timer: whole seconds, at most 65535.
fn timer(report: &mut Report, path: String, text: &str) -> Option<Duration> {
    if text.chars().count() > MAX_TIMER_TEXT {
        let reason = format!("must be at most {MAX_TIMER_TEXT} characters");
        report.add(path, text, reason);
        return None;
    }
    let reason = match parse_duration(text) {
        Ok(d) if d.subsec_millis() != 0 => "must be a whole number of seconds".to_owned(),
        Ok(d) if d.as_secs() > MAX_TIMER_SECONDS => "must be at most 65535s".to_owned(),
        Ok(d) => return Some(d),
        Err(e) => e.to_string(),
    };
    report.add(path, text, reason);
    None
}

fn check_peer(report: &mut Report, path: &str, peer: &BgpPeer, profiles: &HashMap<&str, usize>) {
    match (peer.peer_asn, peer.dynamic_asn) {
        (None, None) => report.add(
            format!("{path}.peerASN"),
            (),
            "one of peerASN and dynamicASN is required",
        ),
        // At peerASN, where the CRD's rule for both cases reports too.
        (Some(asn), Some(_)) => report.add(
            format!("{path}.peerASN"),
            asn,
            "cannot be set together with dynamicASN; set one of them",
        ),
        _ => {}
    }
    let asns = [("myASN", Some(peer.my_asn)), ("peerASN", peer.peer_asn)];
    for (field, asn) in asns.into_iter().filter_map(|(f, a)| Some((f, a?))) {
        if asn == 0 {
            report.add(
                format!("{path}.{field}"),
                asn,
                "must be between 1 and 4294967295",
            );
        }
    }
    let peer_ip = peer.peer_address.parse::<IpAddr>();
    if peer_ip.is_err() {
        report.add(
            format!("{path}.peerAddress"),
            &peer.peer_address,
            "must be an IPv4 or IPv6 address",
        );
    }
    if peer.peer_port == 0 {
        report.add(
            format!("{path}.peerPort"),
            peer.peer_port,
            "must be between 1 and 65535",
        );
    }
    if let Some(source) = &peer.source_address {
        match (source.parse::<IpAddr>(), &peer_ip) {
            (Err(_), _) => report.add(
                format!("{path}.sourceAddress"),
                source,
                "must be an IPv4 or IPv6 address",
            ),
            (Ok(s), Ok(p)) if IpFamily::of(s) != IpFamily::of(*p) => report.add(
                format!("{path}.sourceAddress"),
                source,
                format!("must be of the same IP family as peerAddress ({p})"),
            ),
            _ => {}
        }
    }
    if let Some(id) = &peer.router_id
        && id.parse::<Ipv4Addr>().is_err()
    {
        report.add(
            format!("{path}.routerID"),
            id,
            "must be an IPv4 address (a BGP router ID is 32 bits)",
        );
    }
    check_timers(report, path, peer);
    if let Some(vrf) = &peer.vrf
        && !is_interface_name(vrf)
    {
        report.add(
            format!("{path}.vrf"),
            vrf,
            "must be a VRF device name: 1 to 15 characters, no '/', ':' or whitespace",
        );
    }
    if peer.ebgp_multi_hop && peer.is_ibgp() {
        report.add(
            format!("{path}.ebgpMultiHop"),
            true,
            "applies to eBGP only; this peer is iBGP (myASN equals peerASN, or dynamicASN is internal)",
        );
    }
    if let Some(secret) = &peer.password_secret_ref {
        if !is_dns1123_subdomain(&secret.name) {
            report.add(
                format!("{path}.passwordSecretRef.name"),
                &secret.name,
                DNS1123_SUBDOMAIN,
            );
        }
        if !is_secret_key(&secret.key) {
            report.add(
                format!("{path}.passwordSecretRef.key"),
                &secret.key,
                "must be a Secret key: letters, digits, '-', '_' or '.'",
            );
        }
    }
    if let Some(profile) = &peer.bfd_profile
        && !profiles.contains_key(profile.as_str())
    {
        report.add(
            format!("{path}.bfdProfile"),
            profile,
            "no BFD profile with this name in spec.bfdProfiles",
        );
    }
    check_list(
        report,
        &format!("{path}.nodeSelectors"),
        &peer.node_selectors,
    );
}

/// holdTime and keepaliveTime, each as set, and the hold time derived from keepaliveTime when
/// holdTime is absent ([`BgpPeer::effective_hold_time`]).
fn check_timers(report: &mut Report, path: &str, peer: &BgpPeer) {
    let hold = peer.hold_time.as_deref().map(|text| {
        let hold = timer(report, format!("{path}.holdTime"), text);
        if let Some(hold) = hold
            && (1..3).contains(&hold.as_secs())
        {
            report.add(
                format!("{path}.holdTime"),
                text,
                "must be 0s (no keepalives) or at least 3s",
            );
        }
        (text, hold)
    });
    if let Some(text) = &peer.connect_time
        && let Some(connect) = timer(report, format!("{path}.connectTime"), text)
        && connect.is_zero()
    {
        report.add(format!("{path}.connectTime"), text, "must be at least 1s");
    }
    let Some(text) = &peer.keepalive_time else {
        return;
    };
    let Some(keepalive) = timer(report, format!("{path}.keepaliveTime"), text) else {
        return;
    };
    match hold {
        Some((hold_text, Some(hold))) if keepalive > hold => report.add(
            format!("{path}.keepaliveTime"),
            text,
            format!("must not exceed holdTime ({hold_text})"),
        ),
        None if keepalive.as_secs() * 3 > MAX_TIMER_SECONDS => report.add(
            format!("{path}.keepaliveTime"),
            text,
            format!(
                "must be at most {}s when holdTime is absent: the hold time is then three times keepaliveTime, at most {MAX_TIMER_SECONDS}s",
                MAX_TIMER_SECONDS / 3
            ),
        ),
        _ => {}
    }
}

/// Two peers with the same address and port on a node would be the same session twice.
fn check_duplicate_sessions(report: &mut Report, peers: &[BgpPeer]) {
    let mut by_endpoint: HashMap<(&str, u16), Vec<usize>> = HashMap::new();
    for (i, peer) in peers.iter().enumerate() {
        let Ok(ip) = peer.peer_address.parse::<IpAddr>() else {
            continue;
        };
        let earlier = by_endpoint
            .entry((peer.peer_address.as_str(), peer.peer_port))
            .or_default();
        if let Some(&first) = earlier
            .iter()
            .find(|&&j| selector_lists_overlap(&peers[j].node_selectors, &peer.node_selectors))
        {
            report.add(
                format!("spec.bgpPeers[{i}].peerAddress"),
                &peer.peer_address,
                format!(
                    "the session to {ip} port {} is already configured by spec.bgpPeers[{first}] on nodes this peer's nodeSelectors also select; make their nodeSelectors disjoint",
                    peer.peer_port
                ),
            );
        }
        earlier.push(i);
    }
}

fn selected_pools(ad: &BgpAdvertisement, pools: &PoolIndex<'_>, count: usize) -> Vec<usize> {
    if ad.address_pools.is_empty() {
        return (0..count).collect();
    }
    let mut selected: Vec<usize> = ad
        .address_pools
        .iter()
        .filter_map(|name| pools.by_name.get(name.as_str()).copied())
        .collect();
    selected.sort_unstable();
    selected.dedup();
    selected
}

fn check_advertisement(
    report: &mut Report,
    path: &str,
    ad: &BgpAdvertisement,
    pools: &PoolIndex<'_>,
    peers: &HashMap<&str, usize>,
    selected: &[usize],
    spec: &LoadBalancerConfigSpec,
) {
    report.references(
        &format!("{path}.addressPools"),
        &ad.address_pools,
        &pools.by_name,
        "address pool",
    );
    let lengths = [
        ("aggregationLength", ad.aggregation_length, IpFamily::V4),
        (
            "aggregationLengthV6",
            ad.aggregation_length_v6,
            IpFamily::V6,
        ),
    ];
    for (field, length, family) in lengths {
        if length > family.bits() {
            report.add(
                format!("{path}.{field}"),
                length,
                format!("must be between 0 and {}", family.bits()),
            );
            continue;
        }
        if !ad.service_selectors.is_empty() && length != family.bits() {
            report.add(
                format!("{path}.{field}"),
                length,
                format!(
                    "must be {} when serviceSelectors is set: an aggregate would also announce the addresses of Services the selectors leave out",
                    family.bits()
                ),
            );
            continue;
        }
        // Pools whose most specific entry is narrower than the aggregate.
        let mut too_wide = selected.iter().filter_map(|&p| {
            pools
                .most_specific(p, family)
                .filter(|(prefix, _)| length < *prefix)
                .map(|(prefix, entry)| (p, prefix, entry))
        });
        if let Some((pool, prefix, entry)) = too_wide.next() {
            let more = too_wide.count();
            let also = if more > 0 {
                format!(" (and {more} more pools)")
            } else {
                String::new()
            };
            report.add(
                format!("{path}.{field}"),
                length,
                format!(
                    "is shorter than /{prefix} of spec.addressPools[{pool}].addresses[{entry}] ({}){also}: the aggregate would announce addresses outside the pool",
                    spec.address_pools[pool].addresses[entry]
                ),
            );
        }
    }
    let named = &spec.communities;
    for (k, text) in ad.communities.iter().enumerate() {
        let here = format!("{path}.communities[{k}]");
        match community::resolve(text, named) {
            // A named community whose value is wrong is reported where it is defined.
            None if named.iter().any(|n| n.name == *text) => {}
            None if text.contains(':') => report.add(&here, text, CommunityError.to_string()),
            None => report.add(&here, text, UNKNOWN_COMMUNITY),
            Some(c) => {
                let same = ad.communities[..k]
                    .iter()
                    .any(|t| community::resolve(t, named) == Some(c));
                if same {
                    report.add(&here, text, "listed twice");
                }
            }
        }
    }
    report.references(&format!("{path}.peers"), &ad.peers, peers, "BGP peer");
    check_list(report, &format!("{path}.nodeSelectors"), &ad.node_selectors);
    check_list(
        report,
        &format!("{path}.serviceSelectors"),
        &ad.service_selectors,
    );
}

/// Why an advertisement's community entry that is no community and no defined name is refused.
pub const UNKNOWN_COMMUNITY: &str = "no entry of spec.communities has this name, and it is not a community: use A:B, large:A:B:C, a well-known name (no-export, no-advertise, no-export-subconfed, no-peer, blackhole, graceful-shutdown, accept-own, llgr-stale, no-llgr) or the name of a spec.communities entry";

/// `spec.communities`: unique DNS-1123 names that are not well-known names (which would make
/// an advertisement's `no-export` mean two things), each with a value that parses.
fn check_named_communities(report: &mut Report, named: &[NamedCommunity]) {
    report.names("spec.communities", named, |n| n.name.as_str());
    for (i, n) in named.iter().enumerate() {
        if community::is_well_known(&n.name) {
            report.add(
                format!("spec.communities[{i}].name"),
                &n.name,
                "is the name of a well-known community; choose another",
            );
        }
        if let Err(e) = n.value.parse::<Community>() {
            report.add(
                format!("spec.communities[{i}].value"),
                &n.value,
                e.to_string(),
            );
        }
    }
}

/// Two advertisements that would send the same route to the same peer from the same node must
/// agree on LOCAL_PREF: a router cannot hold one route with two preferences. Advertisements for
/// Services no label set could match in both never send the same route.
fn check_local_pref_conflicts(
    report: &mut Report,
    spec: &LoadBalancerConfigSpec,
    pools: &PoolIndex<'_>,
    selected: &[Vec<usize>],
) {
    let ads = &spec.bgp_advertisements;
    for j in 0..ads.len() {
        for i in 0..j {
            let (a, b) = (&ads[i], &ads[j]);
            if a.local_pref == b.local_pref
                || !lists_overlap(&a.peers, &b.peers)
                || !selector_lists_overlap(&a.node_selectors, &b.node_selectors)
                || !selector_lists_overlap(&a.service_selectors, &b.service_selectors)
            {
                continue;
            }
            // Same route: a shared pool with a family whose aggregate is the same in both.
            let same_route = |p: &usize| {
                let v4 = pools.most_specific(*p, IpFamily::V4).is_some()
                    && a.aggregation_length == b.aggregation_length;
                let v6 = pools.has_v6(*p) && a.aggregation_length_v6 == b.aggregation_length_v6;
                v4 || v6
            };
            let shared = selected[i]
                .iter()
                .find(|p| selected[j].binary_search(p).is_ok() && same_route(p));
            if let Some(&pool) = shared {
                report.add(
                    format!("spec.bgpAdvertisements[{j}].localPref"),
                    b.local_pref,
                    format!(
                        "conflicts with spec.bgpAdvertisements[{i}] (localPref {}) for pool {:?} on the same peers and nodes",
                        a.local_pref.map_or("unset".to_owned(), |v| v.to_string()),
                        spec.address_pools[pool].name
                    ),
                );
            }
        }
    }
}

/// Whether two name lists (empty meaning all) share a member.
fn lists_overlap(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.contains(x))
}
