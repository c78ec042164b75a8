//! `ferrolb-speaker`: announces the IPs of Services of type LoadBalancer from this node, with Layer 2 (ARP/NDP) or BGP.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use ferrolb_runtime::{CommonArgs, Process};

/// The FerroLB speaker: announces the IPs of Services of type LoadBalancer from this node, with Layer 2 (ARP/NDP) or BGP.
///
/// NOT IMPLEMENTED YET: it does not announce anything yet; it only serves /healthz, /readyz and /metrics.
#[derive(Parser, Debug)]
#[command(name = "ferrolb-speaker", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "FERROLB_HEALTH_ADDR", default_value = "0.0.0.0:7473")]
    health_addr: SocketAddr,
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
    tracing::warn!("the speaker is not implemented yet: it does not announce anything yet");
    process.probes.set_ready(true);
    process.serve_blocking(cli.health_addr)
}
