//! `metav1.Condition` handling shared by every FerroLB writer: a condition's
//! `lastTransitionTime` moves only when its status flips, and reasons are CamelCase as the API
//! requires.
//!
//! Pure: the caller passes the current time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Every `reason` FerroLB writes into a condition or an Event, so one test checks them all
/// against the metav1 pattern.
pub mod reasons {
    /// Speaker: the Service's addresses are announced.
    pub const ANNOUNCED: &str = "Announced";
    /// Speaker: no endpoint of the Service is ready, so nobody announces it.
    pub const NO_READY_ENDPOINTS: &str = "NoReadyEndpoints";
    /// Speaker: no live speaker on a node the advertisements select (and, with
    /// `externalTrafficPolicy: Local`, hosting a ready endpoint).
    pub const NO_ELIGIBLE_NODE: &str = "NoEligibleNode";
    /// Controller: addresses assigned.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// Controller (Event): an allocation failed; the note says why.
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    /// Controller, speaker, operator (Event): the config is invalid; the last valid one stays.
    pub const CONFIG_REJECTED: &str = "ConfigRejected";
    /// Controller: the config has no address pools.
    pub const NO_ADDRESS_POOLS: &str = "NoAddressPools";
    /// Controller: the annotated pool does not exist.
    pub const UNKNOWN_ADDRESS_POOL: &str = "UnknownAddressPool";
    /// Controller: no pool admits the Service's namespace.
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    /// Controller: a requested address is in no (or the wrong) pool.
    pub const REQUESTED_IP_NOT_IN_POOL: &str = "RequestedIPNotInPool";
    /// Controller: the requested families cannot be served.
    pub const FAMILY_MISMATCH: &str = "FamilyMismatch";
    /// Controller: a shared address's Services clash.
    pub const SHARING_CONFLICT: &str = "SharingConflict";
    /// Controller: the pools are full.
    pub const POOL_FULL: &str = "PoolFull";
    /// Controller: the Service's request does not parse.
    pub const INVALID_REQUEST: &str = "InvalidRequest";

    /// All of the above.
    pub const ALL: &[&str] = &[
        ANNOUNCED,
        NO_READY_ENDPOINTS,
        NO_ELIGIBLE_NODE,
        IP_ALLOCATED,
        ALLOCATION_FAILED,
        CONFIG_REJECTED,
        NO_ADDRESS_POOLS,
        UNKNOWN_ADDRESS_POOL,
        NAMESPACE_NOT_ALLOWED,
        REQUESTED_IP_NOT_IN_POOL,
        FAMILY_MISMATCH,
        SHARING_CONFLICT,
        POOL_FULL,
        INVALID_REQUEST,
    ];
}

/// Whether `reason` matches metav1's `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$` (and its 1024
/// characters limit): the API server rejects a condition whose reason does not.
pub fn is_valid_reason(reason: &str) -> bool {
    let bytes = reason.as_bytes();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b':');
    match bytes {
        [] => false,
        [first] => first.is_ascii_alphabetic(),
        [first, middle @ .., last] => {
            bytes.len() <= 1024
                && first.is_ascii_alphabetic()
                && middle.iter().all(inner)
                && (last.is_ascii_alphanumeric() || *last == b'_')
        }
    }
}

/// When a condition with `status` took effect: `previous`'s time if it had the same status, else
/// `now`.
pub fn transition_time(previous: Option<(&str, &Time)>, status: &str, now: Time) -> Time {
    match previous {
        Some((old, since)) if old == status => since.clone(),
        _ => now,
    }
}

/// A condition of `type_` at `now`, its `lastTransitionTime` kept from `previous` (status,
/// time) unless the status differs.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    previous: Option<(&str, &Time)>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation,
        last_transition_time: transition_time(previous, status, now),
    }
}

/// Sets `new` in `conditions` (replacing the one of the same type), keeping the old
/// `lastTransitionTime` when the status did not change. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            if *old == new {
                return false;
            }
            *old = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:01:00Z";

    fn cond(type_: &str, status: &str, reason: &str, message: &str, since: &str) -> Condition {
        condition(
            type_,
            status,
            reason,
            message.to_owned(),
            None,
            None,
            at(since),
        )
    }

    #[test]
    fn every_reason_ferrolb_writes_is_camel_case() {
        for reason in reasons::ALL {
            assert!(is_valid_reason(reason), "{reason}");
            assert!(
                reason.starts_with(|c: char| c.is_ascii_uppercase()),
                "{reason}"
            );
        }
        let mut sorted = reasons::ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), reasons::ALL.len(), "a reason listed twice");
    }

    #[test]
    fn reasons_follow_the_metav1_pattern() {
        for (reason, valid) in [
            ("A", true),
            ("Announced", true),
            ("No_Ready:Endpoints,2", true),
            ("Trailing_", true),
            ("", false),
            ("1Leading", false),
            ("_Leading", false),
            ("With space", false),
            ("Dash-ed", false),
            ("Ends:", false),
            ("Ends,", false),
            ("Ünicode", false),
        ] {
            assert_eq!(is_valid_reason(reason), valid, "{reason:?}");
        }
        assert!(is_valid_reason(&"A".repeat(1024)));
        assert!(!is_valid_reason(&"A".repeat(1025)));
    }

    /// One row: the condition held, the one set, and the transition time and change expected.
    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        #[rustfmt::skip]
        let rows = [
            ("new condition: now", None, ("True", "Announced", "m"), T1, true),
            ("same status, new message: kept", Some(("True", "Announced", "old", T0)), ("True", "Announced", "m"), T0, true),
            ("same status, new reason: kept", Some(("False", "NoReadyEndpoints", "m", T0)), ("False", "NoEligibleNode", "m"), T0, true),
            ("status flips: now", Some(("False", "NoReadyEndpoints", "m", T0)), ("True", "Announced", "m"), T1, true),
            ("identical: nothing changes", Some(("True", "Announced", "m", T0)), ("True", "Announced", "m"), T0, false),
        ];
        for (what, old, (status, reason, message), since, changed) in rows {
            let other = cond("Other", "True", "Other", "", T0);
            let mut list = vec![other.clone()];
            if let Some((s, r, m, t)) = old {
                list.push(cond("ferrolb.io/Announced", s, r, m, t));
            }
            let new = cond("ferrolb.io/Announced", status, reason, message, T1);
            assert_eq!(set_condition(&mut list, new), changed, "{what}");
            assert_eq!(list.len(), 2, "{what}: one condition per type");
            assert_eq!(list[0], other, "{what}: other types untouched");
            let set = &list[1];
            assert_eq!(
                (
                    set.status.as_str(),
                    set.reason.as_str(),
                    set.message.as_str()
                ),
                (status, reason, message),
                "{what}"
            );
            assert_eq!(set.last_transition_time, at(since), "{what}");
            let previous = old.map(|(s, _, _, t)| (s, at(t)));
            assert_eq!(
                transition_time(previous.as_ref().map(|(s, t)| (*s, t)), status, at(T1)),
                at(since),
                "{what}: transition_time agrees"
            );
        }
    }
}
