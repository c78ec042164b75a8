//! The validating admission webhook for LoadBalancerConfig, served by every operator replica:
//! the decision ([`admission`], pure), the HTTPS server ([`server`]), the self-managed
//! certificates ([`certs`], pure) and where the served certificate comes from ([`tls`]).

pub mod admission;
pub mod certs;
pub mod server;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrolb_api::LoadBalancerConfig;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};

use crate::metrics::Metrics;

/// The ValidatingWebhookConfiguration the install registers.
pub const WEBHOOK_CONFIGURATION: &str = "ferrolb-operator";
/// The name of its one webhook.
pub const VALIDATING_WEBHOOK: &str = "validate.loadbalancerconfigs.ferrolb.io";
/// The Service in front of the operator's replicas.
pub const SERVICE: &str = "ferrolb-operator-webhook";
/// The container port the webhook listens on, and its name.
pub const PORT: i32 = 9443;
/// The container port's name.
pub const PORT_NAME: &str = "webhook";

/// Where the served certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// The operator makes and rotates it (plain-manifest installs).
    SelfManaged {
        /// Each certificate's lifetime.
        lifetime: Duration,
    },
    /// `tls.crt` and `tls.key` in this directory (OLM, cert-manager), re-read as they change.
    Files(PathBuf),
}

/// The webhook of one replica, up to the point it listens.
#[derive(Debug)]
pub struct Webhook {
    cert: Arc<server::ServingCert>,
    draining: Arc<AtomicBool>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    context: server::Context,
}

impl Webhook {
    /// Binds `addr` and starts the watches the webhook decides with and the certificate source.
    pub async fn start(
        client: Client,
        namespace: &str,
        addr: SocketAddr,
        source: &CertSource,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let cert = Arc::new(server::ServingCert::default());
        let tls = server::tls_config(cert.clone())?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, path = server::PATH, "serving the admission webhook");

        let (configs, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                Api::<LoadBalancerConfig>::all(client.clone()),
                watcher::Config::default(),
            ),
        );
        tokio::spawn(stream.default_backoff().for_each(|_| async {}));
        let (nodes, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                Api::<PartialObjectMeta<Node>>::all(client.clone()),
                watcher::Config::default(),
            )
            // Only the labels are read: a node's managed fields and annotations are kilobytes.
            .modify(|node| {
                node.metadata.managed_fields = None;
                node.metadata.annotations = None;
            }),
        );
        tokio::spawn(stream.default_backoff().for_each(|_| async {}));
        let nodes_known = Arc::new(AtomicBool::new(false));
        tokio::spawn({
            let (nodes, known) = (nodes.clone(), nodes_known.clone());
            async move {
                if nodes.wait_until_ready().await.is_ok() {
                    known.store(true, Ordering::Relaxed);
                }
            }
        });

        match source {
            CertSource::SelfManaged { .. } => {
                tokio::spawn(tls::follow_secret(
                    client,
                    namespace.to_owned(),
                    cert.clone(),
                    metrics.clone(),
                ));
            }
            CertSource::Files(dir) => {
                tokio::spawn(tls::follow_files(
                    dir.clone(),
                    cert.clone(),
                    metrics.clone(),
                ));
            }
        }
        let draining = Arc::new(AtomicBool::new(false));
        Ok(Self {
            context: server::Context {
                configs,
                nodes,
                nodes_known,
                draining: draining.clone(),
                metrics,
                in_flight: Arc::new(tokio::sync::Semaphore::new(server::MAX_IN_FLIGHT)),
            },
            cert,
            draining,
            listener,
            tls,
        })
    }

    /// Resolves once the replica can answer: a certificate loaded and the configs known.
    pub fn ready(&self) -> impl Future<Output = ()> + 'static {
        let cert = self.cert.clone();
        let configs = self.context.configs.clone();
        async move {
            let _ = configs.wait_until_ready().await;
            while !cert.is_loaded() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Serves until `stop`, then drains for `drain` (answering with `Connection: close`, while
    /// the replica's endpoint goes away) and closes.
    pub async fn serve(self, stop: impl Future<Output = ()>, drain: Duration) {
        let draining = self.draining.clone();
        let stopped = async move {
            stop.await;
            draining.store(true, Ordering::Relaxed);
            tracing::info!(?drain, "draining the admission webhook");
            tokio::time::sleep(drain).await;
        };
        server::serve(
            self.listener,
            self.tls,
            server::router(self.context),
            stopped,
            Duration::from_secs(2),
        )
        .await;
    }
}
