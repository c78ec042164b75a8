//! Authenticated liveness between speakers: which speakers are alive, fast and consistently, so
//! that every speaker computes the same Layer 2 leader for each address.
//!
//! # Protocol
//!
//! Members are ordered on a ring by a stable hash of their node name ([`detector::ring_hash`]);
//! the ring holds self and the members this speaker sees Alive. Every `interval` (100 ms) each
//! speaker **pings its `monitors` (k = 3) ring predecessors**; a pinged speaker answers at once
//! with a Heartbeat and keeps sending one Heartbeat per interval to everyone who pinged it within
//! the timeout. A monitor hears its predecessor about twice per interval over two independent
//! paths, so light loss rarely silences it for a whole timeout.
//!
//! Pull (ping) rather than push decides who is monitored: a monitor watches whom *its own* view
//! says it should, and anyone answers any ping, so two speakers whose views briefly disagree never
//! accuse each other of silence.
//!
//! A monitor that has heard nothing from a predecessor for `timeout` (300 ms) **suspects** it and
//! tells the predecessor's other monitors (Suspect, repeated every interval). A death sticks when
//! **2 monitors agree** (or 1, if the member has only one monitor, as in a two-node cluster); the
//! monitors' clocks run from the same last heartbeat, so agreement costs about one network delay,
//! not an extra timeout. The declarer **broadcasts `Dead{node, incarnation}`** to every peer, three
//! times one interval apart: O(n) messages, but only per event.
//!
//! A speaker that learns it was declared dead while alive **refutes** with a broadcast
//! `Alive{incarnation + 1}`; a speaker hearing from an incarnation it buried answers with the Dead
//! notice (at most once per interval), so the buried speaker learns it even if it missed the
//! broadcast. A peer becomes Alive on its first valid message (from a new incarnation if it was
//! Dead). A starting speaker, and any speaker that learns of a new Node, sends `Alive{reply}` to
//! the new peers, which answer with their own Alive, so it learns the view. `shutdown` broadcasts a
//! signed Leave: peers drop the speaker at once.
//!
//! Views converge despite lost broadcasts by **anti-entropy**: every Ping and Heartbeat carries a
//! 32-bit digest of the sender's dead set; after three mismatches in a row with a neighbour a
//! speaker sends it its dead set (Sync), and the neighbour answers with corrections (`Alive` at a
//! newer incarnation) for the entries it knows to be stale.
//!
//! # Message rate per node
//!
//! Independent of the cluster size n, at the defaults (interval 100 ms, k = 3): k pings, k
//! answers and k heartbeats per interval, i.e. **90 datagrams/s sent and ≈ 90 received** per
//! speaker (9k / interval), about 7.5 kB/s each way with 83-byte datagrams. Events cost O(n) once:
//! a death is 3 broadcasts by the declarer (≈ 3n datagrams, at most 3 received per speaker), a
//! start or refutation one broadcast plus n answers. A cold start of the whole cluster is
//! therefore O(n²) datagrams in total once, n per speaker. Peers that stay silent (Unknown) are
//! greeted again with back-off from 0.5 s to 30 s, and so are Dead ones (a dead Node still listed
//! costs one datagram per 30 s): two speakers that buried each other ping nobody they see dead,
//! so only a greeting lets them find each other again (the buried one answers it with the Dead
//! notice, the greeter refutes). A change of keys restarts the back-off, since differing keys are
//! the usual reason for such a mutual burial.
//!
//! The deterministic simulation of 1,000 members (`sim.rs`, 0.2–1 ms latency, independent loss)
//! measures 89.7 datagrams/s sent and 88.8 received per speaker on average (max 90.0 / 90.4) at
//! 1 % loss, no false death at 1 % or 5 % loss, and declares a crash within 270 ms (p50) / 285 ms
//! (max) by its first observer and 275 ms / 310 ms for every speaker.
//!
//! # Detection time
//!
//! All monitors of a crashed speaker count from its last heartbeat, at most one interval before
//! the crash, so the second suspicion (and the declaration) comes at most `timeout` plus one
//! network delay after the crash; every speaker has the notice one delay later, or 25 ms later per
//! lost copy. Hence **≈ 300 ms at the defaults**, under 500 ms as long as `timeout` stays below
//! about 400 ms. A lost Suspect is repeated after one interval, which bounds the rare worst case
//! at `timeout + interval`.
//!
//! # Security
//!
//! Every datagram carries an HMAC-SHA256 over all its bytes ([`wire`]), under the key from the
//! Kubernetes Secret (verified in constant time by `ring`; never logged). Replays are rejected per
//! sender by a strictly increasing (incarnation, sequence) pair, where the incarnation is the
//! sender's wall-clock start time in milliseconds, so a restarted speaker outranks its past;
//! messages whose timestamp is more than [`detector::MAX_SKEW`] (5 s) from our clock are dropped,
//! which bounds what can be replayed to a receiver that restarted and forgot the counters (and
//! requires node clocks within 5 s of each other: check the `stale` drop counter). A restarted
//! speaker whose clock went back (a smaller incarnation) is answered with a Dead notice naming the
//! incarnation to outrank, and refutes. A Leave or Dead replayed
//! inside the window to a receiver that restarted can bury a live speaker there only until its
//! next ping, which is answered with the notice and refuted. Reordered
//! datagrams are dropped as `replay`, which the protocol tolerates like loss.
//!
//! # Keys and their rotation
//!
//! The Secret holds the key to send with (`key`) and, during a rotation, one more key to accept
//! (`next`, then `previous`); [`keys`] reads them and explains why this order never drops a live
//! peer's message. [`Membership::set_keys`] takes a new set at once; when its send key differs,
//! the one sent with before stays accepted for [`detector::KEY_GRACE`] as well (or until the next
//! change: the Secret then says what to accept). The gauge
//! `ferrolb_speaker_membership_keys` shows how many keys are accepted. Rewriting `key` in one step
//! (or deleting the Secret) is not a rotation: until every kubelet has delivered it, speakers on
//! the old key drop the messages of those on the new one and declare them dead (they see each other
//! again within a second once all have the same key: see the greetings above).
//!
//! The key is shared by all speakers, so it authenticates membership in the cluster, not the
//! individual sender: a speaker holding the key can speak for any other.
//!
//! # Fallback when liveness traffic is blocked
//!
//! A peer never heard from is [`PeerState::Unknown`]; a speaker that has valid peers but has
//! heard from none of them for the timeout is `isolated`. [`View::live`] then falls back to the
//! Node's Ready condition (Kubernetes' own, slower liveness).

pub mod detector;
pub mod keys;
pub mod metrics;
pub mod wire;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

pub use detector::{Detector, Outgoing};
pub use keys::Keys;
pub use metrics::MembershipMetrics;

/// Configuration of the membership protocol.
#[derive(Clone)]
pub struct Config {
    /// This node's name (as in its Node object).
    pub node: String,
    /// UDP port, the same on every node.
    pub port: u16,
    /// The shared HMAC keys (from the Secret): one to sign with, all to verify with.
    pub keys: Keys,
    /// How often each speaker pings its monitored predecessors and heartbeats its watchers.
    pub interval: Duration,
    /// Silence after which a monitor suspects its predecessor.
    pub timeout: Duration,
    /// How many ring predecessors each speaker monitors (k).
    pub monitors: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: String::new(),
            port: 7947,
            keys: Keys::default(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            monitors: 3,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("node", &self.node)
            .field("port", &self.port)
            .field("keys", &self.keys)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("monitors", &self.monitors)
            .finish()
    }
}

/// What this speaker knows about a peer's liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Heard from (directly, or its refutation relayed) and not declared dead since.
    Alive,
    /// Declared dead by its monitors, or it left.
    Dead,
    /// Never heard from: fall back to the Node's readiness.
    Unknown,
}

/// The membership as this speaker sees it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct View {
    /// Every peer (self included, always Alive) and its state.
    pub peers: BTreeMap<String, PeerState>,
    /// Peers exist but none has been heard from for the timeout: liveness traffic is blocked.
    pub isolated: bool,
    /// This speaker's own node name (always live).
    pub node: String,
    /// This speaker's incarnation: it grows when the speaker refutes its own death, i.e. when
    /// others declared it dead (and may have taken over its addresses) while it was alive.
    pub incarnation: u64,
}

impl View {
    /// The live speakers among `speakers` (the nodes that run one, from Kubernetes), applying the
    /// fallback: Alive members are live, Dead ones are not, and the rest (Unknown, not yet known
    /// to the membership at all, or every one but self when isolated) are live iff `ready(node)`
    /// says their Node and speaker are Ready. Self is always included.
    ///
    /// The candidates come from Kubernetes, not from the membership, so a speaker that has just
    /// started (before its membership has learned any peer) does not take itself for the only one.
    pub fn live<'a>(
        &self,
        speakers: impl IntoIterator<Item = &'a str>,
        ready: impl Fn(&str) -> bool,
    ) -> BTreeSet<String> {
        let mut live: BTreeSet<String> = speakers
            .into_iter()
            .filter(|node| match self.peers.get(*node) {
                _ if self.isolated => ready(node),
                Some(PeerState::Alive) => true,
                Some(PeerState::Dead) => false,
                Some(PeerState::Unknown) | None => ready(node),
            })
            .map(str::to_owned)
            .collect();
        if !self.node.is_empty() {
            live.insert(self.node.clone());
        }
        live
    }
}

enum Command {
    Peers(BTreeMap<String, SocketAddr>),
    Keys(Keys),
    Shutdown(oneshot::Sender<()>),
}

/// The running membership service: a tokio task that owns the UDP socket and the [`Detector`].
/// Dropping it stops the task silently (peers detect us as crashed); [`Membership::shutdown`]
/// says goodbye first.
#[derive(Debug)]
pub struct Membership {
    commands: mpsc::UnboundedSender<Command>,
    view: watch::Receiver<View>,
    port: u16,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Membership {
    /// Binds UDP `[::]:port` (dual-stack; `0.0.0.0:port` where IPv6 is off) and starts the
    /// protocol. Peers are added with [`Membership::set_peers`].
    pub async fn start(config: Config, metrics: MembershipMetrics) -> std::io::Result<Membership> {
        if config.keys.send().is_empty() {
            tracing::warn!(
                "the membership key is empty: anyone on the network can forge liveness messages"
            );
        }
        let socket = bind(config.port)?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let detector = Detector::new(&config, now, unix_now(), metrics);
        let (view_tx, view) = watch::channel(detector.view(now));
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(socket, detector, rx, view_tx));
        Ok(Membership {
            commands,
            view,
            port: config.port,
            local,
            task,
        })
    }

    /// The address the socket is bound to (with port 0 in the config: the port the OS chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sets the peers (node name → InternalIP, from the Node objects); they listen on our port.
    pub fn set_peers(&self, peers: BTreeMap<String, IpAddr>) {
        let port = self.port;
        self.set_peer_addrs(
            peers
                .into_iter()
                .map(|(n, ip)| (n, SocketAddr::new(ip, port)))
                .collect(),
        );
    }

    /// Sets the peers with explicit socket addresses (tests, or peers on other ports).
    pub fn set_peer_addrs(&self, peers: BTreeMap<String, SocketAddr>) {
        let _ = self.commands.send(Command::Peers(peers));
    }

    /// Takes new keys: send with `keys.send()` from now on and accept every one of `keys` (and
    /// the key sent with until now, for [`detector::KEY_GRACE`] or until the next change).
    pub fn set_keys(&self, keys: Keys) {
        let _ = self.commands.send(Command::Keys(keys));
    }

    /// The view, updated whenever it changes.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Broadcasts a signed Leave (peers drop us at once) and stops.
    pub async fn shutdown(self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
        let _ = self.task.await;
    }
}

/// The wall clock in unix milliseconds (0 before 1970, which only makes every peer drop us as
/// stale, visibly).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn bind(port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = (|| {
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_only_v6(false)?;
        socket.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
        Ok::<_, std::io::Error>(socket)
    })();
    let socket = match v6 {
        Ok(socket) => socket,
        Err(e) => {
            tracing::info!(error = %e, "no dual-stack IPv6 socket; membership uses IPv4 only");
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            socket
                .bind(&SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port).into())?;
            socket
        }
    };
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

async fn run(
    socket: UdpSocket,
    mut detector: Detector,
    mut commands: mpsc::UnboundedReceiver<Command>,
    view: watch::Sender<View>,
) {
    let v6 = socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let mut addrs: BTreeMap<String, SocketAddr> = BTreeMap::new();
    let mut buf = vec![0u8; 2048];
    let mut published = (detector.changes(), detector.isolated(Instant::now()));
    loop {
        let wake = tokio::time::Instant::from_std(detector.next_wakeup());
        let out = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, _from)) => detector.on_message(Instant::now(), buf.get(..len).unwrap_or_default()),
                Err(e) => {
                    tracing::debug!(error = %e, "membership receive failed");
                    Vec::new()
                }
            },
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                detector.set_wall_clock(now, unix_now());
                detector.on_tick(now)
            }
            command = commands.recv() => match command {
                Some(Command::Peers(peers)) => {
                    let names = peers.keys().cloned().collect();
                    addrs = peers;
                    detector.set_peers(Instant::now(), &names)
                }
                Some(Command::Keys(keys)) => {
                    detector.set_keys(Instant::now(), &keys);
                    Vec::new()
                }
                Some(Command::Shutdown(done)) => {
                    let out = detector.leave(Instant::now());
                    send_all(&socket, &addrs, v6, out).await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
        };
        send_all(&socket, &addrs, v6, out).await;
        let now = Instant::now();
        let state = (detector.changes(), detector.isolated(now));
        if state == published {
            continue;
        }
        published = state;
        let current = detector.view(now);
        view.send_if_modified(|v| {
            if *v == current {
                false
            } else {
                *v = current;
                true
            }
        });
    }
}

async fn send_all(
    socket: &UdpSocket,
    addrs: &BTreeMap<String, SocketAddr>,
    v6: bool,
    out: Vec<Outgoing>,
) {
    for packet in out {
        let Some(addr) = addrs.get(&packet.to) else {
            continue;
        };
        let addr = match (v6, addr) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => *addr,
        };
        if let Err(e) = socket.send_to(&packet.bytes, addr).await {
            tracing::debug!(error = %e, to = %packet.to, "membership send failed");
        }
    }
}
