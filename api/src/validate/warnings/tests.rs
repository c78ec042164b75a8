//! One row per warning, each with the exact message, on variants of the validator's base config.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;
use crate::validate::cases::base;
use crate::validate::validate;

type Mutation = fn(&mut LoadBalancerConfigSpec);
/// The labels of each node, or None: nodes unknown.
type Nodes = Option<&'static [&'static [(&'static str, &'static str)]]>;
type Row = (
    &'static str,
    Mutation,
    Nodes,
    Vec<(&'static str, &'static str)>,
);

fn rack(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([("rack".to_owned(), name.to_owned())].into()),
        match_expressions: None,
    }
}

const RACKS_A_AND_B: Nodes = Some(&[&[("rack", "a")], &[("rack", "b")]]);

/// (rule, change to the base config, the cluster's nodes, expected (path, message)).
fn rows() -> Vec<Row> {
    let none = Vec::new;
    vec![
        ("base config has no warnings offline", |_| {}, None, none()),
        (
            "base config has no warnings on racks a and b",
            |_| {},
            RACKS_A_AND_B,
            none(),
        ),
        // --- pools
        (
            "pool that no advertisement selects",
            |s| {
                s.bgp_advertisements[0].address_pools =
                    vec!["public-v4".into(), "dual".into(), "block".into()]
            },
            None,
            vec![(
                "spec.addressPools[1]",
                "no L2 or BGP advertisement selects pool \"public-v6\": Services would get its addresses, but no node would announce them",
            )],
        ),
        (
            "an advertisement listing no pools selects every pool",
            |s| {
                s.bgp_advertisements.clear();
                s.bgp_peers.clear();
                s.l2_advertisements[0].address_pools.clear();
            },
            None,
            none(),
        ),
        (
            "no advertisements at all",
            |s| {
                s.address_pools.truncate(1);
                s.l2_advertisements.clear();
                s.bgp_advertisements.clear();
                s.bgp_peers.clear();
            },
            None,
            vec![(
                "spec.addressPools[0]",
                "no L2 or BGP advertisement selects pool \"public-v4\": Services would get its addresses, but no node would announce them",
            )],
        ),
        (
            "priority of a pool that is never chosen automatically",
            |s| s.address_pools[2].auto_assign = false,
            None,
            vec![(
                "spec.addressPools[2].allocateTo.priority",
                "1 has no effect while autoAssign is false: priority only orders the pools chosen for Services that name none",
            )],
        ),
        (
            "pool not chosen automatically, without priority",
            |s| s.address_pools[0].auto_assign = false,
            None,
            none(),
        ),
        // --- peers and BGP advertisements
        (
            "peer that no advertisement announces to",
            |s| s.bgp_advertisements[0].peers = vec!["tor-a".into()],
            None,
            vec![(
                "spec.bgpPeers[1]",
                "no BGP advertisement announces to peer \"tor-b\" (none lists it, and none has an empty peers list): its sessions would carry no routes",
            )],
        ),
        (
            "peer whose advertisements announce from other nodes",
            |s| {
                s.bgp_advertisements[0].node_selectors = vec![rack("b")];
                s.bgp_advertisements[1].node_selectors = vec![rack("b")];
            },
            None,
            vec![(
                "spec.bgpPeers[0]",
                "the BGP advertisements that announce to peer \"tor-a\" select none of the nodes its nodeSelectors select: its sessions would carry no routes",
            )],
        ),
        (
            "BGP advertisements without peers",
            |s| {
                s.bgp_peers.clear();
                s.bgp_advertisements[1].peers.clear();
            },
            None,
            vec![
                (
                    "spec.bgpAdvertisements[0]",
                    "spec.bgpPeers is empty: this advertisement announces to no one",
                ),
                (
                    "spec.bgpAdvertisements[1]",
                    "spec.bgpPeers is empty: this advertisement announces to no one",
                ),
            ],
        ),
        // --- selectors against the cluster's nodes
        (
            "speaker nodeSelector that matches no node",
            |s| {
                s.speaker
                    .placement
                    .node_selector
                    .insert("ferrolb.io/speaker".into(), "true".into());
            },
            RACKS_A_AND_B,
            vec![(
                "spec.speaker.nodeSelector",
                "matches none of the cluster's 2 nodes: no speaker would run, so no address would be announced",
            )],
        ),
        (
            "L2 advertisement that selects no node",
            |s| s.l2_advertisements[0].node_selectors = vec![rack("c")],
            RACKS_A_AND_B,
            vec![(
                "spec.l2Advertisements[0].nodeSelectors",
                "select none of the 2 nodes that run a speaker: no node would announce this advertisement's pools",
            )],
        ),
        (
            "L2 advertisement that selects no node, nodes unknown",
            |s| s.l2_advertisements[0].node_selectors = vec![rack("c")],
            None,
            none(),
        ),
        (
            "BGP advertisement that selects only nodes without a speaker",
            |s| {
                s.speaker
                    .placement
                    .node_selector
                    .insert("ferrolb.io/speaker".into(), "true".into());
                s.bgp_advertisements[0].node_selectors = vec![rack("b")];
            },
            Some(&[
                &[("rack", "a"), ("ferrolb.io/speaker", "true")],
                &[("rack", "b")],
            ]),
            vec![(
                "spec.bgpAdvertisements[0].nodeSelectors",
                "select none of the 1 node that runs a speaker: no node would announce this advertisement's pools",
            )],
        ),
        (
            "peer that selects no node",
            |_| {},
            Some(&[&[("rack", "b")]]),
            vec![(
                "spec.bgpPeers[0].nodeSelectors",
                "select none of the 1 node that runs a speaker: no node would open a session with peer \"tor-a\"",
            )],
        ),
        (
            "selectors on a cluster without nodes",
            |s| s.l2_advertisements[0].node_selectors = vec![rack("a")],
            Some(&[]),
            none(),
        ),
    ]
}

fn labels(node: &[(&str, &str)]) -> BTreeMap<String, String> {
    node.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn every_warning() {
    let mut failures = Vec::new();
    for (rule, mutate, nodes, expected) in rows() {
        let mut spec = base();
        mutate(&mut spec);
        assert_eq!(
            validate(&spec),
            Ok(()),
            "{rule}: warnings are for valid configs"
        );
        let nodes: Option<Vec<BTreeMap<String, String>>> =
            nodes.map(|nodes| nodes.iter().map(|n| labels(n)).collect());
        let got: Vec<(String, String)> = warnings(&spec, nodes.as_deref())
            .into_iter()
            .map(|w| (w.path, w.message))
            .collect();
        let want: Vec<(String, String)> = expected
            .into_iter()
            .map(|(p, m)| (p.to_owned(), m.to_owned()))
            .collect();
        if got != want {
            failures.push(format!("{rule}:\n  want {want:#?}\n  got  {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn warnings_are_short_lines() {
    for (rule, _, _, expected) in rows() {
        for (path, message) in expected {
            let line = Warning {
                path: path.to_owned(),
                message: message.to_owned(),
            }
            .to_string();
            assert!(
                line.len() <= 200,
                "{rule}: {} characters: {line}",
                line.len()
            );
            assert!(!line.contains('\n'), "{rule}: {line}");
        }
    }
}

#[test]
fn display_is_path_then_message() {
    let w = Warning {
        path: "spec.addressPools[0]".to_owned(),
        message: "m".to_owned(),
    };
    assert_eq!(w.to_string(), "spec.addressPools[0]: m");
}

#[test]
fn an_empty_config_has_no_warnings() {
    assert_eq!(warnings(&LoadBalancerConfigSpec::default(), None), []);
    assert_eq!(warnings(&LoadBalancerConfigSpec::default(), Some(&[])), []);
}
