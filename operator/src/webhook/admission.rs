//! The admission decision, pure: an `AdmissionReview` of a LoadBalancerConfig in, the answer out.
//!
//! It denies with every problem [`ferrolb_api::validate`] finds, one per line as
//! `PATH: VALUE: REASON` (what `ferrolb-operator validate -f` prints), and denies a second
//! config, naming the one that exists. A valid config is allowed with warnings for what is
//! probably a mistake. It never blocks a deletion or a change that leaves the spec as it is
//! (finalizers, annotations): those are how an admin cleans up a config that slipped in while
//! the webhook was down.

use std::collections::BTreeMap;

use ferrolb_api::manifest::from_value;
use ferrolb_api::{LoadBalancerConfig, validate};
use kube::Resource;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

/// What the webhook knows of the cluster when it decides.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cluster<'a> {
    /// The names of the LoadBalancerConfigs that exist now.
    pub configs: &'a [String],
    /// The labels of every current node; `None` while they are not known yet.
    pub nodes: Option<&'a [BTreeMap<String, String>]>,
}

/// Answers one AdmissionReview (the request body as the API server sent it). `Err` is a body
/// that is not an AdmissionReview with a request, with why, to answer with a client error.
pub fn review(body: &[u8], cluster: Cluster<'_>) -> Result<AdmissionReview<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not an AdmissionReview: {e}"))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_owned())?;
    Ok(decide(&request, cluster).into_review())
}

/// The answer to one admission request.
pub fn decide(
    request: &AdmissionRequest<DynamicObject>,
    cluster: Cluster<'_>,
) -> AdmissionResponse {
    let allow = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return allow;
    }
    let kind = &request.kind;
    if kind.group != LoadBalancerConfig::group(&()) || kind.kind != LoadBalancerConfig::kind(&()) {
        return allow.deny(format!(
            "this webhook validates {}/{} only, not {}/{}: check the rules of the ValidatingWebhookConfiguration",
            LoadBalancerConfig::group(&()),
            LoadBalancerConfig::kind(&()),
            kind.group,
            kind.kind
        ));
    }
    let Some(object) = &request.object else {
        return allow.deny("the request carries no object");
    };
    if object.metadata.deletion_timestamp.is_some() {
        return allow;
    }
    if request.operation == Operation::Update
        && request
            .old_object
            .as_ref()
            .is_some_and(|old| old.data.get("spec") == object.data.get("spec"))
    {
        return allow;
    }
    if request.operation == Operation::Create
        && let Some(other) = cluster.configs.iter().find(|n| **n != request.name)
    {
        return allow.deny(format!(
            "a cluster has exactly one LoadBalancerConfig, and {other:?} exists: change that one (kubectl edit lbc {other})"
        ));
    }
    let config = match serde_json::to_value(object)
        .map_err(|e| e.to_string())
        .and_then(|value| from_value(value).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(why) => return allow.deny(why),
    };
    match validate(&config.spec) {
        Err(problems) => allow.deny(problems),
        Ok(()) => {
            let warnings: Vec<String> =
                ferrolb_api::validate::warnings(&config.spec, cluster.nodes)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
            let mut allow = allow;
            allow.warnings = (!warnings.is_empty()).then_some(warnings);
            allow
        }
    }
}

#[cfg(test)]
mod tests;
