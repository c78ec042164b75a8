//! The names the manifests (`config/`, and later the operator's rendering) and the binaries must
//! agree on: ports, environment variables, flags, labels, the membership Secret, the Lease, field
//! managers and condition types. `api/tests/wiring.rs` checks that the YAML under `config/` uses
//! exactly these, so neither side can drift alone.

/// Ports.
pub mod ports {
    /// The controller's /healthz, /readyz and /metrics.
    pub const CONTROLLER_HEALTH: u16 = 8080;
    /// The operator's /healthz, /readyz and /metrics.
    pub const OPERATOR_HEALTH: u16 = 8080;
    /// The speaker's /healthz, /readyz and /metrics (host network: kept off the common 8080).
    pub const SPEAKER_HEALTH: u16 = 7473;
    /// The speakers' liveness datagrams (UDP), the same on every node.
    pub const MEMBERSHIP: u16 = 7947;
    /// The container port name of the health and metrics endpoints.
    pub const MONITORING_NAME: &str = "monitoring";
    /// The container port name of the liveness datagrams.
    pub const MEMBERSHIP_NAME: &str = "memberlist";
}

/// Environment variables the binaries read (each also a flag).
pub mod env {
    /// This pod's name (downward API): the controller's election identity, the owner the
    /// speaker names on its BGPSessions.
    pub const POD_NAME: &str = "POD_NAME";
    /// This pod's UID (downward API `metadata.uid`): with [`POD_NAME`], the speaker's
    /// ownerReference on its BGPSessions, so they go with its pod.
    pub const POD_UID: &str = "POD_UID";
    /// This pod's namespace (downward API): where the Lease and the speaker pods are.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The node the pod runs on (downward API `spec.nodeName`): the speaker's identity.
    pub const NODE_NAME: &str = "NODE_NAME";
    /// `--health-addr`.
    pub const HEALTH_ADDR: &str = "FERROLB_HEALTH_ADDR";
    /// `--log-level`.
    pub const LOG_LEVEL: &str = "FERROLB_LOG_LEVEL";
    /// `--log-format`.
    pub const LOG_FORMAT: &str = "FERROLB_LOG_FORMAT";
    /// `--memberlist-key-file`.
    pub const MEMBERLIST_KEY_FILE: &str = "FERROLB_MEMBERLIST_KEY_FILE";
    /// The operand image the operator deploys.
    pub const IMAGE: &str = "FERROLB_IMAGE";
    /// The operand image as OLM sets it; wins over [`IMAGE`].
    pub const RELATED_IMAGE: &str = "RELATED_IMAGE_FERROLB";
    /// Every variable above.
    pub const ALL: &[&str] = &[
        POD_NAME,
        POD_UID,
        POD_NAMESPACE,
        NODE_NAME,
        HEALTH_ADDR,
        LOG_LEVEL,
        LOG_FORMAT,
        MEMBERLIST_KEY_FILE,
        IMAGE,
        RELATED_IMAGE,
    ];
}

/// Flags the manifests pass (without the leading `--`).
pub mod flags {
    /// Address of the health and metrics endpoints.
    pub const HEALTH_ADDR: &str = "health-addr";
    /// The speakers' liveness UDP port.
    pub const MEMBERLIST_PORT: &str = "memberlist-port";
    /// A regular expression of interfaces the speaker never uses (repeatable).
    pub const EXCLUDE_INTERFACE: &str = "exclude-interface";
}

/// Labels on every child object, and the component values.
pub mod labels {
    /// `app.kubernetes.io/name`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/component`.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `app.kubernetes.io/managed-by`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// `app.kubernetes.io/version`.
    pub const VERSION: &str = "app.kubernetes.io/version";
    /// The value of [`NAME`].
    pub const NAME_VALUE: &str = "ferrolb";
    /// The value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "ferrolb-operator";
    /// [`COMPONENT`] of the controller.
    pub const CONTROLLER: &str = "controller";
    /// [`COMPONENT`] of the speaker.
    pub const SPEAKER: &str = "speaker";
    /// [`COMPONENT`] of the operator.
    pub const OPERATOR: &str = "operator";
    /// The label selector of the speaker pods: [`NAME`]=[`NAME_VALUE`],[`COMPONENT`]=[`SPEAKER`].
    pub const SPEAKER_SELECTOR: &str =
        "app.kubernetes.io/name=ferrolb,app.kubernetes.io/component=speaker";
}

/// Object names.
pub mod names {
    /// The controller's Deployment, ServiceAccount and ClusterRole.
    pub const CONTROLLER: &str = "ferrolb-controller";
    /// The speaker's DaemonSet, ServiceAccount and ClusterRole.
    pub const SPEAKER: &str = "ferrolb-speaker";
    /// The controller's leader-election Lease.
    pub const CONTROLLER_LEASE: &str = "ferrolb-controller";
    /// The Secret holding the speakers' liveness key.
    pub const MEMBERLIST_SECRET: &str = "ferrolb-memberlist";
    /// The key of the liveness key in [`MEMBERLIST_SECRET`]: the one speakers sign with (and
    /// accept).
    pub const MEMBERLIST_SECRET_KEY: &str = "key";
    /// Optional, during a key rotation: the key that will be sent with next, accepted already.
    pub const MEMBERLIST_SECRET_NEXT_KEY: &str = "next";
    /// Optional, during a key rotation: the key that was sent with before, still accepted.
    pub const MEMBERLIST_SECRET_PREVIOUS_KEY: &str = "previous";
    /// Where the speaker mounts [`MEMBERLIST_SECRET`].
    pub const MEMBERLIST_MOUNT: &str = "/etc/ferrolb/memberlist";
    /// The key file in it: [`MEMBERLIST_MOUNT`]/[`MEMBERLIST_SECRET_KEY`].
    pub const MEMBERLIST_KEY_FILE: &str = "/etc/ferrolb/memberlist/key";
}

/// Annotations of the membership key rotation ("Rotating the membership key" in
/// `docs/operations.md`).
pub mod annotations {
    /// On the LoadBalancerConfig, set by the admin: a new value requests one rotation of the
    /// speakers' membership key.
    pub const ROTATE_MEMBERSHIP_KEY: &str = "ferrolb.io/rotate-membership-key";
}

/// Server-side apply field managers (also the Events' reporting controller).
pub mod field_managers {
    /// The operator.
    pub const OPERATOR: &str = "ferrolb-operator";
    /// The controller.
    pub const CONTROLLER: &str = "ferrolb-controller";
    /// The speakers.
    pub const SPEAKER: &str = "ferrolb-speaker";
}

/// Service condition types (the config's own are in `v1alpha1::condition_types`).
pub mod conditions {
    /// Written by the controller: which addresses were assigned, or why none.
    pub const IP_ALLOCATED: &str = "ferrolb.io/IPAllocated";
    /// Written by the speakers: who announces the Service's addresses, or why nobody.
    pub const ANNOUNCED: &str = "ferrolb.io/Announced";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_names_are_made_of_their_parts() {
        assert_eq!(
            labels::SPEAKER_SELECTOR,
            format!(
                "{}={},{}={}",
                labels::NAME,
                labels::NAME_VALUE,
                labels::COMPONENT,
                labels::SPEAKER
            )
        );
        assert_eq!(
            names::MEMBERLIST_KEY_FILE,
            format!(
                "{}/{}",
                names::MEMBERLIST_MOUNT,
                names::MEMBERLIST_SECRET_KEY
            )
        );
        assert_eq!(labels::MANAGED_BY_VALUE, field_managers::OPERATOR);
    }
}
