//! The validation rules, one case each (see [`super::cases`]): a valid variant and an invalid one,
//! with the exact path, value and reason expected.

use super::cases::{ExpectedProblem, base, cases};
use super::*;

#[test]
fn base_config_is_valid() {
    assert_eq!(validate(&base()), Ok(()));
}

#[test]
fn every_rule() {
    let mut failures = Vec::new();
    for case in cases() {
        let got: Vec<ExpectedProblem> = match validate(&case.spec) {
            Ok(()) => Vec::new(),
            Err(Problems(problems)) => problems.into_iter().map(ExpectedProblem::from).collect(),
        };
        if got != case.expected {
            failures.push(format!(
                "{}:\n  want {:#?}\n  got  {got:#?}",
                case.rule, case.expected
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rules_are_named_once() {
    let mut rules: Vec<&str> = cases().iter().map(|c| c.rule).collect();
    rules.sort_unstable();
    let before = rules.len();
    rules.dedup();
    assert_eq!(rules.len(), before, "two cases share a rule name");
}

#[test]
fn reports_every_problem_at_once_in_field_order() {
    let mut spec = base();
    spec.log_level = "loud".into();
    spec.address_pools[0].addresses[0] = "nope".into();
    spec.bgp_peers[0].my_asn = 0;
    spec.bfd_profiles[0].detect_multiplier = 1;
    let Err(Problems(problems)) = validate(&spec) else {
        panic!("accepted an invalid config");
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.logLevel",
            "spec.addressPools[0].addresses[0]",
            "spec.bfdProfiles[0].detectMultiplier",
            "spec.bgpPeers[0].myASN",
        ]
    );
    assert_eq!(
        problems[0].to_string(),
        r#"spec.logLevel: "loud": must be one of error, warn, info, debug, trace"#
    );
}

#[test]
fn an_empty_config_is_valid() {
    assert_eq!(validate(&LoadBalancerConfigSpec::default()), Ok(()));
}

mod properties {
    use proptest::prelude::*;

    use super::super::validate;
    use crate::v1alpha1::{AddressPool, BgpAdvertisement, BgpPeer, LoadBalancerConfigSpec};

    fn pool() -> impl Strategy<Value = AddressPool> {
        (
            "[a-z][a-z0-9-]{0,8}[a-z0-9]",
            prop::collection::vec((0u8..=255, 24u8..=32, any::<bool>()), 1..4),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(name, entries, auto_assign, avoid_buggy_ips)| AddressPool {
                    name,
                    addresses: entries
                        .into_iter()
                        .map(|(octet, prefix, v6)| {
                            if v6 {
                                format!("2001:db8:{octet:x}::/{}", prefix + 96)
                            } else {
                                let block = 1u32 << (32 - u32::from(prefix));
                                let start = u32::from(octet) / block * block;
                                format!("203.0.113.{start}/{prefix}")
                            }
                        })
                        .collect(),
                    auto_assign,
                    avoid_buggy_ips,
                    allocate_to: None,
                },
            )
    }

    fn peer() -> impl Strategy<Value = BgpPeer> {
        (
            "[a-z]{1,8}",
            1u32..,
            1u32..,
            0u8..=255,
            prop::option::of(3u32..=65_535),
            any::<bool>(),
        )
            .prop_map(|(name, my_asn, peer_asn, host, hold, gr)| BgpPeer {
                name,
                my_asn,
                peer_asn: Some(peer_asn),
                dynamic_asn: None,
                peer_address: format!("198.51.100.{host}"),
                peer_port: 179,
                source_address: None,
                router_id: None,
                hold_time: hold.map(|h| format!("{h}s")),
                keepalive_time: None,
                connect_time: None,
                vrf: None,
                password_secret_ref: None,
                ebgp_multi_hop: false,
                bfd_profile: None,
                graceful_restart: gr,
                node_selectors: Vec::new(),
            })
    }

    fn advertisement() -> impl Strategy<Value = BgpAdvertisement> {
        (
            "[a-z]{1,8}",
            prop::option::of(any::<u32>()),
            prop::collection::vec((any::<u16>(), any::<u16>()), 0..3),
        )
            .prop_map(|(name, local_pref, communities)| BgpAdvertisement {
                name,
                address_pools: Vec::new(),
                aggregation_length: 32,
                aggregation_length_v6: 128,
                local_pref,
                communities: communities
                    .into_iter()
                    .map(|(a, b)| format!("{a}:{b}"))
                    .collect(),
                peers: Vec::new(),
                node_selectors: Vec::new(),
                service_selectors: Vec::new(),
            })
    }

    fn spec() -> impl Strategy<Value = LoadBalancerConfigSpec> {
        (
            prop::collection::vec(pool(), 0..5),
            prop::collection::vec(peer(), 0..4),
            prop::collection::vec(advertisement(), 0..3),
            prop::sample::select(vec!["info", "debug", "error"]),
            1i32..5,
        )
            .prop_map(
                |(address_pools, bgp_peers, bgp_advertisements, level, replicas)| {
                    let mut spec = LoadBalancerConfigSpec {
                        address_pools,
                        bgp_peers,
                        bgp_advertisements,
                        log_level: level.to_owned(),
                        ..LoadBalancerConfigSpec::default()
                    };
                    spec.controller.replicas = replicas;
                    // Keep the generated world mostly valid, so the round trip is tested often:
                    // disjoint pool entries, one LOCAL_PREF for all advertisements.
                    for (k, entry) in spec
                        .address_pools
                        .iter_mut()
                        .flat_map(|p| p.addresses.iter_mut())
                        .enumerate()
                    {
                        *entry = entry
                            .replacen("203.0.113.", &format!("10.{k}.0."), 1)
                            .replacen("2001:db8:", &format!("2001:db8:{k:x}:"), 1);
                    }
                    let local_pref = spec.bgp_advertisements.first().and_then(|a| a.local_pref);
                    for ad in &mut spec.bgp_advertisements {
                        ad.local_pref = local_pref;
                    }
                    spec
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the validator accepts survives YAML serialization unchanged, so what an admin
        /// applies is what every component reads.
        #[test]
        fn accepted_configs_round_trip_through_yaml(spec in spec()) {
            prop_assume!(validate(&spec).is_ok(), "{:?}", validate(&spec));
            let yaml = serde_saphyr::to_string(&spec).unwrap();
            let back: LoadBalancerConfigSpec = serde_saphyr::from_str(&yaml).unwrap();
            prop_assert_eq!(back, spec);
        }

        /// Validation never panics and is deterministic.
        #[test]
        fn validation_is_deterministic(spec in spec()) {
            prop_assert_eq!(validate(&spec), validate(&spec));
        }
    }
}
