//! The sans-I/O failure detector: all protocol decisions, no sockets and no clock. The caller feeds
//! it datagrams ([`Detector::on_message`]) and the time ([`Detector::on_tick`] at
//! [`Detector::next_wakeup`]) and sends the [`Outgoing`] datagrams it returns. The UDP shell in
//! `mod.rs` and the simulation in `sim.rs` drive the same code.
//!
//! See the module documentation of [`super`] for the protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::keys::Keys;
use super::metrics::{DropReason, MembershipMetrics};
use super::wire::{self, Body, Message, WireError};
use super::{Config, PeerState, View};

mod dissemination;
mod keyring;

use dissemination::{DEAD_REPEATS, GREETING_RETRY, digest_of};
use keyring::Keyring;

/// Messages whose timestamp is further than this from our clock are dropped as `stale`. Replays
/// are otherwise caught by the per-sender (incarnation, sequence) check; this window bounds what an
/// attacker can replay to a receiver that restarted and forgot those counters.
pub const MAX_SKEW: Duration = Duration::from_secs(5);
/// After the send key changed, messages signed with the one before are accepted this long, or
/// until the keys change again (on top of the keys the Secret lists: see [`super::keys`]).
pub const KEY_GRACE: Duration = Duration::from_secs(120);
/// Monitors that must suspect a member before it is declared dead (fewer if it has fewer).
const AGREEMENT: usize = 2;

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination node name (the shell maps it to an address).
    pub to: String,
    /// The signed datagram.
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct Peer {
    state: PeerState,
    /// Highest incarnation known for it (the dead one while Dead).
    incarnation: u64,
    last_heard: Option<Instant>,
    /// Last accepted (incarnation, sequence): the replay barrier.
    last_accepted: Option<(u64, u64)>,
    /// Other monitors that suspect it, and when they said so.
    suspected_by: BTreeMap<String, Instant>,
    digest_mismatches: u8,
    last_sync: Option<Instant>,
    last_dead_reply: Option<Instant>,
    greet_backoff: Duration,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            state: PeerState::Unknown,
            incarnation: 0,
            last_heard: None,
            last_accepted: None,
            suspected_by: BTreeMap::new(),
            digest_mismatches: 0,
            last_sync: None,
            last_dead_reply: None,
            greet_backoff: Duration::ZERO,
        }
    }
}

/// The failure detector of one speaker.
pub struct Detector {
    node: String,
    interval: Duration,
    timeout: Duration,
    monitors: usize,
    keys: Keyring,
    start: Instant,
    start_unix_ms: u64,
    incarnation: u64,
    sequence: u64,
    peers: BTreeMap<String, Peer>,
    /// Self and every Alive peer, ordered by (ring hash, name).
    ring: BTreeSet<(u64, String)>,
    /// Silent (Unknown or Dead) peers to greet again (Alive asking for theirs), by when: (when,
    /// node). At most one entry per node.
    greetings: BTreeSet<(Instant, String)>,
    /// The predecessors this node monitors, and since when.
    monitoring: BTreeMap<String, Instant>,
    /// Monitored predecessors this node itself suspects.
    suspecting: BTreeSet<String>,
    /// Nodes that pinged us recently: they get a heartbeat every interval.
    watchers: BTreeMap<String, Instant>,
    next_tick: Instant,
    last_valid: Instant,
    /// Dead notices to repeat: (when, repeats left, node, incarnation).
    repeats: Vec<(Instant, u32, String, u64)>,
    digest: u32,
    /// Bumped on every peer state change (the shell rebuilds the view only then).
    changes: u64,
    metrics: MembershipMetrics,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Detector")
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// The stable position of a node on the monitoring ring: FNV-1a of the name with a SplitMix64
/// finaliser. Every speaker must compute the same value, on any platform and version.
pub fn ring_hash(node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

impl Detector {
    /// A detector for `config.node`, started at `now`, when the wall clock read `unix_ms`. The
    /// incarnation is `unix_ms`, so a restarted speaker outranks its previous life.
    pub fn new(
        config: &Config,
        now: Instant,
        unix_ms: u64,
        metrics: MembershipMetrics,
    ) -> Detector {
        let mut detector = Detector {
            node: config.node.clone(),
            interval: config.interval.max(Duration::from_millis(1)),
            timeout: config.timeout.max(Duration::from_millis(1)),
            monitors: config.monitors.max(1),
            keys: Keyring::new(&config.keys),
            start: now,
            start_unix_ms: unix_ms,
            incarnation: unix_ms,
            sequence: 0,
            peers: BTreeMap::new(),
            ring: BTreeSet::new(),
            greetings: BTreeSet::new(),
            monitoring: BTreeMap::new(),
            suspecting: BTreeSet::new(),
            watchers: BTreeMap::new(),
            next_tick: now,
            last_valid: now,
            repeats: Vec::new(),
            digest: 0,
            changes: 0,
            metrics,
        };
        detector
            .ring
            .insert((ring_hash(&detector.node), detector.node.clone()));
        detector.refresh(now);
        detector.count_keys();
        detector
    }

    /// This speaker's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The state of `node` as this speaker sees it (`None`: not a peer).
    pub fn state(&self, node: &str) -> Option<PeerState> {
        if node == self.node {
            return Some(PeerState::Alive);
        }
        self.peers.get(node).map(|p| p.state)
    }

    /// A counter that moves whenever a peer's state changes (or peers come and go).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Whether no valid message arrived from any peer for the timeout although peers exist.
    pub fn isolated(&self, now: Instant) -> bool {
        !self.peers.is_empty() && now.saturating_duration_since(self.last_valid) > self.timeout
    }

    /// The predecessors this node currently monitors.
    pub fn monitored(&self) -> impl Iterator<Item = &str> {
        self.monitoring.keys().map(String::as_str)
    }

    /// The current view (self included, always Alive).
    pub fn view(&self, now: Instant) -> View {
        let mut peers: BTreeMap<String, PeerState> = self
            .peers
            .iter()
            .map(|(name, p)| (name.clone(), p.state))
            .collect();
        peers.insert(self.node.clone(), PeerState::Alive);
        let isolated =
            !self.peers.is_empty() && now.saturating_duration_since(self.last_valid) > self.timeout;
        View {
            peers,
            isolated,
            node: self.node.clone(),
            incarnation: self.incarnation,
        }
    }

    /// When [`Detector::on_tick`] must be called next (it may be called earlier).
    pub fn next_wakeup(&self) -> Instant {
        let mut at = self.next_tick;
        for (node, since) in &self.monitoring {
            if self.suspecting.contains(node) {
                continue;
            }
            if let Some(deadline) = self.deadline(node, *since) {
                at = at.min(deadline);
            }
        }
        for (when, ..) in &self.repeats {
            at = at.min(*when);
        }
        at
    }

    fn deadline(&self, node: &str, since: Instant) -> Option<Instant> {
        let peer = self.peers.get(node)?;
        let last = peer.last_heard.map_or(since, |heard| heard.max(since));
        Some(last + self.timeout)
    }

    /// Replaces the keys: sign with `keys.send()`, accept every one of `keys`, and, if the send
    /// key changed, the one signed with until now for [`KEY_GRACE`] (or until the next change).
    pub fn set_keys(&mut self, now: Instant, keys: &Keys) {
        self.keys.set(now, keys);
        self.metrics.key_changes.inc();
        self.count_keys();
        // Silent peers may have been silent only because our keys differed: greet them soon
        // rather than at the end of their back-off.
        let silent: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.state != PeerState::Alive)
            .map(|(name, _)| name.clone())
            .collect();
        for name in silent {
            self.schedule_greeting(now, &name);
        }
    }

    fn count_keys(&self) {
        self.metrics
            .keys
            .set(i64::try_from(self.keys.accepted()).unwrap_or(i64::MAX));
    }

    /// Replaces the peer set (node names from Kubernetes; self is ignored). New peers start
    /// Unknown and are greeted with an Alive that asks for theirs, so both sides learn each other
    /// whichever of them saw the Node first.
    pub fn set_peers(&mut self, now: Instant, names: &BTreeSet<String>) -> Vec<Outgoing> {
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|name| !names.contains(*name))
            .cloned()
            .collect();
        self.changes += 1;
        for name in &gone {
            // Through Unknown, so that the ring, digest and gauge forget it too.
            self.set_state(now, name, PeerState::Unknown, 0);
            self.peers.remove(name);
        }
        self.watchers.retain(|name, _| names.contains(name));
        self.greetings.retain(|(_, name)| names.contains(name));
        let mut added = Vec::new();
        for name in names {
            if *name != self.node && !self.peers.contains_key(name) {
                self.peers.insert(name.clone(), Peer::new());
                self.greetings.insert((now + GREETING_RETRY, name.clone()));
                added.push(name.clone());
            }
        }
        let mut out = Vec::new();
        if let Some(bytes) = self.encode(now, Body::Alive { reply: true }) {
            for name in added {
                self.push(&mut out, name, bytes.clone());
            }
        }
        out
    }

    /// Tells every peer we leave (graceful shutdown): they mark us dead at once.
    pub fn leave(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        self.broadcast(now, Body::Leave, &mut out);
        out
    }

    /// Timers: pings, heartbeats, suspicions, repeated notices. Call at [`Detector::next_wakeup`].
    pub fn on_tick(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let accepted = self.keys.accepted();
        self.keys.expire(now);
        if self.keys.accepted() != accepted {
            self.count_keys();
        }
        self.check_suspicions(now, &mut out);
        self.repeat_due(now, &mut out);
        if now < self.next_tick {
            return out;
        }
        self.next_tick += self.interval;
        if self.next_tick <= now {
            self.next_tick = now + self.interval;
        }
        let monitored: Vec<String> = self.monitoring.keys().cloned().collect();
        if let Some(bytes) = self.encode(now, Body::Ping) {
            for node in monitored {
                self.push(&mut out, node, bytes.clone());
            }
        }
        let timeout = self.timeout;
        self.watchers
            .retain(|_, at| now.saturating_duration_since(*at) <= timeout);
        let watchers: Vec<String> = self.watchers.keys().cloned().collect();
        if let Some(bytes) = self.encode(now, Body::Heartbeat) {
            for node in watchers {
                self.push(&mut out, node, bytes.clone());
            }
        }
        self.greet_silent(now, &mut out);
        let suspects: Vec<String> = self.suspecting.iter().cloned().collect();
        for node in suspects {
            self.send_suspect(now, &node, &mut out);
        }
        out
    }

    /// Handles one received datagram.
    pub fn on_message(&mut self, now: Instant, bytes: &[u8]) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let msg = match wire::decode(bytes, self.keys.verifying()) {
            Ok(msg) => msg,
            Err(WireError::BadMac) => {
                self.metrics.count_drop(DropReason::BadMac);
                return out;
            }
            Err(e) => {
                tracing::debug!(error = %e, "dropping malformed membership message");
                self.metrics.count_drop(DropReason::Malformed);
                return out;
            }
        };
        let unix_now = self.unix_ms(now);
        let Some(peer) = self.peers.get_mut(&msg.sender) else {
            self.metrics.count_drop(DropReason::UnknownSender);
            return out;
        };
        if msg.timestamp_ms.abs_diff(unix_now) > MAX_SKEW.as_millis() as u64 {
            self.metrics.count_drop(DropReason::Stale);
            return out;
        }
        let stamp = (msg.incarnation, msg.sequence);
        if let Some(last) = peer.last_accepted.filter(|last| stamp <= *last) {
            self.metrics.count_drop(DropReason::Replay);
            // A smaller incarnation with a fresh timestamp is a new life whose clock went back
            // (replays of an older life would have to be under MAX_SKEW old): tell it the
            // incarnation to outrank, as a Dead notice it will refute. At most once per interval.
            let due = peer
                .last_dead_reply
                .is_none_or(|at| now.saturating_duration_since(at) >= self.interval);
            if msg.incarnation < last.0 && due {
                peer.last_dead_reply = Some(now);
                let body = Body::Dead {
                    node: msg.sender.clone(),
                    incarnation: last.0,
                };
                self.send(now, &msg.sender, body, &mut out);
            }
            return out;
        }
        peer.last_accepted = Some(stamp);
        self.metrics.received.inc();
        self.last_valid = now;
        let sender = msg.sender.clone();

        if msg.body == Body::Leave {
            if msg.incarnation >= peer.incarnation {
                self.set_state(now, &sender, PeerState::Dead, msg.incarnation);
            }
            return out;
        }
        if peer.state == PeerState::Dead && msg.incarnation <= peer.incarnation {
            // A message from an incarnation we buried: tell it, so it refutes (at most once per
            // interval), but take nothing from it about its own liveness.
            let dead_inc = peer.incarnation;
            if peer
                .last_dead_reply
                .is_none_or(|at| now.saturating_duration_since(at) >= self.interval)
            {
                peer.last_dead_reply = Some(now);
                self.send(
                    now,
                    &sender,
                    Body::Dead {
                        node: sender.clone(),
                        incarnation: dead_inc,
                    },
                    &mut out,
                );
            }
        } else {
            peer.last_heard = Some(now);
            if peer.state != PeerState::Alive || msg.incarnation > peer.incarnation {
                self.set_state(now, &sender, PeerState::Alive, msg.incarnation);
            }
            self.suspecting.remove(&sender);
            self.handle_direct(now, &msg, &mut out);
        }
        self.handle_gossip(now, msg, &mut out);
        out
    }

    /// What a message from a live sender means for the sender itself.
    fn handle_direct(&mut self, now: Instant, msg: &Message, out: &mut Vec<Outgoing>) {
        match &msg.body {
            Body::Ping => {
                self.watchers.insert(msg.sender.clone(), now);
                self.send(now, &msg.sender, Body::Heartbeat, out);
            }
            Body::Alive { reply: true } => {
                self.send(now, &msg.sender, Body::Alive { reply: false }, out)
            }
            _ => {}
        }
        if matches!(msg.body, Body::Ping | Body::Heartbeat) {
            self.check_digest(now, msg, out);
        }
    }

    fn check_suspicions(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let expired: Vec<String> = self
            .monitoring
            .iter()
            .filter(|(node, since)| self.deadline(node, **since).is_some_and(|d| d <= now))
            .map(|(node, _)| node.clone())
            .collect();
        for node in expired {
            if self.suspecting.insert(node.clone()) {
                self.send_suspect(now, &node, out);
            }
            self.try_declare(now, &node, out);
        }
    }

    /// Declares `node` dead if we suspect it and enough of its other monitors do too.
    fn try_declare(&mut self, now: Instant, node: &str, out: &mut Vec<Outgoing>) {
        if !self.suspecting.contains(node) {
            return;
        }
        let monitors = self.successors(node).len();
        let required = AGREEMENT.min(monitors).max(1);
        let Some(peer) = self.peers.get(node) else {
            return;
        };
        if peer.state != PeerState::Alive {
            return;
        }
        let timeout = self.timeout;
        let others = peer
            .suspected_by
            .iter()
            .filter(|(by, at)| **by != self.node && now.saturating_duration_since(**at) <= timeout)
            .count();
        if 1 + others < required {
            return;
        }
        let incarnation = peer.incarnation;
        tracing::info!(node, incarnation, "declaring speaker dead");
        self.set_state(now, node, PeerState::Dead, incarnation);
        self.broadcast(
            now,
            Body::Dead {
                node: node.to_owned(),
                incarnation,
            },
            out,
        );
        if DEAD_REPEATS > 0 {
            self.repeats.push((
                now + self.repeat_gap(),
                DEAD_REPEATS,
                node.to_owned(),
                incarnation,
            ));
        }
    }

    fn send_suspect(&mut self, now: Instant, node: &str, out: &mut Vec<Outgoing>) {
        let Some(incarnation) = self.peers.get(node).map(|p| p.incarnation) else {
            return;
        };
        let others: Vec<String> = self
            .successors(node)
            .into_iter()
            .filter(|m| *m != self.node)
            .collect();
        if others.is_empty() {
            return;
        }
        if let Some(bytes) = self.encode(
            now,
            Body::Suspect {
                node: node.to_owned(),
                incarnation,
            },
        ) {
            for to in others {
                self.push(out, to, bytes.clone());
            }
        }
    }

    fn set_state(&mut self, now: Instant, node: &str, state: PeerState, incarnation: u64) {
        let Some(peer) = self.peers.get_mut(node) else {
            return;
        };
        let before = peer.state;
        let changed = before != state;
        peer.state = state;
        peer.incarnation = incarnation;
        peer.suspected_by.clear();
        peer.digest_mismatches = 0;
        if !changed {
            return;
        }
        self.changes += 1;
        self.metrics.state_change(match state {
            PeerState::Alive => "alive",
            PeerState::Dead => "dead",
            PeerState::Unknown => "unknown",
        });
        self.suspecting.remove(node);
        if state == PeerState::Dead {
            self.watchers.remove(node);
            self.schedule_greeting(now, node);
        }
        if (before == PeerState::Dead) != (state == PeerState::Dead) {
            self.digest ^= digest_of(node);
        }
        if (before == PeerState::Alive) != (state == PeerState::Alive) {
            let entry = (ring_hash(node), node.to_owned());
            if state == PeerState::Alive {
                self.ring.insert(entry);
            } else {
                self.ring.remove(&entry);
            }
            self.refresh(now);
        }
    }

    /// Recomputes the monitored predecessors and the members gauge after a ring change.
    fn refresh(&mut self, now: Instant) {
        let predecessors = self.predecessors();
        let old = std::mem::take(&mut self.monitoring);
        for node in predecessors {
            let since = old.get(&node).copied().unwrap_or(now);
            self.monitoring.insert(node, since);
        }
        let monitoring = &self.monitoring;
        self.suspecting.retain(|node| monitoring.contains_key(node));
        self.metrics
            .members
            .set(i64::try_from(self.ring.len()).unwrap_or(i64::MAX));
    }

    /// The (up to `monitors`) members before us on the ring: the ones we watch.
    fn predecessors(&self) -> Vec<String> {
        let me = (ring_hash(&self.node), self.node.clone());
        let wanted = self.monitors.min(self.ring.len().saturating_sub(1));
        self.ring
            .range(..&me)
            .rev()
            .chain(self.ring.range(&me..).rev())
            .filter(|(_, name)| *name != self.node)
            .take(wanted)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// The (up to `monitors`) members after `node` on the ring: the ones that watch it.
    fn successors(&self, node: &str) -> Vec<String> {
        let at = (ring_hash(node), node.to_owned());
        if !self.ring.contains(&at) {
            return Vec::new();
        }
        let wanted = self.monitors.min(self.ring.len().saturating_sub(1));
        self.ring
            .range(&at..)
            .chain(self.ring.range(..&at))
            .filter(|(_, name)| name != node)
            .take(wanted)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Re-anchors message timestamps on the wall clock (`unix_ms` read at `now`), so that they
    /// follow NTP steps made after the start. The UDP shell calls it every tick; the incarnation
    /// stays what it was.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.start = now;
        self.start_unix_ms = unix_ms;
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        let elapsed = u64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX);
        self.start_unix_ms.saturating_add(elapsed)
    }

    fn encode(&mut self, now: Instant, body: Body) -> Option<Vec<u8>> {
        self.sequence += 1;
        let msg = Message {
            sender: self.node.clone(),
            incarnation: self.incarnation,
            sequence: self.sequence,
            timestamp_ms: self.unix_ms(now),
            digest: self.digest,
            body,
        };
        match wire::encode(&msg, self.keys.signing()) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!(error = %e, node = %self.node, "cannot encode membership message");
                None
            }
        }
    }

    fn push(&self, out: &mut Vec<Outgoing>, to: String, bytes: Vec<u8>) {
        self.metrics.sent.inc();
        out.push(Outgoing { to, bytes });
    }

    fn send(&mut self, now: Instant, to: &str, body: Body, out: &mut Vec<Outgoing>) {
        if let Some(bytes) = self.encode(now, body) {
            self.push(out, to.to_owned(), bytes);
        }
    }

    /// Sends `body` to every peer (the dead ones too: a live node wrongly buried must hear it).
    fn broadcast(&mut self, now: Instant, body: Body, out: &mut Vec<Outgoing>) {
        if let Some(bytes) = self.encode(now, body) {
            let names: Vec<String> = self.peers.keys().cloned().collect();
            for to in names {
                self.push(out, to, bytes.clone());
            }
        }
    }
}
