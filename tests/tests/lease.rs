//! Leader election on the testbed: two controller replicas, one of them writing a wall clock ten
//! minutes off into the Lease (the hidden `FERROLB_LEASE_CLOCK_SKEW_SECONDS`). Expiry is measured
//! on each replica's own monotonic clock, so the skew must neither make leadership flap nor keep
//! a standby from replacing a dead leader; and a leader frozen past its renew deadline must stop
//! (its process exits) instead of writing on when it wakes.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrolb_testbed::ferrolb::{CONTROLLER_PODS, SYSTEM, controller_leader, install_with};
use ferrolb_testbed::harness::{
    Frozen, Testbed, ingress_ips, netns_sh, pod_pid, pod_ready, wait_for,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
/// The controller's default `--lease-seconds`.
const LEASE: Duration = Duration::from_secs(5);
/// The copy of the controller Deployment whose one replica has a skewed clock.
const SKEWED: &str = "ferrolb-controller-skewed";
const SKEWED_PODS: &str = "app.kubernetes.io/component=controller-skewed";
const FIELD_MANAGER: &str = "ferrolb-lease-test";

/// Deletes the skewed Deployment (and waits for its pod) when dropped, even by panic.
struct SkewedReplica(Testbed);

impl Drop for SkewedReplica {
    fn drop(&mut self) {
        let tb = &self.0;
        let deployment = format!("deployment/{SKEWED}");
        let _ = tb.kubectl(&[
            "delete",
            &deployment,
            "-n",
            SYSTEM,
            "--ignore-not-found",
            "--wait=true",
        ]);
        let _ = tb.kubectl(&[
            "wait",
            "--for=delete",
            "pod",
            "-l",
            SKEWED_PODS,
            "-n",
            SYSTEM,
            "--timeout=60s",
        ]);
    }
}

/// The Lease as the test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    holder: String,
    transitions: i32,
    renew_time: Option<Timestamp>,
}

async fn held(client: &Client) -> anyhow::Result<Held> {
    let lease = Api::<Lease>::namespaced(client.clone(), SYSTEM)
        .get("ferrolb-controller")
        .await?;
    let spec = lease.spec.unwrap_or_default();
    Ok(Held {
        holder: spec.holder_identity.unwrap_or_default(),
        transitions: spec.lease_transitions.unwrap_or(0),
        renew_time: spec.renew_time.map(|t| t.0),
    })
}

/// The one live pod of `selector`, once it is ready and alone.
async fn only_ready_pod(client: &Client, selector: &str) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    wait_for(&format!("one ready pod of {selector}"), T, || async {
        let list = pods.list(&ListParams::default().labels(selector)).await?;
        Ok(match list.items.as_slice() {
            [pod] if pod.metadata.deletion_timestamp.is_none() && pod_ready(pod) => {
                Some(pod.clone())
            }
            _ => None,
        })
    })
    .await
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// Applies the skewed copy of the controller Deployment: one replica, its own pod label, the
/// clock skew in its environment.
async fn apply_skewed(client: &Client, skew_seconds: i64) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM);
    let stock = deployments.get("ferrolb-controller").await?;
    let mut template = serde_json::to_value(
        stock
            .spec
            .context("the controller Deployment has no spec")?
            .template,
    )?;
    template["metadata"]["labels"]["app.kubernetes.io/component"] = json!("controller-skewed");
    let container = &mut template["spec"]["containers"][0];
    let env = container["env"]
        .as_array_mut()
        .context("the controller container has no env")?;
    env.retain(|e| e["name"] != "FERROLB_LEASE_CLOCK_SKEW_SECONDS");
    env.push(
        json!({"name": "FERROLB_LEASE_CLOCK_SKEW_SECONDS", "value": skew_seconds.to_string()}),
    );
    let skewed = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": SKEWED, "namespace": SYSTEM,
                     "labels": {"app.kubernetes.io/component": "controller-skewed"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "ferrolb",
                                         "app.kubernetes.io/component": "controller-skewed"}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "template": template,
        },
    });
    let applied = deployments
        .patch(
            SKEWED,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&skewed),
        )
        .await?;
    // Until the rollout of this generation is over, the old pod may still be the only one (and
    // ready): the caller must not take it for the new one.
    let generation = applied.metadata.generation;
    wait_for("the skewed replica rolled out", T, || async {
        let d = deployments.get(SKEWED).await?;
        let status = d.status.unwrap_or_default();
        let done = status.observed_generation >= generation
            && status.updated_replicas == Some(1)
            && status.replicas == Some(1)
            && status.ready_replicas == Some(1);
        Ok(done.then_some(()))
    })
    .await
}

async fn service_gets_an_ip(api: &Api<Service>, name: &str) -> anyhow::Result<Vec<String>> {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))?;
    api.create(&PostParams::default(), &svc).await?;
    wait_for(&format!("an IP for {name}"), T, || async {
        let ips = ingress_ips(&api.get(name).await?);
        Ok((!ips.is_empty()).then_some(ips))
    })
    .await
}

/// Over `window`, the holder and `leaseTransitions` stay what they are and nobody restarts.
async fn no_flapping(client: &Client, window: Duration, pods: &[&Pod]) -> anyhow::Result<Held> {
    let first = held(client).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let started = Instant::now();
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = held(client).await?;
        if now.holder != first.holder || now.transitions != first.transitions {
            bail!(
                "leadership moved after {:.1?}: {first:?} -> {now:?}",
                started.elapsed()
            );
        }
    }
    for pod in pods {
        let now = api.get(&pod.name_any()).await?;
        if restarts(&now) != restarts(pod) {
            bail!("{} restarted during the window", pod.name_any());
        }
    }
    Ok(first)
}

/// Freezes the leader; the other replica must take over after the lease duration of its own
/// time (not at once, not never); the thawed leader must stop (its process exits, having not
/// written the Lease again). Returns the takeover time.
async fn failover(
    tb: &Testbed,
    client: &Client,
    leader: &Pod,
    standby: &Pod,
    standby_skew: i64,
) -> anyhow::Result<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let before = held(client).await?;
    assert_eq!(before.holder, leader.name_any());
    let pid = pod_pid(leader).context("the leader's PID")?;
    let frozen = Frozen::new(pid)?;
    let stopped = Instant::now();
    let standby_name = standby.name_any();
    let after = wait_for("the standby to take over", LEASE * 3, || async {
        let now = held(client).await?;
        Ok((now.holder == standby_name).then_some(now))
    })
    .await?;
    let took = stopped.elapsed();
    assert_eq!(
        after.transitions,
        before.transitions + 1,
        "one transition: {before:?} -> {after:?}"
    );
    // The standby wrote its own (possibly skewed) wall clock.
    if let Some(renewed) = after.renew_time {
        let off = renewed.duration_since(Timestamp::now()).as_secs();
        assert!(
            (off - standby_skew).abs() < 30,
            "renewTime is {off} s from now, the standby's skew is {standby_skew} s"
        );
    }
    drop(frozen);
    // Thawed past its deadline, the old leader steps down and its process exits.
    let leader_name = leader.name_any();
    let old_restarts = restarts(leader);
    // The kubelet restarts it (after its crash-loop back-off: 10 s, then 20 s, ...); wait for
    // the new process to be ready, so the next window does not see that restart.
    wait_for(
        "the thawed leader's process to exit and be restarted",
        T,
        || async {
            let pod = pods.get(&leader_name).await?;
            Ok((restarts(&pod) > old_restarts && pod_ready(&pod)).then_some(()))
        },
    )
    .await?;
    let log = tb.pod_log(leader, "controller").unwrap_or_default();
    assert!(
        log.contains("lost leadership; the reconciler was stopped"),
        "the thawed leader's log says why it stopped:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let now = held(client).await?;
    assert_eq!(
        (now.holder.as_str(), now.transitions),
        (standby_name.as_str(), after.transitions),
        "the thawed leader did not take the Lease back"
    );
    Ok(took)
}

/// The value of the metric `name` on a controller pod's `/metrics`, read from the client namespace.
fn metric(tb: &Testbed, pod: &Pod, name: &str) -> anyhow::Result<Option<f64>> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("pod IP")?;
    let url = format!("http://{ip}:8080/metrics");
    let text = netns_sh(&tb.client_netns, &["curl", "-sS", "-m", "5", &url])?;
    Ok(text.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    }))
}

/// `ferrolb_leader` (and the transitions counter) is 1 on the holder and 0 on the other.
async fn leader_gauges(tb: &Testbed, client: &Client, pods: [&Pod; 2]) -> anyhow::Result<()> {
    wait_for("ferrolb_leader on both replicas", T, || async {
        let holder = held(client).await?.holder;
        for pod in pods {
            let want = if pod.name_any() == holder { 1.0 } else { 0.0 };
            // Each process starts as a standby: the holder became leader once, the other never.
            if metric(tb, pod, "ferrolb_leader")? != Some(want)
                || metric(tb, pod, "ferrolb_leader_transitions_total")? != Some(want)
            {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_skewed_clock_neither_flaps_leadership_nor_blocks_failover() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    // One replica of the stock Deployment (set in the config: the operator owns the Deployment),
    // one of the skewed copy.
    let _installed = install_with(
        &tb,
        &client,
        json!({
            "controller": {"replicas": 1},
            "addressPools": [{"name": "lease", "addresses": ["203.0.113.96/28"]}],
        }),
    )
    .await?;
    let _skewed = SkewedReplica(tb.clone());
    let ns = tb.namespace(&client, "lease").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    for skew in [600i64, -600] {
        apply_skewed(&client, skew).await?;
        let mut stock = only_ready_pod(&client, CONTROLLER_PODS).await?;
        let mut skewed = only_ready_pod(&client, SKEWED_PODS).await?;
        let (stock_name, skewed_name) = (stock.name_any(), skewed.name_any());
        let tag = if skew < 0 { "behind" } else { "ahead" };
        wait_for("a leader among the two replicas", T, || async {
            let holder = controller_leader(&client).await?;
            Ok((holder == stock_name || holder == skewed_name).then_some(()))
        })
        .await?;

        // Both directions: whoever leads first is frozen first, then the other.
        for round in 0..2 {
            let window = if round == 0 {
                Duration::from_secs(20)
            } else {
                Duration::from_secs(10)
            };
            let stable = no_flapping(&client, window, &[&stock, &skewed]).await?;
            let name = format!("{tag}-{round}");
            let ips = service_gets_an_ip(&services, &name).await?;
            let (leader, standby, standby_skew) = if stable.holder == stock.name_any() {
                (&stock, &skewed, skew)
            } else {
                (&skewed, &stock, 0)
            };
            let took = failover(&tb, &client, leader, standby, standby_skew).await?;
            eprintln!(
                "skew {skew:+} s: held by {} for {window:?} with no transition ({} got {ips:?}); \
                 frozen, {} took over after {took:.1?}",
                stable.holder,
                name,
                standby.name_any()
            );
            assert!(
                took >= LEASE - Duration::from_secs(2),
                "taken over after {took:?}: before the holder's lease could expire"
            );
            assert!(
                took <= LEASE + Duration::from_secs(5),
                "taken over after {took:?}: more than the lease duration and a margin"
            );
            service_gets_an_ip(&services, &format!("{tag}-{round}-after")).await?;
            // The thawed replica restarts as the standby.
            stock = only_ready_pod(&client, CONTROLLER_PODS).await?;
            skewed = only_ready_pod(&client, SKEWED_PODS).await?;
            leader_gauges(&tb, &client, [&stock, &skewed]).await?;
        }
    }

    // A leader deleted as a Deployment's pod is (SIGTERM) releases the Lease: a standby (the
    // other replica, or the pod that replaces the deleted one) takes it at its next look, well
    // within the lease duration.
    let before = held(&client).await?;
    let deleted = Instant::now();
    Api::<Pod>::namespaced(client.clone(), SYSTEM)
        .delete(&before.holder, &Default::default())
        .await?;
    let after = wait_for("a standby to take the released Lease", LEASE, || async {
        let now = held(&client).await?;
        Ok((!now.holder.is_empty() && now.holder != before.holder).then_some(now))
    })
    .await?;
    let took = deleted.elapsed();
    eprintln!(
        "leader pod deleted: {} took the released Lease after {took:.1?}",
        after.holder
    );
    assert!(
        took < LEASE - Duration::from_secs(1),
        "a released Lease is taken at once, not after expiry ({took:?})"
    );
    Ok(())
}
