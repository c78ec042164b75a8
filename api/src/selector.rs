//! Label selectors evaluated without a cluster: whether one matches a set of labels, and whether
//! two selections could ever share an object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// An object's labels, as a selector reads them: a map, or a slimmer form a long-lived cache
/// keeps.
pub trait Labels {
    /// The value of the label `key`, if the object has it.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

/// Whether `labels` satisfy `selector`, as the API server evaluates it. An empty selector matches
/// everything; an unknown operator matches nothing.
pub fn matches(selector: &LabelSelector, labels: &(impl Labels + ?Sized)) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.label(k) == Some(v.as_str()));
    labels_match
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.label(&e.key);
            let listed = || value.is_some_and(|v| e.values.iter().flatten().any(|x| x == v));
            match e.operator.as_str() {
                "In" => listed(),
                "NotIn" => !listed(),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether `labels` satisfy any selector of a list; an empty list matches everything.
pub fn list_matches(selectors: &[LabelSelector], labels: &(impl Labels + ?Sized)) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| matches(s, labels))
}

/// One requirement with its values as a set: `zone In [a, b]` and `zone In [b, a]` are one.
type Requirement<'a> = (&'a str, &'a str, BTreeSet<&'a str>);

fn requirement(r: &LabelSelectorRequirement) -> Requirement<'_> {
    let values = r.values.iter().flatten().map(String::as_str).collect();
    (r.key.as_str(), r.operator.as_str(), values)
}

/// Whether two requirements are the same, whatever the order of their values.
pub fn same_requirement(a: &LabelSelectorRequirement, b: &LabelSelectorRequirement) -> bool {
    requirement(a) == requirement(b)
}

/// Whether two selectors state the same requirements, so they select the same objects whatever
/// objects exist: the order of matchExpressions and of their values does not count, and a
/// matchLabels entry `key: value` is the requirement `key In [value]`.
pub fn same_requirements(a: &LabelSelector, b: &LabelSelector) -> bool {
    fn all(s: &LabelSelector) -> BTreeSet<Requirement<'_>> {
        let labels = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), "In", BTreeSet::from([v.as_str()])));
        let expressions = s.match_expressions.iter().flatten().map(requirement);
        labels.chain(expressions).collect()
    }
    all(a) == all(b)
}

/// What a conjunction of requirements says about one label key.
#[derive(Clone, Debug, Default)]
struct KeyConstraint {
    /// Some(true): the key must be present; Some(false): it must be absent.
    present: Option<bool>,
    /// When set, the value must be one of these.
    allowed: Option<BTreeSet<String>>,
    /// The value must not be one of these.
    forbidden: BTreeSet<String>,
    /// Two requirements exclude each other (present and absent).
    contradiction: bool,
}

impl KeyConstraint {
    fn require(&mut self, present: bool) {
        self.contradiction |= self.present == Some(!present);
        self.present = Some(present);
    }

    fn allow_only(&mut self, values: impl IntoIterator<Item = String>) {
        self.require(true);
        let values: BTreeSet<String> = values.into_iter().collect();
        self.allowed = Some(match self.allowed.take() {
            Some(old) => old.intersection(&values).cloned().collect(),
            None => values,
        });
    }

    fn satisfiable(&self) -> bool {
        !self.contradiction
            && self
                .allowed
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|v| !self.forbidden.contains(v)))
    }
}

/// Adds the requirements of `selector` to `constraints`. Unknown operators match nothing.
fn constrain(constraints: &mut BTreeMap<String, KeyConstraint>, selector: &LabelSelector) -> bool {
    for (key, value) in selector.match_labels.iter().flatten() {
        constraints
            .entry(key.clone())
            .or_default()
            .allow_only([value.clone()]);
    }
    for expr in selector.match_expressions.iter().flatten() {
        let c = constraints.entry(expr.key.clone()).or_default();
        let values = expr.values.iter().flatten().cloned();
        match expr.operator.as_str() {
            "In" => c.allow_only(values),
            "NotIn" => c.forbidden.extend(values),
            "Exists" => c.require(true),
            "DoesNotExist" => c.require(false),
            _ => return false,
        }
    }
    true
}

/// Whether some set of labels could satisfy both selectors. Conservative: false only when the
/// selectors provably exclude each other, whatever objects exist.
pub fn selectors_overlap(a: &LabelSelector, b: &LabelSelector) -> bool {
    let mut constraints = BTreeMap::new();
    constrain(&mut constraints, a)
        && constrain(&mut constraints, b)
        && constraints.values().all(KeyConstraint::satisfiable)
}

/// Whether two selector lists (an object matches a list when it matches any member; an empty list
/// matches everything) could select a common object.
pub fn selector_lists_overlap(a: &[LabelSelector], b: &[LabelSelector]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter().any(|x| b.iter().any(|y| selectors_overlap(x, y)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::cases::{expression as expr, selector as labels};

    #[test]
    fn different_values_of_one_key_are_disjoint() {
        assert!(!selectors_overlap(
            &labels(&[("zone", "a")]),
            &labels(&[("zone", "b")])
        ));
        assert!(selectors_overlap(
            &labels(&[("zone", "a")]),
            &labels(&[("rack", "b")])
        ));
        assert!(selectors_overlap(
            &labels(&[("zone", "a")]),
            &labels(&[("zone", "a")])
        ));
    }

    #[test]
    fn expressions_are_intersected() {
        let in_ab = expr("zone", "In", &["a", "b"]);
        assert!(selectors_overlap(&in_ab, &labels(&[("zone", "b")])));
        assert!(!selectors_overlap(&in_ab, &expr("zone", "In", &["c"])));
        assert!(!selectors_overlap(
            &in_ab,
            &expr("zone", "NotIn", &["a", "b"])
        ));
        assert!(selectors_overlap(&in_ab, &expr("zone", "NotIn", &["a"])));
        assert!(!selectors_overlap(
            &in_ab,
            &expr("zone", "DoesNotExist", &[])
        ));
        assert!(!selectors_overlap(
            &expr("zone", "Exists", &[]),
            &expr("zone", "DoesNotExist", &[])
        ));
        assert!(selectors_overlap(
            &expr("zone", "NotIn", &["a"]),
            &expr("zone", "DoesNotExist", &[])
        ));
    }

    #[test]
    fn matching_follows_the_api_server() {
        let node: BTreeMap<String, String> = [
            ("zone".to_owned(), "a".to_owned()),
            ("gpu".to_owned(), String::new()),
        ]
        .into();
        assert!(matches(&LabelSelector::default(), &node));
        assert!(matches(&labels(&[("zone", "a")]), &node));
        assert!(!matches(&labels(&[("zone", "b")]), &node));
        assert!(matches(&expr("zone", "In", &["a", "b"]), &node));
        assert!(matches(&expr("zone", "NotIn", &["b"]), &node));
        assert!(matches(&expr("rack", "NotIn", &["b"]), &node));
        assert!(matches(&expr("gpu", "Exists", &[]), &node));
        assert!(!matches(&expr("gpu", "DoesNotExist", &[]), &node));
        assert!(!matches(&expr("gpu", "Has", &[]), &node));
        assert!(list_matches(&[], &node));
        assert!(list_matches(
            &[labels(&[("zone", "b")]), labels(&[("zone", "a")])],
            &node
        ));
    }

    #[test]
    fn requirements_compare_as_sets() {
        let ab = expr("zone", "In", &["a", "b"]);
        let ba = expr("zone", "In", &["b", "a"]);
        assert!(same_requirements(&ab, &ba));
        let first = |s: &LabelSelector| s.match_expressions.as_ref().unwrap()[0].clone();
        assert!(same_requirement(&first(&ab), &first(&ba)));
        assert!(!same_requirements(&ab, &expr("zone", "In", &["a"])));
        assert!(!same_requirements(&ab, &expr("zone", "NotIn", &["a", "b"])));
        assert!(same_requirements(
            &labels(&[("zone", "a")]),
            &expr("zone", "In", &["a"])
        ));
        let two = |x: LabelSelector, y: LabelSelector| LabelSelector {
            match_labels: None,
            match_expressions: Some(
                x.match_expressions
                    .into_iter()
                    .flatten()
                    .chain(y.match_expressions.into_iter().flatten())
                    .collect(),
            ),
        };
        assert!(same_requirements(
            &two(expr("a", "Exists", &[]), expr("b", "DoesNotExist", &[])),
            &two(expr("b", "DoesNotExist", &[]), expr("a", "Exists", &[]))
        ));
        assert!(same_requirements(
            &LabelSelector::default(),
            &LabelSelector {
                match_labels: Some(BTreeMap::new()),
                match_expressions: Some(Vec::new()),
            }
        ));
    }

    #[test]
    fn empty_lists_and_empty_selectors_match_everything() {
        let any = LabelSelector::default();
        assert!(selector_lists_overlap(&[], &[labels(&[("x", "y")])]));
        assert!(selector_lists_overlap(&[any], &[labels(&[("x", "y")])]));
        assert!(!selector_lists_overlap(
            &[labels(&[("zone", "a")]), labels(&[("zone", "b")])],
            &[labels(&[("zone", "c")])]
        ));
    }
}
