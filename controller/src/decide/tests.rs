//! The per-Service decision and the write plan, each rule as a small world.

use std::collections::BTreeMap;

use ferrolb_api::v1alpha1::AddressPool;
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use super::*;
use crate::allocator::Allocator;

fn pool(name: &str, addresses: &[&str]) -> AddressPool {
    AddressPool {
        name: name.to_owned(),
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        allocate_to: None,
    }
}

/// A LoadBalancer Service `ns/NAME` with these annotations, status addresses and condition
/// `(status, reason, message)`.
fn svc(
    name: &str,
    annotations: Value,
    ips: &[&str],
    condition: Option<(&str, &str, &str)>,
) -> ServiceView {
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    let conditions: Vec<Value> = condition
        .into_iter()
        .map(|(status, reason, message)| {
            json!({"type": "ferrolb.io/IPAllocated", "status": status, "reason": reason,
                   "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"})
        })
        .collect();
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "ns", "name": name, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": ingress}, "conditions": conditions},
    }))
    .unwrap();
    ServiceView::new(service)
}

fn ips(o: &Outcome) -> Vec<String> {
    match o {
        Outcome::Allocated(a) => a.ips.iter().map(ToString::to_string).collect(),
        Outcome::Failed { kept, .. } => kept
            .iter()
            .flat_map(|a| a.ips.iter().map(ToString::to_string))
            .collect(),
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn a_new_service_gets_the_lowest_free_address() {
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/30"])]);
    let d = decide(
        &mut alloc,
        &svc("web", json!({}), &[], None),
        &labels(),
        false,
    );
    assert_eq!(ips(&d.outcome), ["203.0.113.0"]);
    assert!(!d.freed);
}

#[test]
fn addresses_in_status_are_claimed_before_anything_is_allocated() {
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/30"])]);
    let held = svc("held", json!({}), &["203.0.113.2"], None);
    let d = decide(&mut alloc, &held, &labels(), false);
    assert_eq!(ips(&d.outcome), ["203.0.113.2"]);
    // And a second, new Service does not get it.
    let d = decide(
        &mut alloc,
        &svc("new", json!({}), &[], None),
        &labels(),
        false,
    );
    assert_eq!(ips(&d.outcome), ["203.0.113.0"]);
}

#[test]
fn no_pools_keeps_what_the_allocator_or_the_status_holds() {
    let mut alloc = Allocator::default();
    let held = svc(
        "held",
        json!({"ferrolb.io/ip-allocated-from-pool": "a"}),
        &["203.0.113.2"],
        None,
    );
    let d = decide(&mut alloc, &held, &labels(), true);
    assert_eq!(
        d.outcome,
        Outcome::Allocated(Assignment {
            pool: "a".into(),
            ips: vec!["203.0.113.2".parse().unwrap()],
        })
    );
    let d = decide(
        &mut alloc,
        &svc("new", json!({}), &[], None),
        &labels(),
        true,
    );
    assert_eq!(d.outcome.reason(), "NoAddressPools");
}

#[test]
fn a_request_that_cannot_be_met_keeps_the_current_addresses_and_says_so() {
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/30"])]);
    let first = decide(
        &mut alloc,
        &svc("web", json!({}), &[], None),
        &labels(),
        false,
    );
    assert_eq!(ips(&first.outcome), ["203.0.113.0"]);
    let asks_outside = svc(
        "web",
        json!({"ferrolb.io/load-balancer-ips": "198.51.100.7"}),
        &["203.0.113.0"],
        None,
    );
    let d = decide(&mut alloc, &asks_outside, &labels(), false);
    let Outcome::Failed { message, kept, .. } = &d.outcome else {
        panic!("expected a failure, got {:?}", d.outcome);
    };
    assert!(message.ends_with("; the Service keeps its current addresses"));
    assert_eq!(kept.as_ref().map(|a| a.ips.len()), Some(1));
    assert_eq!(ips(&d.outcome), ["203.0.113.0"]);
}

#[test]
fn an_invalid_request_keeps_what_is_held() {
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/30"])]);
    decide(
        &mut alloc,
        &svc("web", json!({}), &[], None),
        &labels(),
        false,
    );
    let bad = svc(
        "web",
        json!({"ferrolb.io/load-balancer-ips": "not-an-ip"}),
        &["203.0.113.0"],
        None,
    );
    let d = decide(&mut alloc, &bad, &labels(), false);
    assert_eq!(d.outcome.reason(), "InvalidRequest");
    assert_eq!(ips(&d.outcome), ["203.0.113.0"]);
}

#[test]
fn moving_to_requested_addresses_frees_the_old_ones() {
    let mut alloc = Allocator::new(&[pool("a", &["203.0.113.0/30"])]);
    decide(
        &mut alloc,
        &svc("web", json!({}), &[], None),
        &labels(),
        false,
    );
    let asks = svc(
        "web",
        json!({"ferrolb.io/load-balancer-ips": "203.0.113.3"}),
        &["203.0.113.0"],
        None,
    );
    let d = decide(&mut alloc, &asks, &labels(), false);
    assert_eq!(ips(&d.outcome), ["203.0.113.3"]);
    assert!(d.freed);
}

fn allocated(pool: &str, ip: &str) -> Outcome {
    Outcome::Allocated(Assignment {
        pool: pool.into(),
        ips: vec![ip.parse().unwrap()],
    })
}

const OK_MESSAGE: &str = "203.0.113.0 from pool a";

/// Each row: the Service as the cluster holds it, the outcome, and what the plan must be
/// (`None`: nothing to write; else the ingress, the annotation, whether it is removed, and the
/// Event reason).
#[test]
fn the_plan_writes_exactly_the_differences() {
    type Row = (
        &'static str,
        ServiceView,
        Outcome,
        Option<(
            Vec<&'static str>,
            Option<&'static str>,
            bool,
            Option<&'static str>,
        )>,
    );
    let pool_a = json!({"ferrolb.io/ip-allocated-from-pool": "a"});
    let ok = Some(("True", "IPAllocated", OK_MESSAGE));
    let rows: Vec<Row> = vec![
        (
            "already as wanted: nothing",
            svc("s", pool_a.clone(), &["203.0.113.0"], ok),
            allocated("a", "203.0.113.0"),
            None,
        ),
        (
            "new Service: status, annotation, Event",
            svc("s", json!({}), &[], None),
            allocated("a", "203.0.113.0"),
            Some((vec!["203.0.113.0"], Some("a"), false, Some("IPAllocated"))),
        ),
        (
            "someone cleared the status: written again, with an Event",
            svc("s", pool_a.clone(), &[], ok),
            allocated("a", "203.0.113.0"),
            Some((vec!["203.0.113.0"], Some("a"), false, Some("IPAllocated"))),
        ),
        (
            "another load balancer overwrote the address: written over",
            svc("s", pool_a.clone(), &["192.0.2.99"], ok),
            allocated("a", "203.0.113.0"),
            Some((vec!["203.0.113.0"], Some("a"), false, Some("IPAllocated"))),
        ),
        (
            "someone removed the annotation only: written again, no Event",
            svc("s", json!({}), &["203.0.113.0"], ok),
            allocated("a", "203.0.113.0"),
            Some((vec!["203.0.113.0"], Some("a"), false, None)),
        ),
        (
            "someone edited the condition: written again, no Event",
            svc(
                "s",
                pool_a.clone(),
                &["203.0.113.0"],
                Some(("False", "Edited", "by hand")),
            ),
            allocated("a", "203.0.113.0"),
            Some((vec!["203.0.113.0"], Some("a"), false, None)),
        ),
        (
            "addresses without a pool (no pools configured): annotation removed",
            svc("s", pool_a.clone(), &["203.0.113.0"], None),
            allocated("", "203.0.113.0"),
            Some((vec!["203.0.113.0"], None, true, None)),
        ),
        (
            "failure with nothing held: status addresses stay, Warning",
            svc("s", json!({}), &[], None),
            Outcome::Failed {
                reason: "NoPools",
                message: "no address pools are configured".into(),
                kept: None,
            },
            Some((vec![], None, false, Some("AllocationFailed"))),
        ),
        (
            "failure reported already: nothing",
            svc(
                "s",
                json!({}),
                &[],
                Some(("False", "NoPools", "no address pools are configured")),
            ),
            Outcome::Failed {
                reason: "NoPools",
                message: "no address pools are configured".into(),
                kept: None,
            },
            None,
        ),
        (
            "failure keeping held addresses someone cleared: the held ones come back",
            svc(
                "s",
                pool_a.clone(),
                &[],
                Some((
                    "False",
                    "PoolsFull",
                    "full; the Service keeps its current addresses",
                )),
            ),
            Outcome::Failed {
                reason: "PoolsFull",
                message: "full; the Service keeps its current addresses".into(),
                kept: Some(Assignment {
                    pool: "a".into(),
                    ips: vec!["203.0.113.0".parse().unwrap()],
                }),
            },
            Some((vec!["203.0.113.0"], Some("a"), false, None)),
        ),
    ];
    for (what, svc, outcome, want) in rows {
        let got = plan(&svc, &outcome).map(|p| {
            (
                p.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                p.pool,
                p.remove_pool_annotation,
                p.event.map(|e| e.reason),
            )
        });
        let want = want.map(|(ips, pool, remove, event)| {
            (
                ips.into_iter().map(str::to_owned).collect::<Vec<_>>(),
                pool.map(str::to_owned),
                remove,
                event,
            )
        });
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn the_transition_time_is_kept_unless_the_status_flips() {
    let ok = Some(("True", "IPAllocated", "old message"));
    let p = plan(
        &svc("s", json!({}), &["203.0.113.0"], ok),
        &allocated("a", "203.0.113.0"),
    )
    .unwrap();
    assert!(p.condition.keeps_transition_time);
    let p = plan(
        &svc("s", json!({}), &["203.0.113.0"], ok),
        &Outcome::Failed {
            reason: "PoolsFull",
            message: "full".into(),
            kept: None,
        },
    )
    .unwrap();
    assert!(!p.condition.keeps_transition_time);
    assert_eq!(p.condition.status, "False");
}
