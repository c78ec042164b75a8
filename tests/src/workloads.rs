//! Workloads that tests and examples create: the echo container and Deployments of it, built
//! here once instead of as JSON by hand in every test.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::harness::{ingress_ips, pod_ready, wait_for};

/// The testbed's echo image (`ferrolb-testbed/echo`, imported into every node): HTTP and UDP
/// on port 8080 (named `http`), ready once `/readyz` answers (probed every second); the
/// downward API gives it the names it answers with.
pub fn echo_container() -> Value {
    json!({
        "name": "echo",
        "image": ECHO_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["--port", "8080"],
        "env": echo_env(),
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
    })
}

/// The echo image, as `tests/testbed/images.sh` builds it.
pub const ECHO_IMAGE: &str = "ferrolb-testbed/echo:v1";

/// What the echo server reports about itself, from the downward API.
fn echo_env() -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    json!([
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("NODE_NAME", "spec.nodeName"),
        field("POD_IP", "status.podIP"),
    ])
}

/// [`echo_container`] with `env` (a JSON list of `EnvVar`s) added, and a liveness probe on
/// `/healthz` every 2 s.
pub fn echo_container_with_liveness(env: Value) -> Value {
    let mut c = echo_container();
    if let (Some(all), Some(extra)) = (c["env"].as_array_mut(), env.as_array()) {
        all.extend(extra.iter().cloned());
    }
    c["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2});
    c
}

/// A pod spec that runs `containers` on the node named `node` only.
pub fn on_node(node: &str, containers: Value) -> Value {
    json!({"nodeSelector": {"kubernetes.io/hostname": node}, "containers": containers})
}

/// A Deployment `name` of `replicas` pods with the label `app=<name>` (its selector) and the pod
/// spec `pod_spec`.
pub fn deployment(name: &str, replicas: usize, pod_spec: Value) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }))?)
}

/// Create [`deployment`]`(name, replicas, pod_spec)` in `namespace` (it does not wait for pods).
pub async fn create_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: usize,
    pod_spec: Value,
) -> anyhow::Result<Deployment> {
    Ok(Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &deployment(name, replicas, pod_spec)?,
        )
        .await?)
}

/// `replicas` echo pods behind a LoadBalancer Service, both named `name` (port 80 to the pods'
/// 8080): waits for the pods to be ready and the Service to have an address, and returns its
/// first address.
pub async fn echo_behind_load_balancer(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: usize,
) -> anyhow::Result<String> {
    const T: Duration = Duration::from_secs(90);
    create_deployment(
        client,
        namespace,
        name,
        replicas,
        json!({"containers": [echo_container()]}),
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))?;
    services.create(&PostParams::default(), &service).await?;
    wait_ready_pods(client, namespace, name, replicas).await?;
    wait_for(&format!("an address for {name}"), T, || async {
        Ok(ingress_ips(&services.get(name).await?).into_iter().next())
    })
    .await
}

/// Waits (up to 90 s) until exactly `replicas` pods labelled `app=<name>` in `namespace` are
/// ready, as those of [`deployment`]`(name, ...)` are.
pub async fn wait_ready_pods(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: usize,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app={name}");
    wait_for(
        &format!("{replicas} ready {name} pods"),
        Duration::from_secs(90),
        || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            let ready = list.items.iter().filter(|p| pod_ready(p)).count();
            Ok((ready == replicas).then_some(()))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_selects_its_own_pods() -> anyhow::Result<()> {
        let d = deployment("web", 2, on_node("node-1", json!([echo_container()])))?;
        let spec = d.spec.unwrap_or_default();
        assert_eq!(spec.replicas, Some(2));
        let labels = spec.template.metadata.and_then(|m| m.labels);
        assert_eq!(spec.selector.match_labels, labels);
        let pod = spec.template.spec.unwrap_or_default();
        assert_eq!(
            pod.node_selector
                .and_then(|s| s.get("kubernetes.io/hostname").cloned()),
            Some("node-1".to_owned())
        );
        assert_eq!(pod.containers[0].image.as_deref(), Some(ECHO_IMAGE));
        let live = echo_container_with_liveness(json!([{"name": "A", "value": "1"}]));
        assert_eq!(live["readinessProbe"], echo_container()["readinessProbe"]);
        assert_eq!(live["livenessProbe"]["httpGet"]["path"], "/healthz");
        Ok(())
    }
}
