//! What the controller wants of one Service, decided without I/O: the outcome of allocation, and
//! what must be written so that the Service (as the cluster holds it now) shows that outcome.
//!
//! The reconcile loop (`reconciler`) only carries these decisions out. Because the write plan is
//! computed against the freshest known copy of the Service, not against what the controller last
//! wrote, anyone's change (a cleared `status.loadBalancer`, another load balancer's addresses) is
//! seen as a difference and written over.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_api::condition::reasons;

use crate::allocator::{AllocationError, Allocator, Assignment};
use crate::service::{self, ServiceView};

/// The outcome of allocation for one Service of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The Service holds these addresses.
    Allocated(Assignment),
    /// The Service's request cannot be met.
    Failed {
        /// CamelCase reason (the condition's and the Event's).
        reason: &'static str,
        /// What an admin reads.
        message: String,
        /// What the allocator still holds for the Service (a changed request that cannot be met
        /// keeps the addresses it had).
        kept: Option<Assignment>,
    },
}

impl Outcome {
    /// The reason, as the condition and the allocation metric name it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Allocated(_) => reasons::IP_ALLOCATED,
            Self::Failed { reason, .. } => reason,
        }
    }
}

/// The allocator's answer for a Service, and what it freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What the Service gets.
    pub outcome: Outcome,
    /// Addresses the Service held before were given back (others waiting may now fit).
    pub freed: bool,
}

/// Decides the outcome for a Service that is ours. Changes only the allocator.
///
/// - With no pools configured nothing new is allocated and nothing held is taken away: what the
///   allocator or the Service's status holds stays.
/// - Addresses in status that the allocator does not know yet (written by an earlier leader, or
///   kept across a configuration change) are claimed before anything is allocated, so they do not
///   move.
/// - A request that cannot be met keeps what the Service holds, and says so.
pub fn decide(
    allocator: &mut Allocator,
    svc: &ServiceView,
    namespace_labels: &BTreeMap<String, String>,
    no_pools: bool,
) -> Decision {
    let key = svc.key();
    let req = match service::request(svc, namespace_labels) {
        Ok(req) => req,
        Err(e) => {
            let kept = allocator.assignment(&key).cloned();
            let mut message = e.to_string();
            if kept.is_some() {
                message.push_str(KEEPS);
            }
            return Decision {
                outcome: Outcome::Failed {
                    reason: e.reason(),
                    message,
                    kept,
                },
                freed: false,
            };
        }
    };
    let current = &svc.status_ips;
    let known = allocator.assignment(&key).cloned();
    if no_pools {
        let held = known
            .map(|a| a.ips)
            .or_else(|| Some(current.clone()).filter(|c| !c.is_empty()));
        let outcome = match held {
            Some(ips) => Outcome::Allocated(Assignment {
                pool: svc.allocated_pool.clone().unwrap_or_default(),
                ips,
            }),
            None => failure(&AllocationError::NoPools, None),
        };
        return Decision {
            outcome,
            freed: false,
        };
    }
    if known.is_none() && !current.is_empty() {
        // Best effort: when the held addresses no longer fit, allocate() below says why.
        let _ = allocator.assign(&req, current);
    }
    match allocator.allocate(&req) {
        Ok(a) => Decision {
            freed: known.is_some_and(|k| k.ips != a.ips),
            outcome: Outcome::Allocated(a),
        },
        Err(e) => {
            let kept = allocator.assignment(&key).cloned();
            Decision {
                outcome: failure(&e, kept),
                freed: false,
            }
        }
    }
}

/// Appended to a failure's message when the Service keeps what it holds.
const KEEPS: &str = "; the Service keeps its current addresses";

fn failure(e: &AllocationError, kept: Option<Assignment>) -> Outcome {
    let mut message = e.to_string();
    if kept.is_some() {
        message.push_str(KEEPS);
    }
    Outcome::Failed {
        reason: e.reason(),
        message,
        kept,
    }
}

/// The controller's condition, as it must read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedCondition {
    /// `True` or `False`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
    /// The status does not flip: the condition keeps its `lastTransitionTime`.
    pub keeps_transition_time: bool,
}

/// What an Event about a change says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// `Normal` (true) or `Warning` (false).
    pub normal: bool,
    /// `IPAllocated` or `AllocationFailed`.
    pub reason: &'static str,
    /// The Event's note.
    pub note: String,
}

/// One write that brings a Service to its outcome: its status (ingress and condition) with the
/// pool annotation in one server-side apply, plus, only when an annotation must go and no pool
/// is named, a merge patch removing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `status.loadBalancer.ingress`, in order.
    pub ips: Vec<IpAddr>,
    /// The pool annotation, when a pool is named.
    pub pool: Option<String>,
    /// The annotation is present and no pool is named: remove it.
    pub remove_pool_annotation: bool,
    /// The condition.
    pub condition: WantedCondition,
    /// The addresses change (the allocation latency is measured on these writes).
    pub ips_changed: bool,
    /// The Event to publish once the write has landed.
    pub event: Option<Note>,
}

/// What must be written for `svc` (as the cluster holds it now) to show `outcome`; `None` when it
/// already does.
pub fn plan(svc: &ServiceView, outcome: &Outcome) -> Option<Plan> {
    let (status, reason, message, ips, pool) = match outcome {
        Outcome::Allocated(a) => (
            "True",
            reasons::IP_ALLOCATED,
            describe(a),
            a.ips.clone(),
            Some(a.pool.clone()).filter(|p| !p.is_empty()),
        ),
        Outcome::Failed {
            reason,
            message,
            kept,
        } => match kept {
            // The allocator holds these for the Service: the status must show them, or the two
            // disagree (someone may have cleared the status meanwhile).
            Some(a) => (
                "False",
                *reason,
                message.clone(),
                a.ips.clone(),
                Some(a.pool.clone()).filter(|p| !p.is_empty()),
            ),
            // Nothing held: what the Service shows stays (no pools never wipes addresses).
            None => (
                "False",
                *reason,
                message.clone(),
                svc.status_ips.clone(),
                svc.allocated_pool.clone(),
            ),
        },
    };
    let seen = service::condition(svc);
    let same_condition = seen == Some((status, reason, message.as_str()));
    let ips_changed = svc.status_ips != ips;
    let pool_changed = svc.allocated_pool != pool;
    if same_condition && !ips_changed && !pool_changed {
        return None;
    }
    let event = match outcome {
        Outcome::Allocated(a) if ips_changed => Some(Note {
            normal: true,
            reason: reasons::IP_ALLOCATED,
            note: format!("Assigned {}", describe(a)),
        }),
        Outcome::Allocated(_) => None,
        Outcome::Failed {
            reason, message, ..
        } if !same_condition => Some(Note {
            normal: false,
            reason: reasons::ALLOCATION_FAILED,
            note: format!("{reason}: {message}"),
        }),
        Outcome::Failed { .. } => None,
    };
    Some(Plan {
        remove_pool_annotation: pool.is_none() && svc.allocated_pool.is_some(),
        ips,
        pool,
        condition: WantedCondition {
            status,
            reason,
            message,
            keeps_transition_time: seen.is_some_and(|(s, _, _)| s == status),
        },
        ips_changed,
        event,
    })
}

/// `203.0.113.5 from pool public`.
pub fn describe(a: &Assignment) -> String {
    let ips: Vec<String> = a.ips.iter().map(ToString::to_string).collect();
    if a.pool.is_empty() {
        ips.join(", ")
    } else {
        format!("{} from pool {}", ips.join(", "), a.pool)
    }
}

#[cfg(test)]
mod tests;
