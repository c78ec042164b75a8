//! Admission webhook benchmark on the testbed: what the webhook adds to a LoadBalancerConfig
//! write through the real kube-apiserver, for a config of `POOLS` address pools (default
//! 2,000) and for a small one.
//!
//! For each config, `RUNS` (default 200) server-side dry-run creates, one after the other, are
//! timed at the client: with the webhook, then with its configuration deleted (the API server
//! alone: schema, CEL rules, defaulting). It prints p50/p99 of both, the webhook's own decision
//! time (bucket bounds of `ferrolb_operator_webhook_duration_seconds`, summed over both
//! replicas) and both replicas' RSS.
//!
//! Run (a testbed up with release binaries):
//!   TESTBED_PROFILE=release make testbed-up
//!   cargo run --release -p ferrolb-testbed --example webhook_bench
//! Results go to docs/benchmarks.md by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrolb_api::LoadBalancerConfig;
use ferrolb_testbed::ferrolb::{
    OPERATOR_PODS, SYSTEM, install_operator, uninstall, without_webhook,
};
use ferrolb_testbed::harness::{Testbed, percentile, pod_metrics, pod_pid, rss_kib};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A valid config of `pools` IPv6 /64 pools, every one announced by one L2 advertisement.
fn config(pools: usize) -> LoadBalancerConfig {
    let address_pools: Vec<_> = (0..pools)
        .map(|i| json!({"name": format!("pool-{i}"), "addresses": [format!("2001:db8:{:x}::/64", i + 1)]}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "LoadBalancerConfig",
        "metadata": {"name": "ferrolb"},
        "spec": {"addressPools": address_pools, "l2Advertisements": [{"name": "all"}]},
    }))
    .unwrap()
}

/// Client-side latency of `runs` dry-run creates, sorted.
async fn timed_creates(client: &Client, config: &LoadBalancerConfig, runs: usize) -> Vec<Duration> {
    let api: Api<LoadBalancerConfig> = Api::all(client.clone());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        api.create(&dry_run, config).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times
}

async fn operators(client: &Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), SYSTEM)
        .list(&ListParams::default().labels(OPERATOR_PODS))
        .await
        .unwrap()
        .items
}

/// Both replicas' webhook metrics, concatenated.
fn webhook_metrics(tb: &Testbed, pods: &[Pod]) -> String {
    pods.iter()
        .map(|pod| pod_metrics(tb, pod).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The webhook decision histogram's cumulative bucket counts, summed over the replicas, by
/// upper bound (seconds).
fn decision_buckets(metrics: &str) -> Vec<(f64, u64)> {
    let prefix = "ferrolb_operator_webhook_duration_seconds_bucket{";
    let mut sums: Vec<(f64, u64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(prefix)) {
        let start = line.find("le=\"").unwrap() + 4;
        let end = start + line[start..].find('"').unwrap();
        let bound = match &line[start..end] {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        let n: u64 = line.split_whitespace().last().unwrap().parse().unwrap();
        match sums.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, sum)) => *sum += n,
            None => sums.push((bound, n)),
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

/// The `q` quantile of the decisions made between two scrapes: the upper bound of the first
/// bucket that holds that share of them.
fn decision_quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> String {
    let between: Vec<(f64, u64)> = after
        .iter()
        .map(|(bound, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0, |(_, n)| *n);
            (*bound, n - earlier)
        })
        .collect();
    let Some(total) = between.last().map(|(_, n)| *n).filter(|n| *n > 0) else {
        return "-".to_owned();
    };
    let want = ((total as f64) * q).ceil() as u64;
    let bound = between
        .iter()
        .find(|(_, n)| *n >= want)
        .map_or(f64::INFINITY, |(b, _)| *b);
    format!("<= {:.1} ms", bound * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    uninstall(&tb);
    let _installed = install_operator(&tb, &client).await?;
    let runs = count("RUNS", 200);
    let pools = count("POOLS", 2000);

    println!(
        "| config | JSON size | with webhook p50 / p99 | API server alone p50 / p99 | webhook decision p50 / p99 |"
    );
    println!("|---|---|---|---|---|");
    for n in [1, pools] {
        let config = config(n);
        let size = serde_json::to_vec(&config)?.len();
        // Warm both replicas' connections first.
        timed_creates(&client, &config, 10).await;
        let before = decision_buckets(&webhook_metrics(&tb, &operators(&client).await));
        let with = timed_creates(&client, &config, runs).await;
        let after = decision_buckets(&webhook_metrics(&tb, &operators(&client).await));
        let unchecked = without_webhook(&tb, &client).await?;
        timed_creates(&client, &config, 10).await;
        let alone = timed_creates(&client, &config, runs).await;
        unchecked.restore(&client).await?;
        println!(
            "| {n} pool(s) | {} KiB | {:.1?} / {:.1?} | {:.1?} / {:.1?} | {} / {} |",
            size / 1024,
            percentile(&with, 50),
            percentile(&with, 99),
            percentile(&alone, 50),
            percentile(&alone, 99),
            decision_quantile(&before, &after, 0.5),
            decision_quantile(&before, &after, 0.99),
        );
    }
    let rss: Vec<String> = operators(&client)
        .await
        .iter()
        .filter_map(pod_pid)
        .filter_map(rss_kib)
        .map(|kib| format!("{:.1} MiB", kib as f64 / 1024.0))
        .collect();
    println!("\noperator RSS after the runs: {}", rss.join(", "));
    Ok(())
}
