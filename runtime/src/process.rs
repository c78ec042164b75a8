//! Start-up and shutdown common to every binary.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{CommonArgs, Logging, LoggingError, Probes, serve, shutdown_signal};

/// A running FerroLB process: its logger, probes and metric registry.
#[derive(Debug)]
pub struct Process {
    /// The logger, whose level `PUT /log-level` changes.
    pub logging: Logging,
    /// What `/readyz` reports.
    pub probes: Probes,
    /// Metrics served on `/metrics`, prefixed `ferrolb_`.
    pub registry: Registry,
}

impl Process {
    /// Installs logging and the registry, and logs what is starting.
    pub fn init(component: &'static str, args: &CommonArgs) -> Result<Self, LoggingError> {
        let logging = Logging::init(&args.log_level, args.log_format)?;
        let mut registry = Registry::with_prefix("ferrolb");
        let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build_info
            .get_or_create(&vec![
                ("component", component),
                ("version", env!("CARGO_PKG_VERSION")),
            ])
            .set(1);
        registry.register(
            "build_info",
            "Version of the running FerroLB binary (always 1)",
            build_info,
        );
        registry.register_collector(Box::new(crate::memory::HeapCollector));
        tracing::info!(component, version = env!("CARGO_PKG_VERSION"), "starting");
        Ok(Self {
            logging,
            probes: Probes::default(),
            registry,
        })
    }

    /// Serves the health and metrics endpoints until SIGTERM or SIGINT.
    pub async fn serve_until_shutdown(self, addr: SocketAddr) -> std::io::Result<()> {
        let result = serve(
            addr,
            self.probes,
            Arc::new(self.registry),
            Some(self.logging),
            shutdown_signal(),
        )
        .await;
        tracing::info!("stopped");
        result
    }
}

impl Process {
    /// Runs [`Self::serve_until_shutdown`] on a new async runtime and turns the outcome into an
    /// exit code, logging why it failed.
    pub fn serve_blocking(self, addr: SocketAddr) -> std::process::ExitCode {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the async runtime");
                return std::process::ExitCode::FAILURE;
            }
        };
        match runtime.block_on(self.serve_until_shutdown(addr)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, %addr, "cannot serve health endpoints");
                std::process::ExitCode::FAILURE
            }
        }
    }
}
