//! `ferrolb-speaker`: announces the IPs of Services of type LoadBalancer from this node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ferrolb_api::wiring::{env, labels, names, ports};
use ferrolb_runtime::events::{EventMetrics, Publisher};
use ferrolb_runtime::{CommonArgs, Process, serve, shutdown_signal};
use ferrolb_speaker::bgp::report::BgpMetrics;
use ferrolb_speaker::l2::{self, L2Metrics, Responder};
use ferrolb_speaker::membership::{self, MembershipMetrics};
use ferrolb_speaker::metrics::Metrics;
use ferrolb_speaker::run::{self, Context, FIELD_MANAGER};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::runtime::events::Reporter;
use regex::Regex;

/// The FerroLB speaker: answers ARP (IPv4) and NDP (IPv6) for the load-balancer addresses this
/// node leads. One speaker runs on every node (a DaemonSet on the host network).
///
/// Every speaker ranks the live speakers for each address alike, so each address has exactly one
/// leader. Speakers tell each other they are alive with authenticated UDP messages (key from the
/// Secret mounted at --memberlist-key-file), so a dead one is replaced in well under a second;
/// without the key, Node and pod readiness decide (seconds to minutes).
#[derive(Parser, Debug)]
#[command(name = "ferrolb-speaker", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = env::HEALTH_ADDR, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::SPEAKER_HEALTH)))]
    health_addr: SocketAddr,

    /// This node's name (the pod's spec.nodeName).
    #[arg(long, env = env::NODE_NAME)]
    node: String,

    /// This speaker's pod name and UID (downward API): its BGPSession objects are owned by the
    /// pod, so they go with it.
    #[arg(long, env = env::POD_NAME)]
    pod_name: Option<String>,

    #[arg(long, env = env::POD_UID, hide = true)]
    pod_uid: Option<String>,

    /// Namespace of the speaker pods (the speaker's own).
    #[arg(long, env = env::POD_NAMESPACE, default_value = ferrolb_api::v1alpha1::DEFAULT_NAMESPACE)]
    namespace: String,

    /// Label selector of the speaker pods: the nodes that can announce.
    #[arg(long, default_value = labels::SPEAKER_SELECTOR)]
    speaker_selector: String,

    /// File holding the key that signs and authenticates liveness messages (the entry `key` of
    /// the Secret ferrolb-memberlist, mounted). The optional files `next` and `previous` in the
    /// same directory hold keys that are accepted but never sent with: a key rotation adds the
    /// new key as `next`, then makes it `key` and keeps the old one as `previous`, then drops it
    /// (see "Rotating the membership key" in docs/operations.md). Every file is re-read every
    /// 10 s; a change counts once a second read agrees.
    #[arg(long, env = env::MEMBERLIST_KEY_FILE, default_value = names::MEMBERLIST_KEY_FILE)]
    memberlist_key_file: PathBuf,

    /// UDP port of the liveness messages, the same on every node.
    #[arg(long, default_value_t = ports::MEMBERSHIP)]
    memberlist_port: u16,

    /// How often a speaker tells its monitors it is alive, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    liveness_interval_ms: u64,

    /// Silence after which a speaker is declared dead, in milliseconds (at least twice the
    /// interval).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(20..=60_000))]
    liveness_timeout_ms: u64,

    /// Regular expression of interface names never used for Layer 2 (repeatable), in addition
    /// to the built-in list; the operator passes the config's speaker.excludeInterfaces here.
    #[arg(long = "exclude-interface")]
    exclude_interfaces: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let process = match Process::init("speaker", &cli.common) {
        Ok(process) => process,
        Err(e) => {
            eprintln!("ferrolb-speaker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(start(cli, process))
}

async fn start(cli: Cli, process: Process) -> ExitCode {
    let Process {
        logging,
        probes,
        mut registry,
    } = process;
    let interval = Duration::from_millis(cli.liveness_interval_ms);
    let timeout = Duration::from_millis(cli.liveness_timeout_ms);
    if timeout < interval * 2 {
        tracing::error!(
            interval_ms = cli.liveness_interval_ms,
            timeout_ms = cli.liveness_timeout_ms,
            "--liveness-timeout-ms must be at least twice --liveness-interval-ms"
        );
        return ExitCode::from(2);
    }
    let mut exclude = Vec::new();
    for pattern in &cli.exclude_interfaces {
        match Regex::new(&format!("^(?:{pattern})$")) {
            Ok(re) => exclude.push(re),
            Err(e) => {
                tracing::error!(pattern, error = %e, "--exclude-interface is not a valid regular expression");
                return ExitCode::from(2);
            }
        }
    }
    let metrics = Metrics::default();
    metrics.register(&mut registry);
    let l2_metrics = L2Metrics::default();
    l2_metrics.register(&mut registry);
    let membership_metrics = MembershipMetrics::default();
    membership_metrics.register(&mut registry);
    let bgp_metrics = BgpMetrics::default();
    bgp_metrics.register(&mut registry);
    let event_metrics = EventMetrics::default();
    event_metrics.register(&mut registry);

    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a Kubernetes client");
            return ExitCode::FAILURE;
        }
    };
    let responder = match Responder::start(
        l2::Config {
            exclude,
            // Cheap (a few files in /sys), and it bounds how long a link that comes back stays
            // unanswered.
            rescan: Duration::from_secs(1),
        },
        l2_metrics,
    ) {
        Ok(responder) => responder,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the ARP/NDP sockets (the speaker needs CAP_NET_RAW on the host network)");
            return ExitCode::FAILURE;
        }
    };
    let events = Publisher::spawn(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(cli.node.clone()),
        },
        event_metrics,
    );
    let ctx = Context {
        client,
        events,
        node: cli.node.clone(),
        namespace: cli.namespace.clone(),
        speaker_selector: cli.speaker_selector.clone(),
        key_file: cli.memberlist_key_file.clone(),
        membership: membership::Config {
            port: cli.memberlist_port,
            interval,
            timeout,
            ..membership::Config::default()
        },
        responder,
        metrics,
        probes,
        membership_metrics,
        bgp_metrics,
        pod: match (&cli.pod_name, &cli.pod_uid) {
            (Some(name), Some(uid)) => Some(OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                name: name.clone(),
                uid: uid.clone(),
                ..OwnerReference::default()
            }),
            _ => {
                tracing::warn!(
                    "POD_NAME or POD_UID unset: BGPSession objects will not be removed with the pod"
                );
                None
            }
        },
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = serve(
        cli.health_addr,
        ctx.probes.clone(),
        Arc::new(registry),
        Some(logging),
        async move {
            let mut stop_rx = stop_rx;
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    );
    tracing::info!(node = %cli.node, "speaker started");
    let work = run::run(ctx, shutdown_signal());
    tokio::pin!(server);
    let code = tokio::select! {
        served = &mut server => {
            if let Err(e) = served {
                tracing::error!(error = %e, addr = %cli.health_addr, "cannot serve health endpoints");
            }
            ExitCode::FAILURE
        }
        stopped = work => match stopped {
            Ok(()) => {
                tracing::info!("speaker stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "speaker stopped");
                ExitCode::FAILURE
            }
        },
    };
    let _ = stop_tx.send(true);
    code
}
