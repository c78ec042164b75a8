//! The operator on the testbed, installed as an admin would (`kubectl apply -k config/operator`)
//! and running from its own ServiceAccount: one LoadBalancerConfig deploys everything, says so in
//! status, repairs drift, keeps the running operands on a bad config, and deleting the config
//! removes every object it created.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use ferrolb_testbed::harness::{Testbed, ingress_ips, pod_ready, repo_root, wait_for};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const MANAGED: &str = "app.kubernetes.io/managed-by=ferrolb-operator";

/// The operator's install; removed when dropped (also by panic), after any config.
struct OperatorInstall {
    tb: Testbed,
}

impl OperatorInstall {
    fn apply(tb: &Testbed) -> anyhow::Result<Self> {
        let dir = repo_root().join("config/operator");
        let out = tb.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            &dir.display().to_string(),
        ])?;
        if !out.status.success() {
            bail!(
                "kubectl apply -k config/operator: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self { tb: tb.clone() })
    }
}

impl Drop for OperatorInstall {
    fn drop(&mut self) {
        let tb = &self.tb;
        let _ = tb.kubectl(&[
            "delete",
            "loadbalancerconfigs",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ]);
        let _ = tb.kubectl(&[
            "delete",
            "deployment/ferrolb-operator",
            "-n",
            "ferrolb-system",
            "--ignore-not-found",
            "--wait=true",
        ]);
        let _ = tb.kubectl(&[
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app.kubernetes.io/component=operator",
            "-n",
            "ferrolb-system",
            "--timeout=60s",
        ]);
    }
}

async fn managed<K>(client: &Client) -> anyhow::Result<Vec<String>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default().labels(MANAGED))
        .await?
        .items
        .into_iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| {
            format!(
                "{}/{}/{}",
                K::kind(&()),
                o.namespace().unwrap_or_default(),
                o.name_any()
            )
        })
        .collect())
}

/// Every object of every kind the operator writes, cluster-wide.
async fn everything_managed(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut all = managed::<Namespace>(client).await?;
    all.extend(managed::<ServiceAccount>(client).await?);
    all.extend(managed::<Secret>(client).await?);
    all.extend(managed::<ClusterRoleBinding>(client).await?);
    all.extend(managed::<Role>(client).await?);
    all.extend(managed::<RoleBinding>(client).await?);
    all.extend(managed::<Deployment>(client).await?);
    all.extend(managed::<DaemonSet>(client).await?);
    Ok(all)
}

fn condition(tb: &Testbed, type_: &str) -> anyhow::Result<(String, String, String)> {
    let out = tb.kubectl(&[
        "get", "lbc", "ferrolb", "-o",
        &format!("jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}}|{{.status.conditions[?(@.type==\"{type_}\")].reason}}|{{.status.conditions[?(@.type==\"{type_}\")].message}}"),
    ])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.splitn(3, '|');
    Ok((
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn one_config_deploys_everything_repairs_drift_and_uninstalls_cleanly() -> anyhow::Result<()>
{
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _install = OperatorInstall::apply(&tb)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ferrolb-system");
    wait_for("2 ready operator replicas", T, || async {
        let ready = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
            .await?
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
            .count();
        Ok((ready == 2).then_some(()))
    })
    .await?;

    // The membership key is the operator's to create: a Secret an earlier test made by hand
    // (which the operator would rightly leave alone) goes first.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ferrolb-system");
    if secrets.get_opt("ferrolb-memberlist").await?.is_some() {
        secrets
            .delete("ferrolb-memberlist", &DeleteParams::default())
            .await?;
    }

    // One config, the Layer 2 sample's shape: the operator deploys the rest.
    let configs: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    let config: ferrolb_api::LoadBalancerConfig = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1alpha1", "kind": "LoadBalancerConfig",
        "metadata": {"name": "ferrolb"},
        "spec": {
            "addressPools": [{"name": "lan", "addresses": ["198.51.100.200-198.51.100.209"]}],
            "l2Advertisements": [{"name": "lan", "addressPools": ["lan"]}],
        },
    }))?;
    let applied = Instant::now();
    configs.create(&PostParams::default(), &config).await?;
    let out = tb.kubectl(&[
        "wait",
        "--for=condition=Available",
        "lbc/ferrolb",
        "--timeout=120s",
    ])?;
    ensure!(
        out.status.success(),
        "never Available: {:?}",
        condition(&tb, "Available")?
    );
    eprintln!("applied → Available=True in {:?}", applied.elapsed());
    let found = everything_managed(&client).await?;
    for want in [
        "DaemonSet/ferrolb-system/ferrolb-speaker",
        "Deployment/ferrolb-system/ferrolb-controller",
        "Secret/ferrolb-system/ferrolb-memberlist",
        "ClusterRoleBinding//ferrolb-controller",
        "ClusterRoleBinding//ferrolb-speaker",
    ] {
        ensure!(
            found.iter().any(|f| f == want),
            "{want} missing from {found:?}"
        );
    }
    let (status, reason, message) = condition(&tb, "Progressing")?;
    ensure!(status == "False", "still progressing: {reason} {message}");

    // The operands work: a Service gets an address from the pool.
    let ns = tb.namespace(&client, "operated").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))?;
    services.create(&PostParams::default(), &svc).await?;
    let ip = wait_for("an IP for web", T, || async {
        let ips = ingress_ips(&services.get("web").await?);
        Ok(ips.first().cloned())
    })
    .await?;
    ensure!(ip.starts_with("198.51.100.20"), "{ip}");

    // Drift: a DaemonSet deleted by hand comes back within seconds.
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), "ferrolb-system");
    let before = daemonsets.get("ferrolb-speaker").await?.uid();
    daemonsets
        .delete("ferrolb-speaker", &DeleteParams::foreground())
        .await?;
    let restored = Instant::now();
    wait_for(
        "the speaker DaemonSet restored",
        Duration::from_secs(30),
        || async {
            Ok(daemonsets
                .get_opt("ferrolb-speaker")
                .await?
                .filter(|d| d.uid() != before && d.metadata.deletion_timestamp.is_none())
                .map(|_| ()))
        },
    )
    .await?;
    eprintln!("deleted DaemonSet restored in {:?}", restored.elapsed());

    // A config the validator rejects changes nothing that runs and says why.
    let generation = daemonsets.get("ferrolb-speaker").await?.metadata.generation;
    let mut bad = configs.get("ferrolb").await?;
    bad.spec.address_pools[0].addresses = vec!["198.51.100.200-198.51.100.199".into()];
    bad.spec.speaker.exclude_interfaces = vec!["^never$".into()];
    configs
        .replace("ferrolb", &PostParams::default(), &bad)
        .await?;
    let (_, reason, message) = wait_for("ConfigValid=False", T, || async {
        let c = condition(&tb, "ConfigValid")?;
        Ok((c.0 == "False").then_some(c))
    })
    .await?;
    ensure!(reason == "InvalidConfig", "{reason}");
    ensure!(
        message.contains("spec.addressPools[0].addresses[0]"),
        "{message}"
    );
    ensure!(condition(&tb, "Degraded")?.0 == "True");
    ensure!(
        daemonsets.get("ferrolb-speaker").await?.metadata.generation == generation,
        "the speaker DaemonSet changed for a rejected config"
    );
    ensure!(
        ingress_ips(&services.get("web").await?) == [ip.clone()],
        "the Service's address moved"
    );
    ns.delete_and_wait(&client, T).await?;

    // Uninstall: deleting the config removes every object the operator wrote.
    configs.delete("ferrolb", &DeleteParams::default()).await?;
    wait_for("every operand gone", T, || async {
        let left = everything_managed(&client).await?;
        Ok(left.is_empty().then_some(()))
    })
    .await?;
    wait_for("the config gone (finalizer removed)", T, || async {
        Ok(configs.get_opt("ferrolb").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}
