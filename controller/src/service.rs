//! How a Kubernetes Service translates into an allocation request, and what the controller
//! writes back. Pure: no client.
//!
//! The controller never keeps a `Service`: each watch event is turned into a [`ServiceView`] at
//! once, which holds only what the reconciler reads, with the request already parsed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_api::address::IpFamily;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::allocator::{FamilyPolicy, Port, ServiceKey, ServiceRequest};

/// Annotation prefixes honoured, most authoritative first. The MetalLB ones let Services migrate
/// unchanged.
const PREFIXES: [&str; 3] = ["ferrolb.io/", "metallb.io/", "metallb.universe.tf/"];

/// Annotation naming the pool to allocate from.
pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
/// Annotation requesting addresses (comma-separated for dual stack).
pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/load-balancer-ips";
/// Annotation with the sharing key.
pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// Annotation the controller writes: the pool the addresses come from.
pub const ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";
/// Service condition the controller owns.
pub const CONDITION_TYPE: &str = "ferrolb.io/IPAllocated";

/// Why a Service's request cannot even be formed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An address in the annotation or `spec.loadBalancerIP` does not parse.
    #[error("{source_field}: {value:?} is not an IP address")]
    BadIp {
        /// Where it was written.
        source_field: String,
        /// What was written.
        value: String,
    },
    /// Both the annotation and `spec.loadBalancerIP` are set.
    #[error("set either the {LOAD_BALANCER_IPS} annotation or spec.loadBalancerIP, not both")]
    BothRequests,
}

impl RequestError {
    /// Stable reason for Events and conditions.
    pub fn reason(&self) -> &'static str {
        ferrolb_api::condition::reasons::INVALID_REQUEST
    }
}

/// What a Service asks for, as far as the Service alone decides it (the namespace's labels are
/// added when the request is made).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// Families wanted.
    pub families: FamilyPolicy,
    /// Addresses asked for explicitly (annotation or `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// Pool asked for by annotation.
    pub pool: Option<String>,
    /// Sharing key.
    pub sharing_key: Option<String>,
    /// The selector for `externalTrafficPolicy: Local`, else empty.
    pub backend_key: String,
    /// Ports exposed, sorted.
    pub ports: Vec<Port>,
}

/// The controller's condition as found on a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenCondition {
    /// `True` or `False`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// When the status last changed (kept across writes that do not change it).
    pub last_transition_time: Time,
}

/// Everything the controller reads of a Service, and nothing else: a few hundred bytes instead
/// of the whole object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid` (for Events).
    pub uid: Option<String>,
    /// `metadata.generation` (the condition's `observedGeneration`).
    pub generation: Option<i64>,
    /// `metadata.resourceVersion`, when it is a number (it is an etcd revision on every API
    /// server we know; an opaque one is never compared).
    pub resource_version: Option<u64>,
    /// `spec.type` is `LoadBalancer`.
    pub load_balancer: bool,
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `metadata.labels` (for `allocateTo.serviceSelectors`).
    pub labels: BTreeMap<String, String>,
    /// The request, parsed once when the event arrives, or why it is invalid.
    pub ask: Result<Ask, RequestError>,
    /// The addresses in `status.loadBalancer.ingress`.
    pub status_ips: Vec<IpAddr>,
    /// The `ferrolb.io/ip-allocated-from-pool` annotation.
    pub allocated_pool: Option<String>,
    /// The controller's condition in `status.conditions`.
    pub condition: Option<SeenCondition>,
}

impl ServiceView {
    /// The view of `svc`. Takes the Service, so that its strings move rather than copy and the
    /// object is gone once the view exists.
    pub fn new(svc: Service) -> Self {
        let Service {
            metadata,
            spec,
            status,
        } = svc;
        let annotations = metadata.annotations.unwrap_or_default();
        let spec = spec.unwrap_or_default();
        let ask = ask(&annotations, &spec);
        let status_ips = status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        let condition = status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .find(|c| c.type_ == CONDITION_TYPE)
            .map(|c| SeenCondition {
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_transition_time: c.last_transition_time,
            });
        Self {
            namespace: metadata.namespace.unwrap_or_default(),
            name: metadata.name.unwrap_or_default(),
            uid: metadata.uid,
            generation: metadata.generation,
            resource_version: metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
            load_balancer: spec.type_.as_deref() == Some("LoadBalancer"),
            class: spec.load_balancer_class,
            deleting: metadata.deletion_timestamp.is_some(),
            labels: metadata.labels.unwrap_or_default(),
            ask,
            status_ips,
            allocated_pool: annotations.get(ALLOCATED_FROM_POOL).cloned(),
            condition,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> ServiceKey {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether this copy is older than `other` (both numbered; else neither is older).
    pub fn older_than(&self, other: &ServiceView) -> bool {
        matches!((self.resource_version, other.resource_version), (Some(a), Some(b)) if a < b)
    }

    /// A reference to the Service, for Events.
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Service".to_owned()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }
}

/// `namespace/name` of a Service.
pub fn key(svc: &Service) -> ServiceKey {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether this controller is responsible for the Service: type LoadBalancer, and the class the
/// configuration names (empty: Services without a class).
pub fn is_ours(svc: &ServiceView, class: &str) -> bool {
    let svc_class = svc.class.as_deref().unwrap_or_default();
    svc.load_balancer && svc_class == class && !svc.deleting
}

/// The annotation `name` (given with the ferrolb.io/ prefix) under any honoured prefix.
fn annotation<'a>(
    annotations: &'a BTreeMap<String, String>,
    name: &str,
) -> Option<(String, &'a str)> {
    let suffix = name.trim_start_matches("ferrolb.io/");
    PREFIXES.iter().find_map(|prefix| {
        // MetalLB spells the request annotation loadBalancerIPs.
        let names = if suffix == "load-balancer-ips" && *prefix != "ferrolb.io/" {
            "loadBalancerIPs"
        } else {
            suffix
        };
        let full = format!("{prefix}{names}");
        annotations
            .get(&full)
            .map(|v| (full, v.trim()))
            .filter(|(_, v)| !v.is_empty())
    })
}

/// What the Service's annotations and spec ask for.
fn ask(
    annotations: &BTreeMap<String, String>,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
) -> Result<Ask, RequestError> {
    let mut requested = Vec::new();
    if let Some((field, value)) = annotation(annotations, LOAD_BALANCER_IPS) {
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            requested.push(part.parse::<IpAddr>().map_err(|_| RequestError::BadIp {
                source_field: format!("annotation {field}"),
                value: part.to_owned(),
            })?);
        }
        if spec
            .load_balancer_ip
            .as_deref()
            .is_some_and(|ip| !ip.is_empty())
        {
            return Err(RequestError::BothRequests);
        }
    } else if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|ip| !ip.is_empty()) {
        requested.push(ip.parse::<IpAddr>().map_err(|_| RequestError::BadIp {
            source_field: "spec.loadBalancerIP".to_owned(),
            value: ip.to_owned(),
        })?);
    }
    let primary = match spec
        .ip_families
        .as_ref()
        .and_then(|f| f.first())
        .map(String::as_str)
    {
        Some("IPv6") => IpFamily::V6,
        _ => IpFamily::V4,
    };
    let families = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => FamilyPolicy::PreferDual(primary),
        Some("RequireDualStack") => FamilyPolicy::RequireDual(primary),
        _ => FamilyPolicy::Single(primary),
    };
    let backend_key = if spec.external_traffic_policy.as_deref() == Some("Local") {
        spec.selector
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        String::new()
    };
    let mut ports: Vec<Port> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| Port {
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
            port: p.port,
        })
        .collect();
    ports.sort();
    Ok(Ask {
        families,
        requested,
        pool: annotation(annotations, ADDRESS_POOL).map(|(_, v)| v.to_owned()),
        sharing_key: annotation(annotations, ALLOW_SHARED_IP).map(|(_, v)| v.to_owned()),
        backend_key,
        ports,
    })
}

/// The allocation request of a Service this controller handles.
pub fn request(
    svc: &ServiceView,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<ServiceRequest, RequestError> {
    let ask = svc.ask.clone()?;
    Ok(ServiceRequest {
        key: svc.key(),
        namespace: svc.namespace.clone(),
        namespace_labels: namespace_labels.clone(),
        labels: svc.labels.clone(),
        families: ask.families,
        requested: ask.requested,
        pool: ask.pool,
        sharing_key: ask.sharing_key,
        backend_key: ask.backend_key,
        ports: ask.ports,
    })
}

/// The addresses in the Service's status (what it holds as far as the cluster knows).
pub fn status_ips(svc: &ServiceView) -> Vec<IpAddr> {
    svc.status_ips.clone()
}

/// The pool annotation the controller wrote.
pub fn allocated_pool(svc: &ServiceView) -> Option<&str> {
    svc.allocated_pool.as_deref()
}

/// The status of the controller's condition on the Service, with its reason and message.
pub fn condition(svc: &ServiceView) -> Option<(&str, &str, &str)> {
    svc.condition
        .as_ref()
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use kube::api::ObjectMeta;

    fn service(annotations: &[(&str, &str)], spec: ServiceSpec) -> ServiceView {
        ServiceView::new(Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        })
    }

    fn lb() -> ServiceSpec {
        ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ports: Some(vec![ServicePort {
                port: 443,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }
    }

    #[test]
    fn the_view_keeps_what_the_controller_reads() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "generation": 3,
                "deletionTimestamp": "2026-11-27T00:00:00Z",
                "labels": {"team": "a"},
                "annotations": {
                    "ferrolb.io/ip-allocated-from-pool": "general",
                    "ferrolb.io/allow-shared-ip": "dns",
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb",
                     "ports": [{"port": 53, "protocol": "UDP"}]},
            "status": {
                "loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "x"}]},
                "conditions": [
                    {"type": "Other", "status": "True", "reason": "R", "message": "",
                     "lastTransitionTime": "2026-11-27T00:00:00Z"},
                    {"type": CONDITION_TYPE, "status": "True", "reason": "IPAllocated",
                     "message": "203.0.113.5 from pool general",
                     "lastTransitionTime": "2026-11-26T00:00:00Z"},
                ],
            },
        }))
        .unwrap();
        let v = ServiceView::new(svc);
        assert_eq!(v.key(), "shop/web");
        assert_eq!(v.uid.as_deref(), Some("u-1"));
        assert_eq!(v.generation, Some(3));
        assert!(v.deleting && v.load_balancer);
        assert_eq!(v.class.as_deref(), Some("example.com/lb"));
        assert!(!is_ours(&v, "example.com/lb"), "being deleted");
        assert_eq!(v.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            status_ips(&v),
            vec!["203.0.113.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(allocated_pool(&v), Some("general"));
        assert_eq!(
            condition(&v),
            Some(("True", "IPAllocated", "203.0.113.5 from pool general"))
        );
        let ask = v.ask.as_ref().unwrap();
        assert_eq!(ask.sharing_key.as_deref(), Some("dns"));
        assert_eq!(
            ask.ports,
            vec![Port {
                protocol: "UDP".into(),
                port: 53
            }]
        );
        let r = v.object_ref();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.namespace.as_deref()),
            (Some("Service"), Some("web"), Some("shop"))
        );
    }

    #[test]
    fn handles_load_balancers_of_its_class_only() {
        assert!(is_ours(&service(&[], lb()), ""));
        let mut other = lb();
        other.load_balancer_class = Some("example.com/other".into());
        assert!(!is_ours(&service(&[], other.clone()), ""));
        assert!(is_ours(&service(&[], other), "example.com/other"));
        let mut cluster_ip = lb();
        cluster_ip.type_ = Some("ClusterIP".into());
        assert!(!is_ours(&service(&[], cluster_ip), ""));
    }

    #[test]
    fn reads_ferrolb_and_metallb_annotations() {
        let ns = BTreeMap::new();
        let r = request(
            &service(
                &[
                    ("metallb.io/loadBalancerIPs", "203.0.113.5, 2001:db8::5"),
                    ("metallb.universe.tf/address-pool", "old"),
                    ("metallb.io/address-pool", "new"),
                    ("ferrolb.io/allow-shared-ip", "dns"),
                ],
                lb(),
            ),
            &ns,
        )
        .unwrap();
        assert_eq!(r.key, "shop/web");
        assert_eq!(r.requested.len(), 2);
        assert_eq!(
            r.pool.as_deref(),
            Some("new"),
            "metallb.io/ wins over the deprecated prefix"
        );
        assert_eq!(r.sharing_key.as_deref(), Some("dns"));
        let r = request(
            &service(
                &[
                    ("ferrolb.io/address-pool", "a"),
                    ("metallb.io/address-pool", "b"),
                ],
                lb(),
            ),
            &ns,
        )
        .unwrap();
        assert_eq!(r.pool.as_deref(), Some("a"), "ferrolb.io/ wins");
    }

    #[test]
    fn bad_requests_are_named() {
        let ns = BTreeMap::new();
        let err = request(
            &service(&[("ferrolb.io/load-balancer-ips", "203.0.113.300")], lb()),
            &ns,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "annotation ferrolb.io/load-balancer-ips: \"203.0.113.300\" is not an IP address"
        );
        let mut spec = lb();
        spec.load_balancer_ip = Some("203.0.113.9".into());
        assert_eq!(
            request(
                &service(&[("ferrolb.io/load-balancer-ips", "203.0.113.5")], spec),
                &ns
            ),
            Err(RequestError::BothRequests)
        );
    }

    #[test]
    fn families_backends_and_ports() {
        let ns = BTreeMap::new();
        let mut spec = lb();
        spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        spec.ip_family_policy = Some("RequireDualStack".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.selector = Some(
            [
                ("app".to_owned(), "web".to_owned()),
                ("tier".to_owned(), "fe".to_owned()),
            ]
            .into(),
        );
        let r = request(&service(&[], spec), &ns).unwrap();
        assert_eq!(r.families, FamilyPolicy::RequireDual(IpFamily::V6));
        assert_eq!(r.backend_key, "app=web,tier=fe");
        assert_eq!(
            r.ports,
            vec![Port {
                protocol: "TCP".into(),
                port: 443
            }]
        );
        let r = request(&service(&[], lb()), &ns).unwrap();
        assert_eq!(r.families, FamilyPolicy::Single(IpFamily::V4));
        assert_eq!(r.backend_key, "");
    }
}
