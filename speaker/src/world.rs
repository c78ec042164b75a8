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

use crate::announce::{L2Announcement, NodeView, ServiceView, l2_announcements, l2_leaders};

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

/// Everything the speaker knows about the cluster.
#[derive(Clone, Debug, Default)]
pub struct World {
    services: BTreeMap<String, Svc>,
    /// EndpointSlice `namespace/name` → (Service key, nodes with a ready endpoint).
    slices: BTreeMap<String, (String, BTreeSet<String>)>,
    nodes: BTreeMap<String, NodeView>,
    /// Speaker pod `namespace/name` → where it runs.
    speakers: BTreeMap<String, Speaker>,
    configs: BTreeMap<String, LoadBalancerConfig>,
    /// The configuration in force: the last valid one.
    config: Option<(String, LoadBalancerConfigSpec)>,
    rejected: Option<(String, LoadBalancerConfigSpec)>,
    /// Something that can change an announcement or a condition changed since
    /// [`World::take_changed`]: most watch events (status heartbeats, Services without addresses,
    /// their EndpointSlices) change nothing the speaker computes, and need no recompute.
    changed: bool,
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
    /// Whether anything that matters to the announcements changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Whether the Service `key` holds addresses (so its endpoints matter).
    fn matters(&self, key: &str) -> bool {
        self.services.get(key).is_some_and(Svc::holds_addresses)
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
        let old = self.services.get(&key);
        if old != Some(&view) && (old.is_some_and(Svc::holds_addresses) || view.holds_addresses()) {
            self.changed = true;
        }
        self.services.insert(key, view);
    }

    /// Forgets a Service.
    pub fn remove_service(&mut self, key: &str) {
        if self
            .services
            .remove(key)
            .is_some_and(|s| s.holds_addresses())
        {
            self.changed = true;
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
        let old = self.slices.get(&key);
        if old != Some(&new) && (old.is_some_and(|(s, _)| self.matters(s)) || self.matters(&new.0))
        {
            self.changed = true;
        }
        self.slices.insert(key, new);
    }

    /// Forgets an EndpointSlice.
    pub fn remove_slice(&mut self, key: &str) {
        if let Some((service, _)) = self.slices.remove(key)
            && self.matters(&service)
        {
            self.changed = true;
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
            self.changed = true;
        }
    }

    /// Forgets a Node.
    pub fn remove_node(&mut self, name: &str) {
        self.changed |= self.nodes.remove(name).is_some();
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
            self.changed = true;
        }
    }

    /// Forgets a speaker pod.
    pub fn remove_speaker(&mut self, key: &str) {
        self.changed |= self.speakers.remove(key).is_some();
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
    fn choose_config(&mut self) -> Option<Rejected> {
        self.changed = true;
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
        let class = self
            .config()
            .map(|c| c.load_balancer_class.as_str())
            .unwrap_or_default();
        let mut endpoints: HashMap<&str, BTreeSet<&String>> = HashMap::new();
        for (service, nodes) in self.slices.values() {
            if !nodes.is_empty() {
                endpoints.entry(service).or_default().extend(nodes);
            }
        }
        self.services
            .iter()
            .filter(|(_, s)| {
                s.load_balancer
                    && !s.ips.is_empty()
                    && s.class.as_deref().unwrap_or_default() == class
            })
            .map(|(key, s)| ServiceView {
                key: key.clone(),
                ips: s.ips.clone(),
                local: s.local,
                endpoint_nodes: endpoints
                    .get(key.as_str())
                    .map(|nodes| nodes.iter().map(|n| (*n).clone()).collect())
                    .unwrap_or_default(),
            })
            .collect()
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
