use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of FerroLB, written by the operator (conditions, versions, rollouts) and the
/// controller (pool usage).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerConfigStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Available, Progressing, Degraded, Upgradeable and ConfigValid, in the usual Kubernetes
    /// sense.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Versions of the operator and of the operands it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<OperatorVersions>,

    /// Rollout of the controller Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<RolloutStatus>,

    /// Rollout of the speaker DaemonSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<RolloutStatus>,

    /// Usage of each address pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub pools: Vec<PoolUsage>,
}

/// Condition types of a LoadBalancerConfig.
pub mod condition_types {
    /// Every operand is deployed and ready.
    pub const AVAILABLE: &str = "Available";
    /// The operator is rolling out a change.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs the admin's attention; the message says what.
    pub const DEGRADED: &str = "Degraded";
    /// The operator can be upgraded safely now.
    pub const UPGRADEABLE: &str = "Upgradeable";
    /// The spec passed validation; when False, the last valid configuration stays in force.
    pub const CONFIG_VALID: &str = "ConfigValid";
    /// Every BGP session of every speaker is Established, or none has been down for long (set
    /// only while the spec has bgpPeers).
    pub const BGP_ESTABLISHED: &str = "BGPEstablished";
}

/// Versions of the running software.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct OperatorVersions {
    /// Version of the operator.
    pub operator: String,
    /// Version of the controller and speaker images the operator deploys.
    pub operand: String,
}

/// Rollout counts of a Deployment or DaemonSet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Pods that should run.
    pub desired: i32,
    /// Pods that are ready.
    pub ready: i32,
    /// Pods that run the current template.
    pub updated: i32,
}

/// How much of one pool is in use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    /// Name of the pool.
    pub name: String,
    /// IPv4 usage; absent when the pool has no IPv4 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<FamilyUsage>,
    /// IPv6 usage; absent when the pool has no IPv6 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<FamilyUsage>,
}

/// Address counts of one family. They are decimal strings because an IPv6 pool can hold more
/// addresses than a 64-bit integer counts (a /64 has 2^64).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FamilyUsage {
    /// Addresses Services may receive (after avoidBuggyIPs).
    pub total: String,
    /// Addresses assigned to Services (a shared IP counts once).
    pub assigned: String,
}

impl FamilyUsage {
    /// Usage from exact counts.
    pub fn new(total: u128, assigned: u128) -> Self {
        Self {
            total: total.to_string(),
            assigned: assigned.to_string(),
        }
    }
}
