//! Speaker benchmark on the testbed: Layer 2 failover time as the gap in a client's probes
//! (one every 10 ms) when the leader's speaker is SIGKILLed and when the leader node's link is
//! cut, each repeated RUNS times; then the speakers' memory (RSS) with 1,000 Services announced.
//!
//! Run (a testbed up with release binaries):
//!   TESTBED_PROFILE=release make testbed-up
//!   cargo run --release -p ferrolb-testbed --example speaker_bench
//! `RUNS` (default 20) sets the repetitions of each failure, `FAILURES` which ones (default
//! `kill,link`), `RSS=0` skips the memory part. Results go to docs/benchmarks.md by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrolb_testbed::ferrolb::{SPEAKER_PODS, SYSTEM, install};
use ferrolb_testbed::harness::{
    Probe, Testbed, netns_sh, percentile, pod_pid, pod_ready, replace_lb_config, rss_kib, wait_for,
};
use ferrolb_testbed::workloads::{create_deployment, echo_container};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn announcer(svc: &Service) -> Option<String> {
    let c = svc
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ferrolb.io/Announced" && c.status == "True")?;
    let after = c.message.split(" from node ").nth(1)?;
    after.split([' ', ';']).next().map(str::to_owned)
}

fn ip(svc: &Service) -> Option<String> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

async fn speakers(client: &Client) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    Ok(pods
        .list(&ListParams::default().labels(SPEAKER_PODS))
        .await?
        .items)
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// Waits until every node's speaker is ready and has run for a while (membership settled).
async fn all_speakers_ready(client: &Client, nodes: usize) -> anyhow::Result<()> {
    wait_for("every speaker ready", T, || async {
        let pods = speakers(client).await?;
        Ok((pods.iter().filter(|p| pod_ready(p)).count() == nodes).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install(&tb, &client).await?;
    replace_lb_config(
        &client,
        json!({
            "addressPools": [
                {"name": "v4", "addresses": ["203.0.113.64/27"]},
                {"name": "v6", "addresses": ["2001:db8:100:ff::/112"], "autoAssign": false},
            ],
            "l2Advertisements": [{"name": "l2"}],
        }),
    )
    .await?;
    let ns = tb.namespace(&client, "speaker-bench").await?;
    let spec = json!({
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
        "containers": [echo_container()],
    });
    create_deployment(&client, &ns.name, "web", tb.node_names.len(), spec).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let web: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?;
    services.create(&PostParams::default(), &web).await?;
    let target = wait_for("web announced", T, || async {
        let svc = services.get("web").await?;
        Ok(ip(&svc).filter(|_| announcer(&svc).is_some()))
    })
    .await?;
    wait_for("web answers", T, || async {
        Ok(netns_sh(
            &tb.client_netns,
            &["curl", "-sf", "-m", "2", &format!("http://{target}/")],
        )
        .ok())
    })
    .await?;

    // The leader of an address is the same whenever every speaker is alive, so keep the
    // backends off it: a dead node's endpoints would fail a share of connections until
    // Kubernetes notices (kube-proxy's part, not the announcement's).
    let leader = wait_for("a leader", T, || async {
        Ok(announcer(&services.get("web").await?))
    })
    .await?;
    let replicas = tb.node_names.len() - 1;
    let patch = json!({"spec": {"replicas": replicas, "template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [leader]}]}]}}}}}}});
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    wait_for("backends off the leader", T, || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        Ok((list.items.len() == replicas
            && list
                .items
                .iter()
                .all(|p| pod_ready(p) && node_of(p) != leader))
        .then_some(()))
    })
    .await?;

    println!("| failure | runs | p50 gap | p99 gap | max gap |");
    println!("|---|---|---|---|---|");
    let failures = std::env::var("FAILURES").unwrap_or_else(|_| "kill,link".into());
    let kinds = [("kill", "speaker SIGKILL"), ("link", "link cut")]
        .into_iter()
        .filter(|(k, _)| failures.split(',').any(|f| f == *k))
        .map(|(_, name)| name);
    for kind in kinds {
        let mut gaps = Vec::new();
        for run in 0..runs {
            all_speakers_ready(&client, tb.node_names.len()).await?;
            let leader = wait_for("a leader", T, || async {
                Ok(announcer(&services.get("web").await?))
            })
            .await?;
            let i = tb.node_names.iter().position(|n| *n == leader).unwrap();
            let probe = Probe::start(
                &tb,
                &tb.client_netns,
                &format!("{target}:80"),
                Duration::from_millis(10),
            )?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let failed_at = Instant::now();
            if kind == "link cut" {
                tb.set_node_link(i, false)?;
            } else {
                let pod = speakers(&client)
                    .await?
                    .into_iter()
                    .find(|p| node_of(p) == leader)
                    .unwrap();
                let pid = pod_pid(&pod).unwrap();
                std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()?;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let report = probe.stop();
            if kind == "link cut" {
                tb.set_node_link(i, true)?;
            }
            let ok_after = report
                .samples
                .iter()
                .rev()
                .take(100)
                .all(|s| s["ok"].as_bool() == Some(true));
            eprintln!(
                "{kind} #{run}: leader {leader}, gap {:?}, {} failed, answers back at the end: {ok_after} ({:?} after the failure)",
                report.max_gap,
                report.failures,
                failed_at.elapsed()
            );
            anyhow::ensure!(
                ok_after,
                "answers did not come back after {kind} of {leader}"
            );
            gaps.push(report.max_gap);
        }
        gaps.sort();
        println!(
            "| {kind} | {runs} | {:.0?} | {:.0?} | {:.0?} |",
            percentile(&gaps, 50),
            percentile(&gaps, 99),
            gaps[gaps.len() - 1]
        );
    }

    if std::env::var("RSS").as_deref() == Ok("0") {
        return Ok(());
    }
    // Memory: 1,000 IPv6 Services, all with ready endpoints, so every speaker leads about a
    // third of them.
    all_speakers_ready(&client, tb.node_names.len()).await?;
    futures::stream::iter(0..1000)
        .map(|i| {
            let services = services.clone();
            async move {
                let svc: Service = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("m-{i:04}"),
                        "annotations": {"ferrolb.io/address-pool": "v6"}},
                    "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                             "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"],
                             "allocateLoadBalancerNodePorts": false,
                             "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                }))
                .unwrap();
                services
                    .create(&PostParams::default(), &svc)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    wait_for(
        "1,000 Services announced",
        Duration::from_secs(600),
        || async {
            let list = services.list(&ListParams::default()).await?;
            let announced = list.items.iter().filter(|s| announcer(s).is_some()).count();
            Ok((announced > 1000).then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!();
    println!("| node | Services | speaker RSS |");
    println!("|---|---|---|");
    for pod in speakers(&client).await? {
        let rss = pod_pid(&pod)
            .and_then(rss_kib)
            .map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!("| {} | 1,001 | {rss} |", node_of(&pod));
    }
    Ok(())
}
