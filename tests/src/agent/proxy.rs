//! kube-proxy for the testbed: nftables DNAT of Service load-balancer IPs (and cluster IPs) to the
//! ready endpoints of their EndpointSlices, in the node's network namespace.
//!
//! `externalTrafficPolicy: Local` uses only the endpoints on this node (traffic to a node without
//! one is dropped, and the client address is kept); `Cluster` uses all endpoints and SNATs to the
//! node address, as kube-proxy does.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use tokio::io::AsyncWriteExt;

use super::Ctx;

const TABLE: &str = "ferrolb_testbed";

#[derive(Debug, Clone, PartialEq)]
struct Backend {
    ip: String,
    port: i32,
    local: bool,
}

#[derive(Debug)]
struct Rule {
    daddr: String,
    proto: String,
    port: i32,
    backends: Vec<Backend>,
    masquerade: bool,
}

/// Compute the nftables table for the given services and slices on node `node` (pure, tested).
/// The family follows `node_ip`: table `ip` for an IPv4 address, `ip6` for an IPv6 one.
pub fn ruleset(
    node: &str,
    node_ip: &str,
    services: &[Service],
    slices: &[EndpointSlice],
) -> String {
    let v6 = node_ip.contains(':');
    let (fam, addr_type) = if v6 { ("ip6", "IPv6") } else { ("ip", "IPv4") };
    let mut rules = Vec::new();
    for svc in services {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let local_ext = spec.external_traffic_policy.as_deref() == Some("Local");
        let local_int = spec.internal_traffic_policy.as_deref() == Some("Local");
        let mut ext_ips: Vec<String> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        ext_ips.extend(spec.external_ips.clone().unwrap_or_default());
        let mut int_ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        if int_ips.is_empty() {
            int_ips.extend(spec.cluster_ip.clone());
        }
        let my_slices: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.address_type == addr_type
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .map(String::as_str)
                        == Some(name)
            })
            .collect();
        for sp in spec.ports.clone().unwrap_or_default() {
            let proto = sp
                .protocol
                .clone()
                .unwrap_or_else(|| "TCP".into())
                .to_lowercase();
            if proto != "tcp" && proto != "udp" {
                continue;
            }
            let mut backends = Vec::new();
            for sl in &my_slices {
                let Some(port) = sl.ports.as_ref().and_then(|ps| {
                    ps.iter()
                        .find(|p| {
                            p.name.as_deref().unwrap_or("") == sp.name.as_deref().unwrap_or("")
                        })
                        .and_then(|p| p.port)
                }) else {
                    continue;
                };
                for ep in &sl.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    let local = ep.node_name.as_deref() == Some(node);
                    for ip in &ep.addresses {
                        let b = Backend {
                            ip: ip.clone(),
                            port,
                            local,
                        };
                        if !backends.contains(&b) {
                            backends.push(b);
                        }
                    }
                }
            }
            for (ips, local_only) in [(&ext_ips, local_ext), (&int_ips, local_int)] {
                for ip in ips.iter() {
                    if ip.parse::<std::net::IpAddr>().map(|a| a.is_ipv6()) != Ok(v6) {
                        continue;
                    }
                    let bs: Vec<Backend> = backends
                        .iter()
                        .filter(|b| !local_only || b.local)
                        .cloned()
                        .collect();
                    rules.push(Rule {
                        daddr: ip.clone(),
                        proto: proto.clone(),
                        port: sp.port,
                        backends: bs,
                        masquerade: !local_only,
                    });
                }
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "table {fam} {TABLE} {{");
    let _ = writeln!(
        out,
        "  chain prerouting {{ type nat hook prerouting priority -100; policy accept; jump services; }}"
    );
    let _ = writeln!(
        out,
        "  chain output {{ type nat hook output priority -100; policy accept; jump services; }}"
    );
    let _ = writeln!(
        out,
        "  chain postrouting {{ type nat hook postrouting priority 100; policy accept; meta mark & 0x4000 == 0x4000 snat to {node_ip}; }}"
    );
    let mut svc_chains = String::new();
    let _ = writeln!(out, "  chain services {{");
    for (i, r) in rules.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {fam} daddr {} {} dport {} jump svc{i}",
            r.daddr, r.proto, r.port
        );
        let _ = writeln!(svc_chains, "  chain svc{i} {{");
        if r.backends.is_empty() {
            // no (local) endpoint: drop, as kube-proxy does for Local; reject would also do for Cluster
            let _ = writeln!(svc_chains, "    drop");
        } else {
            if r.masquerade {
                let _ = writeln!(svc_chains, "    meta mark set meta mark | 0x4000");
            }
            let map: Vec<String> = (0..r.backends.len())
                .map(|j| format!("{j} : jump svc{i}ep{j}"))
                .collect();
            let _ = writeln!(
                svc_chains,
                "    numgen random mod {} vmap {{ {} }}",
                r.backends.len(),
                map.join(", ")
            );
        }
        let _ = writeln!(svc_chains, "  }}");
        for (j, b) in r.backends.iter().enumerate() {
            let _ = writeln!(
                svc_chains,
                "  chain svc{i}ep{j} {{ meta l4proto {} dnat to {}:{}; }}",
                r.proto,
                if v6 {
                    format!("[{}]", b.ip)
                } else {
                    b.ip.clone()
                },
                b.port
            );
        }
    }
    let _ = writeln!(out, "  }}");
    out.push_str(&svc_chains);
    let _ = writeln!(out, "}}");
    out
}

async fn apply(rules: &str) -> anyhow::Result<()> {
    let script = format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip6 {TABLE}\ndelete table ip6 {TABLE}\n{rules}"
    );
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        anyhow::bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Remove the table (agent shutdown).
pub async fn flush() {
    let _ = super::sh("nft", &["delete", "table", "ip", TABLE]).await;
    let _ = super::sh("nft", &["delete", "table", "ip6", TABLE]).await;
}

/// Keep the node's nftables in sync with Services and EndpointSlices.
pub async fn run(ctx: Arc<Ctx>) {
    let svcs: Api<Service> = Api::all(ctx.proxy_client.clone());
    let slices: Api<EndpointSlice> = Api::all(ctx.proxy_client.clone());
    let node_ip = ctx.args.node_ip.to_string();
    let mut last = String::new();
    loop {
        match (
            svcs.list(&ListParams::default()).await,
            slices.list(&ListParams::default()).await,
        ) {
            (Ok(s), Ok(e)) => {
                let mut rules = ruleset(&ctx.args.node, &node_ip, &s.items, &e.items);
                if let Some(v6) = ctx.args.node_ipv6 {
                    rules.push_str(&ruleset(
                        &ctx.args.node,
                        &v6.to_string(),
                        &s.items,
                        &e.items,
                    ));
                }
                if rules != last {
                    match apply(&rules).await {
                        Ok(()) => {
                            tracing::debug!("nftables updated");
                            last = rules;
                        }
                        Err(e) => tracing::warn!(error = %e, "nftables"),
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "listing services"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(policy: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "clusterIP": "10.96.0.10",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
        }))
        .unwrap()
    }

    fn slice() -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["198.51.100.129"], "nodeName": "node-1", "conditions": {"ready": true}},
                {"addresses": ["198.51.100.161"], "nodeName": "node-2", "conditions": {"ready": true}},
                {"addresses": ["198.51.100.162"], "nodeName": "node-2", "conditions": {"ready": false}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn cluster_uses_all_ready_endpoints_and_snats() {
        let r = ruleset("node-1", "198.51.100.11", &[svc("Cluster")], &[slice()]);
        assert!(
            r.contains("ip daddr 203.0.113.10 tcp dport 80 jump svc0"),
            "{r}"
        );
        assert!(r.contains("dnat to 198.51.100.129:8080"), "{r}");
        assert!(r.contains("dnat to 198.51.100.161:8080"), "{r}");
        assert!(!r.contains("198.51.100.162"), "not ready: {r}");
        assert!(r.contains("meta mark set meta mark | 0x4000"), "{r}");
    }

    #[test]
    fn local_uses_only_local_endpoints_or_drops() {
        let r1 = ruleset("node-1", "198.51.100.11", &[svc("Local")], &[slice()]);
        let lb_chain = r1.split("chain svc0 {").nth(1).unwrap_or("");
        let lb_chain = lb_chain.split('}').next().unwrap_or("");
        assert!(lb_chain.contains("mod 1"), "{r1}");
        assert!(
            !lb_chain.contains("0x4000"),
            "Local keeps the client address: {r1}"
        );
        let r3 = ruleset("node-3", "198.51.100.13", &[svc("Local")], &[slice()]);
        let lb_chain = r3.split("chain svc0 {").nth(1).unwrap_or("");
        assert!(lb_chain.trim_start().starts_with("drop"), "{r3}");
    }
}
