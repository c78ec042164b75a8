//! IP address management: which Service holds which addresses of which pool.
//!
//! Pure (no client): the reconciler feeds it what Services ask for and writes back what it answers.
//! Free space is kept as ordered intervals per pool and family, so assign, allocate and release
//! are O(log n) in the fragmentation and a /64 costs what a /29 does. Every choice is
//! deterministic: pools are tried by priority then name, and each takes its lowest free address.

mod free;
mod pool;

use ferrolb_api::condition::reasons;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_api::address::IpFamily;
use ferrolb_api::v1alpha1::AddressPool;

pub use pool::Pool;

/// `namespace/name` of a Service.
pub type ServiceKey = String;

/// Which families a Service wants, from `spec.ipFamilyPolicy` and `spec.ipFamilies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FamilyPolicy {
    /// One address of this family.
    Single(IpFamily),
    /// Both families if one pool can give both, else the first family that a pool has.
    PreferDual(IpFamily),
    /// Both families, from one pool, or nothing.
    RequireDual(IpFamily),
}

impl FamilyPolicy {
    fn primary(self) -> IpFamily {
        match self {
            Self::Single(f) | Self::PreferDual(f) | Self::RequireDual(f) => f,
        }
    }
}

fn other(family: IpFamily) -> IpFamily {
    match family {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    }
}

/// A port a Service exposes; two Services may share an IP only if none of these clash.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The port number.
    pub port: i32,
}

/// What a Service asks of the allocator: everything that decides its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRequest {
    /// `namespace/name`.
    pub key: ServiceKey,
    /// The Service's namespace.
    pub namespace: String,
    /// Labels of that namespace (for `allocateTo.namespaceSelectors`).
    pub namespace_labels: BTreeMap<String, String>,
    /// Labels of the Service (for `allocateTo.serviceSelectors`).
    pub labels: BTreeMap<String, String>,
    /// Families wanted.
    pub families: FamilyPolicy,
    /// Addresses asked for explicitly (annotation or `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// Pool asked for by annotation.
    pub pool: Option<String>,
    /// Sharing key (`allow-shared-ip` annotation); Services sharing an IP must all have the same.
    pub sharing_key: Option<String>,
    /// What the backends are: empty for `externalTrafficPolicy: Cluster`, the selector for
    /// `Local` (Services sharing an IP must send traffic to the same pods).
    pub backend_key: String,
    /// Ports exposed.
    pub ports: Vec<Port>,
}

/// The addresses a Service holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The pool they come from.
    pub pool: String,
    /// One address, or two of different families (primary family first).
    pub ips: Vec<IpAddr>,
}

/// Why a Service cannot have addresses. Each variant is a precise, admin-readable reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// No pool exists at all.
    #[error("no address pools are configured")]
    NoPools,
    /// The Service names a pool that does not exist.
    #[error("address pool {0:?} does not exist")]
    UnknownPool(String),
    /// The pool's `allocateTo` excludes this Service.
    #[error(
        "address pool {pool:?} does not allow Services in namespace {namespace:?} with these labels"
    )]
    NotAllowed {
        /// The pool.
        pool: String,
        /// The Service's namespace.
        namespace: String,
    },
    /// No pool may serve this Service automatically.
    #[error("no auto-assign address pool allows Services in namespace {0:?} with these labels")]
    NoPoolAllows(String),
    /// A requested address is in no pool.
    #[error("requested IP {0} is not in any address pool")]
    NotInAnyPool(IpAddr),
    /// Requested addresses are in different pools.
    #[error("requested IPs {0} and {1} are in different address pools")]
    DifferentPools(IpAddr, IpAddr),
    /// A requested address is not in the pool the Service names.
    #[error("requested IP {ip} is in address pool {actual:?}, not in {requested:?}")]
    WrongPool {
        /// The address.
        ip: IpAddr,
        /// Where it is.
        actual: String,
        /// Where the Service asked for.
        requested: String,
    },
    /// The addresses do not fit the Service's families.
    #[error("IP family mismatch: {0}")]
    FamilyMismatch(String),
    /// The address is held by a Service it may not be shared with.
    #[error("IP {ip} is already used by {other}, and {reason}")]
    SharingConflict {
        /// The address.
        ip: IpAddr,
        /// One of the Services holding it.
        other: ServiceKey,
        /// Why they cannot share.
        reason: String,
    },
    /// Every pool that could serve the Service is out of addresses.
    #[error("no free {families} address in address pool(s) {pools}")]
    PoolsFull {
        /// What was needed, e.g. `IPv4` or `IPv4 and IPv6`.
        families: String,
        /// The pools tried, comma-separated.
        pools: String,
    },
}

impl AllocationError {
    /// A stable CamelCase reason for Events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoPools => reasons::NO_ADDRESS_POOLS,
            Self::UnknownPool(_) => reasons::UNKNOWN_ADDRESS_POOL,
            Self::NotAllowed { .. } | Self::NoPoolAllows(_) => reasons::NAMESPACE_NOT_ALLOWED,
            Self::NotInAnyPool(_) | Self::DifferentPools(..) | Self::WrongPool { .. } => {
                reasons::REQUESTED_IP_NOT_IN_POOL
            }
            Self::FamilyMismatch(_) => reasons::FAMILY_MISMATCH,
            Self::SharingConflict { .. } => reasons::SHARING_CONFLICT,
            Self::PoolsFull { .. } => reasons::POOL_FULL,
        }
    }
}

/// What the allocator remembers about a holder of addresses.
#[derive(Clone, Debug)]
struct Holder {
    request: ServiceRequest,
    assignment: Assignment,
}

/// All pools and all assignments.
#[derive(Debug, Default)]
pub struct Allocator {
    pools: BTreeMap<String, Pool>,
    /// Auto-assign pools in the order they are tried: those with `allocateTo` by priority (unset
    /// last) then name, then the others by name.
    auto_order: Vec<String>,
    holders: HashMap<ServiceKey, Holder>,
    /// Services holding each address (several when shared).
    users: HashMap<IpAddr, BTreeSet<ServiceKey>>,
    /// Addresses held under each sharing key, so sharers find each other in O(log n).
    shared: HashMap<String, BTreeSet<IpAddr>>,
}

impl Allocator {
    /// An allocator over `pools` with nothing assigned.
    pub fn new(pools: &[AddressPool]) -> Self {
        let mut allocator = Self::default();
        allocator.set_pools(pools);
        allocator
    }

    /// Replaces the pools. Services keep their addresses when a new pool still holds them and
    /// admits them (the pool's name may change); the others lose them and are returned, sorted,
    /// to be allocated again.
    pub fn set_pools(&mut self, pools: &[AddressPool]) -> Vec<ServiceKey> {
        self.pools = pools
            .iter()
            .map(|p| (p.name.clone(), Pool::new(p)))
            .collect();
        let mut order: Vec<(u8, u32, &str)> = self
            .pools
            .values()
            .filter(|p| p.auto_assign())
            .map(|p| match p.allocate_to() {
                Some(to) => (0, to.priority.unwrap_or(u32::MAX), p.name()),
                None => (1, 0, p.name()),
            })
            .collect();
        order.sort_unstable();
        self.auto_order = order.into_iter().map(|(_, _, n)| n.to_owned()).collect();
        let mut holders: Vec<Holder> = self.holders.drain().map(|(_, h)| h).collect();
        holders.sort_by(|a, b| a.request.key.cmp(&b.request.key));
        self.users.clear();
        self.shared.clear();
        let mut displaced = Vec::new();
        for holder in holders {
            if self
                .assign(&holder.request, &holder.assignment.ips)
                .is_err()
            {
                displaced.push(holder.request.key);
            }
        }
        displaced
    }

    /// The pools, by name.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// What `key` holds.
    pub fn assignment(&self, key: &str) -> Option<&Assignment> {
        self.holders.get(key).map(|h| &h.assignment)
    }

    /// Number of Services holding addresses.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    /// Whether no Service holds an address.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    /// Services holding `ip`.
    pub fn users(&self, ip: IpAddr) -> impl Iterator<Item = &str> {
        self.users
            .get(&ip)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Gives `request` exactly `ips` (its current status, or what it asked for). Idempotent. On
    /// error nothing changes, including what the Service held before.
    pub fn assign(
        &mut self,
        request: &ServiceRequest,
        ips: &[IpAddr],
    ) -> Result<Assignment, AllocationError> {
        check_families(request.families, ips)?;
        let pool = self.pool_holding(ips)?;
        if let Some(wanted) = &request.pool
            && wanted != pool.name()
        {
            return Err(AllocationError::WrongPool {
                ip: ips[0],
                actual: pool.name().to_owned(),
                requested: wanted.clone(),
            });
        }
        if !pool.admits(
            &request.namespace,
            &request.namespace_labels,
            &request.labels,
        ) {
            return Err(AllocationError::NotAllowed {
                pool: pool.name().to_owned(),
                namespace: request.namespace.clone(),
            });
        }
        for &ip in ips {
            self.check_sharing(request, ip)?;
        }
        let assignment = Assignment {
            pool: pool.name().to_owned(),
            ips: ips.to_vec(),
        };
        self.take(request, assignment.clone());
        Ok(assignment)
    }

    /// Gives `request` addresses: the ones it asked for, or the lowest free ones of the first pool
    /// that can serve it (its annotated pool; else pools whose `allocateTo` admits it, by priority
    /// then name; else the other auto-assign pools, by name). Keeps what it already holds when that
    /// still fits the request.
    pub fn allocate(&mut self, request: &ServiceRequest) -> Result<Assignment, AllocationError> {
        if !request.requested.is_empty() {
            return self.assign(request, &request.requested);
        }
        if let Some(current) = self.holders.get(&request.key).map(|h| h.assignment.clone())
            && let Ok(kept) = self.assign(request, &current.ips)
        {
            return Ok(kept);
        }
        let wants = wanted_families(request.families);
        let (choice, tried) = {
            let candidates = self.candidates(request)?;
            let fits =
                |pool: &Pool, families: &[IpFamily]| families.iter().all(|&f| pool.has_family(f));
            let choice = wants.iter().find_map(|families| {
                candidates
                    .iter()
                    .filter(|p| fits(p, families))
                    .find_map(|pool| {
                        let ips: Option<Vec<IpAddr>> = families
                            .iter()
                            .map(|&f| self.find_address(request, pool, f))
                            .collect();
                        ips.map(|ips| Assignment {
                            pool: pool.name().to_owned(),
                            ips,
                        })
                    })
            });
            // Only on failure: which pools had the families and were full.
            let tried = match choice {
                Some(_) => String::new(),
                None => candidates
                    .iter()
                    .filter(|p| wants.iter().any(|families| fits(p, families)))
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            (choice, tried)
        };
        if let Some(assignment) = choice {
            self.take(request, assignment.clone());
            return Ok(assignment);
        }
        let families = wants
            .first()
            .map(|f| {
                f.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .unwrap_or_default();
        if tried.is_empty() {
            return Err(AllocationError::FamilyMismatch(format!(
                "no pool that may serve this Service has {families} addresses"
            )));
        }
        Err(AllocationError::PoolsFull {
            families,
            pools: tried,
        })
    }

    /// Frees what `key` holds; shared addresses stay with their other users.
    pub fn release(&mut self, key: &str) -> Option<Assignment> {
        let holder = self.holders.remove(key)?;
        for &ip in &holder.assignment.ips {
            let now_unused = self.users.get_mut(&ip).is_some_and(|users| {
                users.remove(key);
                users.is_empty()
            });
            if now_unused {
                self.users.remove(&ip);
                if let Some(pool) = self.pools.get_mut(&holder.assignment.pool) {
                    pool.put(ip);
                }
                if let Some(sk) = &holder.request.sharing_key
                    && let Some(ips) = self.shared.get_mut(sk)
                {
                    ips.remove(&ip);
                    if ips.is_empty() {
                        self.shared.remove(sk);
                    }
                }
            }
        }
        Some(holder.assignment)
    }

    /// Pools to try for `request`, in order.
    fn candidates(&self, request: &ServiceRequest) -> Result<Vec<&Pool>, AllocationError> {
        if self.pools.is_empty() {
            return Err(AllocationError::NoPools);
        }
        let admits = |p: &Pool| {
            p.admits(
                &request.namespace,
                &request.namespace_labels,
                &request.labels,
            )
        };
        if let Some(name) = &request.pool {
            let pool = self
                .pools
                .get(name)
                .ok_or_else(|| AllocationError::UnknownPool(name.clone()))?;
            if !admits(pool) {
                return Err(AllocationError::NotAllowed {
                    pool: name.clone(),
                    namespace: request.namespace.clone(),
                });
            }
            return Ok(vec![pool]);
        }
        let pools: Vec<&Pool> = self
            .auto_order
            .iter()
            .filter_map(|name| self.pools.get(name))
            .filter(|p| admits(p))
            .collect();
        if pools.is_empty() {
            return Err(AllocationError::NoPoolAllows(request.namespace.clone()));
        }
        Ok(pools)
    }

    /// An address of `family` in `pool` for `request`: one its sharing partners already hold if
    /// compatible, else the lowest free one.
    fn find_address(
        &self,
        request: &ServiceRequest,
        pool: &Pool,
        family: IpFamily,
    ) -> Option<IpAddr> {
        if let Some(sk) = &request.sharing_key
            && let Some(ips) = self.shared.get(sk)
        {
            let reuse = ips.iter().copied().find(|&ip| {
                IpFamily::of(ip) == family
                    && pool.contains(ip)
                    && self.check_sharing(request, ip).is_ok()
            });
            if reuse.is_some() {
                return reuse;
            }
        }
        pool.first_free(family)
    }

    /// The pool holding all of `ips`.
    fn pool_holding(&self, ips: &[IpAddr]) -> Result<&Pool, AllocationError> {
        let mut found: Option<&Pool> = None;
        for &ip in ips {
            let pool =
                self.pools
                    .values()
                    .find(|p| p.contains(ip))
                    .ok_or(if self.pools.is_empty() {
                        AllocationError::NoPools
                    } else {
                        AllocationError::NotInAnyPool(ip)
                    })?;
            if let Some(first) = found
                && first.name() != pool.name()
            {
                return Err(AllocationError::DifferentPools(ips[0], ip));
            }
            found = Some(pool);
        }
        found.ok_or_else(|| AllocationError::FamilyMismatch("no IP given".to_owned()))
    }

    /// Whether `request` may use `ip` alongside its current users.
    fn check_sharing(&self, request: &ServiceRequest, ip: IpAddr) -> Result<(), AllocationError> {
        let others = self
            .users
            .get(&ip)
            .into_iter()
            .flatten()
            .filter(|k| **k != request.key);
        for other_key in others {
            let Some(other) = self.holders.get(other_key) else {
                continue;
            };
            let conflict = |reason: String| AllocationError::SharingConflict {
                ip,
                other: other_key.clone(),
                reason,
            };
            let other = &other.request;
            match (&request.sharing_key, &other.sharing_key) {
                (Some(a), Some(b)) if a == b => {}
                (None, _) | (_, None) => {
                    return Err(conflict(
                        "both must set the same ferrolb.io/allow-shared-ip key to share it".into(),
                    ));
                }
                (Some(a), Some(b)) => {
                    return Err(conflict(format!(
                        "their sharing keys differ ({a:?} and {b:?})"
                    )));
                }
            }
            if request.backend_key != other.backend_key {
                return Err(conflict(
                    "they select different backends (with externalTrafficPolicy Local, sharers need the same selector; Local and Cluster never share)".into(),
                ));
            }
            if let Some(port) = request.ports.iter().find(|p| other.ports.contains(p)) {
                return Err(conflict(format!(
                    "both expose {}/{}",
                    port.protocol, port.port
                )));
            }
        }
        Ok(())
    }

    /// Records `assignment` for `request`, replacing what it held.
    fn take(&mut self, request: &ServiceRequest, assignment: Assignment) {
        self.release(&request.key);
        for &ip in &assignment.ips {
            if let Some(pool) = self.pools.get_mut(&assignment.pool) {
                pool.take(ip);
            }
            self.users
                .entry(ip)
                .or_default()
                .insert(request.key.clone());
            if let Some(sk) = &request.sharing_key {
                self.shared.entry(sk.clone()).or_default().insert(ip);
            }
        }
        self.holders.insert(
            request.key.clone(),
            Holder {
                request: request.clone(),
                assignment,
            },
        );
    }
}

/// The family sets to try, in order of preference.
fn wanted_families(policy: FamilyPolicy) -> Vec<Vec<IpFamily>> {
    let p = policy.primary();
    match policy {
        FamilyPolicy::Single(_) => vec![vec![p]],
        FamilyPolicy::RequireDual(_) => vec![vec![p, other(p)]],
        FamilyPolicy::PreferDual(_) => vec![vec![p, other(p)], vec![p], vec![other(p)]],
    }
}

/// Whether `ips` fit `policy`: at most one per family, and the families the policy needs.
fn check_families(policy: FamilyPolicy, ips: &[IpAddr]) -> Result<(), AllocationError> {
    let families: Vec<IpFamily> = ips.iter().map(|&ip| IpFamily::of(ip)).collect();
    let mismatch = |m: String| Err(AllocationError::FamilyMismatch(m));
    match families.as_slice() {
        [] => mismatch("no IP given".into()),
        [a, b] if a == b => mismatch(format!("two {a} addresses; give at most one per family")),
        [_, _, _, ..] => mismatch(format!(
            "{} addresses; give at most one per family",
            ips.len()
        )),
        [f] => match policy {
            FamilyPolicy::Single(want) if *f != want => mismatch(format!(
                "{} is {f} but the Service is single-stack {want}",
                ips[0]
            )),
            FamilyPolicy::RequireDual(_) => mismatch(
                "the Service requires dual stack; give one IPv4 and one IPv6 address".into(),
            ),
            _ => Ok(()),
        },
        [_, _] => match policy {
            FamilyPolicy::Single(want) => mismatch(format!(
                "the Service is single-stack {want}; give one {want} address"
            )),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests;
