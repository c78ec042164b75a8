//! The FerroLB speaker: makes the addresses of LoadBalancer Services reachable from this node.
//!
//! - `world`: the speaker's picture of the cluster, from its watches (pure);
//! - `announce`: which node answers for which IP (pure, every speaker computes the same);
//! - `membership`: authenticated liveness between speakers, so a dead one is noticed in well
//!   under a second;
//! - `l2`: the ARP and NDP responders;
//! - `bgp`: BGP-4 sessions to the routers (sans-I/O FSM and wire codec);
//! - `run`: the event loop that ties them to the API server, and what it reports back.

pub mod announce;
pub mod bfd;
pub mod bgp;
pub mod l2;
pub mod membership;
pub mod metrics;
pub mod run;
pub mod world;
