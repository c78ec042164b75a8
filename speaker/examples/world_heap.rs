//! What the speaker's state costs in heap per Service, stage by stage, without a cluster: the
//! world fed COUNT Services and EndpointSlices made from the real testbed objects in
//! `src/world/decoded/` (as bgp_bench creates them: one IP each, Announced to three peers from
//! three nodes), then the Layer 2 plan, the BGP routes to three peers, and what the sessions keep
//! of them (one shared copy, and each session's Adj-RIB-Out).
//!
//! `cargo run --release -p ferrolb-speaker --example world_heap --locked` (COUNT=10000 by
//! default). The bytes are glibc's heap in use (`mallinfo2`), so they include the allocator's
//! overhead per block, as the speaker's resident set does.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ferrolb_api::v1alpha1::LoadBalancerConfig;
use ferrolb_speaker::announce::bgp::BgpPlan;
use ferrolb_speaker::world::decoded::{self, DecodedService, DecodedSlice};
use ferrolb_speaker::world::{Plan, World};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

/// glibc's heap in use now (what the allocator hands out, with its own overhead per block).
fn now() -> u64 {
    ferrolb_runtime::memory::heap().map_or(0, |h| h.in_use)
}

struct Stages {
    count: usize,
    last: u64,
}

impl Stages {
    fn mark(&mut self, what: &str) {
        let heap = now();
        let per = (heap as f64 - self.last as f64) / self.count as f64;
        println!("{what:<44} {per:>8.0} B");
        self.last = heap;
    }
}

fn fixture(name: &str) -> anyhow::Result<Value> {
    let path = format!(
        "{}/src/world/decoded/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
}

fn node(name: &str, ip: &str) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": ip}],
        },
    }))?)
}

fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10_000);
    let service = fixture("service")?;
    let slice = fixture("slice")?;
    // Each object is made from the fixture as the watch would hand it over, and dropped by the
    // world once it has taken its view.
    let service_at = |i: usize| {
        let name = format!("bg-{i:05}");
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i as u32).to_string();
        let mut s = service.clone();
        s["metadata"]["name"] = json!(name);
        s["status"]["loadBalancer"]["ingress"][0]["ip"] = json!(ip);
        for c in s["status"]["conditions"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let message = c["message"].as_str().unwrap_or_default();
            c["message"] = json!(message.replace("10.200.0.42", &ip));
        }
        serde_json::from_value::<DecodedService>(s)
    };
    let slice_at = |i: usize| {
        let name = format!("bg-{i:05}");
        let mut e = slice.clone();
        e["metadata"]["name"] = json!(format!("{name}-{:05x}", i * 7919 % 0xfffff));
        e["metadata"]["labels"]["kubernetes.io/service-name"] = json!(name);
        e["endpoints"][0]["nodeName"] = json!(format!("node-{}", i % 3 + 1));
        serde_json::from_value::<DecodedSlice>(e)
    };
    let router = |name: &str, asn: u32, address: &str| json!({"name": name, "myASN": 64513, "peerASN": asn, "peerAddress": address, "holdTime": "9s"});
    let config: LoadBalancerConfig = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1alpha1", "kind": "LoadBalancerConfig",
        "metadata": {"name": "default", "creationTimestamp": "2026-12-03T18:00:00Z"},
        "spec": {
            "addressPools": [{"name": "bench", "addresses": ["10.200.0.0/16"]}],
            "bgpPeers": [
                router("frr", 64512, "198.51.100.1"),
                router("bird", 64520, "198.51.100.2"),
                router("gobgp", 64530, "198.51.100.3"),
            ],
            "bgpAdvertisements": [{"name": "all"}],
        },
    }))?;

    let mut world = World::default();
    world.config_event(Event::Apply(config));
    for (i, ip) in [
        (1, "198.51.100.11"),
        (2, "198.51.100.12"),
        (3, "198.51.100.13"),
    ] {
        world.set_node(&node(&format!("node-{i}"), ip)?);
    }
    println!("{count} Services, per Service:");
    let start = now();
    let mut stages = Stages { count, last: start };
    world.service_event(Event::Init);
    for i in 0..count {
        world.service_event(decoded::full(Event::InitApply(service_at(i)?)));
    }
    world.service_event(Event::InitDone);
    stages.mark("world: Services");
    world.slice_event(Event::Init);
    for i in 0..count {
        world.slice_event(decoded::full(Event::InitApply(slice_at(i)?)));
    }
    world.slice_event(Event::InitDone);
    stages.mark("world: EndpointSlices");
    let changed = world.take_changed();
    stages.mark("world: what changed");
    drop(changed);

    let me = "node-1";
    let live: BTreeSet<String> = ["node-1", "node-2", "node-3"].map(String::from).into();
    let mut plan = Plan::default();
    let views = world.update_plan(
        me,
        &live,
        &ferrolb_speaker::world::Changed::Everything,
        &mut plan,
    );
    stages.mark("(service views, dropped after each pass)");
    let config = world
        .config()
        .ok_or_else(|| anyhow::anyhow!("the config is not in force"))?;
    let bgp = BgpPlan::new(config, world.nodes());
    let routes = bgp.routes(me, &views);
    stages.mark("BGP routes, 3 peers");
    drop(views);
    stages.mark("(service views dropped)");
    let shared = std::sync::Arc::new(routes.get("frr").cloned().unwrap_or_default());
    stages.mark("sessions: the shared copy");
    let adj_rib_out: Vec<_> = routes.values().cloned().collect();
    stages.mark("sessions: Adj-RIB-Out, 3 peers");
    let total = now().saturating_sub(start);
    println!(
        "total: {:.0} B per Service, {:.1} MB",
        total as f64 / count as f64,
        total as f64 / 1e6
    );
    drop((shared, adj_rib_out, plan, world));
    Ok(())
}
