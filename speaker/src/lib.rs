//! The FerroLB speaker: makes the addresses of LoadBalancer Services reachable from this node.
//!
//! `announce` is the pure core (which node answers for which IP); `membership` tells which speakers
//! are alive (authenticated UDP liveness). The ARP/NDP responders and BGP are still to come.

pub mod announce;
pub mod membership;
