//! Address pools: names, entries, overlap, and `allocateTo`.

use std::collections::HashMap;

use crate::address::{AddressRange, IpFamily};
use crate::v1alpha1::AddressPool;

use super::Report;
use super::names::{DNS1123_LABEL, is_dns1123_label};
use super::selectors::check_list;

/// What later checks need to know about the pools.
#[derive(Debug, Default)]
pub(super) struct PoolIndex<'a> {
    /// Index of each validly named pool.
    pub by_name: HashMap<&'a str, usize>,
    /// Per pool and family, the entry whose summarizing CIDRs reach the longest prefix, with
    /// that prefix: no aggregate may be shorter. `None` when the pool has no address of the family.
    pub most_specific: Vec<[Option<(u8, usize)>; 2]>,
}

impl PoolIndex<'_> {
    /// The most specific entry of `family` in pool `pool`.
    pub fn most_specific(&self, pool: usize, family: IpFamily) -> Option<(u8, usize)> {
        self.most_specific
            .get(pool)
            .and_then(|f| f[family_slot(family)])
    }

    /// Whether pool `pool` holds IPv6 addresses.
    pub fn has_v6(&self, pool: usize) -> bool {
        self.most_specific(pool, IpFamily::V6).is_some()
    }
}

fn family_slot(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

pub(super) fn check<'a>(report: &mut Report, pools: &'a [AddressPool]) -> PoolIndex<'a> {
    let by_name = report.names("spec.addressPools", pools, |p| p.name.as_str());
    let mut most_specific = vec![[None, None]; pools.len()];
    // (range, pool, entry) of every parsed entry, for the overlap sweep.
    let mut ranges: Vec<(AddressRange, usize, usize)> = Vec::new();

    for (i, pool) in pools.iter().enumerate() {
        let path = format!("spec.addressPools[{i}]");
        if pool.addresses.is_empty() {
            report.add(
                format!("{path}.addresses"),
                &pool.addresses,
                "must list at least one CIDR or range",
            );
        }
        for (j, entry) in pool.addresses.iter().enumerate() {
            // An entry of addresses no Service can have is rejected like one that does not parse.
            let parsed = AddressRange::parse(entry)
                .map_err(|e| e.to_string())
                .and_then(|range| unassignable(&range).map_or(Ok(range), Err));
            match parsed {
                Ok(range) => {
                    let prefix = range.longest_prefix();
                    let slot = &mut most_specific[i][family_slot(range.family())];
                    if slot.is_none_or(|(p, _)| prefix > p) {
                        *slot = Some((prefix, j));
                    }
                    ranges.push((range, i, j));
                }
                Err(reason) => report.add(format!("{path}.addresses[{j}]"), entry, reason),
            }
        }
        if let Some(to) = &pool.allocate_to {
            let here = format!("{path}.allocateTo");
            for (k, ns) in to.namespaces.iter().enumerate() {
                if !is_dns1123_label(ns) {
                    report.add(format!("{here}.namespaces[{k}]"), ns, DNS1123_LABEL);
                } else if to.namespaces[..k].contains(ns) {
                    report.add(format!("{here}.namespaces[{k}]"), ns, "listed twice");
                }
            }
            check_list(
                report,
                &format!("{here}.namespaceSelectors"),
                &to.namespace_selectors,
            );
            check_list(
                report,
                &format!("{here}.serviceSelectors"),
                &to.service_selectors,
            );
        }
    }

    check_overlaps(report, pools, &mut ranges);
    PoolIndex {
        by_name,
        most_specific,
    }
}

/// Why a range holds addresses that can never be a Service IP, if it does.
fn unassignable(range: &AddressRange) -> Option<String> {
    let blocks = range.reserved_blocks();
    if let [block] = blocks.as_slice()
        && let Some(v4) = block.embedded_ipv4(range)
    {
        // IPv4 written as IPv6: name the IPv4 range that was most likely meant.
        let hint = if v4.reserved_blocks().is_empty() {
            let cidrs = v4.cidrs();
            let v4 = match cidrs.as_slice() {
                [cidr] => cidr.to_string(),
                _ => v4.to_string(),
            };
            format!("; write the IPv4 range {v4} instead")
        } else {
            String::new()
        };
        return Some(format!(
            "{} IPv6 addresses cannot be assigned{hint}",
            block.purpose
        ));
    }
    if blocks.is_empty() {
        return None;
    }
    let named: Vec<String> = blocks
        .iter()
        .map(|b| format!("{} ({})", b.block, b.purpose))
        .collect();
    Some(format!(
        "includes addresses that can never be a Service IP: {}",
        named.join(", ")
    ))
}

/// Reports every entry that shares an address with an earlier one, in O(n log n): sort by start
/// and sweep, remembering the entry that reaches furthest so far.
fn check_overlaps(
    report: &mut Report,
    pools: &[AddressPool],
    ranges: &mut [(AddressRange, usize, usize)],
) {
    ranges.sort_by_key(|(r, pool, entry)| (r.family(), r.start_bits(), *pool, *entry));
    let mut found: Vec<((usize, usize), (usize, usize))> = Vec::new();
    let mut reach: Option<(AddressRange, usize, usize)> = None;
    for &(range, pool, entry) in ranges.iter() {
        if let Some((far, fp, fe)) = reach
            && far.overlaps(&range)
        {
            // Name the one written later as the offender, the other as what it overlaps.
            let (a, b) = if (fp, fe) < (pool, entry) {
                ((fp, fe), (pool, entry))
            } else {
                ((pool, entry), (fp, fe))
            };
            found.push((b, a));
        }
        let extends = reach.is_none_or(|(far, _, _)| {
            far.family() != range.family() || range.end_bits() > far.end_bits()
        });
        if extends {
            reach = Some((range, pool, entry));
        }
    }
    found.sort();
    for ((pool, entry), (other_pool, other_entry)) in found {
        report.add(
            format!("spec.addressPools[{pool}].addresses[{entry}]"),
            &pools[pool].addresses[entry],
            format!(
                "overlaps spec.addressPools[{other_pool}].addresses[{other_entry}] ({}); no address may be in two pools or twice in one",
                pools[other_pool].addresses[other_entry]
            ),
        );
    }
}
