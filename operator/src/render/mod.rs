//! The operand objects, built purely from the LoadBalancerConfig's spec, the operand image and
//! the operator's settings: no client, no I/O. The operator applies what these functions return;
//! the plain manifests under `config/` are generated from the same functions
//! (`ferrolb-manifestgen`), so nothing is described twice.
//!
//! Split by what an admin asks about: `rbac` (identities and permissions), `workloads` (the
//! namespace, the controller Deployment and the speaker DaemonSet).

pub mod bundle;
pub mod install;
mod rbac;
pub mod webhook;
mod workloads;

use std::collections::BTreeMap;

use ferrolb_api::LoadBalancerConfigSpec;
use ferrolb_api::v1alpha1::DEFAULT_NAMESPACE;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;

pub use rbac::{
    CONTROLLER_ROLE, SPEAKER_ROLE, cluster_roles, controller_bindings, service_accounts,
    speaker_bindings,
};
pub use workloads::{MEMBERLIST_SECRET, controller_deployment, namespace, speaker_daemonset};

/// What the operands are rendered from, besides the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The one image holding every FerroLB binary (`FERROLB_IMAGE`, or `RELATED_IMAGE_FERROLB`
    /// under OLM).
    pub image: String,
    /// The operand version, for the `app.kubernetes.io/version` label.
    pub version: String,
}

impl Settings {
    /// The settings of this build: the image tagged with the crate's version.
    pub fn of_this_build() -> Self {
        let version = format!("v{}", env!("CARGO_PKG_VERSION"));
        Self {
            image: format!("ghcr.io/ferrolb/ferrolb:{version}"),
            version,
        }
    }
}

/// The two operands, in the order of every per-operand list of [`Operands`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The controller Deployment.
    Controller = 0,
    /// The speaker DaemonSet.
    Speaker = 1,
}

impl Component {
    /// The `app.kubernetes.io/component` value, also the container's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Speaker => "speaker",
        }
    }

    /// The name of its objects (Deployment or DaemonSet, ServiceAccount, role and bindings).
    pub fn object_name(self) -> &'static str {
        match self {
            Self::Controller => "ferrolb-controller",
            Self::Speaker => "ferrolb-speaker",
        }
    }
}

/// Field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "ferrolb-operator";
/// Label selecting every object the operator renders (pruning uses it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", FIELD_MANAGER);

/// The namespace the operands run in.
pub fn operand_namespace(spec: &LoadBalancerConfigSpec) -> &str {
    if spec.namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        &spec.namespace
    }
}

/// Labels of every rendered object; `component` when it belongs to one operand.
pub fn labels(settings: &Settings, component: Option<Component>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "ferrolb".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "ferrolb".to_owned()),
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (
            "app.kubernetes.io/version".to_owned(),
            settings.version.clone(),
        ),
    ]);
    if let Some(c) = component {
        labels.insert(
            "app.kubernetes.io/component".to_owned(),
            c.name().to_owned(),
        );
    }
    labels
}

/// Labels of the operator's own install (no `managed-by` label: the operator must never prune
/// itself).
pub fn install_labels(settings: &Settings, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "ferrolb".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "ferrolb".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        (
            "app.kubernetes.io/version".to_owned(),
            settings.version.clone(),
        ),
    ])
}

/// The labels that select an operand's pods: stable across versions (a selector is immutable).
pub fn selector_labels(component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "ferrolb".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.name().to_owned(),
        ),
    ])
}

/// Every object the operator applies for `spec`, in the order it applies them (namespace and
/// identities before the workloads that use them); each list holds the controller's object,
/// then the speaker's ([`Component`] order). The cluster roles are not here: they ship
/// with the operator's install (plain manifests or the OLM bundle) and are only bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Operands {
    /// The operands' namespace, labelled for the speaker's privileges.
    pub namespace: Namespace,
    /// The controller's and the speaker's ServiceAccounts.
    pub service_accounts: Vec<ServiceAccount>,
    /// Bindings of the shipped cluster roles to those ServiceAccounts.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// The namespaced roles (the controller's leader election; the speaker's pods, BGPSessions
    /// and BGP password Secrets).
    pub roles: Vec<Role>,
    /// Their bindings.
    pub role_bindings: Vec<RoleBinding>,
    /// The controller Deployment.
    pub controller: Deployment,
    /// The speaker DaemonSet.
    pub speaker: DaemonSet,
}

/// Renders every operand for `spec`.
pub fn operands(spec: &LoadBalancerConfigSpec, settings: &Settings) -> Operands {
    let (controller_crb, controller_role, controller_rb) = controller_bindings(spec, settings);
    let (speaker_crb, speaker_role, speaker_rb) = speaker_bindings(spec, settings);
    Operands {
        namespace: namespace(spec, settings),
        service_accounts: service_accounts(spec, settings),
        cluster_role_bindings: vec![controller_crb, speaker_crb],
        roles: vec![controller_role, speaker_role],
        role_bindings: vec![controller_rb, speaker_rb],
        controller: controller_deployment(spec, settings),
        speaker: speaker_daemonset(spec, settings),
    }
}

/// The speakers' membership Secret holding `key` (hex), owned by `config`. Created by the
/// operator when missing, never logged; rewritten only by a key rotation ([`crate::rotation`]).
/// A rotation request already on the config counts as served by the fresh key.
pub fn membership_secret(
    config: &ferrolb_api::LoadBalancerConfig,
    namespace: &str,
    key: String,
) -> k8s_openapi::api::core::v1::Secret {
    use kube::{Resource, ResourceExt};
    let mut meta = kube::api::ObjectMeta {
        name: Some(MEMBERLIST_SECRET.0.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "ferrolb".to_owned()),
            (
                "app.kubernetes.io/component".to_owned(),
                "speaker".to_owned(),
            ),
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        ])),
        ..kube::api::ObjectMeta::default()
    };
    let request = config
        .annotations()
        .get(ferrolb_api::wiring::annotations::ROTATE_MEMBERSHIP_KEY);
    let annotations = crate::rotation::created_annotations(request.map(String::as_str));
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
    meta.owner_references = config.controller_owner_ref(&()).map(|o| vec![o]);
    k8s_openapi::api::core::v1::Secret {
        metadata: meta,
        string_data: Some(BTreeMap::from([(MEMBERLIST_SECRET.1.to_owned(), key)])),
        type_: Some("Opaque".to_owned()),
        ..k8s_openapi::api::core::v1::Secret::default()
    }
}

/// Why YAML could not be produced.
pub type YamlError = serde_saphyr::SerializeError;

/// `text` as YAML comment lines.
pub fn comment(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.is_empty() {
                "#\n".to_owned()
            } else {
                format!("# {line}\n")
            }
        })
        .collect()
}

/// One object as a YAML document (starting with `---`).
pub fn document<T: Serialize>(object: &T) -> Result<String, YamlError> {
    Ok(format!("---\n{}", serde_saphyr::to_string(object)?))
}

/// Objects as one YAML stream.
pub fn to_yaml<T: Serialize>(objects: &[T]) -> Result<String, YamlError> {
    objects.iter().map(document).collect()
}

#[cfg(test)]
mod tests;
