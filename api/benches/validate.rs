//! How long `validate` takes on a large installation: 2,000 pools, 200 BGP peers and 200 BGP
//! advertisements (plus L2 advertisements and BFD profiles).
//!
//! Run: `cargo bench -p ferrolb-api --bench validate`. Prints the median and spread over many runs;
//! record results in docs/benchmarks.md with the machine they ran on.

// A benchmark, like a test, may stop loudly on a broken setup.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferrolb_api::v1alpha1::{
    AddressPool, BfdProfile, BgpAdvertisement, BgpPeer, L2Advertisement, LoadBalancerConfigSpec,
};
use ferrolb_api::validate;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

const POOLS: usize = 2_000;
const PEERS: usize = 200;
const ADVERTISEMENTS: usize = 200;
const RUNS: usize = 101;

fn rack(n: usize) -> LabelSelector {
    LabelSelector {
        match_labels: Some([("rack".to_owned(), format!("r{n}"))].into()),
        match_expressions: None,
    }
}

/// A valid configuration of the stated size, shaped like a large multi-tenant cluster: every
/// pool dual-stack, peers two per rack, each advertisement selecting ten pools for all peers with
/// one of three LOCAL_PREFs (so the conflict check has real work), one advertisement for all pools.
fn large_config() -> LoadBalancerConfigSpec {
    let address_pools = (0..POOLS)
        .map(|i| AddressPool {
            name: format!("pool-{i}"),
            addresses: vec![
                format!("10.{}.{}.0/28", i / 256, i % 256),
                format!(
                    "10.{}.{}.16-10.{}.{}.31",
                    i / 256,
                    i % 256,
                    i / 256,
                    i % 256
                ),
                format!("2001:db8:{i:x}::/64"),
            ],
            auto_assign: true,
            avoid_buggy_ips: i % 2 == 0,
            allocate_to: None,
        })
        .collect();
    let bgp_peers = (0..PEERS)
        .map(|i| BgpPeer {
            name: format!("tor-{i}"),
            my_asn: 4_200_000_000,
            peer_asn: Some(64_512 + u32::try_from(i).unwrap()),
            dynamic_asn: None,
            peer_address: format!("198.51.{}.{}", i / 128, 1 + i % 128),
            peer_port: 179,
            source_address: None,
            router_id: None,
            hold_time: Some("9s".to_owned()),
            keepalive_time: Some("3s".to_owned()),
            connect_time: None,
            vrf: None,
            password_secret_ref: None,
            ebgp_multi_hop: false,
            bfd_profile: Some(format!("bfd-{}", i % 4)),
            graceful_restart: true,
            node_selectors: vec![rack(i / 2)],
        })
        .collect();
    let mut bgp_advertisements: Vec<BgpAdvertisement> = (0..ADVERTISEMENTS - 1)
        .map(|i| BgpAdvertisement {
            name: format!("ad-{i}"),
            address_pools: (0..10).map(|k| format!("pool-{}", i * 10 + k)).collect(),
            aggregation_length: 32,
            aggregation_length_v6: 128,
            local_pref: Some(100 + u32::try_from(i % 3).unwrap()),
            communities: vec!["64512:100".to_owned(), "large:4200000000:1:2".to_owned()],
            peers: Vec::new(),
            node_selectors: Vec::new(),
            service_selectors: Vec::new(),
        })
        .collect();
    bgp_advertisements.push(BgpAdvertisement {
        name: "everything-aggregated".to_owned(),
        address_pools: Vec::new(),
        aggregation_length: 28,
        aggregation_length_v6: 64,
        local_pref: Some(101),
        communities: vec!["no-export".to_owned()],
        peers: vec!["tor-0".to_owned()],
        node_selectors: vec![rack(999)],
        service_selectors: Vec::new(),
    });
    LoadBalancerConfigSpec {
        address_pools,
        l2_advertisements: (0..20)
            .map(|i| L2Advertisement {
                name: format!("l2-{i}"),
                address_pools: (0..5)
                    .map(|k| format!("pool-{}", 1_990 - i * 5 + k))
                    .collect(),
                node_selectors: vec![rack(i)],
                service_selectors: Vec::new(),
                preferred_node_selectors: Vec::new(),
                interfaces: vec!["eth0".to_owned()],
            })
            .collect(),
        bgp_peers,
        bgp_advertisements,
        bfd_profiles: (0..4)
            .map(|i| BfdProfile {
                name: format!("bfd-{i}"),
                receive_interval: 100,
                transmit_interval: 100,
                detect_multiplier: 3,
                echo_interval: 50,
                echo_mode: false,
                passive_mode: false,
                minimum_ttl: 254,
            })
            .collect(),
        ..LoadBalancerConfigSpec::default()
    }
}

fn main() {
    let spec = large_config();
    if let Err(problems) = validate(&spec) {
        panic!("the benchmark config must be valid:\n{problems}");
    }
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(validate(black_box(&spec))).ok();
            start.elapsed()
        })
        .collect();
    times.sort();
    let pct = |p: usize| times[(times.len() - 1) * p / 100];
    println!(
        "validate: {POOLS} pools, {PEERS} peers, {ADVERTISEMENTS} BGP advertisements, {RUNS} runs: median {:.2?}, p10 {:.2?}, p90 {:.2?}, min {:.2?}",
        pct(50),
        pct(10),
        pct(90),
        times[0]
    );
}
