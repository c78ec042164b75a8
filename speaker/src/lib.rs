//! The FerroLB speaker: makes the addresses of LoadBalancer Services reachable from this node.
//!
//! `announce` is the pure core (which node answers for which IP); `l2` answers ARP/NDP for the IPs
//! this node leads. BGP and the liveness protocol between speakers are still to come.

pub mod announce;
pub mod l2;
