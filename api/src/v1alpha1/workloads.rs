use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the controller Deployment is scheduled and sized.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerSpec {
    /// Number of controller replicas (at least 1). Replicas elect a leader with a Lease; the
    /// others stand by and take over within seconds.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,

    /// Node labels the controller pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the controller pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity rules of the controller pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// CPU and memory requests and limits of the controller container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// PriorityClass of the controller pods.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub priority_class_name: String,
}

impl Default for ControllerSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            resources: None,
            priority_class_name: String::new(),
        }
    }
}

fn default_replicas() -> i32 {
    2
}

/// How the speaker DaemonSet is scheduled and sized.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerSpec {
    /// Node labels the speaker pods must match; nodes without a speaker never announce.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the speaker pods (to run on tainted nodes, e.g. control-plane nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity rules of the speaker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// CPU and memory requests and limits of the speaker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// PriorityClass of the speaker pods.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub priority_class_name: String,

    /// Regular expressions of interface names never used for Layer 2 announcements, added to
    /// the built-in list (lo, docker*, veth*, cali*, flannel*, cni*, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_interfaces: Vec<String>,
}
