//! The webhook's HTTPS server, on every replica: TLS 1.2+ with rustls, the certificate swapped
//! in place when a new one arrives (no restart, no dropped connection), `POST /validate`
//! answered from [`super::admission`] with what this replica's watches know of the cluster.
//!
//! Requests are bounded in size and time; a body that is no AdmissionReview gets a 400 with
//! why. On shutdown the replica first drains: it says it is not ready (the API server stops
//! choosing it once its endpoint goes), keeps answering with `Connection: close` for the drain
//! time, then closes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferrolb_api::LoadBalancerConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Node;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::admission::{self, Cluster};
use crate::metrics::{Metrics, WebhookLabels};

/// The path the ValidatingWebhookConfiguration calls.
pub const PATH: &str = "/validate";
/// The largest request accepted: an AdmissionReview carries the object and the old one, each
/// at most the API server's 1.5 MiB (etcd's limit), plus JSON framing.
pub const MAX_BODY: usize = 3 << 20;
/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request's headers may take to arrive (also how long a connection may stay
/// idle between requests).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Admission requests decided at once by one replica.
pub const MAX_IN_FLIGHT: usize = 16;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// No certificate in the PEM.
    #[error("no certificate in the PEM: {0}")]
    Certificate(String),
    /// No usable private key in the PEM.
    #[error("no usable private key in the PEM: {0}")]
    Key(String),
}

/// The certificate this replica serves, replaced in place.
#[derive(Default)]
pub struct ServingCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    // A digest of the PEM it was loaded from (key included), to tell a new certificate from the
    // same one read again without keeping a second copy of the key.
    digest: RwLock<Vec<u8>>,
}

/// Whether a certificate is loaded, nothing of it.
impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl ServingCert {
    /// Loads a certificate chain and key (PEM); the next handshake serves them. `Ok(false)`:
    /// already the one served.
    pub fn load(&self, cert: &[u8], key: &[u8]) -> Result<bool, CertError> {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(cert);
        digest.update(b"\0");
        digest.update(key);
        let digest = digest.finish().as_ref().to_vec();
        if self.digest.read().is_ok_and(|d| *d == digest) {
            return Ok(false);
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| CertError::Certificate(e.to_string()))?;
        if chain.is_empty() {
            return Err(CertError::Certificate("empty".to_owned()));
        }
        // The key's error says nothing of the key itself.
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| CertError::Key(e.to_string()))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| CertError::Key(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| match e {
            // The certificate itself is checked only here, when its public key is read.
            rustls::Error::InvalidCertificate(e) => CertError::Certificate(format!("{e:?}")),
            e => CertError::Key(format!("it does not match the certificate: {e}")),
        })?;
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(certified));
        }
        if let Ok(mut d) = self.digest.write() {
            *d = digest;
        }
        Ok(true)
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.read().is_ok_and(|c| c.is_some())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

/// TLS 1.2 and 1.3 (rustls's safe defaults), HTTP/1.1, the certificate from `cert`.
pub fn tls_config(cert: Arc<ServingCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the handler reads: this replica's view of the cluster.
#[derive(Clone)]
pub struct Context {
    /// Every LoadBalancerConfig (for the one-config rule).
    pub configs: Store<LoadBalancerConfig>,
    /// Every node's metadata (for warnings about selectors that match no node).
    pub nodes: Store<PartialObjectMeta<Node>>,
    /// Whether `nodes` has been listed once.
    pub nodes_known: Arc<AtomicBool>,
    /// Whether the replica drains (shutting down).
    pub draining: Arc<AtomicBool>,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Permits for requests in flight ([`MAX_IN_FLIGHT`]).
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// The webhook's routes.
pub fn router(context: Context) -> Router {
    Router::new()
        .route(PATH, post(validate))
        .with_state(context)
}

async fn validate(State(context): State<Context>, body: Body) -> Response {
    let started = Instant::now();
    // A bounded number of requests at a time, each read within a deadline: a slow or huge
    // client cannot hold the replica's memory (the API server sends few at once).
    let Ok(_permit) = context.in_flight.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many admission requests at once\n",
        )
            .into_response();
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is unreadable or over {MAX_BODY} bytes: {e}\n"),
            )
                .into_response();
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body took over {BODY_TIMEOUT:?}\n"),
            )
                .into_response();
        }
    };
    let configs: Vec<String> = context
        .configs
        .state()
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let nodes: Option<Vec<BTreeMap<String, String>>> =
        context.nodes_known.load(Ordering::Relaxed).then(|| {
            context
                .nodes
                .state()
                .iter()
                .map(|n| n.metadata.labels.clone().unwrap_or_default())
                .collect()
        });
    let cluster = Cluster {
        configs: &configs,
        nodes: nodes.as_deref(),
    };
    let (outcome, mut response) = match admission::review(&body, cluster) {
        Ok(review) => {
            let allowed = review.response.as_ref().is_some_and(|r| r.allowed);
            let outcome = if allowed { "allowed" } else { "denied" };
            let body = serde_json::to_vec(&review).unwrap_or_default();
            (
                outcome,
                ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            )
        }
        Err(why) => {
            tracing::warn!(%why, bytes = body.len(), "malformed admission request");
            (
                "malformed",
                (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
            )
        }
    };
    if context.draining.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    context
        .metrics
        .webhook_requests
        .get_or_create(&WebhookLabels { outcome })
        .inc();
    context
        .metrics
        .webhook_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Serves `app` over TLS on `listener` until `stop` completes; then lets each connection finish
/// its request and closes it, waiting at most `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    stop: impl Future<Output = ()>,
    grace: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (closing, closed) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a webhook connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection(
            acceptor.clone(),
            tcp,
            peer,
            app.clone(),
            closed.clone(),
        ));
        // Reap finished connections so the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
    }
    // New connections are refused from now on, while the open ones finish.
    drop(listener);
    let _ = closing.send(true);
    let _ = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    mut closing: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        }
        _ = async { closing.wait_for(|closing| *closing).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests;
