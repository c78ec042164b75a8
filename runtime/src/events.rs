//! Kubernetes Events, published off the event loop, bounded and without a cache; one publisher
//! for the controller, the speakers and the operator.
//!
//! kube's `Recorder` keeps every Event it published in the last six minutes (to count repeats as
//! a series) and walks that whole cache on each publish: with 10,000 Services allocated in a few
//! minutes that is 10,000 cached Events (megabytes) and O(n) work per Event. FerroLB publishes one
//! Event per change (an outcome, a takeover, a rejected config), never a stream of repeats, so it
//! needs no series: each Event is created once, by a task of its own, so the loop never waits
//! for it. The queue is bounded: when the API server is slower than the changes, Events are
//! dropped (logged, and counted in `ferrolb_events_dropped_total`) rather than held without end.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

/// Events waiting to be published; beyond this, new ones are dropped (and logged).
const QUEUE: usize = 1024;

/// What the publisher counts; the binary registers them in its registry.
#[derive(Clone, Debug, Default)]
pub struct EventMetrics {
    /// Events dropped because the queue was full (or closed).
    pub dropped: Counter,
    /// Events the API server did not accept.
    pub failed: Counter,
}

impl EventMetrics {
    /// Registers `ferrolb_events_dropped_total` and `ferrolb_events_failed_total` (the registry
    /// adds the prefix and the suffix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_dropped",
            "Events dropped because the publishing queue was full",
            self.dropped.clone(),
        );
        registry.register(
            "events_failed",
            "Events the API server did not accept",
            self.failed.clone(),
        );
    }
}

/// Publishes Events in the background. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: mpsc::Sender<K8sEvent>,
    reporter: Reporter,
    metrics: EventMetrics,
}

impl Publisher {
    /// Starts the publishing task (it ends when every `Publisher` is dropped).
    pub fn spawn(client: Client, reporter: Reporter, metrics: EventMetrics) -> Self {
        let (tx, mut rx) = mpsc::channel::<K8sEvent>(QUEUE);
        let failed = metrics.failed.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
                let api: Api<K8sEvent> = Api::namespaced(client.clone(), namespace);
                if let Err(e) = api.create(&PostParams::default(), &event).await {
                    failed.inc();
                    tracing::warn!(reason = ?event.reason, error = %e, "cannot publish an Event");
                }
            }
        });
        Self {
            tx,
            reporter,
            metrics,
        }
    }

    /// Queues `event` about `regarding`; never waits. Drops it (logged and counted) when the
    /// queue is full.
    pub fn publish(&self, event: &Event, regarding: ObjectReference) {
        let event = self.build(event, regarding, Timestamp::now());
        if let Err(e) = self.tx.try_send(event) {
            self.metrics.dropped.inc();
            tracing::warn!(error = %e, "Event queue full or closed; Event dropped");
        }
    }

    /// The `events.k8s.io/v1` Event, as kube's Recorder would first create it.
    fn build(&self, ev: &Event, regarding: ObjectReference, now: Timestamp) -> K8sEvent {
        let instance = self
            .reporter
            .instance
            .clone()
            .unwrap_or_else(|| self.reporter.controller.clone());
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                // Cluster-scoped objects get their Events in `default`, as with the Recorder.
                namespace: Some(
                    regarding
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".to_owned()),
                ),
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            regarding: Some(regarding),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(instance),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            related: ev.secondary.clone(),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(tx: mpsc::Sender<K8sEvent>) -> Publisher {
        Publisher {
            tx,
            reporter: Reporter {
                controller: "ferrolb-controller".into(),
                instance: Some("pod-a".into()),
            },
            metrics: EventMetrics::default(),
        }
    }

    fn announced() -> Event {
        Event {
            type_: EventType::Normal,
            reason: "Announced".into(),
            note: None,
            action: "Announce".into(),
            secondary: None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, mut rx) = mpsc::channel(2);
        let publisher = publisher(tx);
        for _ in 0..5 {
            publisher.publish(&announced(), ObjectReference::default());
        }
        assert_eq!(publisher.metrics.dropped.get(), 3);
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
        drop(rx);
        publisher.publish(&announced(), ObjectReference::default());
        assert_eq!(
            publisher.metrics.dropped.get(),
            4,
            "a closed queue drops too"
        );
        let mut registry = Registry::with_prefix("ferrolb");
        publisher.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("ferrolb_events_dropped_total 4"), "{text}");
        assert!(text.contains("ferrolb_events_failed_total 0"), "{text}");
    }

    #[test]
    fn builds_the_event_the_recorder_would() {
        let (tx, _rx) = mpsc::channel(1);
        let publisher = publisher(tx);
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        };
        let now = Timestamp::from_nanosecond(0x1234).unwrap_or(Timestamp::UNIX_EPOCH);
        let ev = Event {
            type_: EventType::Warning,
            reason: "AllocationFailed".into(),
            note: Some("PoolFull: no free IPv4".into()),
            action: "Allocate".into(),
            secondary: None,
        };
        let k = publisher.build(&ev, regarding.clone(), now);
        assert_eq!(k.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(k.metadata.name.as_deref(), Some("web.1234"));
        assert_eq!(k.regarding, Some(regarding));
        assert_eq!(k.reason.as_deref(), Some("AllocationFailed"));
        assert_eq!(k.type_.as_deref(), Some("Warning"));
        assert_eq!(
            k.reporting_controller.as_deref(),
            Some("ferrolb-controller")
        );
        assert_eq!(k.reporting_instance.as_deref(), Some("pod-a"));
        assert!(k.series.is_none());
        let cluster_scoped = ObjectReference {
            name: Some("config".into()),
            ..ObjectReference::default()
        };
        let k = publisher.build(&ev, cluster_scoped, now);
        assert_eq!(k.metadata.namespace.as_deref(), Some("default"));
    }
}
