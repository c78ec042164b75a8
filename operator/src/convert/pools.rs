//! IPAddressPool (`metallb.io/v1beta1`) → `spec.addressPools[]`.
//!
//! | MetalLB | FerroLB |
//! |---|---|
//! | `metadata.name` | `name` (a DNS-1123 label; a renamed pool is an essential loss, since Services name pools in annotations) |
//! | `metadata.labels` | none: advertisements' `ipAddressPoolSelectors` resolve to names |
//! | `spec.addresses[]` | `addresses[]` (a CIDR with host bits as its network; entries FerroLB refuses are dropped, essential) |
//! | `spec.autoAssign` | `autoAssign` |
//! | `spec.avoidBuggyIPs` | `avoidBuggyIPs` |
//! | `spec.serviceAllocation` | `allocateTo` (`priority` 0 means unset in MetalLB, absent in FerroLB) |

use std::collections::BTreeSet;

use ferrolb_api::address::{AddressRange, AddressRangeError};
use ferrolb_api::v1alpha1::{AddressPool, AllocateTo};
use ferrolb_api::{LoadBalancerConfigSpec, validate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use super::findings::json;
use super::input::Object;
use super::{Converter, Pool};

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    addresses: Vec<String>,
    auto_assign: Option<bool>,
    #[serde(rename = "avoidBuggyIPs")]
    avoid_buggy_ips: Option<bool>,
    service_allocation: Option<ServiceAllocation>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct ServiceAllocation {
    priority: Option<i64>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    namespace_selectors: Vec<LabelSelector>,
    #[serde(default)]
    service_selectors: Vec<LabelSelector>,
}

pub(super) fn convert(c: &mut Converter, object: &Object) {
    let source = &object.source;
    let Some(spec) = c.read_known::<Spec>(object) else {
        c.dropped_pools.insert(source.name.clone());
        return;
    };
    let mut addresses = Vec::new();
    let mut families = BTreeSet::new();
    for (i, entry) in spec.addresses.iter().enumerate() {
        let field = format!("spec.addresses[{i}]");
        match address(entry) {
            Ok((text, rewritten)) => {
                if let Some(how) = rewritten {
                    c.note(source, &field, json(entry), how);
                }
                if let Ok(range) = AddressRange::parse(&text) {
                    families.insert(range.family());
                }
                addresses.push(text);
            }
            Err(reason) => c.essential(
                source,
                &field,
                json(entry),
                format!(
                    "dropped, FerroLB refuses it ({reason}): Services holding or asking for these addresses lose them"
                ),
            ),
        }
    }
    if addresses.is_empty() {
        c.essential(
            source,
            "spec.addresses",
            json(&spec.addresses),
            "no address FerroLB accepts: the pool is not carried over, and Services holding its addresses lose them",
        );
        c.dropped_pools.insert(source.name.clone());
        return;
    }
    let name = c.pool_names.assign(&source.name);
    if name != source.name {
        c.essential(
            source,
            "metadata.name",
            json(&source.name),
            format!(
                "written as {name:?} (FerroLB pool names are DNS-1123 labels, at most 63 characters, no dots): Services that name the pool in the annotation metallb.io/address-pool or metallb.universe.tf/address-pool must name {name:?} instead, or they lose their addresses"
            ),
        );
    }
    let allocate_to = spec.service_allocation.as_ref().map(|a| AllocateTo {
        // Ordered later, when every pool's priority is known.
        priority: None,
        namespaces: a.namespaces.clone(),
        namespace_selectors: a.namespace_selectors.clone(),
        service_selectors: a.service_selectors.clone(),
    });
    let path = format!("spec.addressPools[{}]", c.spec.address_pools.len());
    c.came_from(path, source);
    c.spec.address_pools.push(AddressPool {
        name: name.clone(),
        addresses,
        auto_assign: spec.auto_assign.unwrap_or(true),
        avoid_buggy_ips: spec.avoid_buggy_ips.unwrap_or(false),
        allocate_to,
    });
    c.pools.push(Pool {
        metallb: source.name.clone(),
        name,
        labels: object.labels.clone(),
        families,
        priority: spec.service_allocation.and_then(|a| a.priority),
        source: source.clone(),
    });
}

/// An address entry as FerroLB writes it, with how it was rewritten (if it was); or why FerroLB
/// refuses it.
fn address(entry: &str) -> Result<(String, Option<String>), String> {
    let (text, rewritten) = match AddressRange::parse(entry) {
        Ok(_) => (entry.trim().to_owned(), None),
        // MetalLB reads a CIDR as Go's ParseCIDR does: the host bits are ignored.
        Err(AddressRangeError::HostBits(net)) => (
            net.to_string(),
            Some(format!(
                "written as its network {net}, the addresses MetalLB used"
            )),
        ),
        Err(AddressRangeError::BareAddress(ip, bits)) => (
            format!("{ip}/{bits}"),
            Some(format!("written as the CIDR {ip}/{bits}")),
        ),
        Err(e) => return Err(e.to_string()),
    };
    // Whatever else the validator refuses in an entry (addresses no Service can have).
    let alone = LoadBalancerConfigSpec {
        address_pools: vec![AddressPool {
            name: "pool".to_owned(),
            addresses: vec![text.clone()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocate_to: None,
        }],
        ..LoadBalancerConfigSpec::default()
    };
    match validate(&alone) {
        Ok(()) => Ok((text, rewritten)),
        Err(problems) => Err(problems
            .0
            .into_iter()
            .map(|p| p.reason)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// Sets `allocateTo.priority`. MetalLB tries lower priorities first and treats 0 as unset
/// (after every set one), as FerroLB treats an absent one; values FerroLB cannot hold (negative
/// or above 4294967295) make every priority its rank, which keeps the order.
pub(super) fn order_priorities(c: &mut Converter) {
    let set: BTreeSet<i64> = c
        .pools
        .iter()
        .filter_map(|p| p.priority)
        .filter(|p| *p != 0)
        .collect();
    let fits = set.iter().all(|p| u32::try_from(*p).is_ok());
    let mut renumbered = Vec::new();
    for (pool, spec) in c.pools.iter().zip(c.spec.address_pools.iter_mut()) {
        let (Some(to), Some(priority)) = (spec.allocate_to.as_mut(), pool.priority) else {
            continue;
        };
        if priority == 0 {
            continue;
        }
        to.priority = if fits {
            u32::try_from(priority).ok()
        } else {
            let rank = set.iter().position(|p| *p == priority).unwrap_or_default() + 1;
            renumbered.push((pool.source.clone(), priority, rank));
            u32::try_from(rank).ok()
        };
    }
    for (source, priority, rank) in renumbered {
        c.note(
            &source,
            "spec.serviceAllocation.priority",
            json(&priority),
            format!(
                "written as {rank}: FerroLB priorities are 0-4294967295, so every pool's priority became its rank, in the same order"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_written_as_ferrolb_reads_them() {
        assert_eq!(
            address(" 192.168.1.240 - 192.168.1.250 "),
            Ok(("192.168.1.240 - 192.168.1.250".to_owned(), None))
        );
        assert_eq!(
            address("192.168.1.5/24"),
            Ok((
                "192.168.1.0/24".to_owned(),
                Some(
                    "written as its network 192.168.1.0/24, the addresses MetalLB used".to_owned()
                )
            ))
        );
        assert_eq!(
            address("2001:db8::1"),
            Ok((
                "2001:db8::1/128".to_owned(),
                Some("written as the CIDR 2001:db8::1/128".to_owned())
            ))
        );
        assert!(address("127.0.0.0/8").unwrap_err().contains("loopback"));
        assert!(address("pool").is_err());
    }
}
