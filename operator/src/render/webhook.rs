//! The admission webhook's install: the Service in front of the operator's replicas, the
//! ValidatingWebhookConfiguration, and the operator's PodDisruptionBudget (the webhook must
//! survive a node drain: with `failurePolicy: Fail`, no replica means no config change).
//!
//! The configuration carries no `caBundle`: a self-managed operator injects it (its field
//! manager owns only that field), OLM or cert-manager's CA injector do under theirs.

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, RuleWithOperations, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::install::{OPERATOR, OPERATOR_NAMESPACE, operator_selector};
use super::{Settings, install_labels};
use crate::webhook::{PORT_NAME, SERVICE, VALIDATING_WEBHOOK, WEBHOOK_CONFIGURATION, server};

/// Seconds the API server waits for the webhook before it refuses the request: short, so an
/// unreachable replica costs the admin a clear error rather than a hung `kubectl apply`.
pub const TIMEOUT_SECONDS: i32 = 5;

fn meta(settings: &Settings, name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespaced.then(|| OPERATOR_NAMESPACE.to_owned()),
        labels: Some(install_labels(settings, "webhook")),
        ..ObjectMeta::default()
    }
}

/// The Service the API server calls: port 443 to every ready replica's webhook port.
pub fn webhook_service(settings: &Settings) -> Service {
    Service {
        metadata: meta(settings, SERVICE, true),
        spec: Some(ServiceSpec {
            selector: Some(operator_selector()),
            ports: Some(vec![ServicePort {
                name: Some("https".to_owned()),
                port: 443,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The validating webhook for LoadBalancerConfig creates and updates.
///
/// `failurePolicy: Fail`: a config nobody checked never lands. Two match conditions keep the
/// webhook out of what must work even while it is down: a config being deleted (the
/// operator's finalizer removal) and an update that leaves the spec as it is (labels,
/// annotations, finalizers). Status writes go to the status subresource, which no rule names.
/// `sideEffects: None`, so `kubectl apply --dry-run=server` runs it too.
pub fn webhook_configuration(settings: &Settings) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: meta(settings, WEBHOOK_CONFIGURATION, false),
        webhooks: Some(vec![ValidatingWebhook {
            name: VALIDATING_WEBHOOK.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: SERVICE.to_owned(),
                    namespace: OPERATOR_NAMESPACE.to_owned(),
                    path: Some(server::PATH.to_owned()),
                    port: Some(443),
                }),
                ..WebhookClientConfig::default()
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["ferrolb.io".to_owned()]),
                // The version this build decides; the API server converts others to it.
                api_versions: Some(vec!["v1alpha1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                resources: Some(vec!["loadbalancerconfigs".to_owned()]),
                scope: Some("Cluster".to_owned()),
            }]),
            match_conditions: Some(vec![
                MatchCondition {
                    name: "not-being-deleted".to_owned(),
                    expression: "!has(object.metadata.deletionTimestamp)".to_owned(),
                },
                MatchCondition {
                    name: "spec-changed".to_owned(),
                    expression: "request.operation != 'UPDATE' || !has(oldObject.spec) || !has(object.spec) || object.spec != oldObject.spec".to_owned(),
                },
            ]),
            failure_policy: Some("Fail".to_owned()),
            match_policy: Some("Equivalent".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            ..ValidatingWebhook::default()
        }]),
    }
}

/// At most one operator replica down at a time, by choice (a drain, an eviction): the other
/// keeps serving the webhook. `maxUnavailable`, not `minAvailable: 1`: scaled to one replica,
/// a drain may still take it rather than hang.
pub fn operator_disruption_budget(settings: &Settings) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(settings, OPERATOR, true),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(operator_selector()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
