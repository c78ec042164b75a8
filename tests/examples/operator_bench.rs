//! Operator benchmark on the testbed, as an admin meets it:
//! 1. applying the Layer 2 sample (`config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml`)
//!    to `Available=True`, with the operator installed and warm, `INSTALLS` times (default 3; the
//!    config is deleted and every operand pod gone between runs);
//! 2. a full rollout of a new operand image (every speaker, one node at a time, and the
//!    controller), `RUNS` times (default 5), while a client probes a Layer 2 address of the
//!    sample's pool every 10 ms over TCP and asks ARP for it every 50 ms: the longest gap of each;
//! 3. the operator leader's memory (RSS) and its reconcile duration p50/p99 (bucket upper bounds
//!    of `ferrolb_operator_reconcile_duration_seconds`) after all of that.
//!
//! Run (a testbed up with release binaries):
//!   TESTBED_PROFILE=release make testbed-up
//!   cargo run --release -p ferrolb-testbed --example operator_bench
//! Results go to docs/benchmarks.md by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrolb_testbed::ferrolb::{
    self, SYSTEM, apply_default, committed_image, install_operator, is_available,
    roll_out_under_probes, uninstall, wait_available,
};
use ferrolb_testbed::harness::{
    Testbed, histogram_quantile, pod_metrics, pod_pid, repo_root, rss_kib,
};
use ferrolb_testbed::workloads::echo_behind_load_balancer;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

const SAMPLE: &str = "config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml";

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `values` (sorted here).
fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// The pod holding the operator's Lease.
async fn operator_leader(client: &Client) -> anyhow::Result<Pod> {
    let holder = ferrolb::operator_leader(client).await?;
    Ok(Api::<Pod>::namespaced(client.clone(), SYSTEM)
        .get(&holder)
        .await?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let installed = install_operator(&tb, &client).await?;
    let sample = repo_root().join(SAMPLE).display().to_string();

    // 1. Applied → Available.
    let mut installs = Vec::new();
    for run in 1..=count("INSTALLS", 3) {
        uninstall(&tb);
        let applied = Instant::now();
        let out = tb.kubectl(&["apply", "--server-side", "-f", &sample])?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Polled every 50 ms, finer than wait_available's steps.
        let configs: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
        while !is_available(&configs.get("ferrolb").await?) {
            anyhow::ensure!(
                applied.elapsed() < Duration::from_secs(120),
                "never Available"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = applied.elapsed();
        eprintln!("install {run}: applied → Available=True in {took:.2?}");
        installs.push(took);
    }
    wait_available(&client).await?;

    // 2. Rollouts under probes.
    let ns = tb.namespace(&client, "rollout-bench").await?;
    let ip = echo_behind_load_balancer(&client, &ns.name, "web", 3).await?;
    tb.wait_answers(&ip).await?;
    let (mut tcp_gaps, mut arp_gaps, mut durations) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=count("RUNS", 5) {
        let image = format!("{}-bench{run}", committed_image());
        let (took, report, arp) = roll_out_under_probes(&tb, &client, &ip, &image).await?;
        tcp_gaps.push(report.max_gap);
        arp_gaps.push(arp.max_gap);
        durations.push(took);
    }

    // 3. The leader's footprint after all of it.
    let leader = operator_leader(&client).await?;
    let rss = pod_pid(&leader).and_then(rss_kib);
    let metrics = pod_metrics(&tb, &leader)?;
    let name = "ferrolb_operator_reconcile_duration_seconds";
    let p50 = histogram_quantile(&metrics, name, 0.5);
    let p99 = histogram_quantile(&metrics, name, 0.99);

    println!("| measure | median | max | runs |");
    println!("|---|---|---|---|");
    let row = |what: &str, values: &mut Vec<Duration>| {
        let max = values.iter().max().copied().unwrap_or_default();
        let n = values.len();
        println!("| {what} | {:.2?} | {max:.2?} | {n} |", median(values));
    };
    row("L2 sample applied → Available=True", &mut installs);
    row("full rollout (3 speakers + controller)", &mut durations);
    row("longest client gap (TCP every 10 ms)", &mut tcp_gaps);
    row(
        "longest time without an ARP reply (every 50 ms)",
        &mut arp_gaps,
    );
    println!(
        "operator leader RSS: {} MiB; reconcile duration p50 ≤ {:?} s, p99 ≤ {:?} s over {} reconciles (leader {})",
        rss.map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
        p50.map(|p| p.0),
        p99.map(|p| p.0),
        p99.map_or(0, |p| p.1),
        leader.metadata.name.unwrap_or_default(),
    );
    // Back to the committed operand image, then remove the operands.
    apply_default(&tb)?;
    drop(ns);
    drop(installed);
    Ok(())
}
