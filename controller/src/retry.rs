//! Which Services must be written again, and when: a failed write is retried with exponential
//! backoff until it lands, so the allocator's hold and a Service's status never disagree for
//! longer than the longest backoff. Pure (time is passed in).

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// Retries due by time, one per Service key.
#[derive(Debug)]
pub struct Retries {
    base: Duration,
    max: Duration,
    by_key: HashMap<String, (u32, Instant)>,
    by_due: BTreeSet<(Instant, String)>,
}

impl Retries {
    /// Backoff from `base`, doubling per failure, never above `max` (plus up to a quarter of
    /// jitter, so that Services that failed together do not retry in lockstep).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            by_key: HashMap::new(),
            by_due: BTreeSet::new(),
        }
    }

    /// A write for `key` failed at `now`: schedules the next attempt and returns its delay.
    pub fn failed(&mut self, key: &str, now: Instant) -> Duration {
        let attempts = match self.by_key.remove(key) {
            Some((attempts, due)) => {
                self.by_due.remove(&(due, key.to_owned()));
                attempts.saturating_add(1)
            }
            None => 1,
        };
        let delay = self.delay(key, attempts);
        let due = now + delay;
        self.by_key.insert(key.to_owned(), (attempts, due));
        self.by_due.insert((due, key.to_owned()));
        delay
    }

    /// `key` needs no retry (written, deleted, or nothing to write).
    pub fn forget(&mut self, key: &str) {
        if let Some((_, due)) = self.by_key.remove(key) {
            self.by_due.remove(&(due, key.to_owned()));
        }
    }

    /// When the next retry is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.by_due.first().map(|(due, _)| *due)
    }

    /// The keys due at `now`, earliest first. They stay known (with their failure count) until
    /// the caller calls [`Retries::failed`] or [`Retries::forget`] for each; until then they are
    /// parked at the longest backoff, so a caller that does neither cannot spin.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_due.first()
            && *at <= now
        {
            if let Some((_, key)) = self.by_due.pop_first() {
                due.push(key);
            }
        }
        for key in &due {
            if let Some(entry) = self.by_key.get_mut(key) {
                entry.1 = now + self.max;
                self.by_due.insert((entry.1, key.clone()));
            }
        }
        due
    }

    /// How many Services wait for a retry.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn delay(&self, key: &str, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(20);
        let backoff = self.base.saturating_mul(1 << exponent).min(self.max);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (key, attempts).hash(&mut hasher);
        // 0..=25 % more, the same for the same key and attempt.
        let percent = u32::try_from(hasher.finish() % 26).unwrap_or(0);
        backoff + backoff * percent / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(10);

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_bounded_jitter() {
        let mut r = Retries::new(BASE, MAX);
        let now = Instant::now();
        let mut last = Duration::ZERO;
        for attempt in 1..=12u32 {
            let d = r.failed("ns/web", now);
            let floor = BASE.saturating_mul(1 << (attempt - 1)).min(MAX);
            assert!(
                d >= floor && d <= floor + floor / 4,
                "attempt {attempt}: {d:?}"
            );
            assert!(d + d / 4 >= last, "never much shorter than before");
            last = d;
        }
        assert!(last <= MAX + MAX / 4);
    }

    #[test]
    fn due_keys_come_out_in_time_order_and_only_when_due() {
        let mut r = Retries::new(BASE, MAX);
        let t0 = Instant::now();
        r.failed("a", t0 + Duration::from_secs(2));
        r.failed("b", t0);
        assert_eq!(r.take_due(t0), Vec::<String>::new());
        let next = r.next_due().unwrap();
        assert!(next > t0 && next <= t0 + BASE + BASE / 4);
        assert_eq!(r.take_due(t0 + Duration::from_secs(1)), ["b"]);
        assert_eq!(r.take_due(t0 + Duration::from_secs(3)), ["a"]);
        assert_eq!(
            r.len(),
            2,
            "taken keys stay known until written or forgotten"
        );
    }

    #[test]
    fn a_taken_key_is_parked_until_the_caller_decides() {
        let mut r = Retries::new(BASE, MAX);
        let t0 = Instant::now();
        r.failed("a", t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.take_due(t1), ["a"]);
        assert_eq!(r.next_due(), Some(t1 + MAX));
        // Failing again counts as the second failure.
        let d = r.failed("a", t1);
        assert!(d >= BASE * 2);
        r.forget("a");
        assert!(r.is_empty());
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn forgetting_resets_the_backoff() {
        let mut r = Retries::new(BASE, MAX);
        let t0 = Instant::now();
        for _ in 0..5 {
            r.failed("a", t0);
        }
        r.forget("a");
        assert!(r.failed("a", t0) <= BASE + BASE / 4);
    }
}
