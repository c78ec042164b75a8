//! The only unsafe code of the speaker: building a `sockaddr_ll`, which `socket2` offers no safe
//! constructor for, and handing a socket to the Tokio reactor (`AsyncFd::register` is unsafe
//! in the Tokio we build with, 1.54, because it cannot check ownership of a raw descriptor). Everything else
//! (socket creation, BPF attach, bind, send, multicast joins) goes through `socket2`'s safe API.
#![allow(unsafe_code)]

use std::io;

use socket2::{SockAddr, SockAddrStorage, Socket, socklen_t};
use tokio::io::unix::AsyncFd;

/// The link-layer address that binds an `AF_PACKET` socket to interface `ifindex` and to
/// `protocol` (an EtherType in host byte order; `ETH_P_ALL` for every frame).
pub fn packet_addr(ifindex: u32, protocol: u16) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is a plain-data `sockaddr_*` type of this platform, smaller than
    // `sockaddr_storage` (view_as asserts it), and an all-zero `sockaddr_ll` is valid.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex as libc::c_int;
    let len = size_of::<libc::sockaddr_ll>() as socklen_t;
    // SAFETY: the family is AF_PACKET and `len` is exactly the size of the `sockaddr_ll` that was
    // initialised above, as `SockAddr::new` requires.
    unsafe { SockAddr::new(storage, len) }
}

/// Registers `socket` with the Tokio reactor of the current runtime (which must exist).
pub fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its file descriptor: it stays open, refers to the same socket and is
    // what `as_raw_fd` returns until the `Socket` is dropped, and the `AsyncFd` owns the `Socket`.
    unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)
}
