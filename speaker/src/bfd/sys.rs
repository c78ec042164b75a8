//! Receiving a datagram together with the TTL (IPv6: hop limit) it arrived with, which BFD's
//! TTL checks need (RFC 5881 §5, RFC 5883 §5). Neither `std`, Tokio nor `socket2` return
//! ancillary data into initialised memory, and `socket2` has no `IP_RECVTTL`, so this module
//! calls `setsockopt` and `recvmsg` itself. It is the only unsafe code of the BFD shell.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Asks the kernel to report the TTL of every IPv4 datagram received on `fd` (`IP_RECVTTL`).
pub fn set_recv_ttl_v4(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(0);
    // SAFETY: `fd` is an open socket borrowed for the call; the value points to an initialised
    // `c_int` of exactly `len` bytes, which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&raw const on).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram read by [`recv_with_ttl`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    /// The TTL or hop limit, if the kernel reported one (`IP_TTL` / `IPV6_HOPLIMIT`).
    pub ttl: Option<u8>,
}

/// Room for one `int` control message of either kind, with headers and alignment.
const CONTROL_LEN: usize = 64;

/// Reads one datagram into `buf` (non-blocking if `fd` is), with its source and TTL.
pub fn recv_with_ttl(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: `sockaddr_storage` is plain data; all zeroes is a valid (AF_UNSPEC) value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // `u64`s, so the buffer is aligned for `cmsghdr`.
    let mut control = [0u64; CONTROL_LEN / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: `msghdr` is plain data; all zeroes is valid (no name, no buffers).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast::<libc::c_void>();
    msg.msg_namelen = libc::socklen_t::try_from(size_of::<libc::sockaddr_storage>()).unwrap_or(0);
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast::<libc::c_void>();
    msg.msg_controllen = CONTROL_LEN;
    // SAFETY: every pointer in `msg` points to memory that lives across the call and is valid
    // for the length given with it: `addr` (`msg_namelen`), `buf` (`iov_len`) and `control`
    // (`msg_controllen`); the kernel writes at most those lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, 0) };
    let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let from = socket_addr(&addr).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
    })?;
    let mut ttl = None;
    // SAFETY: `msg` was filled by `recvmsg`: `msg_control` and `msg_controllen` describe the
    // control messages the kernel wrote into `control`, which is still alive. The CMSG macros
    // only walk within that buffer, and each `int` payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let level = (*cmsg).cmsg_level;
            let kind = (*cmsg).cmsg_type;
            let is_ttl = (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT);
            let room = usize::try_from(libc::CMSG_LEN(size_of::<libc::c_int>() as u32))
                .unwrap_or(usize::MAX);
            if is_ttl && (*cmsg).cmsg_len >= room {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                ttl = u8::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok(Received { len, from, ttl })
}

fn socket_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which it is large
            // and aligned enough for.
            let sin =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
