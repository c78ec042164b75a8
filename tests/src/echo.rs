//! The built-in `ferrolb-testbed/echo` image: answers every HTTP request and every UDP datagram
//! with one line naming its pod, namespace, node, process id and the client address. With
//! `--tls-cert/--tls-key` it speaks HTTPS, and `POST /validate` is a validating admission webhook.

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
    /// Serve HTTPS with this certificate (PEM) and `--tls-key`, e.g. for an admission webhook.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// Private key (PEM) for `--tls-cert`.
    #[arg(long)]
    pub tls_key: Option<String>,
}

fn tls_acceptor(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// The admission webhook of the echo image (`POST /validate`): denies objects labelled
/// `testbed.ferrolb.io/deny=true`, allows everything else (pure, tested).
pub fn review(request: &serde_json::Value) -> serde_json::Value {
    let req = &request["request"];
    let deny =
        req["object"]["metadata"]["labels"]["testbed.ferrolb.io/deny"].as_str() == Some("true");
    let mut response = serde_json::json!({"uid": req["uid"], "allowed": !deny});
    if deny {
        response["status"] = serde_json::json!({
            "code": 403,
            "message": format!("denied by the testbed webhook in pod {}", env("POD_NAME"))
        });
    }
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response
    })
}

async fn serve_conn<S>(mut s: S, peer: SocketAddr, unready: Option<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut header_end = None;
    while buf.len() < 1 << 20 {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(m) => buf.extend_from_slice(&chunk[..m]),
        }
        if header_end.is_none() {
            header_end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        if let Some(h) = header_end {
            let head = String::from_utf8_lossy(&buf[..h]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= h + len {
                break;
            }
        }
    }
    let h = header_end.unwrap_or(buf.len());
    let req = String::from_utf8_lossy(&buf[..h]).into_owned();
    let path = req.split_whitespace().nth(1).unwrap_or("/");
    let not_ready = path == "/readyz"
        && unready
            .as_deref()
            .is_some_and(|f| std::path::Path::new(f).exists());
    let (code, ctype, body) = if not_ready {
        (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        )
    } else if req.starts_with("POST") && path.starts_with("/validate") {
        match serde_json::from_slice::<serde_json::Value>(&buf[h..]) {
            Ok(v) => ("200 OK", "application/json", review(&v).to_string()),
            Err(e) => ("400 Bad Request", "text/plain", format!("{e}\n")),
        }
    } else {
        ("200 OK", "text/plain", answer(peer))
    };
    let resp = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
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
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: exiting");
                udp_task.abort();
                return Ok(());
            }
            acc = tcp.accept() => {
                let (s, peer) = acc?;
                let unready = args.unready_file.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(Ok(s)) = tokio::time::timeout(
                                std::time::Duration::from_secs(5),
                                acceptor.accept(s),
                            )
                            .await
                            {
                                serve_conn(s, peer, unready).await;
                            }
                        }
                        None => serve_conn(s, peer, unready).await,
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_denies_labelled_objects() {
        let req = |deny: bool| {
            let labels = if deny {
                serde_json::json!({"testbed.ferrolb.io/deny": "true"})
            } else {
                serde_json::json!({})
            };
            serde_json::json!({"request": {"uid": "u1", "object": {"metadata": {"labels": labels}}}})
        };
        let r = super::review(&req(true));
        assert_eq!(r["response"]["uid"], "u1");
        assert_eq!(r["response"]["allowed"], false);
        assert_eq!(super::review(&req(false))["response"]["allowed"], true);
    }
}
