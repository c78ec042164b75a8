//! Dissemination: how news about members travels. Dead notices and their repeats, refutation,
//! greetings of silent peers (Unknown or Dead), and anti-entropy of the dead set (digest in every heartbeat,
//! Sync on a persistent mismatch). The failure detection itself is in the parent module.

use std::time::{Duration, Instant};

use super::{Detector, Outgoing};
use crate::membership::PeerState;
use crate::membership::wire::{self, Body, Message, Rumor, SyncEntry};

/// A declarer repeats a Dead notice this many times, a quarter interval apart (loss tolerance;
/// a quarter so that a lost notice costs 25 ms of detection, not 100).
pub(super) const DEAD_REPEATS: u32 = 2;
/// Consecutive digest mismatches with a neighbour before we send it our dead set.
const SYNC_AFTER_MISMATCHES: u8 = 3;
/// At most one Sync per peer this often.
const SYNC_MIN_GAP: Duration = Duration::from_secs(1);
/// First retry of a greeting to a peer that stays Unknown or Dead; doubles up to [`GREETING_MAX`].
pub(super) const GREETING_RETRY: Duration = Duration::from_millis(500);
/// Longest interval between greetings of a silent peer.
const GREETING_MAX: Duration = Duration::from_secs(30);

/// A node's contribution to the dead-set digest (XOR of these: order-independent, O(1) updates).
pub(super) fn digest_of(node: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in node.as_bytes() {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

impl Detector {
    /// What a message says about other members.
    pub(super) fn handle_gossip(&mut self, now: Instant, msg: Message, out: &mut Vec<Outgoing>) {
        match msg.body {
            Body::Dead { node, incarnation } => {
                self.apply_dead(now, &node, incarnation, out);
            }
            Body::Suspect { node, incarnation } => {
                let Some(peer) = self.peers.get_mut(&node) else {
                    return;
                };
                if peer.state == PeerState::Alive && incarnation >= peer.incarnation {
                    peer.suspected_by.insert(msg.sender, now);
                    self.try_declare(now, &node, out);
                }
            }
            Body::Sync { reply, entries } => {
                let mut corrections = Vec::new();
                for entry in entries {
                    match entry.rumor {
                        Rumor::Dead => {
                            if let Some(incarnation) =
                                self.apply_dead(now, &entry.node, entry.incarnation, out)
                            {
                                corrections.push(SyncEntry {
                                    node: entry.node,
                                    rumor: Rumor::Alive,
                                    incarnation,
                                });
                            }
                        }
                        Rumor::Alive => {
                            let Some(peer) = self.peers.get_mut(&entry.node) else {
                                continue;
                            };
                            if peer.state == PeerState::Dead && entry.incarnation > peer.incarnation
                            {
                                peer.last_heard = Some(now);
                                self.set_state(
                                    now,
                                    &entry.node,
                                    PeerState::Alive,
                                    entry.incarnation,
                                );
                            }
                        }
                    }
                }
                if reply && !corrections.is_empty() {
                    self.send_entries(now, &msg.sender, false, corrections, out);
                }
            }
            _ => {}
        }
    }

    /// Applies "`node` died at `incarnation`". Returns the incarnation we know it alive at when
    /// the rumour is stale (or is about us), so the caller can correct the rumour's source.
    pub(super) fn apply_dead(
        &mut self,
        now: Instant,
        node: &str,
        incarnation: u64,
        out: &mut Vec<Outgoing>,
    ) -> Option<u64> {
        if node == self.node {
            if incarnation >= self.incarnation {
                // Refute: a bigger incarnation outranks the death everywhere.
                self.incarnation = incarnation + 1;
                tracing::info!(
                    incarnation = self.incarnation,
                    "declared dead while alive; refuting"
                );
                self.broadcast(now, Body::Alive { reply: false }, out);
            }
            return Some(self.incarnation);
        }
        let peer = self.peers.get_mut(node)?;
        match peer.state {
            PeerState::Dead => {
                peer.incarnation = peer.incarnation.max(incarnation);
                None
            }
            PeerState::Alive | PeerState::Unknown => {
                if incarnation >= peer.incarnation {
                    self.set_state(now, node, PeerState::Dead, incarnation);
                    None
                } else if peer.state == PeerState::Alive {
                    Some(peer.incarnation)
                } else {
                    None
                }
            }
        }
    }

    /// Greets again the silent peers whose retry is due, backing off per peer: the Unknown ones
    /// (never heard from) and the Dead ones. A Dead peer that is in fact alive answers a greeting
    /// either way: with its Alive if it sees us alive, with a Dead notice about us if it buried
    /// us too; the notice makes us refute, and the refutation makes it see us again. Without
    /// this, two speakers that buried each other (say, while their keys differed) would never
    /// send each other anything again: neither pings a peer it sees dead.
    pub(super) fn greet_silent(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let mut due = Vec::new();
        while let Some(first) = self.greetings.first() {
            if first.0 > now {
                break;
            }
            if let Some((at, name)) = self.greetings.pop_first() {
                due.push((at, name));
            }
        }
        let mut to = Vec::new();
        for (at, name) in due {
            let Some(peer) = self.peers.get_mut(&name) else {
                continue;
            };
            if peer.state == PeerState::Alive {
                continue;
            }
            peer.greet_backoff = (peer.greet_backoff * 2).clamp(GREETING_RETRY, GREETING_MAX);
            self.greetings
                .insert((at.max(now) + peer.greet_backoff, name.clone()));
            to.push(name);
        }
        if to.is_empty() {
            return;
        }
        if let Some(bytes) = self.encode(now, Body::Alive { reply: true }) {
            for name in to {
                self.push(out, name, bytes.clone());
            }
        }
    }

    /// Greets `node` again after [`GREETING_RETRY`], its back-off started over (it just became
    /// silent to us: new, or dead).
    pub(super) fn schedule_greeting(&mut self, now: Instant, node: &str) {
        let Some(peer) = self.peers.get_mut(node) else {
            return;
        };
        peer.greet_backoff = Duration::ZERO;
        self.greetings.retain(|(_, name)| name != node);
        self.greetings
            .insert((now + GREETING_RETRY, node.to_owned()));
    }

    pub(super) fn repeat_due(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let due: Vec<(u32, String, u64)> = self
            .repeats
            .iter()
            .filter(|(at, ..)| *at <= now)
            .map(|(_, left, node, inc)| (*left, node.clone(), *inc))
            .collect();
        self.repeats.retain(|(at, ..)| *at > now);
        for (left, node, incarnation) in due {
            let still = self
                .peers
                .get(&node)
                .is_some_and(|p| p.state == PeerState::Dead && p.incarnation == incarnation);
            if still {
                self.broadcast(
                    now,
                    Body::Dead {
                        node: node.clone(),
                        incarnation,
                    },
                    out,
                );
                if left > 1 {
                    self.repeats
                        .push((now + self.repeat_gap(), left - 1, node, incarnation));
                }
            }
        }
    }

    pub(super) fn repeat_gap(&self) -> Duration {
        (self.interval / 4).max(Duration::from_millis(1))
    }

    pub(super) fn send_sync(&mut self, now: Instant, to: &str, out: &mut Vec<Outgoing>) {
        let entries: Vec<SyncEntry> = self
            .peers
            .iter()
            .filter(|(_, p)| p.state == PeerState::Dead)
            .map(|(node, p)| SyncEntry {
                node: node.clone(),
                rumor: Rumor::Dead,
                incarnation: p.incarnation,
            })
            .collect();
        if !entries.is_empty() {
            self.send_entries(now, to, true, entries, out);
        }
    }

    /// Sends `entries` as Sync messages of at most [`wire::MAX_DATAGRAM`] bytes each.
    pub(super) fn send_entries(
        &mut self,
        now: Instant,
        to: &str,
        reply: bool,
        entries: Vec<SyncEntry>,
        out: &mut Vec<Outgoing>,
    ) {
        let overhead = wire::sync_overhead(&self.node);
        let mut chunk = Vec::new();
        let mut size = overhead;
        for entry in entries {
            let len = wire::sync_entry_len(&entry.node);
            if size + len > wire::MAX_DATAGRAM && !chunk.is_empty() {
                self.send(
                    now,
                    to,
                    Body::Sync {
                        reply,
                        entries: std::mem::take(&mut chunk),
                    },
                    out,
                );
                size = overhead;
            }
            size += len;
            chunk.push(entry);
        }
        if !chunk.is_empty() {
            self.send(
                now,
                to,
                Body::Sync {
                    reply,
                    entries: chunk,
                },
                out,
            );
        }
    }

    /// Compares a neighbour's dead-set digest with ours; after [`SYNC_AFTER_MISMATCHES`] in a row
    /// sends it our dead set.
    pub(super) fn check_digest(&mut self, now: Instant, msg: &Message, out: &mut Vec<Outgoing>) {
        let digest = self.digest;
        let Some(peer) = self.peers.get_mut(&msg.sender) else {
            return;
        };
        if msg.digest == digest {
            peer.digest_mismatches = 0;
            return;
        }
        peer.digest_mismatches = peer.digest_mismatches.saturating_add(1);
        let due = peer
            .last_sync
            .is_none_or(|at| now.saturating_duration_since(at) >= SYNC_MIN_GAP);
        if peer.digest_mismatches >= SYNC_AFTER_MISMATCHES && due {
            peer.digest_mismatches = 0;
            peer.last_sync = Some(now);
            self.send_sync(now, &msg.sender, out);
        }
    }
}
