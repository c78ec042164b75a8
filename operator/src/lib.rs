//! The FerroLB operator: from the one LoadBalancerConfig it renders the operands (`render`,
//! pure), applies and prunes them (`apply`), and reports their state (`status`, pure), in the
//! reconcile pipeline of `reconcile`. It also rotates the speakers' membership key on request,
//! in phases that never cause a false failover (`rotation`, pure). Under OLM it tells OLM whether
//! an upgrade may proceed (`olm`).

pub mod apply;
pub mod convert;
pub mod manifests;
pub mod metrics;
pub mod olm;
pub mod reconcile;
pub mod render;
pub mod rotation;
pub mod status;
pub mod webhook;
