//! The I/O shell around [`Session`]: a Tokio task per peer that owns the session and its sockets,
//! and one [`Listener`] that hands inbound connections to the peer they come from.
//!
//! A [`Peer`] is spawned from a [`PeerConfig`]; the owner hands it new routes with
//! [`Peer::set_routes`] (a `watch`: only the latest set matters, the session sends the
//! difference), reads a cheap [`PeerStatus`] snapshot from [`Peer::status`], and stops it with
//! [`Peer::shutdown`] (Cease / Administrative Shutdown, then the task ends; dropping the `Peer`
//! does the same without waiting).
//!
//! # Choices
//!
//! - **Dial timeout**: [`DIAL_TIMEOUT`], 10 s by default ([`PeerConfig::dial_timeout`]). A dial
//!   that takes longer is reported as [`Session::connect_failed`]; the session's own
//!   connect-retry timer may abandon it sooner (it then sends `Close` for the dial, and the
//!   shell drops it).
//! - **TTL**: every connection, dialed or accepted, single-hop or `ebgpMultiHop`, is sent with
//!   TTL (IPv6: hop limit) [`TTL`] = 255. FRR, BIRD and GoBGP accept any TTL unless GTSM
//!   (RFC 5082, FRR's `ttl-security hops N`) is configured, and with GTSM they *require* 255 - N
//!   or more, so 255 works with both; TTL 1 would break every multi-hop peer and GTSM. We do
//!   not enforce a minimum TTL on what we receive (`IP_MINTTL`) yet.
//! - **Passive side**: one [`Listener`] (port [`BGP_PORT`] by default, any port for tests)
//!   accepts every connection; one from a registered peer's address ([`Listener::add_peer`]) goes
//!   to that peer's task, which calls [`Session::accept`] (the session itself closes it while it
//!   is stopped or holding back after an error); one from any other address is closed at once.
//!   A dual-stack listener sees IPv4 peers as v4-mapped addresses; they are matched as IPv4.
//! - **TCP-MD5** (RFC 2385): `TCP_MD5SIG` with the peer's address, set on a dialing socket before
//!   `connect`, and on the listener for every registered peer with a password (the kernel then
//!   drops unsigned or wrongly signed segments from that address, before the handshake).
//!   [`Password`] never shows in `Debug` output or logs.
//! - **Source address**: [`PeerConfig::source`] binds the dialing socket (port chosen by the
//!   kernel) before `connect`.
//! - Writes go through a task per connection, so a peer that stops reading cannot stall the
//!   session (its hold timer then ends the connection). On shutdown the shell waits up to
//!   [`FLUSH_TIMEOUT`] for the Cease NOTIFICATION to be written.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::counters::SessionError;
use super::sys;
use super::{Action, ConnId, Session, SessionConfig, State, Stop};
use crate::announce::bgp::PeerRoutes;

/// The BGP port (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;
/// How long a dial may take before it counts as failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The TTL (IPv6 hop limit) of every BGP connection (see the module documentation).
pub const TTL: u32 = 255;
/// How long a stopping peer waits for its last messages (the Cease) to be written.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Inbound connections queued for one peer's task; more are closed.
const INBOUND_QUEUE: usize = 4;
/// Events (bytes read, dial results) queued for one peer's task; readers wait when it is full.
const EVENT_QUEUE: usize = 64;
const READ_CHUNK: usize = 16 * 1024;

/// A TCP-MD5 key. Its `Debug` output is redacted, so it cannot leak through a logged config.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// One peer: the session's configuration and how to reach the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub session: SessionConfig,
    /// `peerAddress`.
    pub address: IpAddr,
    /// `peerPort`, [`BGP_PORT`] by default.
    pub port: u16,
    /// Bind dialing sockets to this local address.
    pub source: Option<IpAddr>,
    /// Bind dialing sockets to this VRF device (SO_BINDTODEVICE).
    pub vrf: Option<String>,
    pub password: Option<Password>,
    pub dial_timeout: Duration,
}

impl PeerConfig {
    /// Port 179, no source address, no password, [`DIAL_TIMEOUT`].
    pub fn new(session: SessionConfig, address: IpAddr) -> PeerConfig {
        PeerConfig {
            session,
            address,
            port: BGP_PORT,
            source: None,
            vrf: None,
            password: None,
            dial_timeout: DIAL_TIMEOUT,
        }
    }
}

/// What status and metrics need of a session, cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: State,
    /// When the session last reached Established, while it is.
    pub established_since: Option<SystemTime>,
    /// Prefixes the peer holds from us.
    pub prefixes_announced: usize,
    /// UPDATEs sent over the session's whole life.
    pub updates_sent: u64,
    /// Why the session (or a connection attempt) last failed.
    pub last_error: Option<String>,
    /// The AS the peer presented in the OPEN of the session, while it is established.
    pub peer_as: Option<u32>,
}

impl PeerStatus {
    /// Before the session has done anything: Idle, nothing sent.
    pub fn initial() -> PeerStatus {
        PeerStatus {
            state: State::Idle,
            established_since: None,
            prefixes_announced: 0,
            updates_sent: 0,
            last_error: None,
            peer_as: None,
        }
    }
}

/// The owner's handle on one peer's task.
#[derive(Debug)]
pub struct Peer {
    address: IpAddr,
    password: Option<Password>,
    routes: watch::Sender<Arc<PeerRoutes>>,
    status: watch::Receiver<PeerStatus>,
    inbound: mpsc::Sender<TcpStream>,
    bfd_down: mpsc::Sender<()>,
    stop: Option<oneshot::Sender<Stop>>,
    task: Option<JoinHandle<()>>,
}

/// Tells a peer's session that BFD declared the path down ([`Peer::bfd_signal`]).
#[derive(Clone, Debug)]
pub struct BfdDownSignal(mpsc::Sender<()>);

impl BfdDownSignal {
    /// The session tears down at once (Cease, BFD Down); a signal while one is pending is the
    /// same signal.
    pub fn send(&self) {
        let _ = self.0.try_send(());
    }

    /// A signal with its receiving end, for tests of what sends it.
    #[cfg(test)]
    pub fn pair() -> (Self, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        (Self(tx), rx)
    }
}

impl Peer {
    /// Starts the session (it dials at once unless passive). Must be called inside a Tokio
    /// runtime. `seed` drives the reconnect jitter.
    pub fn spawn(config: PeerConfig, seed: u64) -> Peer {
        let (routes, routes_rx) = watch::channel(Arc::new(PeerRoutes::new()));
        let (status_tx, status) = watch::channel(PeerStatus::initial());
        let (inbound, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (stop, stop_rx) = oneshot::channel();
        let (bfd_down, bfd_down_rx) = mpsc::channel(1);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let address = config.address;
        let password = config.password.clone();
        let session = Session::new(config.session.clone(), seed);
        let shell = Shell {
            config,
            session,
            events_tx,
            dials: BTreeMap::new(),
            conns: BTreeMap::new(),
            closing: Vec::new(),
            status: status_tx,
            established_since: None,
            last_error: None,
            seen_error: None,
        };
        let task = tokio::spawn(shell.run(routes_rx, inbound_rx, events, bfd_down_rx, stop_rx));
        Peer {
            address,
            password,
            routes,
            status,
            inbound,
            bfd_down,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The routes the peer should hold from us from now on (shared: the caller, the session and
    /// other peers with the same routes hold one copy).
    pub fn set_routes(&self, routes: impl Into<Arc<PeerRoutes>>) {
        self.routes.send_replace(routes.into());
    }

    /// What BFD uses to take the session down when the path fails.
    pub fn bfd_signal(&self) -> BfdDownSignal {
        BfdDownSignal(self.bfd_down.clone())
    }

    /// The session's state, updated after every event.
    pub fn status(&self) -> watch::Receiver<PeerStatus> {
        self.status.clone()
    }

    /// Cease / Administrative Shutdown on the open connection, then the task ends.
    pub async fn shutdown(self) {
        self.stop(Stop::Shutdown).await;
    }

    /// The speaker is restarting: where Graceful Restart was negotiated the connection closes
    /// without a NOTIFICATION, so the peer keeps our routes; elsewhere as [`Peer::shutdown`].
    pub async fn leave_for_restart(self) {
        self.stop(Stop::Restart).await;
    }

    async fn stop(mut self, how: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(peer = %self.address, error = %e, "BGP peer task failed");
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Dropping the stop sender tells the task to shut down; it finishes on its own.
        self.stop.take();
    }
}

/// What the connection tasks tell the peer task.
#[derive(Debug)]
enum Event {
    Dialed(ConnId, io::Result<TcpStream>),
    Read(ConnId, Vec<u8>),
    /// EOF, or a read or write error.
    Gone(ConnId, Option<io::Error>),
}

#[derive(Debug)]
struct Conn {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    writer_task: JoinHandle<()>,
    reader_task: JoinHandle<()>,
}

/// The peer task's state.
struct Shell {
    config: PeerConfig,
    session: Session,
    events_tx: mpsc::Sender<Event>,
    dials: BTreeMap<ConnId, JoinHandle<()>>,
    conns: BTreeMap<ConnId, Conn>,
    /// Writers of closed connections, still flushing.
    closing: Vec<JoinHandle<()>>,
    status: watch::Sender<PeerStatus>,
    established_since: Option<SystemTime>,
    last_error: Option<String>,
    /// The session's last error as last seen, to notice a new one.
    seen_error: Option<SessionError>,
}

impl Shell {
    async fn run(
        mut self,
        mut routes: watch::Receiver<Arc<PeerRoutes>>,
        mut inbound: mpsc::Receiver<TcpStream>,
        mut events: mpsc::Receiver<Event>,
        mut bfd_down: mpsc::Receiver<()>,
        mut stop: oneshot::Receiver<Stop>,
    ) {
        let peer = self.config.address;
        let now = Instant::now();
        let initial = routes.borrow_and_update().clone();
        let mut actions = self.session.set_routes(now, initial);
        actions.extend(self.session.start(now));
        self.execute(actions);
        self.publish();
        let mut routes_open = true;
        let how = loop {
            let deadline = self.session.next_deadline();
            let timer = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            let actions = tokio::select! {
                // A dropped handle shuts the session down.
                how = &mut stop => break how.unwrap_or(Stop::Shutdown),
                () = timer => self.session.on_timer(Instant::now()),
                event = events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => Vec::new(),
                },
                Some(stream) = inbound.recv() => self.accept(stream),
                Some(()) = bfd_down.recv() => self.session.bfd_down(Instant::now()),
                changed = routes.changed(), if routes_open => match changed {
                    Ok(()) => {
                        let desired = routes.borrow_and_update().clone();
                        self.session.set_routes(Instant::now(), desired)
                    }
                    Err(_) => {
                        routes_open = false;
                        Vec::new()
                    }
                },
            };
            self.execute(actions);
            self.publish();
        };
        let actions = self.session.stop(Instant::now(), how);
        self.execute(actions);
        self.publish();
        for (_, dial) in std::mem::take(&mut self.dials) {
            dial.abort();
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        let flushed = futures::future::join_all(std::mem::take(&mut self.closing));
        if tokio::time::timeout(FLUSH_TIMEOUT, flushed).await.is_err() {
            tracing::debug!(%peer, "BGP peer: last messages not flushed in time");
        }
        tracing::info!(%peer, "BGP peer stopped");
    }

    fn handle(&mut self, event: Event) -> Vec<Action> {
        let now = Instant::now();
        match event {
            Event::Dialed(id, result) => {
                if self.dials.remove(&id).is_none() {
                    // The session gave up on this dial already; dropping the stream closes it.
                    return Vec::new();
                }
                match result {
                    Ok(stream) => {
                        if let Ok(local) = stream.local_addr() {
                            self.session.set_local_address(local.ip());
                        }
                        self.install(id, stream);
                        self.session.connected(now, id)
                    }
                    Err(e) => {
                        let actions = self.session.connect_failed(now, id);
                        self.note_session_error();
                        let peer = SocketAddr::new(self.config.address, self.config.port);
                        tracing::debug!(%peer, error = %e, "BGP dial failed");
                        self.last_error = Some(format!("connecting to {peer}: {e}"));
                        actions
                    }
                }
            }
            Event::Read(id, bytes) if self.conns.contains_key(&id) => {
                self.session.receive(now, id, &bytes)
            }
            Event::Gone(id, error) if self.conns.contains_key(&id) => {
                if let Some(e) = error {
                    tracing::debug!(peer = %self.config.address, error = %e, "BGP connection failed");
                }
                self.session.closed(now, id)
            }
            Event::Read(..) | Event::Gone(..) => Vec::new(),
        }
    }

    fn accept(&mut self, stream: TcpStream) -> Vec<Action> {
        if let Err(e) = set_ttl(SockRef::from(&stream)) {
            tracing::debug!(peer = %self.config.address, error = %e, "cannot set the TTL");
        }
        if let Ok(local) = stream.local_addr() {
            self.session.set_local_address(local.ip());
        }
        let (id, actions) = self.session.accept(Instant::now());
        self.install(id, stream);
        actions
    }

    fn execute(&mut self, actions: Vec<Action>) {
        let peer = self.config.address;
        for action in actions {
            match action {
                Action::Connect(id) => self.dial(id),
                Action::Send(id, bytes) => {
                    if let Some(conn) = self.conns.get(&id) {
                        // A failed send means the writer is gone; its Gone event follows.
                        let _ = conn.writer.send(bytes);
                    }
                }
                Action::Close(id) => self.close(id),
                Action::Established(_) => {
                    self.established_since = Some(SystemTime::now());
                    tracing::info!(%peer, "BGP session established");
                }
                Action::Down(error) => {
                    self.established_since = None;
                    tracing::warn!(%peer, %error, "BGP session down");
                }
            }
        }
    }

    fn dial(&mut self, id: ConnId) {
        let events = self.events_tx.clone();
        let target = SocketAddr::new(self.config.address, self.config.port);
        let source = self.config.source;
        let vrf = self.config.vrf.clone();
        let password = self.config.password.clone();
        let timeout = self.config.dial_timeout;
        let task = tokio::spawn(async move {
            let result =
                match tokio::time::timeout(timeout, dial(target, source, vrf, password)).await {
                    Ok(result) => result,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {timeout:?}"),
                    )),
                };
            let _ = events.send(Event::Dialed(id, result)).await;
        });
        self.dials.insert(id, task);
    }

    fn install(&mut self, id: ConnId, stream: TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %self.config.address, error = %e, "cannot set TCP_NODELAY");
        }
        let (read, write) = stream.into_split();
        let (writer, queue) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(write_loop(id, write, queue, self.events_tx.clone()));
        let reader_task = tokio::spawn(read_loop(id, read, self.events_tx.clone()));
        self.conns.insert(
            id,
            Conn {
                writer,
                writer_task,
                reader_task,
            },
        );
    }

    /// Stops reading; the writer sends what is queued, then shuts the connection down.
    fn close(&mut self, id: ConnId) {
        if let Some(dial) = self.dials.remove(&id) {
            dial.abort();
        }
        if let Some(conn) = self.conns.remove(&id) {
            conn.reader_task.abort();
            drop(conn.writer);
            self.closing.retain(|t| !t.is_finished());
            self.closing.push(conn.writer_task);
        }
    }

    fn note_session_error(&mut self) {
        let current = &self.session.counters().last_error;
        if *current != self.seen_error {
            self.seen_error.clone_from(current);
            if let Some(e) = current {
                self.last_error = Some(e.to_string());
            }
        }
    }

    fn publish(&mut self) {
        self.note_session_error();
        let status = PeerStatus {
            state: self.session.state(),
            established_since: self.established_since,
            prefixes_announced: self.session.prefixes_announced(),
            updates_sent: self.session.counters().updates_sent,
            last_error: self.last_error.clone(),
            peer_as: self.session.negotiated().map(|n| n.peer_as),
        };
        self.status.send_if_modified(|old| {
            if *old == status {
                return false;
            }
            *old = status;
            true
        });
    }
}

/// Opens a connection to `target` with our socket options (TTL, TCP-MD5, VRF, source address).
async fn dial(
    target: SocketAddr,
    source: Option<IpAddr>,
    vrf: Option<String>,
    password: Option<Password>,
) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    set_ttl(SockRef::from(&socket))?;
    if let Some(password) = &password {
        sys::set_md5_key(
            socket.as_fd(),
            target.is_ipv6(),
            target.ip(),
            password.as_bytes(),
        )?;
    }
    if let Some(vrf) = &vrf {
        // Before bind and connect: the VRF's table then routes both.
        socket.bind_device(Some(vrf.as_bytes())).map_err(|e| {
            let why = if e.raw_os_error() == Some(libc::ENODEV) {
                "no such device on this node".to_owned()
            } else {
                e.to_string()
            };
            io::Error::new(e.kind(), format!("binding to VRF {vrf:?}: {why}"))
        })?;
    }
    if let Some(source) = source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(target).await
}

/// Sets [`TTL`] on `socket`; an IPv6 socket may carry an IPv4 peer (v4-mapped), so it gets both.
fn set_ttl(socket: SockRef<'_>) -> io::Result<()> {
    if socket.domain()? == Domain::IPV6 {
        socket.set_unicast_hops_v6(TTL)?;
        // Only a v4-mapped connection uses it; a pure IPv6 socket may refuse it.
        let _ = socket.set_ttl_v4(TTL);
        Ok(())
    } else {
        socket.set_ttl_v4(TTL)
    }
}

async fn read_loop(id: ConnId, mut read: OwnedReadHalf, events: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let event = match read.read(&mut buf).await {
            Ok(0) => Event::Gone(id, None),
            Ok(n) => Event::Read(id, buf.get(..n).unwrap_or_default().to_vec()),
            Err(e) => Event::Gone(id, Some(e)),
        };
        let last = matches!(event, Event::Gone(..));
        if events.send(event).await.is_err() || last {
            return;
        }
    }
}

async fn write_loop(
    id: ConnId,
    mut write: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::Sender<Event>,
) {
    while let Some(bytes) = queue.recv().await {
        if let Err(e) = write.write_all(&bytes).await {
            let _ = events.send(Event::Gone(id, Some(e))).await;
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Accepts inbound BGP connections and hands each to the peer it comes from.
#[derive(Debug)]
pub struct Listener {
    shared: Arc<ListenerShared>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct ListenerShared {
    socket: TcpListener,
    v6: bool,
    peers: Mutex<BTreeMap<IpAddr, mpsc::Sender<TcpStream>>>,
}

impl Listener {
    /// Listens on `addr` (`[::]:179` takes IPv4 peers too). Must be called inside a Tokio
    /// runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(128)?;
        let socket = TcpListener::from_std(std::net::TcpListener::from(socket))?;
        let local = socket.local_addr()?;
        let shared = Arc::new(ListenerShared {
            socket,
            v6: addr.is_ipv6(),
            peers: Mutex::new(BTreeMap::new()),
        });
        let task = tokio::spawn(accept_loop(shared.clone()));
        Ok(Listener {
            shared,
            local,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Hands connections from `peer`'s address to it from now on, and sets its TCP-MD5 key on
    /// the listener.
    pub fn add_peer(&self, peer: &Peer) -> io::Result<()> {
        if let Some(password) = &peer.password {
            let fd = self.shared.socket.as_fd();
            sys::set_md5_key(fd, self.shared.v6, peer.address, password.as_bytes())?;
        }
        self.shared
            .lock()
            .insert(peer.address, peer.inbound.clone());
        Ok(())
    }

    /// Closes connections from `address` from now on, and removes its TCP-MD5 key.
    pub fn remove_peer(&self, address: IpAddr) -> io::Result<()> {
        self.shared.lock().remove(&address);
        match sys::set_md5_key(self.shared.socket.as_fd(), self.shared.v6, address, &[]) {
            // No key was set for it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ListenerShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<IpAddr, mpsc::Sender<TcpStream>>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn accept_loop(shared: Arc<ListenerShared>) {
    loop {
        match shared.socket.accept().await {
            Ok((stream, from)) => {
                let from = canonical(from.ip());
                let peer = shared.lock().get(&from).cloned();
                match peer {
                    Some(peer) => {
                        if peer.try_send(stream).is_err() {
                            tracing::debug!(%from, "BGP peer busy: closing its connection");
                        }
                    }
                    None => tracing::debug!(%from, "closing a connection from an unknown peer"),
                }
            }
            Err(e) => {
                // Out of descriptors, or the like: do not spin.
                tracing::warn!(error = %e, "accepting a BGP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// IPv4 peers on a dual-stack socket show as v4-mapped IPv6 addresses.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
