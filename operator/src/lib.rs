//! The FerroLB operator: renders the operands from one LoadBalancerConfig (`render`, pure) and,
//! next, applies them and reports their state.

pub mod manifests;
pub mod render;
