//! Layer 2 advertisements.

use crate::v1alpha1::L2Advertisement;

use super::Report;
use super::names::is_interface_name;
use super::pools::PoolIndex;
use super::selectors::{check as check_selector, check_list};
use crate::selector::same_requirements;

pub(super) fn check(report: &mut Report, ads: &[L2Advertisement], pools: &PoolIndex<'_>) {
    report.names("spec.l2Advertisements", ads, |a| a.name.as_str());
    for (i, ad) in ads.iter().enumerate() {
        let path = format!("spec.l2Advertisements[{i}]");
        report.references(
            &format!("{path}.addressPools"),
            &ad.address_pools,
            &pools.by_name,
            "address pool",
        );
        check_list(report, &format!("{path}.nodeSelectors"), &ad.node_selectors);
        check_list(
            report,
            &format!("{path}.serviceSelectors"),
            &ad.service_selectors,
        );
        let preferred = &ad.preferred_node_selectors;
        for (k, p) in preferred.iter().enumerate() {
            let here = format!("{path}.preferredNodeSelectors[{k}]");
            if !(1..=100).contains(&p.weight) {
                report.add(
                    format!("{here}.weight"),
                    p.weight,
                    "must be between 1 and 100",
                );
            }
            check_selector(report, &format!("{here}.preference"), &p.preference);
            if let Some(first) = preferred[..k]
                .iter()
                .position(|q| same_requirements(&q.preference, &p.preference))
            {
                report.add(
                    format!("{here}.preference"),
                    &p.preference,
                    format!(
                        "duplicates {path}.preferredNodeSelectors[{first}].preference; give one entry the sum of their weights"
                    ),
                );
            }
        }
        for (k, name) in ad.interfaces.iter().enumerate() {
            let here = format!("{path}.interfaces[{k}]");
            if !is_interface_name(name) {
                report.add(
                    &here,
                    name,
                    "must be an interface name: 1 to 15 characters, no '/', ':' or whitespace",
                );
            } else if ad.interfaces[..k].contains(name) {
                report.add(&here, name, "listed twice");
            }
        }
    }
}
