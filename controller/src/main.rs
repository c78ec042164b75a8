//! `ferrolb-controller`: assigns IPs from the LoadBalancerConfig's address pools to Services of type LoadBalancer.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use ferrolb_runtime::{CommonArgs, Process};

/// The FerroLB controller: assigns IPs from the LoadBalancerConfig's address pools to Services of type LoadBalancer.
///
/// NOT IMPLEMENTED YET: it does not watch Services or assign IPs yet; it only serves /healthz, /readyz and /metrics.
#[derive(Parser, Debug)]
#[command(name = "ferrolb-controller", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "FERROLB_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,
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
    tracing::warn!(
        "the controller is not implemented yet: it does not watch Services or assign IPs yet"
    );
    process.probes.set_ready(true);
    process.serve_blocking(cli.health_addr)
}
