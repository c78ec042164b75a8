//! Scheduling and resources of the controller and the speakers.

use k8s_openapi::api::core::v1::{Affinity, NodeSelectorTerm, Toleration};

use crate::v1alpha1::{ControllerSpec, Placement, SpeakerSpec};

use super::Report;
use super::names::{
    DNS1123_SUBDOMAIN, LABEL_VALUE, QUALIFIED_NAME, is_dns1123_subdomain, is_label_value,
    is_qualified_name,
};

pub(super) fn check_controller(report: &mut Report, spec: &ControllerSpec) {
    let path = "spec.controller";
    if spec.replicas < 1 {
        report.add(
            format!("{path}.replicas"),
            spec.replicas,
            "must be at least 1: without a controller no Service gets an IP",
        );
    }
    check_placement(report, path, &spec.placement);
}

pub(super) fn check_speaker(report: &mut Report, spec: &SpeakerSpec) {
    let path = "spec.speaker";
    check_placement(report, path, &spec.placement);
    for (i, pattern) in spec.exclude_interfaces.iter().enumerate() {
        if let Err(e) = regex::Regex::new(pattern) {
            let reason = e.to_string().lines().last().unwrap_or_default().to_owned();
            report.add(
                format!("{path}.excludeInterfaces[{i}]"),
                pattern,
                format!("is not a valid regular expression: {}", reason.trim()),
            );
        }
    }
}

fn check_placement(report: &mut Report, path: &str, placement: &Placement) {
    for (key, value) in &placement.node_selector {
        if !is_qualified_name(key) {
            report.add(format!("{path}.nodeSelector"), key, QUALIFIED_NAME);
        }
        if !is_label_value(value) {
            report.add(format!("{path}.nodeSelector.{key}"), value, LABEL_VALUE);
        }
    }
    for (i, toleration) in placement.tolerations.iter().enumerate() {
        check_toleration(report, &format!("{path}.tolerations[{i}]"), toleration);
    }
    if let Some(affinity) = &placement.affinity {
        check_affinity(report, &format!("{path}.affinity"), affinity);
    }
    let priority_class_name = &placement.priority_class_name;
    if !priority_class_name.is_empty() && !is_dns1123_subdomain(priority_class_name) {
        report.add(
            format!("{path}.priorityClassName"),
            priority_class_name,
            DNS1123_SUBDOMAIN,
        );
    }
}

fn check_toleration(report: &mut Report, path: &str, t: &Toleration) {
    let key = t.key.as_deref().unwrap_or_default();
    let operator = t.operator.as_deref().unwrap_or("Equal");
    let value = t.value.as_deref().unwrap_or_default();
    let effect = t.effect.as_deref().unwrap_or_default();
    if !key.is_empty() && !is_qualified_name(key) {
        report.add(format!("{path}.key"), key, QUALIFIED_NAME);
    }
    match operator {
        "Equal" if key.is_empty() => report.add(
            format!("{path}.operator"),
            operator,
            "must be Exists when key is empty (to tolerate every taint)",
        ),
        "Exists" if !value.is_empty() => report.add(
            format!("{path}.value"),
            value,
            "must be empty when operator is Exists",
        ),
        "Equal" | "Exists" => {}
        other => report.add(format!("{path}.operator"), other, "must be Equal or Exists"),
    }
    if !is_label_value(value) {
        report.add(format!("{path}.value"), value, LABEL_VALUE);
    }
    if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        report.add(
            format!("{path}.effect"),
            effect,
            "must be empty (every effect), NoSchedule, PreferNoSchedule or NoExecute",
        );
    }
    if let Some(seconds) = t.toleration_seconds
        && effect != "NoExecute"
    {
        report.add(
            format!("{path}.tolerationSeconds"),
            seconds,
            "is only allowed with effect NoExecute",
        );
    }
}

fn check_weight(report: &mut Report, path: String, weight: i32) {
    if !(1..=100).contains(&weight) {
        report.add(path, weight, "must be between 1 and 100");
    }
}

fn check_affinity(report: &mut Report, path: &str, affinity: &Affinity) {
    if let Some(node) = &affinity.node_affinity {
        let here = format!("{path}.nodeAffinity");
        if let Some(required) = &node.required_during_scheduling_ignored_during_execution {
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                check_node_selector_term(
                    report,
                    &format!(
                        "{here}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"
                    ),
                    term,
                );
            }
        }
        for (i, preferred) in node
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let p = format!("{here}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            check_weight(report, format!("{p}.weight"), preferred.weight);
            check_node_selector_term(report, &format!("{p}.preference"), &preferred.preference);
        }
    }
    let pod_terms = [
        (
            "podAffinity",
            affinity.pod_affinity.as_ref().and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        ),
        (
            "podAntiAffinity",
            affinity.pod_anti_affinity.as_ref().and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        ),
    ];
    for (field, preferred) in pod_terms {
        for (i, term) in preferred.iter().copied().flatten().enumerate() {
            check_weight(
                report,
                format!(
                    "{path}.{field}.preferredDuringSchedulingIgnoredDuringExecution[{i}].weight"
                ),
                term.weight,
            );
        }
    }
}

fn check_node_selector_term(report: &mut Report, path: &str, term: &NodeSelectorTerm) {
    for (i, req) in term.match_expressions.iter().flatten().enumerate() {
        let here = format!("{path}.matchExpressions[{i}]");
        let values = req.values.as_deref().unwrap_or_default();
        let problem = match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                Some("values must not be empty with In or NotIn")
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                Some("values must be empty with Exists or DoesNotExist")
            }
            "Gt" | "Lt" if values.len() != 1 || values[0].parse::<i64>().is_err() => {
                Some("values must hold exactly one integer with Gt or Lt")
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => None,
            _ => {
                report.add(
                    format!("{here}.operator"),
                    &req.operator,
                    "must be one of In, NotIn, Exists, DoesNotExist, Gt, Lt",
                );
                None
            }
        };
        if let Some(reason) = problem {
            report.add(format!("{here}.values"), values, reason);
        }
    }
}
