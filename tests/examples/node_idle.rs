//! What the testbed's nodes cost while nothing happens: the CPU of every process on the machine
//! over `SECONDS` (default 60) on a running testbed, by process name, as a share of one core.
//! The kubelets, containerd (and its shims) and kube-proxy are the nodes' own software.
//!
//! ```sh
//! make testbed-up
//! cargo run -p ferrolb-testbed --example node_idle          # SECONDS=60
//! ```

use std::time::{Duration, Instant};

use ferrolb_testbed::harness::{CpuSnapshot, Testbed};

fn main() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!(
        "{} nodes, sampling every process for {seconds} s",
        tb.node_names.len()
    );
    let before = CpuSnapshot::take();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let used = CpuSnapshot::take().since(&before);
    let wall = start.elapsed().as_secs_f64();
    let node_software = ["kubelet", "containerd", "containerd-shim", "kube-proxy"];
    let mut nodes_total = 0.0;
    println!("{:<24} {:>8}", "process", "% core");
    for (comm, cpu) in used.iter().take(15) {
        println!("{comm:<24} {:>7.2}%", 100.0 * cpu / wall);
    }
    for (comm, cpu) in &used {
        if node_software.iter().any(|n| comm.starts_with(n)) {
            nodes_total += cpu;
        }
    }
    println!(
        "node software ({}) on all nodes together: {:.2}% of a core",
        node_software.join(", "),
        100.0 * nodes_total / wall
    );
    Ok(())
}
