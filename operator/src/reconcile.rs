//! The reconcile loop of the LoadBalancerConfig, as a pipeline: read (the config and every
//! other one) → validate (pure) → build (pure `render`) → apply (server-side apply, prune) →
//! status (pure `status`, written only when it changes, each change told as an Event on the
//! config) → under OLM, `Upgradeable` told to the operator's OperatorCondition (`olm`).
//! Event-driven: it watches the configs, every Deployment and DaemonSet it owns (a workload
//! deleted or edited by hand is restored at once) and the operand pods (a pod that cannot start
//! shows in `Degraded` at once); nothing polls, except that under OLM, while no config exists,
//! the OperatorCondition is looked at every few minutes (no reconcile runs then).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_api::v1alpha1::condition_types::UPGRADEABLE;
use ferrolb_api::v1alpha1::{BGPSession, LoadBalancerConfigStatus, OperatorVersions};
use ferrolb_api::{LoadBalancerConfig, LoadBalancerConfigSpec, validate};
use ferrolb_runtime::events::Publisher;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::apply::{self, managed_selector};
use crate::metrics::{Metrics, ReasonLabels};
use crate::olm::{self, OperatorCondition};
use crate::render::{self, FIELD_MANAGER, Settings};
use crate::status::{self, Observed, Standing};

/// The finalizer that removes every operand, cluster-scoped ones included, on uninstall.
pub const FINALIZER: &str = "ferrolb.io/operands";

/// Why one reconcile failed (each variant is a metric label).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Applying or pruning an operand failed.
    #[error("applying the operands: {0}")]
    Apply(#[source] kube::Error),
    /// Writing the status failed.
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    /// Removing the operands on uninstall failed.
    #[error("removing the operands: {0}")]
    Cleanup(#[source] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The stable metric label of this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Apply(_) => "apply",
            Self::Status(_) => "status",
            Self::Cleanup(_) => "cleanup",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The operator's own client.
    pub client: Client,
    /// Image and versions.
    pub settings: Settings,
    /// Every LoadBalancerConfig, from the controller's own watch.
    pub configs: Store<LoadBalancerConfig>,
    /// Exported metrics.
    pub metrics: Metrics,
    /// Events on the config.
    pub events: Publisher,
    /// The time between two phases of a membership key rotation.
    pub key_rotation_step: Duration,
    /// The OperatorCondition to tell `Upgradeable` to (None: not installed by OLM).
    pub operator_condition: Option<OperatorCondition>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Where `config` stands among every config that exists: the oldest is the one in force (if
/// valid); any other is ignored and told so.
fn standing(config: &LoadBalancerConfig, all: &[Arc<LoadBalancerConfig>]) -> Standing {
    let created = |c: &LoadBalancerConfig| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let oldest = all
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .min_by(|a, b| {
            created(a)
                .cmp(&created(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });
    if let Some(oldest) = oldest
        && oldest.name_any() != config.name_any()
    {
        return Standing::Shadowed(oldest.name_any());
    }
    match validate(&config.spec) {
        Ok(()) => Standing::InForce,
        Err(problems) => Standing::Invalid(problems.to_string()),
    }
}

/// 32 random bytes, hex. `None` only if the OS has no entropy source: a weak key would be worse
/// than none, so the Secret is then not created (the next reconcile tries again).
fn random_key() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut key).ok()?;
    Some(key.iter().map(|b| format!("{b:02x}")).collect())
}

async fn reconcile(config: Arc<LoadBalancerConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let span = tracing::info_span!("reconcile", config = %config.name_any(), generation = ?config.metadata.generation);
    let api: Api<LoadBalancerConfig> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, config, |event| async {
        match event {
            Finalizer::Apply(config) => apply_config(&config, &ctx).await,
            Finalizer::Cleanup(config) => cleanup(&config, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics.reconciles.inc();
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// The speakers' BGPSession objects when the spec has bgpPeers; None when it has none, or when
/// they cannot be listed (the status then says nothing about BGP rather than something wrong).
async fn bgp_sessions(client: &Client, spec: &LoadBalancerConfigSpec) -> Option<Vec<BGPSession>> {
    if spec.bgp_peers.is_empty() {
        return None;
    }
    let api: Api<BGPSession> = Api::namespaced(client.clone(), render::operand_namespace(spec));
    match api.list(&ListParams::default()).await {
        Ok(list) => Some(list.items),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the BGPSession objects");
            None
        }
    }
}

async fn apply_config(config: &LoadBalancerConfig, ctx: &Context) -> Result<Action, Error> {
    let all = ctx.configs.state();
    let standing = standing(config, &all);
    let mut observed = Observed {
        generation: config.metadata.generation,
        standing: Some(standing.clone()),
        versions: OperatorVersions {
            operator: format!("v{}", env!("CARGO_PKG_VERSION")),
            operand: ctx.settings.version.clone(),
        },
        ..Observed::default()
    };
    let mut rotation_due = None;
    if standing == Standing::InForce {
        let ops = render::operands(&config.spec, &ctx.settings);
        match apply::apply_all(&ctx.client, config, &ops, random_key, ctx.key_rotation_step).await {
            Ok(applied) => {
                observed.controller = Some(applied.controller);
                observed.speaker = Some(applied.speaker);
                observed.key_rotation = applied.key_rotation.progress;
                observed.pod_security = applied.pod_security;
                rotation_due = applied.key_rotation.requeue;
                apply::prune(&ctx.client, Some(&ops))
                    .await
                    .map_err(Error::Apply)?;
            }
            Err(e) => {
                observed.apply_error = Some(e.to_string());
                let conditions = write_status(config, ctx, &observed).await?;
                report_upgradeable(ctx, &standing, &conditions).await;
                return Err(Error::Apply(e));
            }
        }
    } else if let Standing::Invalid(_) = standing {
        // The last valid operands keep running: read them for the status, change nothing.
        let ns = render::operand_namespace(&config.spec);
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
        let daemonsets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), ns);
        observed.controller = deployments
            .get_opt("ferrolb-controller")
            .await
            .map_err(Error::Apply)?;
        observed.speaker = daemonsets
            .get_opt("ferrolb-speaker")
            .await
            .map_err(Error::Apply)?;
    }
    if !matches!(standing, Standing::Shadowed(_)) {
        observed.pod_problems = pod_problems(&ctx.client, &config.spec).await?;
        observed.bgp_sessions = bgp_sessions(&ctx.client, &config.spec).await;
    }
    let conditions = write_status(config, ctx, &observed).await?;
    let reported = report_upgradeable(ctx, &standing, &conditions).await;
    if let Standing::Shadowed(_) = standing {
        // Nothing of its own wakes a config that is not in force when the one in force goes:
        // look again soon (only while two configs exist, which the webhook prevents).
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    // Owned workloads wake the loop when they change; the slow requeue is only a safety net.
    // A key rotation comes back when its next phase is due (nothing watches the Secret), and
    // a namespace that refuses the speaker is looked at again soon (nothing watches it either),
    // and so is an OperatorCondition that could not be told.
    // BGP sessions are looked at every 30 s while the spec has peers (nothing watches them:
    // the speakers rewrite them as sessions change, which would wake the loop too often).
    let resync = if observed.pod_security.is_some() || !reported {
        Duration::from_secs(10)
    } else if observed.bgp_sessions.is_some() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(300)
    };
    Ok(Action::requeue(
        rotation_due.map_or(resync, |due| due.min(resync)),
    ))
}

/// Why operand pods cannot become ready, sorted (see [`status::pod_problem`]).
async fn pod_problems(
    client: &Client,
    spec: &ferrolb_api::LoadBalancerConfigSpec,
) -> Result<Vec<String>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), render::operand_namespace(spec));
    let list = pods
        .list(&ListParams::default().labels(&managed_selector()))
        .await
        .map_err(Error::Apply)?;
    let mut problems: Vec<String> = list.items.iter().filter_map(status::pod_problem).collect();
    problems.sort();
    Ok(problems)
}

/// Writes the status when it differs from what the config holds, and tells each condition
/// change as an Event. Returns the conditions the config now holds.
async fn write_status(
    config: &LoadBalancerConfig,
    ctx: &Context,
    observed: &Observed,
) -> Result<Vec<Condition>, Error> {
    let previous = config.status.clone().unwrap_or_default();
    let computed = status::compute(observed, &previous.conditions, Time(Timestamp::now()));
    let next = LoadBalancerConfigStatus {
        observed_generation: observed.generation,
        conditions: computed.conditions,
        version: Some(observed.versions.clone()),
        controller: computed.controller,
        speaker: computed.speaker,
        pools: previous.pools.clone(),
    };
    if next == previous {
        return Ok(next.conditions);
    }
    let api: Api<LoadBalancerConfig> = Api::all(ctx.client.clone());
    // Only the operator's fields: pool usage belongs to the controller.
    let patch = json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "LoadBalancerConfig",
        "status": {
            "observedGeneration": next.observed_generation,
            "conditions": next.conditions,
            "version": next.version,
            "controller": next.controller,
            "speaker": next.speaker,
        },
    });
    api.patch_status(
        &config.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    let regarding = config.object_ref(&());
    for event in status::transitions(&previous.conditions, &next.conditions) {
        ctx.events.publish(&event, regarding.clone());
    }
    Ok(next.conditions)
}

/// Under OLM, mirrors the config's `Upgradeable` into the operator's OperatorCondition, unless
/// the config is ignored (another is in force: only that one has a say). Returns false when
/// that failed (logged; the caller looks again soon): it never fails the reconcile.
async fn report_upgradeable(ctx: &Context, standing: &Standing, conditions: &[Condition]) -> bool {
    let Some(operator_condition) = &ctx.operator_condition else {
        return true;
    };
    if matches!(standing, Standing::Shadowed(_)) {
        return true;
    }
    match conditions.iter().find(|c| c.type_ == UPGRADEABLE) {
        Some(upgradeable) => operator_condition.report(upgradeable.clone()).await,
        None => true,
    }
}

/// How often, under OLM, the OperatorCondition is looked at while no config exists.
const UNCONFIGURED_RESYNC: Duration = Duration::from_secs(300);

/// Under OLM, while no config exists (nothing reconciles then), keeps `Upgradeable=True`
/// (`NoConfig`) in the OperatorCondition: at start, and every [`UNCONFIGURED_RESYNC`], which
/// also retries a report the last config's cleanup could not make. Never returns.
async fn report_while_unconfigured(ctx: Arc<Context>) {
    if let Some(operator_condition) = &ctx.operator_condition
        && ctx.configs.wait_until_ready().await.is_ok()
    {
        let mut resync = tokio::time::interval(UNCONFIGURED_RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            resync.tick().await;
            if ctx.configs.is_empty() {
                operator_condition
                    .report(olm::no_config(Time(Timestamp::now())))
                    .await;
            }
        }
    }
    std::future::pending::<()>().await;
}

/// Uninstall: remove every operand, unless another config remains to take over.
async fn cleanup(config: &LoadBalancerConfig, ctx: &Context) -> Result<Action, Error> {
    let others = ctx
        .configs
        .state()
        .into_iter()
        .filter(|c| c.name_any() != config.name_any() && c.metadata.deletion_timestamp.is_none())
        .count();
    if others > 0 {
        tracing::info!("another LoadBalancerConfig remains; the operands stay for it");
        return Ok(Action::await_change());
    }
    let removed = apply::prune(&ctx.client, None)
        .await
        .map_err(Error::Cleanup)?;
    tracing::info!(removed, "removed every operand");
    // Nothing left to disrupt; a failure is retried while no config exists.
    if let Some(operator_condition) = &ctx.operator_condition {
        operator_condition
            .report(olm::no_config(Time(Timestamp::now())))
            .await;
    }
    ctx.events.publish(
        &Event {
            type_: EventType::Normal,
            reason: "OperandsRemoved".to_owned(),
            note: Some(format!(
                "the config is being deleted: removed {removed} objects the operator created"
            )),
            action: "Uninstall".to_owned(),
            secondary: None,
        },
        config.object_ref(&()),
    );
    Ok(Action::await_change())
}

fn error_policy(config: Arc<LoadBalancerConfig>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(config = %config.name_any(), %error, "reconcile failed; retrying");
    ctx.metrics
        .failures
        .get_or_create(&ReasonLabels {
            reason: error.reason(),
        })
        .inc();
    Action::requeue(Duration::from_secs(2))
}

/// Runs the loop until `shutdown` completes; `key_rotation_step` is the time between two
/// phases of a membership key rotation; `operator_condition` is OLM's for this operator, if OLM
/// installed it.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    events: Publisher,
    key_rotation_step: Duration,
    operator_condition: Option<OperatorCondition>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let configs: Api<LoadBalancerConfig> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(&managed_selector());
    let controller = Controller::new(configs, watcher::Config::default());
    let store = controller.store();
    // An operand pod belongs to the one config (through its workload): wake every config.
    let every_config = {
        let store = store.clone();
        move |_: Pod| {
            store
                .state()
                .iter()
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let controller = controller
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<DaemonSet>::all(client.clone()), owned.clone())
        .watches(Api::<Pod>::all(client.clone()), owned, every_config)
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Context {
        client,
        settings,
        configs: store,
        metrics,
        events,
        key_rotation_step,
        operator_condition,
    });
    let unconfigured = report_while_unconfigured(ctx.clone());
    let reconciling = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error (retried)");
            }
        });
    // The loop ends at `shutdown`; the upkeep of the OperatorCondition ends with it.
    tokio::select! {
        () = reconciling => {}
        () = unconfigured => {}
    }
}
