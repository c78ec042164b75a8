//! BFD for the peers that name a `bfdProfile`: what the session is ([`bfd_config`], pure), and
//! the task that watches it and takes the BGP session down when it fails ([`Link`]).
//!
//! - The BFD session runs from the address the BGP session is dialed from: `sourceAddress`, else
//!   the node's first InternalIP of the peer's family; single hop (RFC 5881, port 3784, TTL 255
//!   required) unless `ebgpMultiHop` is set (RFC 5883, port 4784, the profile's `minimumTtl`);
//!   its sockets are bound to the peer's `vrf` when it has one.
//! - Only a session that was Up and goes Down takes BGP down (Cease, BFD Down): one that never
//!   came up (a router without BFD) leaves BGP alone, and so does a peer that says AdminDown
//!   (RFC 5882 §3.2: its operator took BFD away, the path is not known to have failed).
//! - A BFD session that cannot run (its port is taken on this node, say) leaves the BGP session
//!   running without it, and says why in the session's report.

use std::net::IpAddr;
use std::time::Duration;

use ferrolb_api::v1alpha1::{BfdProfile, BgpPeer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::NodeAddresses;
use crate::bfd::{self, Bfd, BfdState, Hop, PeerKey, Profile, Timers};
use crate::bgp::shell::{BfdDownSignal, PeerConfig};

/// A peer's BFD session as the configuration wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdWanted {
    pub key: PeerKey,
    pub profile: Profile,
}

/// The BFD session for `peer`, whose BGP session has the settings `session` (its addresses
/// already parsed by [`super::peer_config`]), with `profile`, on a node with `node` addresses, or
/// why there can be none.
pub fn bfd_config(
    peer: &BgpPeer,
    session: &PeerConfig,
    node: NodeAddresses,
    profile: &BfdProfile,
) -> Result<BfdWanted, String> {
    let field = |name: &str| format!("bgpPeers[{}].{name}", peer.name);
    let address = session.address;
    let local = match (session.source, address) {
        (Some(source), _) if source.is_ipv4() == address.is_ipv4() => source,
        (_, IpAddr::V4(_)) => node.v4.map(IpAddr::V4).ok_or_else(|| {
            format!(
                "{}: the node has no IPv4 InternalIP to run BFD from",
                field("bfdProfile")
            )
        })?,
        (_, IpAddr::V6(_)) => node.v6.map(IpAddr::V6).ok_or_else(|| {
            format!(
                "{}: the node has no IPv6 InternalIP to run BFD from",
                field("bfdProfile")
            )
        })?,
    };
    let millis = |ms: u32| Duration::from_millis(u64::from(ms));
    Ok(BfdWanted {
        key: PeerKey {
            peer: address,
            local,
            interface: session.vrf.clone(),
            hop: if peer.ebgp_multi_hop {
                Hop::Multi
            } else {
                Hop::Single
            },
        },
        profile: Profile {
            timers: Timers {
                desired_min_tx: millis(profile.transmit_interval),
                required_min_rx: millis(profile.receive_interval),
                detect_mult: u8::try_from(profile.detect_multiplier).unwrap_or(u8::MAX),
            },
            passive: profile.passive_mode,
            minimum_ttl: u8::try_from(profile.minimum_ttl).unwrap_or(u8::MAX),
        },
    })
}

/// The first wait before a failed BFD start is tried again; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a BFD start.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the owner of a peer sees of its BFD session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BfdSeen {
    /// The session's state and timers, once it runs.
    pub state: Option<BfdState>,
    /// Why it does not run.
    pub error: Option<String>,
    /// How often it went from Up to Down, taking the BGP session with it.
    pub down_events: u64,
}

/// One peer's running BFD session: the task that watches it.
#[derive(Debug)]
pub struct Link {
    pub wanted: BfdWanted,
    seen: watch::Receiver<BfdSeen>,
    watcher: JoinHandle<()>,
}

impl Link {
    /// Starts (or, for a key `bfd` already runs, re-times) the session and watches it for
    /// `peer` (its name, for logs); `down_events` carries the count of a link this one
    /// replaces. A start that fails (its sockets cannot be opened: the source address not yet
    /// on the node, the port taken) is retried with backoff, from [`RETRY_FIRST`] up to
    /// [`RETRY_MAX`]; the BGP session runs without BFD meanwhile. Must run inside a Tokio
    /// runtime.
    pub fn start(
        bfd: &Bfd,
        peer: &str,
        wanted: BfdWanted,
        signal: BfdDownSignal,
        down_events: u64,
    ) -> Link {
        let adder = bfd.adder();
        // Queued now, so it is carried out before any later command for this key.
        let mut registered = adder.add_peer(wanted.key.clone(), wanted.profile);
        let (tx, seen) = watch::channel(BfdSeen {
            down_events,
            ..BfdSeen::default()
        });
        let peer = peer.to_owned();
        let key = wanted.key.clone();
        let profile = wanted.profile;
        let watcher = tokio::spawn(async move {
            let mut retry = RETRY_FIRST;
            loop {
                match registered.await {
                    Ok(state) => {
                        tx.send_modify(|s| s.error = None);
                        follow(&peer, &key, state, &signal, &tx).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%peer, address = %key.peer, local = %key.local, error = %e,
                            ?retry, "cannot run BFD with this peer; the BGP session runs without it, retrying");
                        tx.send_modify(|s| s.error = Some(format!("cannot run BFD: {e}")));
                    }
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                registered = adder.add_peer(key.clone(), profile);
            }
        });
        Link {
            wanted,
            seen,
            watcher,
        }
    }

    pub fn seen(&self) -> BfdSeen {
        self.seen.borrow().clone()
    }

    /// Stops watching and ends the session (AdminDown to the peer, in the background).
    pub fn stop(self, bfd: &Bfd) {
        self.watcher.abort();
        tokio::spawn(bfd.remove_peer(&self.wanted.key));
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Publishes the session's state and signals BGP on every failure of a session that was Up.
async fn follow(
    peer: &str,
    key: &PeerKey,
    mut state: watch::Receiver<BfdState>,
    signal: &BfdDownSignal,
    seen: &watch::Sender<BfdSeen>,
) {
    let mut last = None;
    loop {
        let now = *state.borrow_and_update();
        if last != Some(now.state) {
            match takes_bgp_down(last, &now) {
                Some(true) => {
                    tracing::warn!(%peer, address = %key.peer, diag = ?now.diag,
                        "BFD session down: taking the BGP session down");
                    signal.send();
                    seen.send_modify(|s| s.down_events += 1);
                }
                Some(false) => tracing::info!(%peer, address = %key.peer,
                    "the peer took BFD administratively down; the BGP session stays"),
                None => tracing::info!(%peer, address = %key.peer, state = ?now.state,
                    tx = ?now.tx_interval, detection = ?now.detection_time, "BFD session"),
            }
            last = Some(now.state);
        }
        seen.send_modify(|s| s.state = Some(now));
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Whether a change from `last` to `now` is a failure that takes BGP down (`Some(true)`), a
/// peer's AdminDown that does not (`Some(false)`), or no failure at all (`None`).
pub fn takes_bgp_down(last: Option<bfd::State>, now: &BfdState) -> Option<bool> {
    if last != Some(bfd::State::Up) || now.state == bfd::State::Up {
        return None;
    }
    Some(now.remote_state != bfd::State::AdminDown)
}
