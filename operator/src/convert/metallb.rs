//! The MetalLB operator's `MetalLB` (`metallb.io/v1beta1`) → the top of the spec: log level,
//! class, and where the controller and speakers run.
//!
//! | MetalLB | FerroLB |
//! |---|---|
//! | `spec.logLevel` | `logLevel` (`all` → debug, `none` → error) |
//! | `spec.loadBalancerClass` | `loadBalancerClass` |
//! | `spec.nodeSelector`, `spec.speakerTolerations` | `speaker.nodeSelector`, `speaker.tolerations` |
//! | `spec.controllerNodeSelector`, `spec.controllerTolerations` | `controller.nodeSelector`, `controller.tolerations` |
//! | `spec.{controller,speaker}Config.{priorityClassName,affinity,resources}` | `{controller,speaker}.{priorityClassName,affinity,resources}` |
//! | `spec.{controller,speaker}Config.{runtimeClassName,annotations}` | none (cosmetic) |
//! | `spec.bgpBackend`, `spec.frrk8sConfig` | none: FerroLB's speaker is its own BGP backend and accepts no routes |
//! | `spec.image` | none (deprecated, no effect in MetalLB either) |

use std::collections::BTreeMap;

use ferrolb_api::v1alpha1::Placement;
use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use serde::Deserialize;

use super::findings::{Source, json};
use super::input::Object;
use super::{Converter, DEFAULT_METALLB_NAMESPACE};

/// The name the MetalLB operator requires of its one resource.
const NAME: &str = "metallb";

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Spec {
    image: Option<String>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    speaker_tolerations: Vec<Toleration>,
    log_level: Option<String>,
    load_balancer_class: Option<String>,
    #[serde(default)]
    controller_node_selector: BTreeMap<String, String>,
    #[serde(default)]
    controller_tolerations: Vec<Toleration>,
    controller_config: Option<PodConfig>,
    speaker_config: Option<PodConfig>,
    bgp_backend: Option<String>,
    #[serde(rename = "frrk8sConfig")]
    frrk8s_config: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PodConfig {
    priority_class_name: Option<String>,
    runtime_class_name: Option<String>,
    affinity: Option<Affinity>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    resources: Option<ResourceRequirements>,
}

/// Converts the one `MetalLB` in force: the one named `metallb` (the operator ignores others),
/// else the first.
pub(super) fn convert_all<'a>(c: &mut Converter, objects: impl Iterator<Item = &'a Object>) {
    let objects: Vec<&Object> = objects.collect();
    let chosen = objects
        .iter()
        .position(|o| o.source.name == NAME)
        .unwrap_or_default();
    for (i, object) in objects.iter().enumerate() {
        if i == chosen {
            convert(c, object);
        } else {
            c.note(
                &object.source,
                "",
                None,
                format!(
                    "ignored: only one MetalLB resource is converted ({})",
                    objects[chosen].source
                ),
            );
        }
    }
}

fn convert(c: &mut Converter, object: &Object) {
    let source = &object.source;
    let Some(spec) = c.read_known::<Spec>(object) else {
        return;
    };
    if source.name != NAME {
        c.note(
            source,
            "metadata.name",
            json(&source.name),
            format!(
                "the MetalLB operator acts only on a MetalLB named {NAME:?} (in {DEFAULT_METALLB_NAMESPACE} or its own namespace), so this one may never have been in force; converted anyway"
            ),
        );
    }
    if let Some(level) = spec.log_level.as_deref().filter(|l| !l.is_empty()) {
        c.spec.log_level = log_level(c, source, level);
    }
    if let Some(class) = spec.load_balancer_class {
        c.spec.load_balancer_class = class;
    }
    let speaker = &mut c.spec.speaker.placement;
    speaker.node_selector = spec.node_selector;
    speaker.tolerations = spec.speaker_tolerations;
    let controller = &mut c.spec.controller.placement;
    controller.node_selector = spec.controller_node_selector;
    controller.tolerations = spec.controller_tolerations;
    if let Some(config) = spec.speaker_config {
        let mut placement = std::mem::take(&mut c.spec.speaker.placement);
        pod_config(c, source, "spec.speakerConfig", config, &mut placement);
        c.spec.speaker.placement = placement;
    }
    if let Some(config) = spec.controller_config {
        let mut placement = std::mem::take(&mut c.spec.controller.placement);
        pod_config(c, source, "spec.controllerConfig", config, &mut placement);
        c.spec.controller.placement = placement;
    }
    if let Some(backend) = spec.bgp_backend.filter(|b| !b.is_empty()) {
        c.note(
            source,
            "spec.bgpBackend",
            json(&backend),
            "not carried over: FerroLB's speaker speaks BGP itself (BFD, graceful restart, IPv6 and large communities included), with no FRR to choose",
        );
    }
    if let Some(frr) = spec.frrk8s_config {
        c.note(
            source,
            "spec.frrk8sConfig",
            json(&frr),
            "not carried over: FerroLB runs no frr-k8s, and accepts no routes from its peers at all (what alwaysBlock guarded)",
        );
    }
    if let Some(image) = spec.image.filter(|i| !i.is_empty()) {
        c.note(
            source,
            "spec.image",
            json(&image),
            "not carried over: deprecated and without effect in MetalLB; FerroLB's operator deploys its own image",
        );
    }
}

/// MetalLB's levels are all, debug, info, warn, error and none.
fn log_level(c: &mut Converter, source: &Source, level: &str) -> String {
    let (ours, note) = match level {
        "debug" | "info" | "warn" | "error" => (level, None),
        "all" => ("debug", Some("FerroLB has no level \"all\"")),
        "none" => (
            "error",
            Some("FerroLB always logs errors; it has no level \"none\""),
        ),
        _ => ("info", Some("not a MetalLB log level")),
    };
    if let Some(why) = note {
        c.cosmetic(
            source,
            "spec.logLevel",
            json(level),
            format!("{why}: written as {ours}"),
        );
    }
    ours.to_owned()
}

fn pod_config(
    c: &mut Converter,
    source: &Source,
    field: &str,
    config: PodConfig,
    placement: &mut Placement,
) {
    if let Some(class) = config.priority_class_name {
        placement.priority_class_name = class;
    }
    placement.affinity = config.affinity;
    placement.resources = config.resources;
    if let Some(runtime) = config.runtime_class_name.filter(|r| !r.is_empty()) {
        c.cosmetic(
            source,
            &format!("{field}.runtimeClassName"),
            json(&runtime),
            "FerroLB has no runtimeClassName for its pods: not carried over",
        );
    }
    if !config.annotations.is_empty() {
        c.cosmetic(
            source,
            &format!("{field}.annotations"),
            json(&config.annotations),
            "FerroLB sets no extra pod annotations: not carried over",
        );
    }
}
