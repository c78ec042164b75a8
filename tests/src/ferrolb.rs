//! FerroLB on the testbed as an admin installs it: `kubectl apply --server-side -k config/default`
//! (the CRD, the operator, its admission webhook and the operands' cluster roles), then one
//! LoadBalancerConfig, from which the operator deploys the controller, the speakers and their
//! membership Secret.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodTemplateSpec};
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::harness::{
    ArpReport, ClientProbes, ProbeReport, Testbed, pod_ready, replace_lb_config, repo_root,
    wait_for,
};

/// The namespace FerroLB runs in.
pub const SYSTEM: &str = "ferrolb-system";
/// Label selector of the operator pods.
pub const OPERATOR_PODS: &str = "app.kubernetes.io/component=operator";
/// Label selector of the controller pods.
pub const CONTROLLER_PODS: &str = "app.kubernetes.io/component=controller";
/// Label selector of the speaker pods.
pub const SPEAKER_PODS: &str = "app.kubernetes.io/component=speaker";

/// A FerroLB binary of this build, as the testbed built it for its images
/// (`$TESTBED_FERROLB_BIN`), e.g. `ferrolb-operator` to run its `validate` or `convert`.
pub fn binary(tb: &Testbed, name: &str) -> anyhow::Result<PathBuf> {
    Ok(PathBuf::from(
        tb.var("TESTBED_FERROLB_BIN")
            .context("TESTBED_FERROLB_BIN")?,
    )
    .join(name))
}

/// The operand image `config/default` gives the operator (this build's version).
pub fn committed_image() -> String {
    format!("ghcr.io/ferrolb/ferrolb:v{}", env!("CARGO_PKG_VERSION"))
}

/// How long the operator may take to deploy (or remove) every operand.
const T: Duration = Duration::from_secs(120);

/// Removes FerroLB's operands when dropped, even by panic, so later tests never meet a running
/// FerroLB: deletes the config (the operator removes everything it created) and waits for the
/// operand pods to go. The operator, its RBAC and the CRD stay for the next test.
#[derive(Debug)]
pub struct Installed {
    tb: Testbed,
}

impl Drop for Installed {
    fn drop(&mut self) {
        uninstall(&self.tb);
    }
}

/// Deletes every LoadBalancerConfig and waits for the controller and speaker pods to be gone.
pub fn uninstall(tb: &Testbed) {
    let _ = tb.kubectl(&[
        "delete",
        "loadbalancerconfigs",
        "--all",
        "--wait=true",
        "--timeout=120s",
    ]);
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

/// Installs FerroLB with an empty config (no pools yet; tests set theirs with
/// [`replace_lb_config`]) and waits until the operator reports it Available and a controller
/// leads.
pub async fn install(tb: &Testbed, client: &Client) -> anyhow::Result<Installed> {
    install_with(tb, client, json!({})).await
}

/// Applies `config/default`, makes the config `ferrolb` exactly `spec`, and waits for the
/// operator to report `Available=True` for this generation (both controller replicas, by
/// default, and a ready speaker on every node) and for a controller leader.
pub async fn install_with(tb: &Testbed, client: &Client, spec: Value) -> anyhow::Result<Installed> {
    Ok(install_timed(tb, client, spec).await?.0)
}

/// [`install_with`], also returning when the config was written (the operator already running),
/// from which a test measures how long the operands take to serve.
pub async fn install_timed(
    tb: &Testbed,
    client: &Client,
    spec: Value,
) -> anyhow::Result<(Installed, Instant)> {
    // Services of an earlier test live until their namespace is gone; a new controller would
    // (rightly) serve them, so wait for a clean slate.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for("earlier test namespaces to go", T, || async {
        let left = namespaces
            .list(&ListParams::default().labels("testbed.ferrolb.io/test=true"))
            .await?
            .items
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_some())
            .count();
        Ok((left == 0).then_some(()))
    })
    .await?;
    let installed = install_operator(tb, client).await?;
    let applied = Instant::now();
    replace_lb_config(client, spec).await?;
    wait_available(client).await?;
    controller_leader(client).await?;
    Ok((installed, applied))
}

/// Installs the operator alone (`config/default`, no config yet) and waits for its two replicas
/// to be ready.
pub async fn install_operator(tb: &Testbed, client: &Client) -> anyhow::Result<Installed> {
    apply_default(tb)?;
    let installed = Installed { tb: tb.clone() };
    wait_operator_replicas(client).await?;
    wait_webhook(client).await?;
    Ok(installed)
}

/// The operator's ready pods (not being deleted).
pub async fn ready_operators(client: &Client) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    Ok(pods
        .list(&ListParams::default().labels(OPERATOR_PODS))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
        .collect())
}

/// Waits until exactly `n` operator pods exist, ready or not (e.g. the old ones of a rollout
/// gone for good).
pub async fn wait_operator_pods(client: &Client, n: usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    wait_for(&format!("exactly {n} operator pods"), T, || async {
        let all = pods
            .list(&ListParams::default().labels(OPERATOR_PODS))
            .await?
            .items;
        Ok((all.len() == n).then_some(()))
    })
    .await
}

/// Waits until both operator replicas are ready.
pub async fn wait_operator_replicas(client: &Client) -> anyhow::Result<()> {
    wait_for("2 ready operator replicas", T, || async {
        Ok((ready_operators(client).await?.len() == 2).then_some(()))
    })
    .await
}

/// Changes the operator's Deployment with a JSON patch (RFC 6902) and waits for its rollout.
pub fn patch_operator(tb: &Testbed, patch: &Value) -> anyhow::Result<()> {
    tb.kubectl_ok(&[
        "patch",
        "deployment",
        "ferrolb-operator",
        "-n",
        SYSTEM,
        "--type=json",
        "-p",
        &patch.to_string(),
    ])
    .context("patching the operator")?;
    wait_operator_rollout(tb)
}

/// Waits until the operator Deployment's rollout is done (`kubectl rollout status`).
pub fn wait_operator_rollout(tb: &Testbed) -> anyhow::Result<()> {
    tb.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/ferrolb-operator",
        "-n",
        SYSTEM,
        "--timeout=120s",
    ])
    .context("the operator's rollout")?;
    Ok(())
}

/// The webhook's configuration, as `config/webhook` names it.
pub const WEBHOOK_CONFIGURATION: &str = "ferrolb-operator";

/// Whether `e` is the API server's refusal because it could not call the webhook (no replica,
/// no endpoint yet, a CA it does not trust yet).
pub fn is_webhook_unreachable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.message.contains("failed calling webhook"))
}

/// Waits until the API server gets answers from the webhook: a server-side dry-run create of a
/// config is decided by it (allowed or denied), not refused for want of it.
pub async fn wait_webhook(client: &Client) -> anyhow::Result<()> {
    let configs: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    let probe = ferrolb_api::LoadBalancerConfig::new("webhook-probe", Default::default());
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for("the admission webhook answering", T, || async {
        // Allowed, or denied by the webhook (a config exists): either is its answer.
        match configs.create(&dry_run, &probe).await {
            Ok(_) => Ok(Some(())),
            Err(kube::Error::Api(s)) if s.message.contains("denied the request") => Ok(Some(())),
            Err(_) => Ok(None),
        }
    })
    .await
}

/// The install as it is while no webhook replica runs and its configuration is gone (an admin
/// deleted it, say): configs reach the API server unchecked, as they did before admission
/// existed. The tests of what the operands do with a config that slipped in use it. Dropping it
/// re-applies `config/default` (the operator injects the CA again).
#[derive(Debug)]
#[must_use = "the webhook comes back when this is dropped"]
pub struct WithoutWebhook {
    tb: Testbed,
    restored: bool,
}

impl WithoutWebhook {
    /// Brings the webhook back and waits until the API server calls it again.
    pub async fn restore(mut self, client: &Client) -> anyhow::Result<()> {
        self.restored = true;
        apply_default(&self.tb)?;
        wait_webhook(client).await
    }
}

/// Deletes the webhook's configuration until the returned guard is dropped, and waits until the
/// API server has stopped calling it (a config the webhook would deny passes a dry run).
pub async fn without_webhook(tb: &Testbed, client: &Client) -> anyhow::Result<WithoutWebhook> {
    tb.kubectl_ok(&[
        "delete",
        "validatingwebhookconfiguration",
        WEBHOOK_CONFIGURATION,
        "--ignore-not-found",
        "--wait=true",
    ])
    .context("deleting the webhook configuration")?;
    let guard = WithoutWebhook {
        tb: tb.clone(),
        restored: false,
    };
    let configs: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    let unchecked: ferrolb_api::LoadBalancerConfig = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "LoadBalancerConfig",
        "metadata": {"name": "webhook-probe"},
        "spec": {"l2Advertisements": [{"name": "l2", "addressPools": ["missing"]}]},
    }))?;
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for(
        "the API server no longer calling the webhook",
        T,
        || async {
            Ok(configs
                .create(&dry_run, &unchecked)
                .await
                .is_ok()
                .then_some(()))
        },
    )
    .await?;
    Ok(guard)
}

impl Drop for WithoutWebhook {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        if let Err(e) = apply_default(&self.tb) {
            eprintln!("restoring the webhook: {e}");
        }
    }
}

/// `kubectl apply --server-side --force-conflicts -k config/default`: the operator's install,
/// taking back any field a test changed by hand.
pub fn apply_default(tb: &Testbed) -> anyhow::Result<()> {
    let kustomize = repo_root().join("config/default");
    tb.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        &kustomize.display().to_string(),
    ])
    .context("kubectl apply -k config/default")?;
    Ok(())
}

/// A condition of the LoadBalancerConfig `config`: (status, reason, message), empty strings when
/// the config or the condition does not exist.
pub fn config_condition(
    tb: &Testbed,
    config: &str,
    type_: &str,
) -> anyhow::Result<(String, String, String)> {
    let field = |f: &str| format!("{{.status.conditions[?(@.type==\"{type_}\")].{f}}}");
    let text = tb.kubectl_ok(&[
        "get",
        "lbc",
        config,
        "-o",
        &format!(
            "jsonpath={}|{}|{}",
            field("status"),
            field("reason"),
            field("message")
        ),
        "--ignore-not-found",
    ])?;
    let mut parts = text.splitn(3, '|');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    Ok((next(), next(), next()))
}

/// Waits until the config `ferrolb` is `Available=True` for its current generation.
pub async fn wait_available(client: &Client) -> anyhow::Result<()> {
    let configs: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    wait_for("the config Available (every operand ready)", T, || async {
        let config = configs.get_opt("ferrolb").await?;
        Ok(config.as_ref().is_some_and(is_available).then_some(()))
    })
    .await
}

/// Whether the operator reports `config` `Available=True` for its current generation.
pub fn is_available(config: &ferrolb_api::LoadBalancerConfig) -> bool {
    let Some(status) = &config.status else {
        return false;
    };
    let current = status.observed_generation.is_some()
        && status.observed_generation >= config.metadata.generation;
    current
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
}

/// Gives the operator a new operand image (its `FERROLB_IMAGE`, as a new operator version
/// carries it), and waits until the controller Deployment and the speaker DaemonSet run it,
/// every pod updated and ready, and the config is Available again. Returns how long it took.
/// The next [`install`] (or [`apply_default`]) puts the committed image back.
pub async fn roll_out_image(
    tb: &Testbed,
    client: &Client,
    image: &str,
) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    tb.kubectl_ok(&[
        "set",
        "env",
        "deployment/ferrolb-operator",
        "-n",
        SYSTEM,
        &format!("FERROLB_IMAGE={image}"),
    ])
    .context("kubectl set env")?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), SYSTEM);
    let runs = |template: Option<&PodTemplateSpec>| {
        template
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_deref())
            == Some(image)
    };
    wait_for(&format!("every operand running {image}"), T, || async {
        let controller = deployments.get("ferrolb-controller").await?;
        let speaker = daemonsets.get("ferrolb-speaker").await?;
        let controller_done = {
            let want = controller.spec.as_ref().and_then(|s| s.replicas);
            let st = controller.status.clone().unwrap_or_default();
            runs(controller.spec.as_ref().map(|s| &s.template))
                && st.observed_generation >= controller.metadata.generation
                && st.replicas == want
                && st.updated_replicas == want
                && st.available_replicas == want
        };
        let speaker_done = {
            let st = speaker.status.clone().unwrap_or_default();
            runs(speaker.spec.as_ref().map(|s| &s.template))
                && st.observed_generation >= speaker.metadata.generation
                && st.updated_number_scheduled == Some(st.desired_number_scheduled)
                && st.number_available == Some(st.desired_number_scheduled)
                && st.current_number_scheduled == st.desired_number_scheduled
        };
        Ok((controller_done && speaker_done).then_some(()))
    })
    .await?;
    wait_available(client).await?;
    Ok(started.elapsed())
}

/// [`roll_out_image`] under [`ClientProbes`] of `ip` (from a second before to a second after):
/// how long the rollout took and what the client saw; the summary is printed.
pub async fn roll_out_under_probes(
    tb: &Testbed,
    client: &Client,
    ip: &str,
    image: &str,
) -> anyhow::Result<(Duration, ProbeReport, ArpReport)> {
    let probes = ClientProbes::start(tb, ip)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let took = roll_out_image(tb, client, image).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (report, arp) = probes.stop();
    eprintln!(
        "rollout to {image} in {took:.1?}: {}",
        probes_summary(&report, &arp)
    );
    Ok((took, report, arp))
}

/// What client probes saw, in one line: probes, failures, the longest gap, ARP replies by MAC.
pub fn probes_summary(report: &ProbeReport, arp: &ArpReport) -> String {
    format!(
        "{} probes, {} failed, longest client gap {:?}; {} ARP replies from {:?}, longest without one {:?}",
        report.samples.len(),
        report.failures,
        report.max_gap,
        arp.replies,
        arp.macs,
        arp.max_gap
    )
}

/// The pod name holding the controller Lease.
pub async fn controller_leader(client: &Client) -> anyhow::Result<String> {
    lease_holder(client, "ferrolb-controller").await
}

/// The operator pod holding the operator's Lease (waiting for one).
pub async fn operator_leader(client: &Client) -> anyhow::Result<String> {
    lease_holder(client, "ferrolb-operator").await
}

async fn lease_holder(client: &Client, lease: &str) -> anyhow::Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    wait_for(
        &format!("a holder of the Lease {lease}"),
        Duration::from_secs(60),
        || async {
            Ok(leases
                .get_opt(lease)
                .await?
                .and_then(|l| l.spec?.holder_identity)
                .filter(|h| !h.is_empty()))
        },
    )
    .await
}
