//! kube-proxy for the testbed: nftables DNAT of Service load-balancer IPs (and cluster IPs) to the
//! ready endpoints of their EndpointSlices, in the node's network namespace.
//!
//! `externalTrafficPolicy: Local` uses only the endpoints on this node (traffic to a node without
//! one is dropped, and the client address is kept); `Cluster` uses all endpoints and SNATs to the
//! node address, as kube-proxy does.
//!
//! Like kube-proxy's nftables mode, a change is applied incrementally: each destination
//! (address, protocol, port) is one element of a verdict map that jumps to its own chain, and a
//! change replaces only the chains and map elements of the Services that changed, in one atomic
//! `nft` transaction. The whole table is written only at start and after a failed update.
//! A destination without endpoints maps straight to `drop`, with no chain: adding a jump makes the
//! kernel re-validate every chain it can reach, so chains only for destinations that have
//! endpoints keep a change cheap among thousands of Services without endpoints (kube-proxy keeps
//! those in a map of their own for the same reason).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Ctx;

const TABLE: &str = "ferrolb_testbed";

/// A Service: (namespace, name).
pub type ServiceKey = (String, String);

/// One destination this node rewrites: an element of the `services` map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub daddr: IpAddr,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    pub port: u16,
}

/// Where a [`Destination`] goes: its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Ready backends (address, port) of the destination's family; none: drop.
    pub backends: Vec<(IpAddr, u16)>,
    /// SNAT to the node address (Cluster policy), or keep the client address (Local).
    pub masquerade: bool,
}

/// The destinations one Service asks of node `node` (pure, tested): for each of its ports, every
/// load-balancer ingress IP and external IP (`externalTrafficPolicy`) and every cluster IP
/// (`internalTrafficPolicy`), to the ready endpoints of its slices of the same family that serve
/// the port (only those on `node` under a Local policy).
pub fn destinations<'a>(
    node: &str,
    svc: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice> + Clone,
) -> Vec<(Destination, Target)> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let local_ext = spec.external_traffic_policy.as_deref() == Some("Local");
    let local_int = spec.internal_traffic_policy.as_deref() == Some("Local");
    let mut ext_ips: Vec<&String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.as_ref()).collect())
        .unwrap_or_default();
    ext_ips.extend(spec.external_ips.iter().flatten());
    let mut int_ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    if int_ips.is_empty() {
        int_ips.extend(spec.cluster_ip.as_ref());
    }
    let mut out = Vec::new();
    for sp in spec.ports.iter().flatten() {
        let proto = match sp.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => "tcp",
            "UDP" => "udp",
            _ => continue,
        };
        let Ok(port) = u16::try_from(sp.port) else {
            continue;
        };
        // (address, port, on this node), of both families, in slice order, without repeats
        let mut backends: Vec<(IpAddr, u16, bool)> = Vec::new();
        for sl in slices.clone() {
            let Some(target_port) = sl.ports.iter().flatten().find_map(|p| {
                (p.name.as_deref().unwrap_or("") == sp.name.as_deref().unwrap_or(""))
                    .then_some(p.port)
                    .flatten()
            }) else {
                continue;
            };
            let Ok(target_port) = u16::try_from(target_port) else {
                continue;
            };
            for ep in &sl.endpoints {
                if !ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) {
                    continue;
                }
                let local = ep.node_name.as_deref() == Some(node);
                for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    let b = (ip, target_port, local);
                    if !backends.contains(&b) {
                        backends.push(b);
                    }
                }
            }
        }
        for (ips, local_only) in [(&ext_ips, local_ext), (&int_ips, local_int)] {
            for daddr in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                let target = Target {
                    backends: backends
                        .iter()
                        .filter(|(ip, _, local)| {
                            ip.is_ipv6() == daddr.is_ipv6() && (!local_only || *local)
                        })
                        .map(|&(ip, port, _)| (ip, port))
                        .collect(),
                    masquerade: !local_only,
                };
                out.push((Destination { daddr, proto, port }, target));
            }
        }
    }
    out
}

/// The node's two nftables tables (`ip` and `ip6`), as wanted and as applied, and the `nft`
/// scripts that take the kernel from one to the other (pure, tested).
///
/// Several Services may claim one destination (an external IP, say); the first by
/// namespace/name wins, and the next takes over when it lets go.
#[derive(Debug)]
pub struct Tables {
    /// The node address of each family with a table (`false`: IPv4), for SNAT.
    node_ips: BTreeMap<bool, IpAddr>,
    /// Every claimed destination and its claimants.
    claims: BTreeMap<Destination, BTreeMap<ServiceKey, Target>>,
    /// The destinations each Service claims.
    by_service: HashMap<ServiceKey, Vec<Destination>>,
    /// What the kernel has: each destination's chain number (none: `drop`) and target.
    applied: HashMap<Destination, (Option<u64>, Target)>,
    /// Destinations whose winner or target may differ from `applied`.
    dirty: BTreeSet<Destination>,
    next_chain: u64,
}

impl Tables {
    /// Tables for a node with these addresses (one per family at most).
    pub fn new(node_ips: impl IntoIterator<Item = IpAddr>) -> Tables {
        Tables {
            node_ips: node_ips.into_iter().map(|ip| (ip.is_ipv6(), ip)).collect(),
            claims: BTreeMap::new(),
            by_service: HashMap::new(),
            applied: HashMap::new(),
            dirty: BTreeSet::new(),
            next_chain: 0,
        }
    }

    /// Replace what Service `svc` claims (empty: it is gone).
    pub fn set_service(&mut self, svc: &ServiceKey, wanted: Vec<(Destination, Target)>) {
        for d in self.by_service.remove(svc).unwrap_or_default() {
            if let Some(claimants) = self.claims.get_mut(&d) {
                claimants.remove(svc);
                if claimants.is_empty() {
                    self.claims.remove(&d);
                }
            }
            self.dirty.insert(d);
        }
        let wanted: Vec<_> = wanted
            .into_iter()
            .filter(|(d, _)| self.node_ips.contains_key(&d.daddr.is_ipv6()))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let mut mine = Vec::with_capacity(wanted.len());
        for (d, target) in wanted {
            // a Service that names one destination twice: its first wins, as for two Services
            self.claims
                .entry(d.clone())
                .or_default()
                .entry(svc.clone())
                .or_insert(target);
            self.dirty.insert(d.clone());
            mine.push(d);
        }
        self.by_service.insert(svc.clone(), mine);
    }

    fn winner(&self, d: &Destination) -> Option<&Target> {
        self.claims.get(d)?.values().next()
    }

    /// The script that replaces both tables with everything wanted (at start, and to recover
    /// from a failed update).
    pub fn full(&mut self) -> String {
        self.applied.clear();
        self.dirty.clear();
        let mut out = String::new();
        for v6 in [false, true] {
            let fam = family(v6);
            let _ = writeln!(out, "table {fam} {TABLE}\ndelete table {fam} {TABLE}");
            let Some(node_ip) = self.node_ips.get(&v6) else {
                continue;
            };
            let (addr_type, match_daddr) = if v6 {
                ("ipv6_addr", "ip6 daddr")
            } else {
                ("ipv4_addr", "ip daddr")
            };
            let dispatch = format!("{match_daddr} . meta l4proto . th dport vmap @services");
            let _ = writeln!(out, "table {fam} {TABLE} {{");
            let _ = writeln!(
                out,
                "  map services {{ type {addr_type} . inet_proto . inet_service : verdict; }}"
            );
            let _ = writeln!(
                out,
                "  chain prerouting {{ type nat hook prerouting priority -100; policy accept; {dispatch}; }}"
            );
            let _ = writeln!(
                out,
                "  chain output {{ type nat hook output priority -100; policy accept; {dispatch}; }}"
            );
            let _ = writeln!(
                out,
                "  chain postrouting {{ type nat hook postrouting priority 100; policy accept; meta mark & 0x4000 == 0x4000 snat to {node_ip}; }}"
            );
            let _ = writeln!(out, "}}");
            let mut elements = Vec::new();
            let wanted: Vec<(Destination, Target)> = self
                .claims
                .keys()
                .filter(|d| d.daddr.is_ipv6() == v6)
                .filter_map(|d| Some((d.clone(), self.winner(d)?.clone())))
                .collect();
            for (d, target) in wanted {
                let chain = self.new_chain(&mut out, &d, &target);
                elements.push(element(&d, Some(chain)));
                self.applied.insert(d, (chain, target));
            }
            if !elements.is_empty() {
                let _ = writeln!(
                    out,
                    "add element {fam} {TABLE} services {{ {} }}",
                    elements.join(", ")
                );
            }
        }
        out
    }

    /// The script that brings the applied tables to what is wanted by touching only the
    /// destinations that changed since the last script; None when nothing changed. If applying it
    /// fails, apply [`Tables::full`] instead.
    pub fn partial(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut retired = Vec::new();
        for d in std::mem::take(&mut self.dirty) {
            let wanted = self.winner(&d).cloned();
            let applied = self.applied.get(&d);
            if applied.map(|(_, t)| t) == wanted.as_ref() {
                continue;
            }
            let fam = family(d.daddr.is_ipv6());
            if let Some((old, _)) = self.applied.remove(&d) {
                let _ = writeln!(
                    out,
                    "delete element {fam} {TABLE} services {{ {} }}",
                    element(&d, None)
                );
                retired.extend(old.map(|old| (fam, old)));
            }
            if let Some(target) = wanted {
                let chain = self.new_chain(&mut out, &d, &target);
                let _ = writeln!(
                    out,
                    "add element {fam} {TABLE} services {{ {} }}",
                    element(&d, Some(chain))
                );
                self.applied.insert(d, (chain, target));
            }
        }
        // chains go once nothing jumps to them any more (in the same transaction)
        for (fam, chain) in retired {
            let _ = writeln!(
                out,
                "flush chain {fam} {TABLE} s{chain}\ndelete chain {fam} {TABLE} s{chain}"
            );
        }
        (!out.is_empty()).then_some(out)
    }

    /// Write the definition of a new chain for `target` and return its number; none for a
    /// target without backends (no (local) endpoint: the destination is dropped, as kube-proxy
    /// does for Local; reject would also do for Cluster).
    fn new_chain(&mut self, out: &mut String, d: &Destination, target: &Target) -> Option<u64> {
        if target.backends.is_empty() {
            return None;
        }
        self.next_chain += 1;
        let n = self.next_chain;
        let v6 = d.daddr.is_ipv6();
        let fam = family(v6);
        let _ = write!(out, "table {fam} {TABLE} {{\n  chain s{n} {{ ");
        if target.masquerade {
            out.push_str("meta mark set meta mark | 0x4000; ");
        }
        let map: Vec<String> = target
            .backends
            .iter()
            .enumerate()
            .map(|(j, (ip, port))| match ip {
                IpAddr::V4(ip) => format!("{j} : {ip} . {port}"),
                IpAddr::V6(ip) => format!("{j} : [{ip}] . {port}"),
            })
            .collect();
        let _ = writeln!(
            out,
            "meta l4proto {} dnat {fam} to numgen random mod {} map {{ {} }}; }}\n}}",
            d.proto,
            target.backends.len(),
            map.join(", ")
        );
        Some(n)
    }
}

fn family(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
}

/// A map element: `daddr . proto . port`, with its verdict when given one (`Some(None)`: drop).
fn element(d: &Destination, verdict: Option<Option<u64>>) -> String {
    let key = format!("{} . {} . {}", d.daddr, d.proto, d.port);
    match verdict {
        Some(Some(n)) => format!("{key} : jump s{n}"),
        Some(None) => format!("{key} : drop"),
        None => key,
    }
}

/// Run an `nft` script (one transaction: all of it or nothing).
async fn apply(script: &str) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        anyhow::bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Remove the table (agent shutdown).
pub async fn flush() {
    let _ = super::sh("nft", &["delete", "table", "ip", TABLE]).await;
    let _ = super::sh("nft", &["delete", "table", "ip6", TABLE]).await;
}

/// How long to collect further changes after the first one before syncing, and the least time
/// between two syncs (kube-proxy's minSyncPeriod is 1 s; the tests want it quicker).
const SYNC_DELAY: Duration = Duration::from_millis(100);

/// The Services and EndpointSlices seen by the watches, and the Services that changed since the
/// last sync.
#[derive(Debug, Default)]
struct Cache {
    services: HashMap<ServiceKey, Service>,
    /// Slices by the Service they belong to (label `kubernetes.io/service-name`), then by name.
    slices: HashMap<ServiceKey, BTreeMap<String, EndpointSlice>>,
    /// (namespace, slice name) → its Service, to find it again when the label changes or the
    /// slice goes.
    slice_owner: HashMap<(String, String), ServiceKey>,
    dirty: BTreeSet<ServiceKey>,
    service_relist: Option<Vec<Service>>,
    slice_relist: Option<Vec<EndpointSlice>>,
    services_synced: bool,
    slices_synced: bool,
}

fn key_of(o: &impl ResourceExt) -> ServiceKey {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl Cache {
    fn on_service(&mut self, ev: watcher::Event<Service>) {
        match ev {
            watcher::Event::Init => self.service_relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => self.service_relist.get_or_insert_default().push(s),
            watcher::Event::InitDone => {
                let old = std::mem::take(&mut self.services);
                self.dirty.extend(old.into_keys());
                for s in self.service_relist.take().unwrap_or_default() {
                    self.set_service(s);
                }
                self.services_synced = true;
            }
            watcher::Event::Apply(s) => self.set_service(s),
            watcher::Event::Delete(s) => {
                let key = key_of(&s);
                self.services.remove(&key);
                self.dirty.insert(key);
            }
        }
    }

    fn set_service(&mut self, s: Service) {
        let key = key_of(&s);
        self.services.insert(key.clone(), s);
        self.dirty.insert(key);
    }

    fn on_slice(&mut self, ev: watcher::Event<EndpointSlice>) {
        match ev {
            watcher::Event::Init => self.slice_relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => self.slice_relist.get_or_insert_default().push(s),
            watcher::Event::InitDone => {
                self.dirty.extend(self.slices.drain().map(|(k, _)| k));
                self.slice_owner.clear();
                for s in self.slice_relist.take().unwrap_or_default() {
                    self.set_slice(s);
                }
                self.slices_synced = true;
            }
            watcher::Event::Apply(s) => self.set_slice(s),
            watcher::Event::Delete(s) => {
                self.remove_slice(&key_of(&s));
            }
        }
    }

    fn remove_slice(&mut self, slice: &(String, String)) {
        if let Some(owner) = self.slice_owner.remove(slice) {
            if let Some(of_owner) = self.slices.get_mut(&owner) {
                of_owner.remove(&slice.1);
                if of_owner.is_empty() {
                    self.slices.remove(&owner);
                }
            }
            self.dirty.insert(owner);
        }
    }

    fn set_slice(&mut self, s: EndpointSlice) {
        let slice = key_of(&s);
        self.remove_slice(&slice);
        let Some(service) = s.labels().get("kubernetes.io/service-name").cloned() else {
            return;
        };
        let owner = (slice.0.clone(), service);
        self.slices
            .entry(owner.clone())
            .or_default()
            .insert(slice.1.clone(), s);
        self.slice_owner.insert(slice, owner.clone());
        self.dirty.insert(owner);
    }

    /// Hand the Services that changed to `tables`.
    fn sync_into(&mut self, node: &str, tables: &mut Tables) {
        for key in std::mem::take(&mut self.dirty) {
            let wanted = match self.services.get(&key) {
                Some(svc) => destinations(
                    node,
                    svc,
                    self.slices.get(&key).into_iter().flat_map(|m| m.values()),
                ),
                None => Vec::new(),
            };
            tables.set_service(&key, wanted);
        }
    }
}

/// Feed one resource's watch events into the cache, waking `changed` after each.
async fn mirror<K>(
    api: Api<K>,
    cache: &Mutex<Cache>,
    on_event: fn(&mut Cache, watcher::Event<K>),
    changed: &Notify,
    what: &str,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let stream = watcher(api, watcher::Config::default())
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                on_event(
                    &mut cache.lock().unwrap_or_else(PoisonError::into_inner),
                    ev,
                );
                changed.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "watching {what}"),
        }
    }
}

/// Keep the node's nftables in sync with Services and EndpointSlices: watch both (as kube-proxy's
/// informers do) and, after a change, update only the destinations of the Services that changed,
/// coalescing the changes of [`SYNC_DELAY`] and syncing at most once per [`SYNC_DELAY`].
pub async fn run(ctx: Arc<Ctx>) {
    let cache = Mutex::new(Cache::default());
    let changed = Notify::new();
    let svcs = mirror(
        Api::<Service>::all(ctx.proxy_client.clone()),
        &cache,
        Cache::on_service,
        &changed,
        "services",
    );
    let slices = mirror(
        Api::<EndpointSlice>::all(ctx.proxy_client.clone()),
        &cache,
        Cache::on_slice,
        &changed,
        "endpointslices",
    );
    let sync = async {
        let node_ips =
            std::iter::once(IpAddr::V4(ctx.args.node_ip)).chain(ctx.args.node_ipv6.map(IpAddr::V6));
        let mut tables = Tables::new(node_ips);
        let mut whole = true;
        let mut last_sync: Option<Instant> = None;
        loop {
            changed.notified().await;
            // collect the changes that come with this one, and keep the syncs apart
            if let Some(t) = last_sync {
                let at = (Instant::now() + SYNC_DELAY).max(t + SYNC_DELAY);
                tokio::time::sleep_until(at).await;
            }
            {
                let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
                // nothing to build from until both watches hold a full list
                if !(cache.services_synced && cache.slices_synced) {
                    continue;
                }
                cache.sync_into(&ctx.args.node, &mut tables);
            }
            last_sync = Some(Instant::now());
            let script = if whole {
                Some(tables.full())
            } else {
                tables.partial()
            };
            let Some(script) = script else { continue };
            let started = Instant::now();
            match apply(&script).await {
                Ok(()) => {
                    let took = started.elapsed();
                    if took > Duration::from_secs(1) {
                        // worth knowing when the testbed itself slows the cluster down
                        tracing::info!(whole, bytes = script.len(), ?took, "slow nftables update");
                    } else {
                        tracing::debug!(whole, bytes = script.len(), ?took, "nftables updated");
                    }
                    whole = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, whole, "nftables; rewriting the whole table");
                    // try again after the next delay even without a change
                    whole = true;
                    changed.notify_one();
                }
            }
        }
    };
    tokio::join!(svcs, slices, sync);
}

#[cfg(test)]
mod tests;
