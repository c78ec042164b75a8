//! Carries the rendered operands out: server-side apply under the field manager
//! `ferrolb-operator`, owner references to the LoadBalancerConfig on everything it may own,
//! pruning of what carries the operator's label but is no longer rendered, and deletion of all
//! of it on uninstall.

use std::collections::BTreeSet;
use std::fmt::Debug;

use ferrolb_api::LoadBalancerConfig;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::render::{FIELD_MANAGER, MANAGED_BY, MEMBERLIST_SECRET, Operands};

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
}

/// Applies every operand, in dependency order. The namespace is taken over only when the
/// operator created it or it does not exist: a namespace the admin made keeps its owner and
/// only gets the Pod Security labels, and is never deleted by the operator.
pub async fn apply_all(
    client: &Client,
    config: &LoadBalancerConfig,
    ops: &Operands,
    membership_key: impl FnOnce() -> Option<String>,
) -> Result<Applied, Error> {
    let owner = owner(config);
    let owner = owner.as_ref();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_name = ops.namespace.name_any();
    match namespaces.get_opt(&ns_name).await? {
        Some(existing) if !existing.labels().contains_key(MANAGED_BY.0) => {
            // Someone else's namespace: add only what the speaker needs.
            let labels: std::collections::BTreeMap<String, String> = ops
                .namespace
                .labels()
                .iter()
                .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
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
            apply_cluster(client, &ops.namespace).await?;
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
    ensure_membership_secret(client, config, &ns_name, membership_key).await?;
    let controller = apply_in(client, &with_owner(ops.controller.clone(), owner)).await?;
    let speaker = apply_in(client, &with_owner(ops.speaker.clone(), owner)).await?;
    Ok(Applied {
        controller,
        speaker,
    })
}

/// Creates the speakers' membership Secret with a fresh random key when there is none. An
/// existing Secret is never rewritten (its key would change under running speakers); deleting
/// it makes the operator create a new key.
async fn ensure_membership_secret(
    client: &Client,
    config: &LoadBalancerConfig,
    namespace: &str,
    key: impl FnOnce() -> Option<String>,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if api.get_opt(MEMBERLIST_SECRET.0).await?.is_some() {
        return Ok(());
    }
    let Some(key) = key() else {
        tracing::error!(
            namespace,
            "no random key could be made (the OS has no entropy source?); the speakers fall back to Node readiness until one can"
        );
        return Ok(());
    };
    let secret = crate::render::membership_secret(config, namespace, key);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(
                namespace,
                secret = MEMBERLIST_SECRET.0,
                "created the speakers' membership key"
            );
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
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
