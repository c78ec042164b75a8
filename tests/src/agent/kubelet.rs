//! A tiny kubelet API on port 10250 of each node, so `kubectl logs` works: the API server
//! connects with its kubelet client certificate (verified against the cluster CA) and asks for
//! `/containerLogs/{namespace}/{pod}/{container}` (`tailLines`, `follow`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where a pod's files live: `pods_dir/<uid>/meta` holds `namespace/name`.
#[derive(Debug, Clone)]
struct Dirs {
    pods: PathBuf,
}

fn find_pod(pods: &Path, ns: &str, name: &str) -> Option<PathBuf> {
    let want = format!("{ns}/{name}");
    std::fs::read_dir(pods).ok()?.flatten().find_map(|e| {
        let meta = std::fs::read_to_string(e.path().join("meta")).ok()?;
        (meta.trim() == want).then(|| e.path())
    })
}

#[derive(Debug, Default)]
struct LogQuery {
    tail_lines: Option<usize>,
    follow: Option<bool>,
}

fn parse_query(q: Option<&str>) -> LogQuery {
    let mut out = LogQuery::default();
    for kv in q.unwrap_or("").split('&') {
        match kv.split_once('=') {
            Some(("tailLines", v)) => out.tail_lines = v.parse().ok(),
            Some(("follow", v)) => out.follow = Some(v == "true" || v == "1"),
            _ => {}
        }
    }
    out
}

async fn container_logs(
    State(dirs): State<Arc<Dirs>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = parse_query(raw.as_deref());
    let Some(dir) = find_pod(&dirs.pods, &ns, &pod) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not on this node\n"),
        )
            .into_response();
    };
    let file = dir.join("logs").join(format!("{container}.log"));
    let Ok(data) = tokio::fs::read(&file).await else {
        return (
            StatusCode::NOT_FOUND,
            format!("no log for container {container}\n"),
        )
            .into_response();
    };
    let mut start = 0;
    if let Some(n) = q.tail_lines {
        let mut seen = 0;
        for (i, b) in data.iter().enumerate().rev() {
            if *b == b'\n' && i + 1 < data.len() {
                seen += 1;
                if seen == n {
                    start = i + 1;
                    break;
                }
            }
        }
    }
    let first = data[start..].to_vec();
    if !q.follow.unwrap_or(false) {
        return first.into_response();
    }
    // follow: the current content, then whatever is appended, until the client goes away
    let offset = data.len() as u64;
    let stream = futures::stream::unfold(
        (Some(first), file, offset),
        |(first, file, offset)| async move {
            if let Some(f) = first {
                return Some((Ok::<_, std::io::Error>(f), (None, file, offset)));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let Ok(data) = tokio::fs::read(&file).await else {
                    return None;
                };
                if data.len() as u64 > offset {
                    let chunk = data[offset as usize..].to_vec();
                    let next = data.len() as u64;
                    return Some((Ok(chunk), (None, file, next)));
                }
            }
        },
    );
    Body::from_stream(stream).into_response()
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), self.tls.accept(tcp)).await {
                Ok(Ok(io)) => return (io, addr),
                Ok(Err(e)) => tracing::debug!(error = %e, %addr, "kubelet API TLS handshake"),
                Err(_) => tracing::debug!(%addr, "kubelet API TLS handshake timeout"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serve the kubelet API on `[::]:10250` until the task is aborted.
pub async fn serve(cert: PathBuf, key: PathBuf, ca: PathBuf, pods: PathBuf) -> anyhow::Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()?;
    let key =
        PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca)? {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    let tcp = tokio::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 10250)).await?;
    let listener = TlsListener {
        tcp,
        tls: TlsAcceptor::from(Arc::new(config)),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .with_state(Arc::new(Dirs { pods }));
    tracing::info!("kubelet API on :10250 (containerLogs)");
    axum::serve(listener, app).await?;
    Ok(())
}
