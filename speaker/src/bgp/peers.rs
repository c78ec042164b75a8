//! This node's BGP sessions as the configuration wants them: one [`Peer`] per `bgpPeers` entry
//! that selects the node, started, restarted when its settings change and stopped when it goes,
//! each fed the routes the announcer computes for it ([`crate::announce::bgp`]).
//!
//! [`peer_config`] turns an API peer into the shell's [`PeerConfig`] (pure, tested below):
//! - the session is dialed from the node (active only: the speaker never listens, so it needs no
//!   privileged port), TTL 255 ([`super::shell::TTL`]) whether or not `ebgpMultiHop` is set;
//! - router ID: `routerID`, else the node's first IPv4 InternalIP;
//! - next hops: for the session's own family, the local address of its connection (where the
//!   router reached us: `sourceAddress` when set); for the other family, `sourceAddress` if of
//!   that family, else the node's first InternalIP of it; a family with none is not announced
//!   (the session counts the routes it skips);
//! - `vrf`: the socket is bound to that device (SO_BINDTODEVICE) before it binds and dials, so
//!   the VRF's table routes the session; a node without the device gets a clear last error;
//! - hold time and keepalive as [`BgpPeer::effective_hold_time`] derives them (MetalLB's rule);
//! - `connectTime`: a fixed interval between connection attempts (else the session's back-off);
//! - TCP-MD5: the password the caller read from the referenced Secret;
//! - `gracefulRestart`: the capability with [`RESTART_TIME`]; see [`Sessions::leave_for_restart`];
//! - `bfdProfile`: a BFD session alongside ([`bfd`]), whose failure takes the BGP session down at
//!   once; its timers change without restarting the BGP session.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ferrolb_api::duration::parse_duration;
use ferrolb_api::v1alpha1::{BgpPeer, DynamicAsn, SecretKeyRef};

use self::bfd::{BfdSeen, BfdWanted, Link};
use super::config::RESTART_TIME;
use super::secrets::SecretsRead;
use super::shell::{Password, Peer, PeerConfig, PeerStatus};
use super::{PeerAs, SessionConfig};
use crate::announce::bgp::{BgpRoutes, PeerRoutes};
use crate::bfd::{Bfd, Counters as BfdCounters};

pub mod bfd;

/// The longest TCP-MD5 key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD_LEN: usize = 80;

/// The node's own addresses that sessions use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAddresses {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl NodeAddresses {
    /// The first address of each family among `addresses` (a Node's InternalIPs).
    pub fn of(addresses: &[IpAddr]) -> NodeAddresses {
        NodeAddresses {
            v4: addresses.iter().find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            }),
            v6: addresses.iter().find_map(|a| match a {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            }),
        }
    }
}

/// The password a peer's `passwordSecretRef` names, as the caller read it: `Err` says why it
/// could not (missing Secret, missing key, not text, too long), never what it holds.
pub type PasswordRead = Result<Password, String>;

/// What the configuration wants for one peer: the BGP session's settings and, when the peer names
/// a `bfdProfile`, its BFD session (or why it cannot have one).
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    pub session: PeerConfig,
    pub bfd: Option<Result<BfdWanted, String>>,
}

/// The session settings for `peer` on a node with `node` addresses, or why there can be none
/// (naming the field and its value). `password` is what the caller read for the peer's
/// `passwordSecretRef` (None when it has none).
pub fn peer_config(
    peer: &BgpPeer,
    node: NodeAddresses,
    password: Option<&PasswordRead>,
) -> Result<PeerConfig, String> {
    let field = |name: &str| format!("bgpPeers[{}].{name}", peer.name);
    let address: IpAddr = peer.peer_address.parse().map_err(|_| {
        format!(
            "{}: {:?} is not an IP address",
            field("peerAddress"),
            peer.peer_address
        )
    })?;
    let source: Option<IpAddr> =
        match &peer.source_address {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                format!("{}: {text:?} is not an IP address", field("sourceAddress"))
            })?),
        };
    let router_id = match &peer.router_id {
        Some(text) => text
            .parse()
            .map_err(|_| format!("{}: {text:?} is not an IPv4 address", field("routerID")))?,
        None => node.v4.ok_or_else(|| {
            format!(
                "{}: unset, and the node has no IPv4 InternalIP to use instead",
                field("routerID")
            )
        })?,
    };
    let (Some(hold_time), Some(keepalive)) =
        (peer.effective_hold_time(), peer.effective_keepalive_time())
    else {
        // Validation rejects both; say which one is not a duration.
        let hold_ok = peer
            .hold_time
            .as_deref()
            .is_none_or(|t| parse_duration(t).is_ok());
        let (name, text) = if hold_ok {
            ("keepaliveTime", &peer.keepalive_time)
        } else {
            ("holdTime", &peer.hold_time)
        };
        let text = text.as_deref().unwrap_or_default();
        return Err(format!("{}: {text:?} is not a duration", field(name)));
    };
    let peer_as = match (peer.peer_asn, peer.dynamic_asn) {
        (Some(asn), _) => PeerAs::Exactly(asn),
        (None, Some(DynamicAsn::Internal)) => PeerAs::Internal,
        (None, Some(DynamicAsn::External)) => PeerAs::External,
        (None, None) => {
            return Err(format!("{}: unset, and so is dynamicASN", field("peerASN")));
        }
    };
    let mut session = SessionConfig::new(peer.my_asn, peer_as, router_id);
    session.hold_time = hold_time;
    session.keepalive = Some(keepalive);
    if let Some(text) = &peer.connect_time {
        // A fixed interval between attempts (with the session's jitter), as FRR's `timers
        // connect` is; validation keeps it whole seconds, at least 1s.
        let every = parse_duration(text)
            .map_err(|_| format!("{}: {text:?} is not a duration", field("connectTime")))?;
        session.connect_retry = every;
        session.connect_retry_max = every;
    }
    session.next_hop_v4 = match source {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => node.v4,
    };
    session.graceful_restart = peer.graceful_restart.then_some(RESTART_TIME);
    session.next_hop_v6 = match source {
        Some(IpAddr::V6(v6)) => Some(v6),
        _ => node.v6,
    };
    let mut config = PeerConfig::new(session, address);
    config.port = peer.peer_port;
    config.source = source;
    config.vrf = peer.vrf.clone();
    config.password = match (&peer.password_secret_ref, password) {
        (None, _) => None,
        (Some(r), None) => {
            return Err(format!(
                "{}: the Secret {:?} was not read yet",
                field("passwordSecretRef"),
                r.name
            ));
        }
        (Some(_), Some(Ok(password))) => Some(password.clone()),
        (Some(_), Some(Err(why))) => {
            return Err(format!("{}: {why}", field("passwordSecretRef")));
        }
    };
    Ok(config)
}

/// The password in `data` (a Secret's data) under `key`, or why it is not usable. The error
/// never includes the value.
pub fn password_from(
    secret: &str,
    key: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
) -> PasswordRead {
    let Some(data) = data else {
        return Err(format!("Secret {secret:?} not found"));
    };
    let Some(bytes) = data.get(key) else {
        return Err(format!("Secret {secret:?} has no key {key:?}"));
    };
    if bytes.is_empty() {
        return Err(format!("Secret {secret:?} key {key:?} is empty"));
    }
    if bytes.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "Secret {secret:?} key {key:?} is {} bytes long, more than the {MAX_PASSWORD_LEN} TCP-MD5 allows",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("Secret {secret:?} key {key:?} is not UTF-8 text"))?;
    Ok(Password::new(text))
}

/// The password for `reference` from what the Secret reader has read: None while its Secret has
/// not been read yet.
pub fn password_for(secrets: &SecretsRead, reference: &SecretKeyRef) -> Option<PasswordRead> {
    let read = secrets.get(&reference.name)?;
    Some(match read {
        Ok(data) => password_from(&reference.name, &reference.key, data.as_ref()),
        Err(why) => Err(why.clone()),
    })
}

/// A configured peer's session, as [`Sessions::report`] reports it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The peer's name in spec.bgpPeers.
    pub name: String,
    /// Its peerAddress.
    pub address: String,
    pub my_asn: u32,
    /// The configured peerASN, or the AS a dynamicASN peer presented (while established).
    pub peer_asn: Option<u32>,
    pub status: PeerStatus,
    /// Its BFD session, when the peer names a profile.
    pub bfd: Option<BfdSeen>,
}

/// One running session.
#[derive(Debug)]
struct Running {
    config: PeerConfig,
    peer: Peer,
    /// The routes last handed to it, shared with its session (and with every other peer that is
    /// sent the same routes).
    routes: Arc<PeerRoutes>,
    /// Its BFD session, or why the configuration's cannot run.
    bfd: Option<Result<Link, String>>,
}

/// This node's sessions, by peer name.
#[derive(Debug, Default)]
pub struct Sessions {
    running: BTreeMap<String, Running>,
    /// Peers the config names for this node that have no session, and why.
    problems: BTreeMap<String, String>,
    started: u64,
    /// The BFD task, from the first peer that names a profile on.
    bfd: Option<Bfd>,
}

impl Sessions {
    /// Brings the sessions to `wanted` (peer name → settings, or why there can be none) and hands
    /// each its routes from `routes`. Peers sent equal routes share one copy of them, which their
    /// sessions hold too: with the usual one advertisement to every peer, 10,000 routes are kept
    /// once for all peers, not once per peer and stage. A session whose settings changed is
    /// restarted; one no longer wanted is shut down (Cease) in the background. A peer whose
    /// settings cannot be had (say, its Secret was deleted) keeps the session it has, on its last
    /// settings: bad input never takes routes away. Must run inside a Tokio runtime.
    pub fn update(&mut self, wanted: BTreeMap<String, Result<Wanted, String>>, routes: &BgpRoutes) {
        let mut problems = BTreeMap::new();
        let mut configs = BTreeMap::new();
        for (name, config) in wanted {
            match config {
                Ok(config) => {
                    configs.insert(name, config);
                }
                Err(why) => {
                    problems.insert(name, why);
                }
            }
        }
        for (name, why) in &problems {
            if self.problems.get(name) != Some(why) {
                tracing::warn!(peer = %name, problem = %why, "no BGP session with this peer");
            }
        }
        self.problems = problems;
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| match configs.get(*name) {
                Some(wanted) => wanted.session != r.config,
                None => !self.problems.contains_key(*name),
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(old) = self.running.remove(&name) {
                tracing::info!(peer = %name, address = %old.config.address, "stopping BGP session");
                if let (Some(Ok(link)), Some(bfd)) = (old.bfd, &self.bfd) {
                    link.stop(bfd);
                }
                tokio::spawn(old.peer.shutdown());
            }
        }
        for (name, wanted) in configs {
            let Wanted {
                session: config,
                bfd,
            } = wanted;
            let running = match self.running.entry(name.clone()) {
                std::collections::btree_map::Entry::Occupied(running) => running.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    self.started += 1;
                    tracing::info!(peer = %name, address = %config.address,
                        local_asn = config.session.local_asn, peer_as = %config.session.peer_as,
                        password = config.password.is_some(), "starting BGP session");
                    let peer = Peer::spawn(config.clone(), seed_of(&name, self.started));
                    slot.insert(Running {
                        config,
                        peer,
                        routes: Arc::default(),
                        bfd: None,
                    })
                }
            };
            update_bfd(&mut self.bfd, &name, running, bfd, self.started);
        }
        // The copies held so far: a peer whose routes become those of another shares its copy.
        let mut shared = SharedRoutes::default();
        for r in self.running.values() {
            shared.hold(&r.routes);
        }
        let none = PeerRoutes::new();
        for (name, r) in &mut self.running {
            let want = routes.get(name).unwrap_or(&none);
            if *r.routes == *want {
                continue;
            }
            let want = shared.share(want);
            r.peer.set_routes(Arc::clone(&want));
            r.routes = want;
        }
    }

    /// What to report of each of `peers` (this node's, from the config): a running session's
    /// status, or, for a peer without one, state Idle with the reason as its last error (a missing
    /// Secret shows there, not only in the log).
    pub fn report(&self, peers: &[&BgpPeer]) -> Vec<SessionInfo> {
        peers
            .iter()
            .filter_map(|peer| {
                let status = match (self.running.get(&peer.name), self.problems.get(&peer.name)) {
                    (Some(r), _) => r.peer.status().borrow().clone(),
                    (None, Some(why)) => PeerStatus {
                        last_error: Some(why.clone()),
                        ..PeerStatus::initial()
                    },
                    (None, None) => return None,
                };
                let bfd = match self.running.get(&peer.name).and_then(|r| r.bfd.as_ref()) {
                    Some(Ok(link)) => Some(link.seen()),
                    Some(Err(why)) => Some(BfdSeen {
                        error: Some(why.clone()),
                        ..BfdSeen::default()
                    }),
                    None => None,
                };
                Some(SessionInfo {
                    name: peer.name.clone(),
                    address: peer.peer_address.clone(),
                    my_asn: peer.my_asn,
                    peer_asn: peer.peer_asn.or(status.peer_as),
                    status,
                    bfd,
                })
            })
            .collect()
    }

    /// Peers without a session, and why.
    pub fn problems(&self) -> &BTreeMap<String, String> {
        &self.problems
    }

    /// Whether any session runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// What the BFD task counts, once it runs.
    pub fn bfd_counters(&self) -> Option<Arc<BfdCounters>> {
        self.bfd.as_ref().map(Bfd::counters)
    }

    /// The speaker is exiting (SIGTERM, an upgrade) and will be back: sessions that negotiated
    /// Graceful Restart close without a NOTIFICATION, so the router keeps their routes until the
    /// next process sends them again; the others cease. Only then does every BFD session say
    /// AdminDown, which RFC 5882 forbids the router to take for a failure (BIRD flushes the
    /// routes of a graceful-restart peer whose BFD fails, AdminDown or not: see
    /// docs/operations.md). Waits as [`Sessions::shutdown`] does.
    pub async fn leave_for_restart(self) {
        let stops = self
            .running
            .into_values()
            .map(|r| r.peer.leave_for_restart());
        futures::future::join_all(stops).await;
        if let Some(bfd) = self.bfd {
            bfd.shutdown().await;
        }
    }

    /// Ceases every session and waits (each at most the shell's flush timeout), then tells every
    /// BFD peer AdminDown.
    pub async fn shutdown(self) {
        let stops = self.running.into_values().map(|r| r.peer.shutdown());
        futures::future::join_all(stops).await;
        if let Some(bfd) = self.bfd {
            bfd.shutdown().await;
        }
    }
}

/// Brings `running`'s BFD session to `wanted`: started, re-timed (without touching the BGP
/// session), moved to a new key, or stopped. `bfd` is the BFD task, started on first use.
fn update_bfd(
    bfd: &mut Option<Bfd>,
    name: &str,
    running: &mut Running,
    wanted: Option<Result<BfdWanted, String>>,
    started: u64,
) {
    let current = match &running.bfd {
        Some(Ok(link)) => Some(Ok(&link.wanted)),
        Some(Err(why)) => Some(Err(why)),
        None => None,
    };
    if current == wanted.as_ref().map(|w| w.as_ref()) {
        return;
    }
    let mut down_events = 0;
    if let Some(Ok(link)) = running.bfd.take() {
        down_events = link.seen().down_events;
        let same_key = matches!(&wanted, Some(Ok(w)) if w.key == link.wanted.key);
        match bfd {
            // Re-timing a session keeps it: the new link's add re-negotiates its timers.
            Some(_) if same_key => drop(link),
            Some(bfd) => link.stop(bfd),
            None => {}
        }
    }
    running.bfd = match wanted {
        None => None,
        Some(Err(why)) => {
            tracing::warn!(peer = %name, problem = %why, "no BFD session with this peer");
            Some(Err(why))
        }
        Some(Ok(wanted)) => {
            let bfd = bfd.get_or_insert_with(|| Bfd::spawn(seed_of("bfd", started)));
            let signal = running.peer.bfd_signal();
            Some(Ok(Link::start(bfd, name, wanted, signal, down_events)))
        }
    };
}

/// Sets of routes, each kept once: equal sets handed to several peers share one copy.
#[derive(Debug, Default)]
struct SharedRoutes(Vec<Arc<PeerRoutes>>);

impl SharedRoutes {
    /// Offers `routes`, already held, for sharing.
    fn hold(&mut self, routes: &Arc<PeerRoutes>) {
        if !self.0.iter().any(|s| Arc::ptr_eq(s, routes)) {
            self.0.push(Arc::clone(routes));
        }
    }

    /// The copy of `routes` to hand out: one already held if equal, else a new one. Peers are
    /// few, so a comparison with each copy (which stops at the first difference) is cheap.
    fn share(&mut self, routes: &PeerRoutes) -> Arc<PeerRoutes> {
        if let Some(same) = self.0.iter().find(|s| ***s == *routes) {
            return Arc::clone(same);
        }
        let new = Arc::new(routes.clone());
        self.0.push(Arc::clone(&new));
        new
    }
}

/// A seed for the reconnect jitter that differs between peers, nodes and restarts.
fn seed_of(name: &str, n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    name.bytes().fold(nanos ^ n.rotate_left(32), |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
