//! Tests that prove the testbed itself: real nodes, real pods, real RBAC, a real data path and a
//! real BGP router. They need a running testbed (`make testbed-up`, or `make testbed-test` which
//! brings one up and down around them), so they are ignored by a plain `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferrolb_testbed::harness::{
    Probe, Testbed, netns_exec, netns_sh, pod_pid, pod_ready, unique_name, wait_for,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

async fn setup() -> anyhow::Result<(Testbed, Client)> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    Ok((tb, client))
}

fn obj<K: DeserializeOwned>(v: Value) -> anyhow::Result<K> {
    Ok(serde_json::from_value(v)?)
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn echo_container(extra_env: Value) -> Value {
    json!({
        "name": "echo",
        "image": "ferrolb-testbed/echo:latest",
        "args": ["--port", "8080"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": extra_env,
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2}
    })
}

async fn ready_pods(api: &Api<Pod>, selector: &str, n: usize) -> anyhow::Result<Vec<Pod>> {
    let lp = ListParams::default().labels(selector);
    wait_for(&format!("{n} ready pods {selector}"), T, || async {
        let pods: Vec<Pod> = api
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        Ok((pods.len() == n && pods.iter().all(pod_ready)).then_some(pods))
    })
    .await
}

fn curl(netns: &str, url: &str) -> anyhow::Result<String> {
    netns_sh(netns, &["curl", "-sS", "-m", "3", url])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn nodes_are_ready_with_leases_and_pod_cidrs() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for (i, name) in tb.node_names.iter().enumerate() {
        let n = nodes.get(name).await?;
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("kubernetes.io/hostname"), Some(name));
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let st = n.status.clone().unwrap_or_default();
        let ready = st
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .context("no Ready condition")?;
        assert_eq!(ready.status, "True", "{name} not Ready");
        let ips: Vec<String> = st
            .addresses
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .collect();
        assert!(ips.contains(&tb.node_ips[i]), "{name}: {ips:?}");
        assert!(
            ips.iter().any(|ip| ip.starts_with("2001:db8:")),
            "{name}: no IPv6 {ips:?}"
        );
        let cidr = n.spec.and_then(|s| s.pod_cidr).context("no podCIDR")?;
        assert!(cidr.starts_with("198.51.100."), "{cidr}");
        // the node's address is really configured in its network namespace
        let addrs = netns_sh(&tb.node_netns[i], &["ip", "-br", "addr", "show", "eth0"])?;
        assert!(addrs.contains(&tb.node_ips[i]), "{addrs}");
        // the Lease is renewed: its renewTime moves
        let r1 = leases.get(name).await?.spec.and_then(|s| s.renew_time);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let r2 = leases.get(name).await?.spec.and_then(|s| s.renew_time);
        // the agent is a real node identity: NodeRestriction stops it from touching another node
        if tb.node_names.len() > 1 {
            let other = &tb.node_names[(i + 1) % tb.node_names.len()];
            let run = tb.var("TESTBED_RUN_DIR").context("TESTBED_RUN_DIR")?;
            let kc = format!("--kubeconfig={run}/{name}.kubeconfig");
            let kubectl = tb.kubectl.display().to_string();
            let own = netns_exec(
                &tb.node_netns[i],
                &[
                    &kubectl,
                    &kc,
                    "annotate",
                    "--overwrite",
                    "node",
                    name,
                    "testbed.ferrolb.io/probe=1",
                ],
            )?;
            assert!(
                own.status.success(),
                "{}",
                String::from_utf8_lossy(&own.stderr)
            );
            let theirs = netns_exec(
                &tb.node_netns[i],
                &[
                    &kubectl,
                    &kc,
                    "annotate",
                    "--overwrite",
                    "node",
                    other,
                    "testbed.ferrolb.io/probe=1",
                ],
            )?;
            let err = String::from_utf8_lossy(&theirs.stderr);
            assert!(
                !theirs.status.success() && err.contains("Forbidden"),
                "{err}"
            );
        }
        assert!(
            r1.is_some() && r1 != r2,
            "lease of {name} not renewed: {r1:?} {r2:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn echo_deployment_runs_real_processes() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "echo").await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let replicas = tb.node_names.len();
    deploys
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "echo"},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": "echo"}},
                    "template": {
                        "metadata": {"labels": {"app": "echo"}},
                        "spec": {"containers": [echo_container(json!([]))]}
                    }
                }
            }))?,
        )
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
        assert!(out.contains(&format!("pid={pid} ")), "{out}");
    }
    // `kubectl logs` goes API server -> the node agent's kubelet API (mutual TLS)
    let first = ready[0].metadata.name.clone().unwrap_or_default();
    let out = tb.kubectl(&["-n", &ns.name, "logs", &first, "--tail=5"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("echo listening"),
        "kubectl logs: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and the kubelet API refuses a client without a certificate
    let anon = netns_exec(
        &tb.client_netns,
        &[
            "curl",
            "-sk",
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
                        "containers": [echo_container(json!([{"name": "GEN", "value": "1"}]))]
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
code() { curl -s -o /dev/null -w '%{http_code}' --cacert $D/ca.crt -H "Authorization: Bearer $(cat $D/token)" "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT$1"; }
echo "secrets=$(code /api/v1/namespaces/$MY_NS/secrets) pods=$(code /api/v1/namespaces/$MY_NS/pods) node=$MY_NODE ip=$MY_IP"
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
                    "name": "c", "image": "ferrolb-testbed/host",
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
    // the host's /run was not touched by the pod's private mounts
    assert!(!std::path::Path::new("/run/secrets/kubernetes.io").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn unknown_image_fails_and_crashing_container_backs_off() -> anyhow::Result<()> {
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
            "spec": {"containers": [{"name": "c", "image": "ferrolb-testbed/host",
                "command": ["/bin/sh", "-c", "echo dying; exit 3"]}]}}))?,
    )
    .await?;
    let p = wait_for("nginx pod failed", T, || async {
        let p = pods.get("nginx").await?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        Ok((phase == "Failed").then_some(p))
    })
    .await?;
    let st = p.status.unwrap_or_default();
    assert_eq!(st.reason.as_deref(), Some("UnknownImage"));
    assert!(st.message.unwrap_or_default().contains("nginx:1.27"));
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

fn host_prefix(ip: &str) -> String {
    if ip.contains(':') {
        format!("{ip}/128")
    } else {
        format!("{ip}/32")
    }
}

/// Route `ip` in the client namespace via `via` for the lifetime of the guard.
struct ClientRoute {
    netns: String,
    ip: String,
}

impl ClientRoute {
    fn set(netns: &str, ip: &str, via: &str) -> anyhow::Result<Self> {
        netns_sh(
            netns,
            &["ip", "route", "replace", &host_prefix(ip), "via", via],
        )?;
        Ok(Self {
            netns: netns.into(),
            ip: ip.into(),
        })
    }
}

impl Drop for ClientRoute {
    fn drop(&mut self) {
        let _ = netns_exec(&self.netns, &["ip", "route", "del", &host_prefix(&self.ip)]);
    }
}

fn udp_ask(netns: &str, ip: &str, port: u16) -> anyhow::Result<String> {
    let script = format!("exec 3<>/dev/udp/{ip}/{port}; echo hi >&3; timeout 3 head -n1 <&3");
    netns_sh(netns, &["bash", "-c", &script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn loadbalancer_ip_routed_by_hand_answers_for_both_traffic_policies() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    anyhow::ensure!(tb.node_names.len() >= 2, "needs two nodes");
    let ns = tb.namespace(&client, "svc").await?;
    let n = ns.name.clone();
    let (node1, node2) = (tb.node_names[0].clone(), tb.node_names[1].clone());
    let (ip1, ip2) = (tb.node_ips[0].clone(), tb.node_ips[1].clone());
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &n);
    deploys
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "backend"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "backend"}},
                    "template": {
                        "metadata": {"labels": {"app": "backend"}},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/hostname": node1},
                            "containers": [echo_container(json!([]))]
                        }
                    }
                }
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &n);
    let backend = ready_pods(&pods, "app=backend", 1).await?;
    let backend_name = backend[0].metadata.name.clone().unwrap_or_default();
    let svcs: Api<Service> = Api::namespaced(client.clone(), &n);
    // a unique LB IP per run of this test (203.0.113.0/24 only exists inside the testbed)
    let last = 10 + (u32::from_str_radix(&unique_name("x")[2..], 16).unwrap_or(0) % 200);
    let lb = format!("203.0.113.{last}");
    svcs.create(
        &PostParams::default(),
        &obj(json!({
            "metadata": {"name": "backend"},
            "spec": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": "Cluster",
                "selector": {"app": "backend"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                    {"name": "udp", "port": 5353, "targetPort": 8080, "protocol": "UDP"}
                ]
            }
        }))?,
    )
    .await?;
    svcs.patch_status(
        "backend",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": lb}]}}})),
    )
    .await?;
    let url = format!("http://{lb}/");
    let cli = tb.client_netns.clone();

    // Cluster: the node without the backend forwards (and SNATs) to the pod on node-1
    {
        let _r = ClientRoute::set(&cli, &lb, &ip2)?;
        let out = wait_for("Cluster via node-2", T, || async {
            Ok(curl(&cli, &url).ok().filter(|o| o.contains("pod=")))
        })
        .await?;
        assert!(out.contains(&format!("pod={backend_name} ")), "{out}");
        assert!(out.contains(&format!("node={node1} ")), "{out}");
        assert!(
            out.contains(&format!("client={ip2}")),
            "Cluster SNATs to the node: {out}"
        );
        let u = udp_ask(&cli, &lb, 5353)?;
        assert!(u.contains(&format!("pod={backend_name} ")), "udp: {u}");
    }
    // Local: node-1 (has the endpoint) answers and keeps the client IP; node-2 drops
    svcs.patch(
        "backend",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"externalTrafficPolicy": "Local"}})),
    )
    .await?;
    {
        let _r = ClientRoute::set(&cli, &lb, &ip2)?;
        wait_for("Local via node-2 stops answering", T, || async {
            Ok(curl(&cli, &url).is_err().then_some(()))
        })
        .await?;
    }
    {
        let _r = ClientRoute::set(&cli, &lb, &ip1)?;
        let out = wait_for("Local via node-1", T, || async {
            Ok(curl(&cli, &url).ok().filter(|o| o.contains("pod=")))
        })
        .await?;
        assert!(out.contains(&format!("pod={backend_name} ")), "{out}");
        let client_ip = tb.var("TESTBED_CLIENT_IP").unwrap_or("198.51.100.100");
        assert!(
            out.contains(&format!("client={client_ip}")),
            "Local keeps the client IP: {out}"
        );
    }
    let _ = node2;
    Ok(())
}

/// A process killed (by PID) when the guard is dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a GoBGP speaker stand-in in `netns` (it dials the routers; it does not listen).
fn start_gobgp(
    netns: &str,
    node_ip: &str,
    asn: &str,
    routers: &[(String, String)],
    api_port: u16,
) -> anyhow::Result<(Proc, std::path::PathBuf)> {
    let dir = std::env::temp_dir().join(unique_name("ftb-gobgp"));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("gobgpd.toml");
    let mut toml =
        format!("[global.config]\n  as = {asn}\n  router-id = \"{node_ip}\"\n  port = -1\n");
    for (ip, peer_asn) in routers {
        toml.push_str(&format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{ip}\"\n    peer-as = {peer_asn}\n  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n"
        ));
    }
    std::fs::write(&conf, toml)?;
    let log = std::fs::File::create(dir.join("gobgpd.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", netns, "gobgpd", "-f"])
        .arg(&conf)
        .args([
            "--api-hosts",
            &format!("127.0.0.1:{api_port}"),
            "-l",
            "warn",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting gobgpd")?;
    Ok((Proc(child), dir))
}

fn gobgp_cli(netns: &str, api_port: u16, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let port = api_port.to_string();
    let mut argv = vec!["gobgp", "-u", "127.0.0.1", "-p", &port];
    argv.extend_from_slice(args);
    netns_exec(netns, &argv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn gobgp_in_a_node_namespace_peers_with_frr_bird_and_gobgp() -> anyhow::Result<()> {
    let (tb, _client) = setup().await?;
    let i = tb.node_netns.len() - 1;
    let (netns, node_ip) = (tb.node_netns[i].clone(), tb.node_ips[i].clone());
    let v = |k: &str, d: &str| tb.var(k).unwrap_or(d).to_string();
    let routers = [
        (
            v("TESTBED_ROUTER_IP", "198.51.100.1"),
            v("TESTBED_ROUTER_ASN", "64512"),
        ),
        (
            v("TESTBED_BIRD_IP", "198.51.100.2"),
            v("TESTBED_BIRD_ASN", "64520"),
        ),
        (
            v("TESTBED_GOBGP_IP", "198.51.100.3"),
            v("TESTBED_GOBGP_ASN", "64530"),
        ),
    ];
    let my_asn = v("TESTBED_GOBGP_PEER_ASN", "64513");
    let (_gobgpd, dir) = start_gobgp(&netns, &node_ip, &my_asn, &routers, 50052)?;
    let state = wait_for("BGP session Established in FRR", T, || async {
        let v = tb.frr_json(&format!("show bgp neighbors {node_ip} json"))?;
        let st = v[&node_ip]["bgpState"].as_str().unwrap_or("").to_string();
        Ok((st == "Established").then_some(st))
    })
    .await?;
    assert_eq!(state, "Established");
    let prefix = "203.0.113.250/32";
    wait_for("gobgp accepts the route", T, || async {
        let out = netns_exec(
            &netns,
            &[
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50052",
                "global",
                "rib",
                "add",
                prefix,
                "-a",
                "ipv4",
            ],
        )?;
        Ok(out.status.success().then_some(()))
    })
    .await?;
    let route = wait_for("route in FRR JSON", T, || async {
        let v = tb.frr_json("show bgp ipv4 unicast json")?;
        Ok(v["routes"].get(prefix).cloned())
    })
    .await?;
    let nexthops: Vec<String> = route[0]["nexthops"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(nexthops.contains(&node_ip), "{route}");
    // the same route reaches the BIRD and the GoBGP routers
    let bird = wait_for("route in BIRD", T, || async {
        let out = tb.bird(&format!("show route {prefix}"))?;
        Ok(out.contains("203.0.113.250/32").then_some(out))
    })
    .await?;
    assert!(bird.contains(&node_ip), "{bird}");
    let rib = wait_for("route in the GoBGP router", T, || async {
        let v = tb.gobgp_json(&["global", "rib", "-a", "ipv4"])?;
        Ok(v.get(prefix).cloned())
    })
    .await?;
    assert!(rib.to_string().contains(&node_ip), "{rib}");
    let _ = std::fs::remove_dir_all(&dir);
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
    let mut c = echo_container(json!([]));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn ferrolb_image_runs_the_workspace_binary() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "img").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "ctl"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c",
                "image": "ghcr.io/ferrolb/ferrolb:dev", "command": ["/ferrolb-controller"], "args": ["--help"]}]}}))?,
    )
    .await?;
    let p = wait_for("ferrolb-controller --help finished", T, || async {
        let p = pods.get("ctl").await?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        Ok((phase == "Succeeded" || phase == "Failed").then_some(p))
    })
    .await?;
    let log = tb.pod_log(&p, "c").unwrap_or_default();
    let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
    assert_eq!(phase, "Succeeded", "{log}");
    assert!(log.contains("ferrolb-controller"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn bgp_announcement_steers_client_traffic_through_the_router() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    anyhow::ensure!(tb.node_names.len() >= 2, "needs two nodes");
    let ns = tb.namespace(&client, "bgpdp").await?;
    let (node, node_ip, netns) = (
        tb.node_names[1].clone(),
        tb.node_ips[1].clone(),
        tb.node_netns[1].clone(),
    );
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deploys
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/hostname": node},
                            "containers": [echo_container(json!([]))]
                        }
                    }
                }
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let web = ready_pods(&pods, "app=web", 1).await?;
    let web_name = web[0].metadata.name.clone().unwrap_or_default();
    let last = 10 + (u32::from_str_radix(&unique_name("x")[2..], 16).unwrap_or(0) % 200);
    let lb = format!("203.0.113.{last}");
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    svcs.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?,
    )
    .await?;
    svcs.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": lb}]}}})),
    )
    .await?;
    let router_ip = tb
        .var("TESTBED_ROUTER_IP")
        .unwrap_or("198.51.100.1")
        .to_string();
    let router_asn = tb.var("TESTBED_ROUTER_ASN").unwrap_or("64512").to_string();
    let (_gobgpd, dir) = start_gobgp(
        &netns,
        &node_ip,
        "64513",
        &[(router_ip.clone(), router_asn)],
        50053,
    )?;
    // the client sends the LB IP to the router; only the BGP route makes it reach the node
    let _r = ClientRoute::set(&tb.client_netns, &lb, &router_ip)?;
    let url = format!("http://{lb}/");
    assert!(
        curl(&tb.client_netns, &url).is_err(),
        "answered before any announcement"
    );
    let prefix = format!("{lb}/32");
    wait_for("announce", T, || async {
        Ok(gobgp_cli(
            &netns,
            50053,
            &["global", "rib", "add", &prefix, "-a", "ipv4"],
        )?
        .status
        .success()
        .then_some(()))
    })
    .await?;
    let kernel = wait_for("route installed in the router's kernel", T, || async {
        let out = netns_sh(&tb.router_netns, &["ip", "route", "show", &lb])?;
        Ok(out.contains(&node_ip).then_some(out))
    })
    .await?;
    assert!(kernel.contains("proto bgp"), "{kernel}");
    let out = wait_for("curl through the router", T, || async {
        Ok(curl(&tb.client_netns, &url)
            .ok()
            .filter(|o| o.contains("pod=")))
    })
    .await?;
    assert!(out.contains(&format!("pod={web_name} ")), "{out}");
    // withdraw: the router drops the route and the client loses the service
    gobgp_cli(
        &netns,
        50053,
        &["global", "rib", "del", &prefix, "-a", "ipv4"],
    )?;
    wait_for("route withdrawn", T, || async {
        let out = netns_sh(&tb.router_netns, &["ip", "route", "show", &lb])?;
        Ok(out.trim().is_empty().then_some(()))
    })
    .await?;
    assert!(
        curl(&tb.client_netns, &url).is_err(),
        "still answered after withdrawal"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn ecmp_failover_gap_is_measured_by_client_probes() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    anyhow::ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let ns = tb.namespace(&client, "failover").await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deploys
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/hostname": tb.node_names[0]},
                            "containers": [echo_container(json!([]))]
                        }
                    }
                }
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    ready_pods(&pods, "app=web", 1).await?;
    let last = 10 + (u32::from_str_radix(&unique_name("x")[2..], 16).unwrap_or(0) % 200);
    let lb = format!("203.0.113.{last}");
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    svcs.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?,
    )
    .await?;
    svcs.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": lb}]}}})),
    )
    .await?;
    let router_ip = tb
        .var("TESTBED_ROUTER_IP")
        .unwrap_or("198.51.100.1")
        .to_string();
    let router_asn = tb.var("TESTBED_ROUTER_ASN").unwrap_or("64512").to_string();
    let prefix = format!("{lb}/32");
    // node-2 and node-3 announce the IP (Cluster policy: both forward to the pod on node-1)
    let mut speakers = Vec::new();
    for (i, port) in [(1usize, 50054u16), (2, 50055)] {
        let (p, dir) = start_gobgp(
            &tb.node_netns[i],
            &tb.node_ips[i],
            "64513",
            &[(router_ip.clone(), router_asn.clone())],
            port,
        )?;
        let netns = tb.node_netns[i].clone();
        wait_for("announce", T, || async {
            Ok(gobgp_cli(
                &netns,
                port,
                &["global", "rib", "add", &prefix, "-a", "ipv4"],
            )?
            .status
            .success()
            .then_some(()))
        })
        .await?;
        speakers.push((p, dir));
    }
    let (n2, n3) = (tb.node_ips[1].clone(), tb.node_ips[2].clone());
    wait_for("ECMP route via node-2 and node-3", T, || async {
        let out = netns_sh(&tb.router_netns, &["ip", "route", "show", &lb])?;
        Ok((out.contains(&n2) && out.contains(&n3)).then_some(()))
    })
    .await?;
    let _r = ClientRoute::set(&tb.client_netns, &lb, &router_ip)?;
    let probe = Probe::start(
        &tb,
        &tb.client_netns,
        &format!("{lb}:80"),
        Duration::from_millis(50),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // node-2 fails hard: its link goes down; FRR notices when the hold timer (9 s) expires
    let down = tb.cut_node_link(1)?;
    wait_for(
        "route withdrawn from node-2",
        Duration::from_secs(30),
        || async {
            let out = netns_sh(&tb.router_netns, &["ip", "route", "show", &lb])?;
            Ok((!out.contains(&n2) && out.contains(&n3)).then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = probe.stop();
    drop(down);
    let tail_ok = report
        .samples
        .iter()
        .rev()
        .take(10)
        .all(|s| s["ok"].as_bool() == Some(true));
    eprintln!(
        "failover: {} probes, {} failed over {:?}, longest gap between answers {:?}",
        report.samples.len(),
        report.failures,
        report.failure_window,
        report.max_gap
    );
    assert!(
        report.samples.len() > 50,
        "too few probes: {}",
        report.samples.len()
    );
    assert!(tail_ok, "after the withdrawal every probe is answered");
    assert!(
        report.failure_window < Duration::from_secs(15),
        "failures lasted {:?} (hold time is 9 s)",
        report.failure_window
    );
    for (p, dir) in speakers {
        drop(p);
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn dual_stack_pods_and_an_ipv6_loadbalancer_ip() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    anyhow::ensure!(tb.node_names.len() >= 2, "needs two nodes");
    let ns = tb.namespace(&client, "v6").await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deploys
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web6"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web6"}},
                    "template": {
                        "metadata": {"labels": {"app": "web6"}},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/hostname": tb.node_names[0]},
                            "containers": [echo_container(json!([]))]
                        }
                    }
                }
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let p = ready_pods(&pods, "app=web6", 1).await?;
    let name = p[0].metadata.name.clone().unwrap_or_default();
    let ips: Vec<String> = p[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ips.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip)
        .collect();
    assert_eq!(ips.len(), 2, "dual-stack pod IPs: {ips:?}");
    let v6 = ips[1].clone();
    assert!(v6.starts_with("2001:db8:100:1"), "{ips:?}");
    let out = curl(&tb.client_netns, &format!("http://[{v6}]:8080/"))?;
    assert!(out.contains(&format!("pod={name} ")), "{out}");
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    svcs.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "web6"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                     "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"],
                     "selector": {"app": "web6"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?,
    )
    .await?;
    let last = 10 + (u32::from_str_radix(&unique_name("x")[2..], 16).unwrap_or(0) % 200);
    let lb6 = format!("2001:db8:1b::{last:x}");
    svcs.patch_status(
        "web6",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": lb6}]}}})),
    )
    .await?;
    // via node-2 (Cluster): SNAT to node-2's IPv6 address
    let via = tb
        .var("TESTBED_NODE_IPS")
        .map(|_| "2001:db8:100::12")
        .unwrap_or_default();
    let _r = ClientRoute::set(&tb.client_netns, &lb6, via)?;
    let url = format!("http://[{lb6}]/");
    let out = wait_for("IPv6 LB IP answers", T, || async {
        Ok(curl(&tb.client_netns, &url)
            .ok()
            .filter(|o| o.contains("pod=")))
    })
    .await?;
    assert!(out.contains(&format!("pod={name} ")), "{out}");
    assert!(out.contains(&format!("client={via}")), "{out}");
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
                "containers": [{"name": "c", "image": "ferrolb-testbed/host",
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
async fn ipv6_bgp_session_with_frr() -> anyhow::Result<()> {
    let (tb, _client) = setup().await?;
    let i = 0;
    let netns = tb.node_netns[i].clone();
    let node_ip6 = format!("2001:db8:100::1{}", i + 1);
    let router6 = tb
        .var("TESTBED_ROUTER_IPV6")
        .unwrap_or("2001:db8:100::1")
        .to_string();
    let asn = tb.var("TESTBED_ROUTER_ASN").unwrap_or("64512").to_string();
    let dir = std::env::temp_dir().join(unique_name("ftb-gobgp6"));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("gobgpd.toml");
    std::fs::write(
        &conf,
        format!(
            "[global.config]\n  as = 64513\n  router-id = \"{}\"\n  port = -1\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{router6}\"\n    peer-as = {asn}\n  [neighbors.timers.config]\n    connect-retry = 1\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n",
            tb.node_ips[i]
        ),
    )?;
    let log = std::fs::File::create(dir.join("gobgpd.log"))?;
    let _gobgpd = Proc(
        Command::new("ip")
            .args(["netns", "exec", &netns, "gobgpd", "-f"])
            .arg(&conf)
            .args(["--api-hosts", "127.0.0.1:50056", "-l", "warn"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    wait_for("IPv6 session Established", T, || async {
        let v = tb.frr_json(&format!("show bgp neighbors {node_ip6} json"))?;
        Ok((v[&node_ip6]["bgpState"].as_str() == Some("Established")).then_some(()))
    })
    .await?;
    let prefix = "2001:db8:1b::250/128";
    wait_for("announce v6", T, || async {
        Ok(gobgp_cli(
            &netns,
            50056,
            &["global", "rib", "add", prefix, "-a", "ipv6"],
        )?
        .status
        .success()
        .then_some(()))
    })
    .await?;
    wait_for("IPv6 route in FRR JSON", T, || async {
        let v = tb.frr_json("show bgp ipv6 unicast json")?;
        Ok(v["routes"].get(prefix).cloned())
    })
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn init_containers_run_first_and_share_an_empty_dir() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let ns = tb.namespace(&client, "init").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let host = |name: &str, script: &str| {
        json!({"name": name, "image": "ferrolb-testbed/host", "command": ["/bin/sh", "-c", script],
               "volumeMounts": [{"name": "work", "mountPath": "/work"}]})
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
    let mut c = echo_container(json!([]));
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
    Api::<Deployment>::namespaced(client.clone(), &n)
        .create(
            &post,
            &obj(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "webhook"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "webhook"}},
                "template": {"metadata": {"labels": {"app": "webhook"}},
                    "spec": {"volumes": [{"name": "tls", "secret": {"secretName": "webhook-tls"}}],
                             "containers": [c]}}}}))?,
        )
        .await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_second_testbed_runs_beside_and_down_leaves_nothing() -> anyhow::Result<()> {
    let (tb, _client) = setup().await?;
    let state = std::env::temp_dir().join(unique_name("ftb-second"));
    let script = ferrolb_testbed::harness::repo_root().join("tests/testbed/testbed.sh");
    let run = |cmd: &str| {
        Command::new("bash")
            .arg(&script)
            .arg(cmd)
            .env("TESTBED_STATE_DIR", &state)
            .env("TESTBED_NODES", "1")
            .output()
    };
    let up = run("up")?;
    let second = Testbed::load(&state.join("env"));
    let second = match second {
        Ok(t) => t,
        Err(e) => {
            let _ = run("down");
            bail!(
                "second testbed: {e:#}\n{}",
                String::from_utf8_lossy(&up.stderr)
            );
        }
    };
    let sfx = second.var("TESTBED_RUN").unwrap_or_default().to_string();
    let run_dir = second
        .var("TESTBED_RUN_DIR")
        .unwrap_or_default()
        .to_string();
    assert_ne!(
        Some(sfx.as_str()),
        tb.var("TESTBED_RUN"),
        "unique run names"
    );
    // both answer at once, each its own cluster
    let c2 = second.client().await?;
    let n2: Api<Node> = Api::all(c2);
    assert_eq!(n2.list(&ListParams::default()).await?.items.len(), 1);
    let pids: Vec<u32> = std::fs::read_dir(format!("{run_dir}/pids"))?
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.split_whitespace().next().and_then(|p| p.parse().ok()))
        .collect();
    assert!(pids.len() >= 8, "{pids:?}");
    let down = run("down")?;
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    // nothing of it is left: processes, namespaces, files; the first testbed still works
    for pid in &pids {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            st.is_empty() || st.contains("State:\tZ"),
            "process {pid} left: {st}"
        );
    }
    let netns = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    assert!(!netns.contains(&format!("ftb-{sfx}-")), "{netns}");
    assert!(!std::path::Path::new(&run_dir).exists(), "{run_dir} left");
    assert!(!state.join("env").exists());
    let _ = std::fs::remove_dir_all(&state);
    let c1 = tb.client().await?;
    let n1: Api<Node> = Api::all(c1);
    assert_eq!(
        n1.list(&ListParams::default()).await?.items.len(),
        tb.node_names.len()
    );
    Ok(())
}
