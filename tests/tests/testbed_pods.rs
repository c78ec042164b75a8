//! The testbed's own tests, part 2: pods. The nodes' kubelets run containers from the images
//! the testbed builds (Deployments, DaemonSet rolling updates, init containers, restarts with
//! back-off, images that cannot be pulled, host network, the FerroLB image as non-root from a
//! read-only root), mount volumes (ConfigMap updates, ServiceAccount tokens that the real RBAC
//! judges), `kubectl logs` and `kubectl exec` work, and a pod serves an admission webhook the API
//! server calls. They need a running testbed, so they are ignored by a plain `cargo test`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::{T, cmdline, curl, obj, ready_pods, setup};
use ferrolb_testbed::harness::{Testbed, netns_exec, pod_pid, pod_ready, unique_name, wait_for};
use ferrolb_testbed::workloads::{
    ECHO_IMAGE, create_deployment, deployment, echo_container_with_liveness,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn echo_deployment_runs_real_processes() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "echo").await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let replicas = tb.node_names.len();
    let spec = json!({"containers": [echo_container_with_liveness(json!([]))]});
    deploys
        .create(&PostParams::default(), &deployment("echo", replicas, spec)?)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let ready = ready_pods(&pods, "app=echo", replicas).await?;
    wait_for("deployment available", T, || async {
        let d = deploys.get("echo").await?;
        let avail = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
        Ok((avail as usize == replicas).then_some(()))
    })
    .await?;
    for p in &ready {
        let name = p.metadata.name.clone().unwrap_or_default();
        let pid = pod_pid(p).context("no containerID")?;
        assert!(
            cmdline(pid).contains("echo"),
            "pid {pid} of {name} is not an echo process: {}",
            cmdline(pid)
        );
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("no podIP")?;
        // the pod answers on its own IP, from the client namespace, via the node
        let out = curl(&tb.client_netns, &format!("http://{ip}:8080/"))?;
        assert!(out.contains(&format!("pod={name} ")), "{out}");
    }
    // `kubectl logs` and `kubectl exec` go API server -> the node's kubelet (mutual TLS)
    let first = ready[0].metadata.name.clone().unwrap_or_default();
    let out = tb.kubectl(&["-n", &ns.name, "logs", &first, "--tail=5"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("echo listening"),
        "kubectl logs: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tb.kubectl(&[
        "-n",
        &ns.name,
        "exec",
        &first,
        "--",
        "sh",
        "-c",
        "echo in $POD_NAME",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("in {first}"),
        "kubectl exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and the kubelet API refuses a client without a certificate
    let anon = netns_exec(
        &tb.client_netns,
        &[
            "curl",
            "-fsk",
            "-m",
            "3",
            &format!("https://{}:10250/healthz", tb.node_ips[0]),
        ],
    )?;
    assert!(
        !anon.status.success(),
        "kubelet API answered an anonymous client"
    );
    // deleting the namespace stops the processes and lets the namespace finish terminating
    let pids: Vec<u32> = ready.iter().filter_map(pod_pid).collect();
    ns.delete_and_wait(&client, T).await?;
    for pid in pids {
        assert!(!cmdline(pid).contains("echo"), "pid {pid} still runs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn daemonset_rolling_update_restarts_one_node_at_a_time() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "ds").await?;
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    let n = tb.node_names.len();
    dss.create(
        &PostParams::default(),
        &obj(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "echo"},
            "spec": {
                "selector": {"matchLabels": {"app": "echo-ds"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": "echo-ds"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [echo_container_with_liveness(json!([{"name": "GEN", "value": "1"}]))]
                    }
                }
            }
        }))?,
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let before = ready_pods(&pods, "app=echo-ds", n).await?;
    let old: BTreeMap<String, u32> = before
        .iter()
        .map(|p| {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            (node, pod_pid(p).unwrap_or(0))
        })
        .collect();
    assert_eq!(old.len(), n, "one pod per node: {old:?}");
    dss.patch(
        "echo",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "echo", "env": [{"name": "GEN", "value": "2"}]}
        ]}}}})),
    )
    .await?;
    // sample the pods until the rollout is done; never more than one node without a ready pod
    let start = Instant::now();
    let mut worst_ready = n;
    let mut order: Vec<String> = Vec::new();
    loop {
        let list = pods
            .list(&ListParams::default().labels("app=echo-ds"))
            .await?
            .items;
        let mut ready_nodes = BTreeSet::new();
        let mut new_ready = 0;
        for p in &list {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let gen2 = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.env.as_ref())
                .is_some_and(|e| {
                    e.iter()
                        .any(|e| e.name == "GEN" && e.value.as_deref() == Some("2"))
                });
            if pod_ready(p) && p.metadata.deletion_timestamp.is_none() {
                ready_nodes.insert(node.clone());
                if gen2 {
                    new_ready += 1;
                    if !order.contains(&node) {
                        order.push(node.clone());
                    }
                }
            }
        }
        worst_ready = worst_ready.min(ready_nodes.len());
        if new_ready == n && list.len() == n {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("rollout did not finish: {list:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst_ready + 1 >= n,
        "more than one node down at once (min ready {worst_ready})"
    );
    assert_eq!(order.len(), n, "every node got a new pod: {order:?}");
    let after = ready_pods(&pods, "app=echo-ds", n).await?;
    for p in &after {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let pid = pod_pid(p).context("no pid")?;
        let old_pid = old.get(&node).copied().unwrap_or(0);
        assert_ne!(pid, old_pid, "{node}: process not restarted");
        assert!(
            cmdline(pid).contains("echo"),
            "new pid {pid} is not running"
        );
        let gone = !std::path::Path::new(&format!("/proc/{old_pid}")).exists()
            || !cmdline(old_pid).contains("echo");
        assert!(gone, "{node}: old process {old_pid} still runs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn serviceaccount_without_permission_gets_403_and_with_it_200() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "rbac").await?;
    let n = ns.name.clone();
    let post = PostParams::default();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &n)
        .create(&post, &obj(json!({"metadata": {"name": "reader"}}))?)
        .await?;
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), &n)
        .create(
            &post,
            &obj(json!({"metadata": {"name": "pods"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}))?,
        )
        .await?;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), &n)
        .create(
            &post,
            &obj(json!({"metadata": {"name": "pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": n}]}))?,
        )
        .await?;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &n)
        .create(
            &post,
            &obj(json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}}))?,
        )
        .await?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &n)
        .create(
            &post,
            &obj(json!({"metadata": {"name": "sec"}, "stringData": {"pw": "s3cret"}}))?,
        )
        .await?;
    // a client inside the pod: curl with the mounted token against the real API server
    let script = r#"
D=/var/run/secrets/kubernetes.io/serviceaccount
[ "$(cat $D/namespace)" = "$MY_NS" ] || { echo "bad namespace file"; exit 2; }
[ "$(cat /etc/cfg/greeting)" = hello ] || { echo "configmap not mounted"; exit 3; }
[ "$(cat /etc/sec/pw)" = s3cret ] || { echo "secret not mounted"; exit 4; }
code() { wget -S -q -O /dev/null --header "Authorization: Bearer $(cat $D/token)" "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT$1" 2>&1 | awk '/HTTP\//{print $2; exit}'; }
echo "secrets=$(code /api/v1/namespaces/$MY_NS/secrets) pods=$(code /api/v1/namespaces/$MY_NS/pods) node=$MY_NODE ip=$MY_IP" | tee /dev/termination-log
"#;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &n);
    pods.create(
        &post,
        &obj(json!({
            "metadata": {"name": "rbac"},
            "spec": {
                "serviceAccountName": "reader",
                "restartPolicy": "Never",
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "sec", "secret": {"secretName": "sec"}}
                ],
                "containers": [{
                    "name": "c", "image": ECHO_IMAGE, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", script],
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
                        {"name": "sec", "mountPath": "/etc/sec", "readOnly": true}
                    ],
                    "env": [
                        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                    ]
                }]
            }
        }))?,
    )
    .await?;
    let p = wait_for("pod rbac finished", T, || async {
        let p = pods.get("rbac").await?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        Ok((phase == "Succeeded" || phase == "Failed").then_some(p))
    })
    .await?;
    let st = p.status.clone().unwrap_or_default();
    let msg = st
        .container_statuses
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .and_then(|t| t.message)
        .unwrap_or_default();
    assert_eq!(st.phase.as_deref(), Some("Succeeded"), "{msg}");
    assert!(
        msg.contains("secrets=403"),
        "listing secrets must be forbidden: {msg}"
    );
    assert!(
        msg.contains("pods=200"),
        "listing pods is granted by the Role: {msg}"
    );
    let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
    assert!(msg.contains(&format!("node={node} ")), "{msg}");
    assert!(
        msg.contains(&format!("ip={}", st.pod_ip.unwrap_or_default())),
        "{msg}"
    );
    // the machine's /run and /var/lib were not touched by the kubelet's mounts
    assert!(!std::path::Path::new("/run/secrets/kubernetes.io").exists());
    assert!(!std::path::Path::new("/var/lib/kubelet").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn unknown_image_waits_in_err_image_pull_and_crashing_container_backs_off()
-> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "img").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let post = PostParams::default();
    pods.create(
        &post,
        &obj(json!({"metadata": {"name": "nginx"},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}))?,
    )
    .await?;
    pods.create(
        &post,
        &obj(json!({"metadata": {"name": "crash"},
            "spec": {"containers": [shell("c", "echo dying; exit 3")]}}))?,
    )
    .await?;
    // No registry is reachable: Pending, the container waiting in ErrImagePull (or, between
    // attempts, ImagePullBackOff).
    let waiting = wait_for("nginx pod waiting in ErrImagePull", T, || async {
        let p = pods.get("nginx").await?;
        let st = p.status.unwrap_or_default();
        let waiting = st
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|c| c.state?.waiting)
            .filter(|w| {
                matches!(
                    w.reason.as_deref(),
                    Some("ErrImagePull" | "ImagePullBackOff")
                )
            });
        Ok(waiting.filter(|_| st.phase.as_deref() == Some("Pending")))
    })
    .await?;
    assert!(waiting.message.unwrap_or_default().contains("nginx:1.27"));
    let p = wait_for("crash pod restarted twice", T, || async {
        let p = pods.get("crash").await?;
        let rc = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map(|c| c.restart_count)
            .unwrap_or(0);
        Ok((rc >= 2).then_some(p))
    })
    .await?;
    let cs = p
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .context("no container status")?;
    let last = cs
        .last_state
        .and_then(|s| s.terminated)
        .context("no lastState")?;
    assert_eq!(last.exit_code, 3);
    assert!(last.message.unwrap_or_default().contains("dying"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn host_network_pod_shares_the_node_namespace() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "hostnet").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let node = tb.node_names[tb.node_names.len() - 1].clone();
    let node_ip = tb.node_ips[tb.node_ips.len() - 1].clone();
    let mut c = echo_container_with_liveness(json!([]));
    c["args"] = json!(["--port", "18080"]);
    c["ports"] = json!([{"name": "http", "containerPort": 18080}]);
    c["livenessProbe"]["httpGet"]["port"] = json!(18080);
    pods.create(
        &PostParams::default(),
        &obj(
            json!({"metadata": {"name": "hostnet", "labels": {"app": "hostnet"}},
            "spec": {"hostNetwork": true, "nodeName": node, "containers": [c]}}),
        )?,
    )
    .await?;
    let p = ready_pods(&pods, "app=hostnet", 1).await?;
    let ip = p[0].status.as_ref().and_then(|s| s.pod_ip.clone());
    assert_eq!(
        ip.as_deref(),
        Some(node_ip.as_str()),
        "hostNetwork pod IP is the node IP"
    );
    let out = curl(&tb.client_netns, &format!("http://{node_ip}:18080/"))?;
    assert!(out.contains("pod=hostnet "), "{out}");
    assert!(tb.pod_log(&p[0], "echo")?.contains("echo listening"));
    Ok(())
}

/// The FerroLB image as the kubelet runs it: each of its three binaries answers `--version` with
/// this build's version, as the image's own non-root user (`runAsNonRoot` without `runAsUser`:
/// the kubelet refuses to start a container whose image user is root) from a read-only root
/// filesystem with no capability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn ferrolb_image_runs_as_non_root_from_a_read_only_root() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "img").await?;
    let image = tb
        .var("TESTBED_FERROLB_IMAGE")
        .context("TESTBED_FERROLB_IMAGE")?;
    const BINARIES: [&str; 3] = ["ferrolb-operator", "ferrolb-controller", "ferrolb-speaker"];
    let containers: Vec<_> = BINARIES
        .iter()
        .map(|b| {
            json!({"name": b.trim_start_matches("ferrolb-"), "image": image,
                "command": [b], "args": ["--version"],
                "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"}}})
        })
        .collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "versions"},
            "spec": {"restartPolicy": "Never", "containers": containers}}))?,
    )
    .await?;
    let p = wait_for("the three --version runs finished", T, || async {
        let p = pods.get("versions").await?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        Ok((phase == "Succeeded" || phase == "Failed").then_some(p))
    })
    .await?;
    let mut logs = Vec::new();
    for b in BINARIES {
        logs.push(
            tb.pod_log(&p, b.trim_start_matches("ferrolb-"))
                .unwrap_or_default(),
        );
    }
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    assert_eq!(phase, "Succeeded", "{logs:?} {:?}", p.status);
    for (b, log) in BINARIES.iter().zip(&logs) {
        assert_eq!(
            log.trim(),
            format!("{b} {}", env!("CARGO_PKG_VERSION")),
            "{b} --version"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn configmap_updates_reach_the_mounted_files() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "cmupd").await?;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "cfg"}, "data": {"v": "one"}}))?,
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "reader", "labels": {"app": "reader"}},
            "spec": {
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}],
                "containers": [{"name": "c", "image": ECHO_IMAGE, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "while :; do echo \"v=$(cat /etc/cfg/v)\"; sleep 1; done"],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}]}}))?,
    )
    .await?;
    let p = ready_pods(&pods, "app=reader", 1).await?;
    wait_for("v=one in the container", T, || async {
        Ok(tb.pod_log(&p[0], "c")?.contains("v=one").then_some(()))
    })
    .await?;
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "two"}})),
    )
    .await?;
    wait_for("v=two in the container", T, || async {
        Ok(tb.pod_log(&p[0], "c")?.contains("v=two").then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn init_containers_run_first_and_share_an_empty_dir() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "init").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let host = |name: &str, script: &str| {
        let mut c = shell(name, script);
        c["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
        c
    };
    pods.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "ok"},
            "spec": {"restartPolicy": "Never",
                "volumes": [{"name": "work", "emptyDir": {}}],
                "initContainers": [host("one", "echo one > /work/order"), host("two", "echo two >> /work/order")],
                "containers": [host("main", "cat /work/order; [ \"$(cat /work/order | tr '\\n' ' ')\" = 'one two ' ]")]}}))?,
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "bad"},
            "spec": {"restartPolicy": "Never",
                "volumes": [{"name": "work", "emptyDir": {}}],
                "initContainers": [host("fail", "exit 4")],
                "containers": [host("main", "echo must not run")]}}))?,
    )
    .await?;
    let phase = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let p = pods.get(name).await?;
            let ph = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            anyhow::Ok((ph == "Succeeded" || ph == "Failed").then_some(p))
        }
    };
    let ok = wait_for("pod ok finished", T, || phase("ok")).await?;
    let log = tb.pod_log(&ok, "main").unwrap_or_default();
    assert_eq!(
        ok.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded"),
        "{log}"
    );
    let bad = wait_for("pod bad finished", T, || phase("bad")).await?;
    let st = bad.status.clone().unwrap_or_default();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    let init = st
        .init_container_statuses
        .and_then(|v| v.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .context("init container status")?;
    assert_eq!(init.exit_code, 4);
    assert!(
        tb.pod_log(&bad, "main").is_err(),
        "main container must not have run"
    );
    Ok(())
}

/// A container of the echo image running `script` in its busybox shell; when it fails, the end
/// of its log is its termination message.
fn shell(name: &str, script: &str) -> serde_json::Value {
    json!({"name": name, "image": ECHO_IMAGE, "imagePullPolicy": "Never",
           "command": ["/bin/sh", "-c", script],
           "terminationMessagePolicy": "FallbackToLogsOnError"})
}

/// Deletes a cluster-scoped object with kubectl when dropped.
struct ClusterObject<'a>(&'a Testbed, &'static str, String);

impl Drop for ClusterObject<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&[
            "delete",
            self.1,
            &self.2,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn validating_webhook_served_by_a_pod_denies_a_request() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "webhook").await?;
    let n = ns.name.clone();
    // a CA and a serving certificate for the webhook Service's DNS name
    let dir = std::env::temp_dir().join(unique_name("ftb-webhook"));
    std::fs::create_dir_all(&dir)?;
    let dns = format!("webhook.{n}.svc");
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=webhook-ca",
        ],
    )?;
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            &format!("/CN={dns}"),
        ],
    )?;
    std::fs::write(
        dir.join("ext"),
        format!("subjectAltName=DNS:{dns}\nextendedKeyUsage=serverAuth\n"),
    )?;
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext",
            "-out",
            "tls.crt",
        ],
    )?;
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    let (crt, key, ca) = (read("tls.crt")?, read("tls.key")?, read("ca.crt")?);
    let _ = std::fs::remove_dir_all(&dir);
    let post = PostParams::default();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &n)
        .create(
            &post,
            &obj(
                json!({"metadata": {"name": "webhook-tls"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": crt, "tls.key": key}}),
            )?,
        )
        .await?;
    let mut c = echo_container_with_liveness(json!([]));
    c["args"] = json!([
        "--port",
        "8443",
        "--tls-cert",
        "/tls/tls.crt",
        "--tls-key",
        "/tls/tls.key"
    ]);
    c["ports"] = json!([{"name": "https", "containerPort": 8443}]);
    c["volumeMounts"] = json!([{"name": "tls", "mountPath": "/tls", "readOnly": true}]);
    c["readinessProbe"] = json!({"tcpSocket": {"port": 8443}, "periodSeconds": 1});
    c["livenessProbe"] = json!({"tcpSocket": {"port": 8443}, "periodSeconds": 2});
    let spec = json!({"volumes": [{"name": "tls", "secret": {"secretName": "webhook-tls"}}],
                      "containers": [c]});
    create_deployment(&client, &n, "webhook", 1, spec).await?;
    Api::<Service>::namespaced(client.clone(), &n)
        .create(&post, &obj(json!({"metadata": {"name": "webhook"},
            "spec": {"selector": {"app": "webhook"}, "ports": [{"port": 443, "targetPort": 8443}]}}))?)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &n);
    ready_pods(&pods, "app=webhook", 1).await?;
    let b64 = {
        let out = Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let mut child = out?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin.write_all(ca.as_bytes())?;
        }
        String::from_utf8(child.wait_with_output()?.stdout)?
    };
    let name = format!("ftb-{n}");
    let vwc: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    vwc.create(&post, &obj(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "deny.testbed.ferrolb.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
            "clientConfig": {"caBundle": b64, "service": {"namespace": n, "name": "webhook", "path": "/validate", "port": 443}}
        }]
    }))?)
    .await?;
    let _guard = ClusterObject(&tb, "validatingwebhookconfiguration", name);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &n);
    // the API server calls the webhook in the pod (via the endpoint IP) and denies the labelled one
    let msg = wait_for("webhook denies", T, || async {
        let cm = obj(json!({"metadata": {"generateName": "deny-", "labels": {"testbed.ferrolb.io/deny": "true"}}}))?;
        match cms.create(&post, &cm).await {
            Err(kube::Error::Api(s)) if s.message.contains("denied by the testbed webhook") => Ok(Some(s.message)),
            _ => Ok(None),
        }
    })
    .await?;
    assert!(
        msg.contains("webhook-"),
        "the answer comes from the pod: {msg}"
    );
    cms.create(&post, &obj(json!({"metadata": {"name": "allowed"}}))?)
        .await?;
    Ok(())
}
