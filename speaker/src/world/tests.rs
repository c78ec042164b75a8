//! From Kubernetes objects to announcement inputs.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn service(name: &str, value: serde_json::Value) -> Service {
    let mut svc: Service = serde_json::from_value(value).unwrap();
    svc.metadata.name = Some(name.into());
    svc.metadata.namespace = Some("ns".into());
    svc
}

fn lb(name: &str, ips: &[&str]) -> Service {
    let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    service(
        name,
        json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": ingress}}}),
    )
}

fn slice(name: &str, service: &str, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn node(name: &str, ready: bool, labels: serde_json::Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    }))
    .unwrap()
}

fn speaker(name: &str, node: &str, ip: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ferrolb-system"},
        "spec": {"nodeName": node, "containers": []},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    }))
    .unwrap()
}

fn lbc(name: &str, spec: serde_json::Value) -> LoadBalancerConfig {
    let mut c: LoadBalancerConfig = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1alpha1", "kind": "LoadBalancerConfig",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    c.metadata.name = Some(name.into());
    c
}

fn l2_config() -> LoadBalancerConfig {
    lbc(
        "default",
        json!({
            "addressPools": [{"name": "lan", "addresses": ["203.0.113.0/24"]}],
            "l2Advertisements": [{"name": "lan", "addressPools": ["lan"]}],
        }),
    )
}

fn world() -> World {
    let mut w = World::default();
    assert_eq!(w.set_config(&l2_config()), ConfigChange::InForce);
    for i in 1..=3 {
        let name = format!("node-{i}");
        w.set_node(&node(&name, true, json!({})));
        w.set_speaker(&speaker(
            &format!("speaker-{i}"),
            &name,
            &format!("198.51.100.1{i}"),
            true,
        ));
    }
    w
}

#[test]
fn only_load_balancers_of_the_configured_class_holding_addresses_count() {
    let mut w = world();
    w.set_service(&lb("a", &["203.0.113.1"]));
    w.set_service(&lb("pending", &[]));
    w.set_service(&service(
        "cluster-ip",
        json!({"spec": {"type": "ClusterIP"}, "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}),
    ));
    let mut other = lb("other-class", &["203.0.113.2"]);
    other.spec.as_mut().unwrap().load_balancer_class = Some("example.com/other".into());
    w.set_service(&other);
    let keys: Vec<_> = w.service_views().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, ["ns/a"]);
    w.remove_service("ns/a");
    assert!(w.service_views().is_empty());
}

#[test]
fn the_services_inside_prefixes_are_those_holding_an_address_in_any_of_them() {
    let mut w = world();
    w.set_service(&lb("a", &["203.0.113.1"]));
    w.set_service(&lb("b", &["203.0.113.130", "2001:db8::1"]));
    w.set_service(&lb("c", &["203.0.113.200"]));
    w.set_service(&lb("v6", &["2001:db8::1:1"]));
    let inside = |nets: &[&str]| -> Vec<String> {
        let nets = nets.iter().map(|n| n.parse().unwrap()).collect();
        w.service_views_in(&nets)
            .into_iter()
            .map(|s| s.key)
            .collect()
    };
    assert_eq!(inside(&["203.0.113.1/32"]), ["ns/a"]);
    assert_eq!(inside(&["203.0.113.128/25"]), ["ns/b", "ns/c"]);
    assert_eq!(inside(&["203.0.113.0/24"]), ["ns/a", "ns/b", "ns/c"]);
    assert_eq!(inside(&["2001:db8::/112"]), ["ns/b"]);
    assert_eq!(
        inside(&["2001:db8::/64", "203.0.113.1/32"]),
        ["ns/a", "ns/b", "ns/v6"]
    );
    assert!(inside(&["192.0.2.0/24"]).is_empty());
}

#[test]
fn a_relist_shows_the_old_world_until_it_completes_and_marks_only_what_it_changed() {
    let mut w = world();
    for (name, ip) in [
        ("a", "203.0.113.1"),
        ("b", "203.0.113.2"),
        ("c", "203.0.113.3"),
    ] {
        w.service_event(watcher::Event::Apply(lb(name, &[ip])));
    }
    w.take_changed();
    let keys =
        |w: &World| -> Vec<String> { w.service_views().into_iter().map(|s| s.key).collect() };
    // The watch expired; the relist has a unchanged, b moved to a new address, c gone, d new.
    w.service_event(watcher::Event::Init);
    w.service_event(watcher::Event::InitApply(lb("a", &["203.0.113.1"])));
    w.service_event(watcher::Event::InitApply(lb("b", &["203.0.113.20"])));
    assert_eq!(keys(&w), ["ns/a", "ns/b", "ns/c"], "never half of a list");
    assert_eq!(w.take_changed(), Changed::Nothing);
    w.service_event(watcher::Event::InitApply(lb("d", &["203.0.113.4"])));
    w.service_event(watcher::Event::InitDone);
    assert_eq!(keys(&w), ["ns/a", "ns/b", "ns/d"]);
    assert_eq!(
        w.take_changed(),
        at(&["203.0.113.2", "203.0.113.20", "203.0.113.3", "203.0.113.4"]),
        "only what the relist changed"
    );
}

#[test]
fn local_policy_and_ingress_hostnames_are_read() {
    let mut w = world();
    let mut svc = lb("a", &["203.0.113.1", "2001:db8::1"]);
    svc.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    svc.status
        .as_mut()
        .unwrap()
        .load_balancer
        .as_mut()
        .unwrap()
        .ingress
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"hostname": "lb.example.com"})).unwrap());
    w.set_service(&svc);
    let views = w.service_views();
    assert!(views[0].local);
    assert_eq!(
        views[0].ips,
        vec![
            "203.0.113.1".parse::<IpAddr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
}

#[test]
fn endpoint_nodes_come_from_every_slice_of_the_service_and_only_ready_or_serving_endpoints() {
    let mut w = world();
    w.set_service(&lb("a", &["203.0.113.1"]));
    w.set_slice(&slice(
        "a-1",
        "a",
        json!([
            {"addresses": ["10.0.0.1"], "nodeName": "node-1", "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "nodeName": "node-2", "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"], "nodeName": "node-3", "conditions": {"ready": false, "serving": true, "terminating": true}},
        ]),
    ));
    w.set_slice(&slice(
        "a-2",
        "a",
        json!([
            {"addresses": ["10.0.0.4"], "nodeName": "node-2", "conditions": {"ready": false, "serving": true, "terminating": false}},
            {"addresses": ["10.0.0.5"], "conditions": {}},
        ]),
    ));
    w.set_slice(&slice(
        "b-1",
        "b",
        json!([{"addresses": ["10.0.0.6"], "nodeName": "node-3"}]),
    ));
    let views = w.service_views();
    assert_eq!(
        views[0].endpoint_nodes,
        ["node-1", "node-2"].map(String::from).into()
    );
    w.remove_slice("ns/a-1");
    assert_eq!(
        w.service_views()[0].endpoint_nodes,
        ["node-2"].map(String::from).into()
    );
}

#[test]
fn nodes_carry_readiness_network_and_labels() {
    let mut w = World::default();
    let mut n: Node = node("n", true, json!({EXCLUDE: "", "zone": "a"}));
    n.status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(
            serde_json::from_value(json!({"type": "NetworkUnavailable", "status": "True"}))
                .unwrap(),
        );
    w.set_node(&n);
    let view = &w.nodes()["n"];
    assert!(view.ready && view.network_unavailable);
    assert_eq!(view.labels["zone"], "a");
    w.remove_node("n");
    assert!(w.nodes().is_empty());
}

const EXCLUDE: &str = crate::announce::EXCLUDE_LABEL;

#[test]
fn peers_are_the_other_speakers_and_readiness_needs_node_and_pod() {
    let mut w = world();
    w.set_speaker(&speaker("speaker-3", "node-3", "198.51.100.13", false));
    w.set_node(&node("node-2", false, json!({})));
    let peers = w.peers("node-1");
    assert_eq!(
        peers.keys().cloned().collect::<Vec<_>>(),
        ["node-2", "node-3"]
    );
    assert_eq!(peers["node-2"], "198.51.100.12".parse::<IpAddr>().unwrap());
    assert!(w.kubernetes_ready("node-1"));
    assert!(!w.kubernetes_ready("node-2"), "Node not Ready");
    assert!(!w.kubernetes_ready("node-3"), "speaker pod not ready");
    assert!(!w.kubernetes_ready("node-9"), "unknown node");
    w.remove_speaker("ferrolb-system/speaker-3");
    assert!(!w.speaker_nodes().contains("node-3"));
}

#[test]
fn an_invalid_config_is_reported_once_and_the_last_valid_one_stays() {
    let mut w = world();
    let mut bad = l2_config();
    bad.spec.address_pools[0].addresses = vec!["203.0.113.0/33".into()];
    let ConfigChange::Rejected { name, problems } = w.set_config(&bad) else {
        panic!("not rejected")
    };
    assert_eq!(name, "default");
    assert!(
        problems
            .to_string()
            .contains("addressPools[0].addresses[0]"),
        "{problems}"
    );
    assert!(w.config_stale());
    assert_eq!(w.set_config(&bad), ConfigChange::Unchanged, "reported once");
    assert_eq!(
        w.config().unwrap().address_pools[0].addresses,
        ["203.0.113.0/24"]
    );
    assert_eq!(w.set_config(&l2_config()), ConfigChange::Unchanged);
    assert!(!w.config_stale());
    assert_eq!(
        w.config().unwrap().address_pools[0].addresses,
        ["203.0.113.0/24"]
    );
    // Deleted: the speakers keep announcing with the last valid one.
    assert_eq!(w.remove_config("default"), ConfigChange::Gone);
    assert_eq!(
        w.config().unwrap().address_pools[0].addresses,
        ["203.0.113.0/24"]
    );
}

#[test]
fn the_oldest_config_is_in_force() {
    let mut w = World::default();
    let mut newer = lbc(
        "a-newer",
        json!({"addressPools": [{"name": "x", "addresses": ["203.0.113.0/25"]}]}),
    );
    newer.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-02T00:00:00Z".parse().unwrap(),
    ));
    let mut older = l2_config();
    older.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    for event in [
        watcher::Event::Init,
        watcher::Event::InitApply(newer.clone()),
        watcher::Event::InitApply(older),
    ] {
        assert_eq!(w.config_event(event), ConfigChange::Unchanged, "buffered");
    }
    assert!(w.config().is_none());
    assert_eq!(
        w.config_event(watcher::Event::InitDone),
        ConfigChange::InForce
    );
    assert_eq!(w.config().unwrap().address_pools[0].name, "lan");
    w.remove_config("default");
    assert_eq!(w.config().unwrap().address_pools[0].name, "x");
}

#[test]
fn one_node_announces_each_address_and_a_dead_speaker_hands_over() {
    let mut w = world();
    for i in 0..30 {
        w.set_service(&lb(&format!("s{i}"), &[&format!("203.0.113.{i}")]));
        w.set_slice(&slice(
            &format!("s{i}-x"),
            &format!("s{i}"),
            json!([{"addresses": ["10.0.0.1"], "nodeName": "node-1", "conditions": {"ready": true}}]),
        ));
    }
    let everyone: BTreeSet<String> = w.speaker_nodes();
    let count = |live: &BTreeSet<String>| -> usize {
        everyone
            .iter()
            .map(|me| w.l2_announcements(me, live).len())
            .sum()
    };
    assert_eq!(count(&everyone), 30);
    let leaders = w.l2_leaders(&everyone);
    let (ip, first) = leaders
        .iter()
        .next()
        .map(|(ip, l)| (*ip, l.clone().unwrap()))
        .unwrap();
    let mut without = everyone.clone();
    without.remove(&first);
    assert_eq!(count(&without), 30);
    assert_ne!(w.l2_leaders(&without)[&ip].as_deref(), Some(first.as_str()));
    assert!(w.l2_announcements(&first, &without).is_empty());
}

#[test]
fn views_say_which_advertisements_select_the_service_and_labels_matter_only_with_addresses() {
    let mut w = world();
    let selective = lbc(
        "default",
        json!({
            "addressPools": [{"name": "lan", "addresses": ["203.0.113.0/24"]}],
            "l2Advertisements": [
                {"name": "web", "serviceSelectors": [{"matchLabels": {"tier": "web"}}]},
                {"name": "all"},
            ],
            "bgpAdvertisements": [
                {"name": "web-routes", "serviceSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}]},
            ],
        }),
    );
    assert_eq!(w.set_config(&selective), ConfigChange::InForce);
    let mut web = lb("web", &["203.0.113.5"]);
    web.metadata.labels = Some([("tier".to_owned(), "web".to_owned())].into());
    w.set_service(&web);
    w.set_service(&lb("other", &["203.0.113.6"]));
    w.take_changed();
    let views = w.service_views();
    let selected: Vec<(&str, &SelectedBy)> = views
        .iter()
        .map(|v| (v.key.as_str(), &v.selected_by))
        .collect();
    let web_selection = SelectedBy {
        l2: vec!["web".to_owned()],
        bgp: vec!["web-routes".to_owned()],
    };
    assert_eq!(
        selected,
        [
            ("ns/other", &SelectedBy::default()),
            ("ns/web", &web_selection)
        ]
    );
    // Relabelling a Service that holds addresses can change what announces them.
    web.metadata.labels = Some([("tier".to_owned(), "db".to_owned())].into());
    w.set_service(&web);
    assert_eq!(w.take_changed(), at(&["203.0.113.5"]));
    // A Service without addresses keeps no labels, so relabelling it changes nothing.
    let mut pending = service(
        "pending",
        json!({"metadata": {"labels": {"tier": "web"}}, "spec": {"type": "LoadBalancer"}}),
    );
    w.set_service(&pending);
    w.take_changed();
    pending.metadata.labels = Some([("tier".to_owned(), "db".to_owned())].into());
    w.set_service(&pending);
    assert_eq!(w.take_changed(), Changed::Nothing);
}

fn at(ips: &[&str]) -> Changed {
    Changed::Addresses(ips.iter().map(|ip| ip.parse().unwrap()).collect())
}

#[test]
fn only_changes_that_can_move_an_announcement_ask_for_a_recompute() {
    let mut w = world();
    assert_eq!(
        w.take_changed(),
        Changed::Everything,
        "the config, nodes and speakers arrived"
    );
    assert_eq!(w.take_changed(), Changed::Nothing, "taken");
    // the controller writes pool usage into the configuration's status: nothing to recompute
    let mut with_status = l2_config();
    with_status.status = serde_json::from_value(json!({"observedGeneration": 3})).ok();
    assert!(with_status.status.is_some());
    assert_eq!(w.set_config(&with_status), ConfigChange::Unchanged);
    assert_eq!(
        w.take_changed(),
        Changed::Nothing,
        "the same configuration (its status changed)"
    );

    // a Service without addresses yet, and its slice, change nothing the speaker computes
    let pending = service("web", json!({"spec": {"type": "LoadBalancer"}}));
    w.set_service(&pending);
    let ready = json!([{"addresses": ["10.0.0.1"], "nodeName": "node-1"}]);
    w.set_slice(&slice("web-a", "web", ready.clone()));
    assert_eq!(
        w.take_changed(),
        Changed::Nothing,
        "no address: nothing to announce"
    );

    // it gets an address: that address matters; the same object again does not
    w.set_service(&lb("web", &["203.0.113.5"]));
    assert_eq!(w.take_changed(), at(&["203.0.113.5"]));
    w.set_service(&lb("web", &["203.0.113.5"]));
    assert_eq!(
        w.take_changed(),
        Changed::Nothing,
        "a resent or unrelated update"
    );
    // it moves to another: both addresses
    w.set_service(&lb("web", &["203.0.113.6"]));
    assert_eq!(w.take_changed(), at(&["203.0.113.5", "203.0.113.6"]));

    // its endpoints move, or stay
    w.set_slice(&slice("web-a", "web", ready.clone()));
    assert_eq!(w.take_changed(), Changed::Nothing, "same nodes");
    w.set_slice(&slice(
        "web-a",
        "web",
        json!([{"addresses": ["10.0.0.2"], "nodeName": "node-2"}]),
    ));
    assert_eq!(
        w.take_changed(),
        at(&["203.0.113.6"]),
        "another node hosts the endpoint"
    );
    w.remove_slice("ns/web-a");
    assert_eq!(w.take_changed(), at(&["203.0.113.6"]), "no endpoint left");
    w.remove_slice("ns/web-a");
    assert_eq!(w.take_changed(), Changed::Nothing, "already gone");

    // a node heartbeat that changes no condition or label, and a speaker pod resent
    w.set_node(&node("node-1", true, json!({})));
    w.set_speaker(&speaker("speaker-1", "node-1", "198.51.100.11", true));
    assert_eq!(w.take_changed(), Changed::Nothing);
    w.set_service(&lb("api", &["203.0.113.7"]));
    w.set_node(&node("node-1", false, json!({})));
    assert_eq!(
        w.take_changed(),
        Changed::Everything,
        "a node goes NotReady (and swallows the address change)"
    );

    // the Service goes: its address must be let go
    w.remove_service("ns/web");
    assert_eq!(w.take_changed(), at(&["203.0.113.6"]));
    w.remove_service("ns/pending");
    assert_eq!(w.take_changed(), Changed::Nothing);
}

/// One random change to the world in [`incremental_plans_equal_a_full_recompute`].
#[derive(Clone, Debug)]
enum Step {
    /// Service `n` (of 6) holds these addresses (indexes into 4), Local or not.
    Service(usize, Vec<usize>, bool),
    RemoveService(usize),
    /// The slice of Service `n` has endpoints on these nodes (1..=3).
    Slice(usize, Vec<usize>),
    RemoveSlice(usize),
    /// A node's readiness.
    Node(usize, bool),
    /// A condition written to Service `n`.
    Condition(usize, bool),
    /// The Service watch relists: these Services (n, addresses) and no others.
    Relist(Vec<(usize, Vec<usize>)>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0..6usize,
            prop::collection::vec(0..4usize, 0..3),
            any::<bool>()
        )
            .prop_map(|(n, ips, local)| Step::Service(n, ips, local)),
        (0..6usize).prop_map(Step::RemoveService),
        (0..6usize, prop::collection::vec(1..=3usize, 0..3)).prop_map(|(n, at)| Step::Slice(n, at)),
        (0..6usize).prop_map(Step::RemoveSlice),
        (1..=3usize, any::<bool>()).prop_map(|(n, r)| Step::Node(n, r)),
        (0..6usize, any::<bool>()).prop_map(|(n, c)| Step::Condition(n, c)),
        prop::collection::vec((0..6usize, prop::collection::vec(0..4usize, 0..3)), 0..5)
            .prop_map(Step::Relist),
    ]
}

proptest! {
    /// After any sequence of changes, the plan kept up to date change by change is the plan
    /// computed from scratch, and every Service whose inputs changed is handed back for its
    /// condition.
    #[test]
    fn incremental_plans_equal_a_full_recompute(steps in prop::collection::vec(step(), 1..40)) {
        let mut w = world();
        let live: BTreeSet<String> = (1..=3).map(|i| format!("node-{i}")).collect();
        let mut plans: Vec<Plan> = vec![Plan::default(); 3];
        let mut services: BTreeMap<usize, Service> = BTreeMap::new();
        for step in steps {
            let touched = match &step {
                Step::Service(n, ips, local) => {
                    let ips: Vec<String> = ips.iter().map(|i| format!("203.0.113.{}", 10 + i)).collect();
                    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                    let mut svc = lb(&format!("s{n}"), &ips);
                    if *local {
                        svc.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
                    }
                    services.insert(*n, svc.clone());
                    w.set_service(&svc);
                    Some(*n)
                }
                Step::RemoveService(n) => {
                    services.remove(n);
                    w.remove_service(&format!("ns/s{n}"));
                    None
                }
                Step::Slice(n, nodes) => {
                    let eps: Vec<_> = nodes.iter().map(|i| json!({"addresses": ["10.0.0.1"], "nodeName": format!("node-{i}")})).collect();
                    w.set_slice(&slice(&format!("s{n}-a"), &format!("s{n}"), json!(eps)));
                    Some(*n)
                }
                Step::RemoveSlice(n) => {
                    w.remove_slice(&format!("ns/s{n}-a"));
                    Some(*n)
                }
                Step::Node(i, ready) => {
                    w.set_node(&node(&format!("node-{i}"), *ready, json!({})));
                    None
                }
                Step::Condition(n, announced) => {
                    let Some(mut svc) = services.get(n).cloned() else { continue };
                    svc.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(json!({
                        "type": ANNOUNCED_CONDITION, "status": if *announced { "True" } else { "False" },
                        "reason": "Test", "message": "m", "lastTransitionTime": "2026-11-27T00:00:00Z",
                    })).unwrap()]);
                    services.insert(*n, svc.clone());
                    w.set_service(&svc);
                    Some(*n)
                }
                Step::Relist(list) => {
                    services.clear();
                    w.service_event(watcher::Event::Init);
                    for (n, ips) in list {
                        let ips: Vec<String> = ips.iter().map(|i| format!("203.0.113.{}", 10 + i)).collect();
                        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                        let svc = lb(&format!("s{n}"), &ips);
                        services.insert(*n, svc.clone());
                        w.service_event(watcher::Event::InitApply(svc));
                    }
                    w.service_event(watcher::Event::InitDone);
                    None
                }
            };
            let changed = w.take_changed();
            for (i, plan) in plans.iter_mut().enumerate() {
                let me = format!("node-{}", i + 1);
                let handed = w.update_plan(&me, &live, &changed, plan);
                let mut fresh = Plan::default();
                let all = w.update_plan(&me, &live, &Changed::Everything, &mut fresh);
                prop_assert_eq!(&*plan, &fresh, "{:?} after {:?}", changed, step);
                // the Service touched, if that changed it and it now holds addresses, gets its
                // condition looked at
                let key = touched
                    .filter(|_| changed != Changed::Nothing)
                    .map(|n| format!("ns/s{n}"));
                if let Some(view) = all.iter().find(|v| Some(&v.key) == key.as_ref()) {
                    prop_assert!(handed.contains(view), "{:?} not handed back after {:?}", view.key, step);
                }
            }
        }
    }
}
