//! The validator's rules as data: one case per rule, a variant of one valid base config with the
//! exact problems `validate` must report for it (none for the valid variants).
//!
//! `validate`'s own table test runs every case; the testbed sends every case's spec to a real API
//! server and compares the admission webhook's denial with the same expectations. Compiled for
//! tests and with the `cases` feature only.

// Test data: the base config is a constant that parses, and a case that cannot be built should
// stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelectorTerm, PodAntiAffinity, PreferredSchedulingTerm, Toleration,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::names::{DNS1123_LABEL, DNS1123_SUBDOMAIN, LABEL_VALUE, QUALIFIED_NAME};
use crate::community::CommunityError;
use crate::v1alpha1::{
    AllocateTo, BfdProfile, BgpAdvertisement, BgpPeer, DynamicAsn, LoadBalancerConfigSpec,
    PreferredNodeSelector, SecretKeyRef,
};

/// One rule of the validator, shown on a variant of [`base`].
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// The rule, in words (unique among the cases).
    pub rule: &'static str,
    /// The base config with this case's change applied.
    pub spec: LoadBalancerConfigSpec,
    /// Every problem `validate` reports for `spec`, in its order; empty for a valid variant.
    pub expected: Vec<ExpectedProblem>,
}

/// A problem `validate` must report, as [`super::Problem`] holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedProblem {
    /// JSON path of the field.
    pub path: String,
    /// The offending value, as JSON.
    pub value: String,
    /// The reason.
    pub reason: String,
}

impl fmt::Display for ExpectedProblem {
    /// As [`super::Problem`] displays: `PATH: VALUE: REASON`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.value, self.reason)
    }
}

impl From<super::Problem> for ExpectedProblem {
    fn from(p: super::Problem) -> Self {
        Self {
            path: p.path,
            value: p.value,
            reason: p.reason,
        }
    }
}

/// Every case, in the order of the fields they concern.
pub fn cases() -> Vec<Case> {
    rows()
        .into_iter()
        .map(|(rule, mutate, expected)| {
            let mut spec = base();
            mutate(&mut spec);
            Case {
                rule,
                spec,
                expected: expected
                    .into_iter()
                    .map(|(path, value, reason)| ExpectedProblem {
                        path: path.to_owned(),
                        value: value.to_owned(),
                        reason,
                    })
                    .collect(),
            }
        })
        .collect()
}

const BASE: &str = r#"
addressPools:
- name: public-v4
  addresses: ["203.0.113.0/28", "203.0.113.32-203.0.113.40"]
- name: public-v6
  addresses: ["2001:db8:1::/64"]
- name: dual
  addresses: ["203.0.113.64/27", "2001:db8:2::/112"]
  allocateTo:
    priority: 1
    namespaces: [prod]
    serviceSelectors: [{matchLabels: {tier: web}}]
- name: block
  addresses: ["203.0.113.128/26"]
l2Advertisements:
- name: lan
  addressPools: [public-v4]
  interfaces: [eth0]
bgpPeers:
- name: tor-a
  myASN: 64512
  peerASN: 64513
  peerAddress: 198.51.100.1
  bfdProfile: fast
  nodeSelectors: [{matchLabels: {rack: a}}]
- name: tor-b
  myASN: 64512
  peerASN: 64512
  peerAddress: 198.51.100.2
bgpAdvertisements:
- name: all
  localPref: 100
  communities: ["64512:100", "no-export", "large:64512:1:2"]
- name: aggregate
  addressPools: [block]
  aggregationLength: 26
  peers: [tor-a]
communities:
- name: vpn-only
  value: "64512:300"
bfdProfiles:
- name: fast
  receiveInterval: 100
  transmitInterval: 100
"#;

/// The valid config every case starts from: pools of both families, L2 and BGP advertisements,
/// two peers, a named community and a BFD profile.
pub fn base() -> LoadBalancerConfigSpec {
    serde_saphyr::from_str(BASE).unwrap()
}

/// A selector of `matchLabels` only.
pub(crate) fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        match_expressions: None,
    }
}

/// A selector of one match expression.
pub(crate) fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }]),
    }
}

/// One selector of several requirements, each (key, operator, values).
fn expressions(requirements: &[(&str, &str, &[&str])]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(
            requirements
                .iter()
                .map(|(key, operator, values)| LabelSelectorRequirement {
                    key: (*key).to_owned(),
                    operator: (*operator).to_owned(),
                    values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
                })
                .collect(),
        ),
    }
}

fn toleration(
    key: &str,
    operator: &str,
    value: &str,
    effect: &str,
    secs: Option<i64>,
) -> Toleration {
    Toleration {
        key: Some(key.to_owned()),
        operator: Some(operator.to_owned()),
        value: Some(value.to_owned()),
        effect: Some(effect.to_owned()),
        toleration_seconds: secs,
    }
}

fn node_affinity_weight(weight: i32) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                PreferredSchedulingTerm {
                    weight,
                    preference: NodeSelectorTerm::default(),
                },
            ]),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn anti_affinity_weight(weight: i32) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight,
                    pod_affinity_term: Default::default(),
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn preferred(weight: i32, preference: LabelSelector) -> PreferredNodeSelector {
    PreferredNodeSelector { weight, preference }
}

fn peer(s: &mut LoadBalancerConfigSpec) -> &mut BgpPeer {
    &mut s.bgp_peers[0]
}

fn ad(s: &mut LoadBalancerConfigSpec) -> &mut BgpAdvertisement {
    &mut s.bgp_advertisements[0]
}

fn bfd(s: &mut LoadBalancerConfigSpec) -> &mut BfdProfile {
    &mut s.bfd_profiles[0]
}

type Mutation = fn(&mut LoadBalancerConfigSpec);
type Expected = Vec<(&'static str, &'static str, String)>;
type Row = (&'static str, Mutation, Expected);

/// (rule, change to the valid base, expected problems as (path, value, reason)).
fn rows() -> Vec<Row> {
    let ok = Vec::new;
    let one = |path: &'static str, value: &'static str, reason: &str| {
        vec![(path, value, reason.to_owned())]
    };
    let community = CommunityError.to_string();
    vec![
        // --- top level
        ("namespace is a DNS-1123 label", |s| s.namespace = "lb-system".into(), ok()),
        ("namespace rejects capitals", |s| s.namespace = "LB".into(), one("spec.namespace", r#""LB""#, DNS1123_LABEL)),
        ("log level debug", |s| s.log_level = "debug".into(), ok()),
        ("log level unknown", |s| s.log_level = "verbose".into(), one("spec.logLevel", r#""verbose""#, "must be one of error, warn, info, debug, trace")),
        ("class is a qualified name", |s| s.load_balancer_class = "ferrolb.io/lb".into(), ok()),
        ("class with a space", |s| s.load_balancer_class = "my lb".into(), one("spec.loadBalancerClass", r#""my lb""#, QUALIFIED_NAME)),
        // --- scheduling
        ("one controller replica", |s| s.controller.replicas = 1, ok()),
        ("zero controller replicas", |s| s.controller.replicas = 0, one("spec.controller.replicas", "0", "must be at least 1: without a controller no Service gets an IP")),
        ("node selector", |s| { s.speaker.placement.node_selector.insert("node-role.kubernetes.io/worker".into(), "".into()); }, ok()),
        ("node selector bad key", |s| { s.speaker.placement.node_selector.insert("a b".into(), "x".into()); }, one("spec.speaker.nodeSelector", r#""a b""#, QUALIFIED_NAME)),
        ("node selector bad value", |s| { s.controller.placement.node_selector.insert("zone".into(), "a/b".into()); }, one("spec.controller.nodeSelector.zone", r#""a/b""#, LABEL_VALUE)),
        ("tolerationSeconds with NoExecute", |s| s.speaker.placement.tolerations = vec![toleration("node.kubernetes.io/unreachable", "Exists", "", "NoExecute", Some(30))], ok()),
        ("tolerationSeconds without NoExecute", |s| s.speaker.placement.tolerations = vec![toleration("k", "Exists", "", "NoSchedule", Some(30))], one("spec.speaker.tolerations[0].tolerationSeconds", "30", "is only allowed with effect NoExecute")),
        ("toleration Exists with a value", |s| s.controller.placement.tolerations = vec![toleration("k", "Exists", "v", "", None)], one("spec.controller.tolerations[0].value", r#""v""#, "must be empty when operator is Exists")),
        ("toleration of every taint", |s| s.speaker.placement.tolerations = vec![toleration("", "Exists", "", "", None)], ok()),
        ("toleration empty key with Equal", |s| s.speaker.placement.tolerations = vec![toleration("", "Equal", "", "", None)], one("spec.speaker.tolerations[0].operator", r#""Equal""#, "must be Exists when key is empty (to tolerate every taint)")),
        ("toleration unknown operator", |s| s.speaker.placement.tolerations = vec![toleration("k", "Has", "", "", None)], one("spec.speaker.tolerations[0].operator", r#""Has""#, "must be Equal or Exists")),
        ("toleration unknown effect", |s| s.speaker.placement.tolerations = vec![toleration("k", "Exists", "", "NoRun", None)], one("spec.speaker.tolerations[0].effect", r#""NoRun""#, "must be empty (every effect), NoSchedule, PreferNoSchedule or NoExecute")),
        ("affinity weight 1", |s| s.controller.placement.affinity = Some(node_affinity_weight(1)), ok()),
        ("affinity weight 100", |s| s.controller.placement.affinity = Some(anti_affinity_weight(100)), ok()),
        ("affinity weight 0", |s| s.controller.placement.affinity = Some(node_affinity_weight(0)), one("spec.controller.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", "0", "must be between 1 and 100")),
        ("anti-affinity weight 101", |s| s.speaker.placement.affinity = Some(anti_affinity_weight(101)), one("spec.speaker.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", "101", "must be between 1 and 100")),
        ("priority class", |s| s.speaker.placement.priority_class_name = "system-node-critical".into(), ok()),
        ("priority class with underscore", |s| s.speaker.placement.priority_class_name = "high_prio".into(), one("spec.speaker.priorityClassName", r#""high_prio""#, DNS1123_SUBDOMAIN)),
        ("interface exclusion regex", |s| s.speaker.exclude_interfaces = vec!["^eno[0-9]+$".into()], ok()),
        ("speaker ignores the exclude-from-external-load-balancers label", |s| s.speaker.ignore_exclude_lb_label = true, ok()),
        ("interface exclusion not a regex", |s| s.speaker.exclude_interfaces = vec!["^eth(".into()], one("spec.speaker.excludeInterfaces[0]", r#""^eth(""#, "is not a valid regular expression: error: unclosed group")),
        // --- pools
        ("pool name invalid", |s| s.address_pools[1].name = "Public_V6".into(), one("spec.addressPools[1].name", r#""Public_V6""#, DNS1123_LABEL)),
        ("pool name duplicate", |s| s.address_pools[1].name = "public-v4".into(), one("spec.addressPools[1].name", r#""public-v4""#, "duplicate name: also used by spec.addressPools[0]")),
        ("pool without addresses", |s| s.address_pools[3].addresses.clear(), one("spec.addressPools[3].addresses", "[]", "must list at least one CIDR or range")),
        ("pool entry not an address", |s| s.address_pools[0].addresses[0] = "203.0.113.300/28".into(), one("spec.addressPools[0].addresses[0]", r#""203.0.113.300/28""#, "not a CIDR (203.0.113.0/28) or a range (203.0.113.10-203.0.113.20)")),
        ("pool range reversed", |s| s.address_pools[0].addresses[1] = "203.0.113.40-203.0.113.32".into(), one("spec.addressPools[0].addresses[1]", r#""203.0.113.40-203.0.113.32""#, "range start is after its end")),
        ("pool range of mixed families", |s| s.address_pools[0].addresses[1] = "203.0.113.32-2001:db8::1".into(), one("spec.addressPools[0].addresses[1]", r#""203.0.113.32-2001:db8::1""#, "range ends are of different IP families")),
        ("pool CIDR with host bits", |s| s.address_pools[0].addresses[0] = "203.0.113.5/28".into(), one("spec.addressPools[0].addresses[0]", r#""203.0.113.5/28""#, "host bits are set after the prefix; the network is 203.0.113.0/28")),
        ("pool bare address", |s| s.address_pools[0].addresses[0] = "203.0.113.5".into(), one("spec.addressPools[0].addresses[0]", r#""203.0.113.5""#, "a single address must be written as a CIDR: 203.0.113.5/32")),
        ("pool of IPv4-mapped IPv6 addresses", |s| s.address_pools[1].addresses.push("::ffff:192.0.2.0/120".into()), one("spec.addressPools[1].addresses[1]", r#""::ffff:192.0.2.0/120""#, "IPv4-mapped IPv6 addresses cannot be assigned; write the IPv4 range 192.0.2.0/24 instead")),
        ("pool range of IPv4-mapped IPv6 addresses", |s| s.address_pools[1].addresses.push("::ffff:192.0.2.10-::ffff:192.0.2.20".into()), one("spec.addressPools[1].addresses[1]", r#""::ffff:192.0.2.10-::ffff:192.0.2.20""#, "IPv4-mapped IPv6 addresses cannot be assigned; write the IPv4 range 192.0.2.10-192.0.2.20 instead")),
        ("pool of IPv4-mapped loopback addresses", |s| s.address_pools[1].addresses.push("::ffff:127.0.0.0/104".into()), one("spec.addressPools[1].addresses[1]", r#""::ffff:127.0.0.0/104""#, "IPv4-mapped IPv6 addresses cannot be assigned")),
        ("pool of IPv4-compatible IPv6 addresses", |s| s.address_pools[1].addresses.push("::192.0.2.0/120".into()), one("spec.addressPools[1].addresses[1]", r#""::192.0.2.0/120""#, "deprecated IPv4-compatible IPv6 addresses cannot be assigned; write the IPv4 range 192.0.2.0/24 instead")),
        ("pool of the IPv6 loopback address", |s| s.address_pools[1].addresses.push("::1/128".into()), one("spec.addressPools[1].addresses[1]", r#""::1/128""#, "includes addresses that can never be a Service IP: ::1/128 (loopback)")),
        ("pool at the start of the IPv6 space", |s| s.address_pools[1].addresses.push("::/64".into()), one("spec.addressPools[1].addresses[1]", r#""::/64""#, "includes addresses that can never be a Service IP: ::/128 (unspecified), ::1/128 (loopback), ::/96 (deprecated IPv4-compatible), ::ffff:0:0/96 (IPv4-mapped)")),
        ("pool of IPv6 multicast addresses", |s| s.address_pools[1].addresses.push("ff05::/112".into()), one("spec.addressPools[1].addresses[1]", r#""ff05::/112""#, "includes addresses that can never be a Service IP: ff00::/8 (multicast)")),
        ("pool of IPv6 link-local addresses", |s| s.address_pools[1].addresses.push("fe80::100/120".into()), ok()),
        ("pool in 0.0.0.0/8", |s| s.address_pools[0].addresses.push("0.0.0.0/24".into()), one("spec.addressPools[0].addresses[2]", r#""0.0.0.0/24""#, "includes addresses that can never be a Service IP: 0.0.0.0/8 (this network)")),
        ("pool of IPv4 loopback addresses", |s| s.address_pools[0].addresses.push("127.0.0.1/32".into()), one("spec.addressPools[0].addresses[2]", r#""127.0.0.1/32""#, "includes addresses that can never be a Service IP: 127.0.0.0/8 (loopback)")),
        ("pool of IPv4 multicast addresses", |s| s.address_pools[0].addresses.push("224.0.0.0/28".into()), one("spec.addressPools[0].addresses[2]", r#""224.0.0.0/28""#, "includes addresses that can never be a Service IP: 224.0.0.0/4 (multicast)")),
        ("pool up to the IPv4 broadcast address", |s| s.address_pools[0].addresses.push("255.255.255.0/24".into()), one("spec.addressPools[0].addresses[2]", r#""255.255.255.0/24""#, "includes addresses that can never be a Service IP: 255.255.255.255/32 (limited broadcast)")),
        ("pool of all IPv4", |s| { s.address_pools.truncate(1); s.address_pools[0].addresses = vec!["0.0.0.0/0".into()]; s.l2_advertisements.clear(); s.bgp_advertisements.clear(); }, one("spec.addressPools[0].addresses[0]", r#""0.0.0.0/0""#, "includes addresses that can never be a Service IP: 0.0.0.0/8 (this network), 127.0.0.0/8 (loopback), 224.0.0.0/4 (multicast), 255.255.255.255/32 (limited broadcast)")),
        ("pool just outside the reserved IPv4 blocks", |s| s.address_pools[0].addresses.extend(["1.0.0.0/24".into(), "126.255.255.0/24".into(), "223.255.255.0/24".into(), "240.0.0.0/24".into(), "255.255.255.254/32".into()]), ok()),
        ("pools adjacent but disjoint", |s| s.address_pools[0].addresses.push("203.0.113.16-203.0.113.31".into()), ok()),
        ("pools overlap across pools", |s| s.address_pools[2].addresses.push("203.0.113.8-203.0.113.9".into()), one("spec.addressPools[2].addresses[2]", r#""203.0.113.8-203.0.113.9""#, "overlaps spec.addressPools[0].addresses[0] (203.0.113.0/28); no address may be in two pools or twice in one")),
        ("pool contains another pool", |s| s.address_pools[3].addresses[0] = "203.0.113.0/24".into(), vec![
            ("spec.addressPools[3].addresses[0]", r#""203.0.113.0/24""#, "overlaps spec.addressPools[0].addresses[0] (203.0.113.0/28); no address may be in two pools or twice in one".to_owned()),
            ("spec.addressPools[3].addresses[0]", r#""203.0.113.0/24""#, "overlaps spec.addressPools[0].addresses[1] (203.0.113.32-203.0.113.40); no address may be in two pools or twice in one".to_owned()),
            ("spec.addressPools[3].addresses[0]", r#""203.0.113.0/24""#, "overlaps spec.addressPools[2].addresses[0] (203.0.113.64/27); no address may be in two pools or twice in one".to_owned()),
        ]),
        ("pool repeats its own entry", |s| s.address_pools[1].addresses.push("2001:db8:1::10-2001:db8:1::20".into()), one("spec.addressPools[1].addresses[1]", r#""2001:db8:1::10-2001:db8:1::20""#, "overlaps spec.addressPools[1].addresses[0] (2001:db8:1::/64); no address may be in two pools or twice in one")),
        ("allocateTo namespace invalid", |s| s.address_pools[2].allocate_to = Some(AllocateTo { namespaces: vec!["Prod".into()], ..AllocateTo::default() }), one("spec.addressPools[2].allocateTo.namespaces[0]", r#""Prod""#, DNS1123_LABEL)),
        ("allocateTo namespace twice", |s| s.address_pools[2].allocate_to = Some(AllocateTo { namespaces: vec!["a".into(), "a".into()], ..AllocateTo::default() }), one("spec.addressPools[2].allocateTo.namespaces[1]", r#""a""#, "listed twice")),
        ("allocateTo selector expression", |s| s.address_pools[2].allocate_to = Some(AllocateTo { namespace_selectors: vec![expression("team", "In", &["a", "b"])], ..AllocateTo::default() }), ok()),
        ("allocateTo selector bad operator", |s| s.address_pools[2].allocate_to = Some(AllocateTo { namespace_selectors: vec![expression("team", "Equals", &["a"])], ..AllocateTo::default() }), one("spec.addressPools[2].allocateTo.namespaceSelectors[0].matchExpressions[0].operator", r#""Equals""#, "must be one of In, NotIn, Exists, DoesNotExist")),
        ("allocateTo selector In without values", |s| s.address_pools[2].allocate_to = Some(AllocateTo { service_selectors: vec![expression("tier", "In", &[])], ..AllocateTo::default() }), one("spec.addressPools[2].allocateTo.serviceSelectors[0].matchExpressions[0].values", "[]", "must not be empty with operator In")),
        ("allocateTo selector Exists with values", |s| s.address_pools[2].allocate_to = Some(AllocateTo { service_selectors: vec![expression("tier", "Exists", &["x"])], ..AllocateTo::default() }), one("spec.addressPools[2].allocateTo.serviceSelectors[0].matchExpressions[0].values", r#"["x"]"#, "must be empty with operator Exists")),
        ("allocateTo selector repeated", |s| s.address_pools[2].allocate_to = Some(AllocateTo { service_selectors: vec![selector(&[("a", "b")]), selector(&[("a", "b")])], ..AllocateTo::default() }), one("spec.addressPools[2].allocateTo.serviceSelectors[1]", r#"{"matchLabels":{"a":"b"}}"#, "duplicates spec.addressPools[2].allocateTo.serviceSelectors[0]")),
        // --- L2 advertisements
        ("L2 on every pool", |s| s.l2_advertisements[0].address_pools.clear(), ok()),
        ("L2 unknown pool", |s| s.l2_advertisements[0].address_pools.push("private".into()), one("spec.l2Advertisements[0].addressPools[1]", r#""private""#, "no address pool with this name")),
        ("L2 pool twice", |s| s.l2_advertisements[0].address_pools.push("public-v4".into()), one("spec.l2Advertisements[0].addressPools[1]", r#""public-v4""#, "listed twice")),
        ("L2 interface name too long", |s| s.l2_advertisements[0].interfaces[0] = "enp0s31f6-uplink".into(), one("spec.l2Advertisements[0].interfaces[0]", r#""enp0s31f6-uplink""#, "must be an interface name: 1 to 15 characters, no '/', ':' or whitespace")),
        ("L2 name duplicate", |s| { let copy = s.l2_advertisements[0].clone(); s.l2_advertisements.push(copy); }, one("spec.l2Advertisements[1].name", r#""lan""#, "duplicate name: also used by spec.l2Advertisements[0]")),
        ("L2 node selector bad key", |s| s.l2_advertisements[0].node_selectors = vec![selector(&[("-zone", "a")])], one("spec.l2Advertisements[0].nodeSelectors[0].matchLabels", r#""-zone""#, QUALIFIED_NAME)),
        ("L2 node selectors equal but for value order", |s| s.l2_advertisements[0].node_selectors = vec![expression("zone", "In", &["a", "b"]), expression("zone", "In", &["b", "a"])], one("spec.l2Advertisements[0].nodeSelectors[1]", r#"{"matchExpressions":[{"key":"zone","operator":"In","values":["b","a"]}]}"#, "duplicates spec.l2Advertisements[0].nodeSelectors[0]")),
        ("L2 service selectors", |s| s.l2_advertisements[0].service_selectors = vec![selector(&[("exposure", "lan")]), expression("tier", "In", &["web", "dns"])], ok()),
        ("L2 service selector bad operator", |s| s.l2_advertisements[0].service_selectors = vec![expression("tier", "Is", &["web"])], one("spec.l2Advertisements[0].serviceSelectors[0].matchExpressions[0].operator", r#""Is""#, "must be one of In, NotIn, Exists, DoesNotExist")),
        ("L2 service selectors repeated", |s| s.l2_advertisements[0].service_selectors = vec![selector(&[("tier", "web")]), expression("tier", "In", &["web"])], one("spec.l2Advertisements[0].serviceSelectors[1]", r#"{"matchExpressions":[{"key":"tier","operator":"In","values":["web"]}]}"#, "duplicates spec.l2Advertisements[0].serviceSelectors[0]")),
        ("L2 preferred nodes", |s| s.l2_advertisements[0].preferred_node_selectors = vec![preferred(100, selector(&[("kubernetes.io/hostname", "node-a")])), preferred(1, expression("zone", "In", &["a"]))], ok()),
        ("L2 preferred node weight 0", |s| s.l2_advertisements[0].preferred_node_selectors = vec![preferred(0, selector(&[("zone", "a")]))], one("spec.l2Advertisements[0].preferredNodeSelectors[0].weight", "0", "must be between 1 and 100")),
        ("L2 preferred node weight 101", |s| s.l2_advertisements[0].preferred_node_selectors = vec![preferred(101, selector(&[("zone", "a")]))], one("spec.l2Advertisements[0].preferredNodeSelectors[0].weight", "101", "must be between 1 and 100")),
        ("L2 preferred node selector bad operator", |s| s.l2_advertisements[0].preferred_node_selectors = vec![preferred(10, expression("zone", "Equals", &["a"]))], one("spec.l2Advertisements[0].preferredNodeSelectors[0].preference.matchExpressions[0].operator", r#""Equals""#, "must be one of In, NotIn, Exists, DoesNotExist")),
        ("L2 preferred node selector repeated", |s| s.l2_advertisements[0].preferred_node_selectors = vec![preferred(10, selector(&[("zone", "a")])), preferred(20, expression("zone", "In", &["a"]))], one("spec.l2Advertisements[0].preferredNodeSelectors[1].preference", r#"{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]}]}"#, "duplicates spec.l2Advertisements[0].preferredNodeSelectors[0].preference; give one entry the sum of their weights")),
        ("L2 node selectors that differ in one value", |s| s.l2_advertisements[0].node_selectors = vec![expression("zone", "In", &["a", "b"]), expression("zone", "In", &["c", "a"])], ok()),
        ("allocateTo matchLabels repeated as an expression", |s| s.address_pools[2].allocate_to = Some(AllocateTo { service_selectors: vec![selector(&[("tier", "web")]), expression("tier", "In", &["web"])], ..AllocateTo::default() }), one("spec.addressPools[2].allocateTo.serviceSelectors[1]", r#"{"matchExpressions":[{"key":"tier","operator":"In","values":["web"]}]}"#, "duplicates spec.addressPools[2].allocateTo.serviceSelectors[0]")),
        // --- BGP peers
        ("4-byte ASNs", |s| { peer(s).my_asn = 4_200_000_000; peer(s).peer_asn = Some(u32::MAX); }, ok()),
        ("my ASN zero", |s| peer(s).my_asn = 0, one("spec.bgpPeers[0].myASN", "0", "must be between 1 and 4294967295")),
        ("peer ASN zero", |s| peer(s).peer_asn = Some(0), one("spec.bgpPeers[0].peerASN", "0", "must be between 1 and 4294967295")),
        ("dynamic ASN external", |s| { peer(s).peer_asn = None; peer(s).dynamic_asn = Some(DynamicAsn::External); }, ok()),
        ("dynamic ASN internal", |s| { peer(s).peer_asn = None; peer(s).dynamic_asn = Some(DynamicAsn::Internal); }, ok()),
        ("peer ASN and dynamic ASN both unset", |s| peer(s).peer_asn = None, one("spec.bgpPeers[0].peerASN", "null", "one of peerASN and dynamicASN is required")),
        ("peer ASN and dynamic ASN both set", |s| peer(s).dynamic_asn = Some(DynamicAsn::External), one("spec.bgpPeers[0].peerASN", "64513", "cannot be set together with dynamicASN; set one of them")),
        ("multihop with dynamic ASN external", |s| { peer(s).peer_asn = None; peer(s).dynamic_asn = Some(DynamicAsn::External); peer(s).ebgp_multi_hop = true; }, ok()),
        ("multihop with dynamic ASN internal", |s| { peer(s).peer_asn = None; peer(s).dynamic_asn = Some(DynamicAsn::Internal); peer(s).ebgp_multi_hop = true; }, one("spec.bgpPeers[0].ebgpMultiHop", "true", "applies to eBGP only; this peer is iBGP (myASN equals peerASN, or dynamicASN is internal)")),
        ("IPv6 peer", |s| peer(s).peer_address = "2001:db8::1".into(), ok()),
        ("peer address not an IP", |s| peer(s).peer_address = "tor-a.example".into(), one("spec.bgpPeers[0].peerAddress", r#""tor-a.example""#, "must be an IPv4 or IPv6 address")),
        ("peer port zero", |s| peer(s).peer_port = 0, one("spec.bgpPeers[0].peerPort", "0", "must be between 1 and 65535")),
        ("source address", |s| peer(s).source_address = Some("198.51.100.10".into()), ok()),
        ("source address not an IP", |s| peer(s).source_address = Some("eth0".into()), one("spec.bgpPeers[0].sourceAddress", r#""eth0""#, "must be an IPv4 or IPv6 address")),
        ("source address of the other family", |s| peer(s).source_address = Some("2001:db8::10".into()), one("spec.bgpPeers[0].sourceAddress", r#""2001:db8::10""#, "must be of the same IP family as peerAddress (198.51.100.1)")),
        ("VRF", |s| peer(s).vrf = Some("vrf-red".into()), ok()),
        ("VRF name too long", |s| peer(s).vrf = Some("vrf-of-the-red-rack".into()), one("spec.bgpPeers[0].vrf", r#""vrf-of-the-red-rack""#, "must be a VRF device name: 1 to 15 characters, no '/', ':' or whitespace")),
        ("router ID", |s| peer(s).router_id = Some("10.0.0.1".into()), ok()),
        ("router ID IPv6", |s| peer(s).router_id = Some("2001:db8::1".into()), one("spec.bgpPeers[0].routerID", r#""2001:db8::1""#, "must be an IPv4 address (a BGP router ID is 32 bits)")),
        ("hold time 0 disables keepalives", |s| peer(s).hold_time = Some("0s".into()), ok()),
        ("hold time 3s", |s| peer(s).hold_time = Some("3s".into()), ok()),
        ("hold time 2s", |s| peer(s).hold_time = Some("2s".into()), one("spec.bgpPeers[0].holdTime", r#""2s""#, "must be 0s (no keepalives) or at least 3s")),
        ("hold time fractional", |s| peer(s).hold_time = Some("3500ms".into()), one("spec.bgpPeers[0].holdTime", r#""3500ms""#, "must be a whole number of seconds")),
        ("hold time too long", |s| peer(s).hold_time = Some("20h".into()), one("spec.bgpPeers[0].holdTime", r#""20h""#, "must be at most 65535s")),
        ("hold time not a duration", |s| peer(s).hold_time = Some("90".into()), one("spec.bgpPeers[0].holdTime", r#""90""#, "not a duration such as 90s, 1m30s or 500ms")),
        ("hold time text too long", |s| peer(s).hold_time = Some(format!("{}90s", "0".repeat(10))), one("spec.bgpPeers[0].holdTime", r#""000000000090s""#, "must be at most 12 characters")),
        ("hold time text of 12 characters", |s| peer(s).hold_time = Some(format!("{}90s", "0".repeat(9))), ok()),
        ("connect time 5s", |s| peer(s).connect_time = Some("5s".into()), ok()),
        ("connect time 0s", |s| peer(s).connect_time = Some("0s".into()), one("spec.bgpPeers[0].connectTime", r#""0s""#, "must be at least 1s")),
        ("connect time fractional", |s| peer(s).connect_time = Some("1500ms".into()), one("spec.bgpPeers[0].connectTime", r#""1500ms""#, "must be a whole number of seconds")),
        ("connect time too long", |s| peer(s).connect_time = Some("20h".into()), one("spec.bgpPeers[0].connectTime", r#""20h""#, "must be at most 65535s")),
        ("keepalive equal to hold", |s| { peer(s).hold_time = Some("90s".into()); peer(s).keepalive_time = Some("1m30s".into()); }, ok()),
        ("keepalive above hold", |s| { peer(s).hold_time = Some("90s".into()); peer(s).keepalive_time = Some("91s".into()); }, one("spec.bgpPeers[0].keepaliveTime", r#""91s""#, "must not exceed holdTime (90s)")),
        ("keepalive above the default hold time, hold time derived", |s| peer(s).keepalive_time = Some("120s".into()), ok()),
        ("keepalive at most a third of the longest hold time", |s| peer(s).keepalive_time = Some("21845s".into()), ok()),
        ("keepalive above a third of the longest hold time", |s| peer(s).keepalive_time = Some("21846s".into()), one("spec.bgpPeers[0].keepaliveTime", r#""21846s""#, "must be at most 21845s when holdTime is absent: the hold time is then three times keepaliveTime, at most 65535s")),
        ("keepalive text too long", |s| peer(s).keepalive_time = Some(format!("{}1s", "0".repeat(11))), one("spec.bgpPeers[0].keepaliveTime", r#""000000000001s""#, "must be at most 12 characters")),
        ("multihop eBGP", |s| peer(s).ebgp_multi_hop = true, ok()),
        ("multihop iBGP", |s| s.bgp_peers[1].ebgp_multi_hop = true, one("spec.bgpPeers[1].ebgpMultiHop", "true", "applies to eBGP only; this peer is iBGP (myASN equals peerASN, or dynamicASN is internal)")),
        ("password from a Secret", |s| peer(s).password_secret_ref = Some(SecretKeyRef { name: "tor-a-md5".into(), key: "password".into() }), ok()),
        ("password Secret name invalid", |s| peer(s).password_secret_ref = Some(SecretKeyRef { name: "Tor".into(), key: "password".into() }), one("spec.bgpPeers[0].passwordSecretRef.name", r#""Tor""#, DNS1123_SUBDOMAIN)),
        ("password Secret key invalid", |s| peer(s).password_secret_ref = Some(SecretKeyRef { name: "tor".into(), key: "a/b".into() }), one("spec.bgpPeers[0].passwordSecretRef.key", r#""a/b""#, "must be a Secret key: letters, digits, '-', '_' or '.'")),
        ("BFD profile unknown", |s| peer(s).bfd_profile = Some("slow".into()), one("spec.bgpPeers[0].bfdProfile", r#""slow""#, "no BFD profile with this name in spec.bfdProfiles")),
        ("peer node selector repeats a requirement in another value order", |s| peer(s).node_selectors = vec![expressions(&[("zone", "In", &["a", "b"]), ("zone", "In", &["b", "a"])])], one("spec.bgpPeers[0].nodeSelectors[0].matchExpressions[1]", r#"{"key":"zone","operator":"In","values":["b","a"]}"#, "duplicates spec.bgpPeers[0].nodeSelectors[0].matchExpressions[0]")),
        ("same session on disjoint nodes", |s| { let mut p = s.bgp_peers[0].clone(); p.name = "tor-a-rack-b".into(); p.node_selectors = vec![selector(&[("rack", "b")])]; s.bgp_peers.push(p); }, ok()),
        ("same session on another port", |s| { let mut p = s.bgp_peers[0].clone(); p.name = "tor-a-alt".into(); p.peer_port = 1179; s.bgp_peers.push(p); }, ok()),
        ("same session on overlapping nodes", |s| { let mut p = s.bgp_peers[0].clone(); p.name = "tor-a-again".into(); p.node_selectors = vec![selector(&[("zone", "x")])]; s.bgp_peers.push(p); }, one("spec.bgpPeers[2].peerAddress", r#""198.51.100.1""#, "the session to 198.51.100.1 port 179 is already configured by spec.bgpPeers[0] on nodes this peer's nodeSelectors also select; make their nodeSelectors disjoint")),
        // --- BGP advertisements
        ("aggregation 0 is allowed by itself", |s| { s.bgp_advertisements[1].aggregation_length = 24; s.address_pools[3].addresses[0] = "203.0.113.0/24".into(); s.address_pools.truncate(4); s.address_pools.retain(|p| p.name == "block" || p.name == "public-v6"); s.l2_advertisements.clear(); }, ok()),
        ("aggregation longer than 32", |s| ad(s).aggregation_length = 33, one("spec.bgpAdvertisements[0].aggregationLength", "33", "must be between 0 and 32")),
        ("aggregation longer than 128", |s| ad(s).aggregation_length_v6 = 129, one("spec.bgpAdvertisements[0].aggregationLengthV6", "129", "must be between 0 and 128")),
        ("aggregation shorter than a pool CIDR", |s| s.bgp_advertisements[1].aggregation_length = 25, one("spec.bgpAdvertisements[1].aggregationLength", "25", "is shorter than /26 of spec.addressPools[3].addresses[0] (203.0.113.128/26): the aggregate would announce addresses outside the pool")),
        ("aggregation shorter than a pool range", |s| { let a = &mut s.bgp_advertisements[1]; a.address_pools = vec!["public-v4".into()]; a.aggregation_length = 28; }, one("spec.bgpAdvertisements[1].aggregationLength", "28", "is shorter than /32 of spec.addressPools[0].addresses[1] (203.0.113.32-203.0.113.40): the aggregate would announce addresses outside the pool")),
        ("aggregation v6 shorter than pools", |s| ad(s).aggregation_length_v6 = 64, one("spec.bgpAdvertisements[0].aggregationLengthV6", "64", "is shorter than /112 of spec.addressPools[2].addresses[1] (2001:db8:2::/112): the aggregate would announce addresses outside the pool")),
        ("community not parseable", |s| ad(s).communities.push("65536:1".into()), one("spec.bgpAdvertisements[0].communities[3]", r#""65536:1""#, &community)),
        ("community repeated by another name", |s| ad(s).communities.push("65535:65281".into()), one("spec.bgpAdvertisements[0].communities[3]", r#""65535:65281""#, "listed twice")),
        ("community by name", |s| ad(s).communities.push("vpn-only".into()), ok()),
        ("community name undefined", |s| ad(s).communities.push("vpn".into()), one("spec.bgpAdvertisements[0].communities[3]", r#""vpn""#, super::bgp::UNKNOWN_COMMUNITY)),
        ("community by name and by value", |s| ad(s).communities.extend(["vpn-only".into(), "64512:300".into()]), one("spec.bgpAdvertisements[0].communities[4]", r#""64512:300""#, "listed twice")),
        ("community by value and by name", |s| ad(s).communities.extend(["64512:300".into(), "vpn-only".into()]), one("spec.bgpAdvertisements[0].communities[4]", r#""vpn-only""#, "listed twice")),
        ("named community large", |s| s.communities[0].value = "large:64512:3:0".into(), ok()),
        ("named community well-known value", |s| s.communities[0].value = "no-advertise".into(), ok()),
        ("named community name invalid", |s| s.communities[0].name = "VPN".into(), one("spec.communities[0].name", r#""VPN""#, DNS1123_LABEL)),
        ("named community name duplicate", |s| { let c = s.communities[0].clone(); s.communities.push(c); }, one("spec.communities[1].name", r#""vpn-only""#, "duplicate name: also used by spec.communities[0]")),
        ("named community with a well-known name", |s| s.communities[0].name = "no-export".into(), one("spec.communities[0].name", r#""no-export""#, "is the name of a well-known community; choose another")),
        ("named community value invalid", |s| s.communities[0].value = "64512".into(), one("spec.communities[0].value", r#""64512""#, &community)),
        ("named community value invalid, used by an advertisement", |s| { s.communities[0].value = "64512:65536".into(); ad(s).communities.push("vpn-only".into()); }, one("spec.communities[0].value", r#""64512:65536""#, &community)),
        ("advertisement unknown peer", |s| s.bgp_advertisements[1].peers.push("tor-c".into()), one("spec.bgpAdvertisements[1].peers[1]", r#""tor-c""#, "no BGP peer with this name")),
        ("advertisement unknown pool", |s| s.bgp_advertisements[1].address_pools.push("nope".into()), one("spec.bgpAdvertisements[1].addressPools[1]", r#""nope""#, "no address pool with this name")),
        ("advertisement name duplicate", |s| s.bgp_advertisements[1].name = "all".into(), one("spec.bgpAdvertisements[1].name", r#""all""#, "duplicate name: also used by spec.bgpAdvertisements[0]")),
        ("advertisement node selectors equal but for requirement order", |s| ad(s).node_selectors = vec![expressions(&[("rack", "Exists", &[]), ("zone", "In", &["a"])]), expressions(&[("zone", "In", &["a"]), ("rack", "Exists", &[])])], one("spec.bgpAdvertisements[0].nodeSelectors[1]", r#"{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]},{"key":"rack","operator":"Exists","values":[]}]}"#, "duplicates spec.bgpAdvertisements[0].nodeSelectors[0]")),
        ("BGP service selectors with host routes", |s| ad(s).service_selectors = vec![selector(&[("tier", "web")])], ok()),
        ("BGP service selector bad value", |s| ad(s).service_selectors = vec![selector(&[("tier", "web/front")])], one("spec.bgpAdvertisements[0].serviceSelectors[0].matchLabels.tier", r#""web/front""#, LABEL_VALUE)),
        ("BGP service selectors with an IPv4 aggregate", |s| s.bgp_advertisements[1].service_selectors = vec![selector(&[("tier", "web")])], one("spec.bgpAdvertisements[1].aggregationLength", "26", "must be 32 when serviceSelectors is set: an aggregate would also announce the addresses of Services the selectors leave out")),
        ("BGP service selectors with an IPv6 aggregate", |s| { ad(s).service_selectors = vec![selector(&[("tier", "web")])]; ad(s).aggregation_length_v6 = 112; }, one("spec.bgpAdvertisements[0].aggregationLengthV6", "112", "must be 128 when serviceSelectors is set: an aggregate would also announce the addresses of Services the selectors leave out")),
        ("local pref differs for disjoint Services", |s| { s.bgp_advertisements[0].service_selectors = vec![selector(&[("tier", "web")])]; s.bgp_advertisements[1].service_selectors = vec![selector(&[("tier", "dns")])]; s.bgp_advertisements[1].aggregation_length = 32; }, ok()),
        ("local pref conflict for overlapping Services", |s| { s.bgp_advertisements[0].service_selectors = vec![selector(&[("tier", "web")])]; s.bgp_advertisements[1].service_selectors = vec![expression("tier", "Exists", &[])]; s.bgp_advertisements[1].aggregation_length = 32; }, one("spec.bgpAdvertisements[1].localPref", "null", "conflicts with spec.bgpAdvertisements[0] (localPref 100) for pool \"block\" on the same peers and nodes")),
        ("local pref differs on other peers", |s| { s.bgp_advertisements[0].peers = vec!["tor-b".into()]; s.bgp_advertisements[1].aggregation_length = 32; }, ok()),
        ("local pref differs on disjoint nodes", |s| { s.bgp_advertisements[0].node_selectors = vec![selector(&[("rack", "a")])]; s.bgp_advertisements[1].node_selectors = vec![selector(&[("rack", "b")])]; s.bgp_advertisements[1].aggregation_length = 32; }, ok()),
        ("local pref conflict", |s| s.bgp_advertisements[1].aggregation_length = 32, one("spec.bgpAdvertisements[1].localPref", "null", "conflicts with spec.bgpAdvertisements[0] (localPref 100) for pool \"block\" on the same peers and nodes")),
        // --- BFD
        ("BFD fastest timers", |s| { bfd(s).receive_interval = 10; bfd(s).detect_multiplier = 2; bfd(s).minimum_ttl = 1; }, ok()),
        ("BFD slowest timers", |s| { bfd(s).transmit_interval = 60_000; bfd(s).echo_interval = 60_000; bfd(s).detect_multiplier = 255; bfd(s).minimum_ttl = 254; }, ok()),
        ("BFD receive interval too short", |s| bfd(s).receive_interval = 9, one("spec.bfdProfiles[0].receiveInterval", "9", "must be between 10 and 60000 (milliseconds)")),
        ("BFD transmit interval too long", |s| bfd(s).transmit_interval = 60_001, one("spec.bfdProfiles[0].transmitInterval", "60001", "must be between 10 and 60000 (milliseconds)")),
        ("BFD echo interval too short", |s| bfd(s).echo_interval = 0, one("spec.bfdProfiles[0].echoInterval", "0", "must be between 10 and 60000 (milliseconds)")),
        ("BFD multiplier 1", |s| bfd(s).detect_multiplier = 1, one("spec.bfdProfiles[0].detectMultiplier", "1", "must be between 2 and 255")),
        ("BFD multiplier 256", |s| bfd(s).detect_multiplier = 256, one("spec.bfdProfiles[0].detectMultiplier", "256", "must be between 2 and 255")),
        ("BFD minimum TTL 0", |s| bfd(s).minimum_ttl = 0, one("spec.bfdProfiles[0].minimumTtl", "0", "must be between 1 and 254")),
        ("BFD minimum TTL 255", |s| bfd(s).minimum_ttl = 255, one("spec.bfdProfiles[0].minimumTtl", "255", "must be between 1 and 254")),
        ("BFD name duplicate", |s| { let p = s.bfd_profiles[0].clone(); s.bfd_profiles.push(p); }, one("spec.bfdProfiles[1].name", r#""fast""#, "duplicate name: also used by spec.bfdProfiles[0]")),
        ("BFD echo mode", |s| bfd(s).echo_mode = true, one("spec.bfdProfiles[0].echoMode", "true", super::bgp::ECHO_MODE_UNSUPPORTED)),
    ]
}
