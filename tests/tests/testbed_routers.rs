//! The testbed's own tests, part 4: the routers. A GoBGP stand-in for a speaker in a node
//! namespace peers with FRR, BIRD and GoBGP (IPv4 and IPv6), its announcements steer client
//! traffic through the router, and ECMP failover is measured by client probes. They need a
//! running testbed, so they are ignored by a plain `cargo test`.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use common::{ClientRoute, T, curl, obj, ready_pods, setup};
use ferrolb_testbed::harness::{Probe, netns_exec, netns_sh, unique_name, wait_for};
use ferrolb_testbed::workloads::{create_deployment, echo_container_with_liveness, on_node};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

/// A process killed (by PID) when the guard is dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a GoBGP speaker stand-in in `netns` (it dials the routers; it does not listen).
fn start_gobgp(
    netns: &str,
    node_ip: &str,
    asn: &str,
    routers: &[(String, String)],
    api_port: u16,
) -> anyhow::Result<(Proc, std::path::PathBuf)> {
    let dir = std::env::temp_dir().join(unique_name("ftb-gobgp"));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("gobgpd.toml");
    let mut toml =
        format!("[global.config]\n  as = {asn}\n  router-id = \"{node_ip}\"\n  port = -1\n");
    for (ip, peer_asn) in routers {
        toml.push_str(&format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{ip}\"\n    peer-as = {peer_asn}\n  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n"
        ));
    }
    std::fs::write(&conf, toml)?;
    let log = std::fs::File::create(dir.join("gobgpd.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", netns, "gobgpd", "-f"])
        .arg(&conf)
        .args([
            "--api-hosts",
            &format!("127.0.0.1:{api_port}"),
            "-l",
            "warn",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting gobgpd")?;
    Ok((Proc(child), dir))
}

fn gobgp_cli(netns: &str, api_port: u16, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let port = api_port.to_string();
    let mut argv = vec!["gobgp", "-u", "127.0.0.1", "-p", &port];
    argv.extend_from_slice(args);
    netns_exec(netns, &argv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn gobgp_in_a_node_namespace_peers_with_frr_bird_and_gobgp() -> anyhow::Result<()> {
    let (tb, _client) = setup().await?;
    let i = tb.node_netns.len() - 1;
    let (netns, node_ip) = (tb.node_netns[i].clone(), tb.node_ips[i].clone());
    let v = |k: &str, d: &str| tb.var(k).unwrap_or(d).to_string();
    let routers = [
        (
            v("TESTBED_ROUTER_IP", "198.51.100.1"),
            v("TESTBED_ROUTER_ASN", "64512"),
        ),
        (
            v("TESTBED_BIRD_IP", "198.51.100.2"),
            v("TESTBED_BIRD_ASN", "64520"),
        ),
        (
            v("TESTBED_GOBGP_IP", "198.51.100.3"),
            v("TESTBED_GOBGP_ASN", "64530"),
        ),
    ];
    let my_asn = v("TESTBED_GOBGP_PEER_ASN", "64513");
    let (_gobgpd, dir) = start_gobgp(&netns, &node_ip, &my_asn, &routers, 50052)?;
    let state = wait_for("BGP session Established in FRR", T, || async {
        let v = tb.frr_json(&format!("show bgp neighbors {node_ip} json"))?;
        let st = v[&node_ip]["bgpState"].as_str().unwrap_or("").to_string();
        Ok((st == "Established").then_some(st))
    })
    .await?;
    assert_eq!(state, "Established");
    let prefix = "203.0.113.250/32";
    wait_for("gobgp accepts the route", T, || async {
        let out = netns_exec(
            &netns,
            &[
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50052",
                "global",
                "rib",
                "add",
                prefix,
                "-a",
                "ipv4",
            ],
        )?;
        Ok(out.status.success().then_some(()))
    })
    .await?;
    let route = wait_for("route in FRR JSON", T, || async {
        let v = tb.frr_json("show bgp ipv4 unicast json")?;
        Ok(v["routes"].get(prefix).cloned())
    })
    .await?;
    let nexthops: Vec<String> = route[0]["nexthops"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(nexthops.contains(&node_ip), "{route}");
    // the same route reaches the BIRD and the GoBGP routers
    let bird = wait_for("route in BIRD", T, || async {
        let out = tb.bird(&format!("show route {prefix}"))?;
        Ok(out.contains("203.0.113.250/32").then_some(out))
    })
    .await?;
    assert!(bird.contains(&node_ip), "{bird}");
    let rib = wait_for("route in the GoBGP router", T, || async {
        let v = tb.gobgp_json(&["global", "rib", "-a", "ipv4"])?;
        Ok(v.get(prefix).cloned())
    })
    .await?;
    assert!(rib.to_string().contains(&node_ip), "{rib}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn bgp_announcement_steers_client_traffic_through_the_router() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    anyhow::ensure!(tb.node_names.len() >= 2, "needs two nodes");
    let ns = tb.namespace(&client, "bgpdp").await?;
    let (node, node_ip, netns) = (
        tb.node_names[1].clone(),
        tb.node_ips[1].clone(),
        tb.node_netns[1].clone(),
    );
    create_deployment(
        &client,
        &ns.name,
        "web",
        1,
        on_node(&node, json!([echo_container_with_liveness(json!([]))])),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let web = ready_pods(&pods, "app=web", 1).await?;
    let web_name = web[0].metadata.name.clone().unwrap_or_default();
    let last = 10 + (u32::from_str_radix(&unique_name("x")[2..], 16).unwrap_or(0) % 200);
    let lb = format!("203.0.113.{last}");
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    svcs.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?,
    )
    .await?;
    svcs.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": lb}]}}})),
    )
    .await?;
    let router_ip = tb
        .var("TESTBED_ROUTER_IP")
        .unwrap_or("198.51.100.1")
        .to_string();
    let router_asn = tb.var("TESTBED_ROUTER_ASN").unwrap_or("64512").to_string();
    let (_gobgpd, dir) = start_gobgp(
        &netns,
        &node_ip,
        "64513",
        &[(router_ip.clone(), router_asn)],
        50053,
    )?;
    // the client sends the LB IP to the router; only the BGP route makes it reach the node
    let _r = ClientRoute::set(&tb.client_netns, &lb, &router_ip)?;
    let url = format!("http://{lb}/");
    assert!(
        curl(&tb.client_netns, &url).is_err(),
        "answered before any announcement"
    );
    let prefix = format!("{lb}/32");
    wait_for("announce", T, || async {
        Ok(gobgp_cli(
            &netns,
            50053,
            &["global", "rib", "add", &prefix, "-a", "ipv4"],
        )?
        .status
        .success()
        .then_some(()))
    })
    .await?;
    let kernel = wait_for("route installed in the router's kernel", T, || async {
        let out = netns_sh(&tb.router_netns, &["ip", "route", "show", &lb])?;
        Ok(out.contains(&node_ip).then_some(out))
    })
    .await?;
    assert!(kernel.contains("proto bgp"), "{kernel}");
    let out = wait_for("curl through the router", T, || async {
        Ok(curl(&tb.client_netns, &url)
            .ok()
            .filter(|o| o.contains("pod=")))
    })
    .await?;
    assert!(out.contains(&format!("pod={web_name} ")), "{out}");
    // withdraw: the router drops the route and the client loses the service
    gobgp_cli(
        &netns,
        50053,
        &["global", "rib", "del", &prefix, "-a", "ipv4"],
    )?;
    wait_for("route withdrawn", T, || async {
        let out = netns_sh(&tb.router_netns, &["ip", "route", "show", &lb])?;
        Ok(out.trim().is_empty().then_some(()))
    })
    .await?;
    assert!(
        curl(&tb.client_netns, &url).is_err(),
        "still answered after withdrawal"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn ecmp_failover_gap_is_measured_by_client_probes() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    anyhow::ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let ns = tb.namespace(&client, "failover").await?;
    create_deployment(
        &client,
        &ns.name,
        "web",
        1,
        on_node(
            &tb.node_names[0],
            json!([echo_container_with_liveness(json!([]))]),
        ),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    ready_pods(&pods, "app=web", 1).await?;
    let last = 10 + (u32::from_str_radix(&unique_name("x")[2..], 16).unwrap_or(0) % 200);
    let lb = format!("203.0.113.{last}");
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    svcs.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?,
    )
    .await?;
    svcs.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": lb}]}}})),
    )
    .await?;
    let router_ip = tb
        .var("TESTBED_ROUTER_IP")
        .unwrap_or("198.51.100.1")
        .to_string();
    let router_asn = tb.var("TESTBED_ROUTER_ASN").unwrap_or("64512").to_string();
    let prefix = format!("{lb}/32");
    // node-2 and node-3 announce the IP (Cluster policy: both forward to the pod on node-1)
    let mut speakers = Vec::new();
    for (i, port) in [(1usize, 50054u16), (2, 50055)] {
        let (p, dir) = start_gobgp(
            &tb.node_netns[i],
            &tb.node_ips[i],
            "64513",
            &[(router_ip.clone(), router_asn.clone())],
            port,
        )?;
        let netns = tb.node_netns[i].clone();
        wait_for("announce", T, || async {
            Ok(gobgp_cli(
                &netns,
                port,
                &["global", "rib", "add", &prefix, "-a", "ipv4"],
            )?
            .status
            .success()
            .then_some(()))
        })
        .await?;
        speakers.push((p, dir));
    }
    let (n2, n3) = (tb.node_ips[1].clone(), tb.node_ips[2].clone());
    wait_for("ECMP route via node-2 and node-3", T, || async {
        let out = netns_sh(&tb.router_netns, &["ip", "route", "show", &lb])?;
        Ok((out.contains(&n2) && out.contains(&n3)).then_some(()))
    })
    .await?;
    let _r = ClientRoute::set(&tb.client_netns, &lb, &router_ip)?;
    let probe = Probe::start(
        &tb,
        &tb.client_netns,
        &format!("{lb}:80"),
        Duration::from_millis(50),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // node-2 fails hard: its link goes down; FRR notices when the hold timer (9 s) expires
    let down = tb.cut_node_link(1)?;
    wait_for(
        "route withdrawn from node-2",
        Duration::from_secs(30),
        || async {
            let out = netns_sh(&tb.router_netns, &["ip", "route", "show", &lb])?;
            Ok((!out.contains(&n2) && out.contains(&n3)).then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = probe.stop();
    drop(down);
    let tail_ok = report
        .samples
        .iter()
        .rev()
        .take(10)
        .all(|s| s["ok"].as_bool() == Some(true));
    eprintln!(
        "failover: {} probes, {} failed over {:?}, longest gap between answers {:?}",
        report.samples.len(),
        report.failures,
        report.failure_window,
        report.max_gap
    );
    assert!(
        report.samples.len() > 50,
        "too few probes: {}",
        report.samples.len()
    );
    assert!(tail_ok, "after the withdrawal every probe is answered");
    assert!(
        report.failure_window < Duration::from_secs(15),
        "failures lasted {:?} (hold time is 9 s)",
        report.failure_window
    );
    for (p, dir) in speakers {
        drop(p);
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn ipv6_bgp_session_with_frr() -> anyhow::Result<()> {
    let (tb, _client) = setup().await?;
    let i = 0;
    let netns = tb.node_netns[i].clone();
    let node_ip6 = format!("2001:db8:100::1{}", i + 1);
    let router6 = tb
        .var("TESTBED_ROUTER_IPV6")
        .unwrap_or("2001:db8:100::1")
        .to_string();
    let asn = tb.var("TESTBED_ROUTER_ASN").unwrap_or("64512").to_string();
    let dir = std::env::temp_dir().join(unique_name("ftb-gobgp6"));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("gobgpd.toml");
    std::fs::write(
        &conf,
        format!(
            "[global.config]\n  as = 64513\n  router-id = \"{}\"\n  port = -1\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{router6}\"\n    peer-as = {asn}\n  [neighbors.timers.config]\n    connect-retry = 1\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n",
            tb.node_ips[i]
        ),
    )?;
    let log = std::fs::File::create(dir.join("gobgpd.log"))?;
    let _gobgpd = Proc(
        Command::new("ip")
            .args(["netns", "exec", &netns, "gobgpd", "-f"])
            .arg(&conf)
            .args(["--api-hosts", "127.0.0.1:50056", "-l", "warn"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    wait_for("IPv6 session Established", T, || async {
        let v = tb.frr_json(&format!("show bgp neighbors {node_ip6} json"))?;
        Ok((v[&node_ip6]["bgpState"].as_str() == Some("Established")).then_some(()))
    })
    .await?;
    let prefix = "2001:db8:1b::250/128";
    wait_for("announce v6", T, || async {
        Ok(gobgp_cli(
            &netns,
            50056,
            &["global", "rib", "add", prefix, "-a", "ipv6"],
        )?
        .status
        .success()
        .then_some(()))
    })
    .await?;
    wait_for("IPv6 route in FRR JSON", T, || async {
        let v = tb.frr_json("show bgp ipv6 unicast json")?;
        Ok(v["routes"].get(prefix).cloned())
    })
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
