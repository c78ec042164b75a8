//! `ferrolb-operator`: owns the lifecycle of a FerroLB installation, and checks configurations
//! offline for GitOps pipelines.

mod validate_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrolb_api::wiring::{env, ports};
use ferrolb_runtime::{CommonArgs, Process};

/// The FerroLB operator.
///
/// `validate` checks a LoadBalancerConfig manifest offline, with the same rules the admission
/// webhook applies. `run` will reconcile the cluster's LoadBalancerConfig; it is not implemented
/// yet: today it only serves /healthz, /readyz and /metrics and deploys nothing.
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
    /// Run the operator (NOT IMPLEMENTED YET: serves health and metrics endpoints only).
    Run {
        /// Address of the /healthz, /readyz and /metrics endpoints.
        #[arg(long, env = env::HEALTH_ADDR, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::OPERATOR_HEALTH)))]
        health_addr: SocketAddr,
    },
    /// Check a LoadBalancerConfig manifest offline: prints every problem as
    /// `PATH: VALUE: REASON` and exits 1, or prints a one-line summary and exits 0.
    Validate {
        /// The manifest to check (YAML); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => validate_cmd::run(&file),
        Command::Run { health_addr } => run(&cli.common, health_addr),
    }
}

fn run(common: &CommonArgs, health_addr: SocketAddr) -> ExitCode {
    let process = match Process::init("operator", common) {
        Ok(process) => process,
        Err(e) => {
            eprintln!("ferrolb-operator: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::warn!("the operator does not reconcile yet: it serves health and metrics only");
    process.probes.set_ready(true);
    process.serve_blocking(health_addr)
}
