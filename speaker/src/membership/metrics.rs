//! Prometheus metrics of the membership protocol.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of dropped messages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `bad_mac`, `replay`, `stale`, `malformed` or `unknown_sender`.
    pub reason: String,
}

/// Labels of peer state changes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The new state: `alive` or `dead`.
    pub state: String,
}

/// Why a received datagram was dropped (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The HMAC does not verify under any accepted key.
    BadMac,
    /// (incarnation, sequence) not above the last accepted one from that sender.
    Replay,
    /// The timestamp is outside the accepted window around our clock.
    Stale,
    /// Authenticated but not decodable (another version, a bug).
    Malformed,
    /// The sender is not among the peers from Kubernetes (or claims to be us).
    UnknownSender,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadMac => "bad_mac",
            DropReason::Replay => "replay",
            DropReason::Stale => "stale",
            DropReason::Malformed => "malformed",
            DropReason::UnknownSender => "unknown_sender",
        }
    }
}

/// Every metric of the membership protocol.
#[derive(Clone, Debug, Default)]
pub struct MembershipMetrics {
    /// Datagrams sent.
    pub sent: Counter,
    /// Datagrams received and accepted.
    pub received: Counter,
    /// Datagrams dropped, by reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Members this speaker sees alive, itself included.
    pub members: Gauge,
    /// Peer state changes, by new state.
    pub state_changes: Family<StateLabels, Counter>,
    /// Keys messages are accepted with (1; 2 during a key rotation; 0 without membership).
    pub keys: Gauge,
    /// Times new keys were taken from the Secret while the membership ran.
    pub key_changes: Counter,
}

impl MembershipMetrics {
    /// Registers the metrics under `registry` (prefixed `ferrolb_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "speaker_membership_messages_sent",
            "Membership datagrams sent",
            self.sent.clone(),
        );
        registry.register(
            "speaker_membership_messages_received",
            "Membership datagrams received and accepted",
            self.received.clone(),
        );
        registry.register(
            "speaker_membership_messages_dropped",
            "Membership datagrams dropped, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "speaker_membership_members",
            "Speakers this speaker sees alive, itself included",
            self.members.clone(),
        );
        registry.register(
            "speaker_membership_state_changes",
            "Peer state changes seen by this speaker, by new state",
            self.state_changes.clone(),
        );
        registry.register(
            "speaker_membership_keys",
            "Keys this speaker accepts membership messages with: 1, 2 while a key rotation is under way, 0 without membership",
            self.keys.clone(),
        );
        registry.register(
            "speaker_membership_key_changes",
            "Times this speaker took new membership keys from the Secret (a key rotation makes three)",
            self.key_changes.clone(),
        );
    }

    /// Counts one dropped datagram.
    pub fn count_drop(&self, reason: DropReason) {
        self.dropped
            .get_or_create(&DropLabels {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Dropped datagrams so far for `reason`.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        self.dropped
            .get_or_create(&DropLabels {
                reason: reason.as_str().to_owned(),
            })
            .get()
    }

    pub(crate) fn state_change(&self, state: &str) {
        self.state_changes
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .inc();
    }
}
