use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_false;

/// Where and how big the pods of one component are. Its fields appear directly under
/// `spec.controller` and `spec.speaker`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pods (e.g. to run on tainted control-plane nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity rules of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// CPU and memory requests and limits of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub priority_class_name: String,
}

/// How the controller Deployment is scheduled and sized.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerSpec {
    /// Number of controller replicas (at least 1). Replicas elect a leader with a Lease; the
    /// others stand by and take over within seconds.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,

    /// Scheduling and resources of the controller pods.
    #[serde(flatten)]
    pub placement: Placement,
}

impl Default for ControllerSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            placement: Placement::default(),
        }
    }
}

fn default_replicas() -> i32 {
    2
}

/// How the speaker DaemonSet is scheduled and sized. Nodes without a speaker never announce.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerSpec {
    /// Scheduling and resources of the speaker pods.
    #[serde(flatten)]
    pub placement: Placement,

    /// Regular expressions of interface names never used for Layer 2 announcements, added to
    /// the built-in list (lo, docker*, veth*, cali*, flannel*, cni*, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_interfaces: Vec<String>,

    /// Let nodes labelled node.kubernetes.io/exclude-from-external-load-balancers announce
    /// (Layer 2 and BGP) like any other, as MetalLB's speaker flag --ignore-exclude-lb does: for
    /// clusters whose control-plane nodes carry the label (kubeadm, single-node clusters) but
    /// must announce. Default false: labelled nodes never announce.
    #[serde(
        rename = "ignoreExcludeLBLabel",
        default,
        skip_serializing_if = "is_false"
    )]
    pub ignore_exclude_lb_label: bool,
}
