//! The speaker's BGP on the testbed, judged from the routers and the client: FerroLB installed
//! from `config/` with one peer per testbed router (FRR over IPv4 and IPv6, BIRD, GoBGP; each a
//! passive peer of every node), one BGP advertisement with communities, and a pool that nothing
//! else announces (203.0.113.160/27 and 2001:db8:1b::/120, outside the client's on-link
//! 203.0.113.0/25: the client reaches a Service there only through a host route via FRR, which
//! forwards along what it learned, ECMP over the nodes that announce).
//!
//! What the routers hold is read as each shows it: the paths of FRR's table (`show bgp ipv4|ipv6
//! unicast json`: one path per announcing node, its next hop, its communities in the prefix's
//! detail), the route zebra installed in the router's kernel (`ip route show`, multipath), BIRD's
//! `show route for PREFIX all` (text: the `via` lines) and GoBGP's `global rib` JSON (the
//! `nexthop` of each path's attributes); the client's view is `curl` through FRR. Covered: ECMP
//! from every node and its attributes, the same routes at BIRD and GoBGP, a dual-stack Service's
//! /128 over the IPv6 sessions, `externalTrafficPolicy: Local` announced only from the node with
//! the endpoint (and following it), withdrawal when the Service goes, TCP-MD5 with FRR (the
//! Secret's password establishes, a wrong one never does), FRR's bgpd restarted, a node's
//! link cut until the hold time (9 s) runs out and restored, and the same cut with BFD (FRR's
//! bfdd, 100 ms x 3), which drops the node within the detection time. Every wait is generous and nothing
//! asserts a timing; the times are printed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use ferrolb_api::v1alpha1::BGPSession;
use ferrolb_testbed::ferrolb::{Installed, SYSTEM, apply_default, install_with};
use ferrolb_testbed::harness::{
    TestNamespace, Testbed, ingress_ips, netns_exec, netns_sh, pod_ready, wait_for,
};
use ferrolb_testbed::workloads::{create_deployment, echo_container, on_node};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);
/// The BGP pool: in 203.0.113.128/25, which the client does not reach on its LAN.
const POOL_V4: &str = "203.0.113.160/27";
const POOL_V6: &str = "2001:db8:1b::/120";
/// Communities of the advertisement, as configured, and as FRR prints them in a path's
/// `community.string` and `largeCommunity.string` (FRR names no-export `no-export` there and
/// `noExport` in its lists; either is taken).
const COMMUNITIES: [&str; 3] = ["64512:100", "no-export", "large:64513:1:2"];
const FRR_COMMUNITIES: [&[&str]; 2] = [&["64512:100"], &["no-export", "noExport"]];
const FRR_LARGE_COMMUNITY: &str = "64513:1:2";
/// The Secret naming FRR's TCP-MD5 password, in the operand namespace.
const MD5_SECRET: &str = "bgp-frr";
const MD5_PASSWORD: &str = "s3cret";

/// The testbed's routers, from its env file (defaults as tests/README.md gives them).
#[derive(Debug, Clone)]
struct Routers {
    frr: String,
    frr_v6: String,
    frr_asn: u32,
    bird: String,
    bird_asn: u32,
    gobgp: String,
    gobgp_asn: u32,
    /// The speakers' AS: the one the GoBGP router accepts (FRR and BIRD take any external AS).
    my_asn: u32,
}

impl Routers {
    fn of(tb: &Testbed) -> anyhow::Result<Routers> {
        let text = |key: &str, default: &str| tb.var(key).unwrap_or(default).to_owned();
        let asn = |key: &str, default: &str| -> anyhow::Result<u32> {
            let v = text(key, default);
            v.parse()
                .with_context(|| format!("{key}={v} is not an AS number"))
        };
        Ok(Routers {
            frr: text("TESTBED_ROUTER_IP", "198.51.100.1"),
            frr_v6: text("TESTBED_ROUTER_IPV6", "2001:db8:100::1"),
            frr_asn: asn("TESTBED_ROUTER_ASN", "64512")?,
            bird: text("TESTBED_BIRD_IP", "198.51.100.2"),
            bird_asn: asn("TESTBED_BIRD_ASN", "64520")?,
            gobgp: text("TESTBED_GOBGP_IP", "198.51.100.3"),
            gobgp_asn: asn("TESTBED_GOBGP_ASN", "64530")?,
            my_asn: asn("TESTBED_GOBGP_PEER_ASN", "64513")?,
        })
    }

    /// The config: every router a peer of every node (hold time 9 s, as the routers have), one
    /// advertisement of every pool to every peer. BIRD's AS is not configured (`dynamicASN:
    /// external`): the speakers learn it from its OPEN. With `frr_secret`, the IPv4 FRR peer's
    /// TCP-MD5 password is that Secret's `password` (the key's default).
    fn config(&self, frr_secret: Option<&str>) -> Value {
        let peer = |name: &str, asn: u32, address: &str| {
            json!({"name": name, "myASN": self.my_asn, "peerASN": asn, "peerAddress": address,
                   "holdTime": "9s"})
        };
        let dynamic_external = |name: &str, address: &str| {
            json!({"name": name, "myASN": self.my_asn, "dynamicASN": "external",
                   "peerAddress": address, "holdTime": "9s"})
        };
        let mut frr = peer("frr", self.frr_asn, &self.frr);
        if let Some(name) = frr_secret {
            frr["passwordSecretRef"] = json!({"name": name});
        }
        json!({
            "addressPools": [{"name": "bgp", "addresses": [POOL_V4, POOL_V6]}],
            "bgpPeers": [
                frr,
                peer("frr-v6", self.frr_asn, &self.frr_v6),
                dynamic_external("bird", &self.bird),
                peer("gobgp", self.gobgp_asn, &self.gobgp),
            ],
            "bgpAdvertisements": [{"name": "all", "communities": COMMUNITIES}],
        })
    }
}

/// FerroLB installed with [`Routers::config`], and a namespace for the test's workloads.
struct Bgp {
    tb: Testbed,
    client: Client,
    ns: TestNamespace,
    routers: Routers,
    _installed: Installed,
}

async fn bgp(prefix: &str, frr_secret: Option<&str>) -> anyhow::Result<Bgp> {
    let tb = Testbed::start_or_reuse()?;
    ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let client = tb.client().await?;
    let routers = Routers::of(&tb)?;
    let installed = install_with(&tb, &client, routers.config(frr_secret)).await?;
    let ns = tb.namespace(&client, prefix).await?;
    Ok(Bgp {
        tb,
        client,
        ns,
        routers,
        _installed: installed,
    })
}

/// Which router's view of a prefix.
#[derive(Debug, Clone, Copy)]
enum View {
    /// FRR's BGP table.
    Frr,
    /// The route zebra installed in the router namespace's kernel.
    FrrKernel,
    Bird,
    GoBgp,
}

/// What a router holds for a prefix: the next hops of its paths, how many paths (routes, or
/// nexthops of one multipath route), and its answer, shown when a wait fails.
#[derive(Debug)]
struct Held {
    hops: BTreeSet<String>,
    paths: usize,
    raw: String,
}

impl Bgp {
    /// The nodes' IPv4 addresses (each node's next hop for IPv4 routes).
    fn nodes_v4(&self) -> BTreeSet<String> {
        self.tb.node_ips.iter().cloned().collect()
    }

    /// The nodes' IPv6 addresses: 2001:db8:100::<the IPv4 address's last number>.
    fn nodes_v6(&self) -> BTreeSet<String> {
        self.tb.node_ips.iter().map(|ip| v6_of(ip)).collect()
    }

    /// An echo Deployment (answers `pod=… node=…`), optionally pinned to one node; waits until
    /// its pods are ready.
    async fn echo(&self, name: &str, replicas: usize, node: Option<&str>) -> anyhow::Result<()> {
        let spec = match node {
            Some(node) => on_node(node, json!([echo_container()])),
            None => json!({"containers": [echo_container()]}),
        };
        create_deployment(&self.client, &self.ns.name, name, replicas, spec).await?;
        self.ready_pods(name, replicas, None).await
    }

    /// Waits until `app` has exactly `n` pods, all ready (and all on `node` when given).
    async fn ready_pods(&self, app: &str, n: usize, node: Option<&str>) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns.name);
        let selector = format!("app={app}");
        let place = node.map_or(String::new(), |n| format!(" on {n}"));
        wait_for(&format!("{n} ready {app} pods{place}"), T, || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            let ok = list.items.len() == n
                && list.items.iter().all(|p| {
                    pod_ready(p)
                        && node.is_none_or(|node| {
                            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                        })
                });
            Ok(ok.then_some(()))
        })
        .await
    }

    async fn patch_deployment(&self, name: &str, patch: Value) -> anyhow::Result<()> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns.name)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// A LoadBalancer Service `name` in front of the `app` pods, port 80 → 8080, with `extra`
    /// fields in its spec.
    async fn service(&self, name: &str, app: &str, extra: Value) -> anyhow::Result<()> {
        let mut spec = json!({"type": "LoadBalancer", "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec,
        }))?;
        self.services().create(&PostParams::default(), &svc).await?;
        Ok(())
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Waits until the Service has an address of the family; it must be in the BGP pool.
    async fn address(&self, name: &str, v6: bool) -> anyhow::Result<String> {
        let services = self.services();
        let family = if v6 { "IPv6" } else { "IPv4" };
        let ip = wait_for(&format!("an {family} address for {name}"), T, || async {
            let svc = services.get(name).await?;
            Ok(ingress_ips(&svc)
                .into_iter()
                .find(|ip| ip.contains(':') == v6))
        })
        .await?;
        ensure!(
            in_bgp_pool(&ip),
            "{name} got {ip}, outside the BGP pool {POOL_V4} {POOL_V6}"
        );
        Ok(ip)
    }

    /// What `view` holds for `prefix` (an `IP/LEN`) now.
    fn holds(&self, view: View, prefix: &str) -> anyhow::Result<Held> {
        let v6 = prefix.contains(':');
        let afi = if v6 { "ipv6" } else { "ipv4" };
        match view {
            View::Frr => {
                // The whole table rather than the prefix's detail: it is JSON also when the
                // prefix is absent.
                let table = self.tb.frr_json(&format!("show bgp {afi} unicast json"))?;
                let paths = table["routes"][prefix]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                Ok(Held {
                    hops: frr_next_hops(&paths),
                    paths: paths.len(),
                    raw: Value::from(paths).to_string(),
                })
            }
            View::FrrKernel => {
                let family = if v6 { "-6" } else { "-4" };
                let out = netns_sh(
                    &self.tb.router_netns,
                    &["ip", family, "route", "show", prefix],
                )?;
                Ok(via_held(out))
            }
            View::Bird => Ok(via_held(self.bird_route(prefix)?)),
            View::GoBgp => {
                let rib = self.tb.gobgp_json(&["global", "rib", "-a", afi])?;
                let paths = rib.get(prefix).cloned().unwrap_or(Value::Null);
                let mut hops = Vec::new();
                strings_under(&paths, "nexthop", &mut hops);
                Ok(Held {
                    hops: hops.into_iter().collect(),
                    paths: paths.as_array().map_or(0, Vec::len),
                    raw: paths.to_string(),
                })
            }
        }
    }

    /// Waits until `view` routes `prefix` over exactly the next hops `want`, one path each
    /// (none: withdrawn); on time-out the error shows what the router had.
    async fn until_holds(
        &self,
        view: View,
        prefix: &str,
        want: &BTreeSet<String>,
    ) -> anyhow::Result<Held> {
        wait_for(
            &format!("{view:?} to route {prefix} via {want:?}"),
            T,
            || async {
                let held = self.holds(view, prefix)?;
                if held.hops == *want && held.paths == want.len() {
                    Ok(Some(held))
                } else {
                    bail!(
                        "{view:?} has {} paths via {:?}: {}",
                        held.paths,
                        held.hops,
                        held.raw
                    )
                }
            },
        )
        .await
    }

    /// The state of each of FRR's sessions, by neighbour address.
    fn frr_sessions(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let neighbors = self.tb.frr_json("show bgp neighbors json")?;
        Ok(neighbors
            .as_object()
            .into_iter()
            .flatten()
            .map(|(address, n)| {
                let state = n["bgpState"].as_str().unwrap_or("?").to_owned();
                (address.clone(), state)
            })
            .collect())
    }

    /// Waits until FRR's sessions with every one of `neighbors` are Established.
    async fn until_established(&self, neighbors: &BTreeSet<String>) -> anyhow::Result<()> {
        wait_for(
            &format!("FRR's sessions with {neighbors:?} Established"),
            T,
            || async {
                let states = self.frr_sessions()?;
                let up = neighbors
                    .iter()
                    .all(|n| states.get(n).map(String::as_str) == Some("Established"));
                if up {
                    Ok(Some(()))
                } else {
                    bail!("FRR's sessions: {states:?}")
                }
            },
        )
        .await
    }

    /// A host route for `ip` via FRR in the client namespace, until dropped.
    fn route_via_frr(&self, ip: &str) -> anyhow::Result<HostRoute> {
        let via = if ip.contains(':') {
            &self.routers.frr_v6
        } else {
            &self.routers.frr
        };
        HostRoute::add(&self.tb.client_netns, ip, via)
    }

    /// Waits until `curl http://IP/` from the client answers with the echo's `pod=…` line
    /// (containing `expect`); the answer.
    async fn answers(&self, ip: &str, expect: &str) -> anyhow::Result<String> {
        let url = if ip.contains(':') {
            format!("http://[{ip}]/")
        } else {
            format!("http://{ip}/")
        };
        wait_for(&format!("{url} answering {expect:?}"), T, || async {
            let answer = netns_sh(&self.tb.client_netns, &["curl", "-sS", "-m", "3", &url])?;
            if answer.contains("pod=") && answer.contains(expect) {
                Ok(Some(answer))
            } else {
                bail!("answered {answer:?}")
            }
        })
        .await
    }
}

/// Each of FRR's paths' next hop: `nexthops[].ip`, leaving out the link-local address FRR lists
/// beside an IPv6 route's global next hop.
impl Bgp {
    /// BIRD's routes for exactly `prefix` (`show route PREFIX all`; empty when it has none:
    /// birdc then says "Network not found" and exits 1).
    fn bird_route(&self, prefix: &str) -> anyhow::Result<String> {
        let ns = self
            .tb
            .var("TESTBED_BIRD_NETNS")
            .ok_or_else(|| anyhow!("TESTBED_BIRD_NETNS missing"))?;
        let ctl = self
            .tb
            .var("TESTBED_BIRD_CTL")
            .ok_or_else(|| anyhow!("TESTBED_BIRD_CTL missing"))?;
        let out = netns_exec(ns, &["birdc", "-s", ctl, "show", "route", prefix, "all"])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else if text.contains("Network not found") {
            Ok(String::new())
        } else {
            bail!(
                "birdc show route {prefix} all: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        }
    }
}

fn frr_next_hops(paths: &[Value]) -> BTreeSet<String> {
    paths
        .iter()
        .flat_map(|p| p["nexthops"].as_array().into_iter().flatten())
        .filter(|n| n["scope"].as_str() != Some("link-local"))
        .filter_map(|n| n["ip"].as_str())
        .filter(|ip| !ip.starts_with("fe80:"))
        .map(str::to_owned)
        .collect()
}

/// What an `ip route` or BIRD text shows: one path per `via`.
fn via_held(raw: String) -> Held {
    let vias = vias(&raw);
    Held {
        paths: vias.len(),
        hops: vias.into_iter().collect(),
        raw,
    }
}

/// The address after each `via` of `ip route` (`nexthop via X`, `via inet6 X`) or BIRD
/// (`via X on eth0`) text, in order.
fn vias(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .iter()
        .enumerate()
        .filter(|(_, w)| **w == "via")
        .filter_map(|(i, _)| {
            let next = *words.get(i + 1)?;
            let address = if matches!(next, "inet" | "inet6") {
                *words.get(i + 2)?
            } else {
                next
            };
            Some(address.to_owned())
        })
        .collect()
}

/// Every string value of a field named `key`, at any depth.
fn strings_under(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(fields) => {
            for (k, x) in fields {
                if k == key
                    && let Some(s) = x.as_str()
                {
                    out.push(s.to_owned());
                }
                strings_under(x, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|x| strings_under(x, key, out)),
        _ => {}
    }
}

/// A node's IPv6 address from its IPv4 one (the testbed numbers both alike).
fn v6_of(ip: &str) -> String {
    format!(
        "2001:db8:100::{}",
        ip.rsplit('.').next().unwrap_or_default()
    )
}

/// Whether `ip` is in [`POOL_V4`] or [`POOL_V6`].
fn in_bgp_pool(ip: &str) -> bool {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, d] = v4.octets();
            [a, b, c] == [203, 0, 113] && (160..192).contains(&d)
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            s[..7] == [0x2001, 0xdb8, 0x1b, 0, 0, 0, 0] && s[7] < 256
        }
        Err(_) => false,
    }
}

fn host_prefix(ip: &str) -> String {
    if ip.contains(':') {
        format!("{ip}/128")
    } else {
        format!("{ip}/32")
    }
}

/// A host route for a load-balancer address in the client namespace (the only way the client
/// reaches the BGP pool); removed when dropped, also when the test fails.
#[derive(Debug)]
struct HostRoute {
    netns: String,
    prefix: String,
}

impl HostRoute {
    fn add(netns: &str, ip: &str, via: &str) -> anyhow::Result<HostRoute> {
        let prefix = host_prefix(ip);
        netns_sh(netns, &["ip", "route", "replace", &prefix, "via", via])?;
        Ok(HostRoute {
            netns: netns.to_owned(),
            prefix,
        })
    }
}

impl Drop for HostRoute {
    fn drop(&mut self) {
        let _ = netns_exec(&self.netns, &["ip", "route", "del", &self.prefix]);
    }
}

/// FRR's IPv4 sessions with every node protected by a TCP-MD5 password until dropped (then
/// `no neighbor … password`, also when the test fails).
#[derive(Debug)]
struct FrrPasswords {
    tb: Testbed,
    asn: u32,
    neighbors: Vec<String>,
}

impl FrrPasswords {
    fn set(tb: &Testbed, password: &str) -> anyhow::Result<FrrPasswords> {
        let asn = Routers::of(tb)?.frr_asn;
        let guard = FrrPasswords {
            tb: tb.clone(),
            asn,
            neighbors: tb.node_ips.clone(),
        };
        let lines: Vec<String> = guard
            .neighbors
            .iter()
            .map(|n| format!("neighbor {n} password {password}"))
            .collect();
        tb.frr_configure(asn, &lines)?;
        Ok(guard)
    }
}

impl Drop for FrrPasswords {
    fn drop(&mut self) {
        let lines: Vec<String> = self
            .neighbors
            .iter()
            .map(|n| format!("no neighbor {n} password"))
            .collect();
        if let Err(e) = self.tb.frr_configure(self.asn, &lines) {
            eprintln!("removing FRR's TCP-MD5 passwords: {e:#}");
        }
    }
}

/// The Secret [`MD5_SECRET`] in the operand namespace, holding `password` under its default key;
/// deleted when dropped.
#[derive(Debug)]
struct PasswordSecret {
    tb: Testbed,
}

impl PasswordSecret {
    async fn create(
        tb: &Testbed,
        client: &Client,
        password: &str,
    ) -> anyhow::Result<PasswordSecret> {
        // config/default creates the namespace; the Secret must be there before the config
        // names it.
        apply_default(tb)?;
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": MD5_SECRET, "namespace": SYSTEM},
            "data": {"password": ByteString(password.as_bytes().to_vec())},
        }))?;
        let guard = PasswordSecret { tb: tb.clone() };
        Api::<Secret>::namespaced(client.clone(), SYSTEM)
            .patch(
                MD5_SECRET,
                &PatchParams::apply("ferrolb-testbed-bgp").force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(guard)
    }
}

impl Drop for PasswordSecret {
    fn drop(&mut self) {
        let _ = self.tb.kubectl(&[
            "delete",
            "secret",
            "-n",
            SYSTEM,
            MD5_SECRET,
            "--ignore-not-found",
        ]);
    }
}

/// FRR's bgpd as the testbed started it (`frr_up` in tests/testbed/testbed.sh): the PID it
/// recorded, checked to be a bgpd of this testbed's run directory, and its command line.
#[derive(Debug)]
struct Bgpd {
    pid: u32,
    argv: Vec<String>,
    run: String,
}

impl Bgpd {
    fn of(tb: &Testbed) -> anyhow::Result<Bgpd> {
        let run = tb
            .var("TESTBED_RUN_DIR")
            .context("TESTBED_RUN_DIR missing")?
            .to_owned();
        let pid = tb.process_pid("bgpd")?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        ensure!(
            comm.trim() == "bgpd" && argv.iter().any(|a| a.starts_with(&run)),
            "PID {pid}, recorded for bgpd, is not this testbed's bgpd: {comm:?} {argv:?}"
        );
        Ok(Bgpd { pid, argv, run })
    }

    /// The pid file bgpd writes (its `-i`).
    fn pid_file(&self) -> anyhow::Result<&str> {
        self.argv
            .iter()
            .position(|a| a == "-i")
            .and_then(|i| self.argv.get(i + 1))
            .map(String::as_str)
            .ok_or_else(|| anyhow!("no -i PIDFILE in bgpd's command line {:?}", self.argv))
    }

    /// Stops this bgpd (SIGTERM, SIGKILL after 10 s) and starts it again in the router
    /// namespace with the same command line (it daemonizes, as at bring-up), then records the
    /// new process where testbed.sh does, so `testbed-down` stops it. The new PID.
    async fn restart(self, tb: &Testbed) -> anyhow::Result<u32> {
        use nix::sys::signal::{Signal, kill};
        let pid_file = self.pid_file()?.to_owned();
        let target = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        kill(target, Signal::SIGTERM).with_context(|| format!("SIGTERM bgpd {}", self.pid))?;
        let pid = self.pid;
        let stopped = wait_for("bgpd to stop", Duration::from_secs(10), || async {
            Ok(gone(pid).then_some(()))
        })
        .await;
        if stopped.is_err() {
            let _ = kill(target, Signal::SIGKILL);
            wait_for("bgpd to die", Duration::from_secs(5), || async {
                Ok(gone(pid).then_some(()))
            })
            .await?;
        }
        let log = std::fs::File::create(Path::new(&self.run).join("logs/bgpd-restart.log"))?;
        let status = Command::new("ip")
            .args(["netns", "exec", &tb.router_netns])
            .args(&self.argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("starting bgpd again")?;
        ensure!(
            status.success(),
            "bgpd did not start again ({status}): FRR is down until `make testbed-down testbed-up`; {}/logs/bgpd-restart.log",
            self.run
        );
        let new = wait_for(
            "the new bgpd's pid file",
            Duration::from_secs(20),
            || async {
                let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
                Ok(text.trim().parse::<u32>().ok().filter(|p| {
                    *p != pid
                        && std::fs::read_to_string(format!("/proc/{p}/comm"))
                            .is_ok_and(|c| c.trim() == "bgpd")
                }))
            },
        )
        .await?;
        let start = start_time(new).context("the new bgpd's start time")?;
        std::fs::write(
            Path::new(&self.run).join("pids/bgpd.pid"),
            format!("{new} {start}\n"),
        )?;
        Ok(new)
    }
}

/// Whether a process has exited (a zombie counts as exited).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|st| st.trim_start().starts_with('Z'))
    })
}

/// A process's start time (field 22 of `/proc/PID/stat`), as testbed.sh records it.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: fields after the comm start at 3
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(22 - 3).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn every_node_announces_the_address_and_frr_spreads_the_client_over_them()
-> anyhow::Result<()> {
    let w = bgp("bgp-ecmp", None).await?;
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    let started = Instant::now();
    w.until_holds(View::Frr, &prefix, &nodes).await?;
    eprintln!(
        "{prefix} at FRR from every node after {:.1?}",
        started.elapsed()
    );

    // Every path carries the advertisement's communities, and the speakers' AS alone.
    let detail =
        w.tb.frr_json(&format!("show bgp ipv4 unicast {prefix} json"))?;
    let paths = detail["paths"].as_array().cloned().unwrap_or_default();
    ensure!(
        paths.len() == nodes.len(),
        "one detailed path per node: {detail}"
    );
    for path in &paths {
        let communities: BTreeSet<&str> = path["community"]["string"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        for names in FRR_COMMUNITIES {
            ensure!(
                names.iter().any(|n| communities.contains(n)),
                "community {} on every path: {path}",
                names[0]
            );
        }
        let large = path["largeCommunity"]["string"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            large.split_whitespace().any(|c| c == FRR_LARGE_COMMUNITY),
            "large community {FRR_LARGE_COMMUNITY} on every path: {path}"
        );
        let as_path = path["aspath"]["string"].as_str().unwrap_or_default();
        ensure!(
            as_path == w.routers.my_asn.to_string(),
            "AS path {}: {path}",
            w.routers.my_asn
        );
    }

    // zebra installs one multipath route, so the router forwards to all of them.
    let kernel = w.until_holds(View::FrrKernel, &prefix, &nodes).await?;
    ensure!(
        kernel.raw.contains("proto bgp") && kernel.raw.contains("nexthop"),
        "a multipath BGP route in the router's kernel: {}",
        kernel.raw
    );
    let _route = w.route_via_frr(&ip)?;
    let answer = w.answers(&ip, "").await?;
    eprintln!("{ip} through FRR: {}", answer.trim());

    // What people see: the Service's condition names the peers and the nodes, and one
    // BGPSession per node and peer says Established with the routes it carries.
    let every = w.tb.node_names.join(", ");
    let want = format!(
        "to frr ({}, AS {}) from {every}",
        w.routers.frr, w.routers.frr_asn
    );
    wait_for(
        "the Announced condition naming FRR and every node",
        T,
        || async {
            let svc = w.services().get("web").await?;
            let message = svc
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "ferrolb.io/Announced" && c.status == "True")
                .map(|c| c.message)
                .unwrap_or_default();
            Ok(
                (message.starts_with(&format!("BGP: {ip} ")) && message.contains(&want))
                    .then_some(()),
            )
        },
    )
    .await?;
    let sessions: Api<BGPSession> = Api::namespaced(w.client.clone(), SYSTEM);
    wait_for("a BGPSession per node and peer, Established", T, || async {
        let list = sessions.list(&ListParams::default()).await?.items;
        let established: BTreeSet<String> = list
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.state == "Established")
            })
            .map(|s| format!("{}/{}", s.spec.node, s.spec.peer))
            .collect();
        let frr_routes = list
            .iter()
            .filter(|s| s.spec.peer == "frr")
            .all(|s| s.status.as_ref().is_some_and(|st| st.routes_sent == 1));
        // BIRD's AS, learned from its OPEN (dynamicASN: external).
        let bird_as_learned = list
            .iter()
            .filter(|s| s.spec.peer == "bird")
            .all(|s| s.spec.peer_asn == Some(w.routers.bird_asn));
        let want: BTreeSet<String> =
            w.tb.node_names
                .iter()
                .flat_map(|n| ["frr", "frr-v6", "bird", "gobgp"].map(|p| format!("{n}/{p}")))
                .collect();
        Ok((established == want && frr_routes && bird_as_learned).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn bird_and_gobgp_learn_the_address_from_every_node() -> anyhow::Result<()> {
    let w = bgp("bgp-others", None).await?;
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    let bird = w.until_holds(View::Bird, &prefix, &nodes).await?;
    // BIRD prints communities as (64512,100) and large ones as (64513, 1, 2).
    let compact: String = bird.raw.split_whitespace().collect();
    ensure!(
        compact.contains("(64512,100)") && compact.contains("(64513,1,2)"),
        "the communities at BIRD:\n{}",
        bird.raw
    );
    w.until_holds(View::GoBgp, &prefix, &nodes).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_dual_stack_service_is_announced_over_the_ipv6_sessions_too() -> anyhow::Result<()> {
    let w = bgp("bgp-v6", None).await?;
    w.echo("web", 3, None).await?;
    w.service(
        "web",
        "web",
        json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
    )
    .await?;
    let v4 = w.address("web", false).await?;
    let v6 = w.address("web", true).await?;
    // FRR's IPv4 neighbours carry IPv4 unicast only, its IPv6 ones IPv6 unicast only: the /128
    // can only have come over the IPv6 sessions.
    let prefix6 = host_prefix(&v6);
    let held = w.until_holds(View::Frr, &prefix6, &w.nodes_v6()).await?;
    eprintln!("{prefix6} at FRR: {}", held.raw);
    w.until_holds(View::Frr, &host_prefix(&v4), &w.nodes_v4())
        .await?;
    // zebra may install the IPv6 route via the link-local next hops: only the count is checked.
    wait_for("the /128 multipath in the router's kernel", T, || async {
        let kernel = w.holds(View::FrrKernel, &prefix6)?;
        if kernel.paths == w.tb.node_ips.len() {
            Ok(Some(()))
        } else {
            bail!("the router's kernel: {}", kernel.raw)
        }
    })
    .await?;
    let _route = w.route_via_frr(&v6)?;
    let answer = w.answers(&v6, "").await?;
    eprintln!("{v6} through FRR: {}", answer.trim());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn local_policy_is_announced_only_from_the_node_with_the_endpoint() -> anyhow::Result<()> {
    let w = bgp("bgp-local", None).await?;
    let (first, second) = (w.tb.node_names[1].clone(), w.tb.node_names[2].clone());
    let only = |i: usize| BTreeSet::from([w.tb.node_ips[i].clone()]);
    w.echo("pinned", 1, Some(&first)).await?;
    w.service("web", "pinned", json!({"externalTrafficPolicy": "Local"}))
        .await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    w.until_holds(View::Frr, &prefix, &only(1)).await?;
    w.until_holds(View::FrrKernel, &prefix, &only(1)).await?;
    let _route = w.route_via_frr(&ip)?;
    w.answers(&ip, &format!("node={first} ")).await?;

    // The endpoint moves: so does the route.
    w.patch_deployment(
        "pinned",
        json!({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": second}}}}}),
    )
    .await?;
    w.ready_pods("pinned", 1, Some(&second)).await?;
    w.until_holds(View::Frr, &prefix, &only(2)).await?;
    w.answers(&ip, &format!("node={second} ")).await?;

    // No endpoint: no node serves it, none announces it.
    w.patch_deployment("pinned", json!({"spec": {"replicas": 0}}))
        .await?;
    w.until_holds(View::Frr, &prefix, &BTreeSet::new()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn deleting_the_service_withdraws_it_from_every_router() -> anyhow::Result<()> {
    let w = bgp("bgp-delete", None).await?;
    w.echo("web", 2, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    for view in [View::Frr, View::FrrKernel, View::Bird, View::GoBgp] {
        w.until_holds(view, &prefix, &nodes).await?;
    }
    w.services().delete("web", &DeleteParams::default()).await?;
    let started = Instant::now();
    for view in [View::Frr, View::FrrKernel, View::Bird, View::GoBgp] {
        w.until_holds(view, &prefix, &BTreeSet::new()).await?;
        eprintln!(
            "{prefix} gone from {view:?} {:.1?} after the delete",
            started.elapsed()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn tcp_md5_with_the_secrets_password_establishes_and_carries_routes() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _secret = PasswordSecret::create(&tb, &client, MD5_PASSWORD).await?;
    let _passwords = FrrPasswords::set(&tb, MD5_PASSWORD)?;
    let w = bgp("bgp-md5", Some(MD5_SECRET)).await?;
    let nodes = w.nodes_v4();
    w.until_established(&nodes).await?;
    w.echo("web", 1, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    w.until_holds(View::Frr, &host_prefix(&ip), &nodes).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn tcp_md5_with_a_wrong_password_never_establishes() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _secret = PasswordSecret::create(&tb, &client, "not-the-password").await?;
    let _passwords = FrrPasswords::set(&tb, MD5_PASSWORD)?;
    let w = bgp("bgp-md5-wrong", Some(MD5_SECRET)).await?;
    // The same speakers' IPv6 sessions with FRR, which have no password, come up: the config is
    // in force and the speakers dial.
    w.until_established(&w.nodes_v6()).await?;
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(20) {
        let states = w.frr_sessions()?;
        for node in &w.tb.node_ips {
            ensure!(
                states.get(node).map(String::as_str) != Some("Established"),
                "{node} Established with a wrong TCP-MD5 password after {:.1?}: {states:?}",
                watched.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_restarted_frr_gets_every_session_and_route_back() -> anyhow::Result<()> {
    let w = bgp("bgp-frr-restart", None).await?;
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    w.until_holds(View::FrrKernel, &prefix, &nodes).await?;
    let bgpd = Bgpd::of(&w.tb)?;
    let old = bgpd.pid;
    let new = bgpd.restart(&w.tb).await?;
    let started = Instant::now();
    eprintln!("bgpd {old} restarted as {new}");
    let sessions: BTreeSet<String> = nodes.union(&w.nodes_v6()).cloned().collect();
    w.until_established(&sessions).await?;
    eprintln!("every session back after {:.1?}", started.elapsed());
    w.until_holds(View::Frr, &prefix, &nodes).await?;
    w.until_holds(View::FrrKernel, &prefix, &nodes).await?;
    eprintln!("{prefix} back after {:.1?}", started.elapsed());
    let _route = w.route_via_frr(&ip)?;
    w.answers(&ip, "").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_cut_link_drops_the_nodes_next_hop_after_the_hold_time_until_it_returns()
-> anyhow::Result<()> {
    let w = bgp("bgp-link", None).await?;
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    w.until_holds(View::Frr, &prefix, &nodes).await?;
    let mut rest = nodes.clone();
    rest.remove(&w.tb.node_ips[0]);
    let cut = w.tb.cut_node_link(0)?;
    let started = Instant::now();
    w.until_holds(View::Frr, &prefix, &rest).await?;
    w.until_holds(View::FrrKernel, &prefix, &rest).await?;
    eprintln!(
        "{} dropped from {prefix} {:.1?} after its link went down (hold time 9 s)",
        w.tb.node_ips[0],
        started.elapsed()
    );
    drop(cut);
    let restored = Instant::now();
    w.until_holds(View::Frr, &prefix, &nodes).await?;
    w.until_holds(View::FrrKernel, &prefix, &nodes).await?;
    eprintln!(
        "{} back in {prefix} {:.1?} after its link came up",
        w.tb.node_ips[0],
        restored.elapsed()
    );
    Ok(())
}

/// FRR's session with one node made iBGP (`remote-as internal`) until dropped, then external
/// again (also when the test fails).
#[derive(Debug)]
struct FrrInternal {
    tb: Testbed,
    asn: u32,
    neighbor: String,
}

impl FrrInternal {
    fn set(tb: &Testbed, neighbor: &str) -> anyhow::Result<FrrInternal> {
        let asn = Routers::of(tb)?.frr_asn;
        tb.frr_configure(asn, &[format!("neighbor {neighbor} remote-as internal")])?;
        Ok(FrrInternal {
            tb: tb.clone(),
            asn,
            neighbor: neighbor.to_owned(),
        })
    }
}

impl Drop for FrrInternal {
    fn drop(&mut self) {
        let line = format!("neighbor {} remote-as external", self.neighbor);
        if let Err(e) = self.tb.frr_configure(self.asn, &[line]) {
            eprintln!(
                "making FRR's session with {} external again: {e:#}",
                self.neighbor
            );
        }
    }
}

/// LOCAL_PREF goes to iBGP peers only: node-1 peers with FRR in FRR's own AS (a peer of its own,
/// selected by node name), the other nodes over eBGP; one advertisement with localPref 150. FRR's
/// path from node-1 carries it, and wins (LOCAL_PREF is compared first); the eBGP paths carry
/// none (FRR shows its default, 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn local_pref_reaches_the_ibgp_peer_only() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let client = tb.client().await?;
    let routers = Routers::of(&tb)?;
    let (first, first_ip) = (tb.node_names[0].clone(), tb.node_ips[0].clone());
    let _internal = FrrInternal::set(&tb, &first_ip)?;
    let hostname = "kubernetes.io/hostname";
    let config = json!({
        "addressPools": [{"name": "bgp", "addresses": [POOL_V4]}],
        "bgpPeers": [
            {"name": "frr-ibgp", "myASN": routers.frr_asn, "peerASN": routers.frr_asn,
             "peerAddress": routers.frr, "holdTime": "9s",
             "nodeSelectors": [{"matchLabels": {hostname: first}}]},
            {"name": "frr", "myASN": routers.my_asn, "peerASN": routers.frr_asn,
             "peerAddress": routers.frr, "holdTime": "9s",
             "nodeSelectors": [{"matchExpressions": [{"key": hostname, "operator": "NotIn", "values": [first]}]}]},
        ],
        "bgpAdvertisements": [{"name": "all", "localPref": 150}],
    });
    let installed = install_with(&tb, &client, config).await?;
    let ns = tb.namespace(&client, "bgp-localpref").await?;
    let w = Bgp {
        tb,
        client,
        ns,
        routers,
        _installed: installed,
    };
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    w.until_holds(View::Frr, &prefix, &w.nodes_v4()).await?;
    let detail =
        w.tb.frr_json(&format!("show bgp ipv4 unicast {prefix} json"))?;
    let paths = detail["paths"].as_array().cloned().unwrap_or_default();
    let mut seen = BTreeMap::new();
    for path in &paths {
        let from = path["peer"]["peerId"]
            .as_str()
            .or_else(|| path["nexthops"][0]["ip"].as_str())
            .unwrap_or_default()
            .to_owned();
        let local_pref = path["locPrf"]
            .as_u64()
            .or_else(|| path["localpref"].as_u64());
        let best = path["bestpath"]["overall"].as_bool().unwrap_or(false);
        seen.insert(from, (local_pref, best));
    }
    let ibgp = seen.get(&first_ip).copied();
    ensure!(
        ibgp == Some((Some(150), true)),
        "node-1's iBGP path carries LOCAL_PREF 150 and is the best: {seen:?} in {detail}"
    );
    for ip in w.tb.node_ips.iter().filter(|ip| **ip != first_ip) {
        let (local_pref, best) = seen.get(ip).copied().unwrap_or_default();
        ensure!(
            !best && local_pref.is_none_or(|l| l == 100),
            "the eBGP path from {ip} carries no LOCAL_PREF of ours: {seen:?} in {detail}"
        );
    }
    Ok(())
}

/// FRR runs BFD (profile `fast` of the testbed's bfdd: 100 ms x 3) with every node's IPv4
/// session until dropped, then `no neighbor … bfd` (also when the test fails).
#[derive(Debug)]
struct FrrBfd {
    tb: Testbed,
    asn: u32,
    neighbors: Vec<String>,
}

impl FrrBfd {
    /// (Not `check-control-plane-failure`: with it, FRR 8.4 ignored the BFD failure of a cut
    /// link on a graceful-restart peer and kept the next hop until the hold time ran out.)
    fn set(tb: &Testbed) -> anyhow::Result<FrrBfd> {
        let asn = Routers::of(tb)?.frr_asn;
        let guard = FrrBfd {
            tb: tb.clone(),
            asn,
            neighbors: tb.node_ips.clone(),
        };
        let lines: Vec<String> = guard
            .neighbors
            .iter()
            .map(|n| format!("neighbor {n} bfd profile fast"))
            .collect();
        tb.frr_configure(asn, &lines)?;
        Ok(guard)
    }
}

impl Drop for FrrBfd {
    fn drop(&mut self) {
        let lines: Vec<String> = self
            .neighbors
            .iter()
            .map(|n| format!("no neighbor {n} bfd"))
            .collect();
        if let Err(e) = self.tb.frr_configure(self.asn, &lines) {
            eprintln!("turning FRR's BFD off: {e:#}");
        }
    }
}

/// Waits until FRR's BFD session with `peer` is up.
async fn until_frr_bfd_up(tb: &Testbed, peer: &str) -> anyhow::Result<()> {
    wait_for(&format!("FRR's BFD session with {peer} Up"), T, || async {
        let peers = frr_bfd_peers(tb)?;
        Ok(peers
            .get(peer)
            .is_some_and(|p| p["status"] == "up")
            .then_some(()))
    })
    .await
}

/// FRR's BFD sessions (`show bfd peers json`, from bfdd), by peer address.
fn frr_bfd_peers(tb: &Testbed) -> anyhow::Result<BTreeMap<String, Value>> {
    let vty = tb
        .var("TESTBED_ROUTER_VTY")
        .context("TESTBED_ROUTER_VTY missing")?;
    let out = netns_exec(
        &tb.router_netns,
        &[
            "vtysh",
            "--vty_socket",
            vty,
            "-d",
            "bfdd",
            "-c",
            "show bfd peers json",
        ],
    )?;
    ensure!(
        out.status.success(),
        "show bfd peers json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers: Vec<Value> = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "show bfd peers json: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(peers
        .into_iter()
        .filter_map(|p| Some((p["peer"].as_str()?.to_owned(), p)))
        .collect())
}

/// BFD with FRR (profile 100 ms x 3 on both sides): FRR's bfdd brings a session up with every
/// node and shows the speakers' timers as the remote's; each BGPSession shows BFD Up; cutting a
/// node's link drops its next hop at the router within BFD's detection time, long before the
/// 9 s hold time; the link back, the next hop comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn bfd_with_frr_drops_a_cut_nodes_next_hop_within_the_detection_time() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let client = tb.client().await?;
    let routers = Routers::of(&tb)?;
    let mut config = routers.config(None);
    config["bfdProfiles"] = json!([{"name": "fast", "receiveInterval": 100,
        "transmitInterval": 100, "detectMultiplier": 3}]);
    config["bgpPeers"][0]["bfdProfile"] = json!("fast");
    let _bfd = FrrBfd::set(&tb)?;
    let _installed = install_with(&tb, &client, config).await?;
    let ns = tb.namespace(&client, "bgp-bfd").await?;
    let w = Bgp {
        tb: tb.clone(),
        client: client.clone(),
        ns,
        routers,
        _installed,
    };
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    w.until_holds(View::Frr, &prefix, &nodes).await?;

    // FRR's view: every node's session up, with the speakers' timers as the remote's (FRR's JSON
    // gives milliseconds).
    let seen = wait_for("FRR's BFD sessions with every node Up", T, || async {
        let peers = frr_bfd_peers(&tb)?;
        let up = nodes
            .iter()
            .all(|n| peers.get(n).is_some_and(|p| p["status"] == "up"));
        if up {
            Ok(Some(peers))
        } else {
            bail!("FRR's BFD peers: {peers:?}")
        }
    })
    .await?;
    for n in &nodes {
        let p = &seen[n];
        for (field, want) in [
            ("remote-receive-interval", 100),
            ("remote-transmit-interval", 100),
            ("remote-detect-multiplier", 3),
        ] {
            ensure!(
                p[field] == want,
                "FRR's BFD session with {n}: {field} is {}, not {want}: {p}",
                p[field]
            );
        }
    }
    // Ours: every node's BGPSession with FRR says BFD Up.
    let sessions: Api<BGPSession> = Api::namespaced(client.clone(), SYSTEM);
    wait_for(
        "every node's BGPSession with FRR to show BFD Up",
        T,
        || async {
            let list = sessions.list(&ListParams::default()).await?;
            let states: Vec<(String, Option<String>)> = list
                .items
                .iter()
                .filter(|s| s.spec.peer == "frr")
                .map(|s| {
                    let bfd = s.status.as_ref().and_then(|st| st.bfd.as_ref());
                    (s.spec.node.clone(), bfd.map(|b| b.state.clone()))
                })
                .collect();
            let up = states.len() == nodes.len()
                && states.iter().all(|(_, s)| s.as_deref() == Some("Up"));
            if up {
                Ok(Some(()))
            } else {
                bail!("BGPSessions with FRR: {states:?}")
            }
        },
    )
    .await?;

    let mut rest = nodes.clone();
    rest.remove(&w.tb.node_ips[0]);
    let cut = w.tb.cut_node_link(0)?;
    let started = Instant::now();
    w.until_holds(View::Frr, &prefix, &rest).await?;
    let gone = started.elapsed();
    w.until_holds(View::FrrKernel, &prefix, &rest).await?;
    eprintln!(
        "{} dropped from FRR's {prefix} {gone:.2?} after its link went down (BFD 100 ms x 3; hold time 9 s)",
        w.tb.node_ips[0]
    );
    // Not a timing test: only "BFD, not the hold time, did it".
    ensure!(
        gone < Duration::from_secs(5),
        "the next hop went after {gone:?}: the hold time (9 s), not BFD (0.3 s), removed it"
    );
    drop(cut);
    let restored = Instant::now();
    w.until_holds(View::Frr, &prefix, &nodes).await?;
    eprintln!(
        "{} back in {prefix} {:.1?} after its link came up",
        w.tb.node_ips[0],
        restored.elapsed()
    );
    Ok(())
}

/// Graceful Restart and BFD together, as docs/operations.md recommends: FRR's IPv4 sessions with
/// `gracefulRestart: true` (FRR is a helper by default) and BFD 100 ms x 3. node-1's speaker is
/// killed (SIGKILL) and node-2's stopped (SIGTERM, as in an upgrade); each time the kubelet
/// starts it again. Polled every 50 ms from the signal until the node's new session is
/// Established and its path no longer stale: FRR's table and the router's kernel keep its next
/// hop throughout (no withdrawal seen). Then, once node-1's new BFD session is Up, its link is
/// cut: BFD, not the restart time, decides, and the next hop goes within the detection time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_restarting_speaker_keeps_its_routes_at_frr_with_graceful_restart_and_bfd()
-> anyhow::Result<()> {
    use ferrolb_testbed::ferrolb::SPEAKER_PODS;
    use ferrolb_testbed::harness::pod_pid;
    use kube::ResourceExt as _;

    let tb = Testbed::start_or_reuse()?;
    ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let client = tb.client().await?;
    let routers = Routers::of(&tb)?;
    let mut config = routers.config(None);
    config["bfdProfiles"] = json!([{"name": "fast", "receiveInterval": 100,
        "transmitInterval": 100, "detectMultiplier": 3}]);
    config["bgpPeers"][0]["bfdProfile"] = json!("fast");
    config["bgpPeers"][0]["gracefulRestart"] = json!(true);
    let _bfd = FrrBfd::set(&tb)?;
    let _installed = install_with(&tb, &client, config).await?;
    let ns = tb.namespace(&client, "bgp-gr").await?;
    let w = Bgp {
        tb: tb.clone(),
        client: client.clone(),
        ns,
        routers,
        _installed,
    };
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    w.until_holds(View::Frr, &prefix, &nodes).await?;
    w.until_holds(View::FrrKernel, &prefix, &nodes).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    // Each signal on a node of its own, so no speaker restarts twice (the kubelet's back-off).
    for (signal, i) in [("KILL", 0), ("TERM", 1)] {
        let node = tb.node_names[i].clone();
        let node_ip = tb.node_ips[i].clone();
        until_frr_bfd_up(&tb, &node_ip).await?;
        let neighbor =
            w.tb.frr_json(&format!("show bgp neighbors {node_ip} json"))?;
        let gr = &neighbor[&node_ip]["gracefulRestartInfo"];
        eprintln!("FRR's graceful restart view of {node_ip}: {gr}");
        let pod = pods
            .list(&ListParams::default().labels(SPEAKER_PODS))
            .await?
            .items
            .into_iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
            .ok_or_else(|| anyhow!("no speaker on {node}"))?;
        let pid = pod_pid(&pod).ok_or_else(|| anyhow!("the speaker on {node} has no pid"))?;
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -{signal} {pid} failed");
        let started = Instant::now();
        let mut fewest = (usize::MAX, usize::MAX);
        let mut left = None;
        loop {
            let table = w.holds(View::Frr, &prefix)?;
            let kernel = w.holds(View::FrrKernel, &prefix)?;
            fewest = (fewest.0.min(table.paths), fewest.1.min(kernel.paths));
            if (table.paths, kernel.paths) != (nodes.len(), nodes.len()) && left.is_none() {
                left = Some(format!(
                    "after {:.2?}: FRR {} paths via {:?}, kernel {} via {:?}",
                    started.elapsed(),
                    table.paths,
                    table.hops,
                    kernel.paths,
                    kernel.hops
                ));
            }
            let established =
                w.frr_sessions()?.get(&node_ip).map(String::as_str) == Some("Established");
            let stale = table.raw.contains("\"stale\":true");
            let restarted = pods
                .get(&pod.name_any())
                .await
                .ok()
                .and_then(|p| pod_pid(&p))
                .is_some_and(|new| new != pid);
            if restarted && established && !stale && started.elapsed() > Duration::from_secs(2) {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(100),
                "{node}'s speaker did not come back within 100 s after SIG{signal}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "SIG{signal}: {node}'s session back and fresh after {:.1?}; fewest paths seen: FRR {}, kernel {}",
            started.elapsed(),
            fewest.0,
            fewest.1
        );
        ensure!(
            left.is_none(),
            "SIG{signal}: a next hop went while {node}'s speaker restarted: {}",
            left.unwrap_or_default()
        );
    }

    // The same configuration tells a dead path from a restart: a cut link is BFD down while the
    // session is up, so FRR drops node-1 at once instead of keeping its routes for 120 s. (A
    // restart closes the TCP connection first; the BFD failure that follows finds the session
    // already in graceful restart and changes nothing.)
    // node-1 restarted above: its new BFD session must be Up before the cut means anything.
    let node_ip = tb.node_ips[0].clone();
    until_frr_bfd_up(&tb, &node_ip).await?;
    let mut rest = nodes.clone();
    rest.remove(&node_ip);
    let cut = w.tb.cut_node_link(0)?;
    let started = Instant::now();
    w.until_holds(View::Frr, &prefix, &rest).await?;
    let gone = started.elapsed();
    w.until_holds(View::FrrKernel, &prefix, &rest).await?;
    eprintln!("with graceful restart too, a cut link dropped node-1's next hop after {gone:.2?}");
    ensure!(
        gone < Duration::from_secs(5),
        "with graceful restart, node-1's next hop went only after {gone:?}: kept as stale, not dropped by BFD"
    );
    drop(cut);
    w.until_holds(View::Frr, &prefix, &nodes).await?;
    Ok(())
}

/// BIRD runs BFD (100 ms x 3) on its IPv4 sessions with the nodes until dropped: its config
/// rewritten with a `protocol bfd`, `bfd on` and a short `error wait time` (BIRD's default keeps
/// a peer whose BFD failed out for 60 s, growing to 300 s), then `birdc configure`; the original back (and
/// configured) when dropped, also when the test fails.
struct BirdBfd {
    tb: Testbed,
    path: std::path::PathBuf,
    original: String,
}

impl BirdBfd {
    fn set(tb: &Testbed) -> anyhow::Result<BirdBfd> {
        let ctl = tb
            .var("TESTBED_BIRD_CTL")
            .context("TESTBED_BIRD_CTL missing")?;
        let path = Path::new(ctl).with_file_name("bird.conf");
        let original = std::fs::read_to_string(&path)?;
        let with_bfd = "debug protocols { states, events };\n".to_owned()
            + &original.replace(
                "template bgp node4 { local as 64520; passive on; hold time 9;",
                "template bgp node4 { local as 64520; passive on; hold time 9; bfd on; error wait time 1, 10;",
            )
            + "protocol bfd { interface \"*\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }\n";
        ensure!(
            with_bfd.contains("bfd on;"),
            "BIRD's config has no node4 template: {original}"
        );
        let guard = BirdBfd {
            tb: tb.clone(),
            path,
            original,
        };
        std::fs::write(&guard.path, with_bfd)?;
        guard.tb.bird("configure")?;
        Ok(guard)
    }
}

impl Drop for BirdBfd {
    fn drop(&mut self) {
        let restored = std::fs::write(&self.path, &self.original)
            .map_err(anyhow::Error::from)
            .and_then(|()| self.tb.bird("configure"));
        if let Err(e) = restored {
            eprintln!("turning BIRD's BFD off: {e:#}");
        }
    }
}

/// BFD and graceful restart with BIRD (its defaults: a graceful-restart helper, `bfd on`): BIRD's
/// BFD sessions with every node come up, and a cut link drops the node within BFD's detection
/// time. What a speaker's restart (SIGTERM, then SIGKILL) costs at BIRD is reported, not
/// asserted: BIRD ends graceful restart when the BFD session ends, so it loses the node's path
/// until the new speaker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn bird_drops_a_cut_link_by_bfd_and_shows_what_a_restart_costs() -> anyhow::Result<()> {
    use ferrolb_testbed::ferrolb::SPEAKER_PODS;
    use ferrolb_testbed::harness::pod_pid;

    let tb = Testbed::start_or_reuse()?;
    ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let client = tb.client().await?;
    let routers = Routers::of(&tb)?;
    let mut config = routers.config(None);
    config["bfdProfiles"] = json!([{"name": "fast", "receiveInterval": 100,
        "transmitInterval": 100, "detectMultiplier": 3}]);
    config["bgpPeers"][2]["bfdProfile"] = json!("fast");
    config["bgpPeers"][2]["gracefulRestart"] = json!(true);
    let _bfd = BirdBfd::set(&tb)?;
    let _installed = install_with(&tb, &client, config).await?;
    let ns = tb.namespace(&client, "bgp-bird-bfd").await?;
    let w = Bgp {
        tb: tb.clone(),
        client: client.clone(),
        ns,
        routers,
        _installed,
    };
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    w.until_holds(View::Bird, &prefix, &nodes).await?;
    bird_bfd_up(&tb, &nodes).await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    // Each signal on a node of its own, so no speaker restarts twice (the kubelet's back-off).
    for (signal, i) in [("TERM", 1), ("KILL", 2)] {
        let node = tb.node_names[i].clone();
        let protocol = format!("node{}_v4", i + 1);
        let pod = pods
            .list(&ListParams::default().labels(SPEAKER_PODS))
            .await?
            .items
            .into_iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
            .ok_or_else(|| anyhow!("no speaker on {node}"))?;
        let pid = pod_pid(&pod).ok_or_else(|| anyhow!("the speaker on {node} has no pid"))?;
        let kill = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        ensure!(kill.success(), "kill -{signal} {pid} failed");
        let started = Instant::now();
        let mut fewest = usize::MAX;
        // Until the node's session is up again and the restart is over (no stale path left).
        while started.elapsed() < Duration::from_secs(2)
            || !tb
                .bird(&format!("show protocols {protocol}"))?
                .contains("Established")
            || w.bird_route(&prefix)?.contains("stale")
            || w.holds(View::Bird, &prefix)?.paths < nodes.len()
        {
            fewest = fewest.min(w.holds(View::Bird, &prefix)?.paths);
            ensure!(
                started.elapsed() < Duration::from_secs(150),
                "{node} never came back to BIRD after SIG{signal}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "SIG{signal}: {node} back at BIRD after {:.1?}; fewest paths seen {fewest}",
            started.elapsed()
        );
        bird_bfd_up(&tb, &nodes).await?;
        // Only reported: BIRD 2.0.12 takes the BFD session's end (AdminDown after a SIGTERM,
        // silence after a SIGKILL) for a failure even while the peer is in graceful restart,
        // and flushes the routes it kept (docs/operations.md, "BFD and graceful restart").
    }

    let node_ip = tb.node_ips[0].clone();
    let mut rest = nodes.clone();
    rest.remove(&node_ip);
    let cut = w.tb.cut_node_link(0)?;
    let started = Instant::now();
    w.until_holds(View::Bird, &prefix, &rest).await?;
    let gone = started.elapsed();
    eprintln!("BIRD dropped the cut node-1 after {gone:.2?} (BFD 100 ms x 3, hold time 9 s)");
    ensure!(
        gone < Duration::from_secs(5),
        "BIRD dropped the cut node only after {gone:?}"
    );
    drop(cut);
    if let Err(e) = w.until_holds(View::Bird, &prefix, &nodes).await {
        let sessions: Api<BGPSession> = Api::namespaced(client.clone(), SYSTEM);
        let with_bird: Vec<_> = sessions
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|s| s.spec.peer == "bird")
            .map(|s| (s.spec.node, s.status))
            .collect();
        let bird = tb.bird("show protocols all node1_v4")?;
        bail!("{e:#}\nthe speakers' sessions with BIRD: {with_bird:?}\nBIRD: {bird}");
    }
    Ok(())
}

/// Waits until BIRD's BFD sessions with every one of `nodes` are Up.
async fn bird_bfd_up(tb: &Testbed, nodes: &BTreeSet<String>) -> anyhow::Result<()> {
    wait_for("BIRD's BFD sessions with every node Up", T, || async {
        let text = tb.bird("show bfd sessions")?;
        let up = nodes.iter().all(|n| {
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str()) && l.contains("Up"))
        });
        if up {
            Ok(Some(()))
        } else {
            bail!("BIRD's BFD sessions:\n{text}")
        }
    })
    .await
}

/// A rollout of every speaker (a new operand image, as a new operator version brings; the
/// DaemonSet replaces one node's pod at a time) with graceful restart and BFD on FRR's sessions:
/// a client probing the Service through FRR every 10 ms sees no gap over 300 ms, there and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_rollout_of_every_speaker_keeps_a_bgp_client_free_of_gaps() -> anyhow::Result<()> {
    use ferrolb_testbed::ferrolb::{committed_image, roll_out_image};
    use ferrolb_testbed::harness::Probe;

    let tb = Testbed::start_or_reuse()?;
    ensure!(tb.node_names.len() >= 3, "needs three nodes");
    let client = tb.client().await?;
    let routers = Routers::of(&tb)?;
    let mut config = routers.config(None);
    config["bfdProfiles"] = json!([{"name": "fast", "receiveInterval": 100,
        "transmitInterval": 100, "detectMultiplier": 3}]);
    config["bgpPeers"][0]["bfdProfile"] = json!("fast");
    config["bgpPeers"][0]["gracefulRestart"] = json!(true);
    let _bfd = FrrBfd::set(&tb)?;
    let _installed = install_with(&tb, &client, config).await?;
    let ns = tb.namespace(&client, "bgp-rollout").await?;
    let w = Bgp {
        tb: tb.clone(),
        client: client.clone(),
        ns,
        routers,
        _installed,
    };
    w.echo("web", 3, None).await?;
    w.service("web", "web", json!({})).await?;
    let ip = w.address("web", false).await?;
    let prefix = host_prefix(&ip);
    let nodes = w.nodes_v4();
    w.until_holds(View::FrrKernel, &prefix, &nodes).await?;
    let _route = w.route_via_frr(&ip)?;
    w.answers(&ip, "").await?;
    for image in [format!("{}-rollout", committed_image()), committed_image()] {
        let probe = Probe::start(
            &tb,
            &tb.client_netns,
            &format!("{ip}:80"),
            Duration::from_millis(10),
        )?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let took = roll_out_image(&tb, &client, &image).await?;
        // The last speaker's new session, and its fresh path, within a few seconds.
        w.until_holds(View::Frr, &prefix, &nodes).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = probe.stop();
        eprintln!(
            "rollout to {image} in {took:.1?}: {} probes, {} failed, longest gap between answers {:?}",
            report.samples.len(),
            report.failures,
            report.max_gap
        );
        ensure!(
            report.max_gap < Duration::from_millis(300),
            "a client gap of {:?} during the rollout to {image} ({} probes failed)",
            report.max_gap,
            report.failures
        );
    }
    Ok(())
}
