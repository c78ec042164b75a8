//! The operator on the testbed, installed as an admin would (`kubectl apply -k config/default`)
//! and running from its own ServiceAccount: one LoadBalancerConfig deploys everything, says so in
//! status, tells a second config it is not in force, repairs drift, keeps the running operands on
//! a bad config, rolls a new operand image out without a client noticing, and deleting the config
//! removes every object it created.

use std::time::{Duration, Instant};

use anyhow::ensure;
use ferrolb_testbed::ferrolb::{
    SPEAKER_PODS, SYSTEM, committed_image, config_condition, install_operator, install_with,
    roll_out_image, roll_out_under_probes, wait_available, without_webhook,
};
use ferrolb_testbed::harness::{Testbed, ingress_ips, modify_lb_config, wait_for};
use ferrolb_testbed::workloads::echo_behind_load_balancer;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const MANAGED: &str = "app.kubernetes.io/managed-by=ferrolb-operator";

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

/// A condition of the config `ferrolb`: (status, reason, message).
fn condition(tb: &Testbed, type_: &str) -> anyhow::Result<(String, String, String)> {
    config_condition(tb, "ferrolb", type_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn one_config_deploys_everything_repairs_drift_and_uninstalls_cleanly() -> anyhow::Result<()>
{
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _install = install_operator(&tb, &client).await?;

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

    // A second config is refused by the webhook, naming the one that exists. One that slips in
    // while no webhook runs is told it is not in force, naming the one that is; nothing flaps.
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), "ferrolb-system");
    let speaker_generation = daemonsets.get("ferrolb-speaker").await?.metadata.generation;
    let mut second = config.clone();
    second.metadata.name = Some("second".into());
    second.spec.log_level = "debug".into();
    let refused = configs.create(&PostParams::default(), &second).await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("\"ferrolb\" exists")),
        "a second config was not refused naming the first: {refused:?}"
    );
    let unchecked = without_webhook(&tb, &client).await?;
    configs.create(&PostParams::default(), &second).await?;
    let (_, message) = wait_for("the second config Degraded", T, || async {
        let (status, reason, message) = config_condition(&tb, "second", "Degraded")?;
        Ok((status == "True" && reason == "AnotherConfigInForce").then_some((reason, message)))
    })
    .await?;
    ensure!(message.contains("ferrolb"), "{message}");
    let transitions = |config: &'static str| {
        let tb = tb.clone();
        move || -> anyhow::Result<String> {
            let out = tb.kubectl(&[
                "get",
                "lbc",
                config,
                "-o",
                "jsonpath={.status.conditions[*].lastTransitionTime}",
            ])?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let (first_at, second_at) = (transitions("ferrolb")()?, transitions("second")()?);
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        (transitions("ferrolb")()?, transitions("second")()?) == (first_at, second_at),
        "a condition flipped with two configs present"
    );
    ensure!(condition(&tb, "Available")?.0 == "True");
    ensure!(condition(&tb, "Degraded")?.0 == "False");
    ensure!(
        daemonsets.get("ferrolb-speaker").await?.metadata.generation == speaker_generation,
        "the second config's logLevel reached the speakers"
    );
    configs.delete("second", &DeleteParams::default()).await?;
    wait_for("the second config gone", T, || async {
        Ok(configs.get_opt("second").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(
        daemonsets.get("ferrolb-speaker").await?.metadata.generation == speaker_generation,
        "deleting the second config changed the operands"
    );
    unchecked.restore(&client).await?;

    // Drift: a DaemonSet deleted by hand comes back within seconds.
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

    // A config the validator rejects is refused by the webhook; one that slips in while no
    // webhook runs changes nothing that runs, and the config's status says why.
    let generation = daemonsets.get("ferrolb-speaker").await?.metadata.generation;
    let make_bad = |bad: &mut ferrolb_api::LoadBalancerConfig| {
        bad.spec.address_pools[0].addresses = vec!["198.51.100.200-198.51.100.199".into()];
        bad.spec.speaker.exclude_interfaces = vec!["^never$".into()];
    };
    let refused = modify_lb_config(&client, "ferrolb", make_bad).await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("spec.addressPools[0].addresses[0]")),
        "the webhook let an invalid config in: {refused:?}"
    );
    let unchecked = without_webhook(&tb, &client).await?;
    modify_lb_config(&client, "ferrolb", make_bad).await?;
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

    unchecked.restore(&client).await?;

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
    // The Service keeps its address in its status, so a reinstall gives it the same one, even
    // with a Service created meanwhile that would otherwise take the pool's first address.
    ensure!(
        ingress_ips(&services.get("web").await?) == [ip.clone()],
        "the Service lost its address on uninstall"
    );
    let mut other = svc.clone();
    other.metadata.name = Some("newcomer".into());
    services.create(&PostParams::default(), &other).await?;
    configs.create(&PostParams::default(), &config).await?;
    wait_available(&client).await?;
    let newcomer = wait_for("an IP for newcomer", T, || async {
        Ok(ingress_ips(&services.get("newcomer").await?)
            .first()
            .cloned())
    })
    .await?;
    ensure!(
        ingress_ips(&services.get("web").await?) == [ip.clone()],
        "the reinstall moved web's address"
    );
    ensure!(newcomer != ip, "newcomer got web's address {ip}");
    ns.delete_and_wait(&client, T).await?;
    Ok(())
}

/// A new operator version (a new operand image in its environment) rolls the controller and the
/// speakers, one node at a time; each speaker leaving on SIGTERM hands its addresses over at
/// once. A client probing a Layer 2 address every 10 ms sees no gap over a second, and ARP for
/// the address is answered throughout (what a client whose neighbour entry expires needs).
/// Two rollouts: to a new image and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_new_operand_image_rolls_every_speaker_without_a_client_gap() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install_with(
        &tb,
        &client,
        json!({
            "addressPools": [{"name": "l2", "addresses": ["203.0.113.64/27"]}],
            "l2Advertisements": [{"name": "l2", "addressPools": ["l2"]}],
        }),
    )
    .await?;
    let ns = tb.namespace(&client, "rollout").await?;
    let ip = echo_behind_load_balancer(&client, &ns.name, "web", 3).await?;
    tb.wait_answers(&ip).await?;
    for image in [format!("{}-rollout", committed_image()), committed_image()] {
        let (_, report, arp) = roll_out_under_probes(&tb, &client, &ip, &image).await?;
        ensure!(
            report.max_gap < Duration::from_secs(1),
            "a client gap of {:?} during the rollout to {image}",
            report.max_gap
        );
        ensure!(
            arp.max_gap < Duration::from_secs(1),
            "nobody answered ARP for {ip} for {:?} during the rollout to {image}",
            arp.max_gap
        );
    }
    Ok(())
}

/// The reasons of the Events on the config `ferrolb` (Events of cluster-scoped objects live in
/// `default`).
fn config_event_reasons(tb: &Testbed) -> anyhow::Result<String> {
    let out = tb.kubectl(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.kind=LoadBalancerConfig,involvedObject.name=ferrolb",
        "-o",
        "jsonpath={.items[*].reason}",
    ])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An operand that cannot start (here: an image that does not exist) shows in `Degraded` with
/// the pod's reason, and as a Warning Event on the config; the right image clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn an_operand_that_cannot_start_is_degraded_with_the_pods_reason() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install_with(&tb, &client, json!({})).await?;
    ensure!(
        config_event_reasons(&tb)?.contains("AllOperandsReady"),
        "the install was told as Events: {}",
        config_event_reasons(&tb)?
    );
    let out = tb.kubectl(&[
        "set",
        "env",
        "deployment/ferrolb-operator",
        "-n",
        "ferrolb-system",
        "FERROLB_IMAGE=ghcr.io/ferrolb/no-such-image:v9",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (reason, message) = wait_for("Degraded=True for the failing pods", T, || async {
        let (status, reason, message) = condition(&tb, "Degraded")?;
        Ok((status == "True" && reason == "OperandPodsFailing").then_some((reason, message)))
    })
    .await?;
    eprintln!("Degraded: {reason}: {message}");
    ensure!(message.contains("ErrImagePull"), "{message}");
    ensure!(message.contains("no-such-image"), "{message}");
    ensure!(condition(&tb, "Upgradeable")?.0 == "False");
    wait_for("a Warning Event on the config", T, || async {
        Ok(config_event_reasons(&tb)?
            .contains("OperandPodsFailing")
            .then_some(()))
    })
    .await?;
    // The right image again: every operand rolls back and nothing is degraded.
    roll_out_image(&tb, &client, &committed_image()).await?;
    wait_for("Degraded=False", T, || async {
        Ok((condition(&tb, "Degraded")?.0 == "False").then_some(()))
    })
    .await?;
    Ok(())
}

/// Pod Security Admission is enforced by the real API server: with the operands' namespace
/// labelled `restricted` by someone else, a speaker pod the DaemonSet recreates is refused
/// (`violates PodSecurity`), the operator leaves that level alone and says why in `Degraded`;
/// once the label is removed, the operator labels the namespace `privileged` again and the
/// speaker runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_restricted_namespace_refuses_the_speaker_and_the_operator_says_why() -> anyhow::Result<()>
{
    const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install_with(&tb, &client, json!({})).await?;
    let restricted = format!("{ENFORCE}=restricted");
    tb.kubectl_ok(&["label", "--overwrite", "namespace", SYSTEM, &restricted])?;
    let speakers = || {
        tb.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            SYSTEM,
            "-l",
            SPEAKER_PODS,
            "-o",
            "name",
        ])
    };
    let victim = speakers()?.lines().next().unwrap_or_default().to_owned();
    tb.kubectl_ok(&["delete", "-n", SYSTEM, &victim, "--wait=true"])?;
    let refusal = wait_for("the speaker's pod refused by Pod Security", T, || async {
        let events = tb.kubectl_ok(&[
            "get",
            "events",
            "-n",
            SYSTEM,
            "--field-selector",
            "reason=FailedCreate,involvedObject.kind=DaemonSet",
            "-o",
            "jsonpath={.items[*].message}",
        ])?;
        Ok(events.contains("violates PodSecurity").then_some(events))
    })
    .await?;
    eprintln!(
        "the DaemonSet was refused: {}",
        refusal.lines().next().unwrap_or_default()
    );
    let (reason, message) =
        wait_for("Degraded=True naming the Pod Security level", T, || async {
            let (status, reason, message) = condition(&tb, "Degraded")?;
            Ok((status == "True" && reason == "PodSecurityRefusesSpeaker")
                .then_some((reason, message)))
        })
        .await?;
    eprintln!("Degraded: {reason}: {message}");
    ensure!(message.contains("\"restricted\""), "{message}");
    ensure!(message.contains("kubectl-label"), "{message}");
    ensure!(condition(&tb, "Upgradeable")?.0 == "False");
    let level = |tb: &Testbed| -> anyhow::Result<String> {
        let out = tb.kubectl(&[
            "get",
            "namespace",
            SYSTEM,
            "-o",
            &format!(
                "jsonpath={{.metadata.labels.{}}}",
                ENFORCE.replace('.', "\\.")
            ),
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    ensure!(
        level(&tb)? == "restricted",
        "the operator overrode the admin's level"
    );
    // The admin takes the label away: the operator labels its namespace and the speaker runs.
    tb.kubectl_ok(&["label", "namespace", SYSTEM, &format!("{ENFORCE}-")])?;
    wait_for("the namespace labelled privileged again", T, || async {
        Ok((level(&tb)? == "privileged").then_some(()))
    })
    .await?;
    wait_available(&client).await?;
    wait_for("Degraded=False", T, || async {
        Ok((condition(&tb, "Degraded")?.0 == "False").then_some(()))
    })
    .await?;
    ensure!(speakers()?.lines().count() == tb.node_names.len());
    Ok(())
}
