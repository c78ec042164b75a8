//! The FerroLB controller: assigns addresses from the LoadBalancerConfig's pools to Services of
//! type LoadBalancer.
//!
//! `allocator` is the pure core; the Service reconciler around it is still to come.

pub mod allocator;
pub mod leader;
pub mod metrics;
pub mod reconciler;
pub mod service;
