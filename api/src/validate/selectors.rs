//! Label selectors: well-formedness, and no selector or requirement stated twice (compared as
//! sets: the order of values and of requirements never changes what a selector selects).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::selector::{same_requirement, same_requirements};

use super::Report;
use super::names::{LABEL_VALUE, QUALIFIED_NAME, is_label_value, is_qualified_name};

/// Checks a list of selectors: each well-formed, none repeated.
pub(super) fn check_list(report: &mut Report, path: &str, selectors: &[LabelSelector]) {
    for (i, selector) in selectors.iter().enumerate() {
        let here = format!("{path}[{i}]");
        check(report, &here, selector);
        if let Some(first) = selectors[..i]
            .iter()
            .position(|s| same_requirements(s, selector))
        {
            report.add(&here, selector, format!("duplicates {path}[{first}]"));
        }
    }
}

/// Checks one selector.
pub(super) fn check(report: &mut Report, path: &str, selector: &LabelSelector) {
    for (key, value) in selector.match_labels.iter().flatten() {
        if !is_qualified_name(key) {
            report.add(format!("{path}.matchLabels"), key, QUALIFIED_NAME);
        }
        if !is_label_value(value) {
            report.add(format!("{path}.matchLabels.{key}"), value, LABEL_VALUE);
        }
    }
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    for (j, expr) in expressions.iter().enumerate() {
        let here = format!("{path}.matchExpressions[{j}]");
        if !is_qualified_name(&expr.key) {
            report.add(format!("{here}.key"), &expr.key, QUALIFIED_NAME);
        }
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => report.add(
                format!("{here}.values"),
                values,
                format!("must not be empty with operator {}", expr.operator),
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => report.add(
                format!("{here}.values"),
                values,
                format!("must be empty with operator {}", expr.operator),
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => report.add(
                format!("{here}.operator"),
                other,
                "must be one of In, NotIn, Exists, DoesNotExist",
            ),
        }
        for (k, value) in values.iter().enumerate() {
            if !is_label_value(value) {
                report.add(format!("{here}.values[{k}]"), value, LABEL_VALUE);
            } else if values[..k].contains(value) {
                report.add(format!("{here}.values[{k}]"), value, "duplicate value");
            }
        }
        if let Some(first) = expressions[..j]
            .iter()
            .position(|e| same_requirement(e, expr))
        {
            report.add(
                &here,
                expr,
                format!("duplicates {path}.matchExpressions[{first}]"),
            );
        }
    }
}
