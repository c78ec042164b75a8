//! The FerroLB speaker: makes the addresses of LoadBalancer Services reachable from this node.
//!
//! `announce` is the pure core (which node answers for which IP); the ARP/NDP responders, BGP and
//! the liveness protocol between speakers are still to come.

pub mod announce;
