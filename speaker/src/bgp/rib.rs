//! Adj-RIB-Out: what the peer has been sent, and the fewest UPDATEs that move it to what we want.
//!
//! Withdrawals go first (a route that should no longer be announced stops at once); then the new
//! or changed routes, grouped by family and equal attributes, packed greedily into UPDATEs of at
//! most [`MAX_MESSAGE`] octets. A changed route is simply re-announced (an implicit withdrawal).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::wire::{
    AS_TRANS, ATTR_AS_PATH, ATTR_AS4_PATH, ATTR_COMMUNITIES, ATTR_LARGE_COMMUNITIES,
    ATTR_LOCAL_PREF, ATTR_MP_REACH, ATTR_MP_UNREACH, ATTR_NEXT_HOP, ATTR_ORIGIN, FLAG_OPTIONAL,
    FLAG_TRANSITIVE, Family, HEADER_LEN, MAX_MESSAGE, encode_update, prefix_len, push_attribute,
    push_prefix,
};
use crate::announce::bgp::RouteAttributes;

#[cfg(test)]
mod tests;

/// LOCAL_PREF sent to iBGP peers when the route does not set one (the common default).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

const ORIGIN_IGP: u8 = 0;
const AS_SEQUENCE: u8 = 2;
const WELL_KNOWN: u8 = FLAG_TRANSITIVE;
const OPTIONAL_TRANSITIVE: u8 = FLAG_OPTIONAL | FLAG_TRANSITIVE;
const OPTIONAL: u8 = FLAG_OPTIONAL;
/// Withdrawn-routes length and total-path-attribute length.
const UPDATE_FIXED: usize = HEADER_LEN + 4;
/// MP attribute header with extended length, plus AFI and SAFI.
const MP_FIXED: usize = 4 + 3;

/// What a session fixes about the UPDATEs it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateContext {
    pub local_asn: u32,
    pub ibgp: bool,
    /// Both sides offered 4-octet AS numbers (RFC 6793).
    pub four_octet: bool,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl UpdateContext {
    /// Whether routes of `family` can be sent at all: the shell gave a next hop for it.
    pub fn has_next_hop(&self, family: Family) -> bool {
        match family {
            Family::Ipv4Unicast => self.next_hop_v4.is_some(),
            Family::Ipv6Unicast => self.next_hop_v6.is_some(),
        }
    }

    /// The path attributes of a route, split around MP_REACH_NLRI (type 14) so that the whole
    /// list stays in ascending type order: (types below 14, types above 14).
    fn attributes(&self, route: &RouteAttributes, family: Family) -> (Vec<u8>, Vec<u8>) {
        let mut low = Vec::new();
        let mut high = Vec::new();
        push_attribute(&mut low, WELL_KNOWN, ATTR_ORIGIN, &[ORIGIN_IGP]);
        let mut as4_path = None;
        if self.ibgp {
            push_attribute(&mut low, WELL_KNOWN, ATTR_AS_PATH, &[]);
        } else if self.four_octet {
            let mut path = vec![AS_SEQUENCE, 1];
            path.extend_from_slice(&self.local_asn.to_be_bytes());
            push_attribute(&mut low, WELL_KNOWN, ATTR_AS_PATH, &path);
        } else {
            let two = u16::try_from(self.local_asn).unwrap_or(AS_TRANS);
            let mut path = vec![AS_SEQUENCE, 1];
            path.extend_from_slice(&two.to_be_bytes());
            push_attribute(&mut low, WELL_KNOWN, ATTR_AS_PATH, &path);
            if u16::try_from(self.local_asn).is_err() {
                let mut path4 = vec![AS_SEQUENCE, 1];
                path4.extend_from_slice(&self.local_asn.to_be_bytes());
                as4_path = Some(path4);
            }
        }
        if let (Family::Ipv4Unicast, Some(nh)) = (family, self.next_hop_v4) {
            push_attribute(&mut low, WELL_KNOWN, ATTR_NEXT_HOP, &nh.octets());
        }
        if self.ibgp {
            let pref = route.local_pref.unwrap_or(DEFAULT_LOCAL_PREF);
            push_attribute(&mut low, WELL_KNOWN, ATTR_LOCAL_PREF, &pref.to_be_bytes());
        }
        if !route.communities.is_empty() {
            let value: Vec<u8> = route
                .communities
                .iter()
                .flat_map(|c| c.to_be_bytes())
                .collect();
            push_attribute(&mut low, OPTIONAL_TRANSITIVE, ATTR_COMMUNITIES, &value);
        }
        if let Some(path4) = as4_path {
            push_attribute(&mut high, OPTIONAL_TRANSITIVE, ATTR_AS4_PATH, &path4);
        }
        if !route.large_communities.is_empty() {
            let value: Vec<u8> = route
                .large_communities
                .iter()
                .flat_map(|(g, a, b)| [g.to_be_bytes(), a.to_be_bytes(), b.to_be_bytes()])
                .flatten()
                .collect();
            push_attribute(
                &mut high,
                OPTIONAL_TRANSITIVE,
                ATTR_LARGE_COMMUNITIES,
                &value,
            );
        }
        (low, high)
    }
}

/// Splits `prefixes` into runs whose encoded NLRI fit in `room` octets each (greedy, which is
/// within one message of optimal). A prefix that alone does not fit is left out.
fn chunks(prefixes: &[IpNet], room: usize) -> Vec<Vec<IpNet>> {
    let mut out: Vec<Vec<IpNet>> = Vec::new();
    let mut run = Vec::new();
    let mut used = 0;
    for p in prefixes {
        let len = prefix_len(p);
        if len > room {
            continue;
        }
        if used + len > room {
            out.push(std::mem::take(&mut run));
            used = 0;
        }
        used += len;
        run.push(*p);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

fn mp_value(family: Family, next_hop: Option<Ipv6Addr>, prefixes: &[IpNet]) -> Vec<u8> {
    let (afi, safi) = family.afi_safi();
    let mut v = afi.to_be_bytes().to_vec();
    v.push(safi);
    if let Some(nh) = next_hop {
        v.push(16);
        v.extend_from_slice(&nh.octets());
        v.push(0);
    }
    for p in prefixes {
        push_prefix(&mut v, p);
    }
    v
}

/// UPDATEs withdrawing `prefixes` (IPv4 in the Withdrawn Routes field, IPv6 in MP_UNREACH_NLRI).
pub fn withdrawals(prefixes: &[IpNet]) -> Vec<Vec<u8>> {
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = prefixes
        .iter()
        .partition(|p| Family::of(p) == Family::Ipv4Unicast);
    let mut out = Vec::new();
    for run in chunks(&v4, MAX_MESSAGE - UPDATE_FIXED) {
        out.push(encode_update(&run, &[], &[]));
    }
    for run in chunks(&v6, MAX_MESSAGE - UPDATE_FIXED - MP_FIXED) {
        let mut attrs = Vec::new();
        let value = mp_value(Family::Ipv6Unicast, None, &run);
        push_attribute(&mut attrs, OPTIONAL, ATTR_MP_UNREACH, &value);
        out.push(encode_update(&[], &attrs, &[]));
    }
    out
}

/// UPDATEs announcing `prefixes` (all of `family`) with the attributes `route`, and the
/// prefixes they carry: all of them, unless the attributes alone nearly fill a message.
pub fn announcements(
    ctx: &UpdateContext,
    family: Family,
    route: &RouteAttributes,
    prefixes: &[IpNet],
) -> (Vec<Vec<u8>>, Vec<IpNet>) {
    let (low, high) = ctx.attributes(route, family);
    let mut out = Vec::new();
    let fixed = match family {
        Family::Ipv4Unicast => UPDATE_FIXED + low.len() + high.len(),
        Family::Ipv6Unicast => UPDATE_FIXED + low.len() + high.len() + MP_FIXED + 1 + 16 + 1,
    };
    let runs = chunks(prefixes, MAX_MESSAGE.saturating_sub(fixed));
    for run in &runs {
        let mut attrs = low.clone();
        match family {
            Family::Ipv4Unicast => {
                attrs.extend_from_slice(&high);
                out.push(encode_update(&[], &attrs, run));
            }
            Family::Ipv6Unicast => {
                let value = mp_value(family, ctx.next_hop_v6, run);
                push_attribute(&mut attrs, OPTIONAL, ATTR_MP_REACH, &value);
                attrs.extend_from_slice(&high);
                out.push(encode_update(&[], &attrs, &[]));
            }
        }
    }
    (out, runs.into_iter().flatten().collect())
}

/// The End-of-RIB marker of a family (RFC 4724 §2).
pub fn end_of_rib(family: Family) -> Vec<u8> {
    match family {
        Family::Ipv4Unicast => encode_update(&[], &[], &[]),
        Family::Ipv6Unicast => {
            let mut attrs = Vec::new();
            push_attribute(
                &mut attrs,
                OPTIONAL,
                ATTR_MP_UNREACH,
                &mp_value(family, None, &[]),
            );
            encode_update(&[], &attrs, &[])
        }
    }
}

/// What one call to [`AdjRibOut::sync`] sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sync {
    pub messages: Vec<Vec<u8>>,
    pub withdrawn: usize,
    pub announced: usize,
    /// Prefixes of a family the session cannot carry (not negotiated, or no next hop).
    pub skipped: usize,
    /// Prefixes whose attributes are too large for one message.
    pub oversized: usize,
}

/// The routes the peer has been sent, as it must now hold them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdjRibOut {
    sent: BTreeMap<IpNet, RouteAttributes>,
}

impl AdjRibOut {
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    pub fn routes(&self) -> &BTreeMap<IpNet, RouteAttributes> {
        &self.sent
    }

    /// Forgets everything (the session went down: the peer dropped our routes).
    pub fn clear(&mut self) {
        self.sent.clear();
    }

    /// Forgets one family, so the next sync re-sends all of it (ROUTE-REFRESH).
    pub fn forget(&mut self, family: Family) {
        self.sent.retain(|p, _| Family::of(p) != family);
    }

    /// The UPDATEs that bring the peer from what it was sent to `desired`, restricted to
    /// `families`; records them as sent.
    pub fn sync(
        &mut self,
        desired: &BTreeMap<IpNet, RouteAttributes>,
        families: &BTreeSet<Family>,
        ctx: &UpdateContext,
    ) -> Sync {
        let carried = |p: &IpNet| {
            let family = Family::of(p);
            families.contains(&family) && ctx.has_next_hop(family)
        };
        let mut result = Sync::default();
        let withdraw: Vec<IpNet> = self
            .sent
            .keys()
            .filter(|p| !desired.contains_key(p) || !carried(p))
            .copied()
            .collect();
        for p in &withdraw {
            self.sent.remove(p);
        }
        result.withdrawn = withdraw.len();
        result.messages = withdrawals(&withdraw);
        let mut groups: BTreeMap<(Family, &RouteAttributes), Vec<IpNet>> = BTreeMap::new();
        for (prefix, attrs) in desired {
            if !carried(prefix) {
                result.skipped += 1;
                continue;
            }
            if self.sent.get(prefix) != Some(attrs) {
                groups
                    .entry((Family::of(prefix), attrs))
                    .or_default()
                    .push(*prefix);
            }
        }
        for ((family, attrs), prefixes) in groups {
            let (messages, sent) = announcements(ctx, family, attrs, &prefixes);
            result.messages.extend(messages);
            result.oversized += prefixes.len() - sent.len();
            result.announced += sent.len();
            for p in sent {
                self.sent.insert(p, attrs.clone());
            }
        }
        result
    }
}
