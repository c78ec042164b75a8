//! The built-in `ferrolb-testbed/echo` image: answers every HTTP request and every UDP datagram
//! with one line naming its pod, namespace, node, process id and the client address.

use std::net::SocketAddr;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Arguments of the echo server (container `args`).
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// TCP (HTTP) and UDP port.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Fail readiness (`/readyz` answers 503) while this file exists.
    #[arg(long)]
    pub unready_file: Option<String>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "?".to_string())
}

/// The answer line for a client.
pub fn answer(peer: SocketAddr) -> String {
    format!(
        "pod={} namespace={} node={} pid={} podIP={} client={}\n",
        env("POD_NAME"),
        env("POD_NAMESPACE"),
        env("NODE_NAME"),
        std::process::id(),
        env("POD_IP"),
        peer.ip().to_canonical()
    )
}

/// Run the echo server until killed.
pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    // [::] accepts IPv4 too (bindv6only=0); fall back to 0.0.0.0 where IPv6 is off
    let addr6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, args.port));
    let addr4 = SocketAddr::from(([0, 0, 0, 0], args.port));
    let addr = match std::net::TcpListener::bind(addr6) {
        Ok(_) => addr6,
        Err(_) => addr4,
    };
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    tracing::info!(%addr, "echo listening (tcp+udp)");
    let udp_task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            match udp.recv_from(&mut buf).await {
                Ok((_, peer)) => {
                    let _ = udp.send_to(answer(peer).as_bytes(), peer).await;
                }
                Err(e) => tracing::warn!(error = %e, "udp recv"),
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: exiting");
                udp_task.abort();
                return Ok(());
            }
            acc = tcp.accept() => {
                let (mut s, peer) = acc?;
                let unready = args.unready_file.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut n = 0;
                    while n < buf.len() {
                        match s.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(m) => n += m,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split_whitespace().nth(1).unwrap_or("/");
                    let not_ready = path == "/readyz"
                        && unready.as_deref().is_some_and(|f| std::path::Path::new(f).exists());
                    let (code, body) = if not_ready {
                        ("503 Service Unavailable", "not ready\n".to_string())
                    } else {
                        ("200 OK", answer(peer))
                    };
                    let resp = format!(
                        "HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        }
    }
}
