//! The admission webhook through the real kube-apiserver, over TLS: it admits exactly what
//! `ferrolb-operator validate -f` admits and refuses the rest with the same lines; `kubectl
//! apply` (and its server-side dry run) prints them; a certificate rotation and a replica going
//! away fail no request while another replica is up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use ferrolb_api::LoadBalancerConfig;
use ferrolb_api::validate::cases::cases;
use ferrolb_testbed::ferrolb::{
    SYSTEM, apply_default, install_operator, operator_leader, patch_operator, ready_operators,
    uninstall, wait_operator_pods, wait_operator_replicas, wait_operator_rollout, wait_webhook,
};
use ferrolb_testbed::harness::{Testbed, pod_metrics, pod_pid, wait_for};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(120);

fn config_json(name: &str, spec: &impl serde::Serialize) -> anyhow::Result<Value> {
    Ok(json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "LoadBalancerConfig",
        "metadata": {"name": name},
        "spec": serde_json::to_value(spec)?,
    }))
}

/// What the API server said to a create: `Ok(())`, or the message of its refusal.
async fn dry_run_create(client: &Client, config: &Value) -> anyhow::Result<Result<(), String>> {
    let api: Api<LoadBalancerConfig> = Api::all(client.clone());
    let config: LoadBalancerConfig = serde_json::from_value(config.clone())?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&dry_run, &config).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) => Ok(Err(status.message)),
        Err(e) => Err(e.into()),
    }
}

/// `ferrolb-operator validate -f FILE` of this build: (accepted, the problem lines).
fn validate_offline(tb: &Testbed, file: &std::path::Path) -> anyhow::Result<(bool, Vec<String>)> {
    let bin = ferrolb_testbed::ferrolb::binary(tb, "ferrolb-operator")?;
    let out = std::process::Command::new(&bin)
        .args(["validate", "-f"])
        .arg(file)
        .output()
        .with_context(|| bin.display().to_string())?;
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .map(str::to_owned)
        .collect();
    Ok((out.status.success(), lines))
}

/// Every case of the validator's table tests, sent to the API server as a LoadBalancerConfig:
/// the valid ones are admitted, the invalid ones refused with exactly the lines `validate()`
/// gives and `ferrolb-operator validate -f` prints (or, where the CRD's schema or CEL rules
/// refuse first, with a message naming the same field). `kubectl apply` prints the lines, also
/// on a server-side dry run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn the_api_server_admits_exactly_what_validate_admits() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    uninstall(&tb);
    let _installed = install_operator(&tb, &client).await?;
    let dir = std::env::temp_dir().join(format!("ferrolb-webhook-cases-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mut admitted, mut by_webhook, mut by_schema) = (0, 0, 0);
    let mut mismatches = Vec::new();
    for case in cases() {
        let config = config_json("ferrolb", &case.spec)?;
        let want: Vec<String> = case
            .expected
            .iter()
            .map(|p| format!("{}: {}: {}", p.path, p.value, p.reason))
            .collect();
        let file = dir.join("config.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&config)?)?;
        let (offline_ok, offline_lines) = validate_offline(&tb, &file)?;
        let online = dry_run_create(&client, &config).await?;
        let rule = case.rule;
        match (&online, want.is_empty()) {
            (Ok(()), true) => {
                admitted += 1;
                if !offline_ok {
                    mismatches.push(format!(
                        "{rule}: admitted, but validate -f said {offline_lines:?}"
                    ));
                }
            }
            (Ok(()), false) => mismatches.push(format!("{rule}: admitted, want {want:?}")),
            (Err(message), true) => mismatches.push(format!("{rule}: refused: {message}")),
            (Err(message), false) => {
                if offline_ok || offline_lines != want {
                    mismatches.push(format!(
                        "{rule}: validate -f said {offline_lines:?}, want {want:?}"
                    ));
                }
                match message.split_once("denied the request: ") {
                    Some((_, lines)) => {
                        by_webhook += 1;
                        let got: Vec<&str> = lines.lines().collect();
                        if got != want {
                            mismatches.push(format!("{rule}: webhook said {got:?}, want {want:?}"));
                        }
                    }
                    None => {
                        by_schema += 1;
                        if !message.contains(&case.expected[0].path) {
                            mismatches.push(format!(
                                "{rule}: the schema refused it without naming {}: {message}",
                                case.expected[0].path
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{} cases: {admitted} admitted, {by_webhook} refused by the webhook, {by_schema} by the CRD's schema first",
        admitted + by_webhook + by_schema + mismatches.len()
    );
    ensure!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    ensure!(by_webhook > 0 && admitted > 0);

    // As an admin sees it: kubectl apply (and its dry run) prints every line.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: ferrolb.io/v1alpha1\nkind: LoadBalancerConfig\nmetadata: {name: ferrolb}\nspec:\n  addressPools:\n  - {name: a, addresses: [203.0.113.0/28]}\n  - {name: b, addresses: [203.0.113.8/29]}\n  l2Advertisements:\n  - {name: l2, addressPools: [c]}\n",
    )?;
    let bad_path = bad.display().to_string();
    for dry_run in [true, false] {
        let mut args = vec!["apply", "--server-side", "-f", &bad_path];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = tb.kubectl(&args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "kubectl apply took a bad config");
        for path in [
            "spec.addressPools[1].addresses[0]",
            "spec.l2Advertisements[0].addressPools[0]",
        ] {
            ensure!(
                stderr.contains(path),
                "kubectl apply (dry run {dry_run}) did not name {path}: {stderr}"
            );
        }
    }
    ensure!(
        Api::<LoadBalancerConfig>::all(client.clone())
            .get_opt("ferrolb")
            .await?
            .is_none(),
        "a refused config was stored"
    );
    // A valid config that is probably wrong is admitted, and kubectl prints why it may be wrong.
    let unannounced = dir.join("unannounced.yaml");
    std::fs::write(
        &unannounced,
        "apiVersion: ferrolb.io/v1alpha1\nkind: LoadBalancerConfig\nmetadata: {name: ferrolb}\nspec:\n  addressPools:\n  - {name: a, addresses: [203.0.113.0/28]}\n  speaker: {nodeSelector: {rack: nowhere}}\n",
    )?;
    let out = tb.kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        &unannounced.display().to_string(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    for warning in [
        "Warning: spec.addressPools[0]: no L2 or BGP advertisement selects pool \"a\"",
        "Warning: spec.speaker.nodeSelector: matches none of the cluster's 3 nodes",
    ] {
        ensure!(
            stderr.contains(warning),
            "kubectl did not print {warning:?}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Sends admission requests (server-side dry-run creates of a valid config) from two tasks,
/// back to back, until stopped; counts answers and keeps every failure.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(client: &Client) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let config = config_json(
            "ferrolb",
            &json!({"addressPools": [{"name": "l2", "addresses": ["203.0.113.64/27"]}],
                    "l2Advertisements": [{"name": "l2"}]}),
        )?;
        let tasks = (0..2)
            .map(|_| {
                let (client, stop, config) = (client.clone(), stop.clone(), config.clone());
                tokio::spawn(async move {
                    let (mut answered, mut failures) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match dry_run_create(&client, &config).await {
                            Ok(Ok(())) => answered += 1,
                            Ok(Err(message)) => failures.push(message),
                            Err(e) => failures.push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    (answered, failures)
                })
            })
            .collect();
        Ok(Self { stop, tasks })
    }

    async fn finish(self) -> anyhow::Result<(u64, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let (mut answered, mut failures) = (0, Vec::new());
        for task in self.tasks {
            let (a, f) = task.await?;
            answered += a;
            failures.extend(f);
        }
        Ok((answered, failures))
    }
}

/// The distinct failure messages, each once, for an error message.
fn distinct(failures: &[String]) -> Vec<&str> {
    let set: BTreeSet<&str> = failures.iter().map(String::as_str).collect();
    set.into_iter().take(5).collect()
}

/// With certificates of 36 s (`--webhook-cert-lifetime-seconds=36`), the operator renews them
/// over and over: a new CA trusted first, then served, then the old one dropped. Requests sent
/// back to back all the while are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn certificate_rotations_fail_no_request() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    uninstall(&tb);
    let _installed = install_operator(&tb, &client).await?;
    patch_operator(
        &tb,
        &json!([{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--webhook-cert-lifetime-seconds=36"}]),
    )?;
    wait_operator_replicas(&client).await?;
    wait_webhook(&client).await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM);
    let served_ca = || async {
        let secret = secrets.get("ferrolb-operator-webhook-tls").await?;
        anyhow::Ok(
            secret
                .data
                .unwrap_or_default()
                .get("ca.crt")
                .map(|b| b.0.clone())
                .unwrap_or_default(),
        )
    };
    let load = Load::start(&client)?;
    let started = Instant::now();
    let mut cas = BTreeSet::from([served_ca().await?]);
    // Three renewals: the year-long certificate at once (it outlives 36 s), then every 24 s
    // (a renewal starts with a third of the lifetime left; its three phases take 3 s each).
    while cas.len() < 4 && started.elapsed() < Duration::from_secs(150) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cas.insert(served_ca().await?);
    }
    // The last renewal's dropping-previous phase ends a step (3 s) after it began.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (answered, failures) = load.finish().await?;
    eprintln!(
        "{} certificates served in {:.0?}; {answered} requests answered, {} failed",
        cas.len(),
        started.elapsed(),
        failures.len()
    );
    apply_default(&tb)?;
    ensure!(
        cas.len() >= 4,
        "only {} certificates in {:?}",
        cas.len(),
        started.elapsed()
    );
    ensure!(
        failures.is_empty(),
        "requests failed during rotations: {failures:#?}"
    );
    wait_operator_rollout(&tb)?;
    Ok(())
}

/// A replica that goes away (a drain deletes its pod; the Deployment makes another) fails no
/// request: it leaves the endpoints at once and answers what it still gets for 5 s more. A
/// replica killed outright (SIGKILL) is reported, not asserted: requests already on their way
/// to it fail at the API server, which does not retry them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_replica_going_away_fails_no_request() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    uninstall(&tb);
    let _installed = install_operator(&tb, &client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);

    // The Lease holder first (it hands the Lease over while it drains), then a standby.
    for leader in [true, false] {
        let load = Load::start(&client)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let holder = operator_leader(&client).await?;
        let victim = ready_operators(&client)
            .await?
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .find(|name| (*name == holder) == leader)
            .context("no such replica")?;
        pods.delete(&victim, &DeleteParams::default()).await?;
        wait_for("the pod gone", T, || async {
            Ok(pods.get_opt(&victim).await?.is_none().then_some(()))
        })
        .await?;
        wait_operator_replicas(&client).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (answered, failures) = load.finish().await?;
        let role = if leader { "leader" } else { "standby" };
        eprintln!(
            "pod {victim} ({role}) deleted: {answered} requests answered, {} failed",
            failures.len()
        );
        ensure!(
            failures.is_empty(),
            "requests failed while {victim} went away: {failures:#?}"
        );
    }

    let load = Load::start(&client)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = ready_operators(&client).await?.remove(0);
    let pid = pod_pid(&victim).context("the operator's pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_operator_replicas(&client).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (answered, failures) = load.finish().await?;
    eprintln!(
        "a replica SIGKILLed: {answered} requests answered, {} failed{}",
        failures.len(),
        failures
            .first()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    Ok(())
}

/// The operator's `loaded` certificate count on each replica.
fn certificate_loads(tb: &Testbed, pods: &[Pod]) -> anyhow::Result<Vec<u64>> {
    pods.iter()
        .map(|pod| {
            let metrics = pod_metrics(tb, pod)?;
            Ok(metrics
                .lines()
                .find(|l| {
                    l.starts_with(
                        "ferrolb_operator_webhook_certificate_loads_total{result=\"loaded\"}",
                    )
                })
                .and_then(|l| l.split_whitespace().last()?.parse().ok())
                .unwrap_or(0))
        })
        .collect()
}

fn set_ca_bundle(tb: &Testbed, pems: &[&str]) -> anyhow::Result<()> {
    use k8s_openapi::ByteString;
    let bundle = serde_json::to_value(ByteString(pems.concat().into_bytes()))?;
    let patch =
        json!([{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]);
    tb.kubectl_ok(&[
        "patch",
        "validatingwebhookconfiguration",
        "ferrolb-operator",
        "--type=json",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

/// Provided certificates (`--webhook-certs=files`, as OLM mounts them or cert-manager writes
/// them): the operator serves `tls.crt`/`tls.key` from the mounted Secret, writes no
/// certificate of its own, and serves a renewed pair once the kubelet updates the files, without
/// a restart. The CA is the provider's to publish (here the test, trusting both CAs while the
/// pair changes); no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn provided_certificates_are_served_and_reloaded() -> anyhow::Result<()> {
    use ferrolb_operator::webhook::certs;
    use k8s_openapi::jiff::Timestamp;
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    uninstall(&tb);
    let _installed = install_operator(&tb, &client).await?;
    let names = certs::service_dns_names("ferrolb-operator-webhook", SYSTEM);
    let lifetime = Duration::from_secs(3600);
    let first = certs::issue(&names, Timestamp::now(), lifetime)?;
    let second = certs::issue(&names, Timestamp::now(), lifetime)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM);
    let provided = |pair: &certs::Pair| -> anyhow::Result<Secret> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "webhook-provided", "namespace": SYSTEM},
            "stringData": {"tls.crt": pair.cert, "tls.key": pair.key},
        }))?)
    };
    let _ = secrets
        .delete("webhook-provided", &DeleteParams::default())
        .await;
    secrets
        .create(&PostParams::default(), &provided(&first)?)
        .await?;

    let mount = json!([
        {"op": "add", "path": "/spec/template/spec/volumes", "value": [{"name": "provided", "secret": {"secretName": "webhook-provided"}}]},
        {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts", "value": [{"name": "provided", "mountPath": "/tmp/k8s-webhook-server/serving-certs", "readOnly": true}]},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--webhook-certs=files"},
    ]);
    patch_operator(&tb, &mount)?;
    wait_operator_replicas(&client).await?;
    // The self-managed replicas gone for good: a stopping one could still be inside a write.
    wait_operator_pods(&client, 2).await?;
    // From here on only the provided files are served: the operator writes no Secret.
    let self_managed = secrets
        .get("ferrolb-operator-webhook-tls")
        .await?
        .metadata
        .resource_version;
    set_ca_bundle(&tb, &[&first.ca])?;
    wait_webhook(&client).await?;

    let load = Load::start(&client)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A renewal as a provider does it: trust both CAs, then replace the pair, then drop the old CA.
    set_ca_bundle(&tb, &[&first.ca, &second.ca])?;
    let pods = ready_operators(&client).await?;
    let loads_before = certificate_loads(&tb, &pods)?;
    secrets
        .replace("webhook-provided", &PostParams::default(), &{
            let mut s = provided(&second)?;
            s.metadata.resource_version = secrets
                .get("webhook-provided")
                .await?
                .metadata
                .resource_version;
            s
        })
        .await?;
    let reloaded = Instant::now();
    wait_for("both replicas serving the new pair", T, || async {
        let loads = certificate_loads(&tb, &pods)?;
        Ok(loads
            .iter()
            .zip(&loads_before)
            .all(|(now, before)| now > before)
            .then_some(()))
    })
    .await?;
    let reloaded = reloaded.elapsed();
    set_ca_bundle(&tb, &[&second.ca])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (answered, failures) = load.finish().await?;
    eprintln!(
        "provided pair replaced: served by both replicas after {reloaded:.1?}; {answered} requests answered, {} failed",
        failures.len()
    );
    let untouched = secrets
        .get("ferrolb-operator-webhook-tls")
        .await?
        .metadata
        .resource_version;

    // Back to the plain install (self-managed): a fresh Deployment from config/default.
    tb.kubectl_ok(&[
        "delete",
        "deployment",
        "ferrolb-operator",
        "-n",
        SYSTEM,
        "--wait=true",
    ])?;
    secrets
        .delete("webhook-provided", &DeleteParams::default())
        .await?;
    apply_default(&tb)?;
    wait_operator_replicas(&client).await?;
    wait_webhook(&client).await?;
    ensure!(
        failures.is_empty(),
        "{} requests failed: {:#?}",
        failures.len(),
        distinct(&failures)
    );
    ensure!(
        untouched == self_managed,
        "the operator wrote its own certificate Secret in files mode"
    );
    Ok(())
}

/// With no webhook replica up, the API server refuses every spec change with a message naming
/// the webhook, and nothing else: metadata-only updates pass, and a config can still be deleted
/// (its finalizer removed by hand, the operator being down too). The install comes back with
/// `config/default`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn with_no_replica_only_spec_changes_are_refused() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = ferrolb_testbed::ferrolb::install_with(
        &tb,
        &client,
        json!({"addressPools": [{"name": "l2", "addresses": ["203.0.113.64/27"]}],
               "l2Advertisements": [{"name": "l2"}]}),
    )
    .await?;
    tb.kubectl_ok(&[
        "scale",
        "deployment",
        "ferrolb-operator",
        "-n",
        SYSTEM,
        "--replicas=0",
    ])?;
    wait_operator_pods(&client, 0).await?;

    let spec_change = tb.kubectl(&[
        "patch",
        "lbc",
        "ferrolb",
        "--type=merge",
        "-p",
        r#"{"spec":{"logLevel":"debug"}}"#,
    ])?;
    let refusal = String::from_utf8_lossy(&spec_change.stderr).into_owned();
    eprintln!("spec change with no replica: {}", refusal.trim());
    ensure!(
        !spec_change.status.success(),
        "a spec change passed with no webhook replica"
    );
    ensure!(
        refusal.contains("failed calling webhook \"validate.loadbalancerconfigs.ferrolb.io\""),
        "the refusal does not name the webhook: {refusal}"
    );
    tb.kubectl_ok(&[
        "annotate",
        "lbc",
        "ferrolb",
        "example.com/note=webhook-down",
    ])?;
    tb.kubectl_ok(&["delete", "lbc", "ferrolb", "--wait=false"])?;
    tb.kubectl_ok(&[
        "patch",
        "lbc",
        "ferrolb",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    wait_for("the config gone", T, || async {
        Ok(Api::<LoadBalancerConfig>::all(client.clone())
            .get_opt("ferrolb")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;

    apply_default(&tb)?;
    wait_operator_replicas(&client).await?;
    wait_webhook(&client).await?;
    Ok(())
}
