//! Community (`metallb.io/v1beta1`): named BGP communities. FerroLB has no named communities
//! yet, so each alias is resolved: advertisements that name it get its value instead.
//!
//! | MetalLB | FerroLB |
//! |---|---|
//! | `spec.communities[].name` | none yet: the name is lost (cosmetic) |
//! | `spec.communities[].value` | written into `bgpAdvertisements[].communities` where the alias was used |

use ferrolb_api::community::Community as Value;
use serde::Deserialize;

use super::Converter;
use super::findings::json;
use super::input::Object;

#[derive(Deserialize, Debug)]
struct Spec {
    #[serde(default)]
    communities: Vec<Alias>,
}

#[derive(Deserialize, Debug)]
struct Alias {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

pub(super) fn convert(c: &mut Converter, object: &Object) {
    let source = &object.source;
    let Some(spec) = c.read_known::<Spec>(object) else {
        return;
    };
    let mut names = Vec::new();
    for (i, alias) in spec.communities.iter().enumerate() {
        let field = format!("spec.communities[{i}]");
        if let Err(e) = alias.value.parse::<Value>() {
            c.cosmetic(
                source,
                &format!("{field}.value"),
                json(&alias.value),
                format!("not carried over: {e}"),
            );
        } else if c.communities.contains_key(&alias.name) {
            c.cosmetic(
                source,
                &format!("{field}.name"),
                json(&alias.name),
                "defined before (MetalLB refuses a second definition): the first is used",
            );
        } else {
            c.communities
                .insert(alias.name.clone(), alias.value.clone());
            names.push(alias.name.clone());
        }
    }
    if !names.is_empty() {
        c.cosmetic(
            source,
            "spec.communities",
            None,
            format!(
                "FerroLB has no named communities yet: the aliases ({}) are not carried over as names; each BGPAdvertisement that uses one gets its value instead",
                names.join(", ")
            ),
        );
    }
}
