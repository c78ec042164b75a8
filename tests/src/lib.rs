//! The FerroLB testbed (see `tests/README.md`): a real Kubernetes control plane, nodes that are
//! network namespaces running real kubelets, containerd and kube-proxy, and real BGP routers, on
//! one machine.
//!
//! - [`echo`]: the testbed's echo server (the `ferrolb-testbed/echo` image).
//! - [`ferrolb`]: FerroLB installed through the operator (`config/default` and a config), removed
//!   again by a guard.
//! - [`forward`]: the API forwarder for the root namespace.
//! - [`probe`]: continuous client probes (failover gaps).
//! - [`harness`]: what tests use: start-or-reuse the testbed, per-test namespaces, exec in a
//!   network namespace, waiting, FRR JSON.
//! - [`workloads`]: the echo container and Deployments of it, for tests and examples.

pub mod echo;
pub mod ferrolb;
pub mod forward;
pub mod harness;
pub mod probe;
pub mod workloads;
