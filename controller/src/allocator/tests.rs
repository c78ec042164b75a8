//! The allocation rules, each as a small world.

use std::net::IpAddr;

use ferrolb_api::address::IpFamily;
use ferrolb_api::v1alpha1::{AddressPool, AllocateTo};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;

fn pool(name: &str, addresses: &[&str]) -> AddressPool {
    AddressPool {
        name: name.to_owned(),
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        allocate_to: None,
    }
}

fn svc(key: &str) -> ServiceRequest {
    let (namespace, _) = key.split_once('/').unwrap();
    ServiceRequest {
        key: key.to_owned(),
        namespace: namespace.to_owned(),
        namespace_labels: BTreeMap::new(),
        labels: BTreeMap::new(),
        families: FamilyPolicy::Single(IpFamily::V4),
        requested: Vec::new(),
        pool: None,
        sharing_key: None,
        backend_key: String::new(),
        ports: vec![Port {
            protocol: "TCP".into(),
            port: 80,
        }],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(a: &Assignment) -> Vec<String> {
    a.ips.iter().map(ToString::to_string).collect()
}

#[test]
fn takes_the_lowest_free_address() {
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/30"])]);
    assert_eq!(
        ips(&alloc.allocate(&svc("ns/one")).unwrap()),
        ["203.0.113.0"]
    );
    assert_eq!(
        ips(&alloc.allocate(&svc("ns/two")).unwrap()),
        ["203.0.113.1"]
    );
    alloc.release("ns/one");
    assert_eq!(
        ips(&alloc.allocate(&svc("ns/three")).unwrap()),
        ["203.0.113.0"]
    );
}

#[test]
fn allocate_is_idempotent() {
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/30"])]);
    let first = alloc.allocate(&svc("ns/one")).unwrap();
    assert_eq!(alloc.allocate(&svc("ns/one")).unwrap(), first);
    assert_eq!(alloc.pools().next().unwrap().usage(IpFamily::V4), (4, 1));
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut p = pool("a", &["203.0.113.255-203.0.114.1"]);
    p.avoid_buggy_ips = true;
    let mut alloc = Allocator::new(&[p]);
    assert_eq!(alloc.pools().next().unwrap().usage(IpFamily::V4), (1, 0));
    assert_eq!(ips(&alloc.allocate(&svc("ns/a")).unwrap()), ["203.0.114.1"]);
    assert_eq!(
        alloc.allocate(&svc("ns/b")),
        Err(AllocationError::PoolsFull {
            families: "IPv4".into(),
            pools: "a".into()
        })
    );
    let mut asks_buggy = svc("ns/c");
    asks_buggy.requested = vec![ip("203.0.114.0")];
    assert_eq!(
        alloc.allocate(&asks_buggy),
        Err(AllocationError::NotInAnyPool(ip("203.0.114.0")))
    );
}

#[test]
fn requested_ip_wins_and_must_be_in_a_pool() {
    let mut alloc = Allocator::new(&[
        pool("a", &["203.0.113.0/28"]),
        pool("b", &["203.0.113.16/28"]),
    ]);
    let mut s = svc("ns/web");
    s.requested = vec![ip("203.0.113.20")];
    assert_eq!(
        alloc.allocate(&s).unwrap(),
        Assignment {
            pool: "b".into(),
            ips: vec![ip("203.0.113.20")]
        }
    );
    s.requested = vec![ip("198.51.100.1")];
    assert_eq!(
        alloc.allocate(&s),
        Err(AllocationError::NotInAnyPool(ip("198.51.100.1")))
    );
    // The failed request did not lose what the Service held.
    assert_eq!(ips(alloc.assignment("ns/web").unwrap()), ["203.0.113.20"]);
    s.requested = vec![ip("203.0.113.20")];
    s.pool = Some("a".into());
    assert_eq!(
        alloc.allocate(&s),
        Err(AllocationError::WrongPool {
            ip: ip("203.0.113.20"),
            actual: "b".into(),
            requested: "a".into()
        })
    );
}

#[test]
fn pool_annotation_selects_the_pool_even_without_auto_assign() {
    let mut manual = pool("manual", &["203.0.113.16/28"]);
    manual.auto_assign = false;
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/28"]), manual]);
    assert_eq!(alloc.allocate(&svc("ns/x")).unwrap().pool, "a");
    let mut s = svc("ns/y");
    s.pool = Some("manual".into());
    assert_eq!(alloc.allocate(&s).unwrap().pool, "manual");
    s.pool = Some("nope".into());
    assert_eq!(
        alloc.allocate(&s),
        Err(AllocationError::UnknownPool("nope".into()))
    );
}

#[test]
fn pools_are_tried_by_allocate_to_priority_then_name() {
    let mut tenant = pool("tenant", &["203.0.113.32/30"]);
    tenant.allocate_to = Some(AllocateTo {
        priority: Some(5),
        namespaces: vec!["team".into()],
        ..AllocateTo::default()
    });
    let mut premium = pool("premium", &["203.0.113.48/30"]);
    premium.allocate_to = Some(AllocateTo {
        priority: Some(1),
        service_selectors: vec![LabelSelector {
            match_labels: Some([("tier".to_owned(), "gold".to_owned())].into()),
            match_expressions: None,
        }],
        ..AllocateTo::default()
    });
    let pools = [
        pool("z-general", &["203.0.113.0/30"]),
        pool("a-general", &["203.0.113.16/30"]),
        tenant,
        premium,
    ];
    let mut alloc = Allocator::new(&pools);
    // Unpinned pools by name.
    assert_eq!(alloc.allocate(&svc("other/s")).unwrap().pool, "a-general");
    // A namespace-pinned pool before unpinned ones.
    assert_eq!(alloc.allocate(&svc("team/s")).unwrap().pool, "tenant");
    // The higher priority (lower number) first.
    let mut gold = svc("team/gold");
    gold.labels.insert("tier".into(), "gold".into());
    assert_eq!(alloc.allocate(&gold).unwrap().pool, "premium");
    // A pool that excludes a Service cannot be forced by annotation.
    let mut sneaky = svc("other/sneaky");
    sneaky.pool = Some("tenant".into());
    assert_eq!(
        alloc.allocate(&sneaky),
        Err(AllocationError::NotAllowed {
            pool: "tenant".into(),
            namespace: "other".into()
        })
    );
}

#[test]
fn namespace_selectors_admit_by_namespace_labels() {
    let mut p = pool("prod", &["203.0.113.0/30"]);
    p.allocate_to = Some(AllocateTo {
        namespace_selectors: vec![LabelSelector {
            match_labels: Some([("env".to_owned(), "prod".to_owned())].into()),
            match_expressions: None,
        }],
        ..AllocateTo::default()
    });
    let mut alloc = Allocator::new(&[p]);
    assert_eq!(
        alloc.allocate(&svc("dev/s")),
        Err(AllocationError::NoPoolAllows("dev".into()))
    );
    let mut s = svc("shop/s");
    s.namespace_labels.insert("env".into(), "prod".into());
    assert_eq!(alloc.allocate(&s).unwrap().pool, "prod");
}

#[test]
fn full_pools_fall_through_to_the_next_and_then_fail_precisely() {
    let mut alloc = Allocator::new(&[
        pool("a", &["203.0.113.0/32"]),
        pool("b", &["203.0.113.1/32"]),
    ]);
    assert_eq!(alloc.allocate(&svc("ns/1")).unwrap().pool, "a");
    assert_eq!(alloc.allocate(&svc("ns/2")).unwrap().pool, "b");
    let err = alloc.allocate(&svc("ns/3")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no free IPv4 address in address pool(s) a, b"
    );
    assert_eq!(err.reason(), "PoolFull");
    alloc.release("ns/1");
    assert_eq!(alloc.allocate(&svc("ns/3")).unwrap().pool, "a");
}

#[test]
fn sharing_needs_the_same_key_the_same_backends_and_distinct_ports() {
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/30"])]);
    let mut dns_tcp = svc("ns/dns-tcp");
    dns_tcp.sharing_key = Some("dns".into());
    dns_tcp.ports = vec![Port {
        protocol: "TCP".into(),
        port: 53,
    }];
    let mut dns_udp = dns_tcp.clone();
    dns_udp.key = "ns/dns-udp".into();
    dns_udp.ports = vec![Port {
        protocol: "UDP".into(),
        port: 53,
    }];
    let first = alloc.allocate(&dns_tcp).unwrap();
    assert_eq!(
        alloc.allocate(&dns_udp).unwrap(),
        first,
        "sharers land on one IP"
    );
    assert_eq!(alloc.pools().next().unwrap().usage(IpFamily::V4), (4, 1));

    let shared = first.ips[0];
    let mut clash = dns_udp.clone();
    clash.key = "ns/clash".into();
    clash.requested = vec![shared];
    assert_eq!(
        alloc.allocate(&clash).unwrap_err().to_string(),
        format!("IP {shared} is already used by ns/dns-udp, and both expose UDP/53")
    );
    let mut other_key = svc("ns/other");
    other_key.sharing_key = Some("web".into());
    other_key.requested = vec![shared];
    assert!(matches!(
        alloc.allocate(&other_key),
        Err(AllocationError::SharingConflict { .. })
    ));
    let mut no_key = svc("ns/nokey");
    no_key.requested = vec![shared];
    assert_eq!(
        alloc.allocate(&no_key).unwrap_err().reason(),
        "SharingConflict"
    );
    let mut local = dns_tcp.clone();
    local.key = "ns/local".into();
    local.backend_key = "app=dns".into();
    local.ports = vec![Port {
        protocol: "TCP".into(),
        port: 853,
    }];
    local.requested = vec![shared];
    assert!(
        alloc
            .allocate(&local)
            .unwrap_err()
            .to_string()
            .contains("select different backends")
    );
    // Without a requested IP, an incompatible sharer gets a fresh address instead.
    local.requested.clear();
    assert_ne!(alloc.allocate(&local).unwrap().ips[0], shared);

    // The shared IP is freed only when its last user goes.
    alloc.release("ns/dns-tcp");
    assert_eq!(alloc.users(shared).collect::<Vec<_>>(), ["ns/dns-udp"]);
    alloc.release("ns/dns-udp");
    assert_eq!(alloc.users(shared).count(), 0);
    assert_eq!(
        ips(&alloc.allocate(&svc("ns/new")).unwrap()),
        [shared.to_string()]
    );
}

#[test]
fn dual_stack_policies() {
    let pools = [
        pool("v4only", &["203.0.113.0/30"]),
        pool("v6only", &["2001:db8::/126"]),
        pool("zdual", &["203.0.113.8/30", "2001:db8:1::/126"]),
    ];
    let mut alloc = Allocator::new(&pools);
    let mut s = svc("ns/single6");
    s.families = FamilyPolicy::Single(IpFamily::V6);
    assert_eq!(alloc.allocate(&s).unwrap().pool, "v6only");
    let mut s = svc("ns/require");
    s.families = FamilyPolicy::RequireDual(IpFamily::V6);
    assert_eq!(
        ips(&alloc.allocate(&s).unwrap()),
        ["2001:db8:1::", "203.0.113.8"],
        "primary family first, both from one pool"
    );
    let mut s = svc("ns/prefer");
    s.families = FamilyPolicy::PreferDual(IpFamily::V4);
    assert_eq!(alloc.allocate(&s).unwrap().ips.len(), 2);

    let mut alloc = Allocator::new(&pools[..2]);
    let mut s = svc("ns/prefer");
    s.families = FamilyPolicy::PreferDual(IpFamily::V4);
    assert_eq!(
        alloc.allocate(&s).unwrap().pool,
        "v4only",
        "falls back to single stack"
    );
    let mut s = svc("ns/require");
    s.families = FamilyPolicy::RequireDual(IpFamily::V4);
    assert_eq!(
        alloc.allocate(&s).unwrap_err().to_string(),
        "IP family mismatch: no pool that may serve this Service has IPv4 and IPv6 addresses"
    );
    let mut s = svc("ns/wrong");
    s.requested = vec![ip("2001:db8::2")];
    assert_eq!(
        alloc.allocate(&s).unwrap_err().to_string(),
        "IP family mismatch: 2001:db8::2 is IPv6 but the Service is single-stack IPv4"
    );
    s.families = FamilyPolicy::PreferDual(IpFamily::V4);
    s.requested = vec![ip("2001:db8::2"), ip("2001:db8::3")];
    assert_eq!(alloc.allocate(&s).unwrap_err().reason(), "FamilyMismatch");
}

#[test]
fn a_slash_64_is_counted_exactly_and_stays_cheap() {
    let mut alloc = Allocator::new(&[pool("v6", &["2001:db8::/64"])]);
    let mut s = svc("ns/a");
    s.families = FamilyPolicy::Single(IpFamily::V6);
    for i in 0..1000 {
        s.key = format!("ns/{i}");
        alloc.allocate(&s).unwrap();
    }
    let p = alloc.pools().next().unwrap();
    assert_eq!(p.usage(IpFamily::V6), (1u128 << 64, 1000));
}

#[test]
fn removing_a_pool_rehomes_its_services_and_renaming_keeps_ips() {
    let mut alloc = Allocator::new(&[
        pool("a", &["203.0.113.0/30"]),
        pool("b", &["203.0.113.8/30"]),
    ]);
    let mut on_b = svc("ns/on-b");
    on_b.pool = Some("b".into());
    alloc.allocate(&on_b).unwrap();
    let on_a = alloc.allocate(&svc("ns/on-a")).unwrap();
    // Rename a → c: same addresses, the Service keeps its IP under the new pool name.
    let displaced = alloc.set_pools(&[
        pool("c", &["203.0.113.0/30"]),
        pool("b", &["203.0.113.8/30"]),
    ]);
    assert!(displaced.is_empty());
    assert_eq!(alloc.assignment("ns/on-a").unwrap().ips, on_a.ips);
    assert_eq!(alloc.assignment("ns/on-a").unwrap().pool, "c");
    // Remove b: its Service is displaced and can be allocated again elsewhere.
    let displaced = alloc.set_pools(&[pool("c", &["203.0.113.0/30"])]);
    assert_eq!(displaced, ["ns/on-b"]);
    assert!(alloc.assignment("ns/on-b").is_none());
    on_b.pool = None;
    assert_eq!(ips(&alloc.allocate(&on_b).unwrap()), ["203.0.113.1"]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Allocate {
            id: u8,
            share: Option<u8>,
            local: bool,
            port: u8,
            v6: bool,
        },
        Request {
            id: u8,
            offset: u8,
            share: Option<u8>,
        },
        Release {
            id: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), prop::option::of(0u8..3), any::<bool>(), 0u8..4, any::<bool>())
                .prop_map(|(id, share, local, port, v6)| Op::Allocate { id: id % 40, share, local, port, v6 }),
            1 => (any::<u8>(), 0u8..20, prop::option::of(0u8..3))
                .prop_map(|(id, offset, share)| Op::Request { id: id % 40, offset, share }),
            2 => any::<u8>().prop_map(|id| Op::Release { id: id % 40 }),
        ]
    }

    fn pools() -> Vec<AddressPool> {
        let mut buggy = pool("b-buggy", &["203.0.113.250-203.0.114.5"]);
        buggy.avoid_buggy_ips = true;
        vec![
            pool("a-small", &["203.0.113.0/29", "2001:db8::/125"]),
            buggy,
        ]
    }

    fn request(id: u8, share: Option<u8>, local: bool, port: u8, v6: bool) -> ServiceRequest {
        let mut s = svc(&format!("ns/s{id}"));
        s.sharing_key = share.map(|k| format!("k{k}"));
        s.backend_key = if local { "app=x".into() } else { String::new() };
        s.ports = vec![Port {
            protocol: "TCP".into(),
            port: i32::from(port),
        }];
        if v6 {
            s.families = FamilyPolicy::PreferDual(IpFamily::V6);
        }
        s
    }

    fn run(ops: &[Op]) -> Allocator {
        let mut alloc = Allocator::new(&pools());
        for op in ops {
            match *op {
                Op::Allocate {
                    id,
                    share,
                    local,
                    port,
                    v6,
                } => {
                    let _ = alloc.allocate(&request(id, share, local, port, v6));
                }
                Op::Request { id, offset, share } => {
                    let mut s = request(id, share, false, offset % 4, false);
                    s.requested = vec![IpAddr::from([203, 0, 113, offset])];
                    let _ = alloc.allocate(&s);
                }
                Op::Release { id } => {
                    alloc.release(&format!("ns/s{id}"));
                }
            }
        }
        alloc
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// No address is ever held by two Services that may not share it.
        #[test]
        fn no_ip_held_by_incompatible_services(ops in prop::collection::vec(op(), 0..150)) {
            let alloc = run(&ops);
            for (ip, users) in &alloc.users {
                let holders: Vec<&Holder> = users.iter().map(|k| &alloc.holders[k]).collect();
                for (i, a) in holders.iter().enumerate() {
                    prop_assert!(a.assignment.ips.contains(ip));
                    for b in &holders[..i] {
                        prop_assert!(a.request.sharing_key.is_some(), "{ip} shared without a key");
                        prop_assert_eq!(&a.request.sharing_key, &b.request.sharing_key);
                        prop_assert_eq!(&a.request.backend_key, &b.request.backend_key);
                        prop_assert!(a.request.ports.iter().all(|p| !b.request.ports.contains(p)));
                    }
                }
            }
            // Every held address is counted once, in its pool.
            for pool in alloc.pools() {
                let used = alloc.users.keys().filter(|ip| pool.contains(**ip)).count() as u128;
                prop_assert_eq!(pool.usage(IpFamily::V4).1 + pool.usage(IpFamily::V6).1, used);
            }
        }

        /// Releasing everything gives every address back: the pools are as new.
        #[test]
        fn every_release_returns_capacity(ops in prop::collection::vec(op(), 0..150)) {
            let mut alloc = run(&ops);
            for id in 0..40u8 {
                alloc.release(&format!("ns/s{id}"));
            }
            prop_assert!(alloc.is_empty() && alloc.users.is_empty() && alloc.shared.is_empty());
            let fresh = Allocator::new(&pools());
            for (p, q) in alloc.pools().zip(fresh.pools()) {
                for f in [IpFamily::V4, IpFamily::V6] {
                    prop_assert_eq!(p.usage(f), q.usage(f));
                    prop_assert_eq!(p.first_free(f), q.first_free(f));
                }
            }
        }

        /// While a pool has capacity, allocation succeeds, however the holes were made.
        #[test]
        fn allocation_succeeds_while_capacity_remains(ops in prop::collection::vec(op(), 0..150)) {
            let mut alloc = run(&ops);
            let mut n = 0u16;
            loop {
                let free: u128 = alloc.pools().map(|p| p.usage(IpFamily::V4).0 - p.usage(IpFamily::V4).1).sum();
                let mut s = svc(&format!("ns/fill{n}"));
                s.ports = vec![Port { protocol: "TCP".into(), port: 9 }];
                let result = alloc.allocate(&s);
                if free == 0 {
                    prop_assert!(matches!(result, Err(AllocationError::PoolsFull { .. })), "{result:?}");
                    break;
                }
                prop_assert!(result.is_ok(), "{free} free but {result:?}");
                n += 1;
            }
        }

        /// Restoring the same assignments in any order (as after a restart) gives the same state.
        #[test]
        fn restoring_is_independent_of_order(ops in prop::collection::vec(op(), 0..150), seed: u64) {
            let alloc = run(&ops);
            let mut held: Vec<(ServiceRequest, Vec<IpAddr>)> = alloc
                .holders
                .values()
                .map(|h| (h.request.clone(), h.assignment.ips.clone()))
                .collect();
            held.sort_by(|a, b| a.0.key.cmp(&b.0.key));
            let mut shuffled = held.clone();
            // A deterministic shuffle from the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let restore = |list: &[(ServiceRequest, Vec<IpAddr>)]| {
                let mut a = Allocator::new(&pools());
                for (req, ips) in list {
                    a.assign(req, ips).unwrap();
                }
                let mut state: Vec<(String, Vec<IpAddr>)> = a.holders.iter().map(|(k, h)| (k.clone(), h.assignment.ips.clone())).collect();
                state.sort();
                let usage: Vec<(u128, u128)> = a.pools().flat_map(|p| [p.usage(IpFamily::V4), p.usage(IpFamily::V6)]).collect();
                (state, usage)
            };
            prop_assert_eq!(restore(&held), restore(&shuffled));
        }
    }
}
