//! The FerroLB API: the `LoadBalancerConfig` custom resource, its defaults, and the one pure
//! validation that the webhook, the controller and the speakers all run.
//!
//! Nothing here talks to a cluster: the crate is types, parsing and rules, tested exhaustively.

pub mod address;
pub mod community;
pub mod condition;
pub mod crd;
pub mod duration;
pub mod in_force;
pub mod manifest;
pub mod selector;
pub mod v1alpha1;
pub mod validate;
pub mod wiring;

pub use address::{AddressRange, IpFamily};
pub use in_force::ConfigInForce;
pub use v1alpha1::{LoadBalancerConfig, LoadBalancerConfigSpec, LoadBalancerConfigStatus};
pub use validate::{Problem, Problems, Warning, validate, warnings};
