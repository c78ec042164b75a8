//! What the LoadBalancerConfig's status says, decided purely from what the operator observed:
//! the config's own validity and uniqueness, and the rollout of the controller Deployment and
//! the speaker DaemonSet. `lastTransitionTime` moves only when a condition's status flips.

use ferrolb_api::condition::set_condition;
use ferrolb_api::v1alpha1::condition_types::{
    AVAILABLE, BGP_ESTABLISHED, CONFIG_VALID, DEGRADED, PROGRESSING, UPGRADEABLE,
};
use ferrolb_api::v1alpha1::{BGPSession, OperatorVersions, RolloutStatus};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType};

/// Reasons of the operator's conditions (CamelCase, as metav1 requires).
pub mod reasons {
    /// Every operand is deployed and ready.
    pub const ALL_READY: &str = "AllOperandsReady";
    /// A rollout is under way.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Nothing is changing.
    pub const ROLLED_OUT: &str = "RolledOut";
    /// The operands are rolled out; the speakers' membership key is being rotated.
    pub const ROTATING_KEY: &str = "RotatingMembershipKey";
    /// Operands exist but are not all ready yet.
    pub const NOT_READY: &str = "OperandsNotReady";
    /// The spec is valid.
    pub const VALID: &str = "Valid";
    /// The spec is invalid; the last valid one stays in force.
    pub const INVALID: &str = "InvalidConfig";
    /// Another LoadBalancerConfig is older and in force.
    pub const NOT_IN_FORCE: &str = "AnotherConfigInForce";
    /// Applying an operand failed.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Operand pods cannot become ready (a bad image, unschedulable, crashing): the message
    /// names each with the reason Kubernetes gives.
    pub const PODS_FAILING: &str = "OperandPodsFailing";
    /// The operands' namespace enforces a Pod Security level that refuses the speaker.
    pub const POD_SECURITY: &str = "PodSecurityRefusesSpeaker";
    /// Nothing needs attention.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// An upgrade is safe now.
    pub const READY_FOR_UPGRADE: &str = "ReadyForUpgrade";
    /// An upgrade would interrupt a rollout or pile onto a problem.
    pub const NOT_SAFE: &str = "RolloutOrDegraded";
    /// No LoadBalancerConfig exists, so an upgrade disrupts nothing (told to OLM only).
    pub const NO_CONFIG: &str = "NoConfig";
    /// Every BGP session is Established (or down for less than [`super::BGP_DOWN_GRACE`]).
    pub const SESSIONS_ESTABLISHED: &str = "SessionsEstablished";
    /// Some BGP session has been down for longer than [`super::BGP_DOWN_GRACE`].
    pub const SESSIONS_DOWN: &str = "SessionsDown";
    /// Every reason, for the tests that check their form.
    pub const ALL: &[&str] = &[
        ALL_READY,
        ROLLING_OUT,
        ROLLED_OUT,
        ROTATING_KEY,
        NOT_READY,
        VALID,
        INVALID,
        NOT_IN_FORCE,
        APPLY_FAILED,
        PODS_FAILING,
        POD_SECURITY,
        AS_EXPECTED,
        READY_FOR_UPGRADE,
        NOT_SAFE,
        NO_CONFIG,
        SESSIONS_ESTABLISHED,
        SESSIONS_DOWN,
    ];
}

/// Whether this config is the one in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This config is in force and valid.
    InForce,
    /// This config is the oldest but invalid: every problem, one per line.
    Invalid(String),
    /// An older config is in force: its name.
    Shadowed(String),
}

/// Everything the status is computed from.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The config's `metadata.generation`.
    pub generation: Option<i64>,
    /// Validity and uniqueness; `None` counts as in force.
    pub standing: Option<Standing>,
    /// The controller Deployment as read after applying (None: not there).
    pub controller: Option<Deployment>,
    /// The speaker DaemonSet as read after applying.
    pub speaker: Option<DaemonSet>,
    /// Why applying failed, if it did.
    pub apply_error: Option<String>,
    /// Why operand pods cannot become ready, one line each ([`pod_problem`]).
    pub pod_problems: Vec<String>,
    /// Why the operands' namespace refuses the speaker ([`crate::apply::pod_security_problem`]).
    pub pod_security: Option<String>,
    /// Operator and operand versions.
    pub versions: OperatorVersions,
    /// What a membership key rotation under way is doing (None: none is).
    pub key_rotation: Option<String>,
    /// The speakers' BGPSession objects, when the spec has bgpPeers (None: it has none).
    pub bgp_sessions: Option<Vec<BGPSession>>,
}

/// How long a BGP session may be down before `BGPEstablished` turns False: a router's restart or a
/// node's reboot is not news.
pub const BGP_DOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// At most this many sessions are named in `BGPEstablished`; the rest are counted.
const MAX_SESSIONS_LISTED: usize = 5;

/// `BGPEstablished` from the speakers' sessions at `now`: (ok, reason, message).
fn bgp_established(sessions: &[BGPSession], now: &Time) -> (bool, &'static str, String) {
    let grace = k8s_openapi::jiff::SignedDuration::try_from(BGP_DOWN_GRACE).unwrap_or_default();
    let mut down: Vec<String> = sessions
        .iter()
        .filter_map(|s| {
            let status = s.status.as_ref()?;
            let since = status.down_since.as_ref()?;
            if now.0.duration_since(since.0) < grace {
                return None;
            }
            let name = s.metadata.name.as_deref().unwrap_or_default();
            let mut line = format!(
                "{name} (node {}, peer {} at {}) {} since {}",
                s.spec.node, s.spec.peer, s.spec.peer_address, status.state, since.0
            );
            if let Some(error) = &status.last_error {
                line.push_str(&format!(": {error}"));
            }
            Some(line)
        })
        .collect();
    down.sort();
    let total = sessions.len();
    if down.is_empty() {
        return (
            true,
            reasons::SESSIONS_ESTABLISHED,
            format!(
                "{total} BGP sessions, none down for more than {}s",
                BGP_DOWN_GRACE.as_secs()
            ),
        );
    }
    let count = down.len();
    let more = count.saturating_sub(MAX_SESSIONS_LISTED);
    down.truncate(MAX_SESSIONS_LISTED);
    let mut message = format!(
        "{count} of {total} BGP sessions down for more than {}s: {}",
        BGP_DOWN_GRACE.as_secs(),
        down.join("; ")
    );
    if more > 0 {
        message.push_str(&format!("; and {more} more (kubectl get bgpsessions)"));
    }
    (false, reasons::SESSIONS_DOWN, message)
}

/// Waiting reasons of a container that is only starting.
const STARTING: &[&str] = &["ContainerCreating", "PodInitializing"];

/// Why an operand pod cannot become ready, if Kubernetes says so: the scheduler could not place
/// it (`Unschedulable`), or a container waits for another reason than starting
/// (`ErrImagePull`, `ImagePullBackOff`, `CrashLoopBackOff`, `CreateContainerConfigError`, ...).
/// A pod that is starting, running, leaving or finished (its workload replaces it; the
/// replacement tells the current problem) has none. As `pod NAME [on NODE]: REASON: MESSAGE`.
pub fn pod_problem(pod: &Pod) -> Option<String> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Failed" | "Succeeded")) {
        return None;
    }
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    let status = pod.status.as_ref()?;
    let line = |reason: &str, message: Option<&str>| {
        let message = message.map(str::trim).filter(|m| !m.is_empty());
        Some(match message {
            Some(m) => format!("pod {name}{node}: {reason}: {m}"),
            None => format!("pod {name}{node}: {reason}"),
        })
    };
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(c) = unschedulable {
        return line("Unschedulable", c.message.as_deref());
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        if let Some(w) = waiting
            && let Some(reason) = w.reason.as_deref()
            && !STARTING.contains(&reason)
        {
            return line(reason, w.message.as_deref());
        }
    }
    None
}

/// At most this many pod problems are listed in `Degraded`; the rest are counted.
const LISTED_PROBLEMS: usize = 5;

fn problems_message(problems: &[String]) -> String {
    let mut lines: Vec<String> = problems.iter().take(LISTED_PROBLEMS).cloned().collect();
    if problems.len() > LISTED_PROBLEMS {
        lines.push(format!("and {} more", problems.len() - LISTED_PROBLEMS));
    }
    format!(
        "{} operand pod(s) cannot become ready:\n{}",
        problems.len(),
        lines.join("\n")
    )
}

/// A rollout's counts, and whether it is done.
fn deployment_rollout(d: &Deployment) -> (RolloutStatus, bool) {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let seen = status.observed_generation >= d.metadata.generation;
    let done = seen && updated == desired && ready == desired && total == desired;
    (
        RolloutStatus {
            desired,
            ready,
            updated,
        },
        done,
    )
}

fn daemonset_rollout(d: &DaemonSet) -> (RolloutStatus, bool) {
    let status = d.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let ready = status.number_ready;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let seen = status.observed_generation >= d.metadata.generation;
    let done = seen && updated == desired && ready == desired;
    (
        RolloutStatus {
            desired,
            ready,
            updated,
        },
        done,
    )
}

/// The status the operator writes: conditions (kept from `previous` where the status does not
/// flip), rollout counts, versions.
#[derive(Clone, Debug, PartialEq)]
pub struct Computed {
    /// All five conditions.
    pub conditions: Vec<Condition>,
    /// Controller rollout counts.
    pub controller: Option<RolloutStatus>,
    /// Speaker rollout counts.
    pub speaker: Option<RolloutStatus>,
}

/// Computes the status from `observed`, keeping transition times from `previous`.
pub fn compute(observed: &Observed, previous: &[Condition], now: Time) -> Computed {
    let generation = observed.generation;
    let mut conditions = previous.to_vec();
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        set_condition(
            &mut conditions,
            Condition {
                type_: type_.to_owned(),
                status: if ok { "True" } else { "False" }.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: generation,
                last_transition_time: now.clone(),
            },
        );
    };
    let controller = observed.controller.as_ref().map(deployment_rollout);
    let speaker = observed.speaker.as_ref().map(daemonset_rollout);
    let shadowed = matches!(observed.standing, Some(Standing::Shadowed(_)));

    match &observed.standing {
        Some(Standing::Invalid(problems)) => set(
            CONFIG_VALID,
            false,
            reasons::INVALID,
            format!("the last valid configuration stays in force:\n{problems}"),
        ),
        Some(Standing::Shadowed(other)) => set(
            CONFIG_VALID,
            false,
            reasons::NOT_IN_FORCE,
            format!(
                "LoadBalancerConfig {other} is older and in force; this one is ignored (delete it)"
            ),
        ),
        _ => set(
            CONFIG_VALID,
            true,
            reasons::VALID,
            "the configuration is valid".to_owned(),
        ),
    }

    let counts = |name: &str, r: &Option<(RolloutStatus, bool)>| match r {
        Some((s, _)) => format!(
            "{name} {}/{} ready, {} updated",
            s.ready, s.desired, s.updated
        ),
        None => format!("{name} not deployed"),
    };
    let summary = format!(
        "{}; {}",
        counts("controller", &controller),
        counts("speaker", &speaker)
    );
    let all_done = !shadowed
        && controller.as_ref().is_some_and(|(_, done)| *done)
        && speaker.as_ref().is_some_and(|(_, done)| *done);
    let ready = |r: &Option<(RolloutStatus, bool)>| {
        r.as_ref()
            .is_some_and(|(s, _)| s.ready >= s.desired && s.desired > 0)
            || r.as_ref()
                .is_some_and(|(s, _)| s.desired == 0 && s.ready == 0)
    };
    let available = !shadowed && ready(&controller) && ready(&speaker);
    set(
        AVAILABLE,
        available,
        if available {
            reasons::ALL_READY
        } else {
            reasons::NOT_READY
        },
        summary.clone(),
    );
    let rolling_out = !shadowed && !all_done && observed.apply_error.is_none();
    // A key rotation is progress too (the speakers' configuration moves through its phases),
    // but it does not hold up an upgrade: its state is in the Secret, and survives restarts.
    let rotating = observed.key_rotation.as_ref().filter(|_| !shadowed);
    let progressing = rolling_out || (rotating.is_some() && observed.apply_error.is_none());
    set(
        PROGRESSING,
        progressing,
        match (rolling_out, progressing) {
            (true, _) => reasons::ROLLING_OUT,
            (false, true) => reasons::ROTATING_KEY,
            (false, false) => reasons::ROLLED_OUT,
        },
        match rotating {
            Some(rotation) => format!("{summary}; {rotation}"),
            None => summary.clone(),
        },
    );
    let degraded = match (&observed.apply_error, &observed.standing) {
        (Some(e), _) => Some((reasons::APPLY_FAILED, e.clone())),
        (None, Some(Standing::Invalid(problems))) => Some((
            reasons::INVALID,
            format!(
                "the spec is invalid; the last valid configuration stays in force:\n{problems}"
            ),
        )),
        (None, Some(Standing::Shadowed(other))) => Some((
            reasons::NOT_IN_FORCE,
            format!("LoadBalancerConfig {other} is older and in force; only one may exist"),
        )),
        (None, _) if observed.pod_security.is_some() => Some((
            reasons::POD_SECURITY,
            observed.pod_security.clone().unwrap_or_default(),
        )),
        _ if !observed.pod_problems.is_empty() => Some((
            reasons::PODS_FAILING,
            problems_message(&observed.pod_problems),
        )),
        _ => None,
    };
    let is_degraded = degraded.is_some();
    match degraded {
        Some((reason, message)) => set(DEGRADED, true, reason, message),
        None => set(
            DEGRADED,
            false,
            reasons::AS_EXPECTED,
            "nothing needs attention".to_owned(),
        ),
    }
    let upgradeable = !is_degraded && !rolling_out;
    set(
        UPGRADEABLE,
        upgradeable,
        if upgradeable {
            reasons::READY_FOR_UPGRADE
        } else {
            reasons::NOT_SAFE
        },
        if upgradeable {
            "no rollout is under way and nothing is degraded".to_owned()
        } else {
            "wait until the rollout is over and nothing is degraded".to_owned()
        },
    );
    match &observed.bgp_sessions {
        Some(sessions) if !shadowed => {
            let (ok, reason, message) = bgp_established(sessions, &now);
            set(BGP_ESTABLISHED, ok, reason, message);
        }
        _ => conditions.retain(|c| c.type_ != BGP_ESTABLISHED),
    }
    Computed {
        conditions,
        controller: controller.map(|(s, _)| s),
        speaker: speaker.map(|(s, _)| s),
    }
}

/// The conditions whose changes are told as Events (Upgradeable follows from the others).
const TOLD: &[&str] = &[CONFIG_VALID, AVAILABLE, PROGRESSING, DEGRADED];

/// The Events for what changed between two sets of conditions: one per told condition whose
/// status or reason changed, a Warning when it changed for the worse (invalid, degraded, no
/// longer available), with the condition's reason and message.
pub fn transitions(previous: &[Condition], next: &[Condition]) -> Vec<Event> {
    TOLD.iter()
        .filter_map(|type_| {
            let now = next.iter().find(|c| c.type_ == *type_)?;
            let before = previous.iter().find(|c| c.type_ == *type_);
            if before.is_some_and(|b| b.status == now.status && b.reason == now.reason) {
                return None;
            }
            let worse = match *type_ {
                DEGRADED => now.status == "True",
                AVAILABLE => now.status == "False" && before.is_some_and(|b| b.status == "True"),
                CONFIG_VALID => now.status == "False",
                _ => false,
            };
            Some(Event {
                type_: if worse {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: now.reason.clone(),
                note: Some(truncate_note(&format!(
                    "{} is {}: {}",
                    now.type_, now.status, now.message
                ))),
                action: "Reconcile".to_owned(),
                secondary: None,
            })
        })
        .collect()
}

/// An Event's note holds at most 1 KiB.
fn truncate_note(note: &str) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note.to_owned();
    }
    let mut end = MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests;
