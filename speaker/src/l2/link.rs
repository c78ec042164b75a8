//! One interface's sockets: an `AF_PACKET` socket that sees exactly the frames worth looking at
//! and sends whole Ethernet frames, and a UDP/IPv6 socket that holds the solicited-node
//! multicast memberships.
//!
//! Why `AF_PACKET` for NDP too, rather than a raw ICMPv6 socket: an NS for a load-balancer IP is
//! not addressed to an address the kernel owns (unicast NUD probes go to the LB IP itself), so the
//! kernel would never deliver it to an ICMPv6 socket. We therefore build the IPv6 header and
//! compute the checksum ourselves (`packet`), and leave multicast membership to the kernel through
//! an ordinary IPv6 socket: joining `ff02::1:ffXX:XXXX` there programs the NIC's multicast filter
//! and sends the MLD reports that snooping switches need, with no unsafe code.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::net::Ipv6Addr;

use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::interfaces::Interface;
use super::sys;

const ETH_P_ALL: u16 = 0x0003;
/// Large enough for any frame on a standard-MTU link; longer ones are truncated, which the codec
/// rejects or (ARP, NS) never needs.
pub const FRAME_BUFFER: usize = 2048;

// Classic BPF opcodes (linux/filter.h).
/// `BPF_LD | BPF_W | BPF_ABS`
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_LD | BPF_H | BPF_ABS`
const BPF_LD_H_ABS: u16 = 0x28;
/// `BPF_LD | BPF_B | BPF_ABS`
const BPF_LD_B_ABS: u16 = 0x30;
/// `BPF_JMP | BPF_JEQ | BPF_K`
const BPF_JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K`
const BPF_RET_K: u16 = 0x06;
/// `SKF_AD_OFF + SKF_AD_PKTTYPE`: loads the packet type (host, broadcast, outgoing, ...).
const SKF_AD_PKTTYPE: u32 = 0xffff_f000 + 4;
const PACKET_OUTGOING: u32 = 4;

/// Keeps ARP and ICMPv6 Neighbor Solicitations (without extension headers) that were received,
/// not sent, on the interface; drops everything else in the kernel.
fn filter() -> [SockFilter; 11] {
    [
        /* 0 */ SockFilter::new(BPF_LD_W_ABS, 0, 0, SKF_AD_PKTTYPE),
        /* 1 */ SockFilter::new(BPF_JEQ_K, 8, 0, PACKET_OUTGOING), // -> 10 drop
        /* 2 */ SockFilter::new(BPF_LD_H_ABS, 0, 0, 12), // EtherType
        /* 3 */ SockFilter::new(BPF_JEQ_K, 5, 0, 0x0806), // ARP -> 9 keep
        /* 4 */ SockFilter::new(BPF_JEQ_K, 0, 5, 0x86dd), // not IPv6 -> 10 drop
        /* 5 */ SockFilter::new(BPF_LD_B_ABS, 0, 0, 14 + 6), // next header
        /* 6 */ SockFilter::new(BPF_JEQ_K, 0, 3, 58), // not ICMPv6 -> 10 drop
        /* 7 */ SockFilter::new(BPF_LD_B_ABS, 0, 0, 14 + 40), // ICMPv6 type
        /* 8 */ SockFilter::new(BPF_JEQ_K, 0, 1, 135), // not NS -> 10 drop
        /* 9 */ SockFilter::new(BPF_RET_K, 0, 0, 0x0004_0000),
        /* 10 */ SockFilter::new(BPF_RET_K, 0, 0, 0),
    ]
}

/// Checks that this process may open packet sockets (`CAP_NET_RAW`).
pub fn check_permission() -> io::Result<()> {
    Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0))).map(drop)
}

/// An open interface.
#[derive(Debug)]
pub struct Link {
    /// The interface as scanned when it was opened.
    pub iface: Interface,
    packet: AsyncFd<Socket>,
}

impl Link {
    /// Opens the packet socket, bound to the interface, filter attached before the first frame
    /// can arrive. Must be called inside a Tokio runtime.
    pub fn open(iface: Interface) -> io::Result<Link> {
        // Protocol 0: receives nothing until bound, so no frame of another interface slips in
        // before the bind and filter take effect.
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        socket.attach_filter(&filter())?;
        socket.bind(&sys::packet_addr(iface.index, ETH_P_ALL))?;
        socket.set_nonblocking(true)?;
        Ok(Link {
            iface,
            packet: sys::register(socket)?,
        })
    }

    /// Receives one frame into `buf`, returning its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.packet
            .async_io(Interest::READABLE, |mut socket| socket.read(buf))
            .await
    }

    /// Sends one whole Ethernet frame on the interface.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sent = self
            .packet
            .async_io(Interest::WRITABLE, |socket| socket.send(frame))
            .await?;
        if sent == frame.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short frame write",
            ))
        }
    }
}

/// The solicited-node multicast groups joined on one interface.
#[derive(Debug)]
pub struct Memberships {
    ifindex: u32,
    socket: Option<Socket>,
    joined: BTreeSet<Ipv6Addr>,
}

impl Memberships {
    /// No groups yet on interface `ifindex`; the socket is opened on the first join.
    pub fn new(ifindex: u32) -> Memberships {
        Memberships {
            ifindex,
            socket: None,
            joined: BTreeSet::new(),
        }
    }

    /// Joins the groups in `wanted` not joined yet and leaves the others. Failures are logged and
    /// retried on the next call.
    pub fn set(&mut self, wanted: &BTreeSet<Ipv6Addr>, interface: &str) {
        let leaving: Vec<Ipv6Addr> = self.joined.difference(wanted).copied().collect();
        let joining: Vec<Ipv6Addr> = wanted.difference(&self.joined).copied().collect();
        if leaving.is_empty() && joining.is_empty() {
            return;
        }
        if self.socket.is_none() {
            match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
                Ok(socket) => self.socket = Some(socket),
                Err(e) => {
                    tracing::warn!(interface, error = %e, "cannot open a socket for multicast joins");
                    return;
                }
            }
        }
        let Some(socket) = &self.socket else { return };
        for group in leaving {
            if let Err(e) = socket.leave_multicast_v6(&group, self.ifindex) {
                tracing::debug!(interface, %group, error = %e, "leaving multicast group");
            }
            self.joined.remove(&group);
        }
        for group in joining {
            match socket.join_multicast_v6(&group, self.ifindex) {
                Ok(()) => {
                    self.joined.insert(group);
                }
                Err(e) => {
                    tracing::warn!(interface, %group, error = %e, "cannot join multicast group");
                }
            }
        }
    }
}
