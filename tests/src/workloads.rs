//! Workloads that tests and examples create: the echo container and Deployments of it, built
//! here once instead of as JSON by hand in every test.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::harness::{ingress_ips, pod_ready, wait_for};

/// The built-in echo image (`ferrolb-testbed/echo`): HTTP and UDP on port 8080 (named `http`),
/// ready once `/readyz` answers (probed every second).
pub fn echo_container() -> Value {
    json!({
        "name": "echo",
        "image": "ferrolb-testbed/echo:latest",
        "args": ["--port", "8080"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
    })
}

/// [`echo_container`] with `env` (a JSON list of `EnvVar`s) and a liveness probe on `/healthz`
/// every 2 s, so the node agent's probes and restarts are exercised too.
pub fn echo_container_with_liveness(env: Value) -> Value {
    let mut c = echo_container();
    c["env"] = env;
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app={name}");
    wait_for(&format!("{replicas} ready {name} pods"), T, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let ready = list.items.iter().filter(|p| pod_ready(p)).count();
        Ok((ready == replicas).then_some(()))
    })
    .await?;
    wait_for(&format!("an address for {name}"), T, || async {
        Ok(ingress_ips(&services.get(name).await?).into_iter().next())
    })
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
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("ferrolb-testbed/echo:latest")
        );
        let live = echo_container_with_liveness(json!([{"name": "A", "value": "1"}]));
        assert_eq!(live["readinessProbe"], echo_container()["readinessProbe"]);
        assert_eq!(live["livenessProbe"]["httpGet"]["path"], "/healthz");
        Ok(())
    }
}
