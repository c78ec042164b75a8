//! The rotation of the speakers' membership key, decided purely: what the Secret
//! `ferrolb-memberlist` holds now and what the admin asked for in, the next Secret contents and
//! when to look again out.
//!
//! # Why in phases
//!
//! Kubelets deliver a Secret update to their pods at different times (a minute or more apart),
//! and the speakers re-read the files every 10 s. Rewriting `key` in one step would leave, for a
//! while, speakers on the old key that drop the messages of speakers on the new one and declare
//! them dead, moving their addresses: a false failover. So a rotation runs in three phases, one
//! `step` apart (`--key-rotation-step-seconds`, longer than any kubelet takes to deliver the
//! Secret plus the speakers' re-read):
//!
//! | phase | Secret entries | speakers |
//! |---|---|---|
//! | before | `key=A` | send A, accept A |
//! | 1 `accepting-new-key` | `key=A`, `next=B` | send A, accept A and B |
//! | 2 `sending-new-key` | `key=B`, `previous=A` | send B, accept B and A |
//! | 3 `done` | `key=B` | send B, accept B |
//!
//! Every speaker accepts B before any sends with it (phase 1 lasts a step), and accepts A until
//! none sends with it any more (phase 2 lasts a step), so no speaker ever drops a live peer's
//! message, in whatever order the Secret arrives.
//!
//! # The request, and the Secret as the state
//!
//! An admin requests a rotation by giving the LoadBalancerConfig's annotation
//! `ferrolb.io/rotate-membership-key` a value it has not had (e.g. a date). The Secret itself
//! carries the state, in its entries and its annotations, so a restarted operator or a new
//! leader continues where the last one was:
//!
//! - the entries say the phase: `next` present → phase 1; else `previous` present → phase 2;
//!   else no rotation is under way;
//! - [`REQUEST`] records the request value being (or last) served, so one value rotates once;
//! - [`PHASE`] and [`SINCE`] say which phase was written when. The clock counts only for the
//!   phase it was written with: when the annotations are missing, unreadable or name another
//!   phase than the entries show (a hand edit, say), the phase starts over now. In doubt, wait
//!   longer, never shorter.
//!
//! A request that arrives during a rotation is served after it (a fresh rotation). A `next`
//! entry added by hand while none is under way is rotated in like the operator's own key, a
//! step later. A Secret without a usable `key` gets the new key at once: there is no membership
//! to disturb.
//!
//! Deleting the Secret is the blunt way: the operator creates a new one at once, with a fresh
//! key, and while kubelets deliver it the speakers fall back to Kubernetes readiness or
//! disagree on the key, and may fail over. Keys are never logged nor put in messages.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrolb_api::wiring::names;
use k8s_openapi::jiff::Timestamp;

/// On the Secret: the rotation request (the config's annotation value) served or being served.
pub const REQUEST: &str = "ferrolb.io/membership-key-rotation-request";
/// On the Secret: the phase written last ([`Phase::name`]).
pub const PHASE: &str = "ferrolb.io/membership-key-rotation-phase";
/// On the Secret: when [`PHASE`] was written (RFC 3339).
pub const SINCE: &str = "ferrolb.io/membership-key-rotation-phase-since";
/// The rotation annotations on the Secret: every other annotation is left as it is.
pub const ANNOTATIONS: [&str; 3] = [REQUEST, PHASE, SINCE];

/// The default time between two phases: a kubelet's sync period (1 min) plus its cache delay,
/// the speakers' 10 s re-read, and a margin.
pub const DEFAULT_STEP: Duration = Duration::from_secs(120);

/// After a phase that served a request, how soon to look again (another request may wait).
const SOON: Duration = Duration::from_secs(1);

/// The membership Secret as far as the rotation is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretState {
    /// Every entry of the Secret (the speakers' `key`, `next`, `previous`, and any other).
    pub data: BTreeMap<String, Vec<u8>>,
    /// The rotation annotations ([`ANNOTATIONS`]) only.
    pub annotations: BTreeMap<String, String>,
}

impl SecretState {
    /// A usable entry: present and not blank (the speakers ignore surrounding whitespace).
    fn entry(&self, name: &str) -> Option<&Vec<u8>> {
        self.data.get(name).filter(|v| !v.trim_ascii().is_empty())
    }

    /// The phase the entries show.
    pub fn phase(&self) -> Phase {
        if self.entry(names::MEMBERLIST_SECRET_NEXT_KEY).is_some() {
            Phase::AcceptingNewKey
        } else if self.entry(names::MEMBERLIST_SECRET_PREVIOUS_KEY).is_some() {
            Phase::SendingNewKey
        } else {
            Phase::Done
        }
    }

    /// When the current phase started, if the annotations say so for this very phase.
    fn since(&self) -> Option<Timestamp> {
        let phase = self.annotations.get(PHASE)?;
        if *phase != self.phase().name() {
            return None;
        }
        self.annotations.get(SINCE)?.parse().ok()
    }
}

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `key` and `next`: the new key is being handed to every speaker, to accept.
    AcceptingNewKey,
    /// `key` (the new one) and `previous`: speakers send with the new key, still accept the old.
    SendingNewKey,
    /// `key` only: no rotation under way.
    Done,
}

impl Phase {
    /// The [`PHASE`] annotation's value.
    pub fn name(self) -> &'static str {
        match self {
            Phase::AcceptingNewKey => "accepting-new-key",
            Phase::SendingNewKey => "sending-new-key",
            Phase::Done => "done",
        }
    }

    /// For people: what the phase does.
    fn describe(self) -> &'static str {
        match self {
            Phase::AcceptingNewKey => {
                "step 1 of 3: every speaker is given the new key to accept; they still send with the old one"
            }
            Phase::SendingNewKey => {
                "step 2 of 3: the speakers send with the new key and still accept the old one"
            }
            Phase::Done => "step 3 of 3: the old key is dropped",
        }
    }
}

/// What the rotation needs to know.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The config's `ferrolb.io/rotate-membership-key` annotation (blank counts as none).
    pub request: Option<&'a str>,
    /// The Secret now.
    pub secret: &'a SecretState,
    /// The time now.
    pub now: Timestamp,
    /// The time between two phases.
    pub step: Duration,
}

/// What the operator does about the Secret now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No rotation under way and none requested.
    Idle,
    /// A rotation waits for its next phase: look again in `due`.
    Wait {
        /// The current phase.
        phase: Phase,
        /// Time left until the next phase.
        due: Duration,
    },
    /// Write the Secret, then look again in `requeue` (`None`: nothing is due).
    Write {
        /// The Secret's new entries and rotation annotations.
        secret: SecretState,
        /// What the write does, for the log.
        transition: Transition,
        /// When to look again.
        requeue: Option<Duration>,
    },
    /// A rotation was requested but no random key could be made: try again later.
    NoKey,
}

/// What a write does (the log line says it; no key in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Phase 1: a new key as `next`.
    Begin,
    /// Phase 2: `next` becomes `key`, `key` becomes `previous`.
    Promote,
    /// Phase 3: `previous` dropped.
    Finish,
    /// The phase's clock was missing or not for this phase: it starts now.
    RestartClock,
    /// The Secret held no usable key: the new one is the key at once.
    Replace,
}

impl Transition {
    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            Transition::Begin => "the new key is handed out, to be accepted only",
            Transition::Promote => "the speakers send with the new key, still accepting the old",
            Transition::Finish => "the old key is dropped; the rotation is done",
            Transition::RestartClock => {
                "the phase's start time was missing or for another phase; the phase starts over"
            }
            Transition::Replace => "the Secret held no key; the new key is used at once",
        }
    }
}

fn blank_to_none(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

/// The rotation annotations of a Secret created for `request` (the config's annotation, if
/// any): that request is served by the fresh key, so it never rotates the new Secret.
pub fn created_annotations(request: Option<&str>) -> BTreeMap<String, String> {
    blank_to_none(request)
        .map(|r| BTreeMap::from([(REQUEST.to_owned(), r.to_owned())]))
        .unwrap_or_default()
}

/// Decides the next step of the rotation. `new_key` makes a fresh random key; it is called only
/// when a rotation begins.
pub fn decide(input: Input<'_>, new_key: impl FnOnce() -> Option<Vec<u8>>) -> Decision {
    let secret = input.secret;
    let phase = secret.phase();
    let request = blank_to_none(input.request);
    let handled = secret.annotations.get(REQUEST).map(String::as_str);
    let now = input.now;
    let stamped = |mut next: SecretState, phase: Phase| {
        next.annotations
            .insert(PHASE.to_owned(), phase.name().to_owned());
        next.annotations.insert(SINCE.to_owned(), now.to_string());
        next
    };

    if phase != Phase::Done {
        let Some(since) = secret.since() else {
            return Decision::Write {
                secret: stamped(secret.clone(), phase),
                transition: Transition::RestartClock,
                requeue: Some(input.step),
            };
        };
        let step_ms = i64::try_from(input.step.as_millis()).unwrap_or(i64::MAX);
        let due_ms = since
            .as_millisecond()
            .saturating_add(step_ms)
            .saturating_sub(now.as_millisecond());
        if due_ms > 0 {
            // A start time in the future (a clock that jumped) waits at most a step at a time.
            let due = Duration::from_millis(due_ms.unsigned_abs()).min(input.step);
            return Decision::Wait { phase, due };
        }
        let mut next = secret.clone();
        let transition = if phase == Phase::AcceptingNewKey {
            let new = next
                .data
                .remove(names::MEMBERLIST_SECRET_NEXT_KEY)
                .unwrap_or_default();
            match next
                .data
                .insert(names::MEMBERLIST_SECRET_KEY.to_owned(), new)
            {
                Some(old) if !old.trim_ascii().is_empty() => {
                    next.data
                        .insert(names::MEMBERLIST_SECRET_PREVIOUS_KEY.to_owned(), old);
                }
                _ => {
                    next.data.remove(names::MEMBERLIST_SECRET_PREVIOUS_KEY);
                }
            }
            Transition::Promote
        } else {
            next.data.remove(names::MEMBERLIST_SECRET_PREVIOUS_KEY);
            Transition::Finish
        };
        let next_phase = next.phase();
        let requeue = match next_phase {
            Phase::Done if request.is_some() && request != handled => Some(SOON),
            Phase::Done => None,
            _ => Some(input.step),
        };
        return Decision::Write {
            secret: stamped(next, next_phase),
            transition,
            requeue,
        };
    }

    let Some(request) = request.filter(|r| Some(*r) != handled) else {
        return Decision::Idle;
    };
    let Some(new) = new_key().filter(|k| !k.trim_ascii().is_empty()) else {
        return Decision::NoKey;
    };
    let mut next = secret.clone();
    next.annotations
        .insert(REQUEST.to_owned(), request.to_owned());
    if secret.entry(names::MEMBERLIST_SECRET_KEY).is_none() {
        next.data
            .insert(names::MEMBERLIST_SECRET_KEY.to_owned(), new);
        return Decision::Write {
            secret: stamped(next, Phase::Done),
            transition: Transition::Replace,
            requeue: None,
        };
    }
    next.data
        .insert(names::MEMBERLIST_SECRET_NEXT_KEY.to_owned(), new);
    Decision::Write {
        secret: stamped(next, Phase::AcceptingNewKey),
        transition: Transition::Begin,
        requeue: Some(input.step),
    }
}

/// For the status: what a rotation under way is doing and when its next phase is due (`None`
/// when none is under way).
pub fn describe(secret: &SecretState, step: Duration) -> Option<String> {
    let phase = secret.phase();
    if phase == Phase::Done {
        return None;
    }
    let request = secret
        .annotations
        .get(REQUEST)
        .map_or_else(String::new, |r| format!(" (request {r:?})"));
    let next = secret
        .since()
        .and_then(|since| {
            let step_ms = i64::try_from(step.as_millis()).ok()?;
            Timestamp::from_millisecond(since.as_millisecond().checked_add(step_ms)?).ok()
        })
        .map_or_else(String::new, |at| format!("; next step at {at}"));
    Some(format!(
        "rotating the membership key{request}: {}{next}",
        phase.describe()
    ))
}

#[cfg(test)]
mod tests;
