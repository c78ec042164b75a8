//! The Service reconciler: watches Services, Namespaces and the LoadBalancerConfig, asks the
//! allocator, and writes each Service's addresses, pool annotation, condition and Events.
//!
//! Allocation is one global state, so events are handled one at a time in a single loop rather
//! than by concurrent per-object reconcilers. On start (and on every leader change, since a new
//! leader is a new process) the state is rebuilt from Service status before anything new is
//! allocated: Services that hold addresses are restored first, in key order, so no address moves
//! or doubles across restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ferrolb_api::address::IpFamily;
use ferrolb_api::v1alpha1::{FamilyUsage, LoadBalancerConfigSpec, PoolUsage};
use ferrolb_api::{LoadBalancerConfig, validate};
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

use crate::allocator::{AllocationError, Allocator, Assignment, ServiceKey};
use crate::events::Publisher;
use crate::metrics::{Metrics, PoolLabels, ResultLabels, StageLabels};
use crate::service::{
    self, ALLOCATED_FROM_POOL, CONDITION_TYPE, RequestError, ServiceView, allocated_pool, is_ours,
    status_ips,
};

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

/// What the loop needs from the outside world.
pub struct Context {
    /// API client (the controller's own ServiceAccount).
    pub client: Client,
    /// Publishes Events on Services (in the background).
    pub events: Publisher,
    /// Exported metrics.
    pub metrics: Metrics,
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

/// The outcome for one Service, as written to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Allocated(Assignment),
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// Everything the loop knows.
struct State {
    services: BTreeMap<ServiceKey, ServiceView>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    configs: BTreeMap<String, LoadBalancerConfig>,
    /// The configuration in force (the last valid one) and the object it came from.
    config: Option<(String, LoadBalancerConfigSpec)>,
    /// The last rejected configuration, so it is reported once, not at every event.
    rejected: Option<(String, LoadBalancerConfigSpec)>,
    allocator: Allocator,
    /// No pool is configured: nothing new is allocated, and nothing held is taken away.
    no_pools: bool,
    /// Services of ours without addresses, retried when addresses free up.
    pending: BTreeSet<ServiceKey>,
    /// What was last written to each Service, so that a watch event carrying an older copy of
    /// the Service (our own writes arrive as two events) does not cause a second write.
    written: HashMap<ServiceKey, Outcome>,
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
        services: BTreeMap::new(),
        namespaces: BTreeMap::new(),
        configs: BTreeMap::new(),
        config: None,
        rejected: None,
        allocator: Allocator::default(),
        no_pools: true,
        pending: BTreeSet::new(),
        freed: false,
        written: HashMap::new(),
        usage_dirty: true,
    };
    let mut buffers = Buffers::default();
    let mut synced = [false; 3];
    let mut started = false;
    let mut usage_tick = tokio::time::interval(Duration::from_secs(1));

    loop {
        tokio::select! {
            changed = leadership.changed() => {
                if changed.is_err() || !*leadership.borrow() {
                    return Err(Error::LostLeadership);
                }
            }
            _ = usage_tick.tick(), if started && state.usage_dirty => {
                state.usage_dirty = false;
                write_usage(&ctx, &state).await;
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
                let touched = apply_input(&mut state, &mut buffers, &mut synced, input);
                if !started {
                    if synced.iter().all(|s| *s) {
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

/// Objects being relisted, kept apart until the list is complete.
#[derive(Default)]
struct Buffers {
    services: Option<BTreeMap<ServiceKey, ServiceView>>,
    namespaces: Option<BTreeMap<String, BTreeMap<String, String>>>,
    configs: Option<BTreeMap<String, LoadBalancerConfig>>,
}

enum Touched {
    Nothing,
    Services(Vec<ServiceKey>),
    Everything,
}

fn apply_input(
    state: &mut State,
    buffers: &mut Buffers,
    synced: &mut [bool; 3],
    input: Input,
) -> Touched {
    match input {
        Input::Service(event) => match *event {
            watcher::Event::Apply(svc) => {
                let key = svc.key();
                state.services.insert(key.clone(), svc);
                Touched::Services(vec![key])
            }
            watcher::Event::Delete(svc) => {
                let key = svc.key();
                state.services.remove(&key);
                Touched::Services(vec![key])
            }
            watcher::Event::Init => {
                buffers.services = Some(BTreeMap::new());
                Touched::Nothing
            }
            watcher::Event::InitApply(svc) => {
                buffers
                    .services
                    .get_or_insert_default()
                    .insert(svc.key(), svc);
                Touched::Nothing
            }
            watcher::Event::InitDone => {
                synced[0] = true;
                let fresh = buffers.services.take().unwrap_or_default();
                let old = std::mem::replace(&mut state.services, fresh);
                let keys: BTreeSet<ServiceKey> = old
                    .into_keys()
                    .chain(state.services.keys().cloned())
                    .collect();
                Touched::Services(keys.into_iter().collect())
            }
        },
        Input::Namespace(event) => {
            let event = *event;
            let labels = |ns: &PartialObjectMeta<Namespace>| ns.labels().clone();
            match event {
                watcher::Event::Apply(ns) => {
                    let changed = state.namespaces.get(&ns.name_any()) != Some(&labels(&ns));
                    state.namespaces.insert(ns.name_any(), labels(&ns));
                    if changed {
                        Touched::Everything
                    } else {
                        Touched::Nothing
                    }
                }
                watcher::Event::Delete(ns) => {
                    state.namespaces.remove(&ns.name_any());
                    Touched::Nothing
                }
                watcher::Event::Init => {
                    buffers.namespaces = Some(BTreeMap::new());
                    Touched::Nothing
                }
                watcher::Event::InitApply(ns) => {
                    buffers
                        .namespaces
                        .get_or_insert_default()
                        .insert(ns.name_any(), labels(&ns));
                    Touched::Nothing
                }
                watcher::Event::InitDone => {
                    synced[1] = true;
                    state.namespaces = buffers.namespaces.take().unwrap_or_default();
                    Touched::Everything
                }
            }
        }
        Input::Config(event) => match *event {
            watcher::Event::Apply(c) => {
                // Our own pool-usage writes change only the status: nothing to redo.
                let same_spec = state.configs.get(&c.name_any()).is_some_and(|old| {
                    old.spec == c.spec
                        && old.metadata.creation_timestamp == c.metadata.creation_timestamp
                });
                state.configs.insert(c.name_any(), c);
                if same_spec {
                    Touched::Nothing
                } else {
                    Touched::Everything
                }
            }
            watcher::Event::Delete(c) => {
                state.configs.remove(&c.name_any());
                Touched::Everything
            }
            watcher::Event::Init => {
                buffers.configs = Some(BTreeMap::new());
                Touched::Nothing
            }
            watcher::Event::InitApply(c) => {
                buffers
                    .configs
                    .get_or_insert_default()
                    .insert(c.name_any(), c);
                Touched::Nothing
            }
            watcher::Event::InitDone => {
                synced[2] = true;
                state.configs = buffers.configs.take().unwrap_or_default();
                Touched::Everything
            }
        },
    }
}

/// The configuration in force: the oldest LoadBalancerConfig (a second one is a mistake the
/// operator reports as Degraded), if it is valid; else the last valid one stays.
async fn load_config(ctx: &Context, state: &mut State) {
    let oldest = state.configs.values().min_by(|a, b| {
        let created = |c: &LoadBalancerConfig| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let Some(config) = oldest else {
        if state.config.take().is_some() {
            tracing::warn!("the LoadBalancerConfig is gone: no new addresses; assigned ones stay");
        }
        state.no_pools = true;
        return;
    };
    if state
        .config
        .as_ref()
        .is_some_and(|(n, s)| *n == config.name_any() && *s == config.spec)
    {
        return;
    }
    let candidate = Some((config.name_any(), config.spec.clone()));
    if state.rejected == candidate {
        return;
    }
    if let Err(problems) = validate(&config.spec) {
        state.rejected = candidate;
        ctx.metrics.config_stale.set(1);
        tracing::error!(config = %config.name_any(), %problems, "LoadBalancerConfig rejected; the last valid configuration stays in force");
        let event = Event {
            type_: EventType::Warning,
            reason: "ConfigRejected".into(),
            note: Some(truncate(&format!(
                "the last valid configuration stays in force:\n{problems}"
            ))),
            action: "Validate".into(),
            secondary: None,
        };
        ctx.events.publish(&event, config.object_ref(&()));
        return;
    }
    ctx.metrics.config_stale.set(0);
    state.rejected = None;
    let spec = config.spec.clone();
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
    state.config = Some((config.name_any(), spec));
    state.usage_dirty = true;
}

fn class(state: &State) -> &str {
    state
        .config
        .as_ref()
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
            let svc = &state.services[key];
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
    for (key, svc) in &state.services {
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
    state.pending.retain(|k| services.contains_key(k));
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
        state.written.remove(key);
        if state.allocator.release(key).is_some() {
            state.usage_dirty = true;
            state.freed = true;
            tracing::info!(service = key, "released addresses of a deleted Service");
        }
        return;
    };
    if !is_ours(&svc, &class) {
        state.pending.remove(key);
        state.written.remove(key);
        if state.allocator.release(key).is_some() {
            state.usage_dirty = true;
            state.freed = true;
            tracing::info!(
                service = key,
                "released addresses of a Service that is no longer ours"
            );
            clear(ctx, &svc).await;
        }
        return;
    }
    let labels = namespace_labels(state, &svc);
    let outcome = match service::request(&svc, &labels) {
        Err(e) => failed_request(&e),
        Ok(req) => {
            let current = status_ips(&svc);
            let known = state.allocator.assignment(key).map(|a| a.ips.clone());
            if state.no_pools {
                match known.or(Some(current).filter(|c| !c.is_empty())) {
                    // Nothing to allocate from, but what is held stays.
                    Some(ips) if !ips.is_empty() => Outcome::Allocated(Assignment {
                        pool: allocated_pool(&svc).unwrap_or_default().to_owned(),
                        ips,
                    }),
                    _ => failure(&AllocationError::NoPools),
                }
            } else {
                // Addresses in status that the allocator does not know yet (written by an
                // earlier leader, or restored after a config change) are claimed first.
                if known.is_none() && !current.is_empty() {
                    let _ = state.allocator.assign(&req, &current);
                }
                match state.allocator.allocate(&req) {
                    Ok(a) => {
                        state.freed |= known.is_some_and(|k| k != a.ips);
                        Outcome::Allocated(a)
                    }
                    Err(e) => {
                        // A changed request that cannot be met keeps what the Service holds:
                        // the allocator still reserves it, and the status is left as it is.
                        let mut outcome = failure(&e);
                        if let (Outcome::Failed { message, .. }, Some(_)) =
                            (&mut outcome, state.allocator.assignment(key))
                        {
                            message.push_str("; the Service keeps its current addresses");
                        }
                        outcome
                    }
                }
            }
        }
    };
    let result = match &outcome {
        Outcome::Allocated(_) => "IPAllocated",
        Outcome::Failed { reason, .. } => reason,
    };
    match &outcome {
        Outcome::Allocated(_) => {
            state.pending.remove(key);
        }
        Outcome::Failed { .. } => {
            state.pending.insert(key.to_owned());
        }
    }
    state.usage_dirty = true;
    if state.written.get(key) == Some(&outcome) {
        return;
    }
    match write(ctx, &svc, &outcome, received).await {
        None => {}
        Some(wrote) => {
            if wrote {
                ctx.metrics
                    .allocations
                    .get_or_create(&ResultLabels {
                        result: result.to_owned(),
                    })
                    .inc();
            }
            state.written.insert(key.to_owned(), outcome);
        }
    }
}

fn failure(e: &AllocationError) -> Outcome {
    Outcome::Failed {
        reason: e.reason(),
        message: e.to_string(),
    }
}

fn failed_request(e: &RequestError) -> Outcome {
    Outcome::Failed {
        reason: e.reason(),
        message: e.to_string(),
    }
}

fn describe(a: &Assignment) -> String {
    let ips: Vec<String> = a.ips.iter().map(ToString::to_string).collect();
    if a.pool.is_empty() {
        ips.join(", ")
    } else {
        format!("{} from pool {}", ips.join(", "), a.pool)
    }
}

/// Writes `outcome` to the Service where it differs from what is there: Some(true) when it
/// wrote, Some(false) when nothing differed, None when a write failed (it is retried later; an
/// Event is published once the status is written, even if the annotation failed).
async fn write(
    ctx: &Context,
    svc: &ServiceView,
    outcome: &Outcome,
    received: Option<Instant>,
) -> Option<bool> {
    let (status, reason, message, ips, pool) = match outcome {
        Outcome::Allocated(a) => (
            "True",
            "IPAllocated",
            describe(a),
            a.ips.clone(),
            Some(a.pool.as_str()).filter(|p| !p.is_empty()),
        ),
        Outcome::Failed { reason, message } => (
            "False",
            *reason,
            message.clone(),
            status_ips(svc),
            allocated_pool(svc),
        ),
    };
    let unchanged = service::condition(svc) == Some((status, reason, message.as_str()))
        && status_ips(svc) == ips
        && allocated_pool(svc) == pool;
    if unchanged {
        return Some(false);
    }
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &svc.namespace);
    let name = &svc.name;
    let started = Instant::now();
    let transition = match &svc.condition {
        Some(old) if old.status == status => Some(old.last_transition_time.clone()),
        _ => None,
    };
    let condition = Condition {
        type_: CONDITION_TYPE.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.clone(),
        observed_generation: svc.generation,
        last_transition_time: transition.unwrap_or(Time(Timestamp::now())),
    };
    let ingress: Vec<_> = ips
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
    if let Some(pool) = pool {
        status_patch["metadata"] = json!({"annotations": {ALLOCATED_FROM_POOL: pool}});
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let annotate = async {
        if pool.is_some() || allocated_pool(svc).is_none() {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {ALLOCATED_FROM_POOL: null}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    };
    let write_status = async {
        let written = api
            .patch_status(name, &params, &Patch::Apply(&status_patch))
            .await;
        (written, Instant::now())
    };
    let (annotated, (status_written, acked)) = tokio::join!(annotate, write_status);
    if let Err(e) = &annotated {
        tracing::warn!(service = %svc.key(), error = %e, "cannot write the pool annotation");
    }
    if let Err(e) = status_written {
        tracing::warn!(service = %svc.key(), error = %e, "cannot write Service status");
        return None;
    }
    let changed_ips = status_ips(svc) != ips;
    match outcome {
        Outcome::Allocated(a) if changed_ips => {
            if let Some(at) = received {
                let observe = |stage, d: Duration| {
                    ctx.metrics
                        .allocation_latency
                        .get_or_create(&StageLabels { stage })
                        .observe(d.as_secs_f64());
                };
                observe("api", acked - started);
                observe("total", acked - at);
            }
            tracing::info!(service = %svc.key(), ips = %describe(a), "allocated");
            let event = Event {
                type_: EventType::Normal,
                reason: "IPAllocated".into(),
                note: Some(format!("Assigned {}", describe(a))),
                action: "Allocate".into(),
                secondary: None,
            };
            ctx.events.publish(&event, svc.object_ref());
        }
        Outcome::Failed { reason, message } => {
            tracing::info!(service = %svc.key(), reason, message, "allocation failed");
            let event = Event {
                type_: EventType::Warning,
                reason: "AllocationFailed".into(),
                note: Some(truncate(&format!("{reason}: {message}"))),
                action: "Allocate".into(),
                secondary: None,
            };
            ctx.events.publish(&event, svc.object_ref());
        }
        Outcome::Allocated(_) => {}
    }
    // A missing annotation is written again at the next event of this Service.
    annotated.is_ok().then_some(true)
}

/// Removes what the controller wrote on a Service it no longer handles.
async fn clear(ctx: &Context, svc: &ServiceView) {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &svc.namespace);
    let name = &svc.name;
    let patch = json!({"metadata": {"annotations": {ALLOCATED_FROM_POOL: null}}});
    let _ = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    // Applying an empty status drops the fields this manager owned.
    let patch = json!({"apiVersion": "v1", "kind": "Service", "status": {}});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(e) = api.patch_status(name, &params, &Patch::Apply(&patch)).await {
        tracing::warn!(service = %svc.key(), error = %e, "cannot clear Service status");
    }
}

/// Writes pool usage to the configuration's status and the metrics.
async fn write_usage(ctx: &Context, state: &State) {
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
    let Some((name, _)) = &state.config else {
        return;
    };
    let api: Api<LoadBalancerConfig> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "LoadBalancerConfig",
        "status": {"pools": pools},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(e) = api.patch_status(name, &params, &Patch::Apply(&patch)).await {
        tracing::warn!(config = %name, error = %e, "cannot write pool usage");
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
