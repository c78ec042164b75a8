//! `ferrolb-operator`: owns the lifecycle of a FerroLB installation, and checks configurations
//! offline for GitOps pipelines.

mod offline;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferrolb_api::wiring::{env, ports};
use ferrolb_operator::convert;
use ferrolb_operator::metrics::Metrics;
use ferrolb_operator::olm::{self, OperatorCondition};
use ferrolb_operator::reconcile;
use ferrolb_operator::render::Settings;
use ferrolb_operator::render::install::{OPERATOR, OPERATOR_NAMESPACE};
use ferrolb_operator::rotation;
use ferrolb_operator::webhook::{self, CertSource, Webhook, tls};
use ferrolb_runtime::events::{EventMetrics, Publisher};
use ferrolb_runtime::lease::{self, LeaseConfig};
use ferrolb_runtime::{CommonArgs, Process, serve, shutdown_signal};
use kube::runtime::events::Reporter;

/// The FerroLB operator.
///
/// `run` reconciles the cluster's LoadBalancerConfig: it deploys, configures and removes the
/// controller and the speakers, and reports their state in the config's status. `validate`
/// checks a LoadBalancerConfig manifest offline, with the same rules the operator applies;
/// `render` prints what the operator would deploy for it; `convert --from-metallb` turns a
/// MetalLB configuration into a LoadBalancerConfig.
#[derive(Parser, Debug)]
#[command(name = "ferrolb-operator", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator: reconcile the LoadBalancerConfig and serve /healthz, /readyz, /metrics.
    Run {
        /// Address of the /healthz, /readyz and /metrics endpoints.
        #[arg(long, env = env::HEALTH_ADDR, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::OPERATOR_HEALTH)))]
        health_addr: SocketAddr,

        /// Seconds between two phases of a membership key rotation (requested with the
        /// config's annotation ferrolb.io/rotate-membership-key): longer than any kubelet
        /// takes to deliver a Secret update to its pods (its sync period, 1 min by default,
        /// plus cache delay), plus the speakers' 10 s re-read.
        #[arg(long, default_value_t = rotation::DEFAULT_STEP.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
        key_rotation_step_seconds: u64,

        #[command(flatten)]
        webhook: WebhookArgs,
    },
    /// Check a LoadBalancerConfig manifest offline: prints every problem as
    /// `PATH: VALUE: REASON` and exits 1, or prints a one-line summary and exits 0.
    Validate {
        /// The manifest to check (YAML); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Print every object the operator would deploy for a LoadBalancerConfig manifest (YAML),
    /// with the operand image from this environment; exits 1 with every problem if the config
    /// is invalid.
    Render {
        /// The manifest (YAML); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Convert a MetalLB configuration into one LoadBalancerConfig, printed as YAML on standard
    /// output.
    ///
    /// Reads MetalLB's objects (IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer
    /// v1beta1 and v1beta2, BFDProfile, Community, and the MetalLB operator's MetalLB) as
    /// `kubectl get ipaddresspools,l2advertisements,bgpadvertisements,bgppeers,bfdprofiles,communities,metallbs -A -o yaml`
    /// prints them, or as several YAML documents. The result passes `validate`; it is checked
    /// before it is printed.
    ///
    /// Whatever cannot be carried over is listed on standard error, one line each, and in
    /// comments at the top of the output: `essential: KIND NAMESPACE/NAME: FIELD: VALUE: WHAT`
    /// when FerroLB would assign or announce addresses differently (a pool entry it refuses, a
    /// serviceSelector or preferredNodeSelector it has no field for, a peer by interface, an
    /// inline password: never printed, move it to a Secret), `warning: ...` for what changes
    /// neither (FRR-only knobs, log levels FerroLB lacks), `note: ...` for what to know or do
    /// (a Secret to copy, a renamed object, selectors resolved to pool names).
    ///
    /// Exit codes: 0 converted, nothing essential lost; 3 converted and printed, but something
    /// essential was lost (read every `essential:` line before applying); 1 nothing printed:
    /// the input cannot be read, is not YAML, holds no MetalLB configuration, or converts into
    /// a config that does not validate (each problem is named with the MetalLB object it came
    /// from); 2 the command line is wrong.
    Convert {
        /// Read MetalLB's configuration (the only source there is; required so that the command
        /// says what it converts).
        #[arg(long = "from-metallb", required = true)]
        from_metallb: bool,

        /// The MetalLB objects (YAML); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,

        /// The namespace MetalLB runs in, whose objects are converted (MetalLB ignores the
        /// others). Default: the MetalLB resource's namespace, else the one namespace of the
        /// objects, else metallb-system if they are in several.
        #[arg(long)]
        metallb_namespace: Option<String>,

        /// MetalLB's speakers ran with --ignore-exclude-lb (Helm: speaker.ignoreExcludeLB),
        /// which no MetalLB object records: write speaker.ignoreExcludeLBLabel: true, so nodes
        /// labelled node.kubernetes.io/exclude-from-external-load-balancers announce.
        #[arg(long)]
        ignore_exclude_lb: bool,
    },
}

/// The admission webhook's flags.
#[derive(clap::Args, Debug)]
struct WebhookArgs {
    /// Address the admission webhook listens on (HTTPS).
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], webhook::PORT as u16)))]
    webhook_addr: SocketAddr,

    /// Where the webhook's serving certificate comes from: `self-managed` (the operator makes
    /// it, keeps it in the Secret ferrolb-operator-webhook-tls, injects its CA into the
    /// ValidatingWebhookConfiguration and renews it) or `files` (tls.crt and tls.key in
    /// --webhook-cert-dir, as OLM or cert-manager provide them, re-read when they change).
    #[arg(long, value_enum, default_value_t = CertMode::SelfManaged)]
    webhook_certs: CertMode,

    /// The directory of tls.crt and tls.key for `--webhook-certs=files`.
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs")]
    webhook_cert_dir: PathBuf,

    /// Lifetime of each self-managed certificate, in seconds (default: a year). A renewal
    /// starts when a third is left.
    #[arg(long, default_value_t = 365 * 24 * 3600, value_parser = clap::value_parser!(u64).range(30..=10 * 365 * 24 * 3600))]
    webhook_cert_lifetime_seconds: u64,

    /// Seconds a stopping replica goes on answering admission requests while its endpoint is
    /// removed (it reports not ready at once). Keep it below the pod's grace period.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=60))]
    webhook_drain_seconds: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CertMode {
    SelfManaged,
    Files,
}

impl WebhookArgs {
    fn source(&self) -> CertSource {
        match self.webhook_certs {
            CertMode::SelfManaged => CertSource::SelfManaged {
                lifetime: Duration::from_secs(self.webhook_cert_lifetime_seconds),
            },
            CertMode::Files => CertSource::Files(self.webhook_cert_dir.clone()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => offline::validate_file(&file),
        Command::Render { file } => offline::render_file(&file, &settings()),
        Command::Convert {
            from_metallb: _,
            file,
            metallb_namespace,
            ignore_exclude_lb,
        } => ExitCode::from(convert::cli::convert_file(
            &file,
            &convert::Options {
                metallb_namespace,
                ignore_exclude_lb,
            },
        )),
        Command::Run {
            health_addr,
            key_rotation_step_seconds,
            webhook,
        } => run(
            &cli.common,
            health_addr,
            Duration::from_secs(key_rotation_step_seconds),
            &webhook,
        ),
    }
}

fn run(
    common: &CommonArgs,
    health_addr: SocketAddr,
    key_rotation_step: Duration,
    webhook: &WebhookArgs,
) -> ExitCode {
    let process = match Process::init("operator", common) {
        Ok(process) => process,
        Err(e) => {
            eprintln!("ferrolb-operator: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: the operator waits on the API server, and every thread costs an arena.
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
    runtime.block_on(operate(process, health_addr, key_rotation_step, webhook))
}

/// The operand image: `RELATED_IMAGE_FERROLB` (set by OLM for disconnected installs) wins over
/// `FERROLB_IMAGE`; without either, the image of this build.
fn settings() -> Settings {
    let mut settings = Settings::of_this_build();
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(image) = from_env("RELATED_IMAGE_FERROLB").or_else(|| from_env("FERROLB_IMAGE")) {
        // The tag (or digest) names the operand version; a bare name keeps this build's.
        if let Some(tag) = image
            .rsplit_once(':')
            .map(|(_, t)| t)
            .filter(|t| !t.contains('/'))
        {
            settings.version = tag.to_owned();
        }
        settings.image = image;
    }
    settings
}

async fn operate(
    process: Process,
    health_addr: SocketAddr,
    key_rotation_step: Duration,
    webhook_args: &WebhookArgs,
) -> ExitCode {
    let Process {
        logging,
        probes,
        mut registry,
    } = process;
    let metrics = Metrics::default();
    metrics.register(&mut registry);
    let event_metrics = EventMetrics::default();
    event_metrics.register(&mut registry);
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a Kubernetes client");
            return ExitCode::FAILURE;
        }
    };
    let settings = settings();
    tracing::info!(image = %settings.image, version = %settings.version, "operand image");
    let namespace =
        std::env::var("POD_NAMESPACE").unwrap_or_else(|_| OPERATOR_NAMESPACE.to_owned());
    let identity =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("{OPERATOR}-{}", std::process::id()));
    // Set by OLM only: a plain-manifest install has no OperatorCondition to tell.
    let operator_condition = std::env::var(olm::OPERATOR_CONDITION_NAME)
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .map(|name| OperatorCondition::new(client.clone(), &namespace, name));
    if let Some(operator_condition) = &operator_condition {
        tracing::info!(
            operator_condition = operator_condition.name(),
            %namespace,
            "installed by OLM: telling it whether an upgrade may proceed"
        );
    }
    let source = webhook_args.source();
    let webhook = match Webhook::start(
        client.clone(),
        &namespace,
        webhook_args.webhook_addr,
        &source,
        metrics.clone(),
    )
    .await
    {
        Ok(webhook) => webhook,
        Err(e) => {
            tracing::error!(error = %e, addr = %webhook_args.webhook_addr, "cannot start the admission webhook");
            return ExitCode::FAILURE;
        }
    };
    // Ready (in the webhook Service's endpoints) once it can answer admission requests.
    let ready = webhook.ready();
    let ready_probes = probes.clone();
    let becoming_ready = tokio::spawn(async move {
        ready.await;
        ready_probes.set_ready(true);
        tracing::info!("ready: serving admission requests");
    })
    .abort_handle();
    // Stopping (SIGTERM, or the leader's work ending): out of the endpoints and draining the
    // webhook at once, while the leader hands its Lease over; the health endpoints answer to
    // the very end.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let begin_stopping = {
        let (stop, probes) = (stop.clone(), probes.clone());
        move || {
            becoming_ready.abort();
            probes.set_ready(false);
            let _ = stop.send(true);
        }
    };
    let on_signal = tokio::spawn({
        let begin_stopping = begin_stopping.clone();
        async move {
            shutdown_signal().await;
            begin_stopping();
        }
    });
    let until_stopped = {
        let stopped = stopped.clone();
        move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        }
    };
    let webhook_drain = Duration::from_secs(webhook_args.webhook_drain_seconds);
    let webhook = tokio::spawn(webhook.serve(until_stopped(), webhook_drain));
    let (exit, exited) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(serve(
        health_addr,
        probes.clone(),
        Arc::new(registry),
        Some(logging),
        async move {
            let _ = exited.await;
        },
    ));
    let leadership = lease::campaign(
        client.clone(),
        LeaseConfig::new(
            namespace.clone(),
            OPERATOR,
            identity.clone(),
            Duration::from_secs(15),
        ),
    );
    let work = async {
        tracing::info!(%identity, "waiting for leadership");
        tokio::select! {
            leading = leadership.wait_leading() => if let Err(lost) = leading {
                tracing::error!(reason = %lost, "the campaign ended");
                return ExitCode::FAILURE;
            },
            () = shutdown_signal() => return ExitCode::SUCCESS,
        }
        tracing::info!(%identity, "leading: reconciling");
        let events = Publisher::spawn(
            client.clone(),
            Reporter {
                controller: OPERATOR.to_owned(),
                instance: Some(identity.clone()),
            },
            event_metrics,
        );
        let reconcile = reconcile::run(
            client.clone(),
            settings,
            metrics,
            events,
            key_rotation_step,
            operator_condition,
            shutdown_signal(),
        );
        let certificates = async {
            if let CertSource::SelfManaged { lifetime } = source {
                // Stopped at the signal, not when the reconcile loop has finished: a stopping
                // leader must not write the caBundle while a new install's replicas (another
                // certificate mode, say) take over.
                tokio::select! {
                    () = tls::keep(
                        client.clone(),
                        namespace.clone(),
                        webhook::SERVICE.to_owned(),
                        lifetime,
                    ) => {}
                    () = shutdown_signal() => {}
                }
            }
            // The reconcile loop decides when the leader's work ends.
            std::future::pending::<()>().await
        };
        // Losing the Lease drops the reconcile loop and the certificate upkeep wherever they
        // wait, before their next write.
        let leading = async {
            tokio::select! {
                () = reconcile => {}
                () = certificates => {}
            }
        };
        match leadership.run_while_leading(leading).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(lost) => {
                tracing::error!(reason = %lost, "lost leadership; stopping so a standby takes over");
                ExitCode::FAILURE
            }
        }
    };
    let code = tokio::select! {
        served = &mut server => {
            if let Ok(Err(e)) = served {
                tracing::error!(error = %e, addr = %health_addr, "cannot serve health endpoints");
            }
            ExitCode::FAILURE
        },
        code = work => code,
    };
    // Stop: out of the endpoints at once, the Lease to a standby while the webhook drains.
    on_signal.abort();
    begin_stopping();
    let _ = tokio::join!(leadership.release(), webhook);
    let _ = exit.send(());
    let _ = server.await;
    code
}
