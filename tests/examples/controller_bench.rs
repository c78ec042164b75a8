//! Controller benchmark on the testbed: Service-created to IP-in-status latency with 0, 1,000 and
//! 10,000 existing LoadBalancer Services, and the leader's memory (RSS) at each level.
//!
//! Run (a testbed up with release binaries):
//!   TESTBED_PROFILE=release make testbed-up
//!   cargo run --release -p ferrolb-testbed --example controller_bench
//! (`LEVELS=0,2000` measures other levels, `GAPS_MS=0,250` other pauses between samples;
//! `BENCH_NAMESPACE=name` keeps the Services in that namespace after the run and reuses them the
//! next time, so a level need not be refilled.)
//! Existing Services share 100 addresses (100 sharing keys, distinct ports), so 10,000 of them fit
//! in the testbed's 203.0.113.0/24; each measured Service gets an address of its own and is deleted
//! after, so the levels do not drift. Each level is measured twice: samples back to back, and
//! 250 ms apart (see [`GAPS`]). Results go to docs/benchmarks.md by hand.
//!
//! Latency is measured to the watch event that shows an IP in the Service's status, from two
//! starts: the API server's answer to the create (the Service exists: what the controller can be
//! judged on) and the create call itself (which adds kube-apiserver's own work to create a
//! Service: admission, cluster IP allocation; printed too, with the time the Service took to
//! show up in a watch).
//!
//! Beside the client-side latency it prints the controller's own view of the measured
//! allocations, from its `ferrolb_controller_allocation_latency_seconds` histogram (scraped from
//! the leader before and after the samples, in the client namespace): `queued` (watch event
//! received to reconcile start), `api` (its writes until the status write is acknowledged) and
//! `total` (event received to acknowledged). Those are bucket upper bounds (buckets double from
//! 0.25 ms), so they are coarse; what the client sees beyond `total` is the API server and the
//! watch round trips. Last, the CPU time each program on the machine spent during the samples
//! (every testbed component shares this machine's cores, so that is what competes with the API
//! server and the controller).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrolb_testbed::ferrolb::install_with;
use ferrolb_testbed::harness::{
    CpuSnapshot, Testbed, netns_sh, percentile, pod_pid, rss_kib, wait_for,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const SAMPLES: usize = 100;
/// Existing-Service levels measured, unless `LEVELS` (comma-separated, ascending) says otherwise.
const LEVELS: [usize; 3] = [0, 1_000, 10_000];
/// Pauses after each measured Service's deletion, one series of samples each, unless `GAPS_MS`
/// says otherwise: back to back (the cluster is still processing the last deletion when the
/// next Service comes: the bench's own churn loads the machine), and apart (one creation at a
/// time in a cluster that holds the existing Services).
const GAPS: [Duration; 2] = [Duration::ZERO, Duration::from_millis(250)];

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

async fn leader(client: &Client) -> Option<Pod> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "ferrolb-system");
    let holder = leases
        .get("ferrolb-controller")
        .await
        .ok()?
        .spec?
        .holder_identity?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ferrolb-system");
    pods.get(&holder).await.ok()
}

/// The leader's allocation-latency histogram: (stage, upper bound, cumulative count).
async fn leader_histogram(tb: &Testbed, client: &Client) -> Vec<(String, f64, u64)> {
    let Some(ip) = leader(client).await.and_then(|p| p.status?.pod_ip) else {
        return Vec::new();
    };
    let url = format!("http://{ip}:8080/metrics");
    let Ok(text) = netns_sh(&tb.client_netns, &["curl", "-sS", "--max-time", "5", &url]) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with("ferrolb_controller_allocation_latency_seconds_bucket{"))
        .filter_map(|l| {
            let label = |name: &str| {
                let start = l.find(&format!("{name}=\""))? + name.len() + 2;
                let end = start + l[start..].find('"')?;
                Some(l[start..end].to_owned())
            };
            let le = label("le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.split_whitespace().last()?.parse().ok()?;
            Some((label("stage")?, le, count))
        })
        .collect()
}

/// Quantile `q` of the observations made between `before` and `after` for `stage`, as the
/// upper bound of the bucket it falls in, and how many there were.
fn histogram_quantile(
    before: &[(String, f64, u64)],
    after: &[(String, f64, u64)],
    stage: &str,
    q: f64,
) -> Option<(f64, u64)> {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .filter(|(s, _, _)| s == stage)
        .map(|(_, le, n)| {
            let old = before
                .iter()
                .find(|(s, l, _)| s == stage && l == le)
                .map_or(0, |(_, _, n)| *n);
            (*le, n - old)
        })
        .collect();
    let total = delta.iter().map(|(_, n)| *n).max()?;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil() as u64;
    delta
        .iter()
        .find(|(_, n)| *n >= rank)
        .map(|(le, _)| (*le, total))
}

async fn leader_rss_kib(client: &Client) -> Option<u64> {
    let pid = pod_pid(&leader(client).await?)?;
    rss_kib(pid)
}

/// The comma-separated values of environment variable `var`, if it is set.
fn env_list<T: std::str::FromStr>(var: &str) -> anyhow::Result<Option<Vec<T>>>
where
    T::Err: std::fmt::Display,
{
    let Ok(v) = std::env::var(var) else {
        return Ok(None);
    };
    v.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{var}={v}: {e}"))
        })
        .collect::<anyhow::Result<_>>()
        .map(Some)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    // Installed as an admin would: the operator, and a config from which it deploys the rest.
    let _installed = install_with(
        &tb,
        &client,
        json!({"addressPools": [{"name": "bench", "addresses": ["203.0.113.0/24"]}]}),
    )
    .await?;
    // a namespace of the run's own (deleted at the end), or a kept one
    let (_guard, ns) = match std::env::var("BENCH_NAMESPACE") {
        Ok(name) => {
            let nss: Api<Namespace> = Api::all(client.clone());
            if nss.get_opt(&name).await?.is_none() {
                let ns = serde_json::from_value(json!({"metadata": {"name": name}}))?;
                nss.create(&PostParams::default(), &ns).await?;
            }
            (None, name)
        }
        Err(_) => {
            let ns = tb.namespace(&client, "bench").await?;
            let name = ns.name.clone();
            (Some(ns), name)
        }
    };
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    // what a kept namespace holds: background Services to reuse, and measured ones left behind
    // by an interrupted run, deleted
    let mut present = std::collections::HashSet::new();
    for svc in api.list(&ListParams::default()).await? {
        let name = svc.name_any();
        if name.starts_with("m-") {
            api.delete(&name, &DeleteParams::default()).await?;
        } else {
            present.insert(name);
        }
    }

    // Watch the namespace once; measured Services are matched by name: (name, has an IP, when).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool, Instant)>();
    let watch_api = api.clone();
    tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(svc)) = stream.try_next().await {
            let _ = tx.send((
                svc.metadata.name.clone().unwrap_or_default(),
                has_ip(&svc),
                Instant::now(),
            ));
        }
    });

    let gaps = match env_list::<u64>("GAPS_MS")? {
        Some(ms) => ms.into_iter().map(Duration::from_millis).collect(),
        None => GAPS.to_vec(),
    };
    println!(
        "| existing Services | pacing | created→IP p50 | p99 | max | create call→IP p50 | p99 | max | leader RSS | controller p50/p99 (queued, api, total) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for level in env_list("LEVELS")?.unwrap_or_else(|| LEVELS.to_vec()) {
        // Grow the background population to `level`, 8 creations at a time (a kept namespace
        // may hold more: the level is then a floor).
        let names: Vec<usize> = (0..level)
            .filter(|i| present.insert(format!("bg-{i:05}")))
            .collect();
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
        for &gap in &gaps {
            while rx.try_recv().is_ok() {}
            let before = leader_histogram(&tb, &client).await;
            let cpu_before = CpuSnapshot::take();
            let sampling = Instant::now();

            let mut latencies = Vec::with_capacity(SAMPLES);
            // the create call's answer, the watch event of the Service without its IP, and
            // the IP from the moment the API server answered (the Service exists)
            let (mut acked, mut added, mut from_created) = (Vec::new(), Vec::new(), Vec::new());
            for n in 0..SAMPLES {
                let name = format!("m-{level}-{}-{n:03}", gap.as_millis());
                let start = Instant::now();
                api.create(&PostParams::default(), &service(&name, None, 80))
                    .await?;
                acked.push(start.elapsed());
                let seen = tokio::time::timeout(Duration::from_secs(30), async {
                    loop {
                        match rx.recv().await {
                            Some((got, true, at)) if got == name => return Some(at),
                            Some((got, false, at)) if got == name => added.push(at - start),
                            Some(_) => {}
                            None => return None,
                        }
                    }
                })
                .await?
                .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
                latencies.push(seen - start);
                // (the IP can even show up before the answer to the create arrives)
                from_created.push((seen - start).saturating_sub(acked[n]));
                api.delete(&name, &DeleteParams::default()).await?;
                tokio::time::sleep(gap).await;
            }
            let cpu = CpuSnapshot::take().since(&cpu_before);
            let wall = sampling.elapsed().as_secs_f64();
            latencies.sort();
            acked.sort();
            added.sort();
            from_created.sort();
            let after = leader_histogram(&tb, &client).await;
            let controller: Vec<String> = ["queued", "api", "total"]
                .iter()
                .map(|stage| {
                    let q = |q| {
                        histogram_quantile(&before, &after, stage, q)
                            .map_or("?".to_owned(), |(le, _)| format!("≤{:.2} ms", le * 1000.0))
                    };
                    format!("{stage} {}/{}", q(0.5), q(0.99))
                })
                .collect();
            let rss = leader_rss_kib(&client)
                .await
                .map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
            let pacing = if gap.is_zero() {
                "back to back".to_owned()
            } else {
                format!("{} ms apart", gap.as_millis())
            };
            println!(
                "| {level} | {pacing} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {rss} | {} |",
                percentile(&from_created, 50),
                percentile(&from_created, 99),
                from_created[from_created.len() - 1],
                percentile(&latencies, 50),
                percentile(&latencies, 99),
                latencies[latencies.len() - 1],
                controller.join(", "),
            );
            // where the time goes: the API server's answer to the create, and the watch event
            // showing the new Service (to this client; the controller's comes alike)
            if !added.is_empty() {
                println!(
                    "  create answered p50 {:.1?} p99 {:.1?}; Service seen by a watch p50 {:.1?} p99 {:.1?} ({} of {SAMPLES})",
                    percentile(&acked, 50),
                    percentile(&acked, 99),
                    percentile(&added, 50),
                    percentile(&added, 99),
                    added.len()
                );
            }
            let busy: f64 = cpu.iter().map(|(_, t)| t).sum();
            let top: Vec<String> = cpu
                .iter()
                .take(8)
                .map(|(comm, t)| format!("{comm} {:.0} %", 100.0 * t / wall))
                .collect();
            println!(
                "  CPU during the samples ({wall:.1} s, all programs {:.0} % of one core): {}",
                100.0 * busy / wall,
                top.join(", ")
            );
        }
    }
    Ok(())
}
