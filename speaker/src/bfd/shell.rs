//! The I/O shell around [`Session`]: one Tokio task that owns every BFD session of the speaker
//! and their UDP sockets, so that demultiplexing, timers and state publication happen in one
//! place and the sessions stay pure.
//!
//! [`Bfd::spawn`] starts it; [`Bfd::add_peer`] adds a session (or updates its profile) and
//! returns a `watch` of its [`BfdState`]; [`Bfd::remove_peer`] and [`Bfd::shutdown`] tell the
//! peer AdminDown first, so it does not take our going away for a path failure.
//!
//! # Choices
//!
//! - **Ports** (RFC 5881 §4, RFC 5883 §3): packets are received on
//!   [`SINGLE_HOP_PORT`] (3784) or [`MULTIHOP_PORT`] (4784) of the local address, one receiving
//!   socket per (local address, hop mode, interface), shared by the sessions behind it. Each
//!   session sends from its own socket, bound to the local address and a source port drawn
//!   from 49152–65535 (the RFC's range, which Linux's ephemeral range does not match), kept for
//!   the session's life as the RFC requires.
//! - **TTL**: everything is sent with TTL (hop limit) [`TTL`] = 255. Received packets carry
//!   their TTL (`IP_RECVTTL` / `IPV6_RECVHOPLIMIT`): a single-hop packet must arrive with 255
//!   (RFC 5881 §5, the GTSM of RFC 5082), a multihop one with at least the profile's
//!   `minimumTtl` (RFC 5883 §5); a datagram without a reported TTL is dropped like a bad one.
//! - **Demultiplexing** (RFC 5880 §6.3): by Your Discriminator when it is set (and the source
//!   must still be the session's peer on the same receiving socket); otherwise by the source
//!   address and the receiving socket, which stands for the interface: it is bound to one local
//!   address and, if the key names one, to the interface (`SO_BINDTODEVICE`).
//! - **Drops** are counted in [`Counters`] (bad TTL, each [`DecodeError`], unknown
//!   discriminator or peer, a full inbound queue), never logged per packet.
//! - **Administrative down**: removing a peer or shutting down sends AdminDown (diagnostic 7)
//!   [`ADMIN_DOWN_COPIES`] times, [`ADMIN_DOWN_SPACING`] apart, so that one lost datagram does
//!   not leave the peer to find out by timeout and report a path failure. RFC 5880 §6.8.16
//!   suggests a detection time of AdminDown packets; at the slow rate that would be one or two.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::packet::{self, DecodeError, Diag, Packet, State};
use super::session::{Action, Session, SessionConfig, Timers};
use super::sys;

#[cfg(test)]
mod tests;

/// The destination port of single-hop Control packets (RFC 5881 §4).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// The destination port of multihop Control packets (RFC 5883 §3).
pub const MULTIHOP_PORT: u16 = 4784;
/// The TTL (hop limit) of everything we send.
pub const TTL: u32 = 255;
/// The source ports of RFC 5881 §4.
const SOURCE_PORT_FIRST: u16 = 49152;
const SOURCE_PORT_COUNT: u16 = 16384;
/// How many source ports a session tries before giving up.
const SOURCE_PORT_TRIES: usize = 64;
/// How often AdminDown is sent when a session is removed, and how far apart.
pub const ADMIN_DOWN_COPIES: usize = 3;
pub const ADMIN_DOWN_SPACING: Duration = Duration::from_millis(20);
/// Datagrams queued from the readers to the task; more are dropped and counted.
const INBOUND_QUEUE: usize = 1024;
/// Larger than any Control packet we accept (the Length field is one octet).
const DATAGRAM_BUF: usize = 512;

/// Single hop (RFC 5881) or multihop (RFC 5883).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hop {
    Single,
    Multi,
}

impl Hop {
    pub fn port(self) -> u16 {
        match self {
            Hop::Single => SINGLE_HOP_PORT,
            Hop::Multi => MULTIHOP_PORT,
        }
    }
}

/// Names one session: who the peer is and how we reach it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey {
    pub peer: IpAddr,
    /// Our address towards the peer: the source of our packets, and where we receive theirs.
    pub local: IpAddr,
    /// Bind the sockets to this device (a VRF or an interface); `None` for any.
    pub interface: Option<String>,
    pub hop: Hop,
}

/// A BFD profile as the session needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    pub timers: Timers,
    /// `passiveMode`.
    pub passive: bool,
    /// `minimumTtl`: the lowest TTL accepted on multihop sessions (single hop requires 255).
    pub minimum_ttl: u8,
}

/// What the owner of a session sees of it, cheap to clone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdState {
    pub state: State,
    /// Why the session last went down (bfd.LocalDiag).
    pub diag: Diag,
    pub remote_state: State,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// The negotiated transmit interval (before jitter).
    pub tx_interval: Duration,
    /// How long the peer may stay silent, once it has been heard.
    pub detection_time: Option<Duration>,
    /// The source port our packets come from.
    pub source_port: u16,
}

impl BfdState {
    fn of(session: &Session, source_port: u16) -> BfdState {
        BfdState {
            state: session.state(),
            diag: session.local_diag(),
            remote_state: session.remote_state(),
            local_discriminator: session.local_discriminator().get(),
            remote_discriminator: session.remote_discriminator(),
            tx_interval: session.tx_interval(),
            detection_time: session.detection_time(),
            source_port,
        }
    }
}

/// What the shell counts, for metrics. Plain atomics, read with `Ordering::Relaxed`.
#[derive(Debug, Default)]
pub struct Counters {
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub send_errors: AtomicU64,
    /// Dropped: TTL below what the session requires, or not reported.
    pub bad_ttl: AtomicU64,
    /// Dropped by the codec, per [`DecodeError::index`] (labels in [`DecodeError::LABELS`]).
    pub decode_errors: [AtomicU64; DecodeError::LABELS.len()],
    /// Dropped: no session with that Your Discriminator, or none for that source (or a session
    /// that exists but belongs to another peer or socket).
    pub unknown_session: AtomicU64,
    /// Dropped because the task fell behind (the inbound queue was full).
    pub queue_full: AtomicU64,
    pub state_changes: AtomicU64,
}

impl Counters {
    /// `(label, count)` of the codec's drops.
    pub fn decode_errors(&self) -> Vec<(&'static str, u64)> {
        DecodeError::LABELS
            .iter()
            .zip(&self.decode_errors)
            .map(|(label, n)| (*label, n.load(Ordering::Relaxed)))
            .collect()
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

enum Command {
    Add {
        key: PeerKey,
        profile: Profile,
        reply: oneshot::Sender<io::Result<watch::Receiver<BfdState>>>,
    },
    Remove {
        key: PeerKey,
        done: oneshot::Sender<()>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// The handle of the BFD task. Dropping it ends the task without telling the peers.
#[derive(Debug)]
pub struct Bfd {
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
}

impl Bfd {
    /// Starts the task on the current Tokio runtime; `seed` drives discriminators, source
    /// ports and jitter.
    pub fn spawn(seed: u64) -> Bfd {
        let (commands, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let task = Task {
            sessions: BTreeMap::new(),
            receivers: BTreeMap::new(),
            inbound_tx,
            counters: counters.clone(),
            rng: seed | 1,
        };
        let task = tokio::spawn(task.run(rx, inbound));
        Bfd {
            commands,
            counters,
            task: Some(task),
        }
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Starts a session towards `key` and returns its state: see [`Adder::add_peer`].
    pub fn add_peer(
        &self,
        key: PeerKey,
        profile: Profile,
    ) -> impl Future<Output = io::Result<watch::Receiver<BfdState>>> + Send + 'static + use<> {
        self.adder().add_peer(key, profile)
    }

    /// A handle that adds peers, for a task of its own (one that retries a failed start).
    pub fn adder(&self) -> Adder {
        Adder(self.commands.clone())
    }

    /// Tells the peer AdminDown and ends the session; the future completes once the packets are
    /// sent. Queued at once, like [`Bfd::add_peer`].
    pub fn remove_peer(&self, key: &PeerKey) -> impl Future<Output = ()> + Send + 'static {
        let (done, rx) = oneshot::channel();
        let sent = self.commands.send(Command::Remove {
            key: key.clone(),
            done,
        });
        async move {
            if sent.is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// AdminDown to every peer, then the task ends.
    pub async fn shutdown(mut self) {
        let (done, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).is_ok() {
            let _ = rx.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Adds peers to the BFD task ([`Bfd::adder`]); it does not keep the task running.
#[derive(Clone, Debug)]
pub struct Adder(mpsc::UnboundedSender<Command>);

impl Adder {
    /// Starts a session towards `key` and returns its state; fails if its sockets cannot be
    /// opened. For an existing session, the new profile's timers are negotiated (a Poll
    /// Sequence if Up) and its minimum TTL applies at once; `passive` only matters before the
    /// peer is first heard, so it is not changed on a running session. The command is queued at
    /// once, so commands given one after another are carried out in that order whenever their
    /// futures are awaited.
    pub fn add_peer(
        &self,
        key: PeerKey,
        profile: Profile,
    ) -> impl Future<Output = io::Result<watch::Receiver<BfdState>>> + Send + 'static + use<> {
        let (reply, rx) = oneshot::channel();
        let sent = self.0.send(Command::Add {
            key,
            profile,
            reply,
        });
        async move {
            sent.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())?
        }
    }
}

impl Drop for Bfd {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the BFD task has stopped")
}

/// Identifies a receiving socket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct RxKey {
    local: IpAddr,
    hop: Hop,
    interface: Option<String>,
}

impl RxKey {
    fn of(key: &PeerKey) -> RxKey {
        RxKey {
            local: key.local,
            hop: key.hop,
            interface: key.interface.clone(),
        }
    }
}

struct Inbound {
    rx: RxKey,
    from: SocketAddr,
    ttl: Option<u8>,
    len: usize,
    buf: [u8; DATAGRAM_BUF],
}

struct Entry {
    key: PeerKey,
    profile: Profile,
    session: Session,
    socket: std::net::UdpSocket,
    source_port: u16,
    state: watch::Sender<BfdState>,
}

struct Task {
    /// By local discriminator.
    sessions: BTreeMap<u32, Entry>,
    receivers: BTreeMap<RxKey, JoinHandle<()>>,
    inbound_tx: mpsc::Sender<Inbound>,
    counters: Arc<Counters>,
    rng: u64,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        loop {
            let deadline = self
                .sessions
                .values()
                .filter_map(|e| e.session.next_deadline())
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Add { key, profile, reply }) => {
                        let _ = reply.send(self.add(key, profile));
                    }
                    Some(Command::Remove { key, done }) => {
                        let ids: Vec<u32> = self
                            .sessions
                            .iter()
                            .filter(|(_, e)| e.key == key)
                            .map(|(id, _)| *id)
                            .collect();
                        self.remove(&ids).await;
                        let _ = done.send(());
                    }
                    Some(Command::Shutdown { done }) => {
                        let ids: Vec<u32> = self.sessions.keys().copied().collect();
                        self.remove(&ids).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        let ids: Vec<u32> = self.sessions.keys().copied().collect();
                        self.remove(&ids).await;
                        return;
                    }
                },
                Some(datagram) = inbound.recv() => self.receive(&datagram),
                () = sleep => self.on_timer(),
            }
        }
    }

    fn add(&mut self, key: PeerKey, profile: Profile) -> io::Result<watch::Receiver<BfdState>> {
        let now = Instant::now();
        if let Some(entry) = self.sessions.values_mut().find(|e| e.key == key) {
            entry.profile = profile;
            let actions = entry.session.set_timers(now, profile.timers);
            let rx = entry.state.subscribe();
            let discr = entry.session.local_discriminator().get();
            self.carry_out(discr, actions);
            return Ok(rx);
        }
        let rx_key = RxKey::of(&key);
        if !self.receivers.contains_key(&rx_key) {
            let socket = receiving_socket(&rx_key)?;
            let reader = tokio::spawn(read(
                socket,
                rx_key.clone(),
                self.inbound_tx.clone(),
                self.counters.clone(),
            ));
            self.receivers.insert(rx_key, reader);
        }
        let (socket, source_port) = self.sending_socket(&key)?;
        let discr = self.new_discriminator();
        let config = SessionConfig {
            timers: profile.timers,
            passive: profile.passive,
        };
        let seed = self.random();
        let session = Session::new(config, discr, seed, now);
        let (state, rx) = watch::channel(BfdState::of(&session, source_port));
        self.sessions.insert(
            discr.get(),
            Entry {
                key,
                profile,
                session,
                socket,
                source_port,
                state,
            },
        );
        Ok(rx)
    }

    /// AdminDown to these sessions' peers, a few times, then forgets them (and any receiving
    /// socket no session uses any more).
    async fn remove(&mut self, ids: &[u32]) {
        let now = Instant::now();
        for id in ids {
            if let Some(entry) = self.sessions.get_mut(id) {
                let actions = entry.session.admin_down(now);
                self.carry_out(*id, actions);
            }
        }
        for _ in 1..ADMIN_DOWN_COPIES {
            tokio::time::sleep(ADMIN_DOWN_SPACING).await;
            for id in ids {
                if let Some(entry) = self.sessions.get(id) {
                    send(entry, &entry.session.packet(), &self.counters);
                }
            }
        }
        for id in ids {
            self.sessions.remove(id);
        }
        let in_use: Vec<RxKey> = self.sessions.values().map(|e| RxKey::of(&e.key)).collect();
        self.receivers.retain(|k, reader| {
            let keep = in_use.contains(k);
            if !keep {
                reader.abort();
            }
            keep
        });
    }

    fn receive(&mut self, datagram: &Inbound) {
        bump(&self.counters.packets_received);
        let bytes = datagram.buf.get(..datagram.len).unwrap_or_default();
        // GTSM first: a single-hop packet that crossed a router is not even decoded.
        if datagram.rx.hop == Hop::Single && datagram.ttl != Some(255) {
            bump(&self.counters.bad_ttl);
            return;
        }
        let packet = match packet::decode(bytes) {
            Ok(packet) => packet,
            Err(e) => {
                if let Some(counter) = self.counters.decode_errors.get(e.index()) {
                    bump(counter);
                }
                return;
            }
        };
        let peer = datagram.from.ip();
        let found = if packet.your_discriminator != 0 {
            self.sessions
                .get(&packet.your_discriminator)
                .filter(|e| e.key.peer == peer && RxKey::of(&e.key) == datagram.rx)
                .map(|_| packet.your_discriminator)
        } else {
            self.sessions
                .iter()
                .find(|(_, e)| e.key.peer == peer && RxKey::of(&e.key) == datagram.rx)
                .map(|(id, _)| *id)
        };
        let Some(id) = found else {
            bump(&self.counters.unknown_session);
            return;
        };
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        if entry.key.hop == Hop::Multi && datagram.ttl.is_none_or(|t| t < entry.profile.minimum_ttl)
        {
            bump(&self.counters.bad_ttl);
            return;
        }
        let actions = entry.session.receive(Instant::now(), &packet);
        self.carry_out(id, actions);
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.next_deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(entry) = self.sessions.get_mut(&id) {
                let actions = entry.session.on_timer(now);
                self.carry_out(id, actions);
            }
        }
    }

    fn carry_out(&mut self, id: u32, actions: Vec<Action>) {
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        for action in actions {
            match action {
                Action::Send(packet) => send(entry, &packet, &self.counters),
                Action::StateChanged { from, to, diag } => {
                    bump(&self.counters.state_changes);
                    tracing::info!(
                        peer = %entry.key.peer,
                        local = %entry.key.local,
                        %from,
                        %to,
                        %diag,
                        "BFD session changed state"
                    );
                }
            }
        }
        let state = BfdState::of(&entry.session, entry.source_port);
        entry.state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    fn sending_socket(&mut self, key: &PeerKey) -> io::Result<(std::net::UdpSocket, u16)> {
        let mut last = io::Error::other("no source port tried");
        for _ in 0..SOURCE_PORT_TRIES {
            let offset = u16::try_from(self.random() % u64::from(SOURCE_PORT_COUNT)).unwrap_or(0);
            let port = SOURCE_PORT_FIRST + offset;
            match bind_sending(key, port) {
                Ok(socket) => return Ok((socket, port)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn new_discriminator(&mut self) -> NonZeroU32 {
        loop {
            let candidate = u32::try_from(self.random() >> 32).unwrap_or(1);
            if let Some(d) = NonZeroU32::new(candidate)
                && !self.sessions.contains_key(&d.get())
            {
                return d;
            }
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn send(entry: &Entry, packet: &Packet, counters: &Counters) {
    let bytes = packet::encode(packet);
    let to = SocketAddr::new(entry.key.peer, entry.key.hop.port());
    match entry.socket.send_to(&bytes, to) {
        Ok(_) => bump(&counters.packets_sent),
        Err(e) => {
            bump(&counters.send_errors);
            tracing::debug!(peer = %entry.key.peer, error = %e, "BFD send failed");
        }
    }
}

fn new_socket(local: IpAddr, interface: Option<&str>) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(local, 0)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    if local.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Some(device) = interface {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    Ok(socket)
}

fn bind_sending(key: &PeerKey, port: u16) -> io::Result<std::net::UdpSocket> {
    let socket = new_socket(key.local, key.interface.as_deref())?;
    if key.local.is_ipv6() {
        socket.set_unicast_hops_v6(TTL)?;
    } else {
        socket.set_ttl_v4(TTL)?;
    }
    socket.bind(&SocketAddr::new(key.local, port).into())?;
    Ok(socket.into())
}

fn receiving_socket(key: &RxKey) -> io::Result<UdpSocket> {
    let socket = new_socket(key.local, key.interface.as_deref())?;
    if key.local.is_ipv6() {
        socket.set_recv_hoplimit_v6(true)?;
    } else {
        sys::set_recv_ttl_v4(socket.as_fd())?;
    }
    socket.bind(&SocketAddr::new(key.local, key.hop.port()).into())?;
    UdpSocket::from_std(socket.into())
}

/// Reads datagrams from one receiving socket and queues them for the task.
async fn read(
    socket: UdpSocket,
    rx: RxKey,
    inbound: mpsc::Sender<Inbound>,
    counters: Arc<Counters>,
) {
    loop {
        let mut buf = [0u8; DATAGRAM_BUF];
        let received = match socket
            .async_io(Interest::READABLE, || {
                sys::recv_with_ttl(socket.as_fd(), &mut buf)
            })
            .await
        {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(local = %rx.local, error = %e, "BFD receive failed");
                // Not a busy loop on a persistent error: wait a little.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let datagram = Inbound {
            rx: rx.clone(),
            from: received.from,
            ttl: received.ttl,
            len: received.len.min(DATAGRAM_BUF),
            buf,
        };
        match inbound.try_send(datagram) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => bump(&counters.queue_full),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
