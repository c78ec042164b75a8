//! Layer 2 announcement: answers ARP (IPv4) and NDP (IPv6) for the load-balancer IPs this node
//! leads, on raw packet sockets.
//!
//! - `packet` is the pure codec and `answer` the pure decision (what to reply, what to announce);
//! - `interfaces` decides which interfaces may be answered on; `link` holds one interface's
//!   sockets; `sys` is the only unsafe code (a `sockaddr_ll`, and registering a socket with Tokio);
//! - [`Responder`] runs it: one task per interface reading frames, one short-lived task per
//!   (IP, interface) sending the takeover announcements, and a manager task that rescans the
//!   interfaces and follows [`Responder::set`].
//!
//! Silence is immediate: every reply and every repeated announcement looks at the desired set at
//! the moment it would be sent, so after `set` returns nothing more is sent for a dropped IP.

mod answer;
mod interfaces;
mod link;
mod metrics;
pub mod packet;
mod sys;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use regex::Regex;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use answer::{ALL_NODES, LinkAddrs};
pub use interfaces::{
    DEFAULT_EXCLUDE, Exclusions, Ineligible, Interface, LinkFacts, check, eligible_interfaces,
};
pub use metrics::{L2Labels, L2Metrics};

use link::{Link, Memberships};

/// When the takeover announcements go out, counted from the moment an IP is led on an interface.
pub const ANNOUNCE_SCHEDULE: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// The desired state: each led IP with the interfaces to answer on (empty = every eligible one).
pub type Announcements = BTreeMap<IpAddr, BTreeSet<String>>;

/// How the responder is configured.
#[derive(Clone, Debug)]
pub struct Config {
    /// Interface name patterns never answered on, in addition to [`DEFAULT_EXCLUDE`]. Each must
    /// match the whole name (`eth1` excludes `eth1` only; write `eth.*` for a prefix).
    pub exclude: Vec<Regex>,
    /// How often interfaces are rescanned (they are also rescanned on [`Responder::rescan`]).
    pub rescan: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            exclude: Vec::new(),
            rescan: Duration::from_secs(5),
        }
    }
}

/// Whether `ip` is answered on the interface `name` according to `desired`.
fn answers_on(desired: &Announcements, ip: IpAddr, name: &str) -> bool {
    desired
        .get(&ip)
        .is_some_and(|names| names.is_empty() || names.contains(name))
}

/// Whether an interface can speak for `ip`'s family: NDP only where IPv6 is up (a usable
/// link-local address shows it; joins and NDP are pointless without).
fn speaks_family(iface: &Interface, ip: IpAddr) -> bool {
    ip.is_ipv4() || iface.link_local.is_some()
}

/// Whether a rescanned interface can keep its socket: same device, address and IPv6 state. Flags
/// are left out so that, say, tcpdump switching promiscuous mode on does not re-announce.
fn same_link(now: &Interface, before: &Interface) -> bool {
    (now.index, now.mac, now.link_local) == (before.index, before.mac, before.link_local)
}

/// A task that is cancelled when its handle is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct Shared {
    desired: watch::Sender<Arc<Announcements>>,
    /// The interfaces currently served, by name.
    links: RwLock<BTreeMap<String, Interface>>,
    rescan: Notify,
    reannounce: Notify,
    metrics: L2Metrics,
}

/// The running ARP/NDP responder.
#[derive(Debug)]
pub struct Responder {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    manager: Option<AbortOnDrop>,
}

impl Responder {
    /// Starts answering (for nothing until [`Responder::set`]). Must be called inside a Tokio
    /// runtime; fails without `CAP_NET_RAW` or with an exclusion pattern that cannot be anchored.
    pub fn start(config: Config, metrics: L2Metrics) -> io::Result<Responder> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            io::Error::other(format!("the L2 responder needs a Tokio runtime: {e}"))
        })?;
        let exclusions = Exclusions::new(&config.exclude)?;
        link::check_permission()?;
        let (desired, desired_rx) = watch::channel(Arc::new(Announcements::new()));
        let shared = Arc::new(Shared {
            desired,
            links: RwLock::new(BTreeMap::new()),
            rescan: Notify::new(),
            reannounce: Notify::new(),
            metrics,
        });
        let mut manager = Manager {
            shared: shared.clone(),
            exclusions,
            links: BTreeMap::new(),
            announcing: BTreeMap::new(),
        };
        let _enter = runtime.enter();
        // The first scan is synchronous so that `interfaces` is right as soon as `start` returns.
        manager.rescan();
        let (stop, stop_rx) = oneshot::channel();
        let task = runtime.spawn(manager.run(desired_rx, stop_rx, config.rescan));
        Ok(Responder {
            shared,
            stop: Some(stop),
            manager: Some(AbortOnDrop(task)),
        })
    }

    /// Replaces the desired set: each IP this node leads, with the interfaces to answer on
    /// (empty = every eligible interface; names that are not eligible are ignored). Newly led
    /// (IP, interface) pairs are announced at once and then per [`ANNOUNCE_SCHEDULE`]; pairs no
    /// longer present go silent before this returns.
    pub fn set(&self, announcements: Announcements) {
        self.shared.desired.send_replace(Arc::new(announcements));
    }

    /// The interfaces `ip` is currently answered on, sorted.
    pub fn interfaces(&self, ip: IpAddr) -> Vec<String> {
        let desired = self.shared.desired.borrow().clone();
        let links = self
            .shared
            .links
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        links
            .values()
            .filter(|iface| answers_on(&desired, ip, &iface.name) && speaks_family(iface, ip))
            .map(|iface| iface.name.clone())
            .collect()
    }

    /// Announces every led address again (gratuitous ARP / unsolicited NA, then the repeats), as
    /// if newly led: for when others may have announced them meanwhile, e.g. after this speaker
    /// was cut off and declared dead while it still believed it led them.
    pub fn reannounce(&self) {
        self.shared.reannounce.notify_one();
    }

    /// Rescans the interfaces now rather than at the next periodic rescan.
    pub fn rescan(&self) {
        self.shared.rescan.notify_one();
    }

    /// Stops answering and closes every socket.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut manager) = self.manager.take() {
            let _ = (&mut manager.0).await;
        }
    }
}

/// One served interface.
#[derive(Debug)]
struct Running {
    link: Arc<Link>,
    memberships: Memberships,
    task: AbortOnDrop,
}

/// Owns every socket and task; only the manager task touches it.
#[derive(Debug)]
struct Manager {
    shared: Arc<Shared>,
    exclusions: Exclusions,
    links: BTreeMap<String, Running>,
    /// (IP, interface) pairs led, with the task that announced (or is announcing) them.
    announcing: BTreeMap<(IpAddr, String), AbortOnDrop>,
}

impl Manager {
    async fn run(
        mut self,
        mut desired: watch::Receiver<Arc<Announcements>>,
        mut stop: oneshot::Receiver<()>,
        every: Duration,
    ) {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        self.reconcile(&desired.borrow_and_update().clone());
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                changed = desired.changed() => if changed.is_err() { break },
                _ = tick.tick() => self.rescan(),
                () = shared.rescan.notified() => self.rescan(),
                // Look at the links afresh (one may just have come back) and forget what was
                // announced, so `reconcile` announces it all again.
                () = shared.reannounce.notified() => {
                    self.rescan();
                    self.announcing.clear();
                }
            }
            self.reconcile(&desired.borrow_and_update().clone());
        }
        tracing::info!("L2 responder stopped");
        // Dropping `self` aborts every task and closes every socket.
    }

    fn rescan(&mut self) {
        let found = match interfaces::scan(&self.exclusions) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list network interfaces");
                return;
            }
        };
        let found: BTreeMap<String, Interface> =
            found.into_iter().map(|i| (i.name.clone(), i)).collect();
        self.links.retain(|name, running| {
            let keep = found
                .get(name)
                .is_some_and(|now| same_link(now, &running.link.iface))
                && !running.task.0.is_finished();
            if !keep {
                tracing::info!(interface = %name, "no longer answering ARP/NDP on interface");
            }
            keep
        });
        let links = &self.links;
        self.announcing
            .retain(|(_, name), _| links.contains_key(name));
        for (name, iface) in found {
            if self.links.contains_key(&name) {
                continue;
            }
            let index = iface.index;
            match Link::open(iface) {
                Ok(link) => {
                    tracing::info!(interface = %name, "answering ARP/NDP on interface");
                    let link = Arc::new(link);
                    let task = tokio::spawn(serve(
                        link.clone(),
                        self.shared.desired.subscribe(),
                        self.shared.metrics.clone(),
                    ));
                    self.links.insert(
                        name,
                        Running {
                            link,
                            memberships: Memberships::new(index),
                            task: AbortOnDrop(task),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(interface = %name, error = %e, "cannot open packet socket");
                }
            }
        }
        let snapshot = self
            .links
            .iter()
            .map(|(name, running)| (name.clone(), running.link.iface.clone()))
            .collect();
        *self
            .shared
            .links
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
    }

    fn reconcile(&mut self, desired: &Announcements) {
        let mut wanted = BTreeSet::new();
        for (name, running) in &mut self.links {
            let iface = &running.link.iface;
            let mut groups = BTreeSet::new();
            for ip in desired.keys().copied() {
                if !answers_on(desired, ip, name) || !speaks_family(iface, ip) {
                    continue;
                }
                wanted.insert((ip, name.clone()));
                if let IpAddr::V6(v6) = ip {
                    groups.insert(packet::solicited_node(v6));
                }
            }
            running.memberships.set(&groups, name);
        }
        self.announcing.retain(|pair, _| wanted.contains(pair));
        for (ip, name) in wanted {
            if self.announcing.contains_key(&(ip, name.clone())) {
                continue;
            }
            let Some(running) = self.links.get(&name) else {
                continue;
            };
            let task = tokio::spawn(announce(
                running.link.clone(),
                ip,
                self.shared.desired.subscribe(),
                self.shared.metrics.clone(),
            ));
            self.announcing.insert((ip, name), AbortOnDrop(task));
        }
    }
}

/// Answers requests arriving on one interface until its socket fails.
async fn serve(link: Arc<Link>, desired: watch::Receiver<Arc<Announcements>>, metrics: L2Metrics) {
    let name = link.iface.name.as_str();
    let addrs = LinkAddrs {
        mac: link.iface.mac,
        ipv6: link.iface.link_local.is_some(),
    };
    let mut buf = vec![0u8; link::FRAME_BUFFER];
    loop {
        let len = match link.recv(&mut buf).await {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!(interface = name, error = %e, "packet socket failed; reopening on next rescan");
                return;
            }
        };
        let Some(frame) = buf.get(..len).and_then(|b| packet::parse(b).ok()) else {
            continue;
        };
        // Read at the moment of answering: a dropped IP is silent from `set` on.
        let current = desired.borrow().clone();
        let leads = |ip| answers_on(&current, ip, name);
        let Some(target) = answer::request_target(&frame).filter(|ip| leads(*ip)) else {
            continue;
        };
        let labels = L2Labels::new(target, name);
        metrics.requests_received.get_or_create(&labels).inc();
        if let Some(reply) = answer::reply(&frame, &addrs, leads) {
            match link.send(&packet::build(&reply)).await {
                Ok(()) => {
                    metrics.replies_sent.get_or_create(&labels).inc();
                }
                Err(e) => {
                    tracing::warn!(interface = name, %target, error = %e, "cannot send reply")
                }
            }
        }
    }
}

/// Sends the takeover announcements for `ip` on one interface, stopping as soon as it is no
/// longer led there.
async fn announce(
    link: Arc<Link>,
    ip: IpAddr,
    desired: watch::Receiver<Arc<Announcements>>,
    metrics: L2Metrics,
) {
    let name = link.iface.name.as_str();
    let mac = link.iface.mac;
    let frames: Vec<Vec<u8>> = match (ip, link.iface.link_local.is_some()) {
        (IpAddr::V4(v4), _) => answer::gratuitous_arp(mac, v4)
            .iter()
            .map(packet::build)
            .collect(),
        (IpAddr::V6(v6), true) => vec![packet::build(&answer::unsolicited_na(mac, v6))],
        (IpAddr::V6(_), false) => return,
    };
    let labels = L2Labels::new(ip, name);
    let start = Instant::now();
    for (round, offset) in ANNOUNCE_SCHEDULE.iter().enumerate() {
        tokio::time::sleep_until(start + *offset).await;
        for frame in &frames {
            if !answers_on(&desired.borrow(), ip, name) {
                return;
            }
            match link.send(frame).await {
                Ok(()) => {
                    metrics.gratuitous_sent.get_or_create(&labels).inc();
                }
                Err(e) => {
                    tracing::warn!(interface = name, %ip, error = %e, "cannot send announcement");
                }
            }
        }
        if round == 0 {
            tracing::info!(interface = name, %ip, "announced");
        }
    }
}
