//! The Service reconciler: watches Services, Namespaces and the LoadBalancerConfig, asks the
//! allocator, and writes each Service's addresses, pool annotation, condition and Events.
//!
//! Allocation is one global state, so events are handled one at a time in a single loop rather
//! than by concurrent per-object reconcilers. On start (and on every leader change, since a new
//! leader is a new process) the state is rebuilt from Service status before anything new is
//! allocated: Services that hold addresses are restored first, in key order, so no address moves
//! or doubles across restarts.
//!
//! Level-triggered: each decision (`decide`) is compared with the freshest known copy of the
//! Service, so a change made by anyone is repaired; every write has a timeout; a failed write is
//! retried with backoff until it lands (`retry`); a periodic resync goes over every Service again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrolb_api::LoadBalancerConfig;
use ferrolb_api::address::IpFamily;
use ferrolb_api::condition::reasons;
use ferrolb_api::in_force::{Change as InForceChange, ConfigInForce};
use ferrolb_api::v1alpha1::{FamilyUsage, PoolUsage};
use ferrolb_runtime::events::Publisher;
use ferrolb_runtime::watch::Relisted;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::allocator::{Allocator, ServiceKey};
use crate::decide::{self, Decision, Outcome, Plan};
use crate::metrics::{Metrics, PoolLabels, ResultLabels, StageLabels, WriteLabels};
use crate::retry::Retries;
use crate::service::{self, ALLOCATED_FROM_POOL, CONDITION_TYPE, ServiceView, is_ours, status_ips};

/// Watch events received but not yet handled by the loop; beyond this the watches wait.
const INPUT_QUEUE: usize = 4096;

/// Field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "ferrolb-controller";

/// Why the reconciler stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another replica leads now.
    #[error("lost leadership")]
    LostLeadership,
    /// A watch ended, which the backoff should prevent.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// How the loop paces itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Longest wait for one API write; a write that takes longer counts as failed and is retried.
    pub write_timeout: Duration,
    /// First retry of a failed write; doubles per failure.
    pub retry_base: Duration,
    /// Longest wait between retries: the longest the allocator's hold and a Service's status
    /// can disagree while the API server accepts writes.
    pub retry_max: Duration,
    /// How often every Service is compared with its decision again, whatever the watches said.
    pub resync_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            write_timeout: Duration::from_secs(10),
            retry_base: Duration::from_millis(250),
            retry_max: Duration::from_secs(10),
            resync_every: Duration::from_secs(300),
        }
    }
}

/// What the loop needs from the outside world.
pub struct Context {
    /// API client (the controller's own ServiceAccount).
    pub client: Client,
    /// Publishes Events on Services (in the background).
    pub events: Publisher,
    /// Exported metrics.
    pub metrics: Metrics,
    /// Timeouts, backoff and resync.
    pub settings: Settings,
}

/// Why a bounded API call failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

impl Context {
    /// Runs one API call with the write timeout, counting failures by target and cause.
    async fn bounded<T>(
        &self,
        target: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        let limit = self.settings.write_timeout;
        let (result, cause) = match tokio::time::timeout(limit, call).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => (CallError::Api(e), "error"),
            Err(_) => (CallError::Timeout(limit), "timeout"),
        };
        self.metrics
            .write_failures
            .get_or_create(&WriteLabels { target, cause })
            .inc();
        Err(result)
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// One watch event; boxed, as configs are large and arrive one at a time. A Service is turned
/// into its [`ServiceView`] as soon as it is decoded, so no whole Service outlives its event.
enum Input {
    Service(Box<watcher::Event<ServiceView>>),
    Namespace(Box<watcher::Event<PartialObjectMeta<Namespace>>>),
    Config(Box<watcher::Event<LoadBalancerConfig>>),
}

/// Everything the loop knows.
struct State {
    services: Relisted<ServiceView>,
    /// Namespace labels, by name.
    namespaces: Relisted<BTreeMap<String, String>>,
    configs: Relisted<ComparableConfig>,
    /// The configuration in force (the last valid one); a rejection is reported once.
    in_force: ConfigInForce,
    allocator: Allocator,
    /// No pool is configured: nothing new is allocated, and nothing held is taken away.
    no_pools: bool,
    /// Services of ours without addresses, retried when addresses free up.
    pending: BTreeSet<ServiceKey>,
    /// Services whose last write failed, with when to try again.
    retries: Retries,
    /// Addresses were freed since pending Services were last retried.
    freed: bool,
    usage_dirty: bool,
}

/// Aborts a task when dropped (the watches, when the loop stops).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The slim view of a Service watch event; the Service itself is dropped here.
fn view_event(event: watcher::Event<Service>) -> watcher::Event<ServiceView> {
    match event {
        watcher::Event::Apply(s) => watcher::Event::Apply(ServiceView::new(s)),
        watcher::Event::Delete(s) => watcher::Event::Delete(ServiceView::new(s)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(s) => watcher::Event::InitApply(ServiceView::new(s)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Runs until leadership is lost or a watch ends.
pub async fn run(
    ctx: Context,
    mut leadership: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    let client = ctx.client.clone();
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Input::Service(Box::new(view_event(e)))));
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Input::Namespace(Box::new(e))));
    let configs = watcher(
        Api::<LoadBalancerConfig>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Input::Config(Box::new(e))));
    let streams: [futures::stream::BoxStream<'static, Result<Input, watcher::Error>>; 3] =
        [services.boxed(), namespaces.boxed(), configs.boxed()];
    // The watches run in a task of their own and stamp each event when it is decoded, so the
    // time an event waits for the loop is measured (and decoding overlaps the loop's writes).
    let (tx, mut inputs) = mpsc::channel::<(Instant, Result<Input, watcher::Error>)>(INPUT_QUEUE);
    let _watches = AbortOnDrop(tokio::spawn(async move {
        let mut streams = futures::stream::select_all(streams);
        while let Some(input) = streams.next().await {
            if tx.send((Instant::now(), input)).await.is_err() {
                break;
            }
        }
    }));

    let mut state = State {
        services: Relisted::default(),
        namespaces: Relisted::default(),
        configs: Relisted::default(),
        in_force: ConfigInForce::default(),
        allocator: Allocator::default(),
        no_pools: true,
        pending: BTreeSet::new(),
        freed: false,
        retries: Retries::new(ctx.settings.retry_base, ctx.settings.retry_max),
        usage_dirty: true,
    };
    let mut started = false;
    let mut usage_tick = tokio::time::interval(Duration::from_secs(1));
    let mut resync = tokio::time::interval(ctx.settings.resync_every);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset();

    loop {
        tokio::select! {
            changed = leadership.changed() => {
                if changed.is_err() || !*leadership.borrow() {
                    return Err(Error::LostLeadership);
                }
            }
            _ = usage_tick.tick(), if started && state.usage_dirty => {
                state.usage_dirty = !write_usage(&ctx, &state).await;
            }
            _ = sleep_until(state.retries.next_due()), if started && !state.retries.is_empty() => {
                for key in state.retries.take_due(Instant::now()) {
                    reconcile(&ctx, &mut state, &key, None).await;
                }
                ctx.metrics.retries_pending.set(gauge(state.retries.len()));
                retry_pending(&ctx, &mut state).await;
            }
            _ = resync.tick(), if started => {
                ctx.metrics.resyncs.inc();
                tracing::debug!(services = state.services.len(), "periodic resync");
                reconcile_all(&ctx, &mut state).await;
                ctx.metrics.retries_pending.set(gauge(state.retries.len()));
            }
            input = inputs.recv() => {
                let Some((received, input)) = input else { return Err(Error::WatchEnded("input")) };
                let input = match input {
                    Ok(input) => input,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch error; retrying with backoff");
                        continue;
                    }
                };
                let touched = apply_input(&mut state, input);
                if !started {
                    let synced = state.services.is_synced()
                        && state.namespaces.is_synced()
                        && state.configs.is_synced();
                    if synced {
                        started = true;
                        startup(&ctx, &mut state).await;
                    }
                    continue;
                }
                match touched {
                    Touched::Nothing => {}
                    Touched::Services(keys) => {
                        for key in keys {
                            reconcile(&ctx, &mut state, &key, Some(received)).await;
                        }
                        retry_pending(&ctx, &mut state).await;
                        ctx.metrics.retries_pending.set(gauge(state.retries.len()));
                    }
                    Touched::Everything => {
                        load_config(&ctx, &mut state).await;
                        reconcile_all(&ctx, &mut state).await;
                    }
                }
            }
        }
    }
}

/// Sleeps until `at` (a loop branch guarded by `at` being set).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

enum Touched {
    Nothing,
    Services(Vec<ServiceKey>),
    Everything,
}

fn apply_input(state: &mut State, input: Input) -> Touched {
    match input {
        Input::Service(event) => {
            // A copy older than the one our last write returned was queued before that write:
            // it says nothing new, and acting on it would write the same again.
            if let watcher::Event::Apply(svc) = &*event
                && state
                    .services
                    .get(&svc.key())
                    .is_some_and(|known| svc.older_than(known))
            {
                return Touched::Nothing;
            }
            let changes = state.services.apply(*event, ServiceView::key, Some);
            Touched::Services(changes.into_iter().map(|c| c.key().clone()).collect())
        }
        Input::Namespace(event) => {
            let changes = state.namespaces.apply(
                *event,
                |ns: &PartialObjectMeta<Namespace>| ns.name_any(),
                |ns| Some(ns.metadata.labels.unwrap_or_default()),
            );
            // Only labels are kept, so any change is one allocateTo selectors may see.
            if changes.is_empty() {
                Touched::Nothing
            } else {
                Touched::Everything
            }
        }
        Input::Config(event) => {
            // Only what decides the config in force is kept: our own pool-usage writes change
            // only the status, and cause nothing.
            let changes = state.configs.apply(
                *event,
                |c: &LoadBalancerConfig| c.name_any(),
                |mut c| {
                    c.status = None;
                    c.metadata.managed_fields = None;
                    c.metadata.resource_version = None;
                    Some(ComparableConfig(c))
                },
            );
            if changes.is_empty() && state.configs.is_synced() {
                Touched::Nothing
            } else {
                Touched::Everything
            }
        }
    }
}

/// A config as the controller keeps it: without status and bookkeeping, compared by what
/// decides the config in force (name, creation time, spec).
#[derive(Clone, Debug)]
struct ComparableConfig(LoadBalancerConfig);

impl PartialEq for ComparableConfig {
    fn eq(&self, other: &Self) -> bool {
        self.0.metadata.name == other.0.metadata.name
            && self.0.metadata.creation_timestamp == other.0.metadata.creation_timestamp
            && self.0.spec == other.0.spec
    }
}

/// The configuration in force (`ferrolb_api::in_force`, as the speakers decide it): the oldest
/// LoadBalancerConfig if it is valid, else the last valid one stays. A deleted config keeps the
/// assigned addresses but allocates nothing new.
async fn load_config(ctx: &Context, state: &mut State) {
    match state.in_force.update(state.configs.values().map(|c| &c.0)) {
        InForceChange::Unchanged => return,
        InForceChange::Gone => {
            tracing::warn!("the LoadBalancerConfig is gone: no new addresses; assigned ones stay");
            state.no_pools = true;
            return;
        }
        InForceChange::Rejected { name, problems } => {
            ctx.metrics.config_stale.set(1);
            tracing::error!(config = %name, %problems, "LoadBalancerConfig rejected; the last valid configuration stays in force");
            if let Some(config) = state.configs.get(&name) {
                let event = Event {
                    type_: EventType::Warning,
                    reason: reasons::CONFIG_REJECTED.into(),
                    note: Some(truncate(&format!(
                        "the last valid configuration stays in force:\n{problems}"
                    ))),
                    action: "Validate".into(),
                    secondary: None,
                };
                ctx.events.publish(&event, config.0.object_ref(&()));
            }
            return;
        }
        InForceChange::InForce => {}
    }
    ctx.metrics.config_stale.set(0);
    let Some((_, spec)) = state.in_force.in_force() else {
        return;
    };
    if spec.address_pools.is_empty() {
        tracing::warn!("no address pools: no new addresses; assigned ones stay");
        state.no_pools = true;
    } else {
        state.no_pools = false;
        let displaced = state.allocator.set_pools(&spec.address_pools);
        if !displaced.is_empty() {
            tracing::info!(
                count = displaced.len(),
                "Services lost their pool and will be re-homed"
            );
        }
        state.pending.extend(displaced);
    }
    state.usage_dirty = true;
}

fn class(state: &State) -> &str {
    state
        .in_force
        .in_force()
        .map_or("", |(_, s)| s.load_balancer_class.as_str())
}

/// First pass after the watches are synced: restore every held address, then serve the rest.
async fn startup(ctx: &Context, state: &mut State) {
    load_config(ctx, state).await;
    let class = class(state).to_owned();
    let mut restored = 0usize;
    let held: Vec<ServiceKey> = state
        .services
        .iter()
        .filter(|(_, s)| is_ours(s, &class) && !status_ips(s).is_empty())
        .map(|(k, _)| k.clone())
        .collect();
    if !state.no_pools {
        for key in &held {
            let Some(svc) = state.services.get(key) else {
                continue;
            };
            let labels = namespace_labels(state, svc);
            if let Ok(req) = service::request(svc, &labels)
                && state.allocator.assign(&req, &status_ips(svc)).is_ok()
            {
                restored += 1;
            }
        }
    }
    tracing::info!(
        services = state.services.len(),
        held = held.len(),
        restored,
        "state rebuilt from Service status"
    );
    reconcile_all(ctx, state).await;
}

fn namespace_labels(state: &State, svc: &ServiceView) -> BTreeMap<String, String> {
    state
        .namespaces
        .get(&svc.namespace)
        .cloned()
        .unwrap_or_default()
}

/// Reconciles every Service: those holding addresses first, then the others, in key order.
async fn reconcile_all(ctx: &Context, state: &mut State) {
    let mut held = Vec::new();
    let mut rest = Vec::new();
    for (key, svc) in state.services.iter() {
        if status_ips(svc).is_empty() {
            rest.push(key.clone());
        } else {
            held.push(key.clone());
        }
    }
    for key in held.into_iter().chain(rest) {
        reconcile(ctx, state, &key, None).await;
    }
    let services = &state.services;
    state.pending.retain(|k| services.get(k).is_some());
}

/// Retries Services waiting for addresses, in key order, when addresses were freed.
async fn retry_pending(ctx: &Context, state: &mut State) {
    if !std::mem::take(&mut state.freed) {
        return;
    }
    let keys: Vec<ServiceKey> = state.pending.iter().cloned().collect();
    for key in keys {
        reconcile(ctx, state, &key, None).await;
    }
}

/// Brings one Service to what the allocator says. `received` is when the watch event that
/// caused this arrived (for the latency metrics).
async fn reconcile(ctx: &Context, state: &mut State, key: &str, received: Option<Instant>) {
    if let Some(at) = received {
        ctx.metrics
            .allocation_latency
            .get_or_create(&StageLabels { stage: "queued" })
            .observe(at.elapsed().as_secs_f64());
    }
    let class = class(state).to_owned();
    let Some(svc) = state.services.get(key).cloned() else {
        // Deleted: its addresses go back, and waiting Services may now fit.
        state.pending.remove(key);
        state.retries.forget(key);
        if state.allocator.release(key).is_some() {
            state.usage_dirty = true;
            state.freed = true;
            tracing::info!(service = key, "released addresses of a deleted Service");
        }
        return;
    };
    if !is_ours(&svc, &class) {
        state.pending.remove(key);
        if state.allocator.release(key).is_some() {
            state.usage_dirty = true;
            state.freed = true;
            tracing::info!(
                service = key,
                "released addresses of a Service that is no longer ours"
            );
        }
        // Level-triggered: as long as our mark is on it, what we wrote is removed (retried).
        if svc.allocated_pool.is_some() || svc.condition.is_some() {
            match clear(ctx, &svc).await {
                Ok(()) => state.retries.forget(key),
                Err(()) => {
                    state.retries.failed(key, Instant::now());
                }
            }
        } else {
            state.retries.forget(key);
        }
        return;
    }
    let labels = namespace_labels(state, &svc);
    let Decision { outcome, freed } =
        decide::decide(&mut state.allocator, &svc, &labels, state.no_pools);
    state.freed |= freed;
    match &outcome {
        Outcome::Allocated(_) => {
            state.pending.remove(key);
        }
        Outcome::Failed { .. } => {
            state.pending.insert(key.to_owned());
        }
    }
    state.usage_dirty = true;
    let Some(plan) = decide::plan(&svc, &outcome) else {
        state.retries.forget(key);
        return;
    };
    match write(ctx, &svc, &plan, received).await {
        Ok(Some(fresh)) => {
            ctx.metrics
                .allocations
                .get_or_create(&ResultLabels {
                    result: outcome.reason().to_owned(),
                })
                .inc();
            state.retries.forget(key);
            // The API server's answer is the freshest copy: later events carrying an older one
            // (already queued when we wrote) are ignored instead of causing another write.
            if state
                .services
                .get(key)
                .is_some_and(|s| !fresh.older_than(s))
            {
                state.services.upsert(key.to_owned(), fresh);
            }
        }
        // The status landed but not the annotation removal: the next attempt finishes it.
        Ok(None) | Err(()) => {
            state.retries.failed(key, Instant::now());
        }
    }
}

/// Carries `plan` out on `svc`. `Ok(Some(service))`: written, with the Service as the API server
/// answered; `Ok(None)`: the status is written but a separate annotation removal failed; `Err`:
/// the status write failed or timed out (logged and counted). The Event goes out once the status
/// has landed.
async fn write(
    ctx: &Context,
    svc: &ServiceView,
    plan: &Plan,
    received: Option<Instant>,
) -> Result<Option<ServiceView>, ()> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &svc.namespace);
    let name = &svc.name;
    let started = Instant::now();
    let wanted = &plan.condition;
    let transition = match &svc.condition {
        Some(old) if wanted.keeps_transition_time => old.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    let condition = Condition {
        type_: CONDITION_TYPE.to_owned(),
        status: wanted.status.to_owned(),
        reason: wanted.reason.to_owned(),
        message: wanted.message.clone(),
        observed_generation: svc.generation,
        last_transition_time: transition,
    };
    let ingress: Vec<_> = plan
        .ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    let mut status_patch = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "status": {"loadBalancer": {"ingress": ingress}, "conditions": [condition]},
    });
    // The pool annotation rides in the status write (a Service's status subresource keeps
    // metadata changes): one write and one watch event for every client instead of two. Only an
    // annotation left with no pool to name takes a write of its own, at the same time.
    if let Some(pool) = &plan.pool {
        status_patch["metadata"] = json!({"annotations": {ALLOCATED_FROM_POOL: pool}});
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let annotate = async {
        if !plan.remove_pool_annotation {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {ALLOCATED_FROM_POOL: null}}});
        ctx.bounded(
            "annotation",
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map(|_| ())
    };
    let write_status = async {
        let written = ctx
            .bounded(
                "service_status",
                api.patch_status(name, &params, &Patch::Apply(&status_patch)),
            )
            .await;
        (written, Instant::now())
    };
    let (annotated, (status_written, acked)) = tokio::join!(annotate, write_status);
    let fresh = match status_written {
        Ok(fresh) => ServiceView::new(fresh),
        Err(e) => {
            tracing::warn!(service = %svc.key(), error = %e, "cannot write Service status; retrying with backoff");
            return Err(());
        }
    };
    if plan.ips_changed
        && let Some(at) = received
    {
        let observe = |stage, d: Duration| {
            ctx.metrics
                .allocation_latency
                .get_or_create(&StageLabels { stage })
                .observe(d.as_secs_f64());
        };
        observe("api", acked - started);
        observe("total", acked - at);
    }
    tracing::info!(service = %svc.key(), status = wanted.status, reason = wanted.reason, message = %wanted.message, "wrote Service status");
    if let Some(note) = &plan.event {
        let event = Event {
            type_: if note.normal {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: note.reason.into(),
            note: Some(truncate(&note.note)),
            action: "Allocate".into(),
            secondary: None,
        };
        ctx.events.publish(&event, svc.object_ref());
    }
    match annotated {
        Ok(()) => Ok(Some(fresh)),
        Err(e) => {
            tracing::warn!(service = %svc.key(), error = %e, "cannot remove the pool annotation; retrying with backoff");
            Ok(None)
        }
    }
}

/// Removes what the controller wrote on a Service it no longer handles.
async fn clear(ctx: &Context, svc: &ServiceView) -> Result<(), ()> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &svc.namespace);
    let name = &svc.name;
    let mut result = Ok(());
    if svc.allocated_pool.is_some() {
        let patch = json!({"metadata": {"annotations": {ALLOCATED_FROM_POOL: null}}});
        if let Err(e) = ctx
            .bounded(
                "annotation",
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
        {
            tracing::warn!(service = %svc.key(), error = %e, "cannot remove the pool annotation");
            result = Err(());
        }
    }
    // Applying an empty status drops the fields this manager owned.
    let patch = json!({"apiVersion": "v1", "kind": "Service", "status": {}});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(e) = ctx
        .bounded(
            "service_status",
            api.patch_status(name, &params, &Patch::Apply(&patch)),
        )
        .await
    {
        tracing::warn!(service = %svc.key(), error = %e, "cannot clear Service status");
        result = Err(());
    }
    result
}

/// Writes pool usage to the configuration's status and the metrics; false when the write
/// failed (it is tried again at the next tick).
async fn write_usage(ctx: &Context, state: &State) -> bool {
    let mut pools = Vec::new();
    for pool in state.allocator.pools() {
        let family = |f: IpFamily| {
            let (total, used) = pool.usage(f);
            (total > 0).then(|| FamilyUsage::new(total, used))
        };
        for (f, label) in [(IpFamily::V4, "ipv4"), (IpFamily::V6, "ipv6")] {
            let (total, used) = pool.usage(f);
            if total == 0 {
                continue;
            }
            let labels = PoolLabels {
                pool: pool.name().to_owned(),
                family: label.to_owned(),
            };
            // Gauges are f64; a /64 is exact enough there, and exact in the status.
            #[allow(clippy::cast_precision_loss)]
            {
                ctx.metrics
                    .addresses_total
                    .get_or_create(&labels)
                    .set(total as f64);
                ctx.metrics
                    .addresses_in_use
                    .get_or_create(&labels)
                    .set(used as f64);
            }
        }
        pools.push(PoolUsage {
            name: pool.name().to_owned(),
            ipv4: family(IpFamily::V4),
            ipv6: family(IpFamily::V6),
        });
    }
    let Some((name, _)) = state.in_force.in_force() else {
        return true;
    };
    let api: Api<LoadBalancerConfig> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "LoadBalancerConfig",
        "status": {"pools": pools},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match ctx
        .bounded(
            "pool_usage",
            api.patch_status(name, &params, &Patch::Apply(&patch)),
        )
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(config = %name, error = %e, "cannot write pool usage");
            false
        }
    }
}

/// Event notes are limited to 1 kB.
fn truncate(s: &str) -> String {
    const MAX: usize = 1000;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
