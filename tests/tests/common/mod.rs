//! Helpers of the testbed's own tests (`tests/tests/testbed_*.rs`), included by each as
//! `mod common;`; not every file uses every helper.

#![allow(dead_code)]

use std::time::Duration;

use ferrolb_testbed::harness::{Testbed, netns_exec, netns_sh, pod_ready, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::Value;
pub const T: Duration = Duration::from_secs(90);

pub async fn setup() -> anyhow::Result<(Testbed, Client)> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    Ok((tb, client))
}

pub fn obj<K: DeserializeOwned>(v: Value) -> anyhow::Result<K> {
    Ok(serde_json::from_value(v)?)
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

pub async fn ready_pods(api: &Api<Pod>, selector: &str, n: usize) -> anyhow::Result<Vec<Pod>> {
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

pub fn curl(netns: &str, url: &str) -> anyhow::Result<String> {
    netns_sh(netns, &["curl", "-sS", "-m", "3", url])
}

pub fn host_prefix(ip: &str) -> String {
    if ip.contains(':') {
        format!("{ip}/128")
    } else {
        format!("{ip}/32")
    }
}

/// Route `ip` in the client namespace via `via` for the lifetime of the guard.
pub struct ClientRoute {
    netns: String,
    ip: String,
}

impl ClientRoute {
    pub fn set(netns: &str, ip: &str, via: &str) -> anyhow::Result<Self> {
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
