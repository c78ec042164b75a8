//! The one validation of a `LoadBalancerConfig` spec, shared by the admission webhook, the
//! controller, the speakers and `ferrolb-operator validate`.
//!
//! Pure: no client, no I/O. It returns every problem at once, each naming the JSON path of the
//! field, the offending value and a plain reason, so an admin fixes a config in one pass.

mod bgp;
#[cfg(any(test, feature = "cases"))]
pub mod cases;
mod l2;
mod names;
mod pools;
mod selectors;
mod warnings;
mod workloads;

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::v1alpha1::{LOG_LEVELS, LoadBalancerConfigSpec};

pub(crate) use bgp::MAX_TIMER_TEXT;
pub use names::{
    is_dns1123_label, is_dns1123_subdomain, is_interface_name, is_label_value, is_qualified_name,
};
pub use warnings::{Warning, warnings};

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the field, e.g. `spec.addressPools[1].addresses[0]`.
    pub path: String,
    /// The offending value, as JSON (strings are quoted, so an empty one shows as `""`).
    pub value: String,
    /// Why it is wrong, in plain words.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.value, self.reason)
    }
}

/// Every problem found in a configuration, in the order of the fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems while the checks walk the spec.
#[derive(Debug, Default)]
pub(crate) struct Report {
    problems: Vec<Problem>,
}

impl Report {
    pub(crate) fn add(
        &mut self,
        path: impl Into<String>,
        value: impl Serialize,
        reason: impl Into<String>,
    ) {
        self.problems.push(Problem {
            path: path.into(),
            value: serde_json::to_string(&value).unwrap_or_else(|_| "?".to_owned()),
            reason: reason.into(),
        });
    }

    /// Checks that every name in a list is a DNS-1123 label and appears once; returns the index
    /// of each valid name for reference checks.
    pub(crate) fn names<'a, T>(
        &mut self,
        list_path: &str,
        items: &'a [T],
        name: impl Fn(&'a T) -> &'a str,
    ) -> HashMap<&'a str, usize> {
        let mut index = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let n = name(item);
            let path = format!("{list_path}[{i}].name");
            if !is_dns1123_label(n) {
                self.add(&path, n, names::DNS1123_LABEL);
            } else if let Some(first) = index.get(n) {
                self.add(
                    &path,
                    n,
                    format!("duplicate name: also used by {list_path}[{first}]"),
                );
            } else {
                index.insert(n, i);
            }
        }
        index
    }

    /// Checks a list of references to names in `index`: each resolves and appears once.
    pub(crate) fn references(
        &mut self,
        path: &str,
        refs: &[String],
        index: &HashMap<&str, usize>,
        what: &str,
    ) {
        for (i, r) in refs.iter().enumerate() {
            let here = format!("{path}[{i}]");
            if !index.contains_key(r.as_str()) {
                self.add(&here, r, format!("no {what} with this name"));
            } else if refs[..i].contains(r) {
                self.add(&here, r, "listed twice");
            }
        }
    }
}

/// Validates a whole configuration. `Ok` means every operand will accept it as it is.
pub fn validate(spec: &LoadBalancerConfigSpec) -> Result<(), Problems> {
    let mut report = Report::default();

    if !is_dns1123_label(&spec.namespace) {
        report.add("spec.namespace", &spec.namespace, names::DNS1123_LABEL);
    }
    if !LOG_LEVELS.contains(&spec.log_level.as_str()) {
        report.add(
            "spec.logLevel",
            &spec.log_level,
            format!("must be one of {}", LOG_LEVELS.join(", ")),
        );
    }
    if !spec.load_balancer_class.is_empty() && !is_qualified_name(&spec.load_balancer_class) {
        report.add(
            "spec.loadBalancerClass",
            &spec.load_balancer_class,
            names::QUALIFIED_NAME,
        );
    }
    workloads::check_controller(&mut report, &spec.controller);
    workloads::check_speaker(&mut report, &spec.speaker);

    let pools = pools::check(&mut report, &spec.address_pools);
    l2::check(&mut report, &spec.l2_advertisements, &pools);
    bgp::check(&mut report, spec, &pools);

    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(report.problems))
    }
}

#[cfg(test)]
mod tests;
