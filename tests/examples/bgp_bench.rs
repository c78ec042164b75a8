//! BGP benchmark on the testbed: with COUNT (default 10,000) LoadBalancer Services announced over
//! BGP by every node to FRR, BIRD and GoBGP, how long a restarted speaker takes to put all of
//! them back in FRR's RIB, how many UPDATEs it sends for them, its memory, and the latency from a
//! new Service's creation to its route at FRR from every node.
//!
//! Run (a testbed up; release binaries give the production figures):
//!   TESTBED_PROFILE=release make testbed-up
//!   cargo run --release -p ferrolb-testbed --example bgp_bench
//! (`COUNT=1000` for fewer Services, `SAMPLES=50` for fewer latency samples, `RESTARTS` (default
//! 3) restarts of node-1's speaker, whose median is given.) Results go to
//! docs/benchmarks.md by hand.
//! The fill takes about 20 minutes and deleting its namespace as long again: `KEEP=1` leaves the
//! namespace and FerroLB in place and prints the namespace's name, and `REUSE=<that name>` runs
//! again on it without a fill (a new speaker image, say: `TESTBED_PROFILE=release
//! tests/testbed/images.sh`, imported into every node; the bench's restarts start it).
//!
//! The Services get addresses of their own from a /18 outside the testbed's LAN (so COUNT routes)
//! and share one echo pod (a ready endpoint, so they are announced). node-1's speaker pod is then
//! deleted; FRR's view of node-1 (`show bgp ipv4 unicast summary json`, polled every 50 ms) gives
//! when its new session came up and when it held every route again. The UPDATE count is the new
//! speaker's `ferrolb_bgp_updates_total{peer="frr"}`, its RSS the pod's main process `VmRSS`.
//! Latency: a Service created after that, until FRR holds a path for its /32 from every node
//! (polled every 10 ms; FRR's own processing included, as a user sees it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrolb_testbed::ferrolb::{SPEAKER_PODS, SYSTEM, install_with};
use ferrolb_testbed::harness::{
    Testbed, ingress_ips, netns_sh, percentile, pod_pid, rss_kib, wait_for,
};
use ferrolb_testbed::workloads::{create_deployment, echo_container};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const POOL: &str = "10.200.0.0/18";
const FRR_PEER: &str = "frr";

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        // No node ports: 10,000 Services would exhaust the node-port range.
        "spec": {"type": "LoadBalancer", "selector": {"app": "bench"},
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"name": "p", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap()
}

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// FRR's (state, prefixes received) for the neighbour `address`.
fn frr_neighbour(tb: &Testbed, address: &str) -> (String, u64) {
    let summary = tb
        .frr_json("show bgp ipv4 unicast summary json")
        .unwrap_or(Value::Null);
    let peer = &summary["peers"][address];
    (
        peer["state"].as_str().unwrap_or_default().to_owned(),
        peer["pfxRcd"].as_u64().unwrap_or(0),
    )
}

/// How many paths FRR holds for `prefix`.
fn frr_paths(tb: &Testbed, prefix: &str) -> usize {
    tb.frr_json(&format!("show bgp ipv4 unicast {prefix} json"))
        .ok()
        .and_then(|v| v["paths"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Seconds since boot, now (`/proc/uptime`).
fn uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// When process `pid` started, in seconds since boot (field 22 of `/proc/PID/stat`, in clock
/// ticks of 1/100 s, Linux's USER_HZ on every architecture we run).
fn started_since_boot(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    Some(ticks / 100.0)
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count = env_usize("COUNT", 10_000);
    let samples = env_usize("SAMPLES", 100);
    let restarts = env_usize("RESTARTS", 3);
    let reuse = std::env::var("REUSE").ok();
    let keep = std::env::var_os("KEEP").is_some();
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let router = |name: &str, asn: u32, address: &str| json!({"name": name, "myASN": 64513, "peerASN": asn, "peerAddress": address, "holdTime": "9s"});
    let installed = install_with(
        &tb,
        &client,
        json!({
            "addressPools": [{"name": "bench", "addresses": [POOL]}],
            "bgpPeers": [
                router(FRR_PEER, 64512, "198.51.100.1"),
                router("bird", 64520, "198.51.100.2"),
                router("gobgp", 64530, "198.51.100.3"),
            ],
            "bgpAdvertisements": [{"name": "all"}],
        }),
    )
    .await?;
    let ns = match &reuse {
        Some(name) => tb.existing_namespace(name),
        None => tb.namespace(&client, "bgp-bench").await?,
    };
    // KEEP: nothing uninstalls FerroLB or deletes the namespace, also when the run fails.
    let (namespace, guards) = if keep {
        std::mem::forget(installed);
        println!(
            "kept for REUSE, also if this run fails: namespace {}",
            ns.name
        );
        (ns.keep(), None)
    } else {
        (ns.name.clone(), Some((installed, ns)))
    };
    let api: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let filling = Instant::now();
    if reuse.is_none() {
        create_deployment(
            &client,
            &namespace,
            "bench",
            1,
            json!({"containers": [echo_container()]}),
        )
        .await?;
        futures::stream::iter(0..count)
            .map(|i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &service(&format!("bg-{i:05}")))
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
    }
    let nodes: Vec<String> = (1..=tb.node_names.len())
        .map(|i| format!("198.51.100.1{i}"))
        .collect();
    wait_for(
        &format!("{count} routes at FRR from every node"),
        Duration::from_secs(1200),
        || async {
            Ok(nodes
                .iter()
                .all(|n| frr_neighbour(&tb, n).1 >= count as u64)
                .then_some(()))
        },
    )
    .await?;
    println!(
        "{count} Services {} and their routes at FRR from {} nodes after {:.1?}",
        if reuse.is_some() { "reused" } else { "created" },
        nodes.len(),
        filling.elapsed()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let speakers = pods
        .list(&ListParams::default().labels(SPEAKER_PODS))
        .await?;
    let through_fill: Vec<String> = speakers
        .items
        .iter()
        .map(|p| {
            pod_pid(p)
                .and_then(rss_kib)
                .map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
        })
        .collect();
    println!(
        "speaker RSS after running through the fill: {} MiB",
        through_fill.join(", ")
    );

    // node-1's speaker restarts, RESTARTS times: its new session, then every route again.
    let on_node = |node: &str| {
        let pods = pods.clone();
        let node = node.to_owned();
        async move {
            let list = pods
                .list(&ListParams::default().labels(SPEAKER_PODS))
                .await?;
            anyhow::Ok(list.items.into_iter().find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
            }))
        }
    };
    let node = tb.node_names[0].clone();
    let mut from_starts = Vec::new();
    println!(
        "| pod deleted → FRR's session with node-1 up again | → all {count} routes from it | session up → all routes | speaker process start → all routes | UPDATEs the new speaker sent FRR | its RSS with 3 sessions |"
    );
    for _ in 0..restarts {
        let old = on_node(&node).await?.expect("a speaker on node-1");
        let deleted = Instant::now();
        pods.delete(&old.name_any(), &DeleteParams::default())
            .await?;
        let mut down_seen = false;
        let mut up_at = None;
        let (full_at, full_uptime) = loop {
            let (state, received) = frr_neighbour(&tb, &nodes[0]);
            if state != "Established" {
                down_seen = true;
            } else if down_seen && up_at.is_none() {
                up_at = Some(deleted.elapsed());
            }
            if down_seen && state == "Established" && received >= count as u64 {
                break (deleted.elapsed(), uptime());
            }
            anyhow::ensure!(
                deleted.elapsed() < Duration::from_secs(600),
                "node-1's routes did not come back: {state}, {received}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let up_at = up_at.unwrap_or(full_at);
        let new = wait_for("the new speaker pod", Duration::from_secs(60), || async {
            Ok(on_node(&node).await?.filter(|p| p.uid() != old.uid()))
        })
        .await?;
        // The session counters reach the metrics on the speaker's next pass (at the latest its
        // 5 s resync), not when the UPDATEs leave.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let metrics = netns_sh(
            &tb.node_netns[0],
            &["curl", "-sS", "-m", "5", "http://127.0.0.1:7473/metrics"],
        )?;
        let updates = metric(
            &metrics,
            &format!("ferrolb_bgp_updates_total{{peer=\"{FRR_PEER}\",address=\"198.51.100.1\"}}"),
        );
        let pid = pod_pid(&new);
        let rss = pid
            .and_then(rss_kib)
            .map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        // From the new speaker process's start (10 ms resolution) to all routes at FRR: the
        // speaker's own part, without the pod's deletion and the node agent's restart.
        let from_start = pid
            .and_then(started_since_boot)
            .zip(full_uptime)
            .map(|(started, full)| full - started);
        if let Some(s) = from_start {
            from_starts.push(Duration::from_secs_f64(s));
        }
        println!(
            "| {:.2?} | {:.2?} | {:.2?} | {} | {} | {rss} |",
            up_at,
            full_at,
            full_at - up_at,
            from_start.map_or("?".to_owned(), |s| format!("{s:.2} s")),
            updates.map_or("?".to_owned(), |u| format!("{u}")),
        );
        // Where the speaker's part went: its start, the end of its first lists, the session.
        if let Ok(log) = tb.pod_log(&new, "speaker") {
            for line in log.lines().filter(|l| {
                l.contains("speaker started")
                    || l.contains("every watch listed")
                    || (l.contains("BGP session established") && l.contains(FRR_PEER))
            }) {
                println!("    {line}");
            }
        }
    }
    from_starts.sort();
    if !from_starts.is_empty() {
        println!(
            "speaker process start → all {count} routes at FRR, median of {}: {:.2?}",
            from_starts.len(),
            percentile(&from_starts, 50)
        );
    }

    // Created → route at FRR from every node.
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples {
        let name = format!("m-{n:03}");
        let start = Instant::now();
        api.create(&PostParams::default(), &service(&name)).await?;
        let ip = wait_for("the sample's IP", Duration::from_secs(30), || async {
            Ok(ingress_ips(&api.get(&name).await?).into_iter().next())
        })
        .await?;
        let prefix = format!("{ip}/32");
        loop {
            if frr_paths(&tb, &prefix) >= nodes.len() {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "{prefix} not at FRR from every node"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(start.elapsed());
        api.delete(&name, &DeleteParams::default()).await?;
    }
    latencies.sort();
    println!(
        "created → route at FRR from every node, {samples} samples among {count}: p50 {:.1?} p99 {:.1?} max {:.1?}",
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies[latencies.len() - 1]
    );
    if let Some((_installed, ns)) = guards {
        ns.delete_and_wait(&client, Duration::from_secs(600))
            .await?;
    }
    Ok(())
}
