//! The free addresses of one family of a pool, as ordered disjoint intervals.
//!
//! Memory grows with fragmentation (the number of holes the assignments punch), never with the size
//! of the pool: a /64 costs one interval, like a /29. Every operation is O(log n).

use std::collections::BTreeMap;

/// Disjoint, non-adjacent, inclusive intervals of free addresses (as integers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeSet {
    /// start → end (inclusive).
    intervals: BTreeMap<u128, u128>,
}

impl FreeSet {
    /// Adds `start..=end`, merging with neighbours. The range may overlap free space already.
    pub fn insert_range(&mut self, mut start: u128, mut end: u128) {
        // Absorb an interval that starts before `start` and touches it.
        if let Some((&s, &e)) = self.intervals.range(..=start).next_back()
            && e.saturating_add(1) >= start
        {
            start = s;
            end = end.max(e);
        }
        // Absorb intervals that start inside or right after.
        loop {
            let next = self
                .intervals
                .range(start..)
                .next()
                .map(|(&s, &e)| (s, e))
                .filter(|&(s, _)| s <= end.saturating_add(1));
            let Some((s, e)) = next else { break };
            self.intervals.remove(&s);
            end = end.max(e);
        }
        self.intervals.insert(start, end);
    }

    /// Makes `addr` free again.
    pub fn insert(&mut self, addr: u128) {
        self.insert_range(addr, addr);
    }

    /// Takes `addr` out of the free set; false when it was not free.
    pub fn remove(&mut self, addr: u128) -> bool {
        let Some((&s, &e)) = self.intervals.range(..=addr).next_back() else {
            return false;
        };
        if addr > e {
            return false;
        }
        self.intervals.remove(&s);
        if s < addr {
            self.intervals.insert(s, addr - 1);
        }
        if addr < e {
            self.intervals.insert(addr + 1, e);
        }
        true
    }

    /// Whether `addr` is free.
    pub fn contains(&self, addr: u128) -> bool {
        self.intervals
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, &e)| addr <= e)
    }

    /// The lowest free address, skipping IPv4 addresses ending in .0 and .255 when asked.
    pub fn first(&self, avoid_buggy: bool) -> Option<u128> {
        self.intervals.iter().find_map(|(&start, &end)| {
            let candidate = if avoid_buggy {
                next_non_buggy(start)
            } else {
                start
            };
            (candidate <= end).then_some(candidate)
        })
    }

    /// Number of intervals (the fragmentation).
    #[cfg(test)]
    pub fn interval_count(&self) -> usize {
        self.intervals.len()
    }
}

/// Whether an IPv4 address (as an integer) ends in .0 or .255.
pub fn is_buggy(addr: u128) -> bool {
    matches!(addr & 0xff, 0 | 0xff)
}

/// The first address at or after `addr` that does not end in .0 or .255.
fn next_non_buggy(addr: u128) -> u128 {
    match addr & 0xff {
        0 => addr + 1,
        0xff => addr + 2,
        _ => addr,
    }
}

/// How many addresses in `start..=end` end in .0 or .255.
pub fn buggy_count(start: u128, end: u128) -> u128 {
    // Addresses ≤ n that end in `r`.
    let upto = |n: u128, r: u128| if n < r { 0 } else { (n - r) / 256 + 1 };
    let below = |r: u128| if start == 0 { 0 } else { upto(start - 1, r) };
    (upto(end, 0) - below(0)) + (upto(end, 255) - below(255))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_whole_slash_64_is_one_interval() {
        let mut free = FreeSet::default();
        free.insert_range(0, (1 << 64) - 1);
        assert_eq!(free.interval_count(), 1);
        assert!(free.remove(0));
        assert_eq!(free.first(false), Some(1));
        assert!(free.remove(5));
        assert_eq!(free.interval_count(), 2);
        free.insert(5);
        free.insert(0);
        assert_eq!(free.interval_count(), 1);
    }

    #[test]
    fn first_skips_buggy_addresses() {
        let mut free = FreeSet::default();
        free.insert_range(0, 255);
        free.insert_range(511, 512);
        assert_eq!(free.first(true), Some(1));
        for a in 1..255 {
            free.remove(a);
        }
        // Left: 0, 255, 511, 512: only .0/.255 and then 512 which is .0 → 513 not free.
        assert_eq!(free.first(true), None);
        free.insert(513);
        assert_eq!(free.first(true), Some(513));
        assert_eq!(free.first(false), Some(0));
    }

    #[test]
    fn buggy_count_matches_a_scan() {
        for (s, e) in [
            (0, 0),
            (0, 255),
            (1, 254),
            (255, 256),
            (10, 1000),
            (256, 511),
        ] {
            let scan = (s..=e).filter(|&a| is_buggy(a)).count() as u128;
            assert_eq!(buggy_count(s, e), scan, "{s}..={e}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Remove(u16),
        Insert(u16),
        InsertRange(u16, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u16>().prop_map(|a| Op::Remove(a % 512)),
            any::<u16>().prop_map(|a| Op::Insert(a % 512)),
            (any::<u16>(), 0u16..40).prop_map(|(a, n)| Op::InsertRange(a % 512, a % 512 + n)),
        ]
    }

    proptest! {
        /// The interval set behaves exactly like a set of addresses, and stays canonical
        /// (disjoint, non-adjacent), so equal sets have equal representations.
        #[test]
        fn behaves_like_a_set(ops in prop::collection::vec(op(), 0..200)) {
            let mut free = FreeSet::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Remove(a) => prop_assert_eq!(free.remove(a.into()), model.remove(&a)),
                    Op::Insert(a) => { free.insert(a.into()); model.insert(a); }
                    Op::InsertRange(s, e) => { free.insert_range(s.into(), e.into()); model.extend(s..=e); }
                }
                let mut prev: Option<u128> = None;
                for (&s, &e) in &free.intervals {
                    prop_assert!(s <= e);
                    if let Some(p) = prev { prop_assert!(s > p + 1, "not canonical"); }
                    prev = Some(e);
                }
            }
            let flat: Vec<u128> = free.intervals.iter().flat_map(|(&s, &e)| s..=e).collect();
            let want: Vec<u128> = model.iter().map(|&a| u128::from(a)).collect();
            prop_assert_eq!(flat, want);
            let first_ok = model.iter().map(|&a| u128::from(a)).find(|&a| !is_buggy(a));
            prop_assert_eq!(free.first(true), first_ok);
        }
    }
}
