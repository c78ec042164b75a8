//! Identities and least-privilege permissions of the operands. The cluster roles are fixed (they
//! ship with the install, so OLM can install them and the operator needs no `escalate`: it only
//! binds these names); the namespaced roles and every binding follow the operand namespace.

use std::collections::BTreeSet;

use ferrolb_api::LoadBalancerConfigSpec;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;

use super::{Component, Settings, labels, operand_namespace};

/// The controller's cluster role: read Services, Namespaces and the LoadBalancerConfig; write
/// only Service status, the one annotation it owns, pool usage and Events. No wildcards, no
/// Secrets.
pub const CONTROLLER_ROLE: &str = "ferrolb-controller";
/// The speaker's cluster role: read Services, EndpointSlices, Nodes and the
/// LoadBalancerConfig; write only its condition in Service status and Events.
pub const SPEAKER_ROLE: &str = "ferrolb-speaker";
/// The controller's Lease (leader election), the only one it may update.
pub const CONTROLLER_LEASE: &str = "ferrolb-controller";

/// A rule granting `verbs` on `resources` of `groups`.
pub(super) fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// The operands' cluster roles, as shipped with the install.
pub fn cluster_roles(settings: &Settings) -> Vec<ClusterRole> {
    let role = |component: Component, rules: Vec<PolicyRule>| ClusterRole {
        metadata: ObjectMeta {
            name: Some(component.object_name().to_owned()),
            labels: Some(labels(settings, Some(component))),
            ..ObjectMeta::default()
        },
        rules: Some(rules),
        ..ClusterRole::default()
    };
    vec![
        role(
            Component::Controller,
            vec![
                // patch: removing the ferrolb.io/ip-allocated-from-pool annotation (it is set
                // with the status).
                rule(&[""], &["services"], &["get", "list", "watch", "patch"]),
                rule(&[""], &["services/status"], &["patch"]),
                rule(&[""], &["namespaces"], &["list", "watch"]),
                rule(
                    &["ferrolb.io"],
                    &["loadbalancerconfigs"],
                    &["get", "list", "watch"],
                ),
                rule(&["ferrolb.io"], &["loadbalancerconfigs/status"], &["patch"]),
                rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            ],
        ),
        role(
            Component::Speaker,
            vec![
                rule(&[""], &["services", "nodes"], &["list", "watch"]),
                rule(&[""], &["services/status"], &["patch"]),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
                rule(
                    &["ferrolb.io"],
                    &["loadbalancerconfigs"],
                    &["list", "watch"],
                ),
                rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            ],
        ),
    ]
}

/// What the speaker may do with BGPSessions (in the operand namespace: granted by its Role).
pub(super) fn bgp_session_rules() -> [PolicyRule; 2] {
    [
        rule(
            &["ferrolb.io"],
            &["bgpsessions"],
            &["get", "list", "create", "patch", "delete"],
        ),
        rule(&["ferrolb.io"], &["bgpsessions/status"], &["patch"]),
    ]
}

fn meta(
    spec: &LoadBalancerConfigSpec,
    settings: &Settings,
    component: Component,
    name: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(operand_namespace(spec).to_owned()),
        labels: Some(labels(settings, Some(component))),
        ..ObjectMeta::default()
    }
}

/// The ServiceAccounts of the controller and the speaker.
pub fn service_accounts(spec: &LoadBalancerConfigSpec, settings: &Settings) -> Vec<ServiceAccount> {
    [Component::Controller, Component::Speaker]
        .into_iter()
        .map(|c| ServiceAccount {
            metadata: meta(spec, settings, c, c.object_name()),
            ..ServiceAccount::default()
        })
        .collect()
}

fn subject(spec: &LoadBalancerConfigSpec, component: Component) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".to_owned(),
        name: component.object_name().to_owned(),
        namespace: Some(operand_namespace(spec).to_owned()),
        ..Subject::default()
    }]
}

fn cluster_binding(
    spec: &LoadBalancerConfigSpec,
    settings: &Settings,
    component: Component,
    role: &str,
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(component.object_name().to_owned()),
            labels: Some(labels(settings, Some(component))),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: role.to_owned(),
        },
        subjects: Some(subject(spec, component)),
    }
}

fn namespaced(
    spec: &LoadBalancerConfigSpec,
    settings: &Settings,
    component: Component,
    name: &str,
    rules: Vec<PolicyRule>,
) -> (Role, RoleBinding) {
    let role = Role {
        metadata: meta(spec, settings, component, name),
        rules: Some(rules),
    };
    let binding = RoleBinding {
        metadata: meta(spec, settings, component, name),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(subject(spec, component)),
    };
    (role, binding)
}

/// The controller's cluster role binding, and its leader-election Role and RoleBinding: it may
/// create Leases, and get and update only its own.
pub fn controller_bindings(
    spec: &LoadBalancerConfigSpec,
    settings: &Settings,
) -> (ClusterRoleBinding, Role, RoleBinding) {
    let mut own_lease = rule(&["coordination.k8s.io"], &["leases"], &["get", "update"]);
    own_lease.resource_names = Some(vec![CONTROLLER_LEASE.to_owned()]);
    let (role, binding) = namespaced(
        spec,
        settings,
        Component::Controller,
        "ferrolb-controller-leader-election",
        vec![
            rule(&["coordination.k8s.io"], &["leases"], &["create"]),
            own_lease,
        ],
    );
    (
        cluster_binding(spec, settings, Component::Controller, CONTROLLER_ROLE),
        role,
        binding,
    )
}

/// The speaker's cluster role binding, and the Role that lets it, in its namespace only: see
/// the speaker pods (which nodes run a speaker, and at which address its liveness messages
/// arrive); write the BGPSessions, one per node and peer, and their status (it creates its own
/// and deletes those of peers that are gone); and `get` the Secrets the config names as BGP
/// passwords: those names only, none when it names none.
pub fn speaker_bindings(
    spec: &LoadBalancerConfigSpec,
    settings: &Settings,
) -> (ClusterRoleBinding, Role, RoleBinding) {
    let mut rules = vec![rule(&[""], &["pods"], &["list", "watch"])];
    rules.extend(bgp_session_rules());
    let passwords: BTreeSet<&str> = spec
        .bgp_peers
        .iter()
        .filter_map(|p| Some(p.password_secret_ref.as_ref()?.name.as_str()))
        .collect();
    if !passwords.is_empty() {
        let mut read = rule(&[""], &["secrets"], &["get"]);
        read.resource_names = Some(passwords.into_iter().map(str::to_owned).collect());
        rules.push(read);
    }
    let (role, binding) = namespaced(
        spec,
        settings,
        Component::Speaker,
        "ferrolb-speaker-pods",
        rules,
    );
    (
        cluster_binding(spec, settings, Component::Speaker, SPEAKER_ROLE),
        role,
        binding,
    )
}
