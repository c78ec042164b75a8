//! The operator's own install: its ServiceAccount, least-privilege RBAC and leader-elected
//! Deployment. Plain manifests (`config/operator/`) and, later, the OLM bundle are generated from
//! these functions.
//!
//! The operator never holds `escalate` and no wildcard: it may `bind` only the two shipped
//! operand cluster roles, and it holds itself the few permissions its namespaced Roles grant
//! (Leases, reading pods, the speakers' BGPSessions, the BGP password Secrets), which the API
//! server requires of whoever creates such a Role.

use std::collections::BTreeMap;

use ferrolb_api::wiring::{env, ports};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, PodAffinityTerm, PodAntiAffinity, PodSpec,
    PodTemplateSpec, Probe, ServiceAccount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

use super::rbac::{CONTROLLER_ROLE, SPEAKER_ROLE, bgp_session_rules, rule};
use super::workloads::{
    field_env, http_probe, resources_or, restricted_container, restricted_pod, value_env,
};
use super::{Settings, install_labels};
use crate::webhook;

/// Namespace of the operator (the operands run in `spec.namespace`, by default the same).
pub const OPERATOR_NAMESPACE: &str = "ferrolb-system";
/// Name of the operator's Deployment, ServiceAccount, roles and Lease.
pub const OPERATOR: &str = "ferrolb-operator";
/// Port of the operator's /healthz, /readyz and /metrics.
pub const OPERATOR_HEALTH_PORT: i32 = 8080;

fn labels(settings: &Settings) -> BTreeMap<String, String> {
    install_labels(settings, "operator")
}

fn meta(settings: &Settings, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(OPERATOR.to_owned()),
        namespace: namespaced.then(|| OPERATOR_NAMESPACE.to_owned()),
        labels: Some(labels(settings)),
        ..ObjectMeta::default()
    }
}

/// The operator's namespace, labelled for Pod Security Admission so that the speakers may run
/// there too (the default `spec.namespace`). Not labelled as managed by the operator: it is the
/// install's, and the operator never deletes it.
pub fn operator_namespace(settings: &Settings) -> k8s_openapi::api::core::v1::Namespace {
    let mut labels = install_labels(settings, "operator");
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "privileged".to_owned(),
        );
    }
    k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some(OPERATOR_NAMESPACE.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Default::default()
    }
}

/// The operator's cluster role.
pub fn operator_cluster_role(settings: &Settings) -> ClusterRole {
    let manage = ["get", "list", "watch", "create", "patch", "delete"];
    let mut bind = rule(&["rbac.authorization.k8s.io"], &["clusterroles"], &["bind"]);
    // Read (by name, also in list and watch with a name field selector) and patched: its own
    // webhook configuration only.
    let mut own_webhook = rule(
        &["admissionregistration.k8s.io"],
        &["validatingwebhookconfigurations"],
        &["get", "list", "watch", "patch"],
    );
    own_webhook.resource_names = Some(vec![webhook::WEBHOOK_CONFIGURATION.to_owned()]);
    bind.resource_names = Some(vec![CONTROLLER_ROLE.to_owned(), SPEAKER_ROLE.to_owned()]);
    let [bgp_sessions, bgp_session_status] = bgp_session_rules();
    ClusterRole {
        metadata: meta(settings, false),
        rules: Some(vec![
            rule(
                &["ferrolb.io"],
                &["loadbalancerconfigs"],
                &["get", "list", "watch", "patch"],
            ),
            rule(&["ferrolb.io"], &["loadbalancerconfigs/status"], &["patch"]),
            // Owner references that block the config's deletion until the operands are gone.
            rule(
                &["ferrolb.io"],
                &["loadbalancerconfigs/finalizers"],
                &["update"],
            ),
            rule(
                &[""],
                &["namespaces", "serviceaccounts", "secrets"],
                &manage,
            ),
            rule(&["apps"], &["deployments", "daemonsets"], &manage),
            rule(
                &["rbac.authorization.k8s.io"],
                &["roles", "rolebindings", "clusterrolebindings"],
                &manage,
            ),
            bind,
            // Granted to the operands by the Roles the operator creates, so it holds them too.
            rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["create", "get", "update"],
            ),
            rule(&[""], &["pods"], &["list", "watch"]),
            bgp_sessions,
            bgp_session_status,
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            // The webhook: node labels for its warnings, and the caBundle it injects into its
            // own configuration only.
            rule(&[""], &["nodes"], &["list", "watch"]),
            own_webhook,
        ]),
        ..ClusterRole::default()
    }
}

/// The operator's ServiceAccount, cluster role binding, and its leader-election Role and
/// RoleBinding.
pub fn operator_rbac(
    settings: &Settings,
) -> (
    ServiceAccount,
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
) {
    let subject = vec![Subject {
        kind: "ServiceAccount".to_owned(),
        name: OPERATOR.to_owned(),
        namespace: Some(OPERATOR_NAMESPACE.to_owned()),
        ..Subject::default()
    }];
    let mut own_lease = rule(&["coordination.k8s.io"], &["leases"], &["get", "update"]);
    own_lease.resource_names = Some(vec![OPERATOR.to_owned()]);
    // The webhook's certificate Secret, rewritten under its resourceVersion by the leader.
    let mut own_certificate = rule(&[""], &["secrets"], &["update"]);
    own_certificate.resource_names = Some(vec![webhook::certs::SECRET.to_owned()]);
    (
        ServiceAccount {
            metadata: meta(settings, true),
            ..ServiceAccount::default()
        },
        operator_cluster_role(settings),
        ClusterRoleBinding {
            metadata: meta(settings, false),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "ClusterRole".to_owned(),
                name: OPERATOR.to_owned(),
            },
            subjects: Some(subject.clone()),
        },
        Role {
            metadata: meta(settings, true),
            rules: Some(vec![
                rule(&["coordination.k8s.io"], &["leases"], &["create"]),
                own_lease,
                own_certificate,
            ]),
        },
        RoleBinding {
            metadata: meta(settings, true),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "Role".to_owned(),
                name: OPERATOR.to_owned(),
            },
            subjects: Some(subject),
        },
    )
}

/// The labels that select the operator's pods (Deployment, webhook Service, disruption budget).
pub fn operator_selector() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "ferrolb".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "operator".to_owned(),
        ),
    ])
}

/// The operator Deployment: two replicas, one Lease holder reconciling, every one serving the
/// admission webhook, preferably on two nodes; non-root, read-only, no capabilities. The
/// operand image comes from `FERROLB_IMAGE`.
pub fn operator_deployment(settings: &Settings) -> Deployment {
    let selector = operator_selector();
    let container = Container {
        name: "operator".to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec!["ferrolb-operator".to_owned()]),
        args: Some(vec![
            "run".to_owned(),
            format!("--health-addr=0.0.0.0:{OPERATOR_HEALTH_PORT}"),
            format!("--webhook-addr=0.0.0.0:{}", webhook::PORT),
        ]),
        env: Some(vec![
            field_env(env::POD_NAME, "metadata.name"),
            field_env(env::POD_NAMESPACE, "metadata.namespace"),
            value_env(env::IMAGE, &settings.image),
            value_env(env::LOG_FORMAT, "json"),
        ] as Vec<EnvVar>),
        ports: Some(vec![
            ContainerPort {
                name: Some(ports::MONITORING_NAME.to_owned()),
                container_port: OPERATOR_HEALTH_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(webhook::PORT_NAME.to_owned()),
                container_port: webhook::PORT,
                ..ContainerPort::default()
            },
        ]),
        // Out of the webhook's endpoints at the first failed probe: a stopping replica drains
        // for 5 s, longer than a probe period and the endpoint's propagation.
        readiness_probe: Some(Probe {
            failure_threshold: Some(1),
            ..http_probe("/readyz", 2)
        }),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(resources_or(None, "10m", "24Mi", "128Mi")),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    Deployment {
        metadata: meta(settings, true),
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(settings)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(OPERATOR.to_owned()),
                    // Longer than the webhook's drain (5 s) plus closing its connections.
                    termination_grace_period_seconds: Some(10),
                    affinity: Some(spread_over_nodes(selector.clone())),
                    security_context: Some(restricted_pod()),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Prefer two replicas on two nodes, so that losing one node leaves a webhook replica.
fn spread_over_nodes(selector: BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}
