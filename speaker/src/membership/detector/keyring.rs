//! The keys one detector signs and verifies with: the [`Keys`] from the Secret, plus, when the
//! last change replaced the send key, the one signed with before, for [`KEY_GRACE`] (a peer that
//! has not read the new Secret yet may still send with it, when the Secret was rewritten in one
//! step rather than rotated). A later change that keeps the send key ends that grace: the Secret
//! says which keys to accept (a rotation's last phase drops the old key at once).
//!
//! Keys are compared by a SHA-256 fingerprint; the raw bytes are not kept here.

use std::time::Instant;

use ring::{digest, hmac};

use super::KEY_GRACE;
use crate::membership::keys::Keys;

struct Entry {
    fingerprint: digest::Digest,
    key: hmac::Key,
}

impl Entry {
    fn of(bytes: &[u8]) -> Entry {
        Entry {
            fingerprint: digest::digest(&digest::SHA256, bytes),
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    fn same(&self, other: &Entry) -> bool {
        self.fingerprint.as_ref() == other.fingerprint.as_ref()
    }
}

/// The signing key, the other accepted keys, and the retired signing key with its deadline.
pub(super) struct Keyring {
    signing: Entry,
    others: Vec<Entry>,
    retired: Option<(Entry, Instant)>,
}

impl Keyring {
    pub(super) fn new(keys: &Keys) -> Keyring {
        Keyring {
            signing: Entry::of(keys.send()),
            others: keys.accepted().skip(1).map(Entry::of).collect(),
            retired: None,
        }
    }

    /// Takes a new set at `now`: signs with its send key and accepts every key of it; when the
    /// send key changed, the one signed with until now stays accepted for [`KEY_GRACE`].
    pub(super) fn set(&mut self, now: Instant, keys: &Keys) {
        let new = Keyring::new(keys);
        let old = std::mem::replace(self, new);
        if !old.signing.same(&self.signing) {
            self.retired = Some((old.signing, now + KEY_GRACE));
        }
    }

    /// The retired key, unless the current set accepts it anyway.
    fn retired_extra(&self) -> Option<&Entry> {
        let (entry, _) = self.retired.as_ref()?;
        let accepted = self.signing.same(entry) || self.others.iter().any(|o| o.same(entry));
        (!accepted).then_some(entry)
    }

    /// Forgets the retired key once its grace is over.
    pub(super) fn expire(&mut self, now: Instant) {
        if self
            .retired
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.retired = None;
        }
    }

    /// The key to sign with.
    pub(super) fn signing(&self) -> &hmac::Key {
        &self.signing.key
    }

    /// The keys to verify with, the signing key first.
    pub(super) fn verifying(&self) -> impl Iterator<Item = &hmac::Key> {
        std::iter::once(&self.signing)
            .chain(&self.others)
            .chain(self.retired_extra())
            .map(|entry| &entry.key)
    }

    /// How many keys are accepted now.
    pub(super) fn accepted(&self) -> usize {
        1 + self.others.len() + usize::from(self.retired_extra().is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn verifies(ring: &Keyring, key: &[u8]) -> bool {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), b"message");
        ring.verifying()
            .any(|k| hmac::verify(k, b"message", tag.as_ref()).is_ok())
    }

    fn signs_with(ring: &Keyring, key: &[u8]) -> bool {
        let tag = hmac::sign(ring.signing(), b"message");
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, key),
            b"message",
            tag.as_ref(),
        )
        .is_ok()
    }

    #[test]
    fn a_rotation_never_leaves_a_key_in_use_unaccepted() {
        let t0 = Instant::now();
        let mut ring = Keyring::new(&Keys::single(*b"A"));
        // Phase 1: accept B, still send A.
        ring.set(t0, &Keys::new(b"A".to_vec(), [b"B".to_vec()]));
        assert!(signs_with(&ring, b"A") && verifies(&ring, b"A") && verifies(&ring, b"B"));
        assert_eq!(ring.accepted(), 2);
        // Phase 2: send B, accept A as the previous key (no grace needed, none kept).
        ring.set(t0, &Keys::new(b"B".to_vec(), [b"A".to_vec()]));
        assert!(signs_with(&ring, b"B") && verifies(&ring, b"A"));
        assert_eq!(ring.accepted(), 2);
        // Phase 3: only B, at once (the grace of A ends with this change).
        ring.set(t0, &Keys::single(*b"B"));
        assert!(signs_with(&ring, b"B") && !verifies(&ring, b"A"));
        assert_eq!(ring.accepted(), 1);
    }

    #[test]
    fn a_key_rewritten_in_one_step_keeps_the_old_one_for_the_grace_only() {
        let t0 = Instant::now();
        let mut ring = Keyring::new(&Keys::single(*b"A"));
        ring.set(t0, &Keys::single(*b"B"));
        assert!(signs_with(&ring, b"B") && verifies(&ring, b"A"));
        assert_eq!(ring.accepted(), 2);
        ring.expire(t0 + KEY_GRACE - Duration::from_millis(1));
        assert!(verifies(&ring, b"A"));
        ring.expire(t0 + KEY_GRACE);
        assert!(!verifies(&ring, b"A") && verifies(&ring, b"B"));
        assert!(!verifies(&ring, b"C"));
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(vec![b"A".to_vec(), b"B".to_vec(), b"C".to_vec()])
    }

    fn keys() -> impl Strategy<Value = Keys> {
        (key(), prop::collection::vec(key(), 0..3))
            .prop_map(|(send, others)| Keys::new(send, others))
    }

    proptest! {
        /// After any sequence of sets, within the grace: the ring signs with the last set's send
        /// key, accepts every key of the last set and, if the last set changed the send key, the
        /// one before; nothing else.
        #[test]
        fn the_ring_accepts_exactly_the_last_set_and_the_key_signed_with_before(
            sets in prop::collection::vec(keys(), 1..6),
        ) {
            let t0 = Instant::now();
            let mut ring = Keyring::new(&sets[0]);
            for set in &sets[1..] {
                ring.set(t0, set);
            }
            let last = sets.last().unwrap();
            prop_assert!(signs_with(&ring, last.send()));
            let mut expected: Vec<&[u8]> = last.accepted().collect();
            if let [.., before, _] = sets.as_slice()
                && before.send() != last.send()
                && !expected.contains(&before.send())
            {
                expected.push(before.send());
            }
            for k in [b"A", b"B", b"C"] {
                prop_assert_eq!(verifies(&ring, k), expected.contains(&&k[..]), "key {:?}", k);
            }
            prop_assert_eq!(ring.accepted(), expected.len());
        }
    }
}
