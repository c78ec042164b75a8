//! Which `LoadBalancerConfig` is in force, decided alike by the controller, the speakers and the
//! operator.
//!
//! Exactly one config should exist (admission rejects a second), but one may slip in while the
//! webhook is down, and an invalid one may be stored the same way. The rule:
//!
//! - the **candidate** is the oldest config by `creationTimestamp`, the name breaking ties (a
//!   config without a timestamp sorts first, as the API server never stores one);
//! - a valid candidate ([`validate`]) is **in force**;
//! - an invalid candidate is **rejected** and the last valid config stays in force; the rejection
//!   is reported once, not at every event (a status write, a relist), and again only when the
//!   candidate changes;
//! - when no config exists any more, [`Change::Gone`] is returned once. What that means is the
//!   caller's choice: the speakers keep announcing with the last valid config (an accidental
//!   delete does not cut traffic), the controller keeps the addresses already assigned but
//!   allocates nothing new. [`ConfigInForce::in_force`] still returns the last valid config;
//!   the next valid config is reported as [`Change::InForce`] even if it is identical.
//!
//! Pure: the caller feeds it every config it watches after each change.

use crate::v1alpha1::{LoadBalancerConfig, LoadBalancerConfigSpec};
use crate::validate::{Problems, validate};

/// What [`ConfigInForce::update`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A different config (by name or spec) is in force now; read it with
    /// [`ConfigInForce::in_force`].
    InForce,
    /// The candidate is invalid (reported once); the last valid config, if any, stays in force.
    Rejected {
        /// The rejected config's name.
        name: String,
        /// Every problem found.
        problems: Problems,
    },
    /// Nothing to do: the same config is in force, or the same rejection stands (a status
    /// change, a relist).
    Unchanged,
    /// No config exists any more (reported once). The last valid one is still available.
    Gone,
}

/// The config in force and the last rejection, kept between updates.
#[derive(Clone, Debug, Default)]
pub struct ConfigInForce {
    /// The last valid candidate: name and spec.
    in_force: Option<(String, LoadBalancerConfigSpec)>,
    /// The candidate last rejected, so it is reported once.
    rejected: Option<(String, LoadBalancerConfigSpec)>,
    /// Set by [`Change::Gone`], until a config exists again.
    gone: bool,
}

impl ConfigInForce {
    /// Decides again from every config that exists now.
    pub fn update<'a>(
        &mut self,
        configs: impl IntoIterator<Item = &'a LoadBalancerConfig>,
    ) -> Change {
        let Some(oldest) = configs.into_iter().min_by(|a, b| {
            let created =
                |c: &LoadBalancerConfig| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        }) else {
            if self.gone || (self.in_force.is_none() && self.rejected.is_none()) {
                // Nothing ever existed, or the deletion was reported already.
                return Change::Unchanged;
            }
            self.gone = true;
            self.rejected = None;
            return Change::Gone;
        };
        let name = oldest.metadata.name.clone().unwrap_or_default();
        let came_back = std::mem::take(&mut self.gone);
        let is = |held: &Option<(String, LoadBalancerConfigSpec)>| {
            held.as_ref()
                .is_some_and(|(n, spec)| *n == name && *spec == oldest.spec)
        };
        if is(&self.in_force) {
            self.rejected = None;
            return if came_back {
                Change::InForce
            } else {
                Change::Unchanged
            };
        }
        if is(&self.rejected) {
            return Change::Unchanged;
        }
        match validate(&oldest.spec) {
            Ok(()) => {
                self.in_force = Some((name, oldest.spec.clone()));
                self.rejected = None;
                Change::InForce
            }
            Err(problems) => {
                self.rejected = Some((name.clone(), oldest.spec.clone()));
                Change::Rejected { name, problems }
            }
        }
    }

    /// The last valid config: its name and spec (also after [`Change::Gone`]).
    pub fn in_force(&self) -> Option<(&str, &LoadBalancerConfigSpec)> {
        self.in_force.as_ref().map(|(n, s)| (n.as_str(), s))
    }

    /// Whether a config exists (no [`Change::Gone`] since the last one was seen).
    pub fn exists(&self) -> bool {
        !self.gone && (self.in_force.is_some() || self.rejected.is_some())
    }

    /// Whether the candidate is rejected, so an older valid config (or none) is in force: the
    /// `config_stale` metrics.
    pub fn is_stale(&self) -> bool {
        self.rejected.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;

    fn config(name: &str, created: Option<&str>, pool: &str) -> LoadBalancerConfig {
        let spec: LoadBalancerConfigSpec = serde_json::from_value(serde_json::json!({
            "addressPools": [{"name": "p", "addresses": [pool]}],
        }))
        .unwrap();
        let mut c = LoadBalancerConfig::new(name, spec);
        c.metadata.creation_timestamp = created.map(|t| Time(t.parse().unwrap()));
        c
    }

    const GOOD: &str = "203.0.113.0/24";
    const OTHER: &str = "198.51.100.0/24";
    const BAD: &str = "203.0.113.0/33";
    const T1: Option<&str> = Some("2026-01-01T00:00:00Z");
    const T2: Option<&str> = Some("2026-01-02T00:00:00Z");

    fn pool_in_force(c: &ConfigInForce) -> Option<(String, String)> {
        c.in_force()
            .map(|(n, s)| (n.to_owned(), s.address_pools[0].addresses[0].clone()))
    }

    /// One row: the configs that exist, what `update` says, and which config is in force after.
    struct Row {
        what: &'static str,
        configs: Vec<LoadBalancerConfig>,
        change: &'static str,
        in_force: Option<(&'static str, &'static str)>,
    }

    fn kind(c: &Change) -> &'static str {
        match c {
            Change::InForce => "InForce",
            Change::Rejected { .. } => "Rejected",
            Change::Unchanged => "Unchanged",
            Change::Gone => "Gone",
        }
    }

    /// The rows run in order against one `ConfigInForce`, as the watch events would arrive.
    #[test]
    fn the_oldest_valid_config_is_in_force_and_each_change_is_reported_once() {
        #[rustfmt::skip]
        let rows = [
            Row { what: "nothing yet", configs: vec![], change: "Unchanged", in_force: None },
            Row { what: "a valid config", configs: vec![config("a", T1, GOOD)], change: "InForce", in_force: Some(("a", GOOD)) },
            Row { what: "its status changed", configs: vec![config("a", T1, GOOD)], change: "Unchanged", in_force: Some(("a", GOOD)) },
            Row { what: "a newer second one is ignored", configs: vec![config("a", T1, GOOD), config("b", T2, OTHER)], change: "Unchanged", in_force: Some(("a", GOOD)) },
            Row { what: "the spec changes", configs: vec![config("a", T1, OTHER)], change: "InForce", in_force: Some(("a", OTHER)) },
            Row { what: "it becomes invalid", configs: vec![config("a", T1, BAD)], change: "Rejected", in_force: Some(("a", OTHER)) },
            Row { what: "the rejection is reported once", configs: vec![config("a", T1, BAD)], change: "Unchanged", in_force: Some(("a", OTHER)) },
            Row { what: "back to the one in force", configs: vec![config("a", T1, OTHER)], change: "Unchanged", in_force: Some(("a", OTHER)) },
            Row { what: "the same invalid spec again is reported again", configs: vec![config("a", T1, BAD)], change: "Rejected", in_force: Some(("a", OTHER)) },
            Row { what: "deleted: the last valid one stays", configs: vec![], change: "Gone", in_force: Some(("a", OTHER)) },
            Row { what: "gone is reported once", configs: vec![], change: "Unchanged", in_force: Some(("a", OTHER)) },
            Row { what: "recreated identical: in force again", configs: vec![config("a", T2, OTHER)], change: "InForce", in_force: Some(("a", OTHER)) },
            Row { what: "an older one appears", configs: vec![config("a", T2, OTHER), config("z", T1, GOOD)], change: "InForce", in_force: Some(("z", GOOD)) },
            Row { what: "the same timestamp: the name decides", configs: vec![config("b", T1, OTHER), config("z", T1, GOOD)], change: "InForce", in_force: Some(("b", OTHER)) },
        ];
        let mut c = ConfigInForce::default();
        for row in rows {
            let change = c.update(&row.configs);
            assert_eq!(kind(&change), row.change, "{}: {change:?}", row.what);
            assert_eq!(
                pool_in_force(&c),
                row.in_force.map(|(n, p)| (n.to_owned(), p.to_owned())),
                "{}",
                row.what
            );
        }
    }

    #[test]
    fn a_rejection_names_the_config_and_every_problem_and_marks_it_stale() {
        let mut c = ConfigInForce::default();
        let Change::Rejected { name, problems } = c.update(&[config("a", T1, BAD)]) else {
            panic!("not rejected")
        };
        assert_eq!(name, "a");
        assert!(
            problems
                .to_string()
                .contains("addressPools[0].addresses[0]"),
            "{problems}"
        );
        assert!(c.is_stale());
        assert!(c.exists());
        assert_eq!(c.in_force(), None, "nothing valid was ever seen");
        assert_eq!(c.update(&[config("a", T1, GOOD)]), Change::InForce);
        assert!(!c.is_stale());
        assert_eq!(c.update(&[]), Change::Gone);
        assert!(!c.exists());
    }

    #[test]
    fn a_rejected_config_deleted_and_recreated_is_reported_again() {
        let mut c = ConfigInForce::default();
        assert!(matches!(
            c.update(&[config("a", T1, BAD)]),
            Change::Rejected { .. }
        ));
        assert_eq!(c.update(&[]), Change::Gone);
        assert!(!c.is_stale());
        assert!(matches!(
            c.update(&[config("a", T1, BAD)]),
            Change::Rejected { .. }
        ));
    }

    fn arb_config() -> impl Strategy<Value = LoadBalancerConfig> {
        (
            prop::sample::select(vec!["a", "b", "c"]),
            prop::sample::select(vec![T1, T2, None]),
            prop::sample::select(vec![GOOD, OTHER, BAD]),
        )
            .prop_map(|(n, t, p)| config(n, t, p))
    }

    fn arb_world() -> impl Strategy<Value = Vec<LoadBalancerConfig>> {
        prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c"]),
            arb_config(),
            0..3,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(n, mut c)| {
                    c.metadata.name = Some(n.to_owned());
                    c
                })
                .collect()
        })
    }

    proptest! {
        /// Whatever the history, the config in force is valid, a second update of the same world
        /// changes nothing, and the one in force is the oldest when that one is valid.
        #[test]
        fn in_force_is_valid_and_updates_are_idempotent(worlds in prop::collection::vec(arb_world(), 1..12)) {
            let mut c = ConfigInForce::default();
            for world in &worlds {
                c.update(world);
                prop_assert_eq!(c.update(world), Change::Unchanged);
                if let Some((_, spec)) = c.in_force() {
                    prop_assert!(validate(spec).is_ok());
                }
                let oldest = world.iter().min_by_key(|c| (c.metadata.creation_timestamp.clone().map(|t| t.0), c.metadata.name.clone()));
                if let Some(oldest) = oldest.filter(|o| validate(&o.spec).is_ok()) {
                    prop_assert_eq!(c.in_force().map(|(n, s)| (n.to_owned(), s.clone())),
                        Some((oldest.metadata.name.clone().unwrap_or_default(), oldest.spec.clone())));
                    prop_assert!(!c.is_stale());
                }
                prop_assert_eq!(c.exists(), !world.is_empty());
            }
        }
    }
}
