//! The speaker's picture of the cluster, built from its watches: slim views of Services,
//! EndpointSlices, Nodes, the speaker pods and the configuration. Pure (no client), so every rule
//! that turns Kubernetes objects into announcement inputs is unit-tested.
//!
//! Each kind is a [`Relisted`] store, so a relist is swapped in whole when it completes (the world
//! never shows half of one) and only the keys it really changed are looked at again. The
//! configuration in force is chosen by [`ConfigInForce`], as in the controller.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use ferrolb_api::in_force::{Change as ConfigChange, ConfigInForce};
use ferrolb_api::selector::Labels;
use ferrolb_api::v1alpha1::{LoadBalancerConfig, LoadBalancerConfigSpec};
use ferrolb_api::wiring;
use ferrolb_runtime::watch::{Change, Relisted};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::watcher;

pub mod decoded;

use crate::announce::{
    L2Announcement, NodeView, SelectedBy, ServiceView, l2_announcements, l2_leaders, l2_plan,
};

/// The label every EndpointSlice carries with its Service's name.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service condition the speakers own: which node announces the Service's addresses, and on
/// which interface.
pub const ANNOUNCED_CONDITION: &str = wiring::conditions::ANNOUNCED;

/// A Service as the speaker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Svc {
    class: Option<String>,
    load_balancer: bool,
    local: bool,
    ips: Vec<IpAddr>,
    /// Its labels, for advertisements' serviceSelectors; kept only while it holds addresses.
    labels: SvcLabels,
    /// The speakers' condition as it stands in the Service's status.
    announced: Option<Announced>,
}

/// A Service's labels as a sorted slice: a map would cost about half a kilobyte per Service even
/// for one label, ten thousand times over.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct SvcLabels(Box<[(Box<str>, Box<str>)]>);

impl SvcLabels {
    fn of(labels: &BTreeMap<String, String>) -> Self {
        Self(
            labels
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }
}

impl Labels for SvcLabels {
    fn label(&self, key: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        self.0.get(i).map(|(_, v)| &**v)
    }
}

/// The `ferrolb.io/Announced` condition as a Service's status holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// `True` or `False`.
    pub status: String,
    /// Who announces which address, on which interface.
    pub message: String,
    /// When the status last changed.
    pub since: Time,
}

/// A speaker pod: where it runs and whether it is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Speaker {
    node: String,
    ip: Option<IpAddr>,
    ready: bool,
}

/// A LoadBalancerConfig as the world keeps it: equal when what decides the configuration in
/// force is (a status write changes nothing).
#[derive(Clone, Debug)]
struct Config(LoadBalancerConfig);

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.0.metadata.creation_timestamp == other.0.metadata.creation_timestamp
            && self.0.spec == other.0.spec
    }
}

/// What changed since the last [`World::take_changed`], for the announcements and conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Changed {
    /// Nothing they depend on (status heartbeats, Services without addresses, their slices).
    #[default]
    Nothing,
    /// Only the Services holding these addresses (or that held them): their Service, status or
    /// endpoints. Only these addresses need a new leader, and only their Services a new condition.
    Addresses(BTreeSet<IpAddr>),
    /// Nodes, speakers or the configuration: any address may move.
    Everything,
}

impl Changed {
    fn addresses(&mut self, ips: &[IpAddr]) {
        match self {
            Changed::Everything => {}
            Changed::Addresses(set) => set.extend(ips),
            Changed::Nothing => *self = Changed::Addresses(ips.iter().copied().collect()),
        }
    }
}

/// What this node leads, and who leads every address, as [`World::update_plan`] keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The addresses this node announces.
    pub mine: BTreeMap<IpAddr, L2Announcement>,
    /// The leader of every address with an L2 advertisement (None: nobody announces it).
    pub leaders: BTreeMap<IpAddr, Option<String>>,
}

/// Everything the speaker knows about the cluster.
#[derive(Clone, Debug, Default)]
pub struct World {
    services: Relisted<Svc>,
    /// Address → the Services whose status holds it.
    by_ip: BTreeMap<IpAddr, SortedSet>,
    /// EndpointSlice `namespace/name` → (Service key, nodes with a ready endpoint).
    slices: Relisted<(String, SortedSet)>,
    /// Service key → its EndpointSlices' keys.
    slices_of: HashMap<String, SortedSet>,
    nodes: Relisted<NodeView>,
    /// Speaker pod `namespace/name` → where it runs.
    speakers: Relisted<Speaker>,
    configs: Relisted<Config>,
    /// The configuration in force: the last valid one.
    in_force: ConfigInForce,
    /// What can change an announcement or a condition since [`World::take_changed`]: most watch
    /// events (status heartbeats, Services without addresses, their EndpointSlices) change
    /// nothing the speaker computes, and need no recompute.
    changed: Changed,
}

/// A small set of names, sorted: these sets (the Services of an address, the nodes of a slice,
/// the slices of a Service) nearly always hold one name, and a `BTreeSet` allocates a whole node
/// of eleven for it: a quarter of a kilobyte, three times per Service (`examples/world_heap.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SortedSet(Vec<String>);

impl SortedSet {
    fn insert(&mut self, name: String) {
        if let Err(i) = self.0.binary_search(&name) {
            self.0.insert(i, name);
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            self.0.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }
}

impl FromIterator<String> for SortedSet {
    fn from_iter<I: IntoIterator<Item = String>>(names: I) -> Self {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        names.shrink_to_fit();
        Self(names)
    }
}

impl<'a> IntoIterator for &'a SortedSet {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// `namespace/name` of any object.
pub fn key_of<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Svc {
    /// The speaker's view of a Service.
    fn of(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        let ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| {
                ingress
                    .iter()
                    .filter_map(|i| i.ip.as_deref()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let announced = svc
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ANNOUNCED_CONDITION))
            .map(|c| Announced {
                status: c.status.clone(),
                message: c.message.clone(),
                since: c.last_transition_time.clone(),
            });
        let mut view = Svc {
            announced,
            class: spec.and_then(|s| s.load_balancer_class.clone()),
            load_balancer: spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"),
            local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
            ips,
            labels: SvcLabels::default(),
        };
        if view.holds_addresses() {
            view.labels = SvcLabels::of(svc.labels());
        }
        view
    }

    /// Whether the Service can be announced at all (its class is checked later).
    fn holds_addresses(&self) -> bool {
        self.load_balancer && !self.ips.is_empty()
    }
}

/// An EndpointSlice's Service and the nodes hosting a ready endpoint (or a serving one that is
/// not terminating); None for a slice without the Service label.
fn slice_of(slice: &EndpointSlice) -> Option<(String, SortedSet)> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    let service = format!("{}/{service}", slice.namespace().unwrap_or_default());
    let nodes = slice
        .endpoints
        .iter()
        .filter(|e| {
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            ready || (serving && !terminating)
        })
        .filter_map(|e| e.node_name.clone())
        .collect();
    Some((service, nodes))
}

/// A Node's readiness, network and labels.
fn node_of(node: &Node) -> NodeView {
    let condition = |t: &str| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
            .is_some_and(|c| c.status == "True")
    };
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    NodeView {
        labels: node.labels().clone(),
        ready: condition("Ready"),
        network_unavailable: condition("NetworkUnavailable"),
        addresses,
    }
}

/// Where a speaker pod runs and whether it is ready; None before it is scheduled.
fn speaker_of(pod: &Pod) -> Option<Speaker> {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone())?;
    let status = pod.status.as_ref();
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let ready = pod.metadata.deletion_timestamp.is_none()
        && status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
    Some(Speaker { node, ip, ready })
}

impl World {
    /// What changed that matters to the announcements since the last call.
    pub fn take_changed(&mut self) -> Changed {
        std::mem::take(&mut self.changed)
    }

    /// A change of the Service `key`'s endpoints: its addresses, if it holds any, are affected.
    fn endpoints_changed(&mut self, key: &str) {
        if let Some(s) = self.services.get(key).filter(|s| s.holds_addresses()) {
            self.changed.addresses(&s.ips);
        }
    }

    fn index(&mut self, key: &str, ips: &[IpAddr], add: bool) {
        for ip in ips {
            if add {
                self.by_ip.entry(*ip).or_default().insert(key.to_owned());
            } else if let Some(users) = self.by_ip.get_mut(ip) {
                users.remove(key);
                if users.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
    }

    /// Whether every watch completed its first list.
    pub fn synced(&self) -> bool {
        self.services.is_synced()
            && self.slices.is_synced()
            && self.nodes.is_synced()
            && self.speakers.is_synced()
            && self.configs.is_synced()
    }

    /// How many Services and EndpointSlices are known (for the log).
    pub fn sizes(&self) -> (usize, usize) {
        (self.services.len(), self.slices.len())
    }

    /// Applies a Service watch event.
    pub fn service_event(&mut self, event: watcher::Event<Service>) {
        for change in self
            .services
            .apply(event, key_of, |svc| Some(Svc::of(&svc)))
        {
            self.service_changed(change);
        }
    }

    /// Adds or replaces a Service.
    pub fn set_service(&mut self, svc: &Service) {
        if let Some(change) = self.services.upsert(key_of(svc), Svc::of(svc)) {
            self.service_changed(change);
        }
    }

    /// Forgets a Service.
    pub fn remove_service(&mut self, key: &str) {
        if let Some(change) = self.services.remove(key) {
            self.service_changed(change);
        }
    }

    /// Keeps the address index and what changed up to date after a Service changed in the store.
    fn service_changed(&mut self, change: Change<String, Svc>) {
        let key = change.key().clone();
        if let Some(old) = change.old() {
            if old.holds_addresses() {
                self.changed.addresses(&old.ips);
            }
            let ips = old.ips.clone();
            self.index(&key, &ips, false);
        }
        if let Some(new) = self.services.get(&key) {
            let ips = new.ips.clone();
            if new.holds_addresses() {
                self.changed.addresses(&ips);
            }
            self.index(&key, &ips, true);
        }
    }

    /// Applies an EndpointSlice watch event.
    pub fn slice_event(&mut self, event: watcher::Event<EndpointSlice>) {
        for change in self.slices.apply(event, key_of, |s| slice_of(&s)) {
            self.slice_changed(change);
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub fn set_slice(&mut self, slice: &EndpointSlice) {
        let key = key_of(slice);
        let change = match slice_of(slice) {
            Some(new) => self.slices.upsert(key, new),
            None => self.slices.remove(&key),
        };
        if let Some(change) = change {
            self.slice_changed(change);
        }
    }

    /// Forgets an EndpointSlice.
    pub fn remove_slice(&mut self, key: &str) {
        if let Some(change) = self.slices.remove(key) {
            self.slice_changed(change);
        }
    }

    fn slice_changed(&mut self, change: Change<String, (String, SortedSet)>) {
        let key = change.key().clone();
        if let Some((service, _)) = change.old() {
            self.endpoints_changed(service);
            if let Some(of) = self.slices_of.get_mut(service) {
                of.remove(&key);
                if of.is_empty() {
                    self.slices_of.remove(service);
                }
            }
        }
        if let Some((service, _)) = self.slices.get(&key) {
            let service = service.clone();
            self.endpoints_changed(&service);
            self.slices_of.entry(service).or_default().insert(key);
        }
    }

    /// Applies a Node watch event.
    pub fn node_event(&mut self, event: watcher::Event<Node>) {
        if !self
            .nodes
            .apply(event, |n| n.name_any(), |n| Some(node_of(&n)))
            .is_empty()
        {
            self.changed = Changed::Everything;
        }
    }

    /// Adds or replaces a Node.
    pub fn set_node(&mut self, node: &Node) {
        if self.nodes.upsert(node.name_any(), node_of(node)).is_some() {
            self.changed = Changed::Everything;
        }
    }

    /// Forgets a Node.
    pub fn remove_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.changed = Changed::Everything;
        }
    }

    /// Applies a speaker pod watch event.
    pub fn speaker_event(&mut self, event: watcher::Event<Pod>) {
        if !self
            .speakers
            .apply(event, key_of, |p| speaker_of(&p))
            .is_empty()
        {
            self.changed = Changed::Everything;
        }
    }

    /// Adds or replaces a speaker pod.
    pub fn set_speaker(&mut self, pod: &Pod) {
        let key = key_of(pod);
        let change = match speaker_of(pod) {
            Some(speaker) => self.speakers.upsert(key, speaker),
            None => self.speakers.remove(&key),
        };
        if change.is_some() {
            self.changed = Changed::Everything;
        }
    }

    /// Forgets a speaker pod.
    pub fn remove_speaker(&mut self, key: &str) {
        if self.speakers.remove(key).is_some() {
            self.changed = Changed::Everything;
        }
    }

    /// Applies a LoadBalancerConfig watch event; says what happened to the configuration in
    /// force (a rejection is reported once). The last valid one stays in force, also when every
    /// config is deleted (an accidental delete does not cut traffic).
    pub fn config_event(&mut self, event: watcher::Event<LoadBalancerConfig>) -> ConfigChange {
        let changes = self
            .configs
            .apply(event, ResourceExt::name_any, |c| Some(Config(c)));
        if changes.is_empty() {
            return ConfigChange::Unchanged;
        }
        self.choose_config()
    }

    /// Adds or replaces a LoadBalancerConfig.
    pub fn set_config(&mut self, config: &LoadBalancerConfig) -> ConfigChange {
        self.config_event(watcher::Event::Apply(config.clone()))
    }

    /// Forgets a LoadBalancerConfig.
    pub fn remove_config(&mut self, name: &str) -> ConfigChange {
        if self.configs.remove(name).is_none() {
            return ConfigChange::Unchanged;
        }
        self.choose_config()
    }

    /// Only a change of the configuration in force changes anything (not a status update).
    fn choose_config(&mut self) -> ConfigChange {
        let change = self.in_force.update(self.configs.values().map(|c| &c.0));
        if change == ConfigChange::InForce {
            self.changed = Changed::Everything;
        }
        change
    }

    /// The configuration in force.
    pub fn config(&self) -> Option<&LoadBalancerConfigSpec> {
        self.in_force.in_force().map(|(_, spec)| spec)
    }

    /// Whether the config in the cluster is rejected and an older valid one is in force.
    pub fn config_stale(&self) -> bool {
        self.in_force.is_stale()
    }

    /// The Services this speaker is responsible for: type LoadBalancer, the configured class,
    /// holding addresses.
    pub fn service_views(&self) -> Vec<ServiceView> {
        self.services
            .iter()
            .filter_map(|(key, s)| self.view_of(key, s))
            .collect()
    }

    /// [`World::service_views`] of the Services holding any of `ips`.
    pub fn service_views_at(&self, ips: &BTreeSet<IpAddr>) -> Vec<ServiceView> {
        let keys: BTreeSet<&String> = ips
            .iter()
            .filter_map(|ip| self.by_ip.get(ip))
            .flatten()
            .collect();
        keys.into_iter()
            .filter_map(|key| self.view_of(key, self.services.get(key)?))
            .collect()
    }

    /// [`World::service_views`] of the Services holding an address inside any of `prefixes`.
    pub fn service_views_in(&self, prefixes: &BTreeSet<IpNet>) -> Vec<ServiceView> {
        let keys: BTreeSet<&String> = prefixes
            .iter()
            .flat_map(|net| self.by_ip.range(net.network()..=net.broadcast()))
            .flat_map(|(_, users)| users)
            .collect();
        keys.into_iter()
            .filter_map(|key| self.view_of(key, self.services.get(key)?))
            .collect()
    }

    fn view_of(&self, key: &str, s: &Svc) -> Option<ServiceView> {
        let config = self.config();
        let class = config
            .map(|c| c.load_balancer_class.as_str())
            .unwrap_or_default();
        if !(s.holds_addresses() && s.class.as_deref().unwrap_or_default() == class) {
            return None;
        }
        let selected_by = config
            .map(|c| SelectedBy::of(c, &s.labels))
            .unwrap_or_default();
        let endpoint_nodes = self
            .slices_of
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.get(slice))
            .flat_map(|(_, nodes)| nodes.iter().cloned())
            .collect();
        Some(ServiceView {
            key: key.to_owned(),
            ips: s.ips.clone(),
            local: s.local,
            endpoint_nodes,
            selected_by,
        })
    }

    /// Brings `plan` up to date with what `changed` says changed, `me` being this node and
    /// `live` the live speakers (a change of `live` is [`Changed::Everything`]); returns the
    /// Services whose condition may have to change. Only the changed addresses are ranked again,
    /// so one new Service costs the same among ten thousand as among ten.
    pub fn update_plan(
        &self,
        me: &str,
        live: &BTreeSet<String>,
        changed: &Changed,
        plan: &mut Plan,
    ) -> Vec<ServiceView> {
        let Some(config) = self.config() else {
            return Vec::new();
        };
        let (views, only) = match changed {
            Changed::Nothing => return Vec::new(),
            Changed::Everything => (self.service_views(), None),
            Changed::Addresses(ips) => (self.service_views_at(ips), Some(ips)),
        };
        // The Services of a changed address may hold other addresses too; those are decided
        // from all their users only when they changed as well, so keep only the changed ones.
        let ours = |ip: &IpAddr| only.is_none_or(|ips| ips.contains(ip));
        let (mine, leaders) = l2_plan(me, config, &views, self.nodes.as_map(), live);
        match only {
            None => *plan = Plan::default(),
            Some(ips) => {
                plan.mine.retain(|ip, _| !ips.contains(ip));
                plan.leaders.retain(|ip, _| !ips.contains(ip));
            }
        }
        plan.mine
            .extend(mine.into_iter().filter(|a| ours(&a.ip)).map(|a| (a.ip, a)));
        plan.leaders
            .extend(leaders.into_iter().filter(|(ip, _)| ours(ip)));
        views
    }

    /// The speakers' condition as the Service's status holds it now.
    pub fn announced_condition(&self, key: &str) -> Option<&Announced> {
        self.services.get(key)?.announced.as_ref()
    }

    /// The other speakers to exchange liveness with: node → address of its (host-network) pod.
    pub fn peers(&self, me: &str) -> BTreeMap<String, IpAddr> {
        self.speakers
            .values()
            .filter(|s| s.node != me)
            .filter_map(|s| Some((s.node.clone(), s.ip?)))
            .collect()
    }

    /// Whether Kubernetes says the node's speaker is up: the Node is Ready and its speaker pod
    /// is ready. The fallback when liveness traffic says nothing about the node.
    pub fn kubernetes_ready(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.ready)
            && self.speakers.values().any(|s| s.node == node && s.ready)
    }

    /// Nodes running a speaker pod (ready or not): the only nodes that can announce.
    pub fn speaker_nodes(&self) -> BTreeSet<String> {
        self.speakers.values().map(|s| s.node.clone()).collect()
    }

    /// The Nodes, by name.
    pub fn nodes(&self) -> &BTreeMap<String, NodeView> {
        self.nodes.as_map()
    }

    /// What `me` announces with Layer 2, given the live speakers.
    pub fn l2_announcements(&self, me: &str, live: &BTreeSet<String>) -> Vec<L2Announcement> {
        let Some(config) = self.config() else {
            return Vec::new();
        };
        l2_announcements(me, config, &self.service_views(), self.nodes.as_map(), live)
    }

    /// The leader of every address that has an L2 advertisement (None: nobody may announce it).
    pub fn l2_leaders(&self, live: &BTreeSet<String>) -> BTreeMap<IpAddr, Option<String>> {
        let Some(config) = self.config() else {
            return BTreeMap::new();
        };
        l2_leaders(config, &self.service_views(), self.nodes.as_map(), live)
    }
}

#[cfg(test)]
mod tests;
