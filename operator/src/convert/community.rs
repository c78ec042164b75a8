//! Community (`metallb.io/v1beta1`): named BGP communities → `spec.communities[]`. Aliases stay
//! names: advertisements that use one name it, as in MetalLB.
//!
//! | MetalLB | FerroLB |
//! |---|---|
//! | `spec.communities[].name` | `communities[].name` (rewritten as a DNS-1123 label when it is not one; advertisements follow) |
//! | `spec.communities[].value` | `communities[].value` |
//!
//! An alias of a well-known community's value (MetalLB's documented `NO_ADVERTISE` =
//! `65535:65282`) becomes that well-known name (`no-advertise`), which FerroLB knows without a
//! definition, so a `spec.communities` entry never shadows a well-known name.

use ferrolb_api::community::{Community as Value, WELL_KNOWN};
use ferrolb_api::v1alpha1::NamedCommunity;
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
    for (i, alias) in spec.communities.iter().enumerate() {
        let field = format!("spec.communities[{i}]");
        let value = match alias.value.parse::<Value>() {
            Ok(value) => value,
            Err(e) => {
                c.cosmetic(
                    source,
                    &format!("{field}.value"),
                    json(&alias.value),
                    format!("not carried over: {e}"),
                );
                continue;
            }
        };
        if c.communities.contains_key(&alias.name) {
            c.cosmetic(
                source,
                &format!("{field}.name"),
                json(&alias.name),
                "defined before (MetalLB refuses a second definition): the first is used",
            );
            continue;
        }
        if let Some(well_known) = well_known_name(value) {
            c.note(
                source,
                &format!("{field}.name"),
                json(&alias.name),
                format!(
                    "{} is the well-known community {well_known}: advertisements that use this alias name {well_known}, which needs no definition",
                    alias.value
                ),
            );
            c.communities
                .insert(alias.name.clone(), well_known.to_owned());
            continue;
        }
        let name = c.community_names.assign(&alias.name);
        if name != alias.name {
            c.note(
                source,
                &format!("{field}.name"),
                json(&alias.name),
                format!(
                    "written as {name:?}: FerroLB names are DNS-1123 labels, unique, and not the name of a well-known community; advertisements that use it follow"
                ),
            );
        }
        let path = format!("spec.communities[{}]", c.spec.communities.len());
        c.came_from(path, source);
        c.spec.communities.push(NamedCommunity {
            name: name.clone(),
            value: alias.value.clone(),
        });
        c.communities.insert(alias.name.clone(), name);
    }
}

/// The name of the well-known community `value` is, if it is one.
fn well_known_name(value: Value) -> Option<&'static str> {
    WELL_KNOWN
        .iter()
        .map(|(name, _)| *name)
        .find(|name| name.parse() == Ok(value))
}
