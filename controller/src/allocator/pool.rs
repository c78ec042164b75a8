//! One address pool as the allocator holds it: its ranges, who may use it, and its free space.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_api::address::{AddressRange, IpFamily, from_u128, to_u128};
use ferrolb_api::selector::list_matches;
use ferrolb_api::v1alpha1::{AddressPool, AllocateTo};

use super::free::{FreeSet, buggy_count, is_buggy};

/// Index of a family in per-family arrays.
pub(super) fn slot(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

/// A pool ready to hand out addresses.
#[derive(Clone, Debug)]
pub struct Pool {
    name: String,
    auto_assign: bool,
    avoid_buggy_ips: bool,
    allocate_to: Option<AllocateTo>,
    ranges: Vec<AddressRange>,
    free: [FreeSet; 2],
    capacity: [u128; 2],
    in_use: [u128; 2],
}

impl Pool {
    /// Builds a pool from its (validated) spec; entries that do not parse are skipped, as
    /// validation has already reported them.
    pub fn new(spec: &AddressPool) -> Self {
        let ranges: Vec<AddressRange> = spec
            .addresses
            .iter()
            .filter_map(|a| AddressRange::parse(a).ok())
            .collect();
        let mut free = [FreeSet::default(), FreeSet::default()];
        let mut capacity = [0u128; 2];
        for r in &ranges {
            let s = slot(r.family());
            free[s].insert_range(r.start_bits(), r.end_bits());
            let buggy = if spec.avoid_buggy_ips && r.family() == IpFamily::V4 {
                buggy_count(r.start_bits(), r.end_bits())
            } else {
                0
            };
            capacity[s] = capacity[s].saturating_add(r.len() - buggy);
        }
        Self {
            name: spec.name.clone(),
            auto_assign: spec.auto_assign,
            avoid_buggy_ips: spec.avoid_buggy_ips,
            allocate_to: spec.allocate_to.clone(),
            ranges,
            free,
            capacity,
            in_use: [0, 0],
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether Services that name no pool may get addresses from it.
    pub fn auto_assign(&self) -> bool {
        self.auto_assign
    }

    /// `allocateTo.priority` when the pool has an `allocateTo`.
    pub fn allocate_to(&self) -> Option<&AllocateTo> {
        self.allocate_to.as_ref()
    }

    /// Whether the pool has addresses of `family`.
    pub fn has_family(&self, family: IpFamily) -> bool {
        self.capacity[slot(family)] > 0
    }

    /// Whether `ip` is one of the pool's usable addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let buggy =
            self.avoid_buggy_ips && IpFamily::of(ip) == IpFamily::V4 && is_buggy(to_u128(ip));
        !buggy && self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether a Service in a namespace with `namespace_labels` and with `labels` may use the pool.
    pub fn admits(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let Some(to) = &self.allocate_to else {
            return true;
        };
        let restricts_namespace = !to.namespaces.is_empty() || !to.namespace_selectors.is_empty();
        let namespace_ok = !restricts_namespace
            || to.namespaces.iter().any(|n| n == namespace)
            || (!to.namespace_selectors.is_empty()
                && list_matches(&to.namespace_selectors, namespace_labels));
        namespace_ok && list_matches(&to.service_selectors, labels)
    }

    /// The lowest free address of `family`.
    pub fn first_free(&self, family: IpFamily) -> Option<IpAddr> {
        let avoid = self.avoid_buggy_ips && family == IpFamily::V4;
        self.free[slot(family)]
            .first(avoid)
            .map(|bits| from_u128(family, bits))
    }

    /// Marks `ip` used; false when it was not free.
    pub fn take(&mut self, ip: IpAddr) -> bool {
        let s = slot(IpFamily::of(ip));
        let taken = self.free[s].remove(to_u128(ip));
        if taken {
            self.in_use[s] += 1;
        }
        taken
    }

    /// Marks `ip` free again.
    pub fn put(&mut self, ip: IpAddr) {
        let s = slot(IpFamily::of(ip));
        if !self.free[s].contains(to_u128(ip)) {
            self.free[s].insert(to_u128(ip));
            self.in_use[s] = self.in_use[s].saturating_sub(1);
        }
    }

    /// (capacity, addresses in use) of `family`.
    pub fn usage(&self, family: IpFamily) -> (u128, u128) {
        let s = slot(family);
        (self.capacity[s], self.in_use[s])
    }
}
