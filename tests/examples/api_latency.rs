//! API round trips through the testbed's forwarder and directly: 40 Service POSTs each way.
//!
//! The admin kubeconfig of `.testbed/env` points at the forwarder in the root namespace
//! (`ferrolb-testbed forward`, `tests/src/forward.rs`), which relays every connection into the
//! control-plane namespace. This program times the same small request (a ClusterIP Service
//! create) through that path and from a thread that has entered the control-plane namespace and
//! talks to the API server's own address (`TESTBED_API_INTERNAL`), with the same credentials, and
//! prints p50, p90, the maximum and how many calls took over 40 ms (the mark of Nagle's algorithm
//! meeting delayed ACKs) for each. Results go to docs/benchmarks.md by hand.
//!
//! kube-rs speaks HTTP/1.1 and writes a request in one piece; Go clients (kubectl, client-go, so
//! kube-controller-manager's and any Go operator's calls) speak HTTP/2 and send a HEADERS and a
//! DATA frame in separate writes, which is what Nagle's algorithm holds back in a relay. So the
//! same creates are also timed with `kubectl create service clusterip -v=6` (its own account of
//! each request's round trip, without the process start), through the forwarder and directly.
//!
//! Run as root, with a testbed up:
//!   make testbed-up
//!   cargo run -p ferrolb-testbed --example api_latency
//! (`SAMPLES=100` takes more samples; `ROUNDS=3` repeats both series, alternating;
//! `COMPARE_URL=https://127.0.0.1:PORT` adds a third series through another forwarder in the root
//! namespace, e.g. an older `ferrolb-testbed forward` started by hand beside the testbed's own.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::time::{Duration, Instant};

use ferrolb_testbed::harness::{Testbed, percentile, unique_name};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nix::sched::{CloneFlags, setns};
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// An admin client; `url` replaces the forwarder's address (e.g. with the API server's own).
async fn client(tb: &Testbed, url: Option<&str>) -> Client {
    let kc = Kubeconfig::read_from(&tb.kubeconfig).unwrap();
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    if let Some(url) = url {
        cfg.cluster_url = url.parse().unwrap();
    }
    Client::try_from(cfg).unwrap()
}

/// `samples` Service creates in `namespace`, one after the other, each timed from call to answer.
async fn series(client: Client, namespace: &str, tag: &str, samples: usize) -> Vec<Duration> {
    let services: Api<Service> = Api::namespaced(client, namespace);
    // One call first, so that the connection (TCP, TLS) is set up outside the samples.
    let _ = services.list(&Default::default()).await.unwrap();
    let mut took = Vec::with_capacity(samples);
    for i in 0..samples {
        // The shape of controller_bench's Services (no FerroLB is needed: nothing allocates).
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": format!("{tag}-{i}") },
            "spec": { "type": "LoadBalancer", "selector": { "app": "bench" },
                      "allocateLoadBalancerNodePorts": false,
                      "ports": [{ "name": "p", "port": 80, "protocol": "TCP" }] },
        }))
        .unwrap();
        let start = Instant::now();
        services.create(&PostParams::default(), &svc).await.unwrap();
        took.push(start.elapsed());
    }
    took
}

/// `samples` creates by kubectl (`prefix` is the command, e.g. `ip netns exec NS kubectl`), each
/// timed by kubectl's own log of the POST (`-v=6`: `... milliseconds=N`).
fn kubectl_series(prefix: &[String], namespace: &str, tag: &str, samples: usize) -> Vec<Duration> {
    (0..samples)
        .map(|i| {
            let out = std::process::Command::new(&prefix[0])
                .args(&prefix[1..])
                .args(["create", "service", "clusterip", &format!("{tag}-{i}")])
                .args(["--tcp=80:80", "-n", namespace, "-v=6"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let log = String::from_utf8_lossy(&out.stderr);
            let line = log
                .lines()
                .find(|l| l.contains("POST"))
                .unwrap_or_else(|| panic!("no POST in kubectl's log: {log}"));
            let ms = line
                .split_once("milliseconds=")
                .map(|(_, rest)| rest)
                .or_else(|| line.split_once(" in ").map(|(_, rest)| rest))
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no milliseconds in {line}"));
            Duration::from_millis(ms)
        })
        .collect()
}

fn report(what: &str, mut took: Vec<Duration>) {
    took.sort();
    let slow = took
        .iter()
        .filter(|d| **d > Duration::from_millis(40))
        .count();
    println!(
        "{what:<17} n={:<3} p50={:>6.1} ms  p90={:>6.1} ms  max={:>6.1} ms  >40 ms: {slow}",
        took.len(),
        percentile(&took, 50).as_secs_f64() * 1e3,
        percentile(&took, 90).as_secs_f64() * 1e3,
        took.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn main() {
    let samples = env_usize("SAMPLES", 40);
    let rounds = env_usize("ROUNDS", 1);
    let tb = Testbed::load(&Testbed::env_path()).expect("a testbed up (make testbed-up)");
    let namespace = unique_name("api-latency");
    let cp_netns = format!("/run/netns/{}", tb.var("TESTBED_CP_NETNS").unwrap());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap();
    let namespaces: Api<Namespace> = Api::all(rt.block_on(client(&tb, None)));
    rt.block_on(namespaces.create(&PostParams::default(), &ns))
        .unwrap();

    let compare_url = std::env::var("COMPARE_URL").ok();
    let internal = tb.var("TESTBED_API_INTERNAL").unwrap().to_owned();
    let (mut forwarded, mut compared, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        forwarded.extend(rt.block_on(async {
            series(
                client(&tb, None).await,
                &namespace,
                &format!("fwd-{round}"),
                samples,
            )
            .await
        }));
        if let Some(url) = &compare_url {
            compared.extend(rt.block_on(async {
                series(
                    client(&tb, Some(url)).await,
                    &namespace,
                    &format!("cmp-{round}"),
                    samples,
                )
                .await
            }));
        }
        // The direct series runs on a thread of its own inside the control-plane namespace
        // (namespaces are per thread), with a runtime of its own.
        let (tb_ref, namespace_ref, netns, internal) = (&tb, &namespace, &cp_netns, &internal);
        direct.extend(std::thread::scope(|s| {
            s.spawn(move || {
                let ns = File::open(netns).unwrap();
                setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    series(
                        client(tb_ref, Some(internal)).await,
                        namespace_ref,
                        &format!("dir-{round}"),
                        samples,
                    )
                    .await
                })
            })
            .join()
            .unwrap()
        }));
    }
    report("forwarder", forwarded);
    if compare_url.is_some() {
        report("compare", compared);
    }
    report("direct", direct);

    let kubectl = tb.kubectl.display().to_string();
    let kubeconfig = tb.kubeconfig.display().to_string();
    let via = |extra: &[&str]| -> Vec<String> {
        let tail = [
            kubectl.clone(),
            "--kubeconfig".to_owned(),
            kubeconfig.clone(),
        ];
        extra.iter().map(|s| s.to_string()).chain(tail).collect()
    };
    let mut forwarded = Vec::new();
    let (mut compared, mut direct) = (Vec::new(), Vec::new());
    let cp = tb.var("TESTBED_CP_NETNS").unwrap().to_owned();
    for round in 0..rounds {
        forwarded.extend(kubectl_series(
            &via(&[]),
            &namespace,
            &format!("kfwd-{round}"),
            samples,
        ));
        if let Some(url) = &compare_url {
            let mut cmd = via(&[]);
            cmd.extend(["--server".to_owned(), url.clone()]);
            compared.extend(kubectl_series(
                &cmd,
                &namespace,
                &format!("kcmp-{round}"),
                samples,
            ));
        }
        let mut cmd = via(&["ip", "netns", "exec", &cp]);
        cmd.extend(["--server".to_owned(), internal.clone()]);
        direct.extend(kubectl_series(
            &cmd,
            &namespace,
            &format!("kdir-{round}"),
            samples,
        ));
    }
    report("kubectl forwarder", forwarded);
    if compare_url.is_some() {
        report("kubectl compare", compared);
    }
    report("kubectl direct", direct);
    rt.block_on(namespaces.delete(&namespace, &DeleteParams::default()))
        .unwrap();
}
