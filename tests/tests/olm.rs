//! FerroLB installed as from OperatorHub: OLM v0 on the testbed, a file-based catalog served by
//! `opm serve` through a CatalogSource, an OperatorGroup and a Subscription in `ferrolb-system`.
//!
//! - The committed catalog installs: the CSV succeeds, the webhook runs on the certificate OLM
//!   made, the Layer 2 config makes a Service's IP answer from the client, the operator reports
//!   `Upgradeable` in its OperatorCondition, and uninstalling through OLM (config, then
//!   Subscription and CSV) leaves nothing of FerroLB but the CRD, as OLM documents.
//! - Upgrades through OLM: a catalog with a second release (`replaces` the first) upgrades the
//!   operator, which rolls the operands with no client gap over a second; while FerroLB is
//!   degraded, OLM holds the next upgrade (`OperatorConditionNotUpgradeable`) until it recovers.
//! - `operator-sdk scorecard` passes the basic and OLM suites on the testbed's kubelets (it needs
//!   no OLM: its pods read the bundle).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ferrolb_operator::manifests::catalog_file;
use ferrolb_operator::render::Settings;
use ferrolb_operator::render::bundle::Release;
use ferrolb_testbed::ferrolb::{
    SYSTEM, committed_image, config_condition, probes_summary, uninstall, wait_available,
};
use ferrolb_testbed::harness::{ClientProbes, Testbed, replace_lb_config, repo_root, wait_for};
use ferrolb_testbed::workloads::echo_behind_load_balancer;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const T: Duration = Duration::from_secs(300);

/// OLM on the testbed serving the committed catalog, stopped again when dropped (even by a
/// failing test), so later tests run beside no more than the cluster.
struct Olm(Testbed);

impl Olm {
    /// OLM up, no plain install left (`remove_plain_install`), and an admin client.
    async fn up() -> anyhow::Result<(Self, Testbed, Client)> {
        let tb = Testbed::start_or_reuse()?.olm_up(&repo_root().join("catalog"))?;
        let olm = Self(tb.clone());
        let client = tb.client().await?;
        remove_plain_install(&tb)?;
        Ok((olm, tb, client))
    }
}

impl Drop for Olm {
    fn drop(&mut self) {
        if let Err(e) = self.0.olm_down() {
            eprintln!("{e:#}");
        }
    }
}

/// The release this build is, and the CSV it installs as.
fn this_release() -> Release {
    Release {
        settings: Settings::of_this_build(),
        replaces: None,
    }
}

/// A later release of the same code: version `vX.Y.(Z+n)`, its image this build's image under
/// that tag (tagged on every node), replacing the release before it.
fn later_release(tb: &Testbed, n: u32) -> anyhow::Result<Release> {
    let version = |n: u32| {
        let base = env!("CARGO_PKG_VERSION");
        let (head, patch) = base.rsplit_once('.').unwrap_or((base, "0"));
        format!("v{head}.{}", patch.parse::<u32>().unwrap_or(0) + n)
    };
    let image = format!("ghcr.io/ferrolb/ferrolb:{}", version(n));
    tb.tag_image_on_nodes(&committed_image(), &image)?;
    Ok(Release {
        settings: Settings {
            image,
            version: version(n),
        },
        replaces: Some(version(n - 1)),
    })
}

/// A catalog of `releases` in a fresh directory.
fn write_catalog(releases: &[Release]) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "ferrolb-catalog-{}-{}",
        std::process::id(),
        releases.len()
    ));
    let file = catalog_file(releases, &dir.display().to_string())?;
    let path = Path::new(&file.path);
    std::fs::create_dir_all(path.parent().context("catalog path")?)?;
    std::fs::write(path, file.text)?;
    Ok(dir)
}

/// The objects of `kind` whose name mentions ferrolb, as `kind namespace/name` (cluster-wide).
fn ferrolb_objects(tb: &Testbed, kind: &str) -> anyhow::Result<Vec<String>> {
    let out = tb.kubectl_ok(&[
        "get",
        kind,
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{\"\\n\"}{end}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, name)| name.contains("ferrolb"))
        .map(|(ns, name)| format!("{kind} {ns}/{name}"))
        .collect())
}

/// The plain install (`config/default`) of earlier tests, removed: configs first (the operator
/// removes the operands), then the operator, its webhook and namespace; the CRD goes too.
fn remove_plain_install(tb: &Testbed) -> anyhow::Result<()> {
    uninstall(tb);
    let kustomize = repo_root().join("config/default");
    tb.kubectl_ok(&[
        "delete",
        "-k",
        &kustomize.display().to_string(),
        "--ignore-not-found",
        "--wait=true",
        "--timeout=180s",
    ])
    .context("kubectl delete -k config/default")?;
    Ok(())
}

/// What an admin does on OperatorHub: a namespace, an OperatorGroup for all namespaces, a
/// Subscription to the stable channel (automatic approval) of the testbed's CatalogSource.
fn subscribe(tb: &Testbed) -> anyhow::Result<()> {
    let olm_ns = tb.var("TESTBED_OLM_NAMESPACE").context("olm-up")?;
    let source = tb.var("TESTBED_CATALOG_SOURCE").context("olm-up")?;
    let objects = json!({
    "apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM}},
        {"apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup",
         "metadata": {"name": "ferrolb", "namespace": SYSTEM}, "spec": {}},
        {"apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
         "metadata": {"name": "ferrolb", "namespace": SYSTEM},
         "spec": {"name": "ferrolb", "channel": "stable", "source": source,
                  "sourceNamespace": olm_ns, "installPlanApproval": "Automatic"}},
    ]});
    let file = std::env::temp_dir().join(format!("ferrolb-olm-{}.json", std::process::id()));
    std::fs::write(&file, objects.to_string())?;
    let applied = tb.kubectl_ok(&["apply", "-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    applied.map(|_| ())
}

/// `(phase, reason)` of the CSV `name` in ferrolb-system, empty when it does not exist.
fn csv_phase(tb: &Testbed, name: &str) -> anyhow::Result<(String, String)> {
    let out = tb.kubectl_ok(&[
        "-n",
        SYSTEM,
        "get",
        "csv",
        name,
        "-o",
        "jsonpath={.status.phase} {.status.reason}",
        "--ignore-not-found",
    ])?;
    let (phase, reason) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
    Ok((phase.to_owned(), reason.to_owned()))
}

async fn wait_csv_succeeded(tb: &Testbed, name: &str) -> anyhow::Result<()> {
    wait_for(&format!("the CSV {name} Succeeded"), T, || async {
        let (phase, reason) = csv_phase(tb, name)?;
        ensure!(phase != "Failed", "the CSV {name} failed: {reason}");
        Ok((phase == "Succeeded").then_some(()))
    })
    .await
}

/// `spec.conditions[Upgradeable].status` of the operator's OperatorCondition (named after the
/// CSV).
fn operator_condition(tb: &Testbed, csv: &str) -> anyhow::Result<String> {
    tb.kubectl_ok(&[
        "-n",
        SYSTEM,
        "get",
        "operatorcondition",
        csv,
        "-o",
        "jsonpath={.spec.conditions[?(@.type==\"Upgradeable\")].status}",
        "--ignore-not-found",
    ])
}

/// A condition of the config `ferrolb`: (status, reason, message).
fn condition(tb: &Testbed, type_: &str) -> anyhow::Result<(String, String, String)> {
    config_condition(tb, "ferrolb", type_)
}

/// The config's operand version (`status.version.operand`).
fn operand_version(tb: &Testbed) -> anyhow::Result<String> {
    tb.kubectl_ok(&[
        "get",
        "lbc",
        "ferrolb",
        "-o",
        "jsonpath={.status.version.operand}",
    ])
}

/// The Layer 2 config of the testbed, Available.
async fn apply_config(client: &Client) -> anyhow::Result<()> {
    replace_lb_config(
        client,
        json!({
            "addressPools": [{"name": "lan", "addresses": ["198.51.100.200-198.51.100.209"]}],
            "l2Advertisements": [{"name": "lan", "addressPools": ["lan"]}],
        }),
    )
    .await?;
    wait_available(client).await
}

/// What OLM v0.46 leaves of FerroLB after the config, the Subscription and the CSV are deleted,
/// besides the CRDs (measured here; operations.md tells the admin):
/// - the bundle's two cluster-scoped objects, the operands' ClusterRoles: OLM labels them
///   `olm.owner` but collects only what it generated itself;
/// - the RoleBinding OLM made in kube-system for the webhook's Service to read the API server's
///   authentication ConfigMap;
/// - OLM's own aggregated roles for each CRD (owned by the CRD: they go with it) and for the
///   OperatorGroup (they go with it).
fn left_by_olm(object: &str) -> bool {
    [
        "clusterroles /ferrolb-controller",
        "clusterroles /ferrolb-speaker",
        "rolebindings kube-system/ferrolb-operator-service-auth-reader",
    ]
    .contains(&object)
        || owned_by_the_crd(object)
        || object.starts_with("clusterroles /olm.og.ferrolb.")
}

/// OLM's aggregated roles of each CRD the bundle owns (`CRD-VERSION-{admin,edit,view,crdview}`).
fn owned_by_the_crd(object: &str) -> bool {
    ["loadbalancerconfigs.ferrolb.io", "bgpsessions.ferrolb.io"]
        .iter()
        .any(|crd| object.starts_with(&format!("clusterroles /{crd}-v1alpha1-")))
}

/// Uninstall through OLM, as OLM documents it: the config first (the operator removes the
/// operands), then the Subscription and the CSV; nothing of FerroLB may be left but the CRDs
/// and what [`left_by_olm`] lists. Then the admin's part: the OperatorGroup, the namespace and
/// the objects OLM leaves (operations.md), after which only the CRDs and their roles remain.
async fn uninstall_through_olm(tb: &Testbed, client: &Client, csv: &str) -> anyhow::Result<()> {
    uninstall(tb);
    tb.kubectl_ok(&[
        "-n",
        SYSTEM,
        "delete",
        "subscription",
        "ferrolb",
        "--wait=true",
    ])?;
    tb.kubectl_ok(&["-n", SYSTEM, "delete", "csv", csv, "--wait=true"])?;
    const KINDS: [&str; 15] = [
        "deployments",
        "daemonsets",
        "pods",
        "services",
        "secrets",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "poddisruptionbudgets",
        "clusterroles",
        "clusterrolebindings",
        "validatingwebhookconfigurations",
        "installplans",
        "operatorconditions",
        "clusterserviceversions",
    ];
    let everything = || -> anyhow::Result<Vec<String>> {
        let mut left = Vec::new();
        for kind in KINDS {
            left.extend(ferrolb_objects(tb, kind)?);
        }
        Ok(left)
    };
    let unexpected = || -> anyhow::Result<Vec<String>> {
        Ok(everything()?
            .into_iter()
            .filter(|o| !left_by_olm(o))
            .collect())
    };
    let gone = wait_for(
        "nothing of FerroLB left but what OLM leaves",
        Duration::from_secs(120),
        || async { Ok(unexpected()?.is_empty().then_some(())) },
    )
    .await;
    ensure!(
        gone.is_ok(),
        "left after uninstalling through OLM: {:?}",
        unexpected()?
    );
    ensure!(
        !ferrolb_objects(tb, "crd")?.is_empty(),
        "the CRD was removed"
    );

    // The admin's part.
    tb.kubectl_ok(&[
        "-n",
        SYSTEM,
        "delete",
        "operatorgroup",
        "ferrolb",
        "--ignore-not-found",
    ])?;
    tb.kubectl_ok(&[
        "delete",
        "clusterrole",
        "ferrolb-controller",
        "ferrolb-speaker",
        "--ignore-not-found",
    ])?;
    tb.kubectl_ok(&[
        "-n",
        "kube-system",
        "delete",
        "rolebinding",
        "ferrolb-operator-service-auth-reader",
        "--ignore-not-found",
    ])?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(SYSTEM, &DeleteParams::default()).await;
    wait_for("ferrolb-system gone", Duration::from_secs(120), || async {
        Ok(namespaces.get_opt(SYSTEM).await?.is_none().then_some(()))
    })
    .await?;
    let rest: Vec<String> = everything()?
        .into_iter()
        .filter(|o| !owned_by_the_crd(o))
        .collect();
    ensure!(rest.is_empty(), "left after the admin's clean-up: {rest:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn olm_installs_the_catalog_and_uninstalls_cleanly() -> anyhow::Result<()> {
    let (_olm, tb, client) = Olm::up().await?;
    let csv = this_release().csv_name();

    let started = Instant::now();
    subscribe(&tb)?;
    wait_csv_succeeded(&tb, &csv).await?;
    eprintln!(
        "Subscription → CSV {csv} Succeeded in {:?}",
        started.elapsed()
    );
    let deployed = tb.kubectl_ok(&[
        "-n",
        SYSTEM,
        "get",
        "deployment",
        "ferrolb-operator",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.serviceAccountName}",
    ])?;
    ensure!(
        deployed == format!("{} ferrolb-operator", committed_image()),
        "the operator runs {deployed:?}"
    );

    // The webhook OLM registered, on the certificate OLM made, refuses a config the schema
    // admits (two pools overlap), naming the field and the value.
    let configs: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    let bad: ferrolb_api::LoadBalancerConfig = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1alpha1", "kind": "LoadBalancerConfig",
        "metadata": {"name": "ferrolb"},
        "spec": {"addressPools": [
            {"name": "a", "addresses": ["203.0.113.0/28"]},
            {"name": "b", "addresses": ["203.0.113.8/29"]},
        ]},
    }))?;
    let refused = wait_for("the webhook to answer", Duration::from_secs(60), || async {
        match configs.create(&PostParams::default(), &bad).await {
            Err(kube::Error::Api(e)) if e.message.contains("denied the request") => {
                Ok(Some(e.message))
            }
            Err(e) => {
                eprintln!("not yet: {e}");
                Ok(None)
            }
            Ok(_) => anyhow::bail!("a config with overlapping pools was admitted"),
        }
    })
    .await?;
    ensure!(
        refused.contains("spec.addressPools[1].addresses[0]") && refused.contains("203.0.113.8/29"),
        "the refusal names neither the field nor the value: {refused}"
    );

    // The Layer 2 config: a Service's IP answers from the client.
    apply_config(&client).await?;
    // The operator tells OLM an upgrade may go ahead.
    wait_for(
        "Upgradeable=True in the OperatorCondition",
        Duration::from_secs(60),
        || async { Ok((operator_condition(&tb, &csv)? == "True").then_some(())) },
    )
    .await?;
    let ns = tb.namespace(&client, "olm").await?;
    let ip = echo_behind_load_balancer(&client, &ns.name, "web", 2).await?;
    let answer = tb.wait_answers(&ip).await?;
    eprintln!("{ip} answers: {answer}");
    ns.delete_and_wait(&client, Duration::from_secs(120))
        .await?;

    uninstall_through_olm(&tb, &client, &csv).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn olm_upgrades_without_a_gap_and_holds_while_degraded() -> anyhow::Result<()> {
    let (_olm, tb, client) = Olm::up().await?;
    let first = this_release();
    let (second, third) = (later_release(&tb, 1)?, later_release(&tb, 2)?);
    subscribe(&tb)?;
    wait_csv_succeeded(&tb, &first.csv_name()).await?;
    apply_config(&client).await?;
    let ns = tb.namespace(&client, "olmup").await?;
    let ip = echo_behind_load_balancer(&client, &ns.name, "web", 2).await?;
    tb.wait_answers(&ip).await?;

    // A second release in the channel: OLM upgrades the operator, the operator rolls the
    // operands, and a client probing the address every 10 ms sees no gap over a second.
    let probes = ClientProbes::start(&tb, &ip)?;
    let started = Instant::now();
    let tb = tb.olm_up(&write_catalog(&[first.clone(), second.clone()])?)?;
    wait_csv_succeeded(&tb, &second.csv_name()).await?;
    let operand = wait_for("the operands on the second release", T, || async {
        let version = operand_version(&tb)?;
        let settled =
            condition(&tb, "Available")?.0 == "True" && condition(&tb, "Progressing")?.0 == "False";
        Ok((version == second.settings.version && settled).then_some(version))
    })
    .await?;
    let upgraded = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (report, arp) = probes.stop();
    eprintln!(
        "upgraded to {operand} through OLM in {upgraded:.1?}: {}",
        probes_summary(&report, &arp)
    );
    ensure!(
        report.max_gap < Duration::from_secs(1),
        "a client gap of {:?} during the upgrade",
        report.max_gap
    );
    ensure!(
        csv_phase(&tb, &first.csv_name())?.0.is_empty(),
        "the replaced CSV is still there"
    );

    // Degraded: the admin's restricted Pod Security level refuses the recreated speakers. OLM
    // holds the third release while the operator reports Upgradeable=False.
    tb.kubectl_ok(&[
        "label",
        "namespace",
        SYSTEM,
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    ])?;
    tb.kubectl_ok(&[
        "-n",
        SYSTEM,
        "delete",
        "daemonset",
        "ferrolb-speaker",
        "--wait=true",
    ])?;
    wait_for("Degraded (PodSecurityRefusesSpeaker)", T, || async {
        let (status, reason, _) = condition(&tb, "Degraded")?;
        Ok((status == "True" && reason == "PodSecurityRefusesSpeaker").then_some(()))
    })
    .await?;
    wait_for(
        "Upgradeable=False in the OperatorCondition",
        Duration::from_secs(60),
        || async { Ok((operator_condition(&tb, &second.csv_name())? == "False").then_some(())) },
    )
    .await?;
    let tb = tb.olm_up(&write_catalog(&[first, second.clone(), third.clone()])?)?;
    wait_for(
        "the third CSV waiting (OperatorConditionNotUpgradeable)",
        T,
        || async {
            let (phase, reason) = csv_phase(&tb, &third.csv_name())?;
            Ok((phase == "Pending" && reason == "OperatorConditionNotUpgradeable").then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    ensure!(
        csv_phase(&tb, &third.csv_name())?.0 == "Pending",
        "the upgrade went ahead while FerroLB was degraded"
    );
    // The second release keeps running (its CSV marked Replacing, its operator unchanged).
    let running = tb.kubectl_ok(&[
        "-n",
        SYSTEM,
        "get",
        "deployment",
        "ferrolb-operator",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])?;
    ensure!(
        running == second.settings.image,
        "the operator runs {running} while the upgrade is held"
    );
    let (phase, _) = csv_phase(&tb, &second.csv_name())?;
    ensure!(
        phase == "Succeeded" || phase == "Replacing",
        "the second CSV is {phase:?} while the upgrade is held"
    );

    // Recovered: OLM goes on with the upgrade.
    tb.kubectl_ok(&[
        "label",
        "namespace",
        SYSTEM,
        "pod-security.kubernetes.io/enforce-",
    ])?;
    wait_csv_succeeded(&tb, &third.csv_name()).await?;
    wait_for("the operands on the third release", T, || async {
        let version = operand_version(&tb)?;
        Ok(
            (version == third.settings.version && condition(&tb, "Available")?.0 == "True")
                .then_some(()),
        )
    })
    .await?;
    tb.wait_answers(&ip).await?;
    ns.delete_and_wait(&client, Duration::from_secs(120))
        .await?;

    uninstall_through_olm(&tb, &client, &third.csv_name()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn scorecard_basic_and_olm_suites_pass() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let env = Testbed::env_path();
    let out =
        PathBuf::from(tb.var("TESTBED_RUN_DIR").context("TESTBED_RUN_DIR")?).join("scorecard.json");
    let _ = std::fs::remove_file(&out);
    let started = Instant::now();
    let st = Command::new("bash")
        .arg(repo_root().join("tests/testbed/olm-check.sh"))
        .arg("scorecard")
        .arg(&out)
        .env("TESTBED_STATE_DIR", env.parent().unwrap_or(Path::new(".")))
        .status()
        .context("running olm-check.sh scorecard")?;
    eprintln!("scorecard ran in {:?} ({st})", started.elapsed());
    // Read the results whatever the exit: they say which test failed and why.
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?,
    )?;
    let mut states = BTreeMap::new();
    for item in results["items"]
        .as_array()
        .context("no items in the results")?
    {
        for r in item["status"]["results"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or("?").to_owned();
            let state = r["state"].as_str().unwrap_or("?").to_owned();
            if state != "pass" {
                eprintln!("{name}: {state}: {}", r["errors"]);
            }
            states.insert(name, state);
        }
    }
    // Every test of the committed config ran (one result each) and passed.
    let expected = [
        "basic-check-spec",
        "olm-bundle-validation",
        "olm-crds-have-resources",
        "olm-crds-have-validation",
        "olm-spec-descriptors",
        "olm-status-descriptors",
    ];
    ensure!(
        states.keys().map(String::as_str).eq(expected),
        "the scorecard ran {:?}, not the basic and OLM suites {expected:?}",
        states.keys().collect::<Vec<_>>()
    );
    ensure!(
        states.values().all(|s| s == "pass"),
        "scorecard results: {states:?}"
    );
    ensure!(st.success(), "olm-check.sh scorecard failed ({st})");
    Ok(())
}
