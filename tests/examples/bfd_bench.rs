//! BFD and graceful-restart benchmark on the testbed (issue 17): RUNS times (default 20) each,
//! with a client probing a BGP Service through FRR every 10 ms (each probe a new connection, so
//! FRR's ECMP spreads them over the three nodes; one backend on each node, and
//! `externalTrafficPolicy: Local`, so each node serves its own share):
//!
//! - `cut-bfd` / `cut-hold`: node-1's link cut, with BFD 100 ms x 3 on FRR's sessions and
//!   without (then the 9 s hold time decides). Measured: how long until FRR's BGP table no
//!   longer routes via node-1, and its kernel route (what forwards the probes) no longer does,
//!   and the client's gap (first to last failed probe, probing until a second after FRR dropped
//!   node-1), then the link back.
//! - `restart-gr` / `restart-plain`: node-1's speaker pod deleted (the DaemonSet starts another,
//!   as in a rollout), with graceful restart (and BFD) and without either. Measured: failed probes
//!   and the client's gap, until node-1's new session holds a fresh path again.
//!
//! Run (a testbed up):
//!   make testbed-up
//!   cargo run -p ferrolb-testbed --example bfd_bench     # RUNS=5 for fewer; ONLY=cut-bfd,...
//! Results go to docs/benchmarks.md by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrolb_testbed::ferrolb::{SPEAKER_PODS, SYSTEM, install_with};
use ferrolb_testbed::harness::{
    Probe, Testbed, ingress_ips, netns_exec, netns_sh, percentile, pod_ready, wait_for,
};
use ferrolb_testbed::workloads::{create_deployment, echo_container};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(120);
const POOL: &str = "203.0.113.160/27";
const FRR_ASN: u32 = 64512;
const MY_ASN: u32 = 64513;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    Cut,
    Restart,
}

struct Scenario {
    name: &'static str,
    event: Event,
    bfd: bool,
    graceful_restart: bool,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "cut-bfd",
        event: Event::Cut,
        bfd: true,
        graceful_restart: false,
    },
    Scenario {
        name: "cut-hold",
        event: Event::Cut,
        bfd: false,
        graceful_restart: false,
    },
    Scenario {
        name: "restart-gr",
        event: Event::Restart,
        bfd: true,
        graceful_restart: true,
    },
    Scenario {
        name: "restart-plain",
        event: Event::Restart,
        bfd: false,
        graceful_restart: false,
    },
];

/// One run: the client's gap, its failed probes, and (for a cut) when FRR's BGP table dropped
/// node-1 and when the router's kernel route (what forwards the client's packets) did.
struct Run {
    gap: Duration,
    failures: usize,
    dropped: Option<Duration>,
    kernel_dropped: Option<Duration>,
}

/// The next hops of the router's kernel route to `prefix` (`ip -j route show` in its netns: what
/// zebra installed from FRR's table).
fn kernel_hops(tb: &Testbed, prefix: &str) -> Vec<String> {
    let out =
        netns_sh(&tb.router_netns, &["ip", "-j", "route", "show", prefix]).unwrap_or_default();
    let routes: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut hops = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        hops.extend(route["gateway"].as_str().map(str::to_owned));
        for hop in route["nexthops"].as_array().into_iter().flatten() {
            hops.extend(hop["gateway"].as_str().map(str::to_owned));
        }
    }
    hops
}

/// FRR's paths for `prefix`: (next hops, any stale).
fn frr_paths(tb: &Testbed, prefix: &str) -> (Vec<String>, bool) {
    let table = tb
        .frr_json("show bgp ipv4 unicast json")
        .unwrap_or(Value::Null);
    let paths = table["routes"][prefix]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let hops = paths
        .iter()
        .filter_map(|p| p["nexthops"][0]["ip"].as_str().map(str::to_owned))
        .collect();
    let stale = paths.iter().any(|p| p["stale"] == true);
    (hops, stale)
}

fn frr_established(tb: &Testbed, neighbour: &str) -> bool {
    tb.frr_json("show bgp ipv4 unicast summary json")
        .is_ok_and(|s| s["peers"][neighbour]["state"] == "Established")
}

fn frr_bfd(tb: &Testbed, on: bool) {
    let lines: Vec<String> = tb
        .node_ips
        .iter()
        .map(|n| {
            if on {
                format!("neighbor {n} bfd profile fast")
            } else {
                format!("no neighbor {n} bfd")
            }
        })
        .collect();
    tb.frr_configure(FRR_ASN, &lines).unwrap();
}

/// Every node's link up, FRR's BFD off: the testbed as the bench found it.
fn restore(tb: &Testbed) {
    for i in 0..tb.node_netns.len() {
        if let Err(e) = tb.set_node_link(i, true) {
            eprintln!("node {i}'s link: {e:#}");
        }
    }
    frr_bfd(tb, false);
}

async fn speaker_on(pods: &Api<Pod>, node: &str) -> Option<Pod> {
    pods.list(&ListParams::default().labels(SPEAKER_PODS))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
        })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let only = std::env::var("ONLY").unwrap_or_default();
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let node = tb.node_names[0].clone();
    let node_ip = tb.node_ips[0].clone();
    let frr = tb
        .var("TESTBED_ROUTER_IP")
        .unwrap_or("198.51.100.1")
        .to_owned();
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    // A run stopped half-way leaves a link cut and FRR's BFD settings behind: undo both now, and
    // on Ctrl-C (which skips the guards' Drop).
    restore(&tb);
    let on_interrupt = tb.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: links up, FRR's BFD off");
            restore(&on_interrupt);
            std::process::exit(130);
        }
    });
    let mut table = Vec::new();
    for s in SCENARIOS
        .iter()
        .filter(|s| only.is_empty() || only.split(',').any(|o| o == s.name))
    {
        let mut peer = json!({"name": "frr", "myASN": MY_ASN, "peerASN": FRR_ASN,
            "peerAddress": frr, "holdTime": "9s"});
        if s.bfd {
            peer["bfdProfile"] = json!("fast");
        }
        if s.graceful_restart {
            peer["gracefulRestart"] = json!(true);
        }
        let config = json!({
            "addressPools": [{"name": "bgp", "addresses": [POOL]}],
            "bgpPeers": [peer],
            "bgpAdvertisements": [{"name": "all"}],
            "bfdProfiles": [{"name": "fast", "receiveInterval": 100, "transmitInterval": 100,
                "detectMultiplier": 3}],
        });
        frr_bfd(&tb, s.bfd);
        let installed = install_with(&tb, &client, config).await?;
        let ns = tb.namespace(&client, "bfd-bench").await?;
        // One backend per node and `externalTrafficPolicy: Local`, so a node delivers only to its
        // own: with `Cluster`, the other nodes would keep sending a third of their connections to
        // node-1's pod, cut off too, until Kubernetes finds node-1 NotReady (40 s by default), and
        // the client's gap would measure that instead of the router's reaction.
        create_deployment(
            &client,
            &ns.name,
            "web",
            3,
            json!({"containers": [echo_container()],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}},
                     "topologyKey": "kubernetes.io/hostname"}]}}}),
        )
        .await?;
        let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                     "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))?;
        services.create(&PostParams::default(), &svc).await?;
        let ip = wait_for("web's address", T, || async {
            Ok(ingress_ips(&services.get("web").await?).into_iter().next())
        })
        .await?;
        let prefix = format!("{ip}/32");
        let all = tb.node_ips.len();
        wait_for("FRR routes web via every node", T, || async {
            Ok((frr_paths(&tb, &prefix).0.len() == all).then_some(()))
        })
        .await?;
        netns_sh(
            &tb.client_netns,
            &["ip", "route", "replace", &prefix, "via", &frr],
        )?;
        wait_for("the client reaches web through FRR", T, || async {
            let out = netns_sh(
                &tb.client_netns,
                &["curl", "-sS", "-m", "2", &format!("http://{ip}/")],
            );
            Ok(out.is_ok_and(|o| o.contains("pod=")).then_some(()))
        })
        .await?;

        let mut results = Vec::new();
        for run in 0..runs {
            let mut report = None;
            let mut probe = Some(Probe::start(
                &tb,
                &tb.client_netns,
                &format!("{ip}:80"),
                Duration::from_millis(10),
            )?);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let started = Instant::now();
            let mut dropped = None;
            let mut kernel_dropped = None;
            match s.event {
                Event::Cut => {
                    let before = kernel_hops(&tb, &prefix);
                    anyhow::ensure!(
                        before.contains(&node_ip),
                        "the router's kernel has no route via {node_ip} before the cut: {before:?}"
                    );
                    let cut = tb.cut_node_link(0)?;
                    // Both polled in turn (a vtysh call takes tens of ms, `ip route` a few).
                    while dropped.is_none() || kernel_dropped.is_none() {
                        anyhow::ensure!(
                            started.elapsed() < T,
                            "FRR never dropped {node_ip}: table after {dropped:?}, kernel after {kernel_dropped:?}"
                        );
                        if kernel_dropped.is_none() && !kernel_hops(&tb, &prefix).contains(&node_ip)
                        {
                            kernel_dropped = Some(started.elapsed());
                        }
                        if dropped.is_none() && !frr_paths(&tb, &prefix).0.contains(&node_ip) {
                            dropped = Some(started.elapsed());
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    // The cut's cost only: stop probing a second after, then repair the link.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    report = probe.take().map(Probe::stop);
                    drop(cut);
                }
                Event::Restart => {
                    let old = speaker_on(&pods, &node).await.expect("a speaker on node-1");
                    pods.delete(&old.name_any(), &DeleteParams::default())
                        .await?;
                    wait_for("a new speaker on node-1, ready", T, || async {
                        Ok(speaker_on(&pods, &node)
                            .await
                            .filter(|p| p.uid() != old.uid() && pod_ready(p))
                            .map(|_| ()))
                    })
                    .await?;
                }
            }
            // Until node-1 is back: its session up and a fresh path via it.
            wait_for("node-1 back at FRR", T, || async {
                let (hops, stale) = frr_paths(&tb, &prefix);
                Ok((hops.len() == all && !stale && frr_established(&tb, &node_ip)).then_some(()))
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let report = match (report, probe) {
                (Some(report), _) => report,
                (None, Some(probe)) => probe.stop(),
                (None, None) => unreachable!("the probe is stopped once"),
            };
            eprintln!(
                "{} run {}: {} probes, {} failed, client gap {:?}, FRR dropped node-1 after {:?} (its kernel route after {:?})",
                s.name,
                run + 1,
                report.samples.len(),
                report.failures,
                report.failure_window,
                dropped,
                kernel_dropped
            );
            results.push(Run {
                gap: report.failure_window,
                failures: report.failures,
                dropped,
                kernel_dropped,
            });
        }
        let _ = netns_exec(&tb.client_netns, &["ip", "route", "del", &prefix]);
        ns.delete_and_wait(&client, T).await?;
        drop(installed);
        table.push((s.name, results));
    }
    restore(&tb);

    println!(
        "| scenario | runs | client gap p50 / p99 / max | failed probes (total, max per run) | FRR's table dropped node-1 p50 / p99 / max | its kernel route dropped node-1 p50 / p99 / max |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, results) in &table {
        let sorted = |of: fn(&Run) -> Option<Duration>| {
            let mut v: Vec<Duration> = results.iter().filter_map(of).collect();
            v.sort();
            v
        };
        let gaps = sorted(|r| Some(r.gap));
        let drops = sorted(|r| r.dropped);
        let kernel_drops = sorted(|r| r.kernel_dropped);
        let total: usize = results.iter().map(|r| r.failures).sum();
        let most = results.iter().map(|r| r.failures).max().unwrap_or(0);
        let stats = |v: &[Duration]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{:.0?} / {:.0?} / {:.0?}",
                    percentile(v, 50),
                    percentile(v, 99),
                    v[v.len() - 1]
                )
            }
        };
        println!(
            "| {name} | {} | {} | {total}, {most} | {} | {} |",
            results.len(),
            stats(&gaps),
            stats(&drops),
            stats(&kernel_drops)
        );
    }
    Ok(())
}
