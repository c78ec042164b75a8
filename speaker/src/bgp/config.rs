//! What a session is told by the shell: who we are, who the peer is, which timers, which
//! families; and the reconnect back-off.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::wire::Family;

/// Default hold time (RFC 4271 §10 suggests 90 s).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
/// First reconnect delay. Short, because a load balancer's routes matter more than the
/// RFC's 120 s politeness; the doubling keeps a dead peer cheap.
pub const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(1);
/// Cap of the reconnect delay.
pub const DEFAULT_CONNECT_RETRY_MAX: Duration = Duration::from_secs(60);
/// A session that stayed Established this long resets the back-off when it drops; one that
/// flaps sooner keeps backing off.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Hold timer while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// The AS numbers the peer may present in its OPEN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAs {
    /// This one only (`peerASN`).
    Exactly(u32),
    /// Ours only: iBGP (`dynamicASN: internal`).
    Internal,
    /// Any but ours: eBGP (`dynamicASN: external`).
    External,
}

impl PeerAs {
    /// Whether a peer presenting `asn` is the one configured, when we are `local`.
    pub fn accepts(self, local: u32, asn: u32) -> bool {
        match self {
            PeerAs::Exactly(want) => asn == want,
            PeerAs::Internal => asn == local,
            PeerAs::External => asn != local,
        }
    }

    /// Whether the session is iBGP, when we are `local`: known before the peer's OPEN, since a
    /// dynamic AS is internal or external by configuration.
    pub fn is_ibgp(self, local: u32) -> bool {
        match self {
            PeerAs::Exactly(asn) => asn == local,
            PeerAs::Internal => true,
            PeerAs::External => false,
        }
    }
}

impl From<u32> for PeerAs {
    fn from(asn: u32) -> PeerAs {
        PeerAs::Exactly(asn)
    }
}

impl std::fmt::Display for PeerAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAs::Exactly(asn) => write!(f, "AS {asn}"),
            PeerAs::Internal => f.write_str("our AS (dynamicASN internal)"),
            PeerAs::External => f.write_str("any AS but ours (dynamicASN external)"),
        }
    }
}

/// One BGP session's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub peer_as: PeerAs,
    pub router_id: Ipv4Addr,
    /// Proposed hold time, whole seconds: 0 (no keepalives) or at least 3 (the API rejects 1–2).
    pub hold_time: Duration,
    /// Keepalive interval; `None` means a third of the negotiated hold time. Never more than a
    /// third of the negotiated hold time either way.
    pub keepalive: Option<Duration>,
    /// First reconnect delay; doubles per failed attempt up to `connect_retry_max`, each delay
    /// multiplied by a random factor in [0.75, 1] (RFC 4271 §10 jitter).
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
    /// Never dial: only accept the peer's connection.
    pub passive: bool,
    /// Families offered in the OPEN (Multiprotocol capabilities).
    pub families: BTreeSet<Family>,
    /// This node's addresses to announce as next hop, per family; a family without one is not
    /// announced (and counted as skipped).
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Offer Graceful Restart (RFC 4724) with this restart time: the peer keeps our routes
    /// that long when the connection closes without a NOTIFICATION (the speaker restarting).
    pub graceful_restart: Option<Duration>,
}

/// The restart time offered with Graceful Restart: how long the router keeps a restarting
/// speaker's routes (FRR's and BIRD's default too). A speaker pod restarts in seconds.
pub const RESTART_TIME: Duration = Duration::from_secs(120);

impl SessionConfig {
    /// A session with the defaults: both families, active, 90 s hold time.
    pub fn new(local_asn: u32, peer_as: impl Into<PeerAs>, router_id: Ipv4Addr) -> SessionConfig {
        SessionConfig {
            local_asn,
            peer_as: peer_as.into(),
            router_id,
            hold_time: DEFAULT_HOLD_TIME,
            keepalive: None,
            connect_retry: DEFAULT_CONNECT_RETRY,
            connect_retry_max: DEFAULT_CONNECT_RETRY_MAX,
            passive: false,
            families: Family::ALL.into_iter().collect(),
            next_hop_v4: None,
            next_hop_v6: None,
            graceful_restart: None,
        }
    }

    /// iBGP: the peer is in our AS.
    pub fn is_ibgp(&self) -> bool {
        self.peer_as.is_ibgp(self.local_asn)
    }

    /// The hold time we propose, in seconds on the wire.
    pub fn hold_time_secs(&self) -> u16 {
        u16::try_from(self.hold_time.as_secs()).unwrap_or(u16::MAX)
    }
}

/// Reconnect delays: exponential, capped, jittered from a seeded PRNG so tests are exact.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempts: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempts: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// The delay after the current number of failures (how long to give a dial, too).
    pub fn delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempts.min(20)).unwrap_or(u32::MAX);
        let base = self.initial.saturating_mul(factor).min(self.max);
        // Jitter in [0.75, 1]: 768..=1024 / 1024.
        let jitter = 768 + (self.random() % 257);
        base.saturating_mul(u32::try_from(jitter).unwrap_or(1024)) / 1024
    }

    /// The delay before the next attempt, counting one more failure after it.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay();
        self.failed();
        delay
    }

    /// One more failed attempt.
    pub fn failed(&mut self) {
        self.attempts = self.attempts.saturating_add(1);
    }

    /// The session worked: start over at the initial delay.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
