//! The test harness: start or reuse the testbed described by `.testbed/env`, and helpers for
//! tests (per-test namespaces, exec in a network namespace, wait for conditions, FRR JSON).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

/// The repository root (the workspace of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `tests/testbed/testbed.sh ARGS...` for the testbed of [`Testbed::env_path`]'s state
/// directory, and requires success.
fn testbed_sh(args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let path = Testbed::env_path();
    let state_dir = path.parent().unwrap_or(Path::new("."));
    let shown = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let st = Command::new("bash")
        .arg(repo_root().join("tests/testbed/testbed.sh"))
        .args(args)
        .env("TESTBED_STATE_DIR", state_dir)
        .status()
        .with_context(|| format!("running tests/testbed/testbed.sh {shown}"))?;
    if !st.success() {
        bail!("testbed.sh {shown} failed ({st})");
    }
    Ok(())
}

/// A running testbed, as described by `.testbed/env`.
#[derive(Debug, Clone)]
pub struct Testbed {
    /// Every `KEY=value` of `.testbed/env`.
    pub env: HashMap<String, String>,
    /// Admin kubeconfig (reachable from the root namespace).
    pub kubeconfig: PathBuf,
    /// Node network namespaces, in node order (node-1 first).
    pub node_netns: Vec<String>,
    /// Node names, in the same order.
    pub node_names: Vec<String>,
    /// Node IPv4 addresses, in the same order.
    pub node_ips: Vec<String>,
    /// The FRR router namespace.
    pub router_netns: String,
    /// The client namespace.
    pub client_netns: String,
    /// kubectl matching the API server.
    pub kubectl: PathBuf,
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

impl Testbed {
    /// The env file written by `make testbed-up` (`TESTBED_ENV` overrides).
    pub fn env_path() -> PathBuf {
        std::env::var_os("TESTBED_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".testbed").join("env"))
    }

    /// Reuse the running testbed, or bring one up (`tests/testbed/testbed.sh up`, idempotent).
    pub fn start_or_reuse() -> anyhow::Result<Self> {
        let path = Self::env_path();
        if !path.exists() {
            testbed_sh(&["up".as_ref()])?;
        }
        Self::load(&path)
    }

    /// Read an env file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} (run `make testbed-up`)", path.display()))?;
        let env = parse_env(&text);
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .ok_or_else(|| anyhow!("{k} missing in {}", path.display()))
        };
        let words = |k: &str| -> anyhow::Result<Vec<String>> {
            Ok(get(k)?.split_whitespace().map(str::to_string).collect())
        };
        Ok(Self {
            kubeconfig: PathBuf::from(get("KUBECONFIG")?),
            node_netns: words("TESTBED_NODE_NETNS")?,
            node_names: words("TESTBED_NODE_NAMES")?,
            node_ips: words("TESTBED_NODE_IPS")?,
            router_netns: get("TESTBED_ROUTER_NETNS")?,
            client_netns: get("TESTBED_CLIENT_NETNS")?,
            kubectl: PathBuf::from(get("TESTBED_KUBECTL")?),
            env,
        })
    }

    /// A value of the env file.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// An admin client.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// Stops OLM's processes (`tests/testbed/testbed.sh olm-down`; its objects stay).
    pub fn olm_down(&self) -> anyhow::Result<()> {
        testbed_sh(&["olm-down".as_ref()])
    }

    /// Adds OLM v0 to the testbed, with the CatalogSource serving `catalog` (a file-based
    /// catalog directory; `tests/testbed/testbed.sh olm-up`, idempotent), and returns the
    /// testbed with the OLM entries of its env file (`TESTBED_OLM_NAMESPACE`,
    /// `TESTBED_CATALOG_SOURCE`).
    pub fn olm_up(&self, catalog: &Path) -> anyhow::Result<Self> {
        testbed_sh(&["olm-up".as_ref(), catalog.as_os_str()])?;
        Self::load(&Self::env_path())
    }

    /// Tags the image `from` as `to` in every node's containerd (as if `to` had been pulled).
    pub fn tag_image_on_nodes(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let run = self.var("TESTBED_RUN_DIR").context("TESTBED_RUN_DIR")?;
        for node in &self.node_names {
            let socket = format!("{run}/nodes/{node}/run/containerd/containerd.sock");
            let out = Command::new("ctr")
                .args([
                    "-a", &socket, "-n", "k8s.io", "images", "tag", "--force", from, to,
                ])
                .output()
                .context("running ctr")?;
            if !out.status.success() {
                bail!(
                    "ctr images tag {from} {to} on {node}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    /// Waits until `http://IP/` answers from the client namespace (within 60 s); the answer.
    pub async fn wait_answers(&self, ip: &str) -> anyhow::Result<String> {
        let url = if ip.contains(':') {
            format!("http://[{ip}]/")
        } else {
            format!("http://{ip}/")
        };
        wait_for(
            &format!("{url} to answer"),
            Duration::from_secs(60),
            || async { Ok(netns_sh(&self.client_netns, &["curl", "-sS", "-m", "2", &url]).ok()) },
        )
        .await
    }

    /// Run `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .context("running kubectl")
    }

    /// Run `kubectl` with the admin kubeconfig and require success; its standard output, or an
    /// error naming the arguments and kubectl's standard error.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs configuration commands in FRR's bgpd (`configure terminal`, `router bgp ASN`, then
    /// `lines`); a refused command is an error.
    pub fn frr_configure(&self, asn: u32, lines: &[String]) -> anyhow::Result<()> {
        let vty = self
            .var("TESTBED_ROUTER_VTY")
            .ok_or_else(|| anyhow!("TESTBED_ROUTER_VTY missing"))?;
        let router = format!("router bgp {asn}");
        let mut argv = vec![
            "vtysh",
            "--vty_socket",
            vty,
            "-d",
            "bgpd",
            "-c",
            "configure terminal",
            "-c",
            &router,
        ];
        for line in lines {
            argv.extend(["-c", line.as_str()]);
        }
        let out = netns_exec(&self.router_netns, &argv)?;
        // A refused command is a `% …` line on standard output.
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || stdout.contains('%') {
            bail!(
                "vtysh {lines:?} ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Read FRR state as JSON, e.g. `show bgp ipv4 unicast json`.
    pub fn frr_json(&self, command: &str) -> anyhow::Result<Value> {
        let vty = self
            .var("TESTBED_ROUTER_VTY")
            .ok_or_else(|| anyhow!("TESTBED_ROUTER_VTY missing"))?;
        let out = netns_exec(
            &self.router_netns,
            &["vtysh", "--vty_socket", vty, "-d", "bgpd", "-c", command],
        )?;
        if !out.status.success() {
            bail!("vtysh {command}: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("vtysh {command}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Ask the BIRD router (`birdc show ...`); BIRD has no JSON output, so this is text.
    pub fn bird(&self, command: &str) -> anyhow::Result<String> {
        let ns = self
            .var("TESTBED_BIRD_NETNS")
            .ok_or_else(|| anyhow!("TESTBED_BIRD_NETNS missing"))?;
        let ctl = self
            .var("TESTBED_BIRD_CTL")
            .ok_or_else(|| anyhow!("TESTBED_BIRD_CTL missing"))?;
        let mut argv = vec!["birdc", "-s", ctl];
        argv.extend(command.split_whitespace());
        netns_sh(ns, &argv)
    }

    /// Ask the GoBGP router, as JSON, e.g. `&["global", "rib", "-a", "ipv4"]` or `&["neighbor"]`.
    pub fn gobgp_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let ns = self
            .var("TESTBED_GOBGP_NETNS")
            .ok_or_else(|| anyhow!("TESTBED_GOBGP_NETNS missing"))?;
        let api = self.var("TESTBED_GOBGP_API").unwrap_or("127.0.0.1:50051");
        let (host, port) = api.rsplit_once(':').unwrap_or(("127.0.0.1", "50051"));
        let mut argv = vec!["gobgp", "-u", host, "-p", port];
        argv.extend_from_slice(args);
        argv.push("-j");
        let out = netns_sh(ns, &argv)?;
        serde_json::from_str(&out).with_context(|| format!("gobgp {args:?}: {out}"))
    }

    /// Take node `i`'s uplink down (`up = false`) or up: the node drops off the bridge (BGP
    /// sessions time out, traffic to it is lost, its kubelet loses the API server).
    pub fn set_node_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        let ns = self
            .node_netns
            .get(i)
            .ok_or_else(|| anyhow!("no node {i}"))?;
        netns_sh(
            ns,
            &["ip", "link", "set", "eth0", if up { "up" } else { "down" }],
        )?;
        if up {
            // the kernel dropped the gateway routes with the link: put them back
            let run = self
                .var("TESTBED_RUN_DIR")
                .ok_or_else(|| anyhow!("TESTBED_RUN_DIR missing"))?;
            let routes = format!("{run}/routes/{ns}.sh");
            let out = Command::new("sh").arg(&routes).output()?;
            if !out.status.success() {
                bail!("{routes}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    }

    /// Take node `i`'s uplink down until the returned guard is dropped (also when a test fails
    /// in between).
    pub fn cut_node_link(&self, i: usize) -> anyhow::Result<LinkCut<'_>> {
        let guard = LinkCut(self, i);
        self.set_node_link(i, false)?;
        Ok(guard)
    }

    /// The PID of a node's kubelet (e.g. to SIGSTOP it: its pods keep running, their Secret
    /// and ConfigMap volumes are no longer refreshed, and the node goes NotReady after the
    /// controller-manager's 40 s grace period).
    pub fn kubelet_pid(&self, node: &str) -> anyhow::Result<u32> {
        self.process_pid(&format!("kubelet-{node}"))
    }

    /// The PID of a process the testbed started, by the name `testbed.sh` records it under
    /// (`kube-apiserver`, `etcd`, `kubelet-node-1`, `containerd-node-1`, ...).
    pub fn process_pid(&self, name: &str) -> anyhow::Result<u32> {
        let run = self
            .var("TESTBED_RUN_DIR")
            .ok_or_else(|| anyhow!("TESTBED_RUN_DIR missing"))?;
        let f = Path::new(run).join("pids").join(format!("{name}.pid"));
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        text.split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("bad pid file {}", f.display()))
    }

    /// The log of a container (stdout and stderr) through all its restarts, oldest first, read
    /// from the files the kubelet writes (`kubectl logs` shows only the current or the previous
    /// run). The CRI prefix of each line (time, stream, tag) is removed.
    pub fn pod_log(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        container: &str,
    ) -> anyhow::Result<String> {
        let run = self
            .var("TESTBED_RUN_DIR")
            .ok_or_else(|| anyhow!("TESTBED_RUN_DIR missing"))?;
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .ok_or_else(|| anyhow!("pod not scheduled"))?;
        let meta = &pod.metadata;
        let dir = Path::new(run)
            .join("nodes")
            .join(&node)
            .join("log/pods")
            .join(format!(
                "{}_{}_{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
                meta.uid.as_deref().unwrap_or_default()
            ))
            .join(container);
        let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| {
                let path = e.ok()?.path();
                let n = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((n, path))
            })
            .collect();
        runs.sort();
        let mut log = String::new();
        for (_, path) in runs {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            log.push_str(&cri_log_text(&text));
        }
        Ok(log)
    }

    /// A fresh, uniquely named namespace, deleted when the guard is dropped.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> anyhow::Result<TestNamespace> {
        let name = unique_name(prefix);
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"testbed.ferrolb.io/test": "true"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        // the namespace's default ServiceAccount comes from kube-controller-manager
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_for(
            "default serviceaccount",
            Duration::from_secs(30),
            || async { Ok(sas.get_opt("default").await?.map(|_| ())) },
        )
        .await?;
        Ok(self.existing_namespace(&name))
    }

    /// The guard of a namespace that already exists (one an earlier run kept with
    /// [`TestNamespace::keep`]): deleted when dropped, like a new one.
    pub fn existing_namespace(&self, name: &str) -> TestNamespace {
        TestNamespace {
            name: name.to_owned(),
            kubectl: self.kubectl.clone(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }
}

/// A node's uplink cut by [`Testbed::cut_node_link`]; brought back up when dropped.
#[derive(Debug)]
pub struct LinkCut<'a>(&'a Testbed, usize);

impl Drop for LinkCut<'_> {
    fn drop(&mut self) {
        let _ = self.0.set_node_link(self.1, true);
    }
}

/// A per-test namespace; deleted (in the background) on drop, even when the test fails.
pub struct TestNamespace {
    /// The namespace name.
    pub name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// Delete the namespace and wait until it is gone (its pods stopped, its Services and
    /// their load-balancer IPs released), so the next test starts from a clean cluster.
    /// Dropping the guard only starts the deletion.
    pub async fn delete_and_wait(self, client: &Client, timeout: Duration) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(client.clone());
        let _ = api
            .delete(&self.name, &kube::api::DeleteParams::background())
            .await;
        let name = self.name.clone();
        wait_for(&format!("namespace {name} gone"), timeout, || async {
            Ok(api.get_opt(&name).await?.is_none().then_some(()))
        })
        .await
    }

    /// Leaves the namespace and everything in it in place (a benchmark's fill, for its next run
    /// with [`Testbed::existing_namespace`]) and returns its name.
    pub fn keep(self) -> String {
        std::mem::ManuallyDrop::new(self).name.clone()
    }
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // blocking and runtime-independent, so it also runs when a test panics
        let _ = Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// A name that is unique across runs and tests: `PREFIX-<time+pid+counter in hex>`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let x = (t as u64)
        ^ (u64::from(std::process::id()) << 40)
        ^ u64::from(N.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}-{:08x}", (x ^ (x >> 32)) as u32)
}

/// Run a command inside a network namespace (`ip netns exec`).
pub fn netns_exec(netns: &str, argv: &[&str]) -> anyhow::Result<Output> {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .output()
        .with_context(|| format!("ip netns exec {netns} {argv:?}"))
}

/// Run a command inside a network namespace and return stdout, failing on a non-zero exit.
pub fn netns_sh(netns: &str, argv: &[&str]) -> anyhow::Result<String> {
    let out = netns_exec(netns, argv)?;
    if !out.status.success() {
        bail!(
            "{argv:?} in {netns} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace of its own for a test or a probe (`ftb-scratch-PID-TAG`; needs root),
/// deleted on drop.
#[derive(Debug)]
pub struct ScratchNetns(pub String);

impl ScratchNetns {
    pub fn new(tag: &str) -> anyhow::Result<ScratchNetns> {
        let name = format!("ftb-scratch-{}-{tag}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output()?;
        if !out.status.success() {
            bail!(
                "ip netns add {name} (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(ScratchNetns(name))
    }

    /// Run an `nft` script in the namespace (one transaction).
    pub fn nft(&self, script: &str) -> anyhow::Result<()> {
        let path = std::env::temp_dir().join(format!("{}.nft", self.0));
        std::fs::write(&path, script)?;
        let result = netns_sh(&self.0, &["nft", "-f", &path.display().to_string()]);
        let _ = std::fs::remove_file(&path);
        result.map(drop)
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

/// Poll `f` every 250 ms until it returns `Ok(Some(v))`, or fail after `timeout` with the last
/// error.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::from("condition not met");
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Continuous HTTP probes from a network namespace (`ferrolb-testbed probe`), to measure failover
/// as the longest gap between two answered probes.
#[derive(Debug)]
pub struct Probe {
    child: std::process::Child,
    reader: Option<std::thread::JoinHandle<Vec<Value>>>,
}

/// What a [`Probe`] saw.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Every probe: `{"t_ms", "ok", "body" | "error"}`.
    pub samples: Vec<Value>,
    /// Longest time between two successful probes (or from the first to the last probe when
    /// none succeeded).
    pub max_gap: Duration,
    /// How many probes each answer body got (e.g. `pod=… node=…` lines of the echo image).
    pub answers: std::collections::BTreeMap<String, usize>,
    /// Failed probes.
    pub failures: usize,
    /// From the first to the last failed probe (zero without failures).
    pub failure_window: Duration,
}

impl Probe {
    /// Start probing `target` (ip:port) from `netns` every `interval`, with the testbed's own
    /// copy of the `ferrolb-testbed` binary.
    pub fn start(
        tb: &Testbed,
        netns: &str,
        target: &str,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let run = tb
            .var("TESTBED_RUN_DIR")
            .ok_or_else(|| anyhow!("TESTBED_RUN_DIR missing"))?;
        let exe = Path::new(run).join("bin").join("ferrolb-testbed");
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(&exe)
            .args(["probe", "--target", target, "--interval-ms"])
            .arg(interval.as_millis().to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} probe", exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("probe has no stdout"))?;
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| serde_json::from_str(&l).ok())
                .collect()
        });
        Ok(Self {
            child,
            reader: Some(reader),
        })
    }

    /// Stop probing and summarise.
    pub fn stop(mut self) -> ProbeReport {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let samples = self
            .reader
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        summarize(samples)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who answers ARP for an IPv4 address, asked every `interval` from `netns` by `arping` (Thomas
/// Habets' 2.x, one MAC line per reply): the arrival time of every reply, to find the longest
/// time nobody answered, which a client whose neighbour entry expires would feel.
#[derive(Debug)]
pub struct ArpProbe {
    child: std::process::Child,
    started: Instant,
    reader: Option<std::thread::JoinHandle<Vec<(Duration, String)>>>,
}

/// What an [`ArpProbe`] saw.
#[derive(Debug, Clone)]
pub struct ArpReport {
    /// Replies received.
    pub replies: usize,
    /// Longest time without a reply (from the start, between replies, to the stop).
    pub max_gap: Duration,
    /// Replies per answering MAC.
    pub macs: std::collections::BTreeMap<String, usize>,
    /// When each reply came (from the start) and from which MAC.
    pub timeline: Vec<(Duration, String)>,
}

impl ArpReport {
    /// When each reply came, from the start.
    pub fn times(&self) -> Vec<Duration> {
        self.timeline.iter().map(|(at, _)| *at).collect()
    }

    /// The MACs that answered between `from` and `to`.
    pub fn macs_within(&self, from: Duration, to: Duration) -> std::collections::BTreeSet<String> {
        self.timeline
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, mac)| mac.clone())
            .collect()
    }
}

impl ArpProbe {
    /// Starts asking for `ip` on `netns`'s `eth0`.
    pub fn start(netns: &str, ip: &str, interval: Duration) -> anyhow::Result<Self> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "arping", "-r", "-i", "eth0", "-W"])
            .arg(format!("{:.3}", interval.as_secs_f64()))
            .arg(ip)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting arping")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("arping has no stdout"))?;
        let started = Instant::now();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(|mac| (started.elapsed(), mac.trim().to_owned()))
                .collect()
        });
        Ok(Self {
            child,
            started,
            reader: Some(reader),
        })
    }

    /// Stops asking and summarises.
    pub fn stop(mut self) -> ArpReport {
        let end = self.started.elapsed();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let replies = self
            .reader
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let mut macs = std::collections::BTreeMap::new();
        let mut max_gap = Duration::ZERO;
        let mut last = Duration::ZERO;
        for (at, mac) in &replies {
            max_gap = max_gap.max(at.saturating_sub(last));
            last = *at;
            *macs.entry(mac.clone()).or_insert(0) += 1;
        }
        ArpReport {
            replies: replies.len(),
            max_gap: max_gap.max(end.saturating_sub(last)),
            macs,
            timeline: replies,
        }
    }
}

impl Drop for ArpProbe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client probing an IPv4 address both ways at once from the client namespace: a TCP
/// connection to port 80 every 10 ms ([`Probe`]) and ARP every 50 ms ([`ArpProbe`]): what an
/// open client feels, and what a client whose neighbour entry expires would find.
#[derive(Debug)]
pub struct ClientProbes {
    tcp: Probe,
    arp: ArpProbe,
}

impl ClientProbes {
    /// Starts both.
    pub fn start(tb: &Testbed, ip: &str) -> anyhow::Result<Self> {
        Ok(Self {
            tcp: Probe::start(
                tb,
                &tb.client_netns,
                &format!("{ip}:80"),
                Duration::from_millis(10),
            )?,
            arp: ArpProbe::start(&tb.client_netns, ip, Duration::from_millis(50))?,
        })
    }

    /// Stops both: what each saw.
    pub fn stop(self) -> (ProbeReport, ArpReport) {
        (self.tcp.stop(), self.arp.stop())
    }
}

/// A process stopped with SIGSTOP, continued when dropped (so a failing test leaves none frozen).
#[derive(Debug)]
pub struct Frozen(u32);

impl Frozen {
    /// Stops `pid`.
    pub fn new(pid: u32) -> anyhow::Result<Self> {
        use nix::sys::signal::{Signal, kill};
        kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            Signal::SIGSTOP,
        )
        .with_context(|| format!("SIGSTOP {pid}"))?;
        Ok(Self(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        if let Ok(pid) = i32::try_from(self.0) {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
}

/// The longest time between `from` and `to` without an answer, given the (sorted) times of
/// every answer: from `from` to the first answer after it, between answers, and from the last
/// one to `to` (pure).
///
/// ```
/// use std::time::Duration;
/// let ms = Duration::from_millis;
/// let at = [ms(0), ms(100), ms(900), ms(1000)];
/// assert_eq!(ferrolb_testbed::harness::gap_within(&at, ms(50), ms(950)), ms(800));
/// assert_eq!(ferrolb_testbed::harness::gap_within(&at, ms(950), ms(2000)), ms(1000));
/// assert_eq!(ferrolb_testbed::harness::gap_within(&[], ms(0), ms(10)), ms(10));
/// ```
pub fn gap_within(times: &[Duration], from: Duration, to: Duration) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for &t in times.iter().filter(|t| **t > from && **t <= to) {
        gap = gap.max(t - last);
        last = t;
    }
    gap.max(to.saturating_sub(last))
}

/// Summarise probe samples (pure).
///
/// ```
/// let s = |t: u64, ok: bool| serde_json::json!({"t_ms": t, "ok": ok, "body": "a"});
/// let r = ferrolb_testbed::harness::summarize(vec![s(0, true), s(50, false), s(100, false), s(150, true)]);
/// assert_eq!(r.max_gap, std::time::Duration::from_millis(150));
/// assert_eq!((r.failures, r.failure_window.as_millis()), (2, 50));
/// ```
pub fn summarize(mut samples: Vec<Value>) -> ProbeReport {
    // Probes overlap, so they may finish out of order.
    samples.sort_by_key(|s| s["t_ms"].as_u64().unwrap_or(0));
    let mut answers = std::collections::BTreeMap::new();
    let mut max_gap = 0u64;
    let mut last_ok: Option<u64> = None;
    let first = samples
        .first()
        .and_then(|s| s["t_ms"].as_u64())
        .unwrap_or(0);
    let end = samples.last().and_then(|s| s["t_ms"].as_u64()).unwrap_or(0);
    let (mut failures, mut first_fail, mut last_fail) = (0usize, None, 0u64);
    for s in &samples {
        let t = s["t_ms"].as_u64().unwrap_or(0);
        if s["ok"].as_bool() != Some(true) {
            failures += 1;
            first_fail.get_or_insert(t);
            last_fail = t;
        }
        if s["ok"].as_bool() == Some(true) {
            if let Some(prev) = last_ok {
                max_gap = max_gap.max(t.saturating_sub(prev));
            }
            last_ok = Some(t);
            *answers
                .entry(s["body"].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    match last_ok {
        None => max_gap = end.saturating_sub(first),
        Some(l) => max_gap = max_gap.max(end.saturating_sub(l)),
    }
    ProbeReport {
        samples,
        max_gap: Duration::from_millis(max_gap),
        answers,
        failures,
        failure_window: Duration::from_millis(first_fail.map(|f| last_fail - f).unwrap_or(0)),
    }
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A pod's `/metrics` (port 8080), fetched from the client namespace.
pub fn pod_metrics(tb: &Testbed, pod: &k8s_openapi::api::core::v1::Pod) -> anyhow::Result<String> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("the pod has no IP")?;
    netns_sh(
        &tb.client_netns,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://{ip}:8080/metrics"),
        ],
    )
}

/// The PID (in the machine's namespace) of the main process of a pod's first container, found
/// through its cgroup: runc puts each container in a cgroup named by its containerID under the
/// kubelet's cgroup root (`/ftb-<run>-nI/kubepods/...`); the main process is the one whose parent
/// is not in it.
pub fn pod_pid(pod: &k8s_openapi::api::core::v1::Pod) -> Option<u32> {
    let id = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .as_ref()?
        .strip_prefix("containerd://")?
        .to_owned();
    let dir = find_dir(Path::new("/sys/fs/cgroup/pids"), &id, 6)?;
    let procs: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .ok()?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    procs
        .iter()
        .copied()
        .find(|pid| parent_pid(*pid).is_some_and(|parent| !procs.contains(&parent)))
}

/// The directory named `name` at most `depth` levels below `root`.
fn find_dir(root: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    let dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    if let Some(d) = dirs
        .iter()
        .find(|d| d.file_name().is_some_and(|n| n == name))
    {
        return Some(d.clone());
    }
    if depth == 0 {
        return None;
    }
    dirs.iter().find_map(|d| find_dir(d, name, depth - 1))
}

fn parent_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// The text of a CRI container log (`TIME STREAM P|F CONTENT` per line: `F` ends a line, `P` is
/// part of one), without the prefixes (pure).
///
/// ```
/// let log = "2026-12-01T10:00:00.1Z stdout F one\n2026-12-01T10:00:00.2Z stderr P tw\n2026-12-01T10:00:00.3Z stderr F o\n";
/// assert_eq!(ferrolb_testbed::harness::cri_log_text(log), "one\ntwo\n");
/// ```
pub fn cri_log_text(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag) = (parts.next(), parts.next(), parts.next());
        let content = parts.next().unwrap_or_default();
        out.push_str(content);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// An admin (or any) client from a kubeconfig file.
pub async fn client_from(path: &Path) -> anyhow::Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("read {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(Client::try_from(cfg)?)
}

/// Makes the one LoadBalancerConfig (named `ferrolb`) exactly `spec`, whatever was there before.
pub async fn replace_lb_config(client: &Client, spec: Value) -> anyhow::Result<()> {
    let spec: ferrolb_api::LoadBalancerConfigSpec = serde_json::from_value(spec)?;
    let api: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    if api.get_opt("ferrolb").await?.is_none() {
        let config = ferrolb_api::LoadBalancerConfig::new("ferrolb", spec.clone());
        match api.create(&PostParams::default(), &config).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {} // created meanwhile: replace it below
            other => return other.map(|_| ()).map_err(Into::into),
        }
    }
    modify_lb_config(client, "ferrolb", |config| config.spec = spec.clone()).await
}

/// Reads the config `name`, changes it with `change` and writes it back, again on a fresh read
/// when the write loses a race (409): the operator writes the config's status and finalizer
/// concurrently, and each of its writes moves the resourceVersion a plain get-then-replace holds.
pub async fn modify_lb_config(
    client: &Client,
    name: &str,
    mut change: impl FnMut(&mut ferrolb_api::LoadBalancerConfig),
) -> anyhow::Result<()> {
    let api: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    for _ in 0..10 {
        let mut config = api.get(name).await?;
        change(&mut config);
        match api.replace(name, &PostParams::default(), &config).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other.map(|_| ()).map_err(Into::into),
        }
    }
    bail!("LoadBalancerConfig {name}: ten writes in a row lost a race (409)")
}

/// The addresses in a Service's `status.loadBalancer.ingress`, in order.
pub fn ingress_ips(svc: &k8s_openapi::api::core::v1::Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

/// A process's resident memory (`VmRSS`) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The `q` quantile (0–1) of a Prometheus histogram's `_bucket` lines: the upper bound of the
/// first bucket holding that share of the observations, and the observation count.
pub fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<(f64, u64)> {
    let prefix = format!("{name}_bucket{{");
    let buckets: Vec<(f64, u64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let start = l.find("le=\"")? + 4;
            let end = start + l[start..].find('"')?;
            let le = match &l[start..end] {
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            Some((le, l.split_whitespace().last()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    let want = (total as f64 * q).ceil() as u64;
    buckets
        .iter()
        .find(|(_, n)| *n >= want.max(1))
        .map(|(le, _)| (*le, total))
}

/// The `p`th percentile (0–100) of sorted durations, nearest rank below.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// CPU time (user + system, in clock ticks) of every process on the machine, by pid, with its
/// name and start time (so a reused pid is not mistaken for the same process), plus the time of
/// the children it has reaped (short-lived helpers such as `nft` show up there).
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    procs: HashMap<u32, ProcCpu>,
}

#[derive(Debug, Clone)]
struct ProcCpu {
    comm: String,
    start: u64,
    own: u64,
    children: u64,
}

impl CpuSnapshot {
    /// Read `/proc/<pid>/stat` of every process.
    pub fn take() -> CpuSnapshot {
        let mut procs = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // `pid (comm) state ...`: comm may hold spaces and parentheses, so split at the last ')'
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_owned();
            let f: Vec<u64> = stat[close + 1..]
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            // fields 14-17 (utime, stime, cutime, cstime) and 22 (starttime), counted from 1,
            // the first after the comm being 3 (state, skipped)
            if f.len() < 20 {
                continue;
            }
            procs.insert(
                pid,
                ProcCpu {
                    comm,
                    start: f[18],
                    own: f[10] + f[11],
                    children: f[12] + f[13],
                },
            );
        }
        CpuSnapshot { procs }
    }

    /// CPU seconds spent since `before`, by process name (own time plus reaped children's),
    /// largest first. Processes that started and ended in between are counted only through
    /// their parent's children time.
    pub fn since(&self, before: &CpuSnapshot) -> Vec<(String, f64)> {
        let hz: f64 = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        let mut by_comm: HashMap<&str, u64> = HashMap::new();
        for (pid, now) in &self.procs {
            let (own, children) = match before.procs.get(pid) {
                Some(was) if was.start == now.start => (
                    now.own.saturating_sub(was.own),
                    now.children.saturating_sub(was.children),
                ),
                _ => (now.own, now.children),
            };
            *by_comm.entry(&now.comm).or_default() += own + children;
        }
        let mut out: Vec<(String, f64)> = by_comm
            .into_iter()
            .filter(|(_, t)| *t > 0)
            .map(|(c, t)| (c.to_owned(), t as f64 / hz))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}
