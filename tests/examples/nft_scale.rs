//! What one sync of the testbed's kube-proxy costs the kernel at scale: the nftables tables of
//! `SERVICES` (default 10,000) Services like the controller benchmark's (100 shared addresses,
//! a cluster IP each, no endpoints), loaded whole, then half of them removed in one partial
//! update, added back in another, and one removed and added back alone. Needs root; works in a network namespace of its own.
//!
//! Run: `cargo run --release -p ferrolb-testbed --example nft_scale`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use ferrolb_testbed::agent::proxy::{ServiceKey, Tables, destinations};
use ferrolb_testbed::harness::ScratchNetns;
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

/// Apply `script` in `ns` and print a table row: what, script size, time.
fn timed(ns: &ScratchNetns, what: &str, script: &str) {
    let started = Instant::now();
    ns.nft(script).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    println!(
        "| {what} | {} KiB | {:.0?} |",
        script.len() / 1024,
        started.elapsed()
    );
}

fn main() {
    let n: i32 = std::env::var("SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let services: Vec<(ServiceKey, Service)> = (0..n)
        .map(|i| {
            let name = format!("bg-{i:05}");
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"type": "LoadBalancer", "clusterIP": format!("10.96.{}.{}", i / 250, i % 250),
                         "ports": [{"name": "p", "port": 1000 + i / 100, "protocol": "TCP"}]},
                "status": {"loadBalancer": {"ingress": [{"ip": format!("203.0.113.{}", i % 100)}]}}
            }))
            .unwrap();
            (("bench".to_owned(), name), svc)
        })
        .collect();
    let ns = ScratchNetns::new("scale").unwrap();
    let mut tables = Tables::new(["198.51.100.11".parse().unwrap()]);
    for (key, svc) in &services {
        tables.set_service(key, destinations("node-1", svc, []));
    }
    println!("| sync ({n} Services) | script | time |\n|---|---|---|");
    timed(&ns, "whole table", &tables.full());
    for (key, _) in services.iter().step_by(2) {
        tables.set_service(key, Vec::new());
    }
    timed(&ns, "remove half", &tables.partial().unwrap());
    for (key, svc) in services.iter().step_by(2) {
        tables.set_service(key, destinations("node-1", svc, []));
    }
    timed(&ns, "add them back", &tables.partial().unwrap());
    tables.set_service(&services[0].0, Vec::new());
    timed(&ns, "remove one", &tables.partial().unwrap());
    tables.set_service(&services[0].0, destinations("node-1", &services[0].1, []));
    timed(&ns, "add one", &tables.partial().unwrap());
}
