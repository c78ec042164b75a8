//! What this node's sessions show to people: Prometheus metrics in MetalLB's vocabulary, and one
//! `BGPSession` object per session (`kubectl get bgpsessions -n ferrolb-system`).
//!
//! The event loop calls [`Reporter::report`] after every recompute and on its resync tick (every
//! 5 s), so a session's state shows within seconds. Objects are written by a task of their own
//! ([`write_sessions`]): it lists this node's objects (label [`NODE_LABEL`]), applies the ones
//! that differ and deletes the ones no session has, whenever the wanted set changes and every
//! [`RELIST`]; so an object of a peer removed while the speaker was down goes too. Each object is
//! owned by the speaker pod, so the garbage collector removes them with it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ferrolb_api::v1alpha1::{BGPSession, BfdSessionStatus, BgpSessionSpec, BgpSessionStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::State;
use super::peers::SessionInfo;
use super::peers::bfd::BfdSeen;
use crate::bfd;

/// The label that says which node's speaker wrote a BGPSession.
pub const NODE_LABEL: &str = "ferrolb.io/node";
/// How often the writer lists this node's objects even when nothing changed.
pub const RELIST: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The name in spec.bgpPeers.
    pub peer: String,
    pub address: String,
}

/// The BGP metrics (prefixed `ferrolb_` by the registry).
#[derive(Clone, Debug, Default)]
pub struct BgpMetrics {
    /// 1 while the session is Established.
    pub session_up: Family<PeerLabels, Gauge>,
    /// Prefixes the peer holds from this node.
    pub announced_prefixes: Family<PeerLabels, Gauge>,
    /// UPDATE messages sent.
    pub updates: Family<PeerLabels, Counter>,
    pub bfd: BfdMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: String,
}

/// The BFD metrics: per session, and the task's packet counts (one task serves every session).
#[derive(Clone, Debug, Default)]
pub struct BfdMetrics {
    /// 1 while the BFD session is Up.
    pub session_up: Family<PeerLabels, Gauge>,
    /// Up → Down transitions (each took the BGP session down).
    pub session_down_events: Family<PeerLabels, Counter>,
    pub control_packets_received: Counter,
    pub control_packets_sent: Counter,
    /// Received packets dropped, by reason.
    pub packets_dropped: Family<DropLabels, Counter>,
}

impl BgpMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "bgp_session_up",
            "1 while the BGP session with the peer is Established",
            self.session_up.clone(),
        );
        registry.register(
            "bgp_announced_prefixes_total",
            "Prefixes the peer holds from this node (a gauge, named as MetalLB names it)",
            self.announced_prefixes.clone(),
        );
        registry.register(
            "bgp_updates",
            "BGP UPDATE messages sent to the peer",
            self.updates.clone(),
        );
        let bfd = &self.bfd;
        registry.register(
            "bfd_session_up",
            "1 while the BFD session with the peer is Up",
            bfd.session_up.clone(),
        );
        registry.register(
            "bfd_session_down_events",
            "BFD sessions that went from Up to Down, taking their BGP session down",
            bfd.session_down_events.clone(),
        );
        registry.register(
            "bfd_control_packets_received",
            "BFD control packets received, on every session",
            bfd.control_packets_received.clone(),
        );
        registry.register(
            "bfd_control_packets_sent",
            "BFD control packets sent, on every session",
            bfd.control_packets_sent.clone(),
        );
        registry.register(
            "bfd_packets_dropped",
            "BFD packets received and dropped, by reason (bad_ttl, unknown_session, queue_full, or what the decoder refused)",
            bfd.packets_dropped.clone(),
        );
    }
}

/// One BGPSession as this node wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub spec: BgpSessionSpec,
    pub status: BgpSessionStatus,
}

/// Carries session states to the metrics and the BGPSession writer.
#[derive(Debug)]
pub struct Reporter {
    node: String,
    metrics: BgpMetrics,
    /// Per peer: labels, UPDATEs already counted, and since when the session is down.
    seen: BTreeMap<String, Seen>,
    wanted: watch::Sender<BTreeMap<String, Wanted>>,
}

#[derive(Debug)]
struct Seen {
    labels: PeerLabels,
    updates: u64,
    down_since: Option<SystemTime>,
}

impl Reporter {
    /// A reporter for `node`; the returned receiver feeds [`write_sessions`].
    pub fn new(
        node: &str,
        metrics: BgpMetrics,
    ) -> (Reporter, watch::Receiver<BTreeMap<String, Wanted>>) {
        let (wanted, rx) = watch::channel(BTreeMap::new());
        let reporter = Reporter {
            node: node.to_owned(),
            metrics,
            seen: BTreeMap::new(),
            wanted,
        };
        (reporter, rx)
    }

    /// Takes the sessions' states now.
    pub fn report(&mut self, sessions: &[SessionInfo]) {
        let now = SystemTime::now();
        let mut wanted = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for s in sessions {
            let labels = PeerLabels {
                peer: s.name.clone(),
                address: s.address.clone(),
            };
            let before = self.seen.remove(&s.name).filter(|b| b.labels == labels);
            let up = s.status.state == State::Established;
            let counted = before.as_ref().map_or(0, |b| b.updates);
            // A restarted session counts from zero again.
            let new = if s.status.updates_sent >= counted {
                s.status.updates_sent - counted
            } else {
                s.status.updates_sent
            };
            self.metrics.updates.get_or_create(&labels).inc_by(new);
            self.metrics
                .session_up
                .get_or_create(&labels)
                .set(i64::from(up));
            self.metrics
                .announced_prefixes
                .get_or_create(&labels)
                .set(i64::try_from(s.status.prefixes_announced).unwrap_or(i64::MAX));
            let bfd = &self.metrics.bfd;
            match &s.bfd {
                Some(seen) => {
                    let bfd_up = seen.state.is_some_and(|b| b.state == bfd::State::Up);
                    bfd.session_up.get_or_create(&labels).set(i64::from(bfd_up));
                    catch_up(
                        &bfd.session_down_events.get_or_create(&labels),
                        seen.down_events,
                    );
                }
                None => {
                    bfd.session_up.remove(&labels);
                    bfd.session_down_events.remove(&labels);
                }
            }
            let down_since = if up {
                None
            } else {
                Some(before.as_ref().and_then(|b| b.down_since).unwrap_or(now))
            };
            let status = BgpSessionStatus {
                state: format!("{:?}", s.status.state),
                established_since: s.status.established_since.and_then(time),
                down_since: down_since.and_then(time),
                routes_sent: s.status.prefixes_announced as u64,
                last_error: s.status.last_error.clone(),
                bfd: s.bfd.as_ref().map(bfd_status),
            };
            let spec = BgpSessionSpec {
                node: self.node.clone(),
                peer: s.name.clone(),
                peer_address: s.address.clone(),
                peer_asn: s.peer_asn,
                my_asn: s.my_asn,
            };
            wanted.insert(object_name(&self.node, &s.name), Wanted { spec, status });
            seen.insert(
                s.name.clone(),
                Seen {
                    labels,
                    updates: s.status.updates_sent,
                    down_since,
                },
            );
        }
        // Sessions that went: their series go too.
        for gone in self.seen.values() {
            self.metrics.session_up.remove(&gone.labels);
            self.metrics.announced_prefixes.remove(&gone.labels);
            self.metrics.updates.remove(&gone.labels);
            self.metrics.bfd.session_up.remove(&gone.labels);
            self.metrics.bfd.session_down_events.remove(&gone.labels);
        }
        self.seen = seen;
        self.wanted.send_if_modified(|w| {
            let changed = *w != wanted;
            *w = wanted;
            changed
        });
    }

    /// Takes the BFD task's packet counts now.
    pub fn count_bfd(&self, counters: &bfd::Counters) {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let m = &self.metrics.bfd;
        catch_up(
            &m.control_packets_received,
            load(&counters.packets_received),
        );
        catch_up(&m.control_packets_sent, load(&counters.packets_sent));
        let mut drops = vec![
            ("bad_ttl", load(&counters.bad_ttl)),
            ("unknown_session", load(&counters.unknown_session)),
            ("queue_full", load(&counters.queue_full)),
        ];
        drops.extend(counters.decode_errors());
        for (reason, n) in drops {
            let labels = DropLabels {
                reason: reason.to_owned(),
            };
            catch_up(&m.packets_dropped.get_or_create(&labels), n);
        }
    }
}

/// Raises `counter` to `total`, a count kept elsewhere that only grows.
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// A BFD session as its BGPSession shows it.
fn bfd_status(seen: &BfdSeen) -> BfdSessionStatus {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    BfdSessionStatus {
        state: seen
            .state
            .map(|b| format!("{:?}", b.state))
            .unwrap_or_default(),
        transmit_interval: seen.state.map(|b| millis(b.tx_interval)),
        detection_time: seen.state.and_then(|b| b.detection_time).map(millis),
        down_events: seen.down_events,
        last_error: seen.error.clone(),
    }
}

/// `<node>-<peer>`: both are DNS names, so the result is a valid object name (if not longer than
/// 253 characters, which a node name of at most 189 guarantees with a peer name of at most 63).
pub fn object_name(node: &str, peer: &str) -> String {
    format!("{node}-{peer}")
}

fn time(at: SystemTime) -> Option<Time> {
    Timestamp::try_from(at).ok().map(Time)
}

/// Keeps this node's BGPSession objects in `namespace` equal to `wanted`, owned by `owner` (the
/// speaker pod). Runs until `wanted`'s sender is dropped.
pub async fn write_sessions(
    client: Client,
    namespace: String,
    node: String,
    owner: Option<OwnerReference>,
    mut wanted: watch::Receiver<BTreeMap<String, Wanted>>,
) {
    let api: Api<BGPSession> = Api::namespaced(client, &namespace);
    let selector = format!("{NODE_LABEL}={node}");
    loop {
        let want = wanted.borrow_and_update().clone();
        if let Err(e) = sync(&api, &selector, &node, owner.as_ref(), &want).await {
            tracing::warn!(error = %e, "cannot write the BGPSession objects; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            continue;
        }
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RELIST) => {}
        }
    }
}

async fn sync(
    api: &Api<BGPSession>,
    selector: &str,
    node: &str,
    owner: Option<&OwnerReference>,
    want: &BTreeMap<String, Wanted>,
) -> Result<(), kube::Error> {
    let have: BTreeMap<String, BGPSession> = api
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .map(|o| (o.name_any(), o))
        .collect();
    for (name, w) in want {
        let current = have.get(name);
        let owned = |o: &BGPSession| {
            owner.is_none_or(|owner| o.owner_references().iter().any(|r| r.uid == owner.uid))
        };
        if current.is_none_or(|c| c.spec != w.spec || !owned(c)) {
            let object = BGPSession {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(NODE_LABEL.to_owned(), node.to_owned())].into()),
                    owner_references: owner.map(|o| vec![o.clone()]),
                    ..ObjectMeta::default()
                },
                spec: w.spec.clone(),
                status: None,
            };
            api.patch(name, &params(), &Patch::Apply(&object)).await?;
        }
        if current.and_then(|c| c.status.as_ref()) != Some(&w.status) {
            let patch = serde_json::json!({
                "apiVersion": "ferrolb.io/v1alpha1",
                "kind": "BGPSession",
                "status": w.status,
            });
            api.patch_status(name, &params(), &Patch::Apply(&patch))
                .await?;
        }
    }
    for name in have.keys().filter(|name| !want.contains_key(*name)) {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn params() -> PatchParams {
    PatchParams::apply(crate::run::FIELD_MANAGER).force()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::shell::PeerStatus;

    fn session(name: &str, state: State, updates: u64, prefixes: usize) -> SessionInfo {
        SessionInfo {
            name: name.to_owned(),
            address: "198.51.100.1".to_owned(),
            my_asn: 64513,
            peer_asn: Some(64512),
            bfd: None,
            status: PeerStatus {
                state,
                established_since: (state == State::Established).then(SystemTime::now),
                prefixes_announced: prefixes,
                updates_sent: updates,
                ..PeerStatus::initial()
            },
        }
    }

    fn encoded(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn objects_and_metrics_follow_the_sessions() {
        let metrics = BgpMetrics::default();
        let mut registry = Registry::with_prefix("ferrolb");
        metrics.register(&mut registry);
        let (mut reporter, wanted) = Reporter::new("node-1", metrics);

        reporter.report(&[session("frr", State::Active, 0, 0)]);
        let first = wanted.borrow().clone();
        let object = &first["node-1-frr"];
        assert_eq!(object.spec.node, "node-1");
        assert_eq!(object.spec.peer, "frr");
        assert_eq!(object.status.state, "Active");
        let down_since = object.status.down_since.clone();
        assert!(down_since.is_some() && object.status.established_since.is_none());

        // Still down: the same down_since, so nothing to write.
        reporter.report(&[session("frr", State::Connect, 0, 0)]);
        assert_eq!(wanted.borrow()["node-1-frr"].status.down_since, down_since);

        reporter.report(&[session("frr", State::Established, 3, 7)]);
        let up = wanted.borrow()["node-1-frr"].status.clone();
        assert_eq!((up.state.as_str(), up.routes_sent), ("Established", 7));
        assert!(up.down_since.is_none() && up.established_since.is_some());
        let text = encoded(&registry);
        assert!(
            text.contains(r#"ferrolb_bgp_session_up{peer="frr",address="198.51.100.1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferrolb_bgp_updates_total{peer="frr",address="198.51.100.1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ferrolb_bgp_announced_prefixes_total{peer="frr",address="198.51.100.1"} 7"#
            ),
            "{text}"
        );

        // Counted once; a restarted session (its count starts over) adds its own.
        reporter.report(&[session("frr", State::Established, 5, 7)]);
        reporter.report(&[session("frr", State::Established, 2, 7)]);
        assert!(
            encoded(&registry)
                .contains(r#"ferrolb_bgp_updates_total{peer="frr",address="198.51.100.1"} 7"#)
        );

        // Gone: its object and its series go.
        reporter.report(&[]);
        assert!(wanted.borrow().is_empty());
        assert!(!encoded(&registry).contains("peer=\"frr\""));
    }
}
