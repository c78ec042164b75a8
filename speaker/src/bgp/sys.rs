//! TCP-MD5 (RFC 2385) on a socket: the `TCP_MD5SIG` option, which `socket2` does not offer and
//! `libc` has no `struct tcp_md5sig` for, so this module declares the struct and calls
//! `setsockopt` itself. It is the only unsafe code of the BGP shell.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockAddr;

/// The longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = libc::TCP_MD5SIG_MAXKEYLEN;

/// `struct tcp_md5sig` of `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

/// Sets (or, with an empty key, removes) the MD5 key for segments to and from `peer` on `fd`.
/// `v6_socket` says whether `fd` is an IPv6 socket: there an IPv4 peer is named by its
/// v4-mapped address, as the kernel sees it.
pub fn set_md5_key(
    fd: BorrowedFd<'_>,
    v6_socket: bool,
    peer: IpAddr,
    key: &[u8],
) -> io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP-MD5 key longer than {MAX_KEY_LEN} octets"),
        ));
    }
    let peer = match peer {
        IpAddr::V4(v4) if v6_socket => IpAddr::V6(v4.to_ipv6_mapped()),
        other => other,
    };
    let addr = SockAddr::from(SocketAddr::new(peer, 0));
    let mut sig = TcpMd5Sig {
        // SAFETY: `sockaddr_storage` is plain data; all zeroes is a valid (AF_UNSPEC) value.
        addr: unsafe { std::mem::zeroed() },
        flags: 0,
        prefix_len: 0,
        key_len: u16::try_from(key.len()).unwrap_or(0),
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    let addr_len = usize::try_from(addr.len())
        .unwrap_or(usize::MAX)
        .min(size_of::<libc::sockaddr_storage>());
    // SAFETY: both regions are valid for `addr_len` bytes (a `SockAddr` holds a
    // `sockaddr_storage`, whose size bounds `addr_len`), and they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr().cast::<u8>(),
            (&raw mut sig.addr).cast::<u8>(),
            addr_len,
        );
    }
    if let Some(dst) = sig.key.get_mut(..key.len()) {
        dst.copy_from_slice(key);
    }
    let len = libc::socklen_t::try_from(size_of::<TcpMd5Sig>()).unwrap_or(0);
    // SAFETY: `fd` is an open socket borrowed for the call; the option value points to an
    // initialised `struct tcp_md5sig` of exactly `len` bytes, which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
