//! Volumes: projected (ServiceAccount tokens, root CA, downward API), Secret, ConfigMap,
//! downward API, emptyDir and hostPath, written atomically and refreshed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::PodRun;

fn cm_data(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        m.insert(k, v.0);
    }
    m
}

/// Removes every file under `dir` that is not in `kept`.
fn remove_files_except(
    dir: &std::path::Path,
    kept: &std::collections::BTreeSet<std::path::PathBuf>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            remove_files_except(&path, kept)?;
        } else if !kept.contains(&path) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn select_items(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> Vec<(String, Vec<u8>, Option<i32>)> {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .filter_map(|it| {
                data.get(&it.key)
                    .map(|v| (it.path.clone(), v.clone(), it.mode))
            })
            .collect(),
        _ => data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), None))
            .collect(),
    }
}

impl PodRun {
    pub(super) async fn setup_volumes(&self) -> anyhow::Result<()> {
        let client = self.ctx.client.clone();
        for v in self.spec().volumes.unwrap_or_default() {
            let dir = self.dir.join("volumes").join(&v.name);
            if v.host_path.is_some() {
                continue;
            }
            std::fs::create_dir_all(&dir)?;
            if v.empty_dir.is_some() {
                continue;
            }
            let mut files: Vec<(String, Vec<u8>, Option<i32>)> = Vec::new();
            let default_mode;
            if let Some(s) = &v.secret {
                default_mode = s.default_mode;
                let name = s.secret_name.clone().unwrap_or_default();
                match Api::<Secret>::namespaced(client.clone(), &self.ns)
                    .get_opt(&name)
                    .await?
                {
                    Some(sec) => {
                        let data: BTreeMap<String, Vec<u8>> = sec
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect();
                        files.extend(select_items(&data, s.items.as_deref()));
                    }
                    None if s.optional.unwrap_or(false) => {}
                    None => anyhow::bail!("secret {name} for volume {} not found", v.name),
                }
            } else if let Some(c) = &v.config_map {
                default_mode = c.default_mode;
                let cm = Api::<ConfigMap>::namespaced(client.clone(), &self.ns)
                    .get_opt(&c.name)
                    .await?;
                match cm {
                    Some(cm) => files.extend(select_items(&cm_data(cm), c.items.as_deref())),
                    None if c.optional.unwrap_or(false) => {}
                    None => anyhow::bail!("configmap {} for volume {} not found", c.name, v.name),
                }
            } else if let Some(d) = &v.downward_api {
                default_mode = d.default_mode;
                for it in d.items.clone().unwrap_or_default() {
                    if let Some(f) = it.field_ref {
                        let val = self.field(&f.field_path).unwrap_or_default();
                        files.push((it.path, val.into_bytes(), it.mode));
                    }
                }
            } else if let Some(p) = &v.projected {
                default_mode = p.default_mode;
                for src in p.sources.clone().unwrap_or_default() {
                    if let Some(t) = src.service_account_token {
                        let token = self
                            .token(t.audience.as_deref(), t.expiration_seconds.unwrap_or(3607))
                            .await?;
                        files.push((t.path, token.into_bytes(), None));
                    }
                    if let Some(c) = src.config_map {
                        let cm = Api::<ConfigMap>::namespaced(client.clone(), &self.ns)
                            .get_opt(&c.name)
                            .await?;
                        match cm {
                            Some(cm) => {
                                files.extend(select_items(&cm_data(cm), c.items.as_deref()))
                            }
                            None if c.optional.unwrap_or(false) => {}
                            None => anyhow::bail!("configmap {} not found", c.name),
                        }
                    }
                    if let Some(s) = src.secret {
                        let sec = Api::<Secret>::namespaced(client.clone(), &self.ns)
                            .get_opt(&s.name)
                            .await?;
                        match sec {
                            Some(sec) => {
                                let data: BTreeMap<String, Vec<u8>> = sec
                                    .data
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|(k, v)| (k, v.0))
                                    .collect();
                                files.extend(select_items(&data, s.items.as_deref()));
                            }
                            None if s.optional.unwrap_or(false) => {}
                            None => anyhow::bail!("secret {} not found", s.name),
                        }
                    }
                    if let Some(d) = src.downward_api {
                        for it in d.items.unwrap_or_default() {
                            if let Some(f) = it.field_ref {
                                let val = self.field(&f.field_path).unwrap_or_default();
                                files.push((it.path, val.into_bytes(), it.mode));
                            }
                        }
                    }
                }
            } else {
                anyhow::bail!(
                    "volume {}: only secret, configMap, projected, downwardAPI, emptyDir and hostPath volumes are supported",
                    v.name
                );
            }
            let kept: std::collections::BTreeSet<std::path::PathBuf> =
                files.iter().map(|(path, _, _)| dir.join(path)).collect();
            for (path, data, mode) in files {
                let f = dir.join(&path);
                if let Some(parent) = f.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // atomic replace, so a refresh never shows a half-written file
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("file");
                let tmp = f.with_file_name(format!(".{name}.tmp"));
                std::fs::write(&tmp, data)?;
                let mode = mode.or(default_mode).unwrap_or(0o644);
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode as u32))?;
                std::fs::rename(&tmp, &f)?;
            }
            // As the kubelet's atomic writer: an entry gone from the source (a key removed from
            // the Secret, or an optional Secret deleted) is gone from the volume too.
            remove_files_except(&dir, &kept)?;
        }
        Ok(())
    }

    /// A TokenRequest for the pod's own ServiceAccount, bound to the pod.
    async fn token(&self, audience: Option<&str>, expiration: i64) -> anyhow::Result<String> {
        let sa = self
            .spec()
            .service_account_name
            .unwrap_or_else(|| "default".into());
        let tr: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                "expirationSeconds": expiration.max(600),
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid}
            }
        }))?;
        let out = Api::<ServiceAccount>::namespaced(self.ctx.client.clone(), &self.ns)
            .create_token_request(&sa, &PostParams::default(), &tr)
            .await
            .with_context(|| format!("TokenRequest for serviceaccount {}/{sa}", self.ns))?;
        Ok(out.status.map(|s| s.token).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_gone_from_the_source_are_removed_from_the_volume() {
        let dir = std::env::temp_dir().join(format!("testbed-volume-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["key", "next", "sub/a", "sub/b"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let kept = [dir.join("key"), dir.join("sub/a")].into_iter().collect();
        remove_files_except(&dir, &kept).unwrap();
        assert!(dir.join("key").exists() && dir.join("sub/a").exists());
        assert!(!dir.join("next").exists() && !dir.join("sub/b").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
