//! The process shell every FerroLB binary shares: structured logging whose level can change at run
//! time, and the HTTP endpoints the kubelet and Prometheus scrape (`/healthz`, `/readyz`,
//! `/metrics`); leader election with a Lease ([`lease`]); and the mechanisms every reconciler
//! shares: relist buffering of watches ([`watch`]), one bounded Event publisher ([`events`]) and a
//! latest-value-per-key queue ([`latest`]); and the allocator's view of the heap, served as
//! metrics, with a way to give freed memory back after a burst ([`memory`]).

pub mod events;
mod http;
pub mod latest;
pub mod lease;
mod logging;
pub mod memory;
mod process;
pub mod watch;

pub use http::{Probes, serve};
pub use logging::{LogFormat, LogLevel, Logging, LoggingError};
pub use process::Process;

use clap::Args;
use ferrolb_api::wiring;

/// Flags every binary takes, each also settable from the environment.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Log verbosity: error, warn, info, debug or trace (or a tracing filter directive such as
    /// `info,kube=debug`).
    #[arg(long, env = wiring::env::LOG_LEVEL, default_value = "info")]
    pub log_level: String,

    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = wiring::env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Waits for SIGTERM or SIGINT, the signals Kubernetes and people stop a process with.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
