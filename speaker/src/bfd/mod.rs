//! BFD towards the routers (RFC 5880 Asynchronous mode over UDP: RFC 5881 single hop, RFC 5883
//! multihop), so a dead path takes its BGP session down in a fraction of a second rather than
//! after the hold time.
//!
//! # Parts
//!
//! - [`packet`]: the Control packet, decoded with every check of RFC 5880 §6.8.6 that needs no
//!   session (each with its own [`DecodeError`], so drops are counted per reason), encoded
//!   without authentication; bounded, no indexing, never panicking;
//! - [`session`]: one session's state machine, sans I/O: packets and timers in (with `now`),
//!   [`Action`]s out, [`Session::next_deadline`]; timer negotiation, Poll/Final, jitter from a
//!   seeded PRNG, passive role, administrative down;
//! - [`shell`]: the Tokio task that owns the UDP sockets, checks the TTL (GTSM for single hop,
//!   the profile's minimum for multihop), demultiplexes packets to sessions and publishes each
//!   session's state on a `watch` channel.
//!
//! # Not implemented, and why
//!
//! - **Echo mode** (§6.4): an echo packet is addressed to ourselves and only comes back if the
//!   peer loops it in its forwarding plane; that works for IPv4 single hop only, needs the
//!   peer's cooperation (and, on Linux, raw sockets or a kernel that forwards packets addressed
//!   to the sender), and gains little over 10 ms Control packets on a host. We advertise a
//!   Required Min Echo RX Interval of 0, which tells the peer not to send us echo packets.
//!   Profiles with `echoMode` are to be refused by the API's validation.
//! - **Demand mode** (§6.6): we never set the D bit, so the peer keeps sending periodically
//!   and our detection time always runs. A peer that asks for Demand mode is obeyed as the RFC
//!   requires: while both sides are Up we stop our periodic packets and answer its Polls.
//! - **Authentication** (§6.7): a packet with the A bit is dropped and counted
//!   ([`DecodeError::Authenticated`]); the API has no field for a BFD key.
//! - **Control plane independence**: the C bit is clear, since BFD runs in this process and
//!   shares its fate.

pub mod packet;
pub mod session;
pub mod shell;
mod sys;

pub use packet::{DecodeError, Diag, Packet, State};
pub use session::{Action, Session, SessionConfig, Timers};
pub use shell::{Adder, Bfd, BfdState, Counters, Hop, PeerKey, Profile};
