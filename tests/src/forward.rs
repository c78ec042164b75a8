//! A TCP forwarder from the root network namespace into the control-plane namespace, so that
//! processes on the host (tests, kubectl) reach the API server without any address being added
//! to the root namespace.
//!
//! Both sockets of every forwarded connection set `TCP_NODELAY`: a relay writes what it has just
//! read, often a small piece of a request or answer, and with Nagle's algorithm the second small
//! write waits for the peer's delayed ACK (~40 ms), which showed up as 40-45 ms API calls.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use nix::sched::{CloneFlags, setns};

/// Bind `listen` in the current namespace, then switch to `netns` and forward every connection
/// to `to`. Must be called before any other thread is started (namespaces are per thread).
pub fn run(
    listen: SocketAddr,
    netns: &Path,
    to: SocketAddr,
    port_file: Option<&Path>,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let ns = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {}", netns.display()))?;
    if let Some(f) = port_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, format!("{port}\n"))?;
        std::fs::rename(&tmp, f)?;
    }
    tracing::info!(%listen, port, %to, "forwarding");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (mut inbound, peer) = listener.accept().await?;
            tokio::spawn(async move {
                if let Err(e) = inbound.set_nodelay(true) {
                    tracing::warn!(%peer, error = %e, "TCP_NODELAY on the accepted connection");
                }
                match tokio::net::TcpStream::connect(to).await {
                    Ok(mut outbound) => {
                        if let Err(e) = outbound.set_nodelay(true) {
                            tracing::warn!(%peer, error = %e, "TCP_NODELAY towards {to}");
                        }
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "connect to {to} failed"),
                }
            });
        }
    })
}
