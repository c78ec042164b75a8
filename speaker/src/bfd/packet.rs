//! The BFD Control packet (RFC 5880 §4.1): its 24-octet mandatory section, decoded with the
//! checks of §6.8.6 that need nothing but the packet, and encoded without authentication.
//!
//! Decoding reads a borrowed slice through fixed-size chunks (no indexing), never allocates,
//! and names each reason to drop a packet with its own [`DecodeError`] variant, so the shell can
//! count drops per reason. Which session a packet belongs to (the Your Discriminator lookup and
//! the source address fallback) is the shell's business, not the codec's.

use std::fmt;

use thiserror::Error;

/// The only version there is (RFC 5880 §4.1).
pub const VERSION: u8 = 1;
/// The mandatory section, which is all we send.
pub const MIN_LEN: usize = 24;
/// The mandatory section plus the smallest authentication section (type and length).
pub const MIN_LEN_AUTHENTICATED: usize = 26;

const FLAG_POLL: u8 = 0x20;
const FLAG_FINAL: u8 = 0x10;
const FLAG_CONTROL_PLANE_INDEPENDENT: u8 = 0x08;
const FLAG_AUTHENTICATION: u8 = 0x04;
const FLAG_DEMAND: u8 = 0x02;
const FLAG_MULTIPOINT: u8 = 0x01;

/// A session state as carried in the Sta field (RFC 5880 §4.1, §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    /// Every state, in wire order.
    pub const ALL: [State; 4] = [State::AdminDown, State::Down, State::Init, State::Up];

    fn from_bits(bits: u8) -> State {
        match bits & 0x3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// The diagnostic code (RFC 5880 §4.1): why the sender's session last left Up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9–31: reserved, kept so that a peer's value is reported as it was sent.
    Reserved(u8),
}

impl Diag {
    /// The code of a 5-bit field value.
    pub fn from_code(code: u8) -> Diag {
        match code & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Reserved(other),
        }
    }

    /// The 5-bit field value (a reserved value above 31 is cut to its low 5 bits).
    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(code) => code & 0x1f,
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diag::None => f.write_str("no diagnostic"),
            Diag::ControlDetectionTimeExpired => f.write_str("control detection time expired"),
            Diag::EchoFunctionFailed => f.write_str("echo function failed"),
            Diag::NeighborSignaledSessionDown => f.write_str("neighbor signaled session down"),
            Diag::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Diag::PathDown => f.write_str("path down"),
            Diag::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Diag::AdministrativelyDown => f.write_str("administratively down"),
            Diag::ReverseConcatenatedPathDown => f.write_str("reverse concatenated path down"),
            Diag::Reserved(code) => write!(f, "reserved diagnostic {code}"),
        }
    }
}

/// A BFD Control packet without authentication section. Intervals are in microseconds, as on
/// the wire, so that a round trip is exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    pub diag: Diag,
    pub state: State,
    /// P: the sender asks for a packet with F set (a Poll Sequence, RFC 5880 §6.5).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    /// D: the sender wants Demand mode (we never do, and do not honour it).
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a datagram is not a Control packet we accept (the checks of RFC 5880 §6.8.6 that need
/// no session). Each variant has a stable [`DecodeError::label`] for a drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum DecodeError {
    #[error("BFD version {0}, not 1")]
    Version(u8),
    /// The Length field is below 24 (26 with the A bit), or beyond the datagram; or the
    /// datagram is shorter than the mandatory section (`length` is then 0 if it was absent).
    #[error("length field {length} does not fit a datagram of {datagram} octets")]
    Length { length: u8, datagram: usize },
    #[error("detect multiplier 0")]
    ZeroDetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator 0")]
    ZeroMyDiscriminator,
    #[error("your discriminator 0 in state {0}")]
    ZeroYourDiscriminator(State),
    /// We offer no authentication, so an authenticated packet cannot be checked (§6.7):
    /// dropped, as the RFC asks for a packet whose A bit does not match the session.
    #[error("authentication section present, but authentication is not supported")]
    Authenticated,
}

impl DecodeError {
    /// Every kind, in the order of [`DecodeError::label`] for counters.
    pub const LABELS: [&'static str; 7] = [
        "version",
        "length",
        "zero_detect_mult",
        "multipoint",
        "zero_my_discriminator",
        "zero_your_discriminator",
        "authenticated",
    ];

    /// A short fixed label per kind, for a metric.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Version(_) => "version",
            DecodeError::Length { .. } => "length",
            DecodeError::ZeroDetectMult => "zero_detect_mult",
            DecodeError::Multipoint => "multipoint",
            DecodeError::ZeroMyDiscriminator => "zero_my_discriminator",
            DecodeError::ZeroYourDiscriminator(_) => "zero_your_discriminator",
            DecodeError::Authenticated => "authenticated",
        }
    }

    /// The position of [`DecodeError::label`] in [`DecodeError::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            DecodeError::Version(_) => 0,
            DecodeError::Length { .. } => 1,
            DecodeError::ZeroDetectMult => 2,
            DecodeError::Multipoint => 3,
            DecodeError::ZeroMyDiscriminator => 4,
            DecodeError::ZeroYourDiscriminator(_) => 5,
            DecodeError::Authenticated => 6,
        }
    }
}

fn u32_at(chunk: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*chunk)
}

/// Decodes one datagram, in the order of RFC 5880 §6.8.6. Octets beyond the Length field are
/// ignored (the RFC only requires Length not to exceed the payload).
pub fn decode(datagram: &[u8]) -> Result<Packet, DecodeError> {
    let first = datagram.first().copied().unwrap_or(VERSION << 5);
    let version = first >> 5;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let length = datagram.get(3).copied().unwrap_or(0);
    let Some((head, _)) = datagram.split_first_chunk::<MIN_LEN>() else {
        return Err(DecodeError::Length {
            length,
            datagram: datagram.len(),
        });
    };
    let [vers_diag, flags, detect_mult, _length, rest @ ..] = *head;
    let authenticated = flags & FLAG_AUTHENTICATION != 0;
    let min = if authenticated {
        MIN_LEN_AUTHENTICATED
    } else {
        MIN_LEN
    };
    if usize::from(length) < min || usize::from(length) > datagram.len() {
        return Err(DecodeError::Length {
            length,
            datagram: datagram.len(),
        });
    }
    if detect_mult == 0 {
        return Err(DecodeError::ZeroDetectMult);
    }
    if flags & FLAG_MULTIPOINT != 0 {
        return Err(DecodeError::Multipoint);
    }
    let [
        m0,
        m1,
        m2,
        m3,
        y0,
        y1,
        y2,
        y3,
        t0,
        t1,
        t2,
        t3,
        r0,
        r1,
        r2,
        r3,
        e0,
        e1,
        e2,
        e3,
    ] = rest;
    let my_discriminator = u32_at(&[m0, m1, m2, m3]);
    let your_discriminator = u32_at(&[y0, y1, y2, y3]);
    if my_discriminator == 0 {
        return Err(DecodeError::ZeroMyDiscriminator);
    }
    let state = State::from_bits(flags >> 6);
    if your_discriminator == 0 && !matches!(state, State::Down | State::AdminDown) {
        return Err(DecodeError::ZeroYourDiscriminator(state));
    }
    if authenticated {
        return Err(DecodeError::Authenticated);
    }
    Ok(Packet {
        diag: Diag::from_code(vers_diag),
        state,
        poll: flags & FLAG_POLL != 0,
        final_: flags & FLAG_FINAL != 0,
        control_plane_independent: flags & FLAG_CONTROL_PLANE_INDEPENDENT != 0,
        demand: flags & FLAG_DEMAND != 0,
        detect_mult,
        my_discriminator,
        your_discriminator,
        desired_min_tx_us: u32_at(&[t0, t1, t2, t3]),
        required_min_rx_us: u32_at(&[r0, r1, r2, r3]),
        required_min_echo_rx_us: u32_at(&[e0, e1, e2, e3]),
    })
}

/// Encodes the mandatory section (A and M clear: we neither authenticate nor multicast).
pub fn encode(packet: &Packet) -> [u8; MIN_LEN] {
    let mut flags = packet.state.bits() << 6;
    for (set, bit) in [
        (packet.poll, FLAG_POLL),
        (packet.final_, FLAG_FINAL),
        (
            packet.control_plane_independent,
            FLAG_CONTROL_PLANE_INDEPENDENT,
        ),
        (packet.demand, FLAG_DEMAND),
    ] {
        if set {
            flags |= bit;
        }
    }
    let mut out = [0u8; MIN_LEN];
    let header = [
        (VERSION << 5) | packet.diag.code(),
        flags,
        packet.detect_mult,
        // MIN_LEN is 24: it fits.
        MIN_LEN as u8,
    ];
    let words = [
        packet.my_discriminator,
        packet.your_discriminator,
        packet.desired_min_tx_us,
        packet.required_min_rx_us,
        packet.required_min_echo_rx_us,
    ];
    let bytes = header
        .into_iter()
        .chain(words.into_iter().flat_map(u32::to_be_bytes));
    for (slot, byte) in out.iter_mut().zip(bytes) {
        *slot = byte;
    }
    out
}

#[cfg(test)]
mod tests;
