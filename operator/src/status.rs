//! What the LoadBalancerConfig's status says, decided purely from what the operator observed:
//! the config's own validity and uniqueness, and the rollout of the controller Deployment and
//! the speaker DaemonSet. `lastTransitionTime` moves only when a condition's status flips.

use ferrolb_api::condition::set_condition;
use ferrolb_api::v1alpha1::condition_types::{
    AVAILABLE, CONFIG_VALID, DEGRADED, PROGRESSING, UPGRADEABLE,
};
use ferrolb_api::v1alpha1::{OperatorVersions, RolloutStatus};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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
    /// Nothing needs attention.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// An upgrade is safe now.
    pub const READY_FOR_UPGRADE: &str = "ReadyForUpgrade";
    /// An upgrade would interrupt a rollout or pile onto a problem.
    pub const NOT_SAFE: &str = "RolloutOrDegraded";
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
        AS_EXPECTED,
        READY_FOR_UPGRADE,
        NOT_SAFE,
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
    /// Operator and operand versions.
    pub versions: OperatorVersions,
    /// What a membership key rotation under way is doing (None: none is).
    pub key_rotation: Option<String>,
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
    Computed {
        conditions,
        controller: controller.map(|(s, _)| s),
        speaker: speaker.map(|(s, _)| s),
    }
}

#[cfg(test)]
mod tests;
