//! The speaker's event loop: watches feed the [`World`], membership says who is alive, and every
//! change recomputes what this node announces and hands it to the ARP/NDP responder at once, then
//! to the BGP sessions (which send only what changed).
//! Events (the shared bounded publisher) and the Service condition (a queue that keeps the latest
//! condition per Service) are written by separate tasks, so a burst of API writes never delays a
//! takeover.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::watch;

use ferrolb_api::in_force::Change as ConfigChange;
use ferrolb_api::wiring;
use ferrolb_runtime::events::Publisher;
use ferrolb_runtime::latest::{LatestReceiver, LatestSender, latest};
use ferrolb_runtime::{Probes, memory};

use crate::announce::bgp::{BgpPlan, BgpRoutes, bgp_reports};
use crate::announce::condition::{Write, announced_condition, condition_write};
use crate::bgp::peers::bfd::bfd_config;
use crate::bgp::peers::{NodeAddresses, Sessions, Wanted, password_for, peer_config};
use crate::bgp::report::{BgpMetrics, Reporter, write_sessions};
use crate::bgp::secrets::{SecretReader, SecretsRead};
use crate::l2::Responder;
use crate::membership::keys::{KeyFiles, REREAD};
use crate::membership::{self, Keys, Membership, MembershipMetrics, View};
use crate::metrics::Metrics;
use crate::world::decoded::{self, DecodedService, DecodedSlice};
use crate::world::{ANNOUNCED_CONDITION, Changed, Plan, World};
use ferrolb_api::v1alpha1::LoadBalancerConfig;

/// The field manager of everything the speaker writes.
pub const FIELD_MANAGER: &str = wiring::field_managers::SPEAKER;

/// What the speaker needs to run.
pub struct Context {
    /// API client (the speaker's own ServiceAccount).
    pub client: Client,
    /// Publishes Events as `ferrolb-speaker`, instance = node name.
    pub events: Publisher,
    /// This node's name.
    pub node: String,
    /// Namespace of the speaker pods.
    pub namespace: String,
    /// Label selector of the speaker pods.
    pub speaker_selector: String,
    /// The file holding the membership key (a Secret mounted as a volume); the keys `next` and
    /// `previous` of a rotation are files beside it ([`membership::keys`]).
    pub key_file: PathBuf,
    /// Liveness settings; `keys` are read from the key files.
    pub membership: membership::Config,
    /// The running responder.
    pub responder: Responder,
    /// The speaker's own metrics.
    pub metrics: Metrics,
    /// Readiness: set once every watch has synced and announcements are computed.
    pub probes: Probes,
    /// The membership metrics, registered once and shared by every start of the membership.
    pub membership_metrics: MembershipMetrics,
    /// The BGP sessions' metrics.
    pub bgp_metrics: BgpMetrics,
    /// This speaker's pod, the owner of its BGPSession objects (None: they are not owned).
    pub pod: Option<OwnerReference>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch stream ended, which kube's watcher never does on its own.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

enum Input {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Node(Box<watcher::Event<Node>>),
    Speaker(Box<watcher::Event<Pod>>),
    Config(Box<watcher::Event<LoadBalancerConfig>>),
}

/// What this node announces now, and what it last reported.
#[derive(Default)]
struct Announcing {
    /// What this node leads and who leads the others, kept up to date change by change.
    plan: Plan,
    /// IP → interfaces to answer on (empty: every eligible one), as the responder has it.
    led: BTreeMap<IpAddr, BTreeSet<String>>,
    /// Conditions sent to the reporter that the watch has not shown back yet:
    /// Service → (status, message, when sent). Resent when older than [`RESEND`].
    sent: HashMap<String, (String, String, std::time::Instant)>,
    /// This speaker's membership incarnation when last seen.
    incarnation: u64,
}

/// How long a condition write may take to come back through the watch before it is sent again.
const RESEND: Duration = Duration::from_secs(10);

/// The most watch events taken at once before recomputing (bounds the time between two looks at
/// the membership and the shutdown signal).
const DRAIN: usize = 1_000;

/// Runs until a watch ends (never, in practice) or the process is told to stop.
pub async fn run(mut ctx: Context, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let watch_config = watcher::Config::default();
    // The two big kinds decoded without managedFields (world::decoded).
    let services = watcher(
        Api::<DecodedService>::all(client.clone()),
        watch_config.clone(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Input::Service(Box::new(decoded::full(e)))));
    let slices = watcher(
        Api::<DecodedSlice>::all(client.clone()),
        watch_config.clone(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Input::Slice(Box::new(decoded::full(e)))));
    let nodes = watcher(Api::<Node>::all(client.clone()), watch_config.clone())
        .default_backoff()
        .map(|e| e.map(|e| Input::Node(Box::new(e))));
    let speakers = watcher(
        Api::<Pod>::namespaced(client.clone(), &ctx.namespace),
        watcher::Config::default().labels(&ctx.speaker_selector),
    )
    .default_backoff()
    .map(|e| e.map(|e| Input::Speaker(Box::new(e))));
    let configs = watcher(Api::<LoadBalancerConfig>::all(client.clone()), watch_config)
        .default_backoff()
        .map(|e| e.map(|e| Input::Config(Box::new(e))));
    let streams: [futures::stream::BoxStream<'static, Result<Input, watcher::Error>>; 5] = [
        services.boxed(),
        slices.boxed(),
        nodes.boxed(),
        speakers.boxed(),
        configs.boxed(),
    ];
    let mut inputs = futures::stream::select_all(streams);

    // Only the latest condition per Service waits: bounded by the Services, however slow the
    // API server is.
    let (conditions, conditions_rx) = latest();
    let writer = tokio::spawn(write_conditions(client.clone(), conditions_rx));

    let mut world = World::default();
    let mut announcing = Announcing::default();
    let mut membership: Option<Membership> = None;
    let (_no_view_tx, no_view) = watch::channel(View::default());
    let mut view = no_view.clone();
    let mut keys: Option<Keys> = None;
    let mut key_files = KeyFiles::beside(&ctx.key_file).watch(REREAD);
    let mut key_files_open = true;
    // Recomputes now and then even when nothing changed, so a failed condition write is retried.
    let mut resync = tokio::time::interval(RESEND / 2);
    // Bursts of watch events (a relist, thousands of Services changing) leave freed memory in the
    // allocator's arenas: given back on the resync tick once it has grown by a step.
    let mut trimmer = memory::Trimmer::default();
    let mut peers = BTreeMap::new();
    let mut sessions = Sessions::default();
    // What this node sends to each of its peers, kept up to date address by address; None until
    // first computed.
    let mut routes: Option<BgpRoutes> = None;
    let mut secrets = SecretReader::spawn(client.clone(), &ctx.namespace);
    let mut secrets_open = true;
    let (mut reporter, session_objects) = Reporter::new(&ctx.node, ctx.bgp_metrics.clone());
    let session_writer = tokio::spawn(write_sessions(
        client.clone(),
        ctx.namespace.clone(),
        ctx.node.clone(),
        ctx.pod.clone(),
        session_objects,
    ));
    // Recompute everything after the membership or the key changed and on every resync tick;
    // after watch events, only the addresses they changed (if any).
    let mut stale = true;
    // The first list of every watch, timed for the log (the start time of BGP and L2 is mostly it).
    let started = std::time::Instant::now();
    let mut was_synced = false;
    tokio::pin!(shutdown);

    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            _ = resync.tick() => {
                stale = true;
                if let Some(free) = trimmer.tick() {
                    tracing::debug!(free, "freed memory returned");
                }
            }
            changed = key_files.changed(), if key_files_open => {
                if changed.is_err() {
                    // The reader task died (it never returns on its own): keep the keys in use.
                    tracing::error!("the membership key files are no longer read");
                    key_files_open = false;
                    continue;
                }
                let read = key_files.borrow_and_update().clone();
                stale = true;
                let before = std::mem::replace(&mut keys, read);
                membership = update_membership(&ctx, membership, before.as_ref(), keys.clone()).await;
                view = membership.as_ref().map_or_else(|| no_view.clone(), Membership::subscribe);
                if let Some(m) = &membership {
                    m.set_peers(peers.clone());
                }
            }
            changed = secrets.read().changed(), if secrets_open => {
                if changed.is_err() {
                    // The reader task died (it never returns on its own): keep what was read.
                    tracing::error!("the BGP password Secrets are no longer read");
                    secrets_open = false;
                }
                stale = true;
            }
            changed = view.changed() => {
                stale = true;
                if changed.is_err() {
                    // The membership stopped; Kubernetes readiness alone decides until it is back.
                    view = no_view.clone();
                }
            }
            input = inputs.next() => {
                let Some(input) = input else { break Err(Error::WatchEnded("input")) };
                // Take the events already waiting too, so a burst costs one recompute.
                let mut next = Some(input);
                let mut taken = 0;
                while let Some(input) = next.take() {
                    taken += 1;
                    if taken < DRAIN {
                        next = inputs.next().now_or_never().flatten();
                    }
                    let input = match input {
                        Ok(input) => input,
                        Err(e) => {
                            tracing::warn!(error = %e, "watch error; retrying with backoff");
                            continue;
                        }
                    };
                    match input {
                        Input::Service(e) => world.service_event(*e),
                        Input::Slice(e) => world.slice_event(*e),
                        Input::Node(e) => world.node_event(*e),
                        Input::Speaker(e) => world.speaker_event(*e),
                        Input::Config(e) => {
                            match world.config_event(*e) {
                                ConfigChange::Rejected { name, problems } => tracing::error!(config = %name, %problems,
                                    "LoadBalancerConfig rejected; the last valid configuration stays in force"),
                                ConfigChange::Gone => tracing::warn!(
                                    "the LoadBalancerConfig is gone; announcing with the last valid one"),
                                ConfigChange::InForce | ConfigChange::Unchanged => {}
                            }
                            ctx.metrics.config_stale.set(i64::from(world.config_stale()));
                        }
                    }
                }
                let new_peers = world.peers(&ctx.node);
                if new_peers != peers {
                    peers = new_peers;
                    if let Some(m) = &membership {
                        m.set_peers(peers.clone());
                    }
                }
            }
        }
        if !world.synced() {
            continue;
        }
        let first_pass = !was_synced;
        if first_pass {
            was_synced = true;
            let (services, slices) = world.sizes();
            tracing::info!(
                services,
                slices,
                nodes = world.nodes().len(),
                after = ?started.elapsed(),
                "every watch listed; announcing"
            );
        }
        // The world's own changes drive the BGP routes; the membership and the resync tick
        // matter only to Layer 2 and the conditions.
        let from_world = world.take_changed();
        let changed = match (std::mem::take(&mut stale), &from_world) {
            (true, _) => Changed::Everything,
            (false, Changed::Nothing) => continue,
            (false, changed) => changed.clone(),
        };
        let current = view.borrow().clone();
        // The BGP view of the config and the Nodes, resolved once for this pass.
        let plan = world
            .config()
            .map(|config| BgpPlan::new(config, world.nodes()));
        recompute(
            &mut ctx,
            &world,
            plan.as_ref(),
            &current,
            &changed,
            &mut announcing,
            &conditions,
        );
        if let Some(plan) = &plan {
            let read = secrets.read().borrow().clone();
            let bgp = Bgp {
                sessions: &mut sessions,
                reporter: &mut reporter,
                routes: &mut routes,
            };
            secrets.set_wanted(update_bgp(&ctx.node, &world, plan, &from_world, &read, bgp));
        }
        ctx.probes.set_ready(true);
        if first_pass {
            // The lists were decoded page by page on every worker thread, whose arenas keep
            // those pages: hand them back now that only the slim views remain.
            let in_use = memory::heap().map(|h| h.in_use);
            let free = trimmer.tick();
            tracing::info!(in_use, free, "first pass done");
        }
    };

    // Leave first, so the others take over at once, then go silent.
    if let Some(m) = membership {
        m.shutdown().await;
    }
    sessions.leave_for_restart().await;
    session_writer.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    ctx.responder.shutdown().await;
    drop(conditions);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    result
}

/// Starts, re-keys or stops the membership after the key files changed (from `before`).
async fn update_membership(
    ctx: &Context,
    running: Option<Membership>,
    before: Option<&Keys>,
    keys: Option<Keys>,
) -> Option<Membership> {
    match (running, keys) {
        (Some(m), Some(keys)) => {
            let new_send_key = before.is_none_or(|b| b.send() != keys.send());
            // Never the keys themselves: only what changed.
            tracing::info!(
                new_send_key,
                accepted = keys.accepted().count(),
                "membership keys changed; re-keying"
            );
            m.set_keys(keys);
            Some(m)
        }
        (Some(m), None) => {
            tracing::warn!(file = %ctx.key_file.display(),
                "membership key gone; liveness falls back to Kubernetes readiness (slow failover)");
            m.shutdown().await;
            ctx.membership_metrics.keys.set(0);
            None
        }
        (None, Some(keys)) => {
            let config = membership::Config {
                node: ctx.node.clone(),
                keys,
                ..ctx.membership.clone()
            };
            match Membership::start(config, ctx.membership_metrics.clone()).await {
                Ok(m) => {
                    tracing::info!(port = ctx.membership.port, "membership started");
                    Some(m)
                }
                Err(e) => {
                    tracing::error!(error = %e, port = ctx.membership.port,
                        "cannot start the membership; liveness falls back to Kubernetes readiness");
                    None
                }
            }
        }
        (None, None) => {
            tracing::warn!(file = %ctx.key_file.display(),
                "no membership key (create the Secret ferrolb-memberlist); liveness falls back to Kubernetes readiness (slow failover)");
            None
        }
    }
}

/// Recomputes what this node announces for what `changed`; applies it to the responder first,
/// then queues reports.
fn recompute(
    ctx: &mut Context,
    world: &World,
    plan: Option<&BgpPlan<'_>>,
    view: &View,
    changed: &Changed,
    announcing: &mut Announcing,
    conditions: &LatestSender<String, Condition>,
) {
    let speakers = world.speaker_nodes();
    let mut live = view.live(speakers.iter().map(String::as_str), |node| {
        world.kubernetes_ready(node)
    });
    live.insert(ctx.node.clone());
    ctx.metrics
        .live_speakers
        .set(i64::try_from(live.len()).unwrap_or(i64::MAX));

    let Some(config) = world.config() else {
        return;
    };
    let views = world.update_plan(&ctx.node, &live, changed, &mut announcing.plan);
    if *changed == Changed::Everything {
        // conditions of Services that are gone will never come back through the watch
        let keys: BTreeSet<&String> = views.iter().map(|v| &v.key).collect();
        announcing.sent.retain(|k, _| keys.contains(k));
    }
    let (mine, leaders) = (&announcing.plan.mine, &announcing.plan.leaders);
    // A bigger incarnation means the others declared this speaker dead (it was cut off, or too
    // slow) and may have announced its addresses meanwhile: claim them back on the wire.
    let refuted = announcing.incarnation != 0 && view.incarnation > announcing.incarnation;
    if view.incarnation != 0 {
        announcing.incarnation = view.incarnation;
    }
    let led: BTreeMap<IpAddr, BTreeSet<String>> = mine
        .iter()
        .map(|(ip, a)| (*ip, a.interfaces.clone()))
        .collect();
    if led != announcing.led {
        ctx.responder.set(led.clone());
        let gained: Vec<IpAddr> = led
            .keys()
            .filter(|ip| !announcing.led.contains_key(ip))
            .copied()
            .collect();
        let lost = announcing
            .led
            .keys()
            .filter(|ip| !led.contains_key(ip))
            .count();
        ctx.metrics.gained.inc_by(gained.len() as u64);
        ctx.metrics.lost.inc_by(lost as u64);
        ctx.metrics
            .announced
            .set(i64::try_from(led.len()).unwrap_or(i64::MAX));
        for a in gained.iter().filter_map(|ip| mine.get(ip)) {
            let on = on_interfaces(&ctx.responder, a.ip);
            tracing::info!(ip = %a.ip, interfaces = %on, services = ?a.services, "announcing");
            for service in &a.services {
                let Some((namespace, name)) = service.split_once('/') else {
                    continue;
                };
                let event = Event {
                    type_: EventType::Normal,
                    reason: ferrolb_api::condition::reasons::ANNOUNCED.into(),
                    note: Some(format!("{} announces {} on {on}", ctx.node, a.ip)),
                    action: "Announce".into(),
                    secondary: None,
                };
                ctx.events.publish(&event, service_ref(namespace, name));
            }
        }
        for ip in announcing.led.keys().filter(|ip| !led.contains_key(ip)) {
            tracing::info!(%ip, "no longer announcing");
        }
        announcing.led = led;
    }
    if refuted && !announcing.led.is_empty() {
        tracing::info!(
            addresses = announcing.led.len(),
            "this speaker was declared dead while alive; announcing its addresses again"
        );
        ctx.responder.reannounce();
    }

    // The Service condition: decided by `announced_condition` (which speaker writes it, and
    // what), written when the Service's status does not show it yet.
    let bgp = match plan {
        Some(plan) if !config.bgp_advertisements.is_empty() => bgp_reports(plan, config, &views),
        _ => BTreeMap::new(),
    };
    for svc in &views {
        let Some(want) = announced_condition(
            &ctx.node,
            svc,
            leaders,
            &live,
            |ip| on_interfaces(&ctx.responder, ip),
            |ip| bgp.get(&ip).cloned(),
        ) else {
            continue;
        };
        let current = world.announced_condition(&svc.key);
        let sent = announcing
            .sent
            .get(&svc.key)
            .map(|(status, message, at)| (status.as_str(), message.as_str(), at.elapsed()));
        let holds = current.map(|c| (c.status.as_str(), c.message.as_str()));
        match condition_write((want.status, &want.message), holds, sent, RESEND) {
            Write::Settled => {
                announcing.sent.remove(&svc.key);
            }
            Write::InFlight => {}
            Write::Send => {
                announcing.sent.insert(
                    svc.key.clone(),
                    (
                        want.status.to_owned(),
                        want.message.clone(),
                        std::time::Instant::now(),
                    ),
                );
                // The transition time moves only when the status does.
                let condition = ferrolb_api::condition::condition(
                    ANNOUNCED_CONDITION,
                    want.status,
                    want.reason,
                    want.message,
                    None,
                    current.map(|c| (c.status.as_str(), &c.since)),
                    Time(Timestamp::now()),
                );
                conditions.send(svc.key.clone(), condition);
            }
        }
    }
}

/// This node's BGP sessions, what reports them, and the routes they are sent.
struct Bgp<'a> {
    sessions: &'a mut Sessions,
    reporter: &'a mut Reporter,
    routes: &'a mut Option<BgpRoutes>,
}

/// Brings this node's BGP sessions to what the configuration wants, hands them their routes
/// (recomputing only those of the addresses the world `changed`, unless it changed everything)
/// and reports them; returns the Secrets the sessions' passwords are in (to read from now on).
fn update_bgp(
    me: &str,
    world: &World,
    plan: &BgpPlan<'_>,
    changed: &Changed,
    secrets: &SecretsRead,
    bgp: Bgp<'_>,
) -> BTreeSet<String> {
    let Bgp {
        sessions,
        reporter,
        routes,
    } = bgp;
    let peers = plan.peers_for(me);
    let profiles = world
        .config()
        .map_or(&[][..], |c| c.bfd_profiles.as_slice());
    if peers.is_empty() && sessions.is_empty() && sessions.problems().is_empty() {
        *routes = None;
        return BTreeSet::new();
    }
    let node = NodeAddresses::of(
        world
            .nodes()
            .get(me)
            .map_or(&[], |n| n.addresses.as_slice()),
    );
    let wanted = peers
        .iter()
        .map(|peer| {
            let password = peer
                .password_secret_ref
                .as_ref()
                .and_then(|r| password_for(secrets, r));
            let wanted = peer_config(peer, node, password.as_ref()).map(|session| {
                let bfd = peer.bfd_profile.as_ref().map(|name| {
                    let profile = profiles.iter().find(|p| p.name == *name).ok_or_else(|| {
                        format!("bgpPeers[{}].bfdProfile: no profile {name:?}", peer.name)
                    })?;
                    bfd_config(peer, &session, node, profile)
                });
                Wanted { session, bfd }
            });
            (peer.name.clone(), wanted)
        })
        .collect();
    let routes = match (routes.as_mut(), changed) {
        (Some(routes), Changed::Nothing) => routes,
        (Some(routes), Changed::Addresses(ips)) => {
            plan.update_routes(me, routes, ips, |prefixes| world.service_views_in(prefixes));
            routes
        }
        (_, Changed::Everything) | (None, _) => {
            routes.insert(plan.routes(me, &world.service_views()))
        }
    };
    sessions.update(wanted, routes);
    reporter.report(&sessions.report(peers));
    if let Some(counters) = sessions.bfd_counters() {
        reporter.count_bfd(&counters);
    }
    peers
        .iter()
        .filter_map(|p| Some(p.password_secret_ref.as_ref()?.name.clone()))
        .collect()
}

/// The interfaces an address is answered on, for people.
fn on_interfaces(responder: &Responder, ip: IpAddr) -> String {
    let interfaces = responder.interfaces(ip);
    if interfaces.is_empty() {
        "no eligible interface".to_owned()
    } else {
        interfaces.join(", ")
    }
}

/// Writes the latest condition of each Service, without holding up the event loop.
async fn write_conditions(client: Client, mut conditions: LatestReceiver<String, Condition>) {
    while let Some((service, condition)) = conditions.recv().await {
        let Some((namespace, name)) = service.split_once('/') else {
            continue;
        };
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        let patch = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "status": {"conditions": [condition]},
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(e) = api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            tracing::warn!(%service, error = %e, "cannot write the Announced condition");
        }
    }
}

/// A reference to a Service the world knows only by key, for its Events.
fn service_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(Service::api_version(&()).into_owned()),
        kind: Some(Service::kind(&()).into_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectReference::default()
    }
}
