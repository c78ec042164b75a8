//! One BFD session in Asynchronous mode (RFC 5880 §6), sans I/O.
//!
//! The shell owns the socket and the clock. It hands every decoded packet addressed to this
//! session to [`Session::receive`], calls [`Session::on_timer`] at [`Session::next_deadline`],
//! and carries out the [`Action`]s returned, in order: [`Action::Send`] a packet to the peer,
//! and report [`Action::StateChanged`] (the BGP session goes down when BFD leaves Up).
//!
//! # Timers, and why they move the way they do
//!
//! - While the session is not Up, bfd.DesiredMinTxInterval is at least [`SLOW_TX`] (§6.8.3):
//!   a peer that comes and goes costs one packet a second. On reaching Up the profile's value is
//!   advertised, which is a change of timers and so starts a Poll Sequence.
//! - A change of bfd.DesiredMinTxInterval or bfd.RequiredMinRxInterval while Up is advertised
//!   at once with the Poll bit, until the peer answers with Final (§6.5, §6.8.3). Until then
//!   the timers use whichever of the old and the new value cannot make either side declare the
//!   path down wrongly: the smaller transmit interval (a peer that already computes its
//!   detection time from the new, faster rate must get packets that fast; a slower rate waits
//!   for Final, as the RFC requires) and the larger receive interval (a peer may slow down as
//!   soon as it reads the new value; a faster one is only trusted after Final). Outside Up a
//!   change applies at once, without a Poll.
//! - The transmit interval is max(our DesiredMinTx, the peer's RequiredMinRx) (§6.8.2), each
//!   period shortened by a random 0–25 % (0–25 % but at least 10 % when our multiplier is 1,
//!   §6.8.7) from a seeded xorshift PRNG, so tests are exact. The period is measured from the
//!   last packet sent, so a shorter interval (the peer wants more, or we reached Up) takes
//!   effect within the period in progress, not after it.
//! - The detection time is the peer's DetectMult × max(our RequiredMinRx, the peer's
//!   DesiredMinTx) (§6.8.4), counted from the last packet accepted.
//!
//! # What a packet is sent for
//!
//! Periodically (not while we are passive and have not heard the peer, §6.1; not while the
//! peer's RequiredMinRx is 0; not while the peer is in Demand mode and both sides are Up,
//! §6.8.7); at once on every change of our state, so a session comes up in three packets
//! rather than three seconds; at once with Final when the peer polls (§6.8.6). We never ask for
//! Demand mode ourselves (see the module documentation of [`crate::bfd`]).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use super::packet::{Diag, Packet, State};

#[cfg(test)]
mod tests;

/// bfd.DesiredMinTxInterval while the session is not Up (RFC 5880 §6.8.3: at least one second).
pub const SLOW_TX: Duration = Duration::from_secs(1);
/// The shortest interval we transmit at or ask for, whatever a profile says: the API allows
/// 10 ms and up; this only keeps a zero from turning the timer into a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// bfd.RemoteMinRxInterval before the peer said anything (§6.8.1: 1 µs).
const INITIAL_REMOTE_MIN_RX: Duration = Duration::from_micros(1);

/// The timers of a profile, as the operator wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timers {
    /// bfd.DesiredMinTxInterval once Up (the profile's transmitInterval).
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval (the profile's receiveInterval).
    pub required_min_rx: Duration,
    /// bfd.DetectMult; 0 is treated as 1, since a packet with 0 is invalid.
    pub detect_mult: u8,
}

/// What a session is configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionConfig {
    pub timers: Timers,
    /// Passive role (§6.1): send nothing until the peer has sent us a packet.
    pub passive: bool,
}

/// What the shell must do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this packet to the peer.
    Send(Packet),
    /// The session changed state; `diag` is bfd.LocalDiag after the change (why we left Up).
    StateChanged { from: State, to: State, diag: Diag },
}

/// The pair of intervals that a Poll Sequence negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Intervals {
    tx: Duration,
    rx: Duration,
}

/// One BFD session: RFC 5880's state variables (§6.8.1) and its two timers.
#[derive(Clone, Debug)]
pub struct Session {
    config: SessionConfig,
    local_discr: NonZeroU32,
    state: State,
    local_diag: Diag,
    remote_discr: u32,
    remote_state: State,
    remote_demand: bool,
    remote_min_rx: Duration,
    remote_desired_min_tx: Duration,
    /// 0 until the first packet.
    remote_detect_mult: u8,
    /// What we put in our packets: bfd.DesiredMinTxInterval and bfd.RequiredMinRxInterval.
    advertised: Intervals,
    /// What the timers use (see the module documentation): `advertised` outside a Poll Sequence.
    in_force: Intervals,
    /// A Poll Sequence is in progress: our periodic packets carry P.
    polling: bool,
    /// When we may first transmit (the session's creation).
    created: Instant,
    last_tx: Option<Instant>,
    /// This period's share of the transmit interval, in thousandths.
    jitter_permille: u32,
    detect_deadline: Option<Instant>,
    rng: u64,
}

impl Session {
    /// A session in Down. `local_discr` must be unique among this system's sessions; `seed`
    /// drives the transmit jitter. Unless passive, its first packet is due at `now`.
    pub fn new(config: SessionConfig, local_discr: NonZeroU32, seed: u64, now: Instant) -> Self {
        let advertised = wanted(&config.timers, State::Down);
        let mut session = Session {
            config,
            local_discr,
            state: State::Down,
            local_diag: Diag::None,
            remote_discr: 0,
            remote_state: State::Down,
            remote_demand: false,
            remote_min_rx: INITIAL_REMOTE_MIN_RX,
            remote_desired_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            advertised,
            in_force: advertised,
            polling: false,
            created: now,
            last_tx: None,
            jitter_permille: 1000,
            detect_deadline: None,
            // xorshift must not start at zero.
            rng: seed | 1,
        };
        session.jitter_permille = session.draw_jitter();
        session
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// bfd.LocalDiag: why the session last left Up (or went AdminDown).
    pub fn local_diag(&self) -> Diag {
        self.local_diag
    }

    pub fn local_discriminator(&self) -> NonZeroU32 {
        self.local_discr
    }

    /// bfd.RemoteDiscr: 0 until the peer is heard, and again after a detection time of silence.
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    /// bfd.RemoteSessionState, as last received.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// A Poll Sequence is in progress.
    pub fn polling(&self) -> bool {
        self.polling
    }

    /// The negotiated transmit interval, before jitter: max(our DesiredMinTx in force, the
    /// peer's RequiredMinRx). Zero if the peer asked for no packets.
    pub fn tx_interval(&self) -> Duration {
        if self.remote_min_rx.is_zero() {
            return Duration::ZERO;
        }
        self.in_force.tx.max(self.remote_min_rx)
    }

    /// The detection time, once a packet told us the peer's multiplier.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult != 0).then(|| {
            self.in_force
                .rx
                .max(self.remote_desired_min_tx)
                .saturating_mul(u32::from(self.remote_detect_mult))
        })
    }

    /// When [`Session::on_timer`] must next be called, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.next_tx(), self.detect_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// A packet from the peer, already past the codec's checks (RFC 5880 §6.8.6 from "If the
    /// A bit is set" on). A packet for another discriminator is ignored.
    pub fn receive(&mut self, now: Instant, packet: &Packet) -> Vec<Action> {
        let mut out = Vec::new();
        if packet.your_discriminator != 0 && packet.your_discriminator != self.local_discr.get() {
            return out;
        }
        self.remote_discr = packet.my_discriminator;
        self.remote_state = packet.state;
        self.remote_demand = packet.demand;
        self.remote_min_rx = micros(packet.required_min_rx_us);
        self.remote_desired_min_tx = micros(packet.desired_min_tx_us);
        self.remote_detect_mult = packet.detect_mult;
        if self.polling && packet.final_ {
            self.polling = false;
            self.in_force = self.advertised;
        }
        if self.state == State::AdminDown {
            self.detect_deadline = None;
            return out;
        }
        // §6.8.6, in its order; reaching Up clears the diagnostic of the last time down.
        let next = if packet.state == State::AdminDown {
            (self.state != State::Down).then_some((State::Down, Diag::NeighborSignaledSessionDown))
        } else {
            match (self.state, packet.state) {
                (State::Down, State::Down) => Some((State::Init, self.local_diag)),
                (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                    Some((State::Up, Diag::None))
                }
                (State::Up, State::Down) => Some((State::Down, Diag::NeighborSignaledSessionDown)),
                _ => None,
            }
        };
        if let Some((to, diag)) = next {
            self.transition(now, to, diag, &mut out);
        }
        if packet.poll {
            out.push(Action::Send(Packet {
                poll: false,
                final_: true,
                ..self.packet()
            }));
        }
        self.detect_deadline = self.detection_time().map(|d| now + d);
        out
    }

    /// Timers: the detection time (Init or Up → Down, diagnostic 1) and periodic transmission.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.detect_deadline.is_some_and(|d| d <= now) {
            self.detect_deadline = None;
            // §6.8.1: a detection time of silence forgets the peer's discriminator.
            self.remote_discr = 0;
            self.remote_state = State::Down;
            if matches!(self.state, State::Init | State::Up) {
                self.transition(
                    now,
                    State::Down,
                    Diag::ControlDetectionTimeExpired,
                    &mut out,
                );
            }
        }
        if self.next_tx().is_some_and(|d| d <= now) {
            self.transmit(now, &mut out);
        }
        out
    }

    /// New timers for the profile; while Up, they are negotiated with a Poll Sequence.
    pub fn set_timers(&mut self, now: Instant, timers: Timers) -> Vec<Action> {
        let mut out = Vec::new();
        self.config.timers = timers;
        let polled = self.readvertise();
        if polled {
            self.transmit(now, &mut out);
        }
        out
    }

    /// Administratively disable the session (§6.8.16): AdminDown with diagnostic 7, told to
    /// the peer at once; packets keep going out at the slow rate until the session is dropped.
    pub fn admin_down(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != State::AdminDown {
            self.transition(now, State::AdminDown, Diag::AdministrativelyDown, &mut out);
        }
        out
    }

    /// Enable it again: Down (§6.8.16).
    pub fn admin_up(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::AdminDown {
            self.transition(now, State::Down, self.local_diag, &mut out);
        }
        out
    }

    /// The packet we would send now (periodic: P set during a Poll Sequence).
    pub fn packet(&self) -> Packet {
        Packet {
            diag: self.local_diag,
            state: self.state,
            poll: self.polling,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.detect_mult(),
            my_discriminator: self.local_discr.get(),
            your_discriminator: self.remote_discr,
            desired_min_tx_us: wire_micros(self.advertised.tx),
            required_min_rx_us: wire_micros(self.advertised.rx),
            // We never loop echo packets back.
            required_min_echo_rx_us: 0,
        }
    }

    // ---- internals ----

    fn wanted(&self) -> Intervals {
        wanted(&self.config.timers, self.state)
    }

    fn detect_mult(&self) -> u8 {
        self.config.timers.detect_mult.max(1)
    }

    /// Whether periodic packets go out at all now (§6.8.7).
    fn may_transmit(&self) -> bool {
        let passive_and_unheard = self.config.passive && self.remote_discr == 0;
        let remote_demand =
            self.remote_demand && self.state == State::Up && self.remote_state == State::Up;
        !passive_and_unheard && !remote_demand && !self.remote_min_rx.is_zero()
    }

    fn next_tx(&self) -> Option<Instant> {
        if !self.may_transmit() {
            return None;
        }
        let Some(last) = self.last_tx else {
            return Some(self.created);
        };
        let period = self.tx_interval().saturating_mul(self.jitter_permille) / 1000;
        Some(last + period)
    }

    /// Sends a periodic packet now and starts the next period.
    fn transmit(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.may_transmit() {
            return;
        }
        out.push(Action::Send(self.packet()));
        self.last_tx = Some(now);
        self.jitter_permille = self.draw_jitter();
    }

    fn transition(&mut self, now: Instant, to: State, diag: Diag, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        self.local_diag = diag;
        if to == State::AdminDown {
            self.detect_deadline = None;
        }
        out.push(Action::StateChanged { from, to, diag });
        self.readvertise();
        // The peer learns of the change now, not a period later.
        self.transmit(now, out);
    }

    /// Recomputes what we advertise from the profile and the state; starts a Poll Sequence if
    /// it changed while Up (returns whether it did).
    fn readvertise(&mut self) -> bool {
        let wanted = self.wanted();
        if self.state != State::Up {
            self.polling = false;
            self.advertised = wanted;
            self.in_force = wanted;
            return false;
        }
        if wanted == self.advertised {
            return false;
        }
        self.in_force = Intervals {
            tx: self.in_force.tx.min(wanted.tx),
            rx: self.in_force.rx.max(wanted.rx),
        };
        self.advertised = wanted;
        self.polling = true;
        true
    }

    /// This period's share of the interval, in thousandths: 750–1000, or 750–900 with a
    /// multiplier of 1 (§6.8.7).
    fn draw_jitter(&mut self) -> u32 {
        let span = if self.detect_mult() == 1 { 151 } else { 251 };
        let r = u32::try_from(self.random() % span).unwrap_or(0);
        750 + r
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What the profile asks for in `state`: the slow rate outside Up (§6.8.3).
fn wanted(timers: &Timers, state: State) -> Intervals {
    let tx = timers.desired_min_tx.max(MIN_INTERVAL);
    Intervals {
        tx: if state == State::Up {
            tx
        } else {
            tx.max(SLOW_TX)
        },
        rx: timers.required_min_rx.max(MIN_INTERVAL),
    }
}

fn micros(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

/// An interval in the 32-bit microseconds of the wire, saturated.
fn wire_micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
