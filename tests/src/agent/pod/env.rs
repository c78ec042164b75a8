//! Container environments: `env` (values, `fieldRef`, ConfigMap and Secret keys) and `envFrom`.

use anyhow::anyhow;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use kube::Api;

use super::PodRun;
use super::program::expand;

impl PodRun {
    pub(super) fn field(&self, path: &str) -> Option<String> {
        let md = &self.pod.metadata;
        let spec = self.spec();
        let node_ip = self.ctx.args.node_ip.to_string();
        Some(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.ns.clone(),
            "metadata.uid" => self.uid.clone(),
            "spec.nodeName" => self.ctx.args.node.clone(),
            "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
            "status.podIP" => self.pod_ip(),
            "status.podIPs" => self.pod_ips().join(","),
            "status.hostIP" | "status.hostIPs" => node_ip,
            p => {
                let (kind, key) = p.split_once("['")?;
                let key = key.strip_suffix("']")?;
                let map = match kind {
                    "metadata.labels" => md.labels.clone(),
                    "metadata.annotations" => md.annotations.clone(),
                    _ => None,
                }?;
                map.get(key).cloned().unwrap_or_default()
            }
        })
    }

    pub(super) async fn container_env(
        &self,
        c: &Container,
        program: Option<&str>,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let a = &self.ctx.args;
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), "/root".into()),
            ("HOSTNAME".into(), self.name.clone()),
            ("KUBERNETES_SERVICE_HOST".into(), a.api_host.clone()),
            ("KUBERNETES_SERVICE_PORT".into(), a.api_port.to_string()),
            (
                "KUBERNETES_SERVICE_PORT_HTTPS".into(),
                a.api_port.to_string(),
            ),
        ];
        if program == Some(&*self.ctx.self_exe.to_string_lossy()) {
            env.push(("POD_NAME".into(), self.name.clone()));
            env.push(("POD_NAMESPACE".into(), self.ns.clone()));
            env.push(("NODE_NAME".into(), a.node.clone()));
            env.push(("POD_IP".into(), self.pod_ip()));
        }
        let client = self.ctx.client.clone();
        for ef in c.env_from.clone().unwrap_or_default() {
            let prefix = ef.prefix.clone().unwrap_or_default();
            if let Some(r) = ef.config_map_ref {
                let optional = r.optional.unwrap_or(false);
                match Api::<ConfigMap>::namespaced(client.clone(), &self.ns)
                    .get_opt(&r.name)
                    .await?
                {
                    Some(cm) => {
                        for (k, v) in cm.data.unwrap_or_default() {
                            env.push((format!("{prefix}{k}"), v));
                        }
                    }
                    None if optional => {}
                    None => anyhow::bail!("configmap {} not found", r.name),
                }
            }
            if let Some(r) = ef.secret_ref {
                let optional = r.optional.unwrap_or(false);
                match Api::<Secret>::namespaced(client.clone(), &self.ns)
                    .get_opt(&r.name)
                    .await?
                {
                    Some(s) => {
                        for (k, v) in s.data.unwrap_or_default() {
                            env.push((
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v.0).into(),
                            ));
                        }
                    }
                    None if optional => {}
                    None => anyhow::bail!("secret {} not found", r.name),
                }
            }
        }
        for e in c.env.clone().unwrap_or_default() {
            let value = if let Some(vf) = e.value_from {
                if let Some(f) = vf.field_ref {
                    self.field(&f.field_path)
                        .ok_or_else(|| anyhow!("unsupported fieldRef {}", f.field_path))?
                } else if let Some(r) = vf.config_map_key_ref {
                    let cm = Api::<ConfigMap>::namespaced(client.clone(), &self.ns)
                        .get_opt(&r.name)
                        .await?;
                    match cm
                        .and_then(|cm| cm.data)
                        .and_then(|d| d.get(&r.key).cloned())
                    {
                        Some(v) => v,
                        None if r.optional.unwrap_or(false) => continue,
                        None => anyhow::bail!("configmap key {}/{} not found", r.name, r.key),
                    }
                } else if let Some(r) = vf.secret_key_ref {
                    let s = Api::<Secret>::namespaced(client.clone(), &self.ns)
                        .get_opt(&r.name)
                        .await?;
                    match s.and_then(|s| s.data).and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => anyhow::bail!("secret key {}/{} not found", r.name, r.key),
                    }
                } else if vf.resource_field_ref.is_some() {
                    "2".to_string()
                } else {
                    continue;
                }
            } else {
                expand(&e.value.clone().unwrap_or_default(), &env)
            };
            env.push((e.name.clone(), value));
        }
        Ok(env)
    }
}
