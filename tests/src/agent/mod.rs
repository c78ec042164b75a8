//! The node agent: a small kubelet + kube-proxy for the testbed.
//!
//! One agent runs inside each node network namespace. It registers its Node (InternalIP = the
//! namespace's addresses, kubelet-like labels), keeps it Ready with status updates and Lease
//! heartbeats, runs every pod bound to the node as real processes ([`pod`]), routes the pod CIDRs
//! of the other nodes, and programs nftables like kube-proxy does ([`proxy`]).

pub mod kubelet;
pub mod pod;
pub mod proxy;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// Command-line arguments of `ferrolb-testbed node-agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Node name.
    #[arg(long)]
    pub node: String,
    /// The node's IPv4 address (InternalIP).
    #[arg(long)]
    pub node_ip: Ipv4Addr,
    /// The node's IPv6 address (second InternalIP).
    #[arg(long)]
    pub node_ipv6: Option<Ipv6Addr>,
    /// Kubeconfig of the node (user `system:node:NAME` in group `system:nodes`, so the Node
    /// authorizer and NodeRestriction apply as to a kubelet); an address reachable from the node
    /// namespace.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Kubeconfig for the kube-proxy part (user `system:kube-proxy`); defaults to `--kubeconfig`.
    #[arg(long)]
    pub proxy_kubeconfig: Option<PathBuf>,
    /// Run directory of the testbed; pods live in RUN/nodes/NODE/pods/UID.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// Prefix of every network namespace name of this testbed run (pod namespaces: PREFIX-pXXXXXXXX).
    #[arg(long)]
    pub netns_prefix: String,
    /// API server address given to pods (KUBERNETES_SERVICE_HOST).
    #[arg(long)]
    pub api_host: String,
    /// API server port given to pods (KUBERNETES_SERVICE_PORT).
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,
    /// Cluster CA certificate.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// Directory with the binaries built from this workspace (ferrolb-operator, ...).
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// Serving certificate and key of the kubelet API (port 10250, `kubectl logs`); without
    /// them the API is not served.
    #[arg(long, requires = "kubelet_key")]
    pub kubelet_cert: Option<PathBuf>,
    #[arg(long)]
    pub kubelet_key: Option<PathBuf>,
    /// How often projected tokens and ConfigMap/Secret volumes are rewritten (the kubelet: ~60 s).
    #[arg(long, default_value_t = 60)]
    pub volume_refresh_seconds: u64,
    /// The testbed binary itself (runs the built-in `echo` image).
    #[arg(long)]
    pub self_exe: Option<PathBuf>,
}

/// Shared state of one agent.
pub struct Ctx {
    pub args: AgentArgs,
    /// The node's client (kubelet identity).
    pub client: Client,
    /// The kube-proxy client (lists Services, EndpointSlices and Nodes).
    pub proxy_client: Client,
    pub self_exe: PathBuf,
    pub pods_dir: PathBuf,
    /// Pod CIDR base and prefix length, once kube-controller-manager allocated it.
    pub pod_cidr: Mutex<Option<(Ipv4Addr, u8)>>,
    /// IPv6 pod CIDR, when the cluster is dual-stack.
    pub pod_cidr6: Mutex<Option<(Ipv6Addr, u8)>>,
    /// IPs in use by pods of this node.
    pub used_ips: Mutex<Vec<Ipv4Addr>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("node", &self.args.node)
            .finish_non_exhaustive()
    }
}

/// Build a client from a kubeconfig file.
pub async fn client_from(path: &std::path::Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("read {}", path.display()))?;
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now().to_string())
}

/// RFC 3339 with exactly six fractional digits (the API server's MicroTime format).
fn now_micro() -> String {
    let us = k8s_openapi::jiff::Timestamp::now().as_microsecond();
    let (secs, frac) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
    let base = k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default();
    format!("{}.{frac:06}Z", base.trim_end_matches('Z'))
}

/// Run the agent until SIGTERM/SIGINT; then stop every pod process and remove pod namespaces.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let client = client_from(&args.kubeconfig).await?;
    let proxy_client = match &args.proxy_kubeconfig {
        Some(p) => client_from(p).await?,
        None => client.clone(),
    };
    let self_exe = match &args.self_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let pods_dir = args.run_dir.join("nodes").join(&args.node).join("pods");
    std::fs::create_dir_all(&pods_dir)?;
    let ctx = Arc::new(Ctx {
        args,
        client,
        proxy_client,
        self_exe,
        pods_dir,
        pod_cidr: Mutex::new(None),
        pod_cidr6: Mutex::new(None),
        used_ips: Mutex::new(Vec::new()),
    });
    register(&ctx).await?;
    let hb = tokio::spawn(heartbeat(ctx.clone()));
    let px = tokio::spawn(proxy::run(ctx.clone()));
    let kl = match (&ctx.args.kubelet_cert, &ctx.args.kubelet_key) {
        (Some(c), Some(k)) => {
            let (c, k, ca, pods) = (
                c.clone(),
                k.clone(),
                ctx.args.ca_file.clone(),
                ctx.pods_dir.clone(),
            );
            Some(tokio::spawn(async move {
                if let Err(e) = kubelet::serve(c, k, ca, pods).await {
                    tracing::warn!(error = %format!("{e:#}"), "kubelet API stopped");
                }
            }))
        }
        _ => None,
    };
    let mut workers: HashMap<String, (watch::Sender<Option<Pod>>, JoinHandle<()>)> = HashMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", ctx.args.node));
    let mut tick = tokio::time::interval(Duration::from_millis(700));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        if ctx.pod_cidr.lock().await.is_none() {
            continue;
        }
        let list = match pods.list(&lp).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing pods");
                continue;
            }
        };
        let mut seen = Vec::new();
        for p in list.items {
            let Some(uid) = p.metadata.uid.clone() else {
                continue;
            };
            seen.push(uid.clone());
            match workers.get(&uid) {
                Some((tx, _)) => {
                    let _ = tx.send(Some(p));
                }
                None => {
                    let (tx, rx) = watch::channel(Some(p));
                    let h = tokio::spawn(pod::worker(ctx.clone(), rx));
                    workers.insert(uid, (tx, h));
                }
            }
        }
        for (uid, (tx, _)) in workers.iter() {
            if !seen.contains(uid) {
                let _ = tx.send(None);
            }
        }
        workers.retain(|_, (_, h)| !h.is_finished());
    }
    tracing::info!("stopping: terminating all pods");
    hb.abort();
    px.abort();
    if let Some(kl) = kl {
        kl.abort();
    }
    for (_, (tx, _)) in workers.iter() {
        let _ = tx.send(None);
    }
    for (_, (_, h)) in workers.drain() {
        let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
    }
    proxy::flush().await;
    Ok(())
}

fn node_status(args: &AgentArgs, since: &str) -> serde_json::Value {
    let t = now();
    let cond = |ty: &str, st: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": st, "reason": reason, "message": msg,
               "lastHeartbeatTime": t, "lastTransitionTime": since})
    };
    let mut addresses = vec![json!({"type": "InternalIP", "address": args.node_ip.to_string()})];
    if let Some(v6) = args.node_ipv6 {
        addresses.push(json!({"type": "InternalIP", "address": v6.to_string()}));
    }
    addresses.push(json!({"type": "Hostname", "address": args.node}));
    let res = json!({"cpu": "2", "memory": "8Gi", "pods": "30", "ephemeral-storage": "10Gi"});
    json!({"status": {
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "testbed node agent"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "testbed node agent"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "testbed node agent"),
            cond("Ready", "True", "KubeletReady", "ferrolb-testbed node agent is posting ready status"),
        ],
        "addresses": addresses,
        "capacity": res,
        "allocatable": res,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "ferrolb-testbed://0.1",
            "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "v1.34.4",
            "machineID": "", "operatingSystem": "linux", "osImage": "ferrolb-testbed netns node",
            "systemUUID": ""
        }
    }})
}

async fn register(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let a = &ctx.args;
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": a.node,
            "labels": {
                "kubernetes.io/hostname": a.node,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "ferrolb-testbed"
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "testbed.ferrolb.io/netns": format!("{}-n{}", a.netns_prefix, a.node.trim_start_matches("node-"))
            }
        }
    }))?;
    loop {
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 409 => break,
            Err(e) => {
                tracing::warn!(error = %e, "creating node (retrying)");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let since = now();
    nodes
        .patch_status(
            &a.node,
            &PatchParams::default(),
            &Patch::Merge(node_status(a, &since)),
        )
        .await?;
    tracing::info!(node = %a.node, "node registered");
    Ok(())
}

async fn heartbeat(ctx: Arc<Ctx>) {
    let a = &ctx.args;
    let since = now();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    // a node may only read its own Node object; the other nodes' pod CIDRs come via kube-proxy's identity
    let all_nodes: Api<Node> = Api::all(ctx.proxy_client.clone());
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let mut n = 0u64;
    loop {
        // Lease every 2 s, status every 10 s.
        if let Err(e) = renew_lease(&leases, &nodes, a).await {
            tracing::warn!(error = %e, "lease");
        }
        if n.is_multiple_of(5)
            && let Err(e) = nodes
                .patch_status(
                    &a.node,
                    &PatchParams::default(),
                    &Patch::Merge(node_status(a, &since)),
                )
                .await
        {
            tracing::warn!(error = %e, "node status");
        }
        if let Err(e) = sync_node_routes(&ctx, &all_nodes).await {
            tracing::warn!(error = %e, "node routes");
        }
        n += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn renew_lease(leases: &Api<Lease>, nodes: &Api<Node>, a: &AgentArgs) -> anyhow::Result<()> {
    let spec =
        json!({"holderIdentity": a.node, "leaseDurationSeconds": 40, "renewTime": now_micro()});
    if leases.get_opt(&a.node).await?.is_some() {
        leases
            .patch(
                &a.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await?;
        return Ok(());
    }
    let node = nodes.get(&a.node).await?;
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": a.node, "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": a.node,
                                 "uid": node.metadata.uid.unwrap_or_default()}]},
        "spec": spec
    }))?;
    leases.create(&PostParams::default(), &lease).await?;
    Ok(())
}

/// Learn this node's pod CIDRs (IPv4 and IPv6) and route the other nodes' pod CIDRs via their
/// InternalIP of the same family.
async fn sync_node_routes(ctx: &Arc<Ctx>, nodes: &Api<Node>) -> anyhow::Result<()> {
    for n in nodes.list(&ListParams::default()).await?.items {
        let name = n.metadata.name.clone().unwrap_or_default();
        let spec = n.spec.clone().unwrap_or_default();
        let mut cidrs = spec.pod_cidrs.clone().unwrap_or_default();
        if cidrs.is_empty() {
            cidrs.extend(spec.pod_cidr.clone());
        }
        if cidrs.is_empty() {
            continue;
        }
        if name == ctx.args.node {
            let mut mine = ctx.pod_cidr.lock().await;
            let mut mine6 = ctx.pod_cidr6.lock().await;
            for cidr in &cidrs {
                let Some((ip, len)) = cidr.split_once('/') else {
                    continue;
                };
                let Ok(len) = len.parse::<u8>() else { continue };
                if let Ok(ip) = ip.parse::<Ipv4Addr>()
                    && mine.is_none()
                {
                    tracing::info!(%cidr, "pod CIDR allocated");
                    *mine = Some((ip, len));
                }
                if let Ok(ip) = ip.parse::<Ipv6Addr>()
                    && mine6.is_none()
                {
                    tracing::info!(%cidr, "IPv6 pod CIDR allocated");
                    *mine6 = Some((ip, len));
                }
            }
            continue;
        }
        let addrs: Vec<String> = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .collect();
        for cidr in &cidrs {
            let v6 = cidr.contains(':');
            let Some(via) = addrs.iter().find(|a| a.contains(':') == v6) else {
                continue;
            };
            let fam = if v6 { "-6" } else { "-4" };
            let _ = sh(
                "ip",
                &[fam, "route", "replace", cidr, "via", via, "dev", "eth0"],
            )
            .await;
        }
    }
    Ok(())
}

/// Run a command, return its stdout; error with stderr when it fails.
pub async fn sh(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn micro_time_has_six_fraction_digits() {
        let t = super::now_micro();
        let frac = t.rsplit('.').next().unwrap_or("");
        assert_eq!(frac.len(), 7, "{t}");
        assert!(frac.ends_with('Z'), "{t}");
    }
}
