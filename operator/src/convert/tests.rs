//! The conversion as specifications: one row per MetalLB configuration in
//! `operator/tests/convert/` (MetalLB's documented examples, written as YAML, and realistic
//! clusters), each with its exit code and every finding; the whole output of each is a golden
//! file in `operator/tests/convert/golden/` (`UPDATE_GOLDEN=1 cargo test -p ferrolb-operator
//! convert` rewrites them after a deliberate change). Then rules, one test each.

use std::path::{Path, PathBuf};

use ferrolb_api::manifest::parse_config;
use ferrolb_api::v1alpha1::{DynamicAsn, SecretKeyRef};

use super::cli::{CONVERTED, ESSENTIAL_LOSS, FAILED, convert_text};
use super::*;

use Severity::{Cosmetic, Essential, Note};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/convert")
}

fn input(name: &str) -> String {
    std::fs::read_to_string(dir().join(format!("{name}.yaml"))).unwrap()
}

/// `(exit code, stdout, stderr)` of the command on `text`.
fn run(text: &str, options: &Options) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = convert_text(text, options, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn converted(text: &str) -> Conversion {
    convert(text, &Options::default()).unwrap()
}

/// The findings as `(severity, source, field)`.
fn findings(c: &Conversion) -> Vec<(Severity, String, String)> {
    c.findings
        .iter()
        .map(|f| (f.severity, f.source.to_string(), f.field.clone()))
        .collect()
}

type Row = (
    &'static str,
    u8,
    &'static [(Severity, &'static str, &'static str)],
);

const CASES: &[Row] = &[
    ("l2-simple", CONVERTED, &[]),
    (
        "bgp-communities",
        CONVERTED,
        &[(
            Note,
            "Community metallb-system/communities",
            "spec.communities[1].name",
        )],
    ),
    (
        "bfd",
        CONVERTED,
        &[(Cosmetic, "BFDProfile metallb-system/full", "spec.echoMode")],
    ),
    (
        "v1beta1-password",
        ESSENTIAL_LOSS,
        &[
            (Cosmetic, "BGPPeer metallb-system/router.rack-1", "spec.vrf"),
            (
                Note,
                "BGPPeer metallb-system/router.rack-1",
                "metadata.name",
            ),
            (
                Essential,
                "BGPPeer metallb-system/router.rack-1",
                "spec.password",
            ),
            (
                Note,
                "BGPPeer metallb-system/router-rack-2",
                "spec.passwordSecret",
            ),
        ],
    ),
    (
        "dual-stack",
        CONVERTED,
        &[(
            Cosmetic,
            "BGPPeer metallb-system/tor-v4",
            "spec.dualStackAddressFamily",
        )],
    ),
    (
        "pool-options",
        CONVERTED,
        &[(
            Note,
            "IPAddressPool metallb-system/legacy",
            "spec.addresses[0]",
        )],
    ),
    (
        "kubectl-list",
        CONVERTED,
        &[
            (Note, "IPAddressPool default/forgotten", ""),
            (
                Note,
                "L2Advertisement metallb-system/l2-east",
                "spec.ipAddressPoolSelectors",
            ),
            (
                Note,
                "BGPAdvertisement metallb-system/bgp-west",
                "spec.ipAddressPoolSelectors",
            ),
        ],
    ),
    (
        "metallb-operator",
        CONVERTED,
        &[
            (Cosmetic, "MetalLB metallb-system/metallb", "spec.logLevel"),
            (
                Cosmetic,
                "MetalLB metallb-system/metallb",
                "spec.controllerConfig.runtimeClassName",
            ),
            (
                Cosmetic,
                "MetalLB metallb-system/metallb",
                "spec.controllerConfig.annotations",
            ),
            (Note, "MetalLB metallb-system/metallb", "spec.bgpBackend"),
            (Note, "MetalLB metallb-system/metallb", "spec.frrk8sConfig"),
        ],
    ),
    (
        "frr-knobs",
        ESSENTIAL_LOSS,
        &[
            (
                Essential,
                "BGPPeer metallb-system/unnumbered",
                "spec.interface",
            ),
            (
                Essential,
                "BGPPeer metallb-system/legacy-peer",
                "spec.localASN",
            ),
            (
                Cosmetic,
                "BGPPeer metallb-system/legacy-peer",
                "spec.disableMP",
            ),
            (
                Cosmetic,
                "BGPPeer metallb-system/legacy-peer",
                "spec.holdTime",
            ),
            (
                Cosmetic,
                "BGPAdvertisement metallb-system/to-unnumbered",
                "spec.peers",
            ),
        ],
    ),
    ("l2-preferred", CONVERTED, &[]),
    (
        "lossy",
        ESSENTIAL_LOSS,
        &[
            (Essential, "AddressPool metallb-system/old", ""),
            (Note, "Secret metallb-system/memberlist", ""),
            (Note, "ServiceL2Status metallb-system/l2-abcde", ""),
            (
                Essential,
                "IPAddressPool metallb-system/pool.public",
                "spec.allocationStrategy",
            ),
            (
                Essential,
                "IPAddressPool metallb-system/pool.public",
                "spec.addresses[1]",
            ),
            (
                Essential,
                "IPAddressPool metallb-system/pool.public",
                "metadata.name",
            ),
            (
                Cosmetic,
                "BGPAdvertisement metallb-system/public",
                "spec.peers[1]",
            ),
            (
                Cosmetic,
                "BGPAdvertisement metallb-system/public",
                "spec.ipAddressPools[1]",
            ),
            (
                Essential,
                "BGPAdvertisement metallb-system/public",
                "spec.communities[0]",
            ),
        ],
    ),
    ("invalid", FAILED, &[]),
];

#[test]
fn every_example_converts_with_its_exit_code_findings_and_golden_output() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".yaml").map(str::to_owned)
        })
        .collect();
    names.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(n, ..)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(
        names, listed,
        "every input file has a row, every row a file"
    );

    for (name, code, expected) in CASES {
        let text = input(name);
        let (got, out, err) = run(&text, &Options::default());
        assert_eq!(got, *code, "{name}: exit code; stderr:\n{err}");
        if *code == FAILED {
            assert!(out.is_empty(), "{name}: nothing is printed: {out}");
            continue;
        }
        let conversion = converted(&text);
        let want: Vec<(Severity, String, String)> = expected
            .iter()
            .map(|(s, source, field)| (*s, (*source).to_owned(), (*field).to_owned()))
            .collect();
        assert_eq!(findings(&conversion), want, "{name}: findings");
        // Every finding is on standard error, and in the output's comments.
        for finding in &conversion.findings {
            assert!(err.contains(&finding.to_string()), "{name}: {finding}");
            assert!(out.contains(&finding.message), "{name}: {finding}");
        }
        // The output reads back as the very config, which is valid.
        let back = parse_config(&out).unwrap();
        assert_eq!(back.spec, conversion.config.spec, "{name}");
        assert_eq!(validate(&back.spec), Ok(()), "{name}");

        let golden = dir().join(format!("golden/{name}.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &out).unwrap();
        }
        let committed = std::fs::read_to_string(&golden).unwrap_or_default();
        assert!(
            committed == out,
            "{} differs from the conversion; if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff",
            golden.display()
        );
    }
}

#[test]
fn a_layer2_pool_converts_field_for_field() {
    let spec = converted(&input("l2-simple")).config.spec;
    assert_eq!(spec.address_pools.len(), 1);
    let pool = &spec.address_pools[0];
    assert_eq!(pool.name, "first-pool");
    assert_eq!(pool.addresses, ["192.168.1.240-192.168.1.250"]);
    assert!(pool.auto_assign && !pool.avoid_buggy_ips && pool.allocate_to.is_none());
    assert_eq!(spec.l2_advertisements.len(), 1);
    let ad = &spec.l2_advertisements[0];
    assert_eq!(ad.name, "example");
    assert!(
        ad.address_pools.is_empty(),
        "neither list nor selector: every pool"
    );
}

#[test]
fn the_speakers_ignore_exclude_lb_flag_is_asked_for_and_carried_over() {
    let text = input("l2-simple");
    let plain = converted(&text).config.spec;
    assert!(!plain.speaker.ignore_exclude_lb_label);
    let options = Options {
        ignore_exclude_lb: true,
        ..Options::default()
    };
    let spec = convert(&text, &options).unwrap().config.spec;
    assert!(spec.speaker.ignore_exclude_lb_label);
    assert_eq!(
        ferrolb_api::v1alpha1::SpeakerSpec {
            ignore_exclude_lb_label: false,
            ..spec.speaker
        },
        plain.speaker,
        "nothing else changes"
    );
}

#[test]
fn community_aliases_that_are_no_ferrolb_name_are_renamed_and_followed() {
    let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.0/28]}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {myASN: 1, peerASN: 2, peerAddress: 198.51.100.1}\n---\napiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {name: c}\nspec: {communities: [{name: VPN_Only, value: \"1:1\"}, {name: no-export, value: \"1:2\"}]}\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {communities: [VPN_Only, no-export, \"1:1\"]}\n";
    let c = converted(text);
    let spec = &c.config.spec;
    let named: Vec<(&str, &str)> = spec
        .communities
        .iter()
        .map(|n| (n.name.as_str(), n.value.as_str()))
        .collect();
    assert_eq!(named, [("vpn-only", "1:1"), ("no-export-2", "1:2")]);
    assert_eq!(
        spec.bgp_advertisements[0].communities,
        ["vpn-only", "no-export-2"]
    );
    assert_eq!(
        findings(&c),
        [
            (
                Note,
                "Community c".to_owned(),
                "spec.communities[0].name".to_owned()
            ),
            (
                Note,
                "Community c".to_owned(),
                "spec.communities[1].name".to_owned()
            ),
            (
                Note,
                "BGPAdvertisement a".to_owned(),
                "spec.communities[2]".to_owned()
            ),
        ]
    );
}

#[test]
fn community_aliases_stay_names_and_well_known_values_get_their_name() {
    let spec = converted(&input("bgp-communities")).config.spec;
    assert_eq!(
        spec.communities,
        [ferrolb_api::v1alpha1::NamedCommunity {
            name: "vpn-only".into(),
            value: "1234:1".into(),
        }]
    );
    let ads: Vec<(&str, u8, Option<u32>, Vec<&str>)> = spec
        .bgp_advertisements
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.aggregation_length,
                a.local_pref,
                a.communities.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        ads,
        [
            ("local", 32, Some(100), vec!["vpn-only"]),
            (
                "external",
                24,
                None,
                vec!["no-advertise", "64500:200", "large:64500:1:2"]
            ),
        ]
    );
    assert_eq!(spec.bgp_peers[0].peer_asn, Some(64501));
    assert_eq!(spec.bgp_peers[0].peer_port, 179);
}

#[test]
fn bfd_profiles_keep_every_timer_but_echo_mode_and_peers_keep_their_profile() {
    let spec = converted(&input("bfd")).config.spec;
    let p = &spec.bfd_profiles;
    assert_eq!(
        (
            p[0].receive_interval,
            p[0].transmit_interval,
            p[0].detect_multiplier
        ),
        (380, 270, 3)
    );
    assert_eq!(
        (
            p[1].detect_multiplier,
            p[1].echo_mode,
            p[1].echo_interval,
            p[1].passive_mode,
            p[1].minimum_ttl
        ),
        (37, false, 62, true, 10)
    );
    let profiles: Vec<Option<&str>> = spec
        .bgp_peers
        .iter()
        .map(|p| p.bfd_profile.as_deref())
        .collect();
    assert_eq!(profiles, [Some("testbfdprofile"), Some("full")]);
}

#[test]
fn an_inline_password_is_never_printed_and_becomes_a_secret_to_create() {
    let secret = "s3cr3t-md5-Pa55";
    let text = input("v1beta1-password");
    let (code, out, err) = run(&text, &Options::default());
    assert_eq!(code, ESSENTIAL_LOSS);
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "{out}\n{err}"
    );
    assert!(err.contains("an inline password"), "{err}");
    let spec = converted(&text).config.spec;
    assert_eq!(
        spec.bgp_peers[0].password_secret_ref,
        Some(SecretKeyRef {
            name: "router-rack-1-bgp-password".to_owned(),
            key: "password".to_owned()
        })
    );
    assert_eq!(
        spec.bgp_peers[1].password_secret_ref,
        Some(SecretKeyRef {
            name: "rack-2-md5".to_owned(),
            key: "password".to_owned()
        })
    );
    // v1beta1 timers and selectors carry over; the advertisement follows the rename.
    assert_eq!(spec.bgp_peers[0].hold_time.as_deref(), Some("1m30s"));
    assert_eq!(spec.bgp_peers[0].keepalive_time.as_deref(), Some("30s"));
    assert_eq!(spec.bgp_peers[0].vrf, None, "v1beta1 has no vrf");
    assert_eq!(
        spec.bgp_advertisements[0].peers,
        ["router-rack-1", "router-rack-2"]
    );

    // Inline in v1beta2, and next to a Secret: still never shown.
    let both = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: p, namespace: metallb-system}\nspec: {myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, password: hunter2, passwordSecret: {name: s}}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: q, namespace: metallb-system}\nspec: {myASN: 1, peerASN: 2, peerAddress: 192.0.2.2, password: hunter3}\n";
    let (code, out, err) = run(both, &Options::default());
    assert_eq!(code, ESSENTIAL_LOSS, "{err}");
    for secret in ["hunter2", "hunter3"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{out}\n{err}"
        );
    }
    let c = converted(both);
    assert_eq!(
        findings(&c)[..3],
        [
            (
                Cosmetic,
                "BGPPeer metallb-system/p".to_owned(),
                "spec.password".to_owned()
            ),
            (
                Note,
                "BGPPeer metallb-system/p".to_owned(),
                "spec.passwordSecret".to_owned()
            ),
            (
                Essential,
                "BGPPeer metallb-system/q".to_owned(),
                "spec.password".to_owned()
            ),
        ]
    );
}

#[test]
fn ipv6_and_dual_stack_pools_keep_both_families() {
    let spec = converted(&input("dual-stack")).config.spec;
    assert_eq!(
        spec.address_pools[0].addresses,
        ["2002:2:2::1-2002:2:2::100"]
    );
    assert_eq!(
        spec.address_pools[1].addresses,
        ["10.0.0.100-10.0.0.200", "2002:2:3::/64"]
    );
    assert_eq!(spec.bgp_advertisements[0].aggregation_length_v6, 64);
    assert_eq!(spec.l2_advertisements[0].address_pools, ["ipv6-pool"]);
}

#[test]
fn pool_options_and_service_allocation_carry_over() {
    let spec = converted(&input("pool-options")).config.spec;
    let by_name = |n: &str| spec.address_pools.iter().find(|p| p.name == n).unwrap();
    assert!(by_name("cheap").avoid_buggy_ips);
    assert!(!by_name("expensive").auto_assign);
    let to = by_name("ippool-ns-service-alloc-sample")
        .allocate_to
        .clone()
        .unwrap();
    assert_eq!(to.priority, Some(50));
    assert_eq!(to.namespaces, ["namespace-a", "namespace-b"]);
    assert_eq!(to.namespace_selectors.len(), 1);
    assert_eq!(to.service_selectors.len(), 1);
    // MetalLB's priority 0 is "unset": after every pool with a priority, as an absent one.
    let tenant = by_name("tenant-c").allocate_to.clone().unwrap();
    assert_eq!(
        (tenant.priority, tenant.namespaces),
        (None, vec!["tenant-c".to_owned()])
    );
    assert_eq!(by_name("legacy").addresses, ["10.20.30.0/29"]);
}

#[test]
fn priorities_ferrolb_cannot_hold_become_ranks_in_the_same_order() {
    let pool = |name: &str, net: &str, priority: i64| {
        format!(
            "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec: {{addresses: [{net}], serviceAllocation: {{priority: {priority}}}}}\n"
        )
    };
    let text = [
        pool("a", "192.0.2.0/28", 10),
        pool("b", "192.0.2.16/28", -5),
        pool("c", "192.0.2.32/28", 0),
        pool("d", "192.0.2.48/28", 10),
    ]
    .concat();
    let c = converted(&text);
    let priorities: Vec<Option<u32>> = c
        .config
        .spec
        .address_pools
        .iter()
        .map(|p| p.allocate_to.as_ref().unwrap().priority)
        .collect();
    assert_eq!(priorities, [Some(2), Some(1), None, Some(2)]);
    assert_eq!(
        findings(&c)
            .iter()
            .filter(|(_, _, f)| f == "spec.serviceAllocation.priority")
            .count(),
        3
    );
}

#[test]
fn kubectl_list_output_converts_the_metallb_namespace_only() {
    let c = converted(&input("kubectl-list"));
    assert_eq!(c.namespace, "metallb-system");
    let spec = &c.config.spec;
    let pools: Vec<&str> = spec.address_pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pools, ["production", "staging"]);
    assert_eq!(spec.l2_advertisements[0].address_pools, ["production"]);
    assert_eq!(spec.l2_advertisements[0].interfaces, ["eth0"]);
    assert_eq!(spec.bgp_advertisements[0].address_pools, ["staging"]);
    assert_eq!(spec.bgp_advertisements[0].peers, ["tor-west"]);
    let peer = &spec.bgp_peers[0];
    assert_eq!(
        (peer.hold_time.as_deref(), peer.keepalive_time.as_deref()),
        (Some("1m30s"), Some("30s"))
    );
}

#[test]
fn the_metallb_resource_sets_level_class_and_placement() {
    let spec = converted(&input("metallb-operator")).config.spec;
    assert_eq!(spec.log_level, "debug");
    assert_eq!(spec.load_balancer_class, "example.com/metallb");
    let speaker = &spec.speaker.placement;
    assert_eq!(speaker.node_selector["node-role.kubernetes.io/worker"], "");
    assert_eq!(speaker.tolerations[0].key.as_deref(), Some("Example"));
    assert_eq!(speaker.priority_class_name, "system-node-critical");
    assert!(speaker.resources.is_some());
    let controller = &spec.controller.placement;
    assert_eq!(
        controller.node_selector["node-role.kubernetes.io/infra"],
        ""
    );
    assert_eq!(controller.priority_class_name, "high-priority");
    assert!(controller.affinity.is_some() && controller.resources.is_some());
}

#[test]
fn log_levels_map_to_the_nearest() {
    let cr = |level: &str| {
        format!(
            "apiVersion: metallb.io/v1beta1\nkind: MetalLB\nmetadata: {{name: metallb, namespace: metallb-system}}\nspec: {{logLevel: {level}}}\n"
        )
    };
    for (metallb, ours, lost) in [
        ("debug", "debug", false),
        ("info", "info", false),
        ("warn", "warn", false),
        ("error", "error", false),
        ("all", "debug", true),
        ("none", "error", true),
    ] {
        let c = converted(&cr(metallb));
        assert_eq!(c.config.spec.log_level, ours, "{metallb}");
        let cosmetic = c.findings.iter().any(|f| f.field == "spec.logLevel");
        assert_eq!(cosmetic, lost, "{metallb}");
        assert_eq!(c.essential(), 0);
    }
}

#[test]
fn frr_knobs_carry_over_where_ferrolb_has_them() {
    let spec = converted(&input("frr-knobs")).config.spec;
    let names: Vec<&str> = spec.bgp_peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["vrf-peer", "legacy-peer"],
        "the unnumbered peer is dropped"
    );
    let p = &spec.bgp_peers[0];
    assert_eq!(p.dynamic_asn, Some(DynamicAsn::External));
    assert_eq!(p.peer_asn, None);
    assert_eq!(p.vrf.as_deref(), Some("red"));
    assert_eq!(p.connect_time.as_deref(), Some("10s"));
    assert_eq!(
        (p.hold_time.as_deref(), p.keepalive_time.as_deref()),
        (Some("9s"), Some("3s"))
    );
    assert!(p.graceful_restart && p.ebgp_multi_hop);
    assert_eq!(p.router_id.as_deref(), Some("10.10.10.10"));
    assert_eq!(p.source_address.as_deref(), Some("172.30.0.10"));
    assert_eq!(spec.bgp_peers[1].hold_time.as_deref(), Some("10s"));
    let ads: Vec<&str> = spec
        .bgp_advertisements
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(
        ads,
        ["everyone"],
        "an advertisement only to dropped peers is dropped, not widened to every peer"
    );
}

#[test]
fn an_advertisement_whose_pools_are_all_gone_is_dropped_not_widened() {
    let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lo}\nspec: {addresses: [127.0.0.0/30]}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: ok, labels: {tier: web}}\nspec: {addresses: [192.0.2.0/28]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lo}\nspec: {ipAddressPools: [lo]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: by-label}\nspec: {ipAddressPoolSelectors: [{matchLabels: {tier: db}}]}\n";
    let c = converted(text);
    assert!(c.config.spec.l2_advertisements.is_empty());
    assert_eq!(
        findings(&c),
        [
            (
                Essential,
                "IPAddressPool lo".to_owned(),
                "spec.addresses[0]".to_owned()
            ),
            (
                Essential,
                "IPAddressPool lo".to_owned(),
                "spec.addresses".to_owned()
            ),
            (Cosmetic, "L2Advertisement lo".to_owned(), String::new()),
            (
                Note,
                "L2Advertisement by-label".to_owned(),
                "spec.ipAddressPoolSelectors".to_owned()
            ),
            (
                Cosmetic,
                "L2Advertisement by-label".to_owned(),
                String::new()
            ),
            (Note, "IPAddressPool ok".to_owned(), String::new()),
        ],
        "the last: FerroLB's validator notes that nothing announces pool ok"
    );
}

#[test]
fn service_selectors_carry_over_and_repeated_communities_are_written_once() {
    let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.0/28]}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {myASN: 1, peerASN: 2, peerAddress: 198.51.100.1}\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {serviceSelectors: [{matchLabels: {app: web}}], communities: [\"1:1\", \"large:1:2:3\", \"1:1\", \"99999:1\"]}\n";
    let c = converted(text);
    let ad = &c.config.spec.bgp_advertisements[0];
    assert_eq!(ad.communities, ["1:1", "large:1:2:3"]);
    assert_eq!(
        serde_json::to_string(&ad.service_selectors).unwrap(),
        r#"[{"matchLabels":{"app":"web"}}]"#
    );
    assert_eq!(
        findings(&c),
        [
            (
                Note,
                "BGPAdvertisement a".to_owned(),
                "spec.communities[2]".to_owned()
            ),
            (
                Essential,
                "BGPAdvertisement a".to_owned(),
                "spec.communities[3]".to_owned()
            ),
        ]
    );
}

#[test]
fn v1beta1_and_v1beta2_peers_differ_where_metallb_s_do() {
    let text = "apiVersion: metallb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: old}\nspec: {myASN: 1, peerASN: 2, peerAddress: 198.51.100.1, peerPort: 0, dynamicASN: internal, ebgpMultiHop: true}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: new}\nspec: {myASN: 1, peerASN: 0, dynamicASN: internal, peerAddress: 198.51.100.2, peerPort: 1179, keepaliveTime: 1.5s, routerID: '2001:db8::1'}\n";
    let c = converted(text);
    let [old, new] = c.config.spec.bgp_peers.as_slice() else {
        panic!("two peers")
    };
    assert_eq!(
        (old.peer_port, old.peer_asn, old.dynamic_asn),
        (179, Some(2), None)
    );
    assert!(old.ebgp_multi_hop);
    assert_eq!(
        (new.peer_port, new.peer_asn, new.dynamic_asn),
        (1179, None, Some(DynamicAsn::Internal))
    );
    assert_eq!(new.keepalive_time.as_deref(), Some("1s"));
    assert_eq!(new.router_id, None);
    let fields: Vec<(Severity, String)> = c
        .findings
        .iter()
        .filter(|f| f.field.starts_with("spec."))
        .map(|f| (f.severity, format!("{}: {}", f.source.name, f.field)))
        .collect();
    assert_eq!(
        fields,
        [
            (Cosmetic, "old: spec.dynamicASN".to_owned()),
            (Cosmetic, "new: spec.routerID".to_owned()),
            (Cosmetic, "new: spec.keepaliveTime".to_owned()),
        ]
    );
}

#[test]
fn the_metallb_namespace_is_chosen_or_asked_for() {
    let pool = |ns: &str, net: &str| {
        format!(
            "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p, namespace: {ns}}}\nspec: {{addresses: [{net}]}}\n"
        )
    };
    let two = [pool("lb-a", "192.0.2.0/28"), pool("lb-b", "192.0.2.16/28")].concat();
    assert_eq!(
        convert(&two, &Options::default()).unwrap_err(),
        ConvertError::SeveralNamespaces(vec!["lb-a".to_owned(), "lb-b".to_owned()])
    );
    let chosen = convert(
        &two,
        &Options {
            metallb_namespace: Some("lb-b".to_owned()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(
        chosen.config.spec.address_pools[0].addresses,
        ["192.0.2.16/28"]
    );
    assert_eq!(
        findings(&chosen)[0],
        (Note, "IPAddressPool lb-a/p".to_owned(), String::new())
    );
    let usual = [
        pool("lb-a", "192.0.2.0/28"),
        pool("metallb-system", "192.0.2.16/28"),
    ]
    .concat();
    assert_eq!(converted(&usual).namespace, "metallb-system");
    // The MetalLB resource's namespace is MetalLB's.
    let with_cr = format!(
        "{two}---\napiVersion: metallb.io/v1beta1\nkind: MetalLB\nmetadata: {{name: metallb, namespace: lb-a}}\n"
    );
    assert_eq!(converted(&with_cr).namespace, "lb-a");
    assert_eq!(
        convert(
            &pool("lb-a", "192.0.2.0/28"),
            &Options {
                metallb_namespace: Some("metallb-system".to_owned()),
                ..Options::default()
            }
        )
        .unwrap_err(),
        ConvertError::NoMetalLbObjects {
            namespace: "metallb-system".to_owned()
        }
    );
}

#[test]
fn input_without_a_metallb_configuration_fails_with_exit_1() {
    for (text, message) in [
        ("{", "not valid YAML"),
        ("", "no MetalLB configuration"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "no MetalLB configuration",
        ),
        ("- 1\n", "document 1 is not a Kubernetes object"),
        (
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: p}\nspec: {myASN: 0, peerASN: 1, peerAddress: 192.0.2.1}\n",
            "spec.bgpPeers[0].myASN: 0: must be between 1 and 4294967295 (from BGPPeer p)",
        ),
    ] {
        let (code, out, err) = run(text, &Options::default());
        assert_eq!(code, FAILED, "{text:?}: {err}");
        assert!(out.is_empty(), "{text:?}: {out}");
        assert!(err.contains(message), "{text:?}: {err}");
    }
}

#[test]
fn an_object_that_cannot_be_read_is_an_essential_loss() {
    let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: good}\nspec: {addresses: [192.0.2.0/28]}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: bad}\nspec: {addresses: [192.0.2.16/28], autoAssign: sometimes}\n";
    let c = converted(text);
    assert_eq!(c.config.spec.address_pools.len(), 1);
    let f = &c.findings[0];
    assert_eq!((f.severity, f.source.name.as_str()), (Essential, "bad"));
    assert!(
        f.message.starts_with("cannot be read (spec.autoAssign: "),
        "{}",
        f.message
    );
}

#[test]
fn a_config_that_does_not_validate_names_the_metallb_object() {
    let err = convert(&input("invalid"), &Options::default()).unwrap_err();
    let ConvertError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0.path, "spec.bgpPeers[1].peerAddress");
    assert_eq!(
        problems[0].1.as_ref().map(ToString::to_string).as_deref(),
        Some("BGPPeer metallb-system/blue")
    );
    assert!(
        err.to_string()
            .ends_with("(from BGPPeer metallb-system/blue)"),
        "{err}"
    );
}
