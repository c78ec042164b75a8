//! L2Advertisement (`metallb.io/v1beta1`) → `spec.l2Advertisements[]`.
//!
//! | MetalLB | FerroLB |
//! |---|---|
//! | `metadata.name` | `name` |
//! | `spec.ipAddressPools`, `spec.ipAddressPoolSelectors` | `addressPools` (selectors resolved to names; neither: every pool) |
//! | `spec.nodeSelectors` | `nodeSelectors` |
//! | `spec.interfaces` | `interfaces` |
//! | `spec.serviceSelectors` | `serviceSelectors` |
//! | `spec.preferredNodeSelectors` | `preferredNodeSelectors` (weights summed, preferred nodes reclaim, as in MetalLB) |

use ferrolb_api::v1alpha1::{L2Advertisement, PreferredNodeSelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use super::Converter;
use super::input::Object;

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    ip_address_pools: Vec<String>,
    #[serde(default)]
    ip_address_pool_selectors: Vec<LabelSelector>,
    #[serde(default)]
    node_selectors: Vec<LabelSelector>,
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default)]
    service_selectors: Vec<LabelSelector>,
    /// `[{weight, preference}]`: FerroLB's fields have MetalLB's names and meaning.
    #[serde(default)]
    preferred_node_selectors: Vec<PreferredNodeSelector>,
}

pub(super) fn convert(c: &mut Converter, object: &Object) {
    let source = &object.source;
    let Some(spec) = c.read_known::<Spec>(object) else {
        return;
    };
    let Some(address_pools) = c.select_pools(
        source,
        &spec.ip_address_pools,
        &spec.ip_address_pool_selectors,
    ) else {
        return;
    };
    let name = c.l2_names.assign(&source.name);
    c.renamed(source, &name);
    let path = format!("spec.l2Advertisements[{}]", c.spec.l2_advertisements.len());
    c.came_from(path, source);
    c.spec.l2_advertisements.push(L2Advertisement {
        name,
        address_pools,
        node_selectors: spec.node_selectors,
        service_selectors: spec.service_selectors,
        preferred_node_selectors: spec.preferred_node_selectors,
        interfaces: spec.interfaces,
    });
}
