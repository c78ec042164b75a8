//! Pure allocator throughput: allocations and releases per second on one IPv6 /64 and on 256
//! IPv4 /24s, with holes punched by releases so the free sets are fragmented.
//!
//! Run: `cargo bench -p ferrolb-controller --bench allocator`. Record results in
//! docs/benchmarks.md with the machine they ran on.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Instant;

use ferrolb_api::address::IpFamily;
use ferrolb_api::v1alpha1::AddressPool;
use ferrolb_controller::allocator::{Allocator, FamilyPolicy, Port, ServiceRequest};

const SERVICES: usize = 50_000;
const ROUNDS: usize = 7;

fn request(i: usize, family: IpFamily) -> ServiceRequest {
    ServiceRequest {
        key: format!("ns/svc-{i}"),
        namespace: "ns".to_owned(),
        namespace_labels: BTreeMap::new(),
        labels: BTreeMap::new(),
        families: FamilyPolicy::Single(family),
        requested: Vec::new(),
        pool: None,
        sharing_key: None,
        backend_key: String::new(),
        ports: vec![Port {
            protocol: "TCP".to_owned(),
            port: 443,
        }],
    }
}

/// One round: allocate SERVICES, release every third, allocate them again. Returns operations per
/// second over the whole round.
fn round(pools: &[AddressPool], family: IpFamily) -> f64 {
    let requests: Vec<ServiceRequest> = (0..SERVICES).map(|i| request(i, family)).collect();
    let mut alloc = Allocator::new(pools);
    let start = Instant::now();
    let mut ops = 0usize;
    for r in &requests {
        alloc.allocate(r).unwrap();
        ops += 1;
    }
    for r in requests.iter().step_by(3) {
        alloc.release(&r.key);
        ops += 1;
    }
    for r in requests.iter().step_by(3) {
        alloc.allocate(r).unwrap();
        ops += 1;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let slash64 = vec![AddressPool {
        name: "v6".to_owned(),
        addresses: vec!["2001:db8::/64".to_owned()],
        auto_assign: true,
        avoid_buggy_ips: false,
        allocate_to: None,
    }];
    let slash24s: Vec<AddressPool> = (0..256)
        .map(|i| AddressPool {
            name: format!("v4-{i:03}"),
            addresses: vec![format!("10.{i}.0.0/24")],
            auto_assign: true,
            avoid_buggy_ips: true,
            allocate_to: None,
        })
        .collect();
    for (name, pools, family) in [
        ("one /64", &slash64, IpFamily::V6),
        ("256 /24s (avoidBuggyIPs)", &slash24s, IpFamily::V4),
    ] {
        let rates: Vec<f64> = (0..ROUNDS).map(|_| round(pools, family)).collect();
        println!(
            "allocator, {name}: {SERVICES} allocations + {} releases + {} re-allocations per round, {ROUNDS} rounds: median {:.0} ops/s (min {:.0}, max {:.0})",
            SERVICES.div_ceil(3),
            SERVICES.div_ceil(3),
            median(rates.clone()),
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
    }
}
