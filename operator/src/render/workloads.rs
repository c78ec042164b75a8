//! The operands' namespace and workloads. Every knob of `spec.controller` and `spec.speaker`
//! lands here; `spec.loadBalancerClass` and the pools and advertisements do not: both binaries
//! read them from the LoadBalancerConfig itself, so changing them restarts nothing.

use std::collections::BTreeMap;

use ferrolb_api::LoadBalancerConfigSpec;
use ferrolb_api::v1alpha1::Placement;
use ferrolb_api::wiring::{env, flags, names, ports};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    Namespace, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Toleration, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::{Component, Settings, labels, operand_namespace, selector_labels};

/// Port of the controller's /healthz, /readyz and /metrics.
pub const CONTROLLER_HEALTH_PORT: i32 = ports::CONTROLLER_HEALTH as i32;
/// Port of the speaker's /healthz, /readyz and /metrics (host network: chosen not to clash with
/// the kubelet's or MetalLB's).
pub const SPEAKER_HEALTH_PORT: i32 = ports::SPEAKER_HEALTH as i32;
/// UDP port of the speakers' liveness messages, the same on every node.
pub const MEMBERLIST_PORT: i32 = ports::MEMBERSHIP as i32;
/// The Secret holding the speakers' liveness key, and its key.
pub const MEMBERLIST_SECRET: (&str, &str) =
    (names::MEMBERLIST_SECRET, names::MEMBERLIST_SECRET_KEY);
/// Where the speaker reads that key.
pub const MEMBERLIST_MOUNT: &str = names::MEMBERLIST_MOUNT;
/// The non-root user of the controller (the image's `USER`).
pub const NONROOT: i64 = 65532;

/// The operands' namespace, labelled so Pod Security Admission admits the speaker (host
/// network, `NET_RAW`).
pub fn namespace(spec: &LoadBalancerConfigSpec, settings: &Settings) -> Namespace {
    let mut labels = labels(settings, None);
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "privileged".to_owned(),
        );
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(operand_namespace(spec).to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// A container with nothing it does not need: no privilege escalation, a read-only root
/// filesystem, every capability dropped (the `restricted` Pod Security level).
pub(super) fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// A pod that runs as the image's non-root user (and group: CRI would give it gid 0), with the
/// runtime's default seccomp profile.
pub(super) fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        run_as_group: Some(NONROOT),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

pub(super) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub(super) fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn log_env(spec: &LoadBalancerConfigSpec) -> Vec<EnvVar> {
    let level = if spec.log_level.is_empty() {
        "info"
    } else {
        &spec.log_level
    };
    vec![
        value_env(env::LOG_LEVEL, level),
        value_env(env::LOG_FORMAT, "json"),
    ]
}

pub(super) fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(ports::MONITORING_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

fn resources(placement: &Placement, cpu: &str, memory: &str, limit: &str) -> ResourceRequirements {
    resources_or(placement.resources.clone(), cpu, memory, limit)
}

/// `given`, or requests of `cpu` and `memory` and a memory limit of `limit`.
pub(super) fn resources_or(
    given: Option<ResourceRequirements>,
    cpu: &str,
    memory: &str,
    limit: &str,
) -> ResourceRequirements {
    given.unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    })
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn template(
    settings: &Settings,
    component: Component,
    pod: PodSpec,
) -> (LabelSelector, PodTemplateSpec) {
    let selector = LabelSelector {
        match_labels: Some(selector_labels(component)),
        ..LabelSelector::default()
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(settings, Some(component))),
            ..ObjectMeta::default()
        }),
        spec: Some(pod),
    };
    (selector, template)
}

fn workload_meta(
    spec: &LoadBalancerConfigSpec,
    settings: &Settings,
    component: Component,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(component.object_name().to_owned()),
        namespace: Some(operand_namespace(spec).to_owned()),
        labels: Some(labels(settings, Some(component))),
        ..ObjectMeta::default()
    }
}

/// The controller: `spec.controller.replicas` replicas (one leader, the others hot standbys),
/// spread over nodes unless the spec gives an affinity, non-root, read-only, no capabilities.
pub fn controller_deployment(spec: &LoadBalancerConfigSpec, settings: &Settings) -> Deployment {
    let component = Component::Controller;
    let placement = &spec.controller.placement;
    let spread = Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(component)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    };
    let mut env = vec![
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
    ];
    env.extend(log_env(spec));
    let container = Container {
        name: component.name().to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec!["ferrolb-controller".to_owned()]),
        args: Some(vec![format!(
            "--{}=0.0.0.0:{CONTROLLER_HEALTH_PORT}",
            flags::HEALTH_ADDR
        )]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(ports::MONITORING_NAME.to_owned()),
            container_port: CONTROLLER_HEALTH_PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", 2)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(resources(placement, "10m", "32Mi", "128Mi")),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: Some(component.object_name().to_owned()),
        termination_grace_period_seconds: Some(10),
        security_context: Some(restricted_pod()),
        affinity: Some(placement.affinity.clone().unwrap_or(spread)),
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: non_empty(placement.tolerations.clone()),
        priority_class_name: (!placement.priority_class_name.is_empty())
            .then(|| placement.priority_class_name.clone()),
        containers: vec![container],
        ..PodSpec::default()
    };
    let (selector, template) = template(settings, component, pod);
    Deployment {
        metadata: workload_meta(spec, settings, component),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.controller.replicas),
            selector,
            // One at a time, never more than asked for: a standby keeps running while the other
            // replica is replaced.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Tolerations every speaker has, so that nodes the cluster marks as not ready for ordinary
/// pods still announce (control-plane nodes, nodes whose network is being set up).
fn speaker_tolerations(extra: &[Toleration]) -> Vec<Toleration> {
    let exists = |key: &str| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some("NoSchedule".to_owned()),
        ..Toleration::default()
    };
    let mut all = vec![
        exists("node-role.kubernetes.io/control-plane"),
        exists("node.kubernetes.io/network-unavailable"),
    ];
    for t in extra {
        if !all.contains(t) {
            all.push(t.clone());
        }
    }
    all
}

/// The speaker: one per node on the host network, with every capability dropped but `NET_RAW`
/// (ARP/NDP packet sockets); rolled one node at a time.
pub fn speaker_daemonset(spec: &LoadBalancerConfigSpec, settings: &Settings) -> DaemonSet {
    let component = Component::Speaker;
    let placement = &spec.speaker.placement;
    let mut args = vec![
        format!("--{}=0.0.0.0:{SPEAKER_HEALTH_PORT}", flags::HEALTH_ADDR),
        format!("--{}={MEMBERLIST_PORT}", flags::MEMBERLIST_PORT),
    ];
    args.extend(
        spec.speaker
            .exclude_interfaces
            .iter()
            .map(|re| format!("--{}={re}", flags::EXCLUDE_INTERFACE)),
    );
    // The pod's name and UID: the ownerReference on its BGPSessions, so they go with the pod.
    let mut env = vec![
        field_env(env::NODE_NAME, "spec.nodeName"),
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        field_env(env::POD_UID, "metadata.uid"),
    ];
    env.extend(log_env(spec));
    env.push(value_env(
        env::MEMBERLIST_KEY_FILE,
        &format!("{MEMBERLIST_MOUNT}/{}", MEMBERLIST_SECRET.1),
    ));
    let container = Container {
        name: component.name().to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec!["ferrolb-speaker".to_owned()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some(ports::MONITORING_NAME.to_owned()),
                container_port: SPEAKER_HEALTH_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(ports::MEMBERSHIP_NAME.to_owned()),
                container_port: MEMBERLIST_PORT,
                protocol: Some("UDP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 2)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(resources(placement, "10m", "16Mi", "64Mi")),
        security_context: Some(SecurityContext {
            // Root, but with every capability dropped except raw sockets for ARP/NDP.
            run_as_user: Some(0),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(vec!["NET_RAW".to_owned()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "memberlist".to_owned(),
            mount_path: MEMBERLIST_MOUNT.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: Some(component.object_name().to_owned()),
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".to_owned()),
        termination_grace_period_seconds: Some(5),
        affinity: placement.affinity.clone(),
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: Some(speaker_tolerations(&placement.tolerations)),
        priority_class_name: (!placement.priority_class_name.is_empty())
            .then(|| placement.priority_class_name.clone()),
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: "memberlist".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(MEMBERLIST_SECRET.0.to_owned()),
                optional: Some(true),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    let (selector, template) = template(settings, component, pod);
    DaemonSet {
        metadata: workload_meta(spec, settings, component),
        spec: Some(DaemonSetSpec {
            selector,
            template,
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}
