//! The allocator's side of a process's memory. glibc keeps what a thread frees in that thread's
//! arena for reuse, so after a burst (the first list of 10,000 Services, decoded page by page on
//! every worker thread) the resident set stays at the burst's peak although the heap in use is far
//! smaller. [`heap`] tells the two apart (served as `ferrolb_heap_in_use_bytes` and
//! `ferrolb_heap_free_bytes`); [`release_free_memory`] hands the free pages back to the kernel,
//! and a [`Trimmer`] does so whenever the free heap has grown by a step.
//! On other C libraries both do nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The heap as the allocator counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heap {
    /// Bytes in allocated blocks, in the arenas and mapped on their own.
    pub in_use: u64,
    /// Bytes of free blocks the allocator keeps (resident until released or reused).
    pub free: u64,
}

/// The heap now, if the C library can tell (glibc).
pub fn heap() -> Option<Heap> {
    sys::heap()
}

/// Returns the free memory of every arena to the kernel (glibc's `malloc_trim(0)`); true if some
/// was. It walks every arena's free blocks under the arena's lock (not measured here): meant for
/// after a burst or now and then, not for a hot loop.
pub fn release_free_memory() -> bool {
    sys::release()
}

/// Releases free memory when the allocator has gathered a lot more of it since the last release:
/// cheap enough to call every few seconds (one look at the counters when nothing grew).
#[derive(Debug, Default)]
pub struct Trimmer {
    /// The free heap after the last release (or the least seen since, as it is reused).
    baseline: u64,
}

impl Trimmer {
    /// How much the free heap must grow before it is released again.
    pub const STEP: u64 = 8 << 20;

    /// Releases the free memory if it grew by [`Self::STEP`] since the last release; returns
    /// the free heap then released (its resident part given back).
    pub fn tick(&mut self) -> Option<u64> {
        let heap = heap()?;
        self.trim_for(heap.free, release_free_memory)
    }

    fn trim_for(&mut self, free: u64, release: impl FnOnce() -> bool) -> Option<u64> {
        if free < self.baseline {
            // Free blocks were reused: what is freed from now on counts from here.
            self.baseline = free;
            return None;
        }
        if free - self.baseline < Self::STEP {
            return None;
        }
        // Free blocks stay free after a release (their pages go back to the kernel), so the
        // baseline is what is free now.
        self.baseline = free;
        release();
        Some(free)
    }
}

/// Serves [`heap`] on every scrape.
#[derive(Debug, Default)]
pub(crate) struct HeapCollector;

impl Collector for HeapCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(heap) = heap() else {
            return Ok(());
        };
        let gauges = [
            (
                "heap_in_use",
                "Heap in allocated blocks, as the C library's allocator counts it",
                heap.in_use,
            ),
            (
                "heap_free",
                "Heap the allocator keeps free for reuse (part of the resident set until reused or released)",
                heap.free,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric =
                encoder.encode_descriptor(name, help, Some(&Unit::Bytes), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod sys {
    use super::Heap;

    pub(super) fn heap() -> Option<Heap> {
        // SAFETY: mallinfo2 takes no arguments and only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        let bytes = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Some(Heap {
            in_use: bytes(info.uordblks).saturating_add(bytes(info.hblkhd)),
            free: bytes(info.fordblks),
        })
    }

    pub(super) fn release() -> bool {
        // SAFETY: malloc_trim only returns free memory; no pointer the program holds changes.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod sys {
    use super::Heap;

    pub(super) fn heap() -> Option<Heap> {
        None
    }

    pub(super) fn release() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_blocks_count_as_free_not_in_use() {
        // Small blocks (below the mmap threshold, so they come from an arena); every other one
        // is freed, so no freed block can merge into the arena's top and be trimmed at once.
        let mut blocks: Vec<Option<Vec<u8>>> =
            (0..40_000).map(|i| Some(vec![i as u8; 1000])).collect();
        let during = heap().unwrap();
        assert!(during.in_use >= 40_000 * 1000, "{during:?}");
        for block in blocks.iter_mut().step_by(2) {
            *block = None;
        }
        let after = heap().unwrap();
        // Other tests allocate meanwhile, but not megabytes.
        assert!(
            after.in_use + 15_000 * 1000 <= during.in_use,
            "{during:?} → {after:?}"
        );
        assert!(
            after.free >= during.free + 15_000 * 1000,
            "{during:?} → {after:?}"
        );
        // What a release changes is the resident set, which other tests move too: here it must
        // only work.
        release_free_memory();
        drop(blocks);
    }

    #[test]
    fn the_trimmer_releases_only_what_grew_by_a_step_since_the_last_release() {
        const MIB: u64 = 1 << 20;
        let mut t = Trimmer::default();
        let mut released = 0;
        let mut tick = |t: &mut Trimmer, free: u64| {
            t.trim_for(free * MIB, || {
                released += 1;
                true
            })
            .map(|f| f / MIB)
        };
        assert_eq!(tick(&mut t, 3), None, "under a step from nothing");
        assert_eq!(tick(&mut t, 8), Some(8), "a step from nothing");
        assert_eq!(tick(&mut t, 15), None, "under a step since the release");
        assert_eq!(tick(&mut t, 16), Some(16));
        assert_eq!(tick(&mut t, 16), None, "released already: nothing grew");
        assert_eq!(tick(&mut t, 4), None, "reused");
        assert_eq!(tick(&mut t, 11), None, "under a step since the reuse");
        assert_eq!(tick(&mut t, 12), Some(12), "a step since the reuse");
        assert_eq!(released, 3);
    }

    #[test]
    fn the_metrics_name_both_figures() {
        let mut registry = prometheus_client::registry::Registry::with_prefix("ferrolb");
        registry.register_collector(Box::new(HeapCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if heap().is_some() {
            assert!(text.contains("ferrolb_heap_in_use_bytes "), "{text}");
            assert!(text.contains("ferrolb_heap_free_bytes "), "{text}");
            assert!(
                text.contains("# UNIT ferrolb_heap_in_use_bytes bytes"),
                "{text}"
            );
        }
    }
}
