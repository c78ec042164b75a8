//! How a Kubernetes Service translates into an allocation request, and what the controller
//! writes back. Pure: no client.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_api::address::IpFamily;
use k8s_openapi::api::core::v1::Service;

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
        "InvalidRequest"
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
pub fn is_ours(svc: &Service, class: &str) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    let lb = spec.type_.as_deref() == Some("LoadBalancer");
    let svc_class = spec.load_balancer_class.as_deref().unwrap_or_default();
    lb && svc_class == class && svc.metadata.deletion_timestamp.is_none()
}

/// The annotation `name` (given with the ferrolb.io/ prefix) under any honoured prefix.
fn annotation<'a>(svc: &'a Service, name: &str) -> Option<(String, &'a str)> {
    let suffix = name.trim_start_matches("ferrolb.io/");
    let annotations = svc.metadata.annotations.as_ref()?;
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

/// The allocation request of a Service this controller handles.
pub fn request(
    svc: &Service,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<ServiceRequest, RequestError> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut requested = Vec::new();
    if let Some((field, value)) = annotation(svc, LOAD_BALANCER_IPS) {
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
    Ok(ServiceRequest {
        key: key(svc),
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        namespace_labels: namespace_labels.clone(),
        labels: svc.metadata.labels.clone().unwrap_or_default(),
        families,
        requested,
        pool: annotation(svc, ADDRESS_POOL).map(|(_, v)| v.to_owned()),
        sharing_key: annotation(svc, ALLOW_SHARED_IP).map(|(_, v)| v.to_owned()),
        backend_key,
        ports,
    })
}

/// The addresses in the Service's status (what it holds as far as the cluster knows).
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The pool annotation the controller wrote.
pub fn allocated_pool(svc: &Service) -> Option<&str> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(ALLOCATED_FROM_POOL)
        .map(String::as_str)
}

/// The status of the controller's condition on the Service, with its reason and message.
pub fn condition(svc: &Service) -> Option<(&str, &str, &str)> {
    svc.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION_TYPE)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use kube::api::ObjectMeta;

    fn service(annotations: &[(&str, &str)], spec: ServiceSpec) -> Service {
        Service {
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
        }
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
