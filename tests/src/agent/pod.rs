//! One pod: its network namespace, volumes, container processes, probes and status.
//!
//! Each container runs as a process: `nsenter --net=/run/netns/POD -- unshare --mount -- sh -c
//! '<bind mounts>; exec "$@"' PROGRAM ARGS...`, so it sees its volumes at their `mountPath`s
//! (for example the ServiceAccount token at /var/run/secrets/kubernetes.io/serviceaccount) in a
//! private mount namespace, while the files live in RUN/nodes/NODE/pods/UID/volumes/NAME.
//! hostNetwork pods skip the `nsenter` and share the node namespace. Each container also gets a
//! read-only sysfs of its network namespace at /sys, as a container runtime mounts it.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, Pod, Probe, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{Ctx, now, sh};

const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Images the testbed can run, and what they map to.
pub const KNOWN_IMAGES: &str = "ferrolb:* or */ferrolb:* (binary chosen by command[0]: ferrolb-operator, \
ferrolb-controller, ferrolb-speaker), */ferrolb-operator:*, */ferrolb-controller:*, */ferrolb-speaker:*, \
ferrolb-testbed/echo[:*] (built-in echo server), ferrolb-testbed/host[:*] (command run from the host filesystem)";

/// Map a container image + command/args to a program and its arguments (pure, tested).
pub fn resolve_program(
    image: &str,
    command: &[String],
    args: &[String],
    bin_dir: &Path,
    self_exe: &Path,
) -> Result<Vec<String>, String> {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let repo_last = last.split(':').next().unwrap_or(last);
    let repo = match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    };
    let ferrolb_bins = ["ferrolb-operator", "ferrolb-controller", "ferrolb-speaker"];
    let bin = |name: &str| bin_dir.join(name).to_string_lossy().into_owned();
    let mut full: Vec<String> = command.iter().chain(args.iter()).cloned().collect();
    if repo == "ferrolb-testbed/echo" {
        let mut v = vec![self_exe.to_string_lossy().into_owned(), "echo".to_string()];
        v.extend(full);
        return Ok(v);
    }
    if repo == "ferrolb-testbed/host" {
        if full.is_empty() {
            return Err(format!("image {image} needs a command"));
        }
        return Ok(full);
    }
    if ferrolb_bins.contains(&repo_last) {
        let first_is_bin = full
            .first()
            .is_some_and(|c| Path::new(c).file_name().and_then(|f| f.to_str()) == Some(repo_last));
        if first_is_bin {
            full.remove(0);
        }
        let mut v = vec![bin(repo_last)];
        v.extend(full);
        return Ok(v);
    }
    if repo_last == "ferrolb" {
        let Some(first) = full.first() else {
            return Err(format!(
                "image {image} needs command[0] naming the binary (one of {})",
                ferrolb_bins.join(", ")
            ));
        };
        let base = Path::new(first)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("")
            .to_string();
        if !ferrolb_bins.contains(&base.as_str()) {
            return Err(format!(
                "image {image}: command[0] {first:?} is not one of {}",
                ferrolb_bins.join(", ")
            ));
        }
        full[0] = bin(&base);
        return Ok(full);
    }
    Err(format!(
        "image {image} is not known to the testbed; known images: {KNOWN_IMAGES}"
    ))
}

/// Expand `$(VAR)` references like the kubelet does (`$$` escapes).
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('(') {
            match a.find(')') {
                Some(j) => {
                    let name = &a[..j];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &a[j + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn starttime(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            after.split_whitespace().nth(19).map(str::to_string)
        })
        .unwrap_or_default()
}

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
                Err(e) => {
                    tracing::warn!(pod = %p.name, error = %format!("{e:#}"), "pod setup (retrying)");
                    p.pending = Some(("ContainerCreating".into(), format!("{e:#}")));
                }
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
        // images first: an unknown image fails the pod with a clear reason
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
                    self.failed = Some((
                        "UnknownImage".into(),
                        format!("container {}: {msg}", c.name),
                    ));
                    return Ok(());
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

    /// Run the init containers one after the other; true once all completed.
    async fn step_init(&mut self) -> bool {
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        while self.init_done < self.inits.len() {
            let i = self.init_done;
            let exited = match self.inits[i].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(st))) => Some(st.code().unwrap_or(137)),
                _ => None,
            };
            if let Some(code) = exited {
                let log_tail = self.log_tail(&self.inits[i].spec.name);
                let c = &mut self.inits[i];
                let _ = std::fs::remove_file(self.dir.join(format!("{}.pid", c.spec.name)));
                let term = json!({"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "message": log_tail,
                    "startedAt": c.started_at,
                    "finishedAt": now(),
                    "containerID": format!("ferrolb-testbed://{}", c.pid.unwrap_or(0)),
                }});
                c.child = None;
                c.last_exit = Some(code);
                if code == 0 {
                    c.state = term;
                    c.done = true;
                    self.init_done += 1;
                    continue;
                }
                if policy == "Never" {
                    c.state = term;
                    c.done = true;
                    self.failed = Some((
                        "InitContainerFailed".into(),
                        format!("init container {} exited with {code}", c.spec.name),
                    ));
                    return false;
                }
                c.next_start = Instant::now() + c.backoff;
                c.state = json!({"waiting": {"reason": "CrashLoopBackOff",
                    "message": format!("back-off {}s restarting failed init container", c.backoff.as_secs())}});
                c.last_state = term;
                c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
            }
            let c = &self.inits[i];
            if c.child.is_none() && Instant::now() >= c.next_start {
                let was_started = c.ever_started;
                // spawn() works on self.ctrs: lend it the init containers
                std::mem::swap(&mut self.ctrs, &mut self.inits);
                let r = self.spawn(i);
                std::mem::swap(&mut self.ctrs, &mut self.inits);
                match r {
                    Ok(()) if was_started => self.inits[i].restarts += 1,
                    Ok(()) => {}
                    Err(e) => {
                        let c = &mut self.inits[i];
                        c.state = json!({"waiting": {"reason": "RunContainerError", "message": format!("{e:#}")}});
                        c.next_start = Instant::now() + c.backoff;
                        c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            return false;
        }
        true
    }

    async fn setup_network(&mut self) -> anyhow::Result<()> {
        let ip = {
            let cidr = *self.ctx.pod_cidr.lock().await;
            let (base, len) = cidr.ok_or_else(|| anyhow!("node has no pod CIDR yet"))?;
            let size = 1u32 << (32 - u32::from(len));
            let mut used = self.ctx.used_ips.lock().await;
            let base = u32::from(base);
            let ip = (1..size.saturating_sub(1))
                .map(|i| Ipv4Addr::from(base + i))
                .find(|ip| !used.contains(ip))
                .ok_or_else(|| anyhow!("pod CIDR exhausted"))?;
            used.push(ip);
            ip
        };
        self.ip = Some(ip);
        // IPv6: the same host index in the node's IPv6 pod CIDR
        if let (Some((b6, _)), Some((b4, _))) = (
            *self.ctx.pod_cidr6.lock().await,
            *self.ctx.pod_cidr.lock().await,
        ) {
            let idx = u32::from(ip) - u32::from(b4);
            self.ip6 = Some(std::net::Ipv6Addr::from(u128::from(b6) + u128::from(idx)));
        }
        let short: String = self.uid.chars().filter(|c| *c != '-').take(8).collect();
        let ns = format!("{}-p{short}", self.ctx.args.netns_prefix);
        // "veth" + 8 hex digits, like the CNI bridge plugin's host-side names (and the speaker's
        // default exclusion list)
        let veth = format!("veth{short}");
        self.netns = Some(ns.clone());
        let ips = format!("{ip}/32");
        sh("ip", &["netns", "add", &ns]).await?;
        sh(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )
        .await?;
        for (k, v) in [("proxy_arp", "1"), ("rp_filter", "0")] {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{veth}/{k}"), v)
                .with_context(|| format!("sysctl {veth} {k}"))?;
        }
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/neigh/{veth}/proxy_delay"), "0");
        // the pod's gateway: 169.254.1.1 on the host side of every pod veth (link scope)
        sh(
            "ip",
            &[
                "addr",
                "add",
                "169.254.1.1/32",
                "dev",
                &veth,
                "scope",
                "link",
            ],
        )
        .await?;
        sh("ip", &["link", "set", &veth, "up"]).await?;
        sh("ip", &["route", "replace", &ips, "dev", &veth]).await?;
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
        sh("ip", &["-n", &ns, "addr", "add", &ips, "dev", "eth0"]).await?;
        sh("ip", &["-n", &ns, "link", "set", "eth0", "up"]).await?;
        sh(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ],
        )
        .await?;
        sh(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ],
        )
        .await?;
        if let Some(ip6) = self.ip6 {
            let ips6 = format!("{ip6}/128");
            let ip6s = ip6.to_string();
            sh("ip", &["addr", "add", "fe80::1/64", "dev", &veth, "nodad"]).await?;
            sh("ip", &["-6", "route", "replace", &ips6, "dev", &veth]).await?;
            sh(
                "ip",
                &["-6", "neigh", "replace", "proxy", &ip6s, "dev", "eth0"],
            )
            .await?;
            sh(
                "ip",
                &["-n", &ns, "addr", "add", &ips6, "dev", "eth0", "nodad"],
            )
            .await?;
            sh(
                "ip",
                &[
                    "-n", &ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
                ],
            )
            .await?;
        }
        tracing::info!(pod = %self.name, %ip, netns = %ns, "pod network ready");
        Ok(())
    }

    fn field(&self, path: &str) -> Option<String> {
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

    async fn container_env(
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

    async fn setup_volumes(&self) -> anyhow::Result<()> {
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

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let netns = self.netns.clone();
        let log_dir = self.dir.join("logs");
        let c = &mut self.ctrs[i];
        let mut script = String::from("set -e\n");
        // Like a container runtime: a read-only sysfs of the container's own network namespace,
        // so /sys/class/net lists its interfaces (the speaker reads them there).
        script.push_str("mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys\n");
        let under_run =
            |p: &str| p == "/run" || p.starts_with("/run/") || p.starts_with("/var/run/");
        if c.mounts.iter().any(|(_, dst, _)| under_run(dst)) {
            // a private /run, so mount points like /var/run/secrets/... need nothing on the host
            script.push_str("mount -t tmpfs -o mode=0755 ferrolb-testbed-run /run\n");
        }
        for (src, dst, ro) in &c.mounts {
            let s = shell_quote(&src.to_string_lossy());
            let d = shell_quote(dst);
            if src.is_dir() {
                script.push_str(&format!("mkdir -p {d}\n"));
            } else {
                script.push_str(&format!(
                    "mkdir -p \"$(dirname {d})\"; [ -e {d} ] || touch {d}\n"
                ));
            }
            script.push_str(&format!("mount --bind {s} {d}\n"));
            if *ro {
                script.push_str(&format!("mount -o remount,bind,ro {d}\n"));
            }
        }
        script.push_str("exec \"$@\"\n");
        let mut cmd = match &netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg("unshare");
                c
            }
            None => tokio::process::Command::new("unshare"),
        };
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(&script)
            .arg("sh")
            .args(&c.argv);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}.log", c.spec.name)))?;
        let workdir = c
            .spec
            .working_dir
            .clone()
            .filter(|d| Path::new(d).is_dir())
            .unwrap_or_else(|| "/".into());
        cmd.env_clear()
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(workdir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", c.argv))?;
        let pid = child.id().unwrap_or(0);
        std::fs::write(
            self.dir.join(format!("{}.pid", c.spec.name)),
            format!("{pid} {}\n", starttime(pid)),
        )?;
        let t = now();
        c.state = json!({"running": {"startedAt": t}});
        c.started_at = Some(t);
        c.started_instant = Some(Instant::now());
        c.child = Some(child);
        c.pid = Some(pid);
        c.ever_started = true;
        c.ready = false;
        c.ready_ok = 0;
        c.ready_fail = 0;
        c.live_fail = 0;
        let now_i = Instant::now();
        c.next_ready_probe = c.spec.readiness_probe.as_ref().map(|p| {
            now_i + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
        });
        c.next_live_probe = c.spec.liveness_probe.as_ref().map(|p| {
            now_i + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
        });
        tracing::info!(pod = %self.name, container = %c.spec.name, pid, argv = ?c.argv, "container started");
        Ok(())
    }

    async fn step(&mut self) {
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        let pod_ip = self.pod_ip();
        for i in 0..self.ctrs.len() {
            // reap
            let exited = match self.ctrs[i].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(st))) => Some(st.code().unwrap_or(137)),
                _ => None,
            };
            if let Some(code) = exited {
                let log_tail = self.log_tail(&self.ctrs[i].spec.name);
                let c = &mut self.ctrs[i];
                let _ = std::fs::remove_file(self.dir.join(format!("{}.pid", c.spec.name)));
                let ran = c.started_instant.map(|s| s.elapsed()).unwrap_or_default();
                let term = json!({"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "message": log_tail,
                    "startedAt": c.started_at,
                    "finishedAt": now(),
                    "containerID": format!("ferrolb-testbed://{}", c.pid.unwrap_or(0)),
                }});
                tracing::info!(pod = %self.name, container = %c.spec.name, code, "container exited");
                c.child = None;
                c.ready = false;
                c.last_exit = Some(code);
                let restart = match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if ran > Duration::from_secs(60) {
                    c.backoff = BACKOFF_BASE;
                }
                if restart {
                    c.next_start = Instant::now() + c.backoff;
                    c.state = json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off {}s restarting failed container", c.backoff.as_secs())}});
                    c.last_state = term;
                    c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                } else {
                    c.state = term;
                    c.done = true;
                }
            }
            // start / restart
            let c = &self.ctrs[i];
            if c.child.is_none() && !c.done && Instant::now() >= c.next_start {
                let was_started = c.ever_started;
                match self.spawn(i) {
                    Ok(()) => {
                        if was_started {
                            self.ctrs[i].restarts += 1;
                        }
                    }
                    Err(e) => {
                        let c = &mut self.ctrs[i];
                        c.state = json!({"waiting": {"reason": "RunContainerError", "message": format!("{e:#}")}});
                        c.next_start = Instant::now() + c.backoff;
                        c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            // probes
            if self.ctrs[i].child.is_none() {
                continue;
            }
            let netns = self.netns.clone();
            let now_i = Instant::now();
            if let (Some(p), Some(due)) = (
                self.ctrs[i].spec.liveness_probe.clone(),
                self.ctrs[i].next_live_probe,
            ) && now_i >= due
            {
                {
                    let ok = probe(&p, &self.ctrs[i].spec, &pod_ip, netns.as_deref()).await;
                    let c = &mut self.ctrs[i];
                    c.next_live_probe = Some(now_i + period(&p));
                    c.live_fail = if ok { 0 } else { c.live_fail + 1 };
                    if c.live_fail >= p.failure_threshold.unwrap_or(3) {
                        tracing::info!(pod = %self.name, container = %c.spec.name, "liveness probe failed: killing");
                        c.live_fail = 0;
                        c.next_live_probe = None;
                        let grace = self.spec().termination_grace_period_seconds.unwrap_or(30);
                        stop_child(&mut self.ctrs[i], grace.min(10)).await;
                        continue;
                    }
                }
            }
            if let (Some(p), Some(due)) = (
                self.ctrs[i].spec.readiness_probe.clone(),
                self.ctrs[i].next_ready_probe,
            ) {
                if now_i >= due {
                    let ok = probe(&p, &self.ctrs[i].spec, &pod_ip, netns.as_deref()).await;
                    let c = &mut self.ctrs[i];
                    c.next_ready_probe = Some(now_i + period(&p));
                    if ok {
                        c.ready_ok += 1;
                        c.ready_fail = 0;
                        if c.ready_ok >= p.success_threshold.unwrap_or(1) {
                            c.ready = true;
                        }
                    } else {
                        c.ready_fail += 1;
                        c.ready_ok = 0;
                        if c.ready_fail >= p.failure_threshold.unwrap_or(3) {
                            c.ready = false;
                        }
                    }
                }
            } else {
                self.ctrs[i].ready = true;
            }
        }
    }

    fn log_tail(&self, container: &str) -> String {
        let data = std::fs::read(self.dir.join("logs").join(format!("{container}.log")))
            .unwrap_or_default();
        let start = data.len().saturating_sub(1024);
        String::from_utf8_lossy(&data[start..]).into_owned()
    }

    fn cond(&mut self, ty: &str, ok: bool) -> Value {
        let st = if ok { "True" } else { "False" };
        let e = self
            .cond_times
            .entry(ty.to_string())
            .or_insert_with(|| (st.to_string(), now()));
        if e.0 != st {
            *e = (st.to_string(), now());
        }
        json!({"type": ty, "status": st, "lastTransitionTime": e.1})
    }

    async fn report(&mut self) {
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        let all_started = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.ever_started);
        let all_done = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.done);
        let phase = if self.failed.is_some() {
            "Failed"
        } else if !self.set_up || !all_started {
            "Pending"
        } else if all_done {
            if self.ctrs.iter().all(|c| c.last_exit == Some(0)) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else {
            let _ = policy;
            "Running"
        };
        let ready = phase == "Running" && self.ctrs.iter().all(|c| c.ready && c.child.is_some());
        let spec = self.spec();
        let statuses: Vec<Value> = if self.ctrs.is_empty() {
            spec.containers
                .iter()
                .map(|c| {
                    let (reason, msg) = self
                        .failed
                        .clone()
                        .or_else(|| self.pending.clone())
                        .unwrap_or_else(|| ("ContainerCreating".into(), String::new()));
                    let reason = if reason == "UnknownImage" {
                        "ErrImagePull".to_string()
                    } else {
                        reason
                    };
                    json!({"name": c.name, "image": c.image, "imageID": "", "ready": false,
                           "started": false, "restartCount": 0,
                           "state": {"waiting": {"reason": reason, "message": msg}}})
                })
                .collect()
        } else {
            self.ctrs
                .iter()
                .map(|c| {
                    let mut v = json!({
                        "name": c.spec.name, "image": c.spec.image,
                        "imageID": format!("ferrolb-testbed://{}", c.argv.first().cloned().unwrap_or_default()),
                        "ready": c.ready && c.child.is_some(), "started": c.child.is_some(),
                        "restartCount": c.restarts, "state": c.state, "lastState": c.last_state,
                    });
                    if let Some(pid) = c.pid {
                        v["containerID"] = json!(format!("ferrolb-testbed://{pid}"));
                    }
                    v
                })
                .collect()
        };
        let conditions = vec![
            self.cond("PodReadyToStartContainers", self.set_up),
            self.cond(
                "Initialized",
                self.set_up && self.init_done >= self.inits.len(),
            ),
            self.cond("Ready", ready),
            self.cond("ContainersReady", ready),
            self.cond("PodScheduled", true),
        ];
        let init_statuses: Vec<Value> = self
            .inits
            .iter()
            .map(|c| {
                let mut v = json!({
                    "name": c.spec.name, "image": c.spec.image,
                    "imageID": format!("ferrolb-testbed://{}", c.argv.first().cloned().unwrap_or_default()),
                    "ready": c.done && c.last_exit == Some(0), "started": c.child.is_some(),
                    "restartCount": c.restarts, "state": c.state, "lastState": c.last_state,
                });
                if let Some(pid) = c.pid {
                    v["containerID"] = json!(format!("ferrolb-testbed://{pid}"));
                }
                v
            })
            .collect();
        let node_ip = self.ctx.args.node_ip.to_string();
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": node_ip,
            "hostIPs": std::iter::once(node_ip.clone())
                .chain(self.ctx.args.node_ipv6.map(|a| a.to_string()))
                .map(|ip| json!({"ip": ip}))
                .collect::<Vec<_>>(),
            "startTime": self.start_time,
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if self.set_up || self.host_network {
            let ip = self.pod_ip();
            status["podIP"] = json!(ip);
            status["podIPs"] = json!(
                self.pod_ips()
                    .iter()
                    .map(|ip| json!({"ip": ip}))
                    .collect::<Vec<_>>()
            );
        }
        if let Some((reason, msg)) = &self.failed {
            status["reason"] = json!(reason);
            status["message"] = json!(msg);
        }
        if self.last_sent.as_ref() == Some(&status) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match pods
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(_) => self.last_sent = Some(status),
            Err(e) => {
                tracing::debug!(pod = %self.name, error = %e, "status update");
                self.last_sent = None;
            }
        }
    }

    /// SIGTERM every container, wait up to `grace` seconds, then SIGKILL.
    async fn terminate(&mut self, grace: Option<i64>) {
        let grace = grace.unwrap_or(30);
        for c in self.ctrs.iter_mut().chain(self.inits.iter_mut()) {
            if let Some(pid) = c.child.as_ref().and_then(|ch| ch.id()) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        let end = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        loop {
            let mut alive = false;
            for c in self.ctrs.iter_mut().chain(self.inits.iter_mut()) {
                if let Some(ch) = c.child.as_mut() {
                    match ch.try_wait() {
                        Ok(Some(_)) | Err(_) => c.child = None,
                        Ok(None) => alive = true,
                    }
                }
            }
            if !alive {
                break;
            }
            if Instant::now() >= end {
                for c in self.ctrs.iter_mut().chain(self.inits.iter_mut()) {
                    if let Some(ch) = c.child.as_mut() {
                        let _ = ch.start_kill();
                        let _ = ch.wait().await;
                        c.child = None;
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in self.ctrs.iter_mut().chain(self.inits.iter_mut()) {
            c.done = true;
        }
    }

    async fn teardown(&mut self) {
        if let Some(ns) = self.netns.take()
            && let Err(e) = sh("ip", &["netns", "del", &ns]).await
        {
            tracing::warn!(error = %e, "deleting pod netns");
        }
        if let Some(ip6) = self.ip6.take() {
            let ip6s = ip6.to_string();
            let _ = sh("ip", &["-6", "neigh", "del", "proxy", &ip6s, "dev", "eth0"]).await;
        }
        if let Some(ip) = self.ip.take() {
            let ips = format!("{ip}/32");
            let _ = sh("ip", &["route", "del", &ips]).await;
            self.ctx.used_ips.lock().await.retain(|x| *x != ip);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn stop_child(c: &mut Ctr, grace: i64) {
    let Some(ch) = c.child.as_mut() else { return };
    if let Some(pid) = ch.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let waited = tokio::time::timeout(Duration::from_secs(grace.max(0) as u64), ch.wait()).await;
    if waited.is_err() {
        let _ = ch.start_kill();
    }
    // the exit is reaped (and the restart decided) by the next step()
}

fn period(p: &Probe) -> Duration {
    Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64)
}

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

fn resolve_port(port: &IntOrString, c: &Container) -> Option<i32> {
    match port {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(name) => c
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

/// Run one probe; true on success.
async fn probe(p: &Probe, c: &Container, pod_ip: &str, netns: Option<&str>) -> bool {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let fut = async {
        if let Some(h) = &p.http_get {
            let port = resolve_port(&h.port, c)?;
            let host = h.host.clone().unwrap_or_else(|| pod_ip.to_string());
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port as u16))
                .await
                .ok()?;
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            return Some((200..400).contains(&code));
        }
        if let Some(t) = &p.tcp_socket {
            let port = resolve_port(&t.port, c)?;
            let host = t.host.clone().unwrap_or_else(|| pod_ip.to_string());
            return Some(
                tokio::net::TcpStream::connect((host.as_str(), port as u16))
                    .await
                    .is_ok(),
            );
        }
        if let Some(e) = &p.exec {
            let cmd = e.command.clone().unwrap_or_default();
            let mut full: Vec<String> = Vec::new();
            if let Some(ns) = netns {
                full.extend([
                    "nsenter".to_string(),
                    format!("--net=/run/netns/{ns}"),
                    "--".into(),
                ]);
            }
            full.extend(cmd);
            let (prog, args) = full.split_first()?;
            let st = tokio::process::Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .ok()?;
            return Some(st.success());
        }
        Some(true)
    };
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_images() {
        let bin = Path::new("/t/debug");
        let me = Path::new("/x/ferrolb-testbed");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_program(
                "ferrolb:dev",
                &s(&["/ferrolb-speaker"]),
                &s(&["--x"]),
                bin,
                me
            ),
            Ok(s(&["/t/debug/ferrolb-speaker", "--x"]))
        );
        assert_eq!(
            resolve_program(
                "quay.io/ferrolb/ferrolb:v1",
                &s(&["ferrolb-controller"]),
                &[],
                bin,
                me
            ),
            Ok(s(&["/t/debug/ferrolb-controller"]))
        );
        assert_eq!(
            resolve_program("ghcr.io/x/ferrolb-speaker:v1", &[], &s(&["--a"]), bin, me),
            Ok(s(&["/t/debug/ferrolb-speaker", "--a"]))
        );
        assert_eq!(
            resolve_program("ferrolb-testbed/echo", &[], &s(&["--port", "80"]), bin, me),
            Ok(s(&["/x/ferrolb-testbed", "echo", "--port", "80"]))
        );
        assert!(resolve_program("nginx:1", &[], &[], bin, me).is_err());
        assert!(resolve_program("ferrolb:dev", &s(&["/bin/sh"]), &[], bin, me).is_err());
    }

    #[test]
    fn expands_vars() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
    }
}
