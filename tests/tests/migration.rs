//! Migrating from MetalLB on the testbed (docs/migrating-from-metallb.md): Services set up as
//! MetalLB leaves them (an address in status written by its controller, MetalLB's annotations,
//! `spec.loadBalancerIP`, a shared address), the MetalLB configuration they came from converted
//! by the real `ferrolb-operator convert --from-metallb`, FerroLB installed with the result: no
//! address moves and every one answers on the LAN. Also measured: how long after the config is
//! applied each address answers again.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use ferrolb_api::wiring::conditions::IP_ALLOCATED;
use ferrolb_testbed::ferrolb::{binary, install_timed, uninstall};
use ferrolb_testbed::harness::{Testbed, ingress_ips, netns_sh, unique_name, wait_for};
use ferrolb_testbed::workloads::{create_deployment, echo_container, wait_ready_pods};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(120);

/// The annotation MetalLB's controller writes on every Service it gives an address.
const METALLB_POOL: &str = "metallb.io/ip-allocated-from-pool";
/// The same, written by FerroLB's controller.
const FERROLB_POOL: &str = "ferrolb.io/ip-allocated-from-pool";

/// What MetalLB was configured with, as `kubectl get ipaddresspools,l2advertisements -n
/// metallb-system -o yaml` prints it: `lan` (auto-assign, 203.0.113.96/28) and `reserved`
/// (203.0.113.112/29, only for Services that name it), both announced with Layer 2. Both lie in
/// 203.0.113.0/25, which the testbed's client reaches on its LAN.
const METALLB_CONFIG: &str = r#"apiVersion: v1
items:
- apiVersion: metallb.io/v1beta1
  kind: IPAddressPool
  metadata:
    creationTimestamp: "2026-11-02T09:14:05Z"
    generation: 1
    name: lan
    namespace: metallb-system
    resourceVersion: "48113"
    uid: 5f0c3f52-2a8e-4d35-9a43-3d6b8c1e7a10
  spec:
    addresses:
    - 203.0.113.96/28
    autoAssign: true
    avoidBuggyIPs: false
  status: {}
- apiVersion: metallb.io/v1beta1
  kind: IPAddressPool
  metadata:
    creationTimestamp: "2026-11-02T09:14:05Z"
    generation: 1
    name: reserved
    namespace: metallb-system
    resourceVersion: "48114"
    uid: 0b9d7e61-93c4-4f0a-8d2e-6a1f5c7b2e44
  spec:
    addresses:
    - 203.0.113.112/29
    autoAssign: false
    avoidBuggyIPs: false
  status: {}
- apiVersion: metallb.io/v1beta1
  kind: L2Advertisement
  metadata:
    creationTimestamp: "2026-11-02T09:14:06Z"
    generation: 1
    name: lan
    namespace: metallb-system
    resourceVersion: "48120"
    uid: c2a4e8f0-1d37-4b69-a5e2-7f90d3b6c815
  spec:
    ipAddressPools:
    - lan
    - reserved
  status: {}
kind: List
metadata:
  resourceVersion: ""
"#;

/// One Service as MetalLB left it: what its owner wrote (annotations, spec fields, the port)
/// and what MetalLB's controller wrote (the address, in status, and the pool annotation).
struct Left {
    name: &'static str,
    annotations: Value,
    spec: Value,
    port: u16,
    ip: &'static str,
    pool: &'static str,
}

/// Every way a Service gets its address from MetalLB. None holds the first free address of its
/// pool (203.0.113.96 of `lan`, 203.0.113.112 of `reserved`), so a controller that ignored the
/// status would hand out others.
fn as_metallb_left_them() -> Vec<Left> {
    let lan = |name, ip| Left {
        name,
        annotations: json!({}),
        spec: json!({}),
        port: 80,
        ip,
        pool: "lan",
    };
    let share = json!({"metallb.universe.tf/allow-shared-ip": "web"});
    vec![
        // Auto-assigned: only the status and MetalLB's pool annotation say which address.
        lan("auto", "203.0.113.101"),
        Left {
            annotations: json!({"metallb.universe.tf/loadBalancerIPs": "203.0.113.103"}),
            ..lan("universe-ips", "203.0.113.103")
        },
        Left {
            annotations: json!({"metallb.io/loadBalancerIPs": "203.0.113.105"}),
            ..lan("io-ips", "203.0.113.105")
        },
        Left {
            spec: json!({"loadBalancerIP": "203.0.113.107"}),
            ..lan("spec-ip", "203.0.113.107")
        },
        Left {
            annotations: share.clone(),
            ..lan("shared-http", "203.0.113.109")
        },
        Left {
            annotations: share,
            port: 8081,
            ..lan("shared-alt", "203.0.113.109")
        },
        Left {
            annotations: json!({"metallb.universe.tf/address-pool": "reserved"}),
            pool: "reserved",
            ..lan("reserved", "203.0.113.115")
        },
    ]
}

/// The Service as its owner created it: in front of the `echo` pods, its one port to theirs.
fn service(s: &Left) -> anyhow::Result<Service> {
    let mut spec = json!({
        "type": "LoadBalancer",
        "selector": {"app": "echo"},
        "ports": [{"name": "http", "port": s.port, "targetPort": "http"}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), s.spec.as_object()) {
        spec.extend(extra.clone());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": s.name, "annotations": s.annotations},
        "spec": spec,
    }))?)
}

/// The controller's condition on a Service: (status, reason, message).
fn allocated(svc: &Service) -> Option<(String, String, String)> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == IP_ALLOCATED)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The first answer to `http://IP:PORT/` from the client namespace: from [`FirstAnswer::start`]
/// a thread curls it every 100 ms (each try up to 1 s, most of it waiting for ARP) until it
/// answers; dropping it stops the thread.
struct FirstAnswer {
    target: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<(Instant, String)>>>,
}

impl FirstAnswer {
    fn start(tb: &Testbed, ip: &str, port: u16) -> Self {
        let target = format!("{ip}:{port}");
        let url = format!("http://{target}/");
        let netns = tb.client_netns.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(body) = netns_sh(&netns, &["curl", "-sS", "-m", "1", &url]) {
                    return Some((Instant::now(), body));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            None
        });
        Self {
            target,
            stop,
            thread: Some(thread),
        }
    }

    /// When the first answer came and what it said, waiting up to `timeout` for it.
    async fn wait(mut self, timeout: Duration) -> anyhow::Result<(Instant, String)> {
        let thread = self.thread.take().context("waited twice")?;
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() {
            if Instant::now() > deadline {
                bail!("{} never answered within {timeout:?}", self.target);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        thread
            .join()
            .map_err(|_| anyhow!("the probe of {} panicked", self.target))?
            .ok_or_else(|| anyhow!("the probe of {} stopped", self.target))
    }
}

impl Drop for FirstAnswer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Issue 18's promise for a migration: every Service keeps exactly the address MetalLB gave it,
/// shared ones included, and answers again once FerroLB runs.
///
/// The pause measured here is FerroLB's part of the switch for Layer 2: from the config applied
/// (the operator already running, as the guide has it) to each address's first answer. MetalLB
/// is not on the testbed, so the part before (from MetalLB's speakers stopping until the admin
/// applies FerroLB's config) is not in it; a real switch adds that delay to these figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn metallb_services_keep_every_address_when_ferrolb_takes_over() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    // The world before the switch: no FerroLB controller or speaker (MetalLB's are gone too).
    uninstall(&tb);
    let ns = tb.namespace(&client, "migration").await?;
    create_deployment(
        &client,
        &ns.name,
        "echo",
        2,
        json!({"containers": [echo_container()]}),
    )
    .await?;
    wait_ready_pods(&client, &ns.name, "echo", 2).await?;

    // The Services, as their owners created them and MetalLB's controller then completed them.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let as_metallb = PatchParams {
        field_manager: Some("metallb-controller".to_owned()),
        ..PatchParams::default()
    };
    let left = as_metallb_left_them();
    for s in &left {
        services
            .create(&PostParams::default(), &service(s)?)
            .await?;
        let annotation = json!({"metadata": {"annotations": {METALLB_POOL: s.pool}}});
        services
            .patch(s.name, &as_metallb, &Patch::Merge(&annotation))
            .await?;
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": s.ip}]}}});
        services
            .patch_status(s.name, &as_metallb, &Patch::Merge(&status))
            .await?;
    }
    let mut before = BTreeMap::new();
    for s in &left {
        let svc = services.get(s.name).await?;
        ensure!(
            ingress_ips(&svc) == [s.ip],
            "{}: the status holds {:?}, not {}",
            s.name,
            ingress_ips(&svc),
            s.ip
        );
        ensure!(
            allocated(&svc).is_none(),
            "{}: a FerroLB controller saw it before the switch",
            s.name
        );
        before.insert(s.name, ingress_ips(&svc));
    }

    // MetalLB's configuration, converted by this build's converter.
    let file = std::env::temp_dir().join(format!("{}.yaml", unique_name("ftb-metallb")));
    std::fs::write(&file, METALLB_CONFIG)?;
    let converter = binary(&tb, "ferrolb-operator")?;
    let out = Command::new(&converter)
        .args(["convert", "--from-metallb", "-f"])
        .arg(&file)
        .output()
        .with_context(|| converter.display().to_string());
    let _ = std::fs::remove_file(&file);
    let out = out?;
    let findings = String::from_utf8_lossy(&out.stderr);
    eprintln!("ferrolb-operator convert --from-metallb:\n{findings}");
    ensure!(
        out.status.code() == Some(0),
        "the converter exited with {}: {findings}",
        out.status
    );
    let config = ferrolb_api::manifest::parse_config(&String::from_utf8_lossy(&out.stdout))?;
    let pools: Vec<_> = config
        .spec
        .address_pools
        .iter()
        .map(|p| (p.name.as_str(), p.addresses.clone(), p.auto_assign))
        .collect();
    ensure!(
        pools
            == [
                ("lan", vec!["203.0.113.96/28".to_owned()], true),
                ("reserved", vec!["203.0.113.112/29".to_owned()], false),
            ],
        "converted pools: {pools:?}"
    );

    // Probes of every address (and port) from the client, from before the config is applied.
    // The client forgets what it knew of them first, so only a node that answers ARP now counts.
    for s in &left {
        netns_sh(&tb.client_netns, &["ip", "neigh", "flush", "to", s.ip])?;
    }
    let probes: Vec<(&Left, FirstAnswer)> = left
        .iter()
        .map(|s| (s, FirstAnswer::start(&tb, s.ip, s.port)))
        .collect();
    let (_installed, applied) = install_timed(&tb, &client, serde_json::to_value(&config.spec)?)
        .await
        .context("installing FerroLB with the converted config")?;

    // FerroLB's controller has taken every Service over, each with the address it had.
    for s in &left {
        let (svc, (status, reason, message)) = wait_for(
            &format!("FerroLB's controller to decide on {}", s.name),
            T,
            || async {
                let svc = services.get(s.name).await?;
                Ok(allocated(&svc).map(|c| (svc, c)))
            },
        )
        .await?;
        ensure!(
            (status.as_str(), reason.as_str()) == ("True", "IPAllocated"),
            "{}: {status} {reason}: {message}",
            s.name
        );
        ensure!(
            message == format!("{} from pool {}", s.ip, s.pool),
            "{}: {message}",
            s.name
        );
        ensure!(
            svc.annotations().get(FERROLB_POOL).map(String::as_str) == Some(s.pool),
            "{}: {FERROLB_POOL} is {:?}",
            s.name,
            svc.annotations().get(FERROLB_POOL)
        );
        ensure!(
            ingress_ips(&svc) == before[s.name],
            "{} moved from {:?} to {:?}",
            s.name,
            before[s.name],
            ingress_ips(&svc)
        );
    }
    let http = ingress_ips(&services.get("shared-http").await?);
    let alt = ingress_ips(&services.get("shared-alt").await?);
    ensure!(http == alt, "the sharers split: {http:?} and {alt:?}");

    // Every address answers, from the echo pods of this test.
    let mut pauses = Vec::new();
    for (s, probe) in probes {
        let (at, body) = probe.wait(T).await?;
        ensure!(
            at > applied,
            "{}:{} answered before FerroLB's config was applied: {body}",
            s.ip,
            s.port
        );
        ensure!(
            body.contains(&format!("namespace={}", ns.name)),
            "{}:{} answered {body}",
            s.ip,
            s.port
        );
        eprintln!(
            "{} ({}:{}) first answered {:.2?} after the config was applied",
            s.name,
            s.ip,
            s.port,
            at - applied
        );
        pauses.push(at - applied);
    }
    pauses.sort();
    eprintln!(
        "Layer 2, FerroLB's part of the switch: config applied → first answer after {:.2?} (soonest) to {:.2?} (latest), over {} address:port pairs",
        pauses.first().copied().unwrap_or_default(),
        pauses.last().copied().unwrap_or_default(),
        pauses.len()
    );
    for s in left.iter().filter(|s| s.port == 80) {
        let body = tb.wait_answers(s.ip).await?;
        ensure!(
            body.contains(&format!("namespace={}", ns.name)),
            "{} answered {body}",
            s.ip
        );
    }
    ns.delete_and_wait(&client, T).await?;
    Ok(())
}
