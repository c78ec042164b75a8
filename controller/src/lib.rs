//! The FerroLB controller: assigns addresses from the LoadBalancerConfig's pools to Services of
//! type LoadBalancer.
//!
//! `allocator` is the pure core, `service` turns a Service into a request, `decide` chooses each
//! Service's outcome and what to write, `retry` paces failed writes, and `reconciler` is the I/O
//! loop that carries the decisions out.

pub mod allocator;
pub mod decide;
pub mod metrics;
pub mod reconciler;
pub mod retry;
pub mod service;
