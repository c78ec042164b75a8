//! kube-proxy for the testbed: nftables DNAT of Service load-balancer IPs (and cluster IPs) to the
//! ready endpoints of their EndpointSlices, in the node's network namespace.
//!
//! `externalTrafficPolicy: Local` uses only the endpoints on this node (traffic to a node without
//! one is dropped, and the client address is kept); `Cluster` uses all endpoints and SNATs to the
//! node address, as kube-proxy does.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::Instant;

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
///
/// Linear in the number of objects: the slices are indexed by their Service once, and the
/// Services (and each Service's slices) are taken in namespace/name order, so the output does not
/// depend on the order of the inputs (a watch cache has none).
pub fn ruleset<S, E>(node: &str, node_ip: &str, services: &[S], slices: &[E]) -> String
where
    S: Borrow<Service>,
    E: Borrow<EndpointSlice>,
{
    let v6 = node_ip.contains(':');
    let (fam, addr_type) = if v6 { ("ip6", "IPv6") } else { ("ip", "IPv4") };
    // (namespace, service name) -> its slices of this address family, in slice-name order
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices.iter().map(Borrow::borrow) {
        if s.address_type != addr_type {
            continue;
        }
        let (Some(ns), Some(name)) = (
            s.metadata.namespace.as_deref(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name")),
        ) else {
            continue;
        };
        by_service.entry((ns, name.as_str())).or_default().push(s);
    }
    for v in by_service.values_mut() {
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }
    let mut services: Vec<&Service> = services.iter().map(Borrow::borrow).collect();
    services.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let no_slices: Vec<&EndpointSlice> = Vec::new();
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
        let my_slices = by_service.get(&(ns, name)).unwrap_or(&no_slices);
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
            for sl in my_slices {
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

/// How long to collect further changes after the first one before rebuilding, and the least
/// time between two rebuilds (kube-proxy's minSyncPeriod is 1 s; the tests want it quicker).
const SYNC_DELAY: Duration = Duration::from_millis(250);

/// Mirror one resource into `writer` with a watch, waking `changed` after every change.
async fn mirror<K>(api: Api<K>, writer: reflector::store::Writer<K>, changed: &Notify, what: &str)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default())
            .modify(|o: &mut K| o.meta_mut().managed_fields = None),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                changed.notify_one();
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => tracing::warn!(error = %e, "watching {what}"),
        }
    }
}

/// Keep the node's nftables in sync with Services and EndpointSlices: watch both (as kube-proxy's
/// informers do) and rebuild the ruleset only after a change, coalescing the changes of
/// [`SYNC_DELAY`] and rebuilding at most once per [`SYNC_DELAY`].
pub async fn run(ctx: Arc<Ctx>) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let changed = Notify::new();
    let svcs = mirror(
        Api::<Service>::all(ctx.proxy_client.clone()),
        svc_writer,
        &changed,
        "services",
    );
    let slices = mirror(
        Api::<EndpointSlice>::all(ctx.proxy_client.clone()),
        slice_writer,
        &changed,
        "endpointslices",
    );
    let sync = async {
        // nothing to build from until both caches hold a full list
        if svc_store.wait_until_ready().await.is_err()
            || slice_store.wait_until_ready().await.is_err()
        {
            return;
        }
        let node_ip = ctx.args.node_ip.to_string();
        let mut last = String::new();
        let mut last_build: Option<Instant> = None;
        loop {
            if last_build.is_some() {
                changed.notified().await;
                // collect the changes that come with this one, and keep the rebuilds apart
                let mut at = Instant::now() + SYNC_DELAY;
                if let Some(t) = last_build {
                    at = at.max(t + SYNC_DELAY);
                }
                tokio::time::sleep_until(at).await;
            }
            last_build = Some(Instant::now());
            let (s, e) = (svc_store.state(), slice_store.state());
            let mut rules = ruleset(&ctx.args.node, &node_ip, &s, &e);
            if let Some(v6) = ctx.args.node_ipv6 {
                rules.push_str(&ruleset(&ctx.args.node, &v6.to_string(), &s, &e));
            }
            drop((s, e));
            if rules != last {
                match apply(&rules).await {
                    Ok(()) => {
                        tracing::debug!("nftables updated");
                        last = rules;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "nftables");
                        // try again after the next delay even without a change
                        changed.notify_one();
                    }
                }
            }
        }
    };
    tokio::join!(svcs, slices, sync);
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

    #[test]
    fn slices_go_to_their_own_service_whatever_the_input_order() {
        let mut other = svc("Cluster");
        other.metadata.name = Some("api".into());
        let mut other_slice = slice();
        other_slice.metadata.name = Some("api-x".into());
        other_slice
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("kubernetes.io/service-name".into(), "api".into());
        other_slice.endpoints.truncate(1);
        let a = ruleset(
            "node-1",
            "198.51.100.11",
            &[svc("Cluster"), other.clone()],
            &[slice(), other_slice.clone()],
        );
        let b = ruleset(
            "node-1",
            "198.51.100.11",
            &[other, svc("Cluster")],
            &[other_slice, slice()],
        );
        assert_eq!(a, b);
        // "api" sorts first: one endpoint; "web" has two ready ones
        let api = a.split("chain svc0 {").nth(1).unwrap_or("");
        assert!(api.contains("mod 1"), "{a}");
        let web = a.split("chain svc2 {").nth(1).unwrap_or("");
        assert!(web.contains("mod 2"), "{a}");
    }
}
