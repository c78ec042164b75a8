//! Tells OLM whether an upgrade of the operator may proceed now. Under OLM v0 the operator's
//! pods carry `OPERATOR_CONDITION_NAME`: the name of the `OperatorCondition` OLM made for the
//! operator's ClusterServiceVersion, in the operator's namespace. OLM holds an upgrade while
//! that object's `spec.conditions` holds `Upgradeable=False`, so the operator mirrors its
//! config's `Upgradeable` condition there (`NoConfig`, True, when no config exists). Without the
//! variable (a plain-manifest install) nothing here runs.
//!
//! OLM grants the operator get, update and patch on that one object, nothing else (no list, no
//! watch). `spec.conditions` is an atomic list (no `x-kubernetes-list-type: map`), so a
//! server-side apply would own the whole list and drop entries others wrote: the object is read,
//! the `Upgradeable` entry set in what was read, and the list written back with a merge patch
//! that carries the read `resourceVersion` (a write in between makes it fail, not lose an entry).

use std::time::Duration;

use ferrolb_api::condition::set_condition;
use ferrolb_api::v1alpha1::condition_types::UPGRADEABLE;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::render::FIELD_MANAGER;
use crate::status::reasons;

/// The variable OLM sets in the operator's pods: the name of its OperatorCondition.
pub const OPERATOR_CONDITION_NAME: &str = "OPERATOR_CONDITION_NAME";

/// At most this long for reading and writing the OperatorCondition: telling OLM must not hold
/// up the reconcile of the operands.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the OperatorCondition could not be brought up to date.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// Reading or patching it failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// Its `spec.conditions` is not a list of conditions: left as it is rather than replaced.
    #[error("its spec.conditions does not parse: {0}")]
    Malformed(#[source] serde_json::Error),
    /// No answer in time.
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
}

/// `Upgradeable=True` with reason `NoConfig`: without a LoadBalancerConfig there are no operands
/// an upgrade could disrupt.
pub fn no_config(now: Time) -> Condition {
    Condition {
        type_: UPGRADEABLE.to_owned(),
        status: "True".to_owned(),
        reason: reasons::NO_CONFIG.to_owned(),
        message: "no LoadBalancerConfig exists: an upgrade disrupts nothing".to_owned(),
        observed_generation: None,
        last_transition_time: now,
    }
}

/// The merge patch that sets `upgradeable` in `live`'s `spec.conditions`, every other entry
/// kept, or `None` when `live` holds it already. Its `lastTransitionTime` stays the one `live`
/// holds unless the status flips. The patch carries `live`'s `resourceVersion`, so it fails
/// rather than overwrite a list changed since.
fn patch(live: &DynamicObject, upgradeable: Condition) -> Result<Option<Value>, Error> {
    let mut conditions: Vec<Condition> = match live.data.pointer("/spec/conditions") {
        None | Some(Value::Null) => Vec::new(),
        Some(list) => serde_json::from_value(list.clone()).map_err(Error::Malformed)?,
    };
    if !set_condition(&mut conditions, upgradeable) {
        return Ok(None);
    }
    Ok(Some(json!({
        "metadata": {"resourceVersion": live.metadata.resource_version},
        "spec": {"conditions": conditions},
    })))
}

/// The operator's OperatorCondition (`operators.coreos.com/v2`).
#[derive(Clone, Debug)]
pub struct OperatorCondition {
    api: Api<DynamicObject>,
    name: String,
}

impl OperatorCondition {
    /// The OperatorCondition `name` in `namespace` (the operator's own).
    pub fn new(client: Client, namespace: &str, name: String) -> Self {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("operators.coreos.com", "v2", "OperatorCondition"),
            "operatorconditions",
        );
        Self {
            api: Api::namespaced_with(client, namespace, &resource),
            name,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets `upgradeable` in the object's `spec.conditions` unless it holds it already. Returns
    /// whether the object holds it now; a failure is logged, not returned: the caller looks
    /// again later, and its own work goes on.
    pub async fn report(&self, upgradeable: Condition) -> bool {
        let (status, reason) = (upgradeable.status.clone(), upgradeable.reason.clone());
        let synced = tokio::time::timeout(TIMEOUT, self.sync(upgradeable))
            .await
            .unwrap_or(Err(Error::Timeout));
        match synced {
            Ok(written) => {
                if written {
                    tracing::info!(operator_condition = %self.name, %status, %reason, "told OLM whether an upgrade may proceed");
                }
                true
            }
            Err(error) => {
                tracing::warn!(operator_condition = %self.name, %error, "cannot report Upgradeable to OLM; retrying");
                false
            }
        }
    }

    /// Reads the object and patches it when it lacks `upgradeable`; whether it wrote.
    async fn sync(&self, upgradeable: Condition) -> Result<bool, Error> {
        let live = self.api.get(&self.name).await?;
        let Some(patch) = patch(&live, upgradeable)? else {
            return Ok(false);
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.name, &params, &Patch::Merge(&patch))
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:05:00Z";

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn cond(type_: &str, status: &str, reason: &str, since: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: format!("{type_} is {status}"),
            observed_generation: Some(3),
            last_transition_time: at(since),
        }
    }

    fn upgradeable(status: &str, since: &str) -> Condition {
        let reason = if status == "True" {
            reasons::READY_FOR_UPGRADE
        } else {
            reasons::NOT_SAFE
        };
        cond(UPGRADEABLE, status, reason, since)
    }

    /// An OperatorCondition as OLM makes it, at resourceVersion 42, with `spec.conditions`.
    fn live(conditions: Option<Value>) -> DynamicObject {
        let mut spec = json!({
            "deployments": ["ferrolb-operator"],
            "serviceAccounts": ["ferrolb-operator"],
        });
        if let Some(conditions) = conditions {
            spec["conditions"] = conditions;
        }
        serde_json::from_value(json!({
            "apiVersion": "operators.coreos.com/v2",
            "kind": "OperatorCondition",
            "metadata": {"name": "ferrolb.v0.1.0", "namespace": "operators", "resourceVersion": "42"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn conditions_of(patch: &Value) -> Vec<Condition> {
        serde_json::from_value(patch["spec"]["conditions"].clone()).unwrap()
    }

    #[test]
    fn a_first_report_adds_upgradeable_with_the_read_resource_version() {
        for conditions in [None, Some(Value::Null), Some(json!([]))] {
            let patch = patch(&live(conditions.clone()), upgradeable("False", T1))
                .unwrap()
                .expect("a write");
            assert_eq!(patch["metadata"]["resourceVersion"], "42", "{conditions:?}");
            assert_eq!(conditions_of(&patch), [upgradeable("False", T1)]);
            // Only the conditions: OLM's own fields are not in the patch.
            assert_eq!(patch["spec"].as_object().unwrap().len(), 1);
        }
    }

    #[test]
    fn the_config_condition_is_mirrored_whole() {
        let held = json!([upgradeable("False", T0)]);
        let ready = upgradeable("True", T1);
        let patch = patch(&live(Some(held)), ready.clone()).unwrap().unwrap();
        // Status, reason, message, observedGeneration, and the flip's time.
        assert_eq!(conditions_of(&patch), [ready]);
        assert_eq!(patch["spec"]["conditions"][0]["observedGeneration"], 3);
        assert_eq!(patch["spec"]["conditions"][0]["reason"], "ReadyForUpgrade");
    }

    #[test]
    fn entries_someone_else_wrote_are_kept_in_place() {
        let theirs = cond("example.com/Backup", "True", "Done", T0);
        let held = json!([theirs, upgradeable("True", T0)]);
        let patch = patch(&live(Some(held)), upgradeable("False", T1))
            .unwrap()
            .unwrap();
        assert_eq!(conditions_of(&patch), [theirs, upgradeable("False", T1)]);
    }

    /// One row: what the object holds, what is reported, and the `lastTransitionTime` written
    /// (`None`: nothing is written).
    #[test]
    fn only_a_change_is_written() {
        let mut new_message = upgradeable("False", T0);
        new_message.message = "wait: speaker 1/3 ready".to_owned();
        let mut new_generation = upgradeable("False", T0);
        new_generation.observed_generation = Some(4);
        #[rustfmt::skip]
        let rows = [
            ("identical", upgradeable("False", T0), upgradeable("False", T0), None),
            ("same status, a later time: kept", upgradeable("False", T0), upgradeable("False", T1), None),
            ("status flips: the config's time", upgradeable("True", T0), upgradeable("False", T1), Some(T1)),
            ("new message: the time kept", upgradeable("False", T0), new_message, Some(T0)),
            ("new generation: the time kept", upgradeable("False", T0), new_generation, Some(T0)),
            ("no config any more: the time kept", upgradeable("True", T0), no_config(at(T1)), Some(T0)),
            ("still no config", no_config(at(T0)), no_config(at(T1)), None),
        ];
        for (what, held, reported, written) in rows {
            let patch = patch(&live(Some(json!([held]))), reported).unwrap();
            let since = patch.map(|p| conditions_of(&p)[0].last_transition_time.clone());
            assert_eq!(since, written.map(at), "{what}");
        }
    }

    #[test]
    fn malformed_conditions_are_left_alone() {
        for conditions in [json!("Upgradeable"), json!([{"type": "Upgradeable"}])] {
            let result = patch(&live(Some(conditions.clone())), upgradeable("False", T1));
            assert!(matches!(result, Err(Error::Malformed(_))), "{conditions}");
        }
    }

    #[test]
    fn no_config_allows_an_upgrade() {
        let c = no_config(at(T0));
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Upgradeable", "True", "NoConfig")
        );
        assert_eq!(c.observed_generation, None);
    }
}
