use super::*;
use crate::harness::{ScratchNetns, netns_sh};
use serde_json::{Value, json};

const NODE_IPS: [&str; 2] = ["198.51.100.11", "2001:db8:1::11"];

fn ips() -> Vec<IpAddr> {
    NODE_IPS.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn svc(name: &str, policy: &str, lb_ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": lb_ip}]}}
    }))
    .unwrap()
}

fn slice(name: &str, family: &str, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": family,
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn web_slice() -> EndpointSlice {
    slice(
        "web-x",
        "IPv4",
        json!([
            {"addresses": ["198.51.100.129"], "nodeName": "node-1", "conditions": {"ready": true}},
            {"addresses": ["198.51.100.161"], "nodeName": "node-2", "conditions": {"ready": true}},
            {"addresses": ["198.51.100.162"], "nodeName": "node-2", "conditions": {"ready": false}}
        ]),
    )
}

fn key(name: &str) -> ServiceKey {
    ("ns".into(), name.into())
}

/// The whole-table script of a node with addresses `node_ips` that has only Service `s`.
fn alone(node_ips: Vec<IpAddr>, node: &str, s: &Service, slices: &[&EndpointSlice]) -> String {
    let mut t = Tables::new(node_ips);
    t.set_service(
        &key(s.metadata.name.as_deref().unwrap()),
        destinations(node, s, slices.iter().copied()),
    );
    t.full()
}

/// The chain body the element for `daddr . tcp . port` jumps to, in a full script; `drop` when
/// it is dropped without a chain.
fn chain_of(script: &str, daddr: &str, port: u16) -> String {
    if script.contains(&format!("{daddr} . tcp . {port} : drop")) {
        return "drop".to_owned();
    }
    let element = format!("{daddr} . tcp . {port} : jump s");
    let n: String = script
        .split(&element)
        .nth(1)
        .unwrap_or_else(|| panic!("no element {element}: {script}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    script
        .split(&format!("chain s{n} {{"))
        .nth(1)
        .and_then(|rest| rest.split(" }\n").next())
        .unwrap_or_else(|| panic!("no chain s{n}: {script}"))
        .trim()
        .to_owned()
}

#[test]
fn cluster_uses_all_ready_endpoints_and_snats() {
    let s = svc("web", "Cluster", "203.0.113.10");
    let script = alone(ips(), "node-1", &s, &[&web_slice()]);
    let chain = chain_of(&script, "203.0.113.10", 80);
    assert_eq!(
        chain,
        "meta mark set meta mark | 0x4000; meta l4proto tcp dnat ip to numgen random mod 2 \
         map { 0 : 198.51.100.129 . 8080, 1 : 198.51.100.161 . 8080 };",
        "{script}"
    );
    assert!(!script.contains("198.51.100.162"), "not ready: {script}");
    assert_eq!(
        chain_of(&script, "10.96.0.10", 80),
        chain,
        "the cluster IP too"
    );
    assert!(script.contains("snat to 198.51.100.11"), "{script}");
}

#[test]
fn local_uses_only_local_endpoints_or_drops() {
    let s = svc("web", "Local", "203.0.113.10");
    let script = alone(ips(), "node-1", &s, &[&web_slice()]);
    let chain = chain_of(&script, "203.0.113.10", 80);
    assert!(
        chain.contains("mod 1 map { 0 : 198.51.100.129 . 8080 }"),
        "{chain}"
    );
    assert!(
        !chain.contains("0x4000"),
        "Local keeps the client address: {chain}"
    );
    assert!(
        chain_of(&script, "10.96.0.10", 80).contains("mod 2"),
        "internalTrafficPolicy is Cluster: {script}"
    );
    let elsewhere = alone(ips(), "node-3", &s, &[&web_slice()]);
    assert_eq!(chain_of(&elsewhere, "203.0.113.10", 80), "drop");
}

#[test]
fn each_address_goes_to_backends_of_its_own_family() {
    let mut s = svc("web", "Cluster", "203.0.113.10");
    let status = s.status.as_mut().unwrap().load_balancer.as_mut().unwrap();
    status
        .ingress
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"ip": "2001:db8:100::10"})).unwrap());
    let v6 = slice(
        "web-y",
        "IPv6",
        json!([{"addresses": ["2001:db8:2::5"], "nodeName": "node-2"}]),
    );
    let script = alone(ips(), "node-1", &s, &[&web_slice(), &v6]);
    let chain = chain_of(&script, "2001:db8:100::10", 80);
    assert!(
        chain.contains("dnat ip6 to numgen random mod 1 map { 0 : [2001:db8:2::5] . 8080 }"),
        "{chain}"
    );
    assert!(
        chain_of(&script, "203.0.113.10", 80).contains("mod 2"),
        "{script}"
    );
    // a node without an IPv6 address has no ip6 table to put it in
    let script = alone(vec![ips()[0]], "node-1", &s, &[&web_slice(), &v6]);
    assert!(!script.contains("2001:db8:100::10"), "{script}");
    assert!(!script.contains("table ip6 ferrolb_testbed {"), "{script}");
}

#[test]
fn the_full_script_does_not_depend_on_the_order_services_arrive() {
    let a = svc("a", "Cluster", "203.0.113.1");
    let b = svc("b", "Cluster", "203.0.113.2");
    let mut t1 = Tables::new(ips());
    t1.set_service(&key("a"), destinations("node-1", &a, []));
    t1.set_service(&key("b"), destinations("node-1", &b, [&web_slice()]));
    let mut t2 = Tables::new(ips());
    t2.set_service(&key("b"), destinations("node-1", &b, [&web_slice()]));
    t2.set_service(&key("a"), destinations("node-1", &a, []));
    assert_eq!(t1.full(), t2.full());
}

#[test]
fn a_change_touches_only_the_destinations_that_changed() {
    let mut t = Tables::new(ips());
    let web = svc("web", "Cluster", "203.0.113.10");
    t.set_service(&key("web"), destinations("node-1", &web, [&web_slice()]));
    let _ = t.full();
    assert_eq!(t.partial(), None, "nothing changed");

    // a second Service: its two destinations are added, web's are not mentioned
    let api = svc("api", "Cluster", "203.0.113.20");
    let mut api_spec = api.clone();
    api_spec.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.20".into());
    t.set_service(
        &key("api"),
        destinations("node-1", &api_spec, [&web_slice()]),
    );
    let add = t.partial().unwrap();
    assert!(
        add.contains("add element ip ferrolb_testbed services { 203.0.113.20 . tcp . 80 : jump s"),
        "{add}"
    );
    assert!(add.contains("10.96.0.20 . tcp . 80"), "{add}");
    assert!(
        !add.contains("203.0.113.10") && !add.contains("10.96.0.10 "),
        "{add}"
    );
    assert!(!add.contains("delete"), "{add}");

    // web loses an endpoint: its elements move to new chains, the old ones go, api is untouched
    let mut fewer = web_slice();
    fewer.endpoints.truncate(1);
    t.set_service(&key("web"), destinations("node-1", &web, [&fewer]));
    let change = t.partial().unwrap();
    assert!(
        change.contains("delete element ip ferrolb_testbed services { 203.0.113.10 . tcp . 80 }"),
        "{change}"
    );
    assert!(
        change.contains("mod 1 map { 0 : 198.51.100.129 . 8080 }"),
        "{change}"
    );
    assert!(
        change.contains("delete chain ip ferrolb_testbed s"),
        "{change}"
    );
    assert!(!change.contains("203.0.113.20"), "{change}");
    assert_eq!(
        change.matches("delete chain").count(),
        2,
        "web's two old chains: {change}"
    );

    // a Service event that changes nothing of this node's rules writes nothing
    t.set_service(&key("web"), destinations("node-1", &web, [&fewer]));
    assert_eq!(t.partial(), None);

    // web goes: its elements and chains go
    t.set_service(&key("web"), Vec::new());
    let gone = t.partial().unwrap();
    assert_eq!(gone.matches("delete element").count(), 2, "{gone}");
    assert_eq!(gone.matches("delete chain").count(), 2, "{gone}");
    assert!(!gone.contains("add "), "{gone}");
}

#[test]
fn destinations_without_endpoints_are_dropped_without_a_chain() {
    let web = svc("web", "Cluster", "203.0.113.10");
    let mut t = Tables::new(ips());
    t.set_service(&key("web"), destinations("node-1", &web, []));
    let script = t.full();
    assert!(!script.contains("chain s"), "{script}");
    assert!(
        script.contains("203.0.113.10 . tcp . 80 : drop")
            && script.contains("10.96.0.10 . tcp . 80 : drop"),
        "{script}"
    );

    // endpoints come: the elements now jump to chains of their own
    t.set_service(&key("web"), destinations("node-1", &web, [&web_slice()]));
    let up = t.partial().unwrap();
    assert_eq!(up.matches("delete element").count(), 2, "{up}");
    assert_eq!(up.matches(": jump s").count(), 2, "{up}");
    assert!(!up.contains("delete chain"), "no chain to retire: {up}");

    // and go again: back to drop, the chains retired
    t.set_service(&key("web"), destinations("node-1", &web, []));
    let down = t.partial().unwrap();
    assert_eq!(down.matches(": drop").count(), 2, "{down}");
    assert_eq!(down.matches("delete chain").count(), 2, "{down}");
    assert!(!down.contains("dnat"), "no new chain: {down}");
}

#[test]
fn a_contested_destination_goes_to_the_first_service_and_then_the_next() {
    let mut t = Tables::new(ips());
    let b = svc("b", "Cluster", "203.0.113.10");
    let a = svc("a", "Local", "203.0.113.10");
    t.set_service(&key("b"), destinations("node-1", &b, [&web_slice()]));
    t.set_service(&key("a"), destinations("node-1", &a, []));
    let script = t.full();
    assert_eq!(
        chain_of(&script, "203.0.113.10", 80),
        "drop",
        "a wins: {script}"
    );
    t.set_service(&key("a"), Vec::new());
    let handover = t.partial().unwrap();
    assert!(handover.contains("mod 2"), "b takes over: {handover}");
}

// ---- against the kernel ----------------------------------------------------------------------

/// What the kernel does with each destination in `ns`: map element key → the rules of its chain
/// (or its verdict, when it has no chain), plus the chains nothing jumps to (there should be none).
fn behaviour(ns: &ScratchNetns) -> (BTreeMap<String, Vec<String>>, BTreeSet<String>) {
    let listing = netns_sh(&ns.0, &["nft", "-j", "list", "ruleset"]).unwrap();
    let v: Value = serde_json::from_str(&listing).unwrap();
    let mut rules: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut chains = BTreeSet::new();
    let mut elements = Vec::new();
    for item in v["nftables"].as_array().unwrap() {
        if let Some(c) = item.get("chain") {
            let name = c["name"].as_str().unwrap().to_owned();
            if name.starts_with('s') {
                chains.insert((c["family"].as_str().unwrap().to_owned(), name));
            }
        }
        if let Some(r) = item.get("rule") {
            let at = (
                r["family"].as_str().unwrap().to_owned(),
                r["chain"].as_str().unwrap().to_owned(),
            );
            rules.entry(at).or_default().push(r["expr"].to_string());
        }
        if let Some(m) = item.get("map") {
            for e in m["elem"].as_array().into_iter().flatten() {
                elements.push((
                    m["family"].as_str().unwrap().to_owned(),
                    e[0].to_string(),
                    e[1].clone(),
                ));
            }
        }
    }
    let mut out = BTreeMap::new();
    for (family, key, verdict) in elements {
        let behaves = match verdict["jump"]["target"].as_str() {
            Some(chain) => {
                let at = (family.clone(), chain.to_owned());
                chains.remove(&at);
                rules.get(&at).cloned().unwrap_or_default()
            }
            None => vec![verdict.to_string()],
        };
        out.insert(format!("{family} {key}"), behaves);
    }
    (
        out,
        chains
            .into_iter()
            .map(|(f, c)| format!("{f} {c}"))
            .collect(),
    )
}

/// Random changes of Services and endpoints, each applied as a partial update to one namespace:
/// after every step the kernel there behaves exactly as in a namespace given the whole table.
#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn partial_updates_leave_the_kernel_as_a_full_rewrite_would() {
    let partial = ScratchNetns::new("partial").unwrap();
    let full = ScratchNetns::new("full").unwrap();
    let mut t = Tables::new(ips());
    partial.nft(&t.full()).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut live: BTreeMap<String, (Service, Vec<EndpointSlice>)> = BTreeMap::new();
    let (mut most, mut seen_v6) = (0, false);
    for step in 0..60 {
        let name = format!("s{}", next(8));
        match next(4) {
            0 => {
                live.remove(&name);
            }
            _ => {
                let ip = format!("203.0.113.{}", 1 + next(6)); // collisions on purpose
                let mut s = svc(&name, if next(2) == 0 { "Local" } else { "Cluster" }, &ip);
                if next(3) == 0 {
                    let status = s.status.as_mut().unwrap().load_balancer.as_mut().unwrap();
                    status.ingress.as_mut().unwrap().push(
                        serde_json::from_value(json!({"ip": format!("2001:db8:100::{}", next(4))}))
                            .unwrap(),
                    );
                }
                let n = next(4);
                let eps: Vec<Value> = (0..n)
                    .map(|i| {
                        json!({"addresses": [format!("198.51.100.{}", 100 + i + next(3))],
                                    "nodeName": format!("node-{}", 1 + next(2))})
                    })
                    .collect();
                let v4 = slice(&format!("{name}-v4"), "IPv4", Value::Array(eps));
                let v6 = slice(
                    &format!("{name}-v6"),
                    "IPv6",
                    json!([{"addresses": [format!("2001:db8:2::{}", 1 + next(3))]}]),
                );
                live.insert(name.clone(), (s, vec![v4, v6]));
            }
        }
        let wanted = live
            .get(&name)
            .map(|(s, sl)| destinations("node-1", s, sl))
            .unwrap_or_default();
        t.set_service(&key(&name), wanted);
        if let Some(script) = t.partial() {
            partial
                .nft(&script)
                .unwrap_or_else(|e| panic!("step {step}: {e}\n{script}"));
        }
        let mut fresh = Tables::new(ips());
        for (n, (s, sl)) in &live {
            fresh.set_service(&key(n), destinations("node-1", s, sl));
        }
        full.nft(&fresh.full()).unwrap();
        let (got, orphans) = behaviour(&partial);
        let (want, _) = behaviour(&full);
        assert!(
            orphans.is_empty(),
            "step {step}: chains left behind: {orphans:?}"
        );
        assert_eq!(got, want, "step {step}");
        most = most.max(want.len());
        seen_v6 |= want.keys().any(|k| k.starts_with("ip6 "));
    }
    assert!(
        most >= 5 && seen_v6,
        "the run compared real tables ({most} destinations at most)"
    );
}
