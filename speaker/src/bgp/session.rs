//! The BGP-4 finite state machine (RFC 4271 §8) of one peer, sans I/O.
//!
//! The shell owns the sockets and the clock. It tells the session what happened (a method per
//! event, each taking `now`) and carries out the [`Action`]s returned, in order; it calls
//! [`Session::on_timer`] at [`Session::next_deadline`]. Connections are named by a [`ConnId`] the
//! session hands out (in [`Action::Connect`] for a dial, from [`Session::accept`] for an
//! inbound one), because during a collision (§6.8) there are two at once.
//!
//! Deviations, on purpose: a failed dial goes to Active (and retries on the connect-retry timer)
//! rather than to Idle; the session restarts itself after an error (RFC 4271's optional
//! automatic start), after the back-off delay, during which it refuses inbound connections
//! (Idle) like the RFC's IdleHoldTimer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::config::{BACKOFF_RESET_AFTER, Backoff, OPEN_HOLD_TIME, SessionConfig};
use super::counters::{Counters, SessionError};
use super::rib::{AdjRibOut, UpdateContext, end_of_rib};
use super::wire::{self, Capability, Family, Notification, code};
use crate::announce::bgp::RouteAttributes;

mod open;
mod receive;

#[cfg(test)]
mod tests;

/// Cease subcode "BFD Down" (RFC 9384).
const CEASE_BFD_DOWN: u8 = 10;

/// Names one TCP connection of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// The session states of RFC 4271 §8.2.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// How an operator stops a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The peer is removed or disabled: Cease / Administrative Shutdown (6/2), stay down.
    Shutdown,
    /// Its configuration changed: Cease / Administrative Reset (6/4), then start again.
    Reset,
    /// The speaker is restarting (SIGTERM, an upgrade): where Graceful Restart was negotiated,
    /// close the connection without a NOTIFICATION, so the peer keeps our routes until the next
    /// process sends them again; elsewhere as [`Stop::Shutdown`].
    Restart,
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Dial the peer; report [`Session::connected`] or [`Session::connect_failed`] for this id.
    Connect(ConnId),
    /// Write these bytes (one BGP message) to the connection.
    Send(ConnId, Vec<u8>),
    /// Close the connection after writing what was queued; no more events for it are needed.
    Close(ConnId),
    /// The session is up on this connection (see [`Session::negotiated`]).
    Established(ConnId),
    /// The session left Established, and why.
    Down(SessionError),
}

/// What both OPENs settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// min(ours, theirs); zero means no keepalives and no hold timer.
    pub hold_time: Duration,
    pub keepalive: Duration,
    /// Families both sides carry.
    pub families: BTreeSet<Family>,
    pub four_octet: bool,
    pub route_refresh: bool,
    /// The AS the peer presented (what a dynamicASN peer turned out to be).
    pub peer_as: u32,
    pub peer_id: Ipv4Addr,
    /// The peer's Graceful Restart capability (RFC 4724), as it sent it.
    pub peer_graceful_restart: Option<Capability>,
    /// Both sides offered Graceful Restart: the peer keeps our routes when the connection
    /// closes without a NOTIFICATION, until we send them again (and End-of-RIB).
    pub graceful_restart: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ConnState {
    Connecting,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    direction: Direction,
    state: ConnState,
    /// Bytes of an incomplete message (less than one message, so at most 4095).
    buf: Vec<u8>,
    hold_deadline: Option<Instant>,
    keepalive_deadline: Option<Instant>,
    negotiated: Option<Negotiated>,
}

/// One BGP peer: its FSM, its connections and its Adj-RIB-Out.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    started: bool,
    /// In Idle after an error: refuse inbound connections until `retry_at`.
    idle: bool,
    /// The connect-retry timer (Connect, Active) or the restart timer (Idle).
    retry_at: Option<Instant>,
    backoff: Backoff,
    conns: Vec<Conn>,
    next_id: u64,
    established_since: Option<Instant>,
    desired: Arc<BTreeMap<IpNet, RouteAttributes>>,
    rib: AdjRibOut,
    counters: Counters,
}

impl Session {
    /// A stopped session (Idle). `seed` drives the back-off jitter.
    pub fn new(config: SessionConfig, seed: u64) -> Session {
        let backoff = Backoff::new(config.connect_retry, config.connect_retry_max, seed);
        Session {
            config,
            started: false,
            idle: false,
            retry_at: None,
            backoff,
            conns: Vec::new(),
            next_id: 0,
            established_since: None,
            desired: Arc::default(),
            rib: AdjRibOut::default(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The prefixes the peer holds from us now.
    pub fn prefixes_announced(&self) -> usize {
        self.rib.len()
    }

    /// What the peer holds from us now.
    pub fn advertised(&self) -> &BTreeMap<IpNet, RouteAttributes> {
        self.rib.routes()
    }

    /// The state of the most advanced connection (RFC 4271 §8.2.2).
    pub fn state(&self) -> State {
        let best = self.conns.iter().map(|c| c.state).max();
        match best {
            Some(ConnState::Established) => State::Established,
            Some(ConnState::OpenConfirm) => State::OpenConfirm,
            Some(ConnState::OpenSent) => State::OpenSent,
            Some(ConnState::Connecting) => State::Connect,
            None if !self.started || self.idle => State::Idle,
            None => State::Active,
        }
    }

    /// What the Established connection negotiated.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.established().and_then(|c| c.negotiated.as_ref())
    }

    /// Families with desired routes that this session does not carry (not negotiated, or no
    /// next hop given): the shell reports them. Empty unless Established.
    pub fn unsent_families(&self) -> BTreeSet<Family> {
        let Some(negotiated) = self.negotiated() else {
            return BTreeSet::new();
        };
        let ctx = self.update_context(negotiated);
        self.desired
            .keys()
            .map(Family::of)
            .filter(|f| !negotiated.families.contains(f) || !ctx.has_next_hop(*f))
            .collect()
    }

    /// When [`Session::on_timer`] must next be called, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flat_map(|c| [c.hold_deadline, c.keepalive_deadline])
            .chain([self.retry_at])
            .flatten()
            .min()
    }

    /// ManualStart (or, if passive, ManualStart with passive TCP establishment).
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.started {
            return out;
        }
        self.started = true;
        self.idle = false;
        self.backoff.reset();
        self.attempt(now, &mut out);
        out
    }

    /// ManualStop: Cease on every open connection (none on an Established one that keeps our
    /// routes, for [`Stop::Restart`]); [`Stop::Reset`] starts again at once.
    pub fn stop(&mut self, now: Instant, how: Stop) -> Vec<Action> {
        let mut out = Vec::new();
        let subcode = match how {
            Stop::Shutdown | Stop::Restart => code::ADMINISTRATIVE_SHUTDOWN,
            Stop::Reset => code::ADMINISTRATIVE_RESET,
        };
        let error = SessionError::Stopped {
            reset: how == Stop::Reset,
        };
        let conns: Vec<(ConnId, bool)> = self
            .conns
            .iter()
            .map(|c| {
                let keeps_routes = c.negotiated.as_ref().is_some_and(|n| n.graceful_restart);
                (c.id, c.state == ConnState::Established && keeps_routes)
            })
            .collect();
        for (id, keeps_routes) in conns {
            let notification = (how != Stop::Restart || !keeps_routes)
                .then(|| Notification::new(code::CEASE, subcode));
            self.drop_conn(now, id, notification, error.clone(), &mut out);
        }
        self.retry_at = None;
        self.idle = false;
        self.started = false;
        if how == Stop::Reset {
            out.extend(self.start(now));
        }
        out
    }

    /// The local address of a connection to the peer: the next hop of routes of its family from
    /// now on, since the peer reached us there (the node's other addresses, or those of the
    /// default VRF when the session runs in another, may not be reachable from the router).
    /// Routes of the other family keep the next hop they were configured with.
    pub fn set_local_address(&mut self, address: IpAddr) {
        match address {
            IpAddr::V4(v4) => self.config.next_hop_v4 = Some(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.config.next_hop_v4 = Some(v4),
                None => self.config.next_hop_v6 = Some(v6),
            },
        }
    }

    /// The shell's dial for `id` succeeded: send our OPEN.
    pub fn connected(&mut self, now: Instant, id: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
        let open = self.open_message();
        if let Some(conn) = self
            .conn_mut(id)
            .filter(|c| c.state == ConnState::Connecting)
        {
            conn.state = ConnState::OpenSent;
            conn.hold_deadline = Some(now + OPEN_HOLD_TIME);
            out.push(Action::Send(id, open));
            self.retry_at = None;
        }
        out
    }

    /// The shell's dial for `id` failed: wait in Active for the connect-retry timer.
    pub fn connect_failed(&mut self, now: Instant, id: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
        if self
            .conn(id)
            .is_some_and(|c| c.state == ConnState::Connecting)
        {
            self.drop_conn(now, id, None, SessionError::ConnectFailed, &mut out);
        }
        out
    }

    /// The peer connected to us. Returns the id to report its bytes under; the actions may
    /// close it at once (we are stopped, or in Idle after an error).
    pub fn accept(&mut self, now: Instant) -> (ConnId, Vec<Action>) {
        let id = self.new_id();
        let mut out = Vec::new();
        if !self.started || self.idle {
            out.push(Action::Close(id));
            return (id, out);
        }
        // A peer that connects again abandoned its earlier attempt: keep one inbound handshake.
        let stale: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.direction == Direction::Inbound && c.state != ConnState::Established)
            .map(|c| c.id)
            .collect();
        for old in stale {
            self.drop_conn(now, old, None, SessionError::ConnectionClosed, &mut out);
        }
        self.conns.push(Conn {
            id,
            direction: Direction::Inbound,
            state: ConnState::OpenSent,
            buf: Vec::new(),
            hold_deadline: Some(now + OPEN_HOLD_TIME),
            keepalive_deadline: None,
            negotiated: None,
        });
        self.retry_at = None;
        self.idle = false;
        out.push(Action::Send(id, self.open_message()));
        (id, out)
    }

    /// The connection closed under us (EOF or error).
    pub fn closed(&mut self, now: Instant, id: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
        if self.conn(id).is_some() {
            self.drop_conn(now, id, None, SessionError::ConnectionClosed, &mut out);
        }
        out
    }

    /// BFD says the peer is unreachable: tear the session down now, not after the hold time.
    pub fn bfd_down(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(id) = self.established().map(|c| c.id) {
            let n = Notification::new(code::CEASE, CEASE_BFD_DOWN);
            self.drop_conn(now, id, Some(n), SessionError::BfdDown, &mut out);
        }
        out
    }

    /// Timers: hold expiry, keepalives, connect retry and restart.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.hold_deadline.is_some_and(|d| d <= now))
            .map(|c| c.id)
            .collect();
        for id in expired {
            let n = Notification::new(code::HOLD_TIMER_EXPIRED, 0);
            self.fail(now, id, n, "hold timer expired".into(), &mut out);
        }
        for conn in &mut self.conns {
            let Some(deadline) = conn.keepalive_deadline.filter(|d| *d <= now) else {
                continue;
            };
            let interval = conn
                .negotiated
                .as_ref()
                .map_or(Duration::ZERO, |n| n.keepalive);
            out.push(Action::Send(conn.id, wire::encode_keepalive()));
            // Catch up without a burst if we were called late.
            let mut next = deadline + interval;
            if next <= now {
                next = now + interval;
            }
            conn.keepalive_deadline = Some(next);
        }
        if self.retry_at.is_some_and(|d| d <= now) {
            self.retry_at = None;
            self.idle = false;
            let dialing: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|c| c.state == ConnState::Connecting)
                .map(|c| c.id)
                .collect();
            for id in dialing {
                // The dial did not finish within the connect-retry time: abandon it, dial anew.
                self.conns.retain(|c| c.id != id);
                out.push(Action::Close(id));
                self.counters.last_error = Some(SessionError::ConnectFailed);
                self.backoff.failed();
            }
            if self.started && self.conns.is_empty() {
                self.attempt(now, &mut out);
            }
        }
        out
    }

    /// The routes to advertise. When Established, sends only the difference.
    pub fn set_routes(
        &mut self,
        now: Instant,
        routes: impl Into<Arc<BTreeMap<IpNet, RouteAttributes>>>,
    ) -> Vec<Action> {
        self.desired = routes.into();
        let mut out = Vec::new();
        self.sync(now, &mut out);
        out
    }

    // ---- internals ----

    fn new_id(&mut self) -> ConnId {
        self.next_id += 1;
        ConnId(self.next_id)
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    fn established(&self) -> Option<&Conn> {
        self.conns
            .iter()
            .find(|c| c.state == ConnState::Established)
    }

    /// Dials (unless passive) and arms the connect-retry timer.
    fn attempt(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.config.passive {
            self.retry_at = None;
            return;
        }
        let id = self.new_id();
        self.conns.push(Conn {
            id,
            direction: Direction::Outbound,
            state: ConnState::Connecting,
            buf: Vec::new(),
            hold_deadline: None,
            keepalive_deadline: None,
            negotiated: None,
        });
        out.push(Action::Connect(id));
        // The dial gets as long as the next wait would be; a failure then counts.
        self.retry_at = Some(now + self.backoff.delay());
    }

    fn establish(&mut self, now: Instant, id: ConnId, out: &mut Vec<Action>) {
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.id != id)
            .map(|c| c.id)
            .collect();
        for other in others {
            let n = Notification::new(code::CEASE, code::CONNECTION_COLLISION);
            let detail = "another connection reached Established".to_string();
            self.fail(now, other, n, detail, out);
        }
        self.heard(now, id);
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        conn.state = ConnState::Established;
        self.established_since = Some(now);
        self.retry_at = None;
        self.counters.established += 1;
        self.rib.clear();
        out.push(Action::Established(id));
        let families = self.sync(now, out);
        for family in families {
            self.send(now, id, end_of_rib(family), out);
        }
    }

    fn update_context(&self, negotiated: &Negotiated) -> UpdateContext {
        UpdateContext {
            local_asn: self.config.local_asn,
            ibgp: self.config.is_ibgp(),
            four_octet: negotiated.four_octet,
            next_hop_v4: self.config.next_hop_v4,
            next_hop_v6: self.config.next_hop_v6,
        }
    }

    /// Sends what the peer lacks; returns the negotiated families (for End-of-RIB).
    fn sync(&mut self, now: Instant, out: &mut Vec<Action>) -> BTreeSet<Family> {
        let Some((id, negotiated)) = self
            .established()
            .and_then(|c| Some((c.id, c.negotiated.clone()?)))
        else {
            return BTreeSet::new();
        };
        let ctx = self.update_context(&negotiated);
        let sync = self.rib.sync(&self.desired, &negotiated.families, &ctx);
        self.counters.prefixes_skipped = sync.skipped;
        self.counters.prefixes_oversized = sync.oversized;
        for message in sync.messages {
            self.send(now, id, message, out);
        }
        negotiated.families
    }

    /// Sends an UPDATE; sending one restarts the keepalive timer (RFC 4271 §4.4).
    fn send(&mut self, now: Instant, id: ConnId, message: Vec<u8>, out: &mut Vec<Action>) {
        self.counters.updates_sent += 1;
        out.push(Action::Send(id, message));
        if let Some(conn) = self.conn_mut(id) {
            let keepalive = conn
                .negotiated
                .as_ref()
                .map_or(Duration::ZERO, |n| n.keepalive);
            if !keepalive.is_zero() {
                conn.keepalive_deadline = Some(now + keepalive);
            }
        }
    }

    /// Sends a NOTIFICATION on `id` and drops it.
    fn fail(
        &mut self,
        now: Instant,
        id: ConnId,
        notification: Notification,
        detail: String,
        out: &mut Vec<Action>,
    ) {
        let error = SessionError::NotificationSent {
            notification: notification.clone(),
            detail,
        };
        self.drop_conn(now, id, Some(notification), error, out);
    }

    /// Closes `id` (after a NOTIFICATION, if given) and settles what follows: the session goes
    /// down if it was the Established one; with no connection left, the session waits for the
    /// back-off delay (Idle after an error, Active after a lost connection).
    fn drop_conn(
        &mut self,
        now: Instant,
        id: ConnId,
        notification: Option<Notification>,
        error: SessionError,
        out: &mut Vec<Action>,
    ) {
        let Some(pos) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let conn = self.conns.remove(pos);
        if let Some(n) = notification.filter(|_| conn.state != ConnState::Connecting) {
            *self
                .counters
                .notifications_sent
                .entry((n.code, n.subcode))
                .or_default() += 1;
            out.push(Action::Send(id, wire::encode_notification(&n)));
        }
        out.push(Action::Close(id));
        let collision = matches!(
            &error,
            SessionError::NotificationSent { notification, .. }
                if notification.code == code::CEASE
                    && notification.subcode == code::CONNECTION_COLLISION
        );
        if conn.state == ConnState::Established {
            if self
                .established_since
                .is_some_and(|since| now.saturating_duration_since(since) >= BACKOFF_RESET_AFTER)
            {
                self.backoff.reset();
            }
            self.established_since = None;
            self.rib.clear();
            out.push(Action::Down(error.clone()));
        }
        // Losing a collision is the protocol working, not a failure worth reporting.
        if !collision {
            self.counters.last_error = Some(error.clone());
        }
        if !self.conns.is_empty() || !self.started || matches!(error, SessionError::Stopped { .. })
        {
            return;
        }
        // Errors that the peer or we announced wait in Idle; a lost TCP connection in Active.
        self.idle = !matches!(
            error,
            SessionError::ConnectionClosed | SessionError::ConnectFailed
        );
        self.retry_at = Some(now + self.backoff.next_delay());
    }
}
