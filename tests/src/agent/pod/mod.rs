//! One pod: its network namespace, volumes, container processes, probes and status.
//!
//! Each container runs as a process: `nsenter --net=/run/netns/POD -- unshare --mount -- sh -c
//! '<bind mounts>; exec "$@"' PROGRAM ARGS...`, so it sees its volumes at their `mountPath`s
//! (for example the ServiceAccount token at /var/run/secrets/kubernetes.io/serviceaccount) in a
//! private mount namespace, while the files live in RUN/nodes/NODE/pods/UID/volumes/NAME.
//! hostNetwork pods skip the `nsenter` and share the node namespace. Each container also gets a
//! read-only sysfs of its network namespace at /sys, as a container runtime mounts it.
//!
//! This module holds the pod's state and its loop ([`worker`]); the jobs are its submodules:
//! `program` (image → program), `network`, `env`, `volumes`, `process` (start, restart, stop),
//! `probes` and `status`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Ctx, now};

mod env;
mod network;
mod probes;
mod process;
mod program;
mod status;
mod volumes;

use process::BACKOFF_BASE;
pub use program::{KNOWN_IMAGES, expand, resolve_program};

/// A container image the testbed cannot run: the pod waits in `ErrImagePull`.
#[derive(Debug)]
struct UnknownImage(String);

impl std::fmt::Display for UnknownImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnknownImage {}

#[derive(Debug)]
struct Ctr {
    spec: Container,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, String, bool)>,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    restarts: i32,
    started_at: Option<String>,
    started_instant: Option<Instant>,
    state: Value,
    last_state: Value,
    next_start: Instant,
    backoff: Duration,
    ever_started: bool,
    done: bool,
    last_exit: Option<i32>,
    ready: bool,
    ready_ok: i32,
    ready_fail: i32,
    live_fail: i32,
    next_ready_probe: Option<Instant>,
    next_live_probe: Option<Instant>,
}

#[derive(Debug)]
struct PodRun {
    ctx: Arc<Ctx>,
    pod: Pod,
    uid: String,
    name: String,
    ns: String,
    dir: PathBuf,
    netns: Option<String>,
    ip: Option<Ipv4Addr>,
    ip6: Option<std::net::Ipv6Addr>,
    host_network: bool,
    failed: Option<(String, String)>,
    pending: Option<(String, String)>,
    ctrs: Vec<Ctr>,
    inits: Vec<Ctr>,
    init_done: usize,
    set_up: bool,
    refreshed: Instant,
    start_time: String,
    cond_times: HashMap<String, (String, String)>,
    last_sent: Option<Value>,
}

/// Run one pod until it is deleted (or the agent stops: the sender side is dropped / sends None).
pub async fn worker(ctx: Arc<Ctx>, mut rx: watch::Receiver<Option<Pod>>) {
    let Some(pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let dir = ctx.pods_dir.join(&uid);
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let mut p = PodRun {
        ctx,
        pod,
        uid,
        name,
        ns,
        dir,
        netns: None,
        ip: None,
        ip6: None,
        host_network,
        failed: None,
        pending: None,
        ctrs: Vec::new(),
        inits: Vec::new(),
        init_done: 0,
        set_up: false,
        refreshed: Instant::now(),
        start_time: now(),
        cond_times: HashMap::new(),
        last_sent: None,
    };
    tracing::info!(pod = %format!("{}/{}", p.ns, p.name), "pod assigned");
    loop {
        let cur = rx.borrow_and_update().clone();
        let Some(cur) = cur else {
            p.terminate(Some(2)).await;
            p.teardown().await;
            return;
        };
        p.pod = cur;
        if p.pod.metadata.deletion_timestamp.is_some() {
            let grace = p
                .pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    p.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30);
            p.terminate(Some(grace)).await;
            p.teardown().await;
            let pods: Api<Pod> = Api::namespaced(p.ctx.client.clone(), &p.ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(p.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            if let Err(e) = pods.delete(&p.name, &dp).await {
                tracing::debug!(error = %e, pod = %p.name, "final delete");
            }
            tracing::info!(pod = %format!("{}/{}", p.ns, p.name), "pod terminated and removed");
            return;
        }
        if !p.set_up && p.failed.is_none() {
            match p.setup().await {
                Ok(()) => {
                    p.set_up = true;
                    p.pending = None;
                }
                Err(e) => match e.downcast_ref::<UnknownImage>() {
                    Some(UnknownImage(msg)) => {
                        tracing::debug!(pod = %p.name, %msg, "unknown image (retrying)");
                        p.pending = Some(("ErrImagePull".into(), msg.clone()));
                    }
                    None => {
                        tracing::warn!(pod = %p.name, error = %format!("{e:#}"), "pod setup (retrying)");
                        p.pending = Some(("ContainerCreating".into(), format!("{e:#}")));
                    }
                },
            }
        }
        if p.set_up && p.failed.is_none() && p.step_init().await && p.failed.is_none() {
            p.step().await;
            // like the kubelet: refresh projected tokens and ConfigMap/Secret volumes (~1 min)
            if p.refreshed.elapsed() > Duration::from_secs(p.ctx.args.volume_refresh_seconds) {
                if let Err(e) = p.setup_volumes().await {
                    tracing::warn!(pod = %p.name, error = %format!("{e:#}"), "volume refresh");
                }
                p.refreshed = Instant::now();
            }
        }
        p.report().await;
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    p.terminate(Some(2)).await;
                    p.teardown().await;
                    return;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

impl PodRun {
    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    /// IPv4 first, then IPv6 (hostNetwork pods: the node's addresses).
    fn pod_ips(&self) -> Vec<String> {
        let v6 = if self.host_network {
            self.ctx.args.node_ipv6.map(|a| a.to_string())
        } else {
            self.ip6.map(|a| a.to_string())
        };
        std::iter::once(self.pod_ip()).chain(v6).collect()
    }

    fn pod_ip(&self) -> String {
        match self.ip {
            Some(ip) => ip.to_string(),
            None => self.ctx.args.node_ip.to_string(),
        }
    }

    async fn setup(&mut self) -> anyhow::Result<()> {
        let spec = self.spec();
        // images first: an unknown image leaves the pod Pending with ErrImagePull (retried), as
        // a kubelet does with an image it cannot pull
        let self_exe = self.ctx.self_exe.clone();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let mut argvs = Vec::new();
        for c in inits.iter().chain(spec.containers.iter()) {
            let image = c.image.clone().unwrap_or_default();
            match resolve_program(
                &image,
                c.command.as_deref().unwrap_or_default(),
                c.args.as_deref().unwrap_or_default(),
                &self.ctx.args.bin_dir,
                &self_exe,
            ) {
                Ok(v) => argvs.push(v),
                Err(msg) => {
                    return Err(UnknownImage(format!("container {}: {msg}", c.name)).into());
                }
            }
        }
        std::fs::create_dir_all(self.dir.join("volumes"))?;
        std::fs::create_dir_all(self.dir.join("logs"))?;
        std::fs::write(
            self.dir.join("meta"),
            format!("{}/{}\n", self.ns, self.name),
        )?;
        if !self.host_network && self.netns.is_none() {
            self.setup_network().await?;
        }
        self.setup_volumes().await?;
        let mut ctrs = Vec::new();
        for (c, argv) in inits.iter().chain(spec.containers.iter()).zip(argvs) {
            let env = self
                .container_env(c, argv.first().map(String::as_str))
                .await?;
            let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
            let mut mounts = Vec::new();
            for m in c.volume_mounts.clone().unwrap_or_default() {
                let mut src = self.dir.join("volumes").join(&m.name);
                if let Some(hp) = spec
                    .volumes
                    .as_ref()
                    .and_then(|vs| vs.iter().find(|v| v.name == m.name))
                    .and_then(|v| v.host_path.as_ref())
                {
                    src = PathBuf::from(&hp.path);
                }
                if let Some(sp) = m.sub_path.as_ref().filter(|s| !s.is_empty()) {
                    src = src.join(sp);
                }
                mounts.push((src, m.mount_path.clone(), m.read_only.unwrap_or(false)));
            }
            ctrs.push(Ctr {
                spec: c.clone(),
                argv,
                env,
                mounts,
                child: None,
                pid: None,
                restarts: 0,
                started_at: None,
                started_instant: None,
                state: json!({"waiting": {"reason": "ContainerCreating"}}),
                last_state: json!({}),
                next_start: Instant::now(),
                backoff: BACKOFF_BASE,
                ever_started: false,
                done: false,
                last_exit: None,
                ready: false,
                ready_ok: 0,
                ready_fail: 0,
                live_fail: 0,
                next_ready_probe: None,
                next_live_probe: None,
            });
        }
        self.inits = ctrs.drain(..inits.len()).collect();
        self.ctrs = ctrs;
        Ok(())
    }
}
