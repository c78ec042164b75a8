//! The controller converges on what the cluster holds, not on what it remembers writing: a
//! status changed by someone else is written over, and writes the API server refused for a
//! while are retried until every Service is right again, with no address moved.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrolb_testbed::ferrolb::install;
use ferrolb_testbed::harness::{Testbed, ingress_ips, replace_lb_config, repo_root, wait_for};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn lb_service(name: &str) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))?)
}

async fn wait_ips(api: &Api<Service>, name: &str) -> anyhow::Result<Vec<String>> {
    wait_for(&format!("an IP for {name}"), T, || async {
        let ips = ingress_ips(&api.get(name).await?);
        Ok((!ips.is_empty()).then_some(ips))
    })
    .await
}

async fn wait_exact_ips(api: &Api<Service>, name: &str, want: &[String]) -> anyhow::Result<()> {
    wait_for(&format!("{name} to show {want:?} again"), T, || async {
        let ips = ingress_ips(&api.get(name).await?);
        Ok((ips == want).then_some(()))
    })
    .await
}

/// Writes `status.loadBalancer` as someone other than the controller would.
async fn set_status_by_hand(api: &Api<Service>, name: &str, ingress: Value) -> anyhow::Result<()> {
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_status_changed_by_someone_else_is_written_over() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install(&tb, &client).await?;
    let ns = tb.namespace(&client, "converge").await?;
    replace_lb_config(
        &client,
        json!({"addressPools": [{"name": "a", "addresses": ["203.0.113.0/29"]}]}),
    )
    .await?;
    let api: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &lb_service("web")?)
        .await?;
    let ips = wait_ips(&api, "web").await?;

    // Cleared by hand: restored, with the same address.
    set_status_by_hand(&api, "web", json!(null)).await?;
    wait_exact_ips(&api, "web", &ips).await?;

    // Overwritten by "another load balancer": written over.
    set_status_by_hand(&api, "web", json!([{"ip": "203.0.113.250"}])).await?;
    wait_exact_ips(&api, "web", &ips).await?;

    // The pool annotation removed by hand comes back too.
    let patch = json!({"metadata": {"annotations": {"ferrolb.io/ip-allocated-from-pool": null}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for("the pool annotation to come back", T, || async {
        let svc = api.get("web").await?;
        let pool = svc
            .metadata
            .annotations
            .unwrap_or_default()
            .get("ferrolb.io/ip-allocated-from-pool")
            .cloned();
        Ok((pool.as_deref() == Some("a")).then_some(()))
    })
    .await?;
    ns.delete_and_wait(&client, T).await
}

/// Takes the controller's right to write Service status away; gives it back when dropped (also
/// by panic), from the committed manifest.
struct Revoked {
    tb: Testbed,
    restored: bool,
}

impl Revoked {
    async fn take(tb: &Testbed, client: &Client) -> anyhow::Result<Self> {
        let roles: Api<ClusterRole> = Api::all(client.clone());
        let mut role = roles.get("ferrolb-controller").await?;
        let rules = role.rules.get_or_insert_default();
        let before = rules.len();
        rules.retain(|r| {
            !r.resources
                .iter()
                .flatten()
                .any(|res| res == "services/status")
        });
        anyhow::ensure!(
            rules.len() < before,
            "the controller's role has no services/status rule"
        );
        roles
            .replace("ferrolb-controller", &PostParams::default(), &role)
            .await?;
        Ok(Self {
            tb: tb.clone(),
            restored: false,
        })
    }

    fn restore(&mut self) -> anyhow::Result<()> {
        let manifest = repo_root().join("config/operator/operand-cluster-roles.yaml");
        let out = self.tb.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &manifest.display().to_string(),
        ])?;
        anyhow::ensure!(
            out.status.success(),
            "restoring the controller's RBAC: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.restored = true;
        Ok(())
    }
}

impl Drop for Revoked {
    fn drop(&mut self) {
        if !self.restored {
            let _ = self.restore();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn writes_refused_for_a_while_land_once_allowed_and_no_address_moves() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install(&tb, &client).await?;
    let ns = tb.namespace(&client, "refused").await?;
    replace_lb_config(
        &client,
        json!({"addressPools": [{"name": "a", "addresses": ["203.0.113.0/28"]}]}),
    )
    .await?;
    let api: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();
    let mut before = BTreeMap::new();
    for name in ["old-0", "old-1", "old-2", "old-3"] {
        api.create(&pp, &lb_service(name)?).await?;
        before.insert(name, wait_ips(&api, name).await?);
    }

    let mut revoked = Revoked::take(&tb, &client).await?;
    // While the controller may not write: new Services wait, and two held ones are cleared.
    for name in ["new-0", "new-1", "new-2"] {
        api.create(&pp, &lb_service(name)?).await?;
    }
    for name in ["old-1", "old-3"] {
        set_status_by_hand(&api, name, json!(null)).await?;
    }
    // Long enough for several failed attempts and backoffs (the test proves the retries go on
    // after the API server says no, not just that the first write goes through).
    tokio::time::sleep(Duration::from_secs(8)).await;
    for name in ["new-0", "new-1", "new-2", "old-1", "old-3"] {
        let ips = ingress_ips(&api.get(name).await?);
        anyhow::ensure!(
            ips.is_empty(),
            "{name} got {ips:?} although the controller may not write status"
        );
    }
    revoked.restore()?;

    // Every held Service shows its address again, unmoved; the new ones get others.
    for (name, ips) in &before {
        wait_exact_ips(&api, name, ips).await?;
    }
    let held: Vec<String> = before.values().flatten().cloned().collect();
    let mut seen = held.clone();
    for name in ["new-0", "new-1", "new-2"] {
        let ips = wait_ips(&api, name).await?;
        for ip in &ips {
            anyhow::ensure!(!seen.contains(ip), "{name} got {ip}, which is taken");
            seen.push(ip.clone());
        }
    }
    // And it stays so (nothing flaps once the writes land).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, ips) in &before {
        anyhow::ensure!(&ingress_ips(&api.get(name).await?) == ips, "{name} moved");
    }
    ns.delete_and_wait(&client, T).await
}
