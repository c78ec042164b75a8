//! Leader election with a `coordination.k8s.io/v1` Lease, for every FerroLB binary that must have
//! exactly one writer (the controller; the operator next).
//!
//! [`elector`] decides (pure, table-tested); this module carries the decisions out: a background
//! task reads and writes the Lease every `retry_period` and publishes this replica's
//! [`Status`]; [`Leadership`] lets the caller run its work only while it leads.
//!
//! # What is guaranteed
//!
//! - Expiry is measured on the local monotonic clock since the Lease record last changed, as in
//!   client-go, so wall clocks need not agree: a standby takes over only when the holder has not
//!   written the Lease for `lease_duration` of the standby's own time.
//! - A leader leads until `renew_deadline` after it *sent* its last successful renewal
//!   (`renew_deadline < lease_duration`; the difference is the margin for clock rates and for a
//!   write already on its way to the API server).
//! - [`Leadership::run_while_leading`] checks leadership (its flag and that deadline, against the
//!   monotonic clock) before *every* poll of the work, and wakes up by itself at the deadline or
//!   when the campaign reports a loss. So once leadership is lost the work future is never polled
//!   again; it is dropped, and with it every request it had in flight. The work therefore cannot
//!   *start* a write after the loss is known (at the latest at the deadline).
//! - What it cannot do: recall a request already handed to the connection before the loss (it may
//!   still reach the API server; bound such writes with a timeout shorter than the margin), stop
//!   work that does not yield (a long synchronous stretch runs to its next await), or stop writes
//!   made by other tasks the work spawned. [`Leadership::is_leading`] is the cheap synchronous
//!   check such writers should call right before each write.

pub mod elector;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

pub use elector::{
    Action, Elector, LeaseRecord, Lost, Observation, Role, Transition, WriteOutcome,
};

/// The wall clock this replica writes into `renewTime` and `acquireTime`. Nothing reads those
/// times to decide; the offset exists so a test can give one replica a skewed clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    skew: SignedDuration,
}

impl WallClock {
    /// The system clock shifted by `skew_seconds` (test-only; 0 is the real clock).
    pub fn skewed(skew_seconds: i64) -> Self {
        Self {
            skew: SignedDuration::from_secs(skew_seconds),
        }
    }

    /// Now, by this clock.
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.skew)
            .unwrap_or_else(|_| Timestamp::now())
    }
}

/// Which Lease, who we are, and the timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the binary's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a holder's Lease stays valid without renewal: a dead leader is replaced after
    /// this much of the standby's own time.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops leading (less than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks.
    pub retry_period: Duration,
    /// The clock written into the Lease.
    pub clock: WallClock,
}

impl LeaseConfig {
    /// The usual timing for a lease of `lease_duration`: renew every fifth of it, give up after
    /// three fifths.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline: lease_duration * 3 / 5,
            retry_period: lease_duration / 5,
            clock: WallClock::default(),
        }
    }

    /// Each request to the API server gives up after this, so two fit in a renew deadline.
    fn request_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }
}

/// This replica's part in the election, as published by the campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not leading (yet).
    Standby,
    /// Leading, until this instant at the latest (the renew deadline of the last renewal).
    Leading {
        /// Local monotonic deadline.
        until: Instant,
    },
    /// Led (or campaigned) and stopped, for good.
    Ended(Lost),
}

/// Aborts the campaign task when the last [`Leadership`] goes.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Inner {
    status: watch::Sender<Status>,
    leading: watch::Sender<bool>,
    task: Option<AbortOnDrop>,
    api: Option<Api<Lease>>,
    config: LeaseConfig,
}

/// A campaign for a Lease, and the way to run work only while it is held. Cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", &self.inner.config.name)
            .field("identity", &self.inner.config.identity)
            .field("status", &*self.inner.status.borrow())
            .finish()
    }
}

/// Starts campaigning for the Lease in the background (the task ends with the last
/// [`Leadership`], or when this replica steps down).
pub fn campaign(client: Client, config: LeaseConfig) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let (status, _) = watch::channel(Status::Standby);
    let (leading, _) = watch::channel(false);
    let publisher = Publisher {
        status: status.clone(),
        leading: leading.clone(),
    };
    let task = tokio::spawn(run_campaign(api.clone(), config.clone(), publisher));
    Leadership {
        inner: Arc::new(Inner {
            status,
            leading,
            task: Some(AbortOnDrop(task)),
            api: Some(api),
            config,
        }),
    }
}

impl Leadership {
    /// True while this replica leads and its renew deadline has not passed (checked against the
    /// monotonic clock now, so it turns false on time even if the campaign task is stuck).
    /// Cheap and synchronous: call it right before each write.
    pub fn is_leading(&self) -> bool {
        self.leading_until().is_ok()
    }

    /// The published status.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// A flag that is true while this replica leads; it turns false once, when leadership ends,
    /// and never true again. For loops that want to notice between inputs; it does not replace
    /// [`Leadership::run_while_leading`] (it turns false only when the campaign task notices).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.inner.leading.subscribe()
    }

    /// Waits until this replica leads; `Err` if the campaign ended first.
    pub async fn wait_leading(&self) -> Result<(), Lost> {
        let mut status = self.inner.status.subscribe();
        loop {
            match &*status.borrow_and_update() {
                Status::Leading { .. } => return Ok(()),
                Status::Ended(lost) => return Err(lost.clone()),
                Status::Standby => {}
            }
            if status.changed().await.is_err() {
                return Err(Lost::Ended);
            }
        }
    }

    /// Waits for leadership, then runs `work` until it completes or leadership ends, whichever
    /// comes first. On loss `work` is dropped without being polled again (see the module docs for
    /// exactly what that guarantees) and the reason is returned.
    pub async fn run_while_leading<F: Future>(&self, work: F) -> Result<F::Output, Lost> {
        self.wait_leading().await?;
        let mut status = self.inner.status.subscribe();
        let mut work = pin!(work);
        loop {
            status.borrow_and_update();
            let until = self.leading_until()?;
            let guarded = std::future::poll_fn(|cx| {
                // Checked at every poll, before the work may start anything new.
                if self.is_leading() {
                    work.as_mut().poll(cx).map(Some)
                } else {
                    Poll::Ready(None)
                }
            });
            tokio::select! {
                biased;
                changed = status.changed() => {
                    if changed.is_err() {
                        return Err(Lost::Ended);
                    }
                }
                () = tokio::time::sleep_until(until) => {}
                done = guarded => {
                    if let Some(output) = done {
                        return Ok(output);
                    }
                }
            }
        }
    }

    /// Stops campaigning and, if this replica holds the Lease, clears its holder so that a
    /// standby takes over at once (for a clean shutdown, after the work has stopped).
    pub async fn release(&self) {
        if let Some(task) = &self.inner.task {
            task.0.abort();
        }
        self.publisher().ended(Lost::Ended);
        let Some(api) = &self.inner.api else {
            return;
        };
        let config = &self.inner.config;
        let released = tokio::time::timeout(config.request_timeout() * 2, async {
            let lease = api.get_opt(&config.name).await?;
            let observation = lease.as_ref().map_or(Observation::NotFound, |lease| {
                Observation::Found(record_of(lease))
            });
            let (Some(mut lease), Some(record)) =
                (lease, elector::release(&observation, &config.identity))
            else {
                return Ok(false);
            };
            write_record(&mut lease, &record);
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        })
        .await;
        match released {
            Ok(Ok(true)) => tracing::info!(lease = %config.name, "released leadership"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(lease = %config.name, error = %e, "could not release the lease");
            }
            Err(_) => tracing::warn!(lease = %config.name, "releasing the lease timed out"),
        }
    }

    fn leading_until(&self) -> Result<Instant, Lost> {
        match &*self.inner.status.borrow() {
            Status::Leading { until } if Instant::now() < *until => Ok(*until),
            Status::Leading { .. } => Err(Lost::RenewDeadline),
            Status::Ended(lost) => Err(lost.clone()),
            // Only before the first leadership, which `run_while_leading` waits for.
            Status::Standby => Err(Lost::Ended),
        }
    }

    fn publisher(&self) -> Publisher {
        Publisher {
            status: self.inner.status.clone(),
            leading: self.inner.leading.clone(),
        }
    }
}

/// The campaign's side of the two watches.
struct Publisher {
    status: watch::Sender<Status>,
    leading: watch::Sender<bool>,
}

impl Publisher {
    fn publish(&self, elector: &Elector) {
        let status = match elector.role() {
            Role::Follower => Status::Standby,
            Role::Leader { .. } => Status::Leading {
                until: elector
                    .leading_until()
                    .map_or_else(Instant::now, Instant::from_std),
            },
            Role::SteppedDown(lost) => Status::Ended(lost.clone()),
        };
        let leads = matches!(status, Status::Leading { .. });
        self.status.send_replace(status);
        self.leading
            .send_if_modified(|l| std::mem::replace(l, leads) != leads);
    }

    fn ended(&self, lost: Lost) {
        self.status.send_if_modified(|status| {
            if matches!(status, Status::Ended(_)) {
                return false;
            }
            *status = Status::Ended(lost);
            true
        });
        self.leading
            .send_if_modified(|l| std::mem::replace(l, false));
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn run_campaign(api: Api<Lease>, config: LeaseConfig, publisher: Publisher) {
    let mut elector = Elector::new(
        &config.identity,
        config.lease_duration,
        config.renew_deadline,
    );
    tracing::info!(lease = %config.name, identity = %config.identity, "campaigning for leadership");
    loop {
        let deadline = elector.leading_until().map(Instant::from_std);
        tokio::select! {
            biased;
            // A hung request must not keep a leader past its deadline.
            () = sleep_until_opt(deadline) => {}
            () = async {
                round(&api, &config, &mut elector, &publisher).await;
                tokio::time::sleep(config.retry_period).await;
            } => {}
        }
        if let Some(lost) = elector.expire(now()) {
            tracing::error!(lease = %config.name, reason = %lost, "stepping down");
        }
        publisher.publish(&elector);
        if matches!(elector.role(), Role::SteppedDown(_)) {
            return;
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One read, one decision, at most one write; publishes the outcome at once.
async fn round(
    api: &Api<Lease>,
    config: &LeaseConfig,
    elector: &mut Elector,
    publisher: &Publisher,
) {
    let timeout = config.request_timeout();
    let (observation, read) = match tokio::time::timeout(timeout, api.get_opt(&config.name)).await {
        Ok(Ok(Some(lease))) => (Observation::Found(record_of(&lease)), Some(lease)),
        Ok(Ok(None)) => (Observation::NotFound, None),
        Ok(Err(e)) => {
            tracing::warn!(lease = %config.name, error = %e, "cannot read the lease");
            (Observation::Failed, None)
        }
        Err(_) => {
            tracing::warn!(lease = %config.name, "reading the lease timed out");
            (Observation::Failed, None)
        }
    };
    let action = elector.observe(observation, now(), config.clock.now());
    let (create, record) = match action {
        Action::Wait => {
            publisher.publish(elector);
            return;
        }
        Action::StepDown(lost) => {
            tracing::error!(lease = %config.name, reason = %lost, "stepping down");
            publisher.publish(elector);
            return;
        }
        Action::Create(record) => (true, record),
        Action::Renew(record) | Action::TakeOver(record) => (false, record),
    };
    let mut lease = read.unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    write_record(&mut lease, &record);
    let sent = now();
    let pp = PostParams::default();
    let written = tokio::time::timeout(timeout, async {
        if create {
            api.create(&pp, &lease).await
        } else {
            // The resourceVersion read makes this a compare-and-swap.
            api.replace(&config.name, &pp, &lease).await
        }
    })
    .await;
    let outcome = match written {
        Ok(Ok(lease)) => WriteOutcome::Written(record_of(&lease)),
        Ok(Err(kube::Error::Api(e))) if e.code == 409 => WriteOutcome::Conflict,
        Ok(Err(e)) => {
            tracing::warn!(lease = %config.name, error = %e, "lease write failed");
            WriteOutcome::Failed
        }
        Err(_) => {
            tracing::warn!(lease = %config.name, "lease write timed out");
            WriteOutcome::Failed
        }
    };
    match elector.written(outcome, sent, now()) {
        Transition::Acquired => {
            tracing::info!(lease = %config.name, identity = %config.identity, "became leader");
        }
        Transition::SteppedDown(lost) => {
            tracing::error!(lease = %config.name, reason = %lost, "stepping down");
        }
        Transition::None | Transition::Renewed => {}
    }
    publisher.publish(elector);
}

/// The election's view of a Lease.
fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.as_ref();
    LeaseRecord {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        acquire_time: spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0),
        renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        lease_duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
        transitions: spec.and_then(|s| s.lease_transitions),
        resource_version: lease.metadata.resource_version.clone(),
    }
}

/// Writes `record` into `lease`, keeping every field the election does not own.
fn write_record(lease: &mut Lease, record: &LeaseRecord) {
    lease
        .metadata
        .resource_version
        .clone_from(&record.resource_version);
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity.clone_from(&record.holder);
    spec.acquire_time = record.acquire_time.map(MicroTime);
    spec.renew_time = record.renew_time.map(MicroTime);
    spec.lease_duration_seconds = record.lease_duration_seconds;
    spec.lease_transitions = record.transitions;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A Leadership fed by hand instead of a campaign.
    fn by_hand(status: Status) -> (Leadership, Publisher) {
        let (status, _) = watch::channel(status);
        let (leading, _) = watch::channel(false);
        let leadership = Leadership {
            inner: Arc::new(Inner {
                status: status.clone(),
                leading: leading.clone(),
                task: None,
                api: None,
                config: LeaseConfig::new("ns", "lease", "me", Duration::from_secs(5)),
            }),
        };
        (leadership, Publisher { status, leading })
    }

    /// Work that "writes" every 100 ms forever, counting its writes.
    async fn writer(writes: Arc<AtomicU32>) {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writes.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn work_ends_at_the_renew_deadline_even_if_nobody_says_so() {
        let start = Instant::now();
        let (leadership, _publisher) = by_hand(Status::Leading {
            until: start + Duration::from_millis(1_050),
        });
        let writes = Arc::new(AtomicU32::new(0));
        let result = leadership.run_while_leading(writer(writes.clone())).await;
        assert_eq!(result, Err(Lost::RenewDeadline));
        assert_eq!(Instant::now() - start, Duration::from_millis(1_050));
        assert_eq!(
            writes.load(Ordering::SeqCst),
            10,
            "no write after the deadline"
        );
        assert!(!leadership.is_leading());
    }

    #[tokio::test(start_paused = true)]
    async fn work_ends_as_soon_as_the_campaign_reports_a_loss() {
        let start = Instant::now();
        let (leadership, publisher) = by_hand(Status::Leading {
            until: start + Duration::from_secs(60),
        });
        let writes = Arc::new(AtomicU32::new(0));
        let lose = async {
            tokio::time::sleep(Duration::from_millis(550)).await;
            publisher.ended(Lost::TakenBy("other".into()));
            std::future::pending::<()>().await;
        };
        let result = tokio::select! {
            r = leadership.run_while_leading(writer(writes.clone())) => r,
            () = lose => unreachable!(),
        };
        assert_eq!(result, Err(Lost::TakenBy("other".into())));
        assert_eq!(Instant::now() - start, Duration::from_millis(550));
        assert_eq!(writes.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_the_work_running_and_it_finishes() {
        let start = Instant::now();
        let (leadership, publisher) = by_hand(Status::Leading {
            until: start + Duration::from_secs(3),
        });
        let renew = async {
            for s in 1..=10u64 {
                tokio::time::sleep_until(start + Duration::from_secs(s)).await;
                publisher.status.send_replace(Status::Leading {
                    until: Instant::now() + Duration::from_secs(3),
                });
            }
            std::future::pending::<()>().await;
        };
        let work = async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            "done"
        };
        let result = tokio::select! {
            r = leadership.run_while_leading(work) => r,
            () = renew => unreachable!(),
        };
        assert_eq!(result, Ok("done"));
    }

    #[tokio::test(start_paused = true)]
    async fn work_waits_for_leadership_and_never_starts_after_an_ended_campaign() {
        let (leadership, publisher) = by_hand(Status::Standby);
        let started = Arc::new(AtomicU32::new(0));
        let s = started.clone();
        let work = async move {
            s.fetch_add(1, Ordering::SeqCst);
        };
        let end = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            publisher.ended(Lost::Ended);
            std::future::pending::<()>().await;
        };
        let result = tokio::select! {
            r = leadership.run_while_leading(work) => r,
            () = end => unreachable!(),
        };
        assert_eq!(result, Err(Lost::Ended));
        assert_eq!(started.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_lease_round_trips_through_the_record_and_keeps_other_fields() {
        let mut lease = Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some("7".into()),
                labels: Some([("a".to_owned(), "b".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("x".into()),
                lease_transitions: Some(2),
                preferred_holder: Some("y".into()),
                ..LeaseSpec::default()
            }),
        };
        let record = LeaseRecord {
            holder: Some("me".into()),
            acquire_time: Some(Timestamp::UNIX_EPOCH),
            renew_time: Some(Timestamp::UNIX_EPOCH),
            lease_duration_seconds: Some(5),
            transitions: Some(3),
            resource_version: Some("7".into()),
        };
        write_record(&mut lease, &record);
        assert_eq!(record_of(&lease), record);
        assert!(lease.metadata.labels.is_some());
        assert_eq!(
            lease.spec.and_then(|s| s.preferred_holder).as_deref(),
            Some("y")
        );
    }

    #[test]
    fn a_skewed_clock_is_off_by_its_skew() {
        let off = WallClock::skewed(600)
            .now()
            .duration_since(Timestamp::now());
        assert!((off.as_secs() - 600).abs() <= 1, "{off}");
        let off = WallClock::skewed(-600)
            .now()
            .duration_since(Timestamp::now());
        assert!((off.as_secs() + 600).abs() <= 1, "{off}");
    }
}
