//! What one sync of the testbed's kube-proxy costs the kernel at scale: the nftables tables of
//! `SERVICES` (default 10,000) Services like the controller benchmark's (100 shared addresses,
//! a cluster IP each), loaded whole, then half of them removed in one partial update, added back
//! in another, and one removed alone. Needs root; works in a network namespace of its own.
//!
//! Run: `cargo run --release -p ferrolb-testbed --example nft_scale`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use ferrolb_testbed::agent::proxy::{ServiceKey, Tables, destinations};
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

/// A network namespace of this run, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("ftb-nftscale-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip")
            .success();
        assert!(ok, "ip netns add {name} (needs root)");
        Netns(name)
    }

    fn nft(&self, what: &str, script: &str) {
        let started = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "| {what} | {} KiB | {:.0?} |",
            script.len() / 1024,
            started.elapsed()
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
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
    let ns = Netns::new();
    let mut tables = Tables::new(["198.51.100.11".parse().unwrap()]);
    for (key, svc) in &services {
        tables.set_service(key, destinations("node-1", svc, []));
    }
    println!("| sync ({n} Services) | script | time |\n|---|---|---|");
    ns.nft("whole table", &tables.full());
    for (key, _) in services.iter().step_by(2) {
        tables.set_service(key, Vec::new());
    }
    ns.nft("remove half", &tables.partial().unwrap());
    for (key, svc) in services.iter().step_by(2) {
        tables.set_service(key, destinations("node-1", svc, []));
    }
    ns.nft("add them back", &tables.partial().unwrap());
    tables.set_service(&services[0].0, Vec::new());
    ns.nft("remove one", &tables.partial().unwrap());
}
