//! `ferrolb-testbed`: the testbed's `echo` image, its client probe and its API forwarder.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ferrolb-testbed",
    about = "FerroLB testbed: echo server, client probe, API forwarder"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The built-in `ferrolb-testbed/echo` image: answers HTTP and UDP with its pod and node name.
    Echo(ferrolb_testbed::echo::EchoArgs),
    /// Continuous HTTP probes of one address, one JSON line each (failover measurement).
    Probe(ferrolb_testbed::probe::ProbeArgs),
    /// Forward a TCP port of the current namespace to an address inside another network namespace.
    Forward {
        #[arg(long)]
        listen: SocketAddr,
        /// Path of the target network namespace, e.g. /run/netns/NAME.
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        to: SocketAddr,
        /// File the chosen listening port is written to.
        #[arg(long)]
        port_file: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Forward {
            listen,
            netns,
            to,
            port_file,
        } => ferrolb_testbed::forward::run(listen, &netns, to, port_file.as_deref()),
        Cmd::Echo(args) => runtime()?.block_on(ferrolb_testbed::echo::run(args)),
        Cmd::Probe(args) => runtime()?.block_on(ferrolb_testbed::probe::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
