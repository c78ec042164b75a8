//! Controller benchmark on the testbed: Service-created to IP-in-status latency with 0, 1,000 and
//! 10,000 existing LoadBalancer Services, and the leader's memory (RSS) at each level.
//!
//! Run (a testbed up with release binaries):
//!   TESTBED_PROFILE=release make testbed-up
//!   cargo run --release -p ferrolb-testbed --example controller_bench
//! Existing Services share 100 addresses (100 sharing keys, distinct ports), so 10,000 of them fit
//! in the testbed's 203.0.113.0/24; each measured Service gets an address of its own and is deleted
//! after, so the levels do not drift. Results go to docs/benchmarks.md by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrolb_testbed::harness::{Testbed, pod_pid, replace_lb_config, repo_root, wait_for};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;

const SAMPLES: usize = 100;
const LEVELS: [usize; 3] = [0, 1_000, 10_000];

fn service(name: &str, key: Option<String>, port: i32) -> Service {
    let annotations = match key {
        Some(k) => json!({"ferrolb.io/allow-shared-ip": k}),
        None => json!({}),
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        // No node ports: 10,000 Services would exhaust the node-port range.
        "spec": {"type": "LoadBalancer", "selector": {"app": "bench"},
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"name": "p", "port": port, "protocol": "TCP"}]},
    }))
    .unwrap()
}

fn has_ip(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

async fn leader_rss_kib(client: &Client) -> Option<u64> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "ferrolb-system");
    let holder = leases
        .get("ferrolb-controller")
        .await
        .ok()?
        .spec?
        .holder_identity?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ferrolb-system");
    let pid = pod_pid(&pods.get(&holder).await.ok()?)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let kustomize = repo_root().join("config/default");
    let out = tb.kubectl(&[
        "apply",
        "--server-side",
        "-k",
        &kustomize.display().to_string(),
    ])?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    replace_lb_config(
        &client,
        json!({"addressPools": [{"name": "bench", "addresses": ["203.0.113.0/24"]}]}),
    )
    .await?;
    let ns = tb.namespace(&client, "bench").await?;
    let api: Api<Service> = Api::namespaced(client.clone(), &ns.name);

    // Watch the namespace once; measured Services are matched by name.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_api = api.clone();
    tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(svc)) = stream.try_next().await {
            if has_ip(&svc) {
                let _ = tx.send((
                    svc.metadata.name.clone().unwrap_or_default(),
                    Instant::now(),
                ));
            }
        }
    });

    let mut existing = 0usize;
    println!("| existing Services | p50 | p99 | max | leader RSS |");
    println!("|---|---|---|---|---|");
    for level in LEVELS {
        // Grow the background population to `level`, 8 creations at a time.
        let names: Vec<usize> = (existing..level).collect();
        futures::stream::iter(names)
            .map(|i| {
                let api = api.clone();
                async move {
                    let svc = service(
                        &format!("bg-{i:05}"),
                        Some(format!("bench-{}", i % 100)),
                        1000 + i32::try_from(i / 100).unwrap(),
                    );
                    api.create(&PostParams::default(), &svc).await.map(|_| ())
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        existing = level;
        wait_for(
            &format!("{level} background Services with IPs"),
            Duration::from_secs(600),
            || async {
                let list = api.list(&ListParams::default()).await?;
                let ready = list.items.iter().filter(|s| has_ip(s)).count();
                Ok((ready >= level).then_some(()))
            },
        )
        .await?;
        while rx.try_recv().is_ok() {}

        let mut latencies = Vec::with_capacity(SAMPLES);
        for n in 0..SAMPLES {
            let name = format!("m-{level}-{n:03}");
            let start = Instant::now();
            api.create(&PostParams::default(), &service(&name, None, 80))
                .await?;
            let seen = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match rx.recv().await {
                        Some((got, at)) if got == name => return Some(at),
                        Some(_) => {}
                        None => return None,
                    }
                }
            })
            .await?
            .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
            latencies.push(seen - start);
            api.delete(&name, &DeleteParams::default()).await?;
        }
        latencies.sort();
        let rss = leader_rss_kib(&client)
            .await
            .map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!(
            "| {level} | {:.1?} | {:.1?} | {:.1?} | {rss} |",
            percentile(&latencies, 50),
            percentile(&latencies, 99),
            latencies[latencies.len() - 1],
        );
    }
    Ok(())
}
