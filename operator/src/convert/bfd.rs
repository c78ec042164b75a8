//! BFDProfile (`metallb.io/v1beta1`) → `spec.bfdProfiles[]`: every field has a home.
//!
//! | MetalLB | FerroLB |
//! |---|---|
//! | `metadata.name` | `name` (peers' `bfdProfile` follow a rename) |
//! | `spec.receiveInterval`, `spec.transmitInterval`, `spec.echoInterval` (ms) | the same |
//! | `spec.detectMultiplier`, `spec.minimumTtl` | the same |
//! | `spec.passiveMode` | the same |
//! | `spec.echoMode: true` | dropped, with a warning: FerroLB runs asynchronous BFD only, which detects a failure within the same timers |
//!
//! An absent field takes FRR's default, which is FerroLB's too.

use ferrolb_api::v1alpha1::BfdProfile;
use serde::Deserialize;

use super::Converter;
use super::input::Object;

/// FRR's (and FerroLB's) defaults: intervals in milliseconds.
const INTERVAL: u32 = 300;
const ECHO_INTERVAL: u32 = 50;
const DETECT_MULTIPLIER: u32 = 3;
const MINIMUM_TTL: u32 = 254;

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Spec {
    receive_interval: Option<u32>,
    transmit_interval: Option<u32>,
    detect_multiplier: Option<u32>,
    echo_interval: Option<u32>,
    echo_mode: Option<bool>,
    passive_mode: Option<bool>,
    minimum_ttl: Option<u32>,
}

pub(super) fn convert(c: &mut Converter, object: &Object) {
    let source = &object.source;
    let Some(spec) = c.read_known::<Spec>(object) else {
        return;
    };
    let name = c.bfd_names.assign(&source.name);
    c.renamed(source, &name);
    c.bfd_profiles.insert(source.name.clone(), name.clone());
    let path = format!("spec.bfdProfiles[{}]", c.spec.bfd_profiles.len());
    c.came_from(path, source);
    if spec.echo_mode == Some(true) {
        c.cosmetic(
            source,
            "spec.echoMode",
            Some("true".to_owned()),
            "dropped: FerroLB runs BFD in asynchronous mode only, which detects a failure within receiveInterval x detectMultiplier all the same",
        );
    }
    c.spec.bfd_profiles.push(BfdProfile {
        name,
        receive_interval: spec.receive_interval.unwrap_or(INTERVAL),
        transmit_interval: spec.transmit_interval.unwrap_or(INTERVAL),
        detect_multiplier: spec.detect_multiplier.unwrap_or(DETECT_MULTIPLIER),
        echo_interval: spec.echo_interval.unwrap_or(ECHO_INTERVAL),
        echo_mode: false,
        passive_mode: spec.passive_mode.unwrap_or(false),
        minimum_ttl: spec.minimum_ttl.unwrap_or(MINIMUM_TTL),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_ferrolbs() {
        let ours: BfdProfile = serde_json::from_value(serde_json::json!({"name": "p"})).unwrap();
        assert_eq!(
            (
                ours.receive_interval,
                ours.transmit_interval,
                ours.echo_interval,
                ours.detect_multiplier,
                ours.minimum_ttl
            ),
            (
                INTERVAL,
                INTERVAL,
                ECHO_INTERVAL,
                DETECT_MULTIPLIER,
                MINIMUM_TTL
            )
        );
    }
}
