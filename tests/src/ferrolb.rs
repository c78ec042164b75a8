//! FerroLB on the testbed as an admin installs it: `kubectl apply -k config/default` (CRD, RBAC,
//! the controller Deployment and the speaker DaemonSet), plus the speakers' membership Secret.

use std::time::Duration;

use anyhow::bail;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::harness::{Testbed, pod_ready, repo_root, wait_for};

/// The namespace FerroLB runs in.
pub const SYSTEM: &str = "ferrolb-system";
/// Label selector of the controller pods.
pub const CONTROLLER_PODS: &str = "app.kubernetes.io/component=controller";
/// Label selector of the speaker pods.
pub const SPEAKER_PODS: &str = "app.kubernetes.io/component=speaker";

/// Removes FerroLB (config, controller, speakers) when dropped, even by panic, so later tests
/// never meet a running FerroLB. CRDs, RBAC and the Secret stay (cluster-scoped, harmless).
#[derive(Debug)]
pub struct Installed {
    tb: Testbed,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let tb = &self.tb;
        let _ = tb.kubectl(&["delete", "loadbalancerconfigs", "--all", "--wait=true"]);
        for what in ["deployment/ferrolb-controller", "daemonset/ferrolb-speaker"] {
            let _ = tb.kubectl(&[
                "delete",
                what,
                "-n",
                SYSTEM,
                "--ignore-not-found",
                "--wait=true",
            ]);
        }
        for selector in [CONTROLLER_PODS, SPEAKER_PODS] {
            let _ = tb.kubectl(&[
                "wait",
                "--for=delete",
                "pod",
                "-l",
                selector,
                "-n",
                SYSTEM,
                "--timeout=60s",
            ]);
        }
    }
}

/// Installs FerroLB from `config/default`, creates the membership Secret (a fresh random key)
/// unless it exists, and waits for both controller replicas, a controller leader and a ready
/// speaker on every node.
pub async fn install(tb: &Testbed, client: &Client) -> anyhow::Result<Installed> {
    // Services of an earlier test live until their namespace is gone; a new controller would
    // (rightly) serve them, so wait for a clean slate.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for(
        "earlier test namespaces to go",
        Duration::from_secs(120),
        || async {
            let left = namespaces
                .list(&ListParams::default().labels("testbed.ferrolb.io/test=true"))
                .await?
                .items
                .into_iter()
                .filter(|n| n.metadata.deletion_timestamp.is_some())
                .count();
            Ok((left == 0).then_some(()))
        },
    )
    .await?;
    let kustomize = repo_root().join("config/default");
    let out = tb.kubectl(&[
        "apply",
        "--server-side",
        "-k",
        &kustomize.display().to_string(),
    ])?;
    if !out.status.success() {
        bail!(
            "kubectl apply -k config/default: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let installed = Installed { tb: tb.clone() };
    ensure_membership_secret(client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let nodes = tb.node_names.len();
    wait_for(
        &format!("2 ready controllers and {nodes} ready speakers"),
        Duration::from_secs(120),
        || async {
            let ready = |selector: &'static str| {
                let pods = pods.clone();
                async move {
                    let list = pods.list(&ListParams::default().labels(selector)).await?;
                    anyhow::Ok(
                        list.items
                            .iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
                            .count(),
                    )
                }
            };
            let (controllers, speakers) =
                (ready(CONTROLLER_PODS).await?, ready(SPEAKER_PODS).await?);
            Ok((controllers == 2 && speakers == nodes).then_some(()))
        },
    )
    .await?;
    controller_leader(client).await?;
    Ok(installed)
}

/// Creates the Secret `ferrolb-memberlist` with a random key, unless it exists.
pub async fn ensure_membership_secret(client: &Client) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM);
    if secrets.get_opt("ferrolb-memberlist").await?.is_some() {
        return Ok(());
    }
    let mut key = [0u8; 32];
    getrandom(&mut key)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "ferrolb-memberlist", "namespace": SYSTEM},
        "stringData": {"key": hex},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    Ok(())
}

fn getrandom(buf: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)?;
    Ok(())
}

/// The pod name holding the controller Lease.
pub async fn controller_leader(client: &Client) -> anyhow::Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    wait_for("a controller leader", Duration::from_secs(60), || async {
        Ok(leases
            .get_opt("ferrolb-controller")
            .await?
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty()))
    })
    .await
}
