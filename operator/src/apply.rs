//! Carries the rendered operands out: server-side apply under the field manager
//! `ferrolb-operator`, owner references to the LoadBalancerConfig on everything it may own,
//! pruning of what carries the operator's label but is no longer rendered, and deletion of all
//! of it on uninstall. The speakers' membership Secret is created once, and rewritten only by a
//! requested key rotation, one phase at a time ([`crate::rotation`] decides).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use ferrolb_api::LoadBalancerConfig;
use ferrolb_api::wiring::annotations::ROTATE_MEMBERSHIP_KEY;
use k8s_openapi::ByteString;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::render::{FIELD_MANAGER, MANAGED_BY, MEMBERLIST_SECRET, Operands};
use crate::rotation;

/// Why applying failed.
pub type Error = kube::Error;

/// The label selector of everything the operator renders.
pub fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

/// The controller owner reference to `config` (so that the garbage collector, too, removes the
/// operands when the config goes, and their events reach the operator's reconcile).
pub fn owner(config: &LoadBalancerConfig) -> Option<OwnerReference> {
    let mut owner = config.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

fn with_owner<K: Resource>(mut obj: K, owner: Option<&OwnerReference>) -> K {
    if let Some(owner) = owner {
        obj.meta_mut().owner_references = Some(vec![owner.clone()]);
    }
    obj
}

async fn apply_in<K>(client: &Client, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(
        client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
}

async fn apply_cluster<K>(client: &Client, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::all(client.clone());
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
}

/// What applying returned: the workloads as the API server holds them now (for the status).
#[derive(Debug)]
pub struct Applied {
    /// The controller Deployment.
    pub controller: Deployment,
    /// The speaker DaemonSet.
    pub speaker: DaemonSet,
    /// Where the membership key rotation stands.
    pub key_rotation: KeyRotation,
    /// Why Pod Security Admission refuses the speaker in its namespace ([`pod_security_problem`]).
    pub pod_security: Option<String>,
}

/// The prefix of the Pod Security Admission labels of a namespace.
const POD_SECURITY: &str = "pod-security.kubernetes.io/";

/// The Pod Security labels `wanted` sets that the live namespace holds with another value.
/// The operator's own always hold what it renders (a change by anyone else moves the field to
/// them), so these are someone else's choice, which the operator leaves alone (pure).
pub fn foreign_pod_security(
    live: Option<&Namespace>,
    wanted: &Namespace,
) -> std::collections::BTreeSet<String> {
    let Some(live) = live else {
        return Default::default();
    };
    wanted
        .labels()
        .iter()
        .filter(|(k, v)| {
            k.starts_with(POD_SECURITY) && live.labels().get(*k).is_some_and(|l| l != *v)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Why the namespace refuses the speaker, if it does: it enforces a Pod Security level other
/// than `privileged`, which the speaker needs (host network, root, `NET_RAW`). Names the
/// namespace, the level, who set it and what to do (pure).
pub fn pod_security_problem(namespace: &Namespace) -> Option<String> {
    let key = format!("{POD_SECURITY}enforce");
    let level = namespace.labels().get(&key)?;
    if level == "privileged" {
        return None;
    }
    let owner = namespace
        .managed_fields()
        .iter()
        .find(|m| {
            m.fields_v1.as_ref().is_some_and(|f| {
                f.0.pointer("/f:metadata/f:labels")
                    .and_then(|labels| labels.get(format!("f:{key}")))
                    .is_some()
            })
        })
        .and_then(|m| m.manager.clone());
    let by = owner.map(|m| format!(" (set by {m})")).unwrap_or_default();
    Some(format!(
        "namespace {} enforces the Pod Security level {level:?}{by}, which refuses the speaker \
         (host network, root, NET_RAW); the operator does not override a level someone else \
         set: label it {key}=privileged, or remove the label",
        namespace.name_any()
    ))
}

/// What the membership key rotation needs from the reconcile, and tells it back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRotation {
    /// When to reconcile again for the rotation's next phase (`None`: nothing is due).
    pub requeue: Option<Duration>,
    /// For the status: what a rotation under way is doing (`None`: none is).
    pub progress: Option<String>,
}

/// Applies every operand, in dependency order. The namespace is taken over only when the
/// operator created it or it does not exist: a namespace the admin made keeps its owner and
/// only gets the Pod Security labels, and is never deleted by the operator. A Pod Security
/// label someone else set to another value is left as it is ([`foreign_pod_security`]):
/// the operator does not override a level an admin chose, it says in `Applied::pod_security`
/// why the speaker cannot run. `membership_key` makes a random key (for a new membership
/// Secret, or a rotation); `key_rotation_step` is the time between two phases of a rotation.
pub async fn apply_all(
    client: &Client,
    config: &LoadBalancerConfig,
    ops: &Operands,
    membership_key: impl FnOnce() -> Option<String>,
    key_rotation_step: Duration,
) -> Result<Applied, Error> {
    let owner = owner(config);
    let owner = owner.as_ref();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_name = ops.namespace.name_any();
    let live = namespaces.get_opt(&ns_name).await?;
    let foreign = foreign_pod_security(live.as_ref(), &ops.namespace);
    let pod_security = live.as_ref().and_then(pod_security_problem);
    let mut namespace = ops.namespace.clone();
    namespace.labels_mut().retain(|k, _| !foreign.contains(k));
    match live {
        Some(existing) if !existing.labels().contains_key(MANAGED_BY.0) => {
            // Someone else's namespace: add only what the speaker needs.
            let labels: std::collections::BTreeMap<String, String> = namespace
                .labels()
                .iter()
                .filter(|(k, _)| k.starts_with(POD_SECURITY))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let patch = serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns_name, "labels": labels},
            });
            namespaces
                .patch(
                    &ns_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await?;
        }
        _ => {
            apply_cluster(client, &namespace).await?;
        }
    }
    for sa in &ops.service_accounts {
        apply_in(client, &with_owner(sa.clone(), owner)).await?;
    }
    for crb in &ops.cluster_role_bindings {
        apply_cluster(client, &with_owner(crb.clone(), owner)).await?;
    }
    for role in &ops.roles {
        apply_in(client, &with_owner(role.clone(), owner)).await?;
    }
    for rb in &ops.role_bindings {
        apply_in(client, &with_owner(rb.clone(), owner)).await?;
    }
    let key_rotation =
        ensure_membership_secret(client, config, &ns_name, membership_key, key_rotation_step)
            .await?;
    let controller = apply_in(client, &with_owner(ops.controller.clone(), owner)).await?;
    let speaker = apply_in(client, &with_owner(ops.speaker.clone(), owner)).await?;
    Ok(Applied {
        controller,
        speaker,
        key_rotation,
        pod_security,
    })
}

/// Creates the speakers' membership Secret with a fresh random key when there is none, and
/// carries out the key rotation the config requests ([`rotation::decide`]). Otherwise an
/// existing Secret is never rewritten (its key would change under running speakers). Deleting
/// it makes the operator create a new key: the blunt way, which may fail over (see
/// [`rotation`]).
async fn ensure_membership_secret(
    client: &Client,
    config: &LoadBalancerConfig,
    namespace: &str,
    key: impl FnOnce() -> Option<String>,
    step: Duration,
) -> Result<KeyRotation, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(existing) = api.get_opt(MEMBERLIST_SECRET.0).await? {
        return rotate_membership_key(&api, config, existing, key, step).await;
    }
    let Some(key) = key() else {
        tracing::error!(
            namespace,
            "no random key could be made (the OS has no entropy source?); the speakers fall back to Node readiness until one can"
        );
        return Ok(KeyRotation::default());
    };
    let secret = crate::render::membership_secret(config, namespace, key);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(
                namespace,
                secret = MEMBERLIST_SECRET.0,
                "created the speakers' membership key"
            );
            Ok(KeyRotation::default())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(KeyRotation::default()),
        Err(e) => Err(e),
    }
}

/// One step of the key rotation on the existing Secret: decided by [`rotation::decide`],
/// patched with the read `resourceVersion` (a concurrent change fails the write, and the
/// reconcile retries from what the cluster then holds). Never logs a key.
async fn rotate_membership_key(
    api: &Api<Secret>,
    config: &LoadBalancerConfig,
    existing: Secret,
    key: impl FnOnce() -> Option<String>,
    step: Duration,
) -> Result<KeyRotation, Error> {
    let current = rotation::SecretState {
        data: existing
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        annotations: existing
            .annotations()
            .iter()
            .filter(|(k, _)| rotation::ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let request = config
        .annotations()
        .get(ROTATE_MEMBERSHIP_KEY)
        .map(String::as_str);
    let decision = rotation::decide(
        rotation::Input {
            request,
            secret: &current,
            now: Timestamp::now(),
            step,
        },
        || key().map(String::into_bytes),
    );
    let span = tracing::info_span!(
        "membership_key_rotation",
        secret = MEMBERLIST_SECRET.0,
        request = current
            .annotations
            .get(rotation::REQUEST)
            .map(String::as_str)
            .or(request),
    );
    carry_out(api, existing, &current, decision, step)
        .instrument(span)
        .await
}

/// Writes what [`rotation::decide`] decided, and says what it did.
async fn carry_out(
    api: &Api<Secret>,
    existing: Secret,
    current: &rotation::SecretState,
    decision: rotation::Decision,
    step: Duration,
) -> Result<KeyRotation, Error> {
    match decision {
        rotation::Decision::Idle => Ok(KeyRotation::default()),
        rotation::Decision::Wait { phase, due } => {
            tracing::debug!(
                phase = phase.name(),
                due_in_s = due.as_secs(),
                "waiting for the next phase"
            );
            Ok(KeyRotation {
                requeue: Some(due),
                progress: rotation::describe(current, step),
            })
        }
        rotation::Decision::NoKey => {
            tracing::error!(
                "a key rotation is requested but no random key could be made (the OS has no entropy source?); retrying"
            );
            Ok(KeyRotation {
                requeue: Some(Duration::from_secs(30)),
                progress: None,
            })
        }
        rotation::Decision::Write {
            secret,
            transition,
            requeue,
        } => {
            // A merge patch carrying the read resourceVersion: only the rotation's entries and
            // annotations change, and a concurrent change makes it fail with a conflict.
            let mut data = serde_json::Map::new();
            for name in existing.data.iter().flatten().map(|(k, _)| k) {
                if !secret.data.contains_key(name) {
                    data.insert(name.clone(), serde_json::Value::Null);
                }
            }
            for (name, value) in &secret.data {
                data.insert(
                    name.clone(),
                    serde_json::to_value(ByteString(value.clone()))
                        .map_err(kube::Error::SerdeError)?,
                );
            }
            let annotations: serde_json::Map<String, serde_json::Value> = rotation::ANNOTATIONS
                .iter()
                .map(|name| {
                    let value = secret.annotations.get(*name).cloned();
                    (
                        (*name).to_owned(),
                        value.map_or(serde_json::Value::Null, Into::into),
                    )
                })
                .collect();
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": existing.metadata.resource_version,
                    "annotations": annotations,
                },
                "data": data,
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            match api
                .patch(MEMBERLIST_SECRET.0, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // Someone changed the Secret since it was read: decide again from what it
                    // holds now (not an operand failure, so nothing is Degraded for it).
                    tracing::info!(
                        "the membership Secret changed under the rotation; deciding again"
                    );
                    return Ok(KeyRotation {
                        requeue: Some(Duration::from_secs(1)),
                        progress: rotation::describe(current, step),
                    });
                }
                Err(e) => return Err(e),
            }
            let phase = secret.phase();
            tracing::info!(
                phase = phase.name(),
                next_phase_in_s = requeue.map(|d| d.as_secs()),
                "membership key rotation: {}",
                transition.describe()
            );
            Ok(KeyRotation {
                requeue,
                progress: rotation::describe(&secret, step),
            })
        }
    }
}

async fn prune_kind<K>(
    client: &Client,
    keep: &BTreeSet<(String, String)>,
    scoped: impl Fn(Option<&str>) -> Api<K>,
) -> Result<usize, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mut removed = 0;
    for obj in api
        .list(&ListParams::default().labels(&managed_selector()))
        .await?
    {
        let id = (obj.namespace().unwrap_or_default(), obj.name_any());
        if keep.contains(&id) || obj.meta().deletion_timestamp.is_some() {
            continue;
        }
        match scoped(obj.namespace().as_deref())
            .delete(&obj.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {
                removed += 1;
                tracing::info!(kind = K::kind(&()).as_ref(), namespace = %id.0, name = %id.1, "pruned");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn ids<'a, K: Resource + 'a>(objs: impl IntoIterator<Item = &'a K>) -> BTreeSet<(String, String)> {
    objs.into_iter()
        .map(|o| {
            (
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Deletes every object with the operator's label that `ops` does not hold (all of them when
/// `ops` is `None`: the uninstall). Returns how many it deleted.
pub async fn prune(client: &Client, ops: Option<&Operands>) -> Result<usize, Error> {
    let keep = |f: &dyn Fn(&Operands) -> BTreeSet<(String, String)>| ops.map(f).unwrap_or_default();
    let ns = |n: Option<&str>| n.unwrap_or_default().to_owned();
    let c = client.clone();
    let mut removed = 0;
    removed += prune_kind::<DaemonSet>(client, &keep(&|o| ids([&o.speaker])), |n| {
        Api::namespaced(c.clone(), &ns(n))
    })
    .await?;
    removed += prune_kind::<Deployment>(client, &keep(&|o| ids([&o.controller])), |n| {
        Api::namespaced(c.clone(), &ns(n))
    })
    .await?;
    removed += prune_kind::<RoleBinding>(client, &keep(&|o| ids(&o.role_bindings)), |n| {
        Api::namespaced(c.clone(), &ns(n))
    })
    .await?;
    removed += prune_kind::<Role>(client, &keep(&|o| ids(&o.roles)), |n| {
        Api::namespaced(c.clone(), &ns(n))
    })
    .await?;
    removed +=
        prune_kind::<ClusterRoleBinding>(client, &keep(&|o| ids(&o.cluster_role_bindings)), |_| {
            Api::all(c.clone())
        })
        .await?;
    removed += prune_kind::<ServiceAccount>(client, &keep(&|o| ids(&o.service_accounts)), |n| {
        Api::namespaced(c.clone(), &ns(n))
    })
    .await?;
    removed += prune_kind::<Secret>(
        client,
        &keep(&|o| BTreeSet::from([(o.namespace.name_any(), MEMBERLIST_SECRET.0.to_owned())])),
        |n| Api::namespaced(c.clone(), &ns(n)),
    )
    .await?;
    removed += prune_kind::<Namespace>(client, &keep(&|o| ids([&o.namespace])), |_| {
        Api::all(c.clone())
    })
    .await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use kube::api::ObjectMeta;

    use super::{foreign_pod_security, pod_security_problem};

    fn namespace(labels: &[(&str, &str)], managers: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("ferrolb-system".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                managed_fields: Some(
                    managers
                        .iter()
                        .map(|(manager, label)| ManagedFieldsEntry {
                            manager: Some((*manager).to_owned()),
                            fields_v1: Some(FieldsV1(serde_json::json!({
                                "f:metadata": {"f:labels": {format!("f:{label}"): {}}}
                            }))),
                            ..ManagedFieldsEntry::default()
                        })
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
    const WARN: &str = "pod-security.kubernetes.io/warn";

    #[test]
    fn only_labels_someone_set_to_another_value_are_foreign() {
        let wanted = namespace(
            &[
                (ENFORCE, "privileged"),
                (WARN, "privileged"),
                ("app", "ferrolb"),
            ],
            &[],
        );
        assert!(
            foreign_pod_security(None, &wanted).is_empty(),
            "no namespace yet"
        );
        let same = namespace(&[(ENFORCE, "privileged")], &[]);
        assert!(foreign_pod_security(Some(&same), &wanted).is_empty());
        let restricted = namespace(&[(ENFORCE, "restricted"), ("app", "other")], &[]);
        assert_eq!(
            foreign_pod_security(Some(&restricted), &wanted)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![ENFORCE.to_owned()],
            "only Pod Security labels are left alone"
        );
    }

    #[test]
    fn a_level_other_than_privileged_refuses_the_speaker_naming_who_set_it() {
        assert_eq!(pod_security_problem(&namespace(&[], &[])), None);
        let ok = namespace(&[(ENFORCE, "privileged")], &[]);
        assert_eq!(pod_security_problem(&ok), None);
        let warn_only = namespace(&[(WARN, "restricted")], &[]);
        assert_eq!(
            pod_security_problem(&warn_only),
            None,
            "warn does not refuse"
        );
        let ns = namespace(
            &[(ENFORCE, "restricted")],
            &[("ferrolb-operator", WARN), ("kubectl-label", ENFORCE)],
        );
        let problem = pod_security_problem(&ns).unwrap_or_default();
        assert!(
            problem.starts_with(
                "namespace ferrolb-system enforces the Pod Security level \"restricted\" \
                 (set by kubectl-label), which refuses the speaker"
            ),
            "{problem}"
        );
        assert!(
            problem.contains("pod-security.kubernetes.io/enforce=privileged"),
            "{problem}"
        );
    }
}
