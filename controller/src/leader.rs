//! Leader election with a coordination.k8s.io Lease, so that of several replicas exactly one
//! writes allocations, and a standby takes over within a few seconds of the leader's death.
//!
//! Safety over liveness: a leader that cannot renew before its renew deadline steps down at once
//! (the process exits), so two replicas never write at the same time as long as clocks advance at
//! similar rates.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Timing of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the controller's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal: a dead leader is replaced after this.
    pub duration: Duration,
    /// How often the leader renews, and a candidate retries.
    pub renew_every: Duration,
    /// The leader steps down when it has not renewed for this long (less than `duration`).
    pub renew_deadline: Duration,
}

/// Whether this replica leads.
pub type Leadership = watch::Receiver<bool>;

/// Starts campaigning in the background; the receiver turns true while this replica leads.
/// Once it turns false after being true, it never turns true again: the caller should stop.
pub fn campaign(client: Client, config: LeaseConfig) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            match try_hold(&api, &config).await {
                Ok(true) => {
                    if last_renewal.is_none() {
                        tracing::info!(lease = %config.name, identity = %config.identity, "became leader");
                    }
                    last_renewal = Some(tokio::time::Instant::now());
                    let _ = tx.send(true);
                }
                Ok(false) => {
                    if last_renewal.is_some() {
                        tracing::error!(lease = %config.name, "another replica took the lease; stepping down");
                        let _ = tx.send(false);
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %config.name, error = %e, "lease update failed");
                    if let Some(at) = last_renewal
                        && at.elapsed() >= config.renew_deadline
                    {
                        tracing::error!(lease = %config.name, "could not renew before the deadline; stepping down");
                        let _ = tx.send(false);
                        return;
                    }
                }
            }
            tokio::time::sleep(config.renew_every).await;
        }
    });
    (rx, handle)
}

/// One round: create, renew or take over the Lease. Ok(true) when this replica holds it now.
async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let duration_secs = i32::try_from(config.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == config.identity;
    if !mine && !holder.is_empty() && !expired(spec, now.0) {
        return Ok(false);
    }
    if !mine {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(config.identity.clone());
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(duration_secs);
    // The resourceVersion in `lease` makes this a compare-and-swap: if another replica wrote in
    // between, the API server answers 409 and nobody holds it twice.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.0.as_second().saturating_add(duration) < now.as_second()
}

/// Gives the Lease up so a standby takes over at once (on a clean shutdown).
pub async fn release(client: Client, config: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %config.name, "released leadership"),
        Err(e) => tracing::warn!(lease = %config.name, error = %e, "could not release the lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration() {
        let now = Timestamp::now();
        let spec = |ago: i64, duration: i32| LeaseSpec {
            renew_time: Some(MicroTime(
                now - k8s_openapi::jiff::SignedDuration::from_secs(ago),
            )),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec(2, 6), now));
        assert!(expired(&spec(7, 6), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
