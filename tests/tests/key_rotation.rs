//! Rotating the speakers' membership key on the testbed, judged as a user sees it: FerroLB
//! installed through the operator, a Layer 2 address answered by its leader, and a rotation
//! requested with the config's annotation `ferrolb.io/rotate-membership-key` (the operator's
//! step shortened to [`STEP`]).
//!
//! The testbed's kubelets (syncFrequency 5 s) deliver a Secret update within seconds of each
//! other, so the tests make it late on purpose where it hurts: the two other nodes' kubelets are
//! paused (SIGSTOP: their pods keep running, their volumes are not refreshed) from just before
//! each change of the Secret until the leader's speaker has taken it, so the leader is always a
//! phase ahead for a while. Through the whole rotation no speaker declares another dead, none
//! drops a message for a bad MAC, the address keeps its leader and the client is not
//! interrupted (an isolated lost probe is tolerated, no gap of a second); the Secret ends with a
//! new key only. And why the phases are needed: the same lateness after a key rewritten in one
//! step makes the late speakers declare the leader dead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use ferrolb_testbed::ferrolb::{Installed, SPEAKER_PODS, SYSTEM, install, patch_operator};
use ferrolb_testbed::harness::{
    Frozen, Probe, TestNamespace, Testbed, ingress_ips, netns_sh, pod_ready, replace_lb_config,
    unique_name, wait_for,
};
use ferrolb_testbed::workloads::{create_deployment, echo_container};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const T: Duration = Duration::from_secs(90);
/// The operator's step between two phases, for the test: longer than the late nodes take to
/// read a change (the leader's kubelet refreshes the volume within 7.5 s, its speaker re-reads
/// it within 10.5 s, [`LATE`], then the late kubelets' own 7.5 s and their speakers' 10.5 s:
/// 39 s in all; a step of 60 s leaves a wide margin).
const STEP: Duration = Duration::from_secs(60);
/// How long the late nodes stay late after the leader took a change.
const LATE: Duration = Duration::from_secs(3);
const OPERATOR: &str = "ferrolb-operator";
const SECRET: &str = "ferrolb-memberlist";
const REQUEST: &str = "ferrolb.io/rotate-membership-key";
const SERVED: &str = "ferrolb.io/membership-key-rotation-request";
const PHASE: &str = "ferrolb.io/membership-key-rotation-phase";
const DEAD: &str = "ferrolb_speaker_membership_state_changes_total{state=\"dead\"}";
const BAD_MAC: &str = "ferrolb_speaker_membership_messages_dropped_total{reason=\"bad_mac\"}";
const KEYS: &str = "ferrolb_speaker_membership_keys";
const MEMBERS: &str = "ferrolb_speaker_membership_members";
const KEY_CHANGES: &str = "ferrolb_speaker_membership_key_changes_total";
const GAINED: &str = "ferrolb_speaker_leadership_gained_total";

/// FerroLB with an L2 pool, an echo Deployment and a LoadBalancer Service `web` in front of it.
struct World {
    tb: Testbed,
    client: Client,
    ns: TestNamespace,
    ip: String,
    leader: String,
    _installed: Installed,
}

async fn world(prefix: &str) -> anyhow::Result<World> {
    let tb = Testbed::start_or_reuse()?;
    ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let client = tb.client().await?;
    let installed = install(&tb, &client).await?;
    replace_lb_config(
        &client,
        json!({
            "addressPools": [{"name": "l2", "addresses": ["203.0.113.64/27"]}],
            "l2Advertisements": [{"name": "l2", "addressPools": ["l2"]}],
        }),
    )
    .await?;
    let ns = tb.namespace(&client, prefix).await?;
    create_deployment(
        &client,
        &ns.name,
        "web",
        3,
        json!({"containers": [echo_container()]}),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    wait_for("3 ready web pods", T, || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        Ok((list.items.iter().filter(|p| pod_ready(p)).count() == 3).then_some(()))
    })
    .await?;
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    services.create(&PostParams::default(), &svc).await?;
    let mut world = World {
        tb,
        client,
        ns,
        ip: String::new(),
        leader: String::new(),
        _installed: installed,
    };
    let (ip, leader) = wait_for("web announced", T, || async {
        let svc = services.get("web").await?;
        let Some(ip) = ingress_ips(&svc).into_iter().find(|ip| !ip.contains(':')) else {
            return Ok(None);
        };
        Ok(announcer(&svc, &ip).map(|node| (ip, node)))
    })
    .await?;
    world.ip = ip;
    world.leader = leader;
    let url = format!("http://{}/", world.ip);
    wait_for("web answers", T, || async {
        Ok(
            netns_sh(&world.tb.client_netns, &["curl", "-sS", "-m", "3", &url])
                .ok()
                .filter(|a| a.contains("pod=")),
        )
    })
    .await?;
    Ok(world)
}

/// The node the `ferrolb.io/Announced` condition names for `ip` ("… IP from node NODE …").
fn announcer(svc: &Service, ip: &str) -> Option<String> {
    let condition = svc
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ferrolb.io/Announced" && c.status == "True")?;
    let after = condition
        .message
        .split(&format!("{ip} from node "))
        .nth(1)?;
    after
        .split([' ', ';'])
        .next()
        .map(str::to_owned)
        .filter(|n| !n.is_empty())
}

impl World {
    /// The node the Service's condition names as the leader of its address now.
    async fn leader_now(&self) -> anyhow::Result<Option<String>> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns.name);
        Ok(announcer(&services.get("web").await?, &self.ip))
    }

    /// A speaker's metric series (`name` or `name{labels}`, summed over label sets when no
    /// labels are given; 0 when absent), scraped from inside its node.
    fn metric(&self, node: usize, series: &str) -> anyhow::Result<f64> {
        let text = netns_sh(
            &self.tb.node_netns[node],
            &["curl", "-sS", "-m", "3", "http://127.0.0.1:7473/metrics"],
        )?;
        let labelled = series.contains('{');
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(series).is_some_and(|rest| {
                    rest.starts_with(' ') || (!labelled && rest.starts_with('{'))
                })
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            + 0.0)
    }

    /// One series on every node, in node order.
    fn everywhere(&self, series: &str) -> anyhow::Result<Vec<f64>> {
        (0..self.tb.node_names.len())
            .map(|i| self.metric(i, series))
            .collect()
    }

    /// The speaker pods by node: (name, uid).
    async fn speakers(&self) -> anyhow::Result<BTreeMap<String, (String, String)>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM);
        Ok(pods
            .list(&ListParams::default().labels(SPEAKER_PODS))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                Some((node, (p.name_any(), p.uid()?)))
            })
            .collect())
    }

    async fn secret(&self) -> anyhow::Result<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), SYSTEM)
            .get(SECRET)
            .await
            .context("the membership Secret")
    }
}

/// The Secret's entries by name.
fn entries(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// The Secret's shape, for the log and the phases: `key`, `key+next`, `key+previous`.
fn shape(entries: &BTreeMap<String, Vec<u8>>) -> String {
    entries.keys().cloned().collect::<Vec<_>>().join("+")
}

/// The operator's rotation step shortened to `STEP` (its Deployment's args); the args are put
/// back when dropped (before the install guard removes FerroLB).
struct ShortStep {
    tb: Testbed,
    original: serde_json::Value,
}

impl ShortStep {
    async fn set(tb: &Testbed, client: &Client) -> anyhow::Result<ShortStep> {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM);
        let deployment = deployments.get(OPERATOR).await?;
        let args: Vec<String> = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.args.clone())
            .ok_or_else(|| anyhow!("the operator container has no args"))?;
        let mut short = args.clone();
        short.push(format!("--key-rotation-step-seconds={}", STEP.as_secs()));
        let guard = ShortStep {
            tb: tb.clone(),
            original: json!(args),
        };
        guard.patch(&json!(short))?;
        operator_leading(client).await?;
        Ok(guard)
    }

    fn patch(&self, args: &serde_json::Value) -> anyhow::Result<()> {
        patch_operator(
            &self.tb,
            &json!([{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args}]),
        )
    }
}

impl Drop for ShortStep {
    fn drop(&mut self) {
        let original = self.original.clone();
        if let Err(e) = self.patch(&original) {
            eprintln!("restoring the operator's args: {e:#}");
        }
    }
}

/// Waits until a ready operator pod of the current rollout holds the operator's Lease.
async fn operator_leading(client: &Client) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    wait_for("a new operator leading", T, || async {
        let ready: Vec<String> = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
            .map(|p| p.name_any())
            .collect();
        let holder = leases
            .get_opt(OPERATOR)
            .await?
            .and_then(|l| l.spec?.holder_identity);
        Ok(holder.filter(|h| ready.contains(h)))
    })
    .await
}

/// The kubelets of `nodes` stopped (SIGSTOP) until the guards are dropped: their pods keep
/// running, but their volumes (the membership Secret) are not refreshed. Short pauses only: a
/// node's Lease expires after 40 s.
fn freeze_kubelets(tb: &Testbed, nodes: &[usize]) -> anyhow::Result<Vec<Frozen>> {
    nodes
        .iter()
        .map(|i| Frozen::new(tb.kubelet_pid(&tb.node_names[*i])?))
        .collect()
}

/// Every speaker's counters that must not move in a rotation.
#[derive(Debug, PartialEq)]
struct Counters {
    dead: Vec<f64>,
    bad_mac: Vec<f64>,
    gained: Vec<f64>,
}

fn counters(w: &World) -> anyhow::Result<Counters> {
    Ok(Counters {
        dead: w.everywhere(DEAD)?,
        bad_mac: w.everywhere(BAD_MAC)?,
        gained: w.everywhere(GAINED)?,
    })
}

/// What the rotation test saw, checked every poll.
struct Watch<'a> {
    w: &'a World,
    before: Counters,
    started: Instant,
    /// The Secret's shapes in order, with when they were first seen.
    shapes: Vec<(String, Duration)>,
    progressing_seen: bool,
}

impl Watch<'_> {
    /// One look: nothing moved (or it fails), and the Secret's shape is recorded.
    async fn check(&mut self) -> anyhow::Result<()> {
        let at = self.started.elapsed();
        let shape = shape(&entries(&self.w.secret().await?));
        if self.shapes.last().map(|(s, _)| s) != Some(&shape) {
            eprintln!("{at:>7.1?} Secret: {shape}");
            self.shapes.push((shape.clone(), at));
        }
        let now = counters(self.w)?;
        ensure!(
            now == self.before,
            "at {at:?} (Secret {shape}): counters moved: {:?} → {now:?}",
            self.before
        );
        let leader = self.w.leader_now().await?;
        ensure!(
            leader.as_deref() == Some(self.w.leader.as_str()),
            "at {at:?}: the address moved from {} to {leader:?}",
            self.w.leader
        );
        let progressing = self.w.tb.kubectl(&[
            "get",
            "lbc",
            "ferrolb",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
        ])?;
        self.progressing_seen |=
            String::from_utf8_lossy(&progressing.stdout) == "RotatingMembershipKey";
        Ok(())
    }

    /// Checks every half second until `done` holds (or `timeout`).
    async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&World) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check().await?;
            if done(self.w)? {
                return Ok(self.started.elapsed());
            }
            ensure!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Checks for `period`.
    async fn during(&mut self, period: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + period;
        self.until("the end of the period", period * 2, |_| {
            Ok(Instant::now() >= end)
        })
        .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_requested_rotation_changes_the_key_without_a_false_failover() -> anyhow::Result<()> {
    let w = world("keyrot").await?;
    let _step = ShortStep::set(&w.tb, &w.client).await?;
    let nodes = w.tb.node_names.clone();
    let leader = nodes
        .iter()
        .position(|n| *n == w.leader)
        .ok_or_else(|| anyhow!("no node {}", w.leader))?;
    let late: Vec<usize> = (0..nodes.len()).filter(|i| *i != leader).collect();
    let speakers = w.speakers().await?;
    ensure!(
        speakers.len() == nodes.len(),
        "a speaker per node: {speakers:?}"
    );
    wait_for("every speaker sees all alive", T, || async {
        let members = w.everywhere(MEMBERS)?;
        let keys = w.everywhere(KEYS)?;
        Ok(
            (members.iter().all(|m| *m == nodes.len() as f64) && keys.iter().all(|k| *k == 1.0))
                .then_some(()),
        )
    })
    .await?;
    let old = entries(&w.secret().await?);
    ensure!(
        shape(&old) == "key",
        "a plain Secret to begin with: {}",
        shape(&old)
    );
    let changes_before = w.everywhere(KEY_CHANGES)?;
    let mut watch = Watch {
        w: &w,
        before: counters(&w)?,
        started: Instant::now(),
        shapes: Vec::new(),
        progressing_seen: false,
    };
    eprintln!("{} led by {}; before: {:?}", w.ip, w.leader, watch.before);
    let probe = Probe::start(
        &w.tb,
        &w.tb.client_netns,
        &format!("{}:80", w.ip),
        Duration::from_millis(50),
    )?;
    let request = unique_name("rotation");

    // Three changes of the Secret; before each the late nodes' kubelets are paused, and they
    // resume LATE after the leader took it.
    let mut pick_ups: Vec<(Duration, Vec<Duration>)> = Vec::new();
    for change in 1..=3u32 {
        if let Some((_, seen)) = watch.shapes.last().cloned() {
            // The next phase is due a step after the last was seen (which lags its write).
            let due = seen + STEP - Duration::from_secs(5);
            let wait = due.saturating_sub(watch.started.elapsed());
            watch.during(wait).await?;
        }
        let paused = freeze_kubelets(&w.tb, &late)?;
        let paused_at = watch.started.elapsed();
        if change == 1 {
            let out = w.tb.kubectl(&[
                "annotate",
                "lbc",
                "ferrolb",
                "--overwrite",
                &format!("{REQUEST}={request}"),
            ])?;
            ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let want = f64::from(change);
        let leader_took = watch
            .until(&format!("the leader taking change {change}"), T, |w| {
                Ok(w.metric(leader, KEY_CHANGES)? - changes_before[leader] >= want)
            })
            .await?;
        watch.during(LATE).await?;
        for i in &late {
            let n = w.metric(*i, KEY_CHANGES)? - changes_before[*i];
            ensure!(n < want, "{} took change {change} while paused", nodes[*i]);
        }
        drop(paused);
        eprintln!(
            "{:>7.1?} change {change}: kubelets paused at {paused_at:.1?}, the leader took it at {leader_took:.1?}",
            watch.started.elapsed()
        );
        let mut late_took = Vec::new();
        for i in &late {
            late_took.push(
                watch
                    .until(&format!("{} taking change {change}", nodes[*i]), T, |w| {
                        Ok(w.metric(*i, KEY_CHANGES)? - changes_before[*i] >= want)
                    })
                    .await?,
            );
        }
        eprintln!("         late nodes took it at {late_took:.1?}");
        pick_ups.push((leader_took, late_took));
    }
    let took = watch.started.elapsed();
    watch.during(Duration::from_secs(3)).await?;
    let report = probe.stop();
    eprintln!(
        "rotation read by every speaker after {took:.1?}; Secret {:?}; {} probes, {} failed, longest gap {:?}",
        watch.shapes,
        report.samples.len(),
        report.failures,
        report.max_gap
    );
    let shapes: Vec<&str> = watch.shapes.iter().map(|(s, _)| s.as_str()).collect();
    ensure!(
        shapes == ["key", "key+next", "key+previous", "key"],
        "the phases in order: {shapes:?}"
    );
    let (p1, p2, p3) = (watch.shapes[1].1, watch.shapes[2].1, watch.shapes[3].1);
    let margin = Duration::from_secs(2);
    ensure!(
        p2 - p1 + margin >= STEP && p3 - p2 + margin >= STEP,
        "a step between phases: {:?}",
        watch.shapes
    );
    ensure!(
        watch.progressing_seen,
        "Progressing said RotatingMembershipKey"
    );
    // A false failover shows in the speakers' counters (checked above, while it ran); the client
    // must not notice the rotation: no interruption, though a single probe may be lost (CI once
    // saw 3 isolated losses of 2,897, the longest gap 100 ms: two probe periods).
    let failed: Vec<&serde_json::Value> =
        report.samples.iter().filter(|s| s["ok"] != true).collect();
    if !failed.is_empty() {
        eprintln!("failed probes: {failed:?}");
    }
    ensure!(
        report.max_gap < Duration::from_secs(1),
        "the client was interrupted for {:?} ({} probes failed: {failed:?})",
        report.max_gap,
        report.failures
    );
    let secret = w.secret().await?;
    let new = entries(&secret);
    ensure!(
        shape(&new) == "key" && new.get("key") != old.get("key"),
        "a new key only"
    );
    ensure!(secret.annotations().get(SERVED) == Some(&request));
    ensure!(secret.annotations().get(PHASE).map(String::as_str) == Some("done"));
    ensure!(
        w.speakers().await? == speakers,
        "no speaker restarted (their counters started over)"
    );
    let keys = w.everywhere(KEYS)?;
    ensure!(
        keys.iter().all(|k| *k == 1.0),
        "one key accepted again: {keys:?}"
    );
    let members = w.everywhere(MEMBERS)?;
    ensure!(
        members.iter().all(|m| *m == nodes.len() as f64),
        "every speaker sees all alive: {members:?}"
    );

    // The same value again rotates nothing (a reconcile is triggered by another annotation).
    let out = w.tb.kubectl(&[
        "annotate",
        "lbc",
        "ferrolb",
        "--overwrite",
        &format!("{REQUEST}={request}"),
        "testbed.ferrolb.io/touch=1",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = entries(&w.secret().await?);
    ensure!(
        shape(&again) == "key" && again.get("key") == new.get("key"),
        "the served request rotated again: {}",
        shape(&again)
    );
    Ok(())
}

/// Why the rotation has phases: the key rewritten in one step, and the same lateness as above
/// (the two other nodes' kubelets paused until the leader took it): the late speakers drop the
/// leader's messages (bad MAC), declare it dead and take over its address, a false failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn rewriting_the_key_in_one_step_makes_late_speakers_declare_the_leader_dead()
-> anyhow::Result<()> {
    let w = world("keyblunt").await?;
    let nodes = w.tb.node_names.len();
    let leader =
        w.tb.node_names
            .iter()
            .position(|n| *n == w.leader)
            .ok_or_else(|| anyhow!("no node {}", w.leader))?;
    let late: Vec<usize> = (0..nodes).filter(|i| *i != leader).collect();
    wait_for("every speaker sees all alive", T, || async {
        let members = w.everywhere(MEMBERS)?;
        Ok(members.iter().all(|m| *m == nodes as f64).then_some(()))
    })
    .await?;
    let before = counters(&w)?;
    let changes = w.metric(leader, KEY_CHANGES)?;
    let paused = freeze_kubelets(&w.tb, &late)?;
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let patch = json!({"data": {"key": ByteString(hex.into_bytes())}});
    Api::<Secret>::namespaced(w.client.clone(), SYSTEM)
        .patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let started = Instant::now();
    wait_for("the leader taking the new key", T, || async {
        Ok((w.metric(leader, KEY_CHANGES)? > changes).then_some(()))
    })
    .await?;
    let took = started.elapsed();
    let after = wait_for(
        "the late speakers declaring the leader dead",
        Duration::from_secs(10),
        || async {
            let now = counters(&w)?;
            Ok(late
                .iter()
                .all(|i| now.dead[*i] > before.dead[*i])
                .then_some(now))
        },
    )
    .await?;
    eprintln!(
        "the leader took the key after {took:.1?}; {:.1?} later: {before:?} → {after:?}",
        started.elapsed() - took
    );
    for i in &late {
        ensure!(
            after.bad_mac[*i] > before.bad_mac[*i],
            "node {i} dropped the leader's messages"
        );
    }
    ensure!(
        late.iter().any(|i| after.gained[*i] > before.gained[*i]),
        "a late speaker took over the leader's address"
    );
    // Once the late nodes have the key too, everyone agrees again (the leader refutes).
    drop(paused);
    let healed = Instant::now();
    wait_for("every speaker sees all alive again", T, || async {
        let members = w.everywhere(MEMBERS)?;
        Ok(members.iter().all(|m| *m == nodes as f64).then_some(()))
    })
    .await?;
    eprintln!(
        "all alive again {:.1?} after the kubelets resumed",
        healed.elapsed()
    );
    Ok(())
}
