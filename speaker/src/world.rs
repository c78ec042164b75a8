//! The speaker's picture of the cluster, built from its watches: slim views of Services,
//! EndpointSlices, Nodes, the speaker pods and the configuration. Pure (no client), so every rule
//! that turns Kubernetes objects into announcement inputs is unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_api::v1alpha1::{LoadBalancerConfig, LoadBalancerConfigSpec};
use ferrolb_api::validate::validate;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::announce::{
    L2Announcement, NodeView, ServiceView, l2_announcements, l2_leaders, l2_plan,
};

/// The label every EndpointSlice carries with its Service's name.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service condition the speakers own: which node announces the Service's addresses, and on
/// which interface.
pub const ANNOUNCED_CONDITION: &str = "ferrolb.io/Announced";

/// A Service as the speaker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Svc {
    class: Option<String>,
    load_balancer: bool,
    local: bool,
    ips: Vec<IpAddr>,
    /// The speakers' condition as it stands in the Service's status.
    announced: Option<Announced>,
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

/// Why a configuration was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The LoadBalancerConfig's name.
    pub name: String,
    /// Every problem, one per line.
    pub problems: String,
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
    services: BTreeMap<String, Svc>,
    /// Address → the Services whose status holds it.
    by_ip: BTreeMap<IpAddr, BTreeSet<String>>,
    /// EndpointSlice `namespace/name` → (Service key, nodes with a ready endpoint).
    slices: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Service key → its EndpointSlices' keys.
    slices_of: HashMap<String, BTreeSet<String>>,
    nodes: BTreeMap<String, NodeView>,
    /// Speaker pod `namespace/name` → where it runs.
    speakers: BTreeMap<String, Speaker>,
    configs: BTreeMap<String, LoadBalancerConfig>,
    /// The configuration in force: the last valid one.
    config: Option<(String, LoadBalancerConfigSpec)>,
    rejected: Option<(String, LoadBalancerConfigSpec)>,
    /// What can change an announcement or a condition since [`World::take_changed`]: most watch
    /// events (status heartbeats, Services without addresses, their EndpointSlices) change
    /// nothing the speaker computes, and need no recompute.
    changed: Changed,
}

/// `namespace/name` of any object.
pub fn key_of<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Svc {
    /// Whether the Service can be announced at all (its class is checked later).
    fn holds_addresses(&self) -> bool {
        self.load_balancer && !self.ips.is_empty()
    }
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

    /// Adds or replaces a Service.
    pub fn set_service(&mut self, svc: &Service) {
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
        let view = Svc {
            announced,
            class: spec.and_then(|s| s.load_balancer_class.clone()),
            load_balancer: spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"),
            local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
            ips,
        };
        let key = key_of(svc);
        if self.services.get(&key) == Some(&view) {
            return;
        }
        self.remove_service(&key);
        if view.holds_addresses() {
            self.changed.addresses(&view.ips);
        }
        self.index(&key, &view.ips, true);
        self.services.insert(key, view);
    }

    /// Forgets a Service.
    pub fn remove_service(&mut self, key: &str) {
        if let Some(old) = self.services.remove(key) {
            if old.holds_addresses() {
                self.changed.addresses(&old.ips);
            }
            self.index(key, &old.ips, false);
        }
    }

    /// Adds or replaces an EndpointSlice: the nodes hosting a ready endpoint (or a serving one
    /// that is not terminating).
    pub fn set_slice(&mut self, slice: &EndpointSlice) {
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
            return;
        };
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
        let new = (service, nodes);
        let key = key_of(slice);
        if self.slices.get(&key) == Some(&new) {
            return;
        }
        self.remove_slice(&key);
        self.endpoints_changed(&new.0);
        self.slices_of
            .entry(new.0.clone())
            .or_default()
            .insert(key.clone());
        self.slices.insert(key, new);
    }

    /// Forgets an EndpointSlice.
    pub fn remove_slice(&mut self, key: &str) {
        let Some((service, _)) = self.slices.remove(key) else {
            return;
        };
        self.endpoints_changed(&service);
        if let Some(of) = self.slices_of.get_mut(&service) {
            of.remove(key);
            if of.is_empty() {
                self.slices_of.remove(&service);
            }
        }
    }

    /// Adds or replaces a Node.
    pub fn set_node(&mut self, node: &Node) {
        let condition = |t: &str| {
            node.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == t))
                .is_some_and(|c| c.status == "True")
        };
        let view = NodeView {
            labels: node.labels().clone(),
            ready: condition("Ready"),
            network_unavailable: condition("NetworkUnavailable"),
        };
        if self.nodes.insert(node.name_any(), view.clone()) != Some(view) {
            self.changed = Changed::Everything;
        }
    }

    /// Forgets a Node.
    pub fn remove_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.changed = Changed::Everything;
        }
    }

    /// Adds or replaces a speaker pod.
    pub fn set_speaker(&mut self, pod: &Pod) {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            self.remove_speaker(&key_of(pod));
            return;
        };
        let status = pod.status.as_ref();
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let ready = pod.metadata.deletion_timestamp.is_none()
            && status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
        let speaker = Speaker { node, ip, ready };
        if self.speakers.insert(key_of(pod), speaker.clone()) != Some(speaker) {
            self.changed = Changed::Everything;
        }
    }

    /// Forgets a speaker pod.
    pub fn remove_speaker(&mut self, key: &str) {
        if self.speakers.remove(key).is_some() {
            self.changed = Changed::Everything;
        }
    }

    /// Adds or replaces a LoadBalancerConfig; returns the rejection when the configuration to
    /// take (the oldest) is invalid and was not reported yet. The last valid one stays in force.
    pub fn set_config(&mut self, config: &LoadBalancerConfig) -> Option<Rejected> {
        self.configs.insert(config.name_any(), config.clone());
        self.choose_config()
    }

    /// Forgets a LoadBalancerConfig.
    pub fn remove_config(&mut self, name: &str) -> Option<Rejected> {
        self.configs.remove(name);
        self.choose_config()
    }

    /// Replaces every LoadBalancerConfig (after a re-list).
    pub fn replace_configs(&mut self, configs: Vec<LoadBalancerConfig>) -> Option<Rejected> {
        self.configs = configs.into_iter().map(|c| (c.name_any(), c)).collect();
        self.choose_config()
    }

    /// The oldest LoadBalancerConfig (ties by name) is the one in force, as for the controller.
    /// Only a change of the configuration in force changes anything (not a status update).
    fn choose_config(&mut self) -> Option<Rejected> {
        let before = self.config.clone();
        let rejected = self.take_oldest_config();
        if self.config != before {
            self.changed = Changed::Everything;
        }
        rejected
    }

    fn take_oldest_config(&mut self) -> Option<Rejected> {
        let oldest = self.configs.values().min_by(|a, b| {
            let created =
                |c: &LoadBalancerConfig| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })?;
        let candidate = (oldest.name_any(), oldest.spec.clone());
        if self.config.as_ref() == Some(&candidate) || self.rejected.as_ref() == Some(&candidate) {
            return None;
        }
        match validate(&candidate.1) {
            Ok(()) => {
                self.config = Some(candidate);
                self.rejected = None;
                None
            }
            Err(problems) => {
                let rejected = Rejected {
                    name: candidate.0.clone(),
                    problems: problems.to_string(),
                };
                self.rejected = Some(candidate);
                Some(rejected)
            }
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Option<&LoadBalancerConfigSpec> {
        self.config.as_ref().map(|(_, spec)| spec)
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

    fn view_of(&self, key: &str, s: &Svc) -> Option<ServiceView> {
        let class = self
            .config()
            .map(|c| c.load_balancer_class.as_str())
            .unwrap_or_default();
        if !(s.holds_addresses() && s.class.as_deref().unwrap_or_default() == class) {
            return None;
        }
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
        let (mine, leaders) = l2_plan(me, config, &views, &self.nodes, live);
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

    /// Every Service key, to find the ones a re-list no longer has.
    pub fn service_keys(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// Every EndpointSlice key.
    pub fn slice_keys(&self) -> Vec<String> {
        self.slices.keys().cloned().collect()
    }

    /// Every Node name.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Every speaker pod key.
    pub fn speaker_keys(&self) -> Vec<String> {
        self.speakers.keys().cloned().collect()
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
        &self.nodes
    }

    /// What `me` announces with Layer 2, given the live speakers.
    pub fn l2_announcements(&self, me: &str, live: &BTreeSet<String>) -> Vec<L2Announcement> {
        let Some(config) = self.config() else {
            return Vec::new();
        };
        l2_announcements(me, config, &self.service_views(), &self.nodes, live)
    }

    /// The leader of every address that has an L2 advertisement (None: nobody may announce it).
    pub fn l2_leaders(&self, live: &BTreeSet<String>) -> BTreeMap<IpAddr, Option<String>> {
        let Some(config) = self.config() else {
            return BTreeMap::new();
        };
        l2_leaders(config, &self.service_views(), &self.nodes, live)
    }
}

#[cfg(test)]
mod tests;
