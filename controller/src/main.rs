//! `ferrolb-controller`: assigns addresses from the LoadBalancerConfig's pools to Services of type
//! LoadBalancer.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ferrolb_api::v1alpha1::DEFAULT_NAMESPACE;
use ferrolb_api::wiring::{env, names};
use ferrolb_controller::metrics::Metrics;
use ferrolb_controller::reconciler::{self, Context, FIELD_MANAGER, Settings};
use ferrolb_runtime::events::{EventMetrics, Publisher};
use ferrolb_runtime::lease::{self, Leadership, LeaseConfig, WallClock};
use ferrolb_runtime::{CommonArgs, Process, serve, shutdown_signal};
use kube::Client;
use kube::runtime::events::Reporter;

/// The FerroLB controller: assigns addresses from the LoadBalancerConfig's address pools to
/// Services of type LoadBalancer, and writes them to Service status with an Event and a
/// `ferrolb.io/IPAllocated` condition.
///
/// Replicas elect a leader with a Lease; only the leader writes. State is rebuilt from Service
/// status at every start, addresses already held first, so restarts never move or duplicate them.
#[derive(Parser, Debug)]
#[command(name = "ferrolb-controller", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = env::HEALTH_ADDR, default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,

    /// Namespace of the leader-election Lease (the controller's own namespace).
    #[arg(long, env = env::POD_NAMESPACE, default_value = DEFAULT_NAMESPACE)]
    lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, default_value = names::CONTROLLER_LEASE)]
    lease_name: String,

    /// This replica's identity in the election (its pod name).
    #[arg(long, env = env::POD_NAME)]
    identity: Option<String>,

    /// Seconds a leader's Lease is valid without renewal: how fast a standby replaces a dead
    /// leader.
    #[arg(long, default_value_t = 5)]
    lease_seconds: u64,

    /// Seconds to wait for one API write before counting it failed (it is retried with backoff).
    #[arg(long, env = "FERROLB_WRITE_TIMEOUT_SECONDS", default_value_t = 10)]
    write_timeout_seconds: u64,

    /// Longest wait, in seconds, between retries of a failed write.
    #[arg(long, env = "FERROLB_RETRY_MAX_SECONDS", default_value_t = 10)]
    retry_max_seconds: u64,

    /// Seconds between periodic resyncs, which compare every Service with its decision again.
    #[arg(long, env = "FERROLB_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,

    /// TEST ONLY: shifts the wall clock this replica writes into the Lease (renewTime,
    /// acquireTime) by this many seconds, to show that skewed clocks do not move leadership.
    #[arg(
        long,
        env = "FERROLB_LEASE_CLOCK_SKEW_SECONDS",
        default_value_t = 0,
        allow_negative_numbers = true,
        hide = true
    )]
    lease_clock_skew_seconds: i64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let process = match Process::init("controller", &cli.common) {
        Ok(process) => process,
        Err(e) => {
            eprintln!("ferrolb-controller: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: the controller is one event loop that waits on the API server, and with glibc
    // every thread that allocates gets an arena of its own that keeps freed pages (measured: a
    // restarted leader holding 10,000 Services at 58 MiB on two worker threads, 43 MiB on one;
    // a runtime sized to a 64-core node would be worse).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, process))
}

async fn run(cli: Cli, process: Process) -> ExitCode {
    let Process {
        logging,
        probes,
        mut registry,
    } = process;
    let metrics = Metrics::default();
    metrics.register(&mut registry);
    let event_metrics = EventMetrics::default();
    event_metrics.register(&mut registry);
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a Kubernetes client");
            return ExitCode::FAILURE;
        }
    };
    let identity = cli.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("ferrolb-controller-{}", std::process::id()))
    });
    let mut lease = LeaseConfig::new(
        cli.lease_namespace.clone(),
        cli.lease_name.clone(),
        identity.clone(),
        Duration::from_secs(cli.lease_seconds.max(2)),
    );
    lease.clock = WallClock::skewed(cli.lease_clock_skew_seconds);
    if cli.lease_clock_skew_seconds != 0 {
        tracing::warn!(
            seconds = cli.lease_clock_skew_seconds,
            "the lease clock is skewed (a test setting)"
        );
    }
    let server = serve(
        cli.health_addr,
        probes.clone(),
        Arc::new(registry),
        Some(logging),
        shutdown_signal(),
    );
    let leadership = lease::campaign(client.clone(), lease.clone());
    let _leader_metrics = LeaderMetrics::spawn(&leadership, &metrics);
    probes.set_ready(true);
    let work = async {
        tracing::info!(%identity, lease = %lease.name, "waiting for leadership");
        if let Err(lost) = leadership.wait_leading().await {
            tracing::error!(reason = %lost, "the campaign ended");
            return Err(reconciler::Error::LostLeadership);
        }
        let events = Publisher::spawn(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(identity.clone()),
            },
            event_metrics.clone(),
        );
        let ctx = Context {
            client: client.clone(),
            events,
            metrics: metrics.clone(),
            settings: Settings {
                write_timeout: Duration::from_secs(cli.write_timeout_seconds.max(1)),
                retry_max: Duration::from_secs(cli.retry_max_seconds.max(1)),
                resync_every: Duration::from_secs(cli.resync_seconds.max(1)),
                ..Settings::default()
            },
        };
        // Losing the Lease drops the reconciler wherever it waits, before its next write.
        match leadership
            .run_while_leading(reconciler::run(ctx, leadership.watch()))
            .await
        {
            Ok(stopped) => stopped,
            Err(lost) => {
                tracing::error!(reason = %lost, "lost leadership; the reconciler was stopped");
                Err(reconciler::Error::LostLeadership)
            }
        }
    };
    let code = tokio::select! {
        served = server => {
            if let Err(e) = served {
                tracing::error!(error = %e, addr = %cli.health_addr, "cannot serve health endpoints");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        stopped = work => {
            if let Err(e) = stopped {
                tracing::error!(error = %e, "controller stopped");
            }
            ExitCode::FAILURE
        }
    };
    leadership.release().await;
    code
}

/// Keeps `ferrolb_leader` and `ferrolb_leader_transitions_total` up to date.
struct LeaderMetrics(tokio::task::JoinHandle<()>);

impl LeaderMetrics {
    fn spawn(leadership: &Leadership, metrics: &Metrics) -> Self {
        let mut leading = leadership.watch();
        let metrics = metrics.clone();
        Self(tokio::spawn(async move {
            let mut was = false;
            loop {
                let now = *leading.borrow_and_update();
                if now != was {
                    metrics.leader.set(i64::from(now));
                    metrics.leader_transitions.inc();
                    was = now;
                }
                if leading.changed().await.is_err() {
                    return;
                }
            }
        }))
    }
}

impl Drop for LeaderMetrics {
    fn drop(&mut self) {
        self.0.abort();
    }
}
