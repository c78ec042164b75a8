//! The FerroLB controller: assigns addresses from the LoadBalancerConfig's pools to Services of
//! type LoadBalancer.
//!
//! `allocator` is the pure core, `service` turns a Service into a request, `reconciler` is the
//! loop around them.

pub mod allocator;
pub mod events;
pub mod metrics;
pub mod reconciler;
pub mod service;
