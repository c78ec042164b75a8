//! The election as a pure state machine: what was read from the Lease, the local monotonic
//! instant and this replica's identity go in; the next write (or none) and the new role come out.
//! No client, no timers: [`super::campaign`] carries the decisions out.
//!
//! Expiry is measured as client-go's `leaderelection` measures it: a candidate remembers the last
//! record it read and the local monotonic instant at which that record last *changed* (any field,
//! the resourceVersion included); the holder has expired when that instant plus the lease
//! duration has passed. The `renewTime` written in the record is never compared with the local
//! clock, so replicas whose wall clocks disagree by any amount still agree on who leads.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

/// The fields of a `coordination.k8s.io/v1` Lease that the election reads and writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Who holds it; `None` or empty when nobody does (released).
    pub holder: Option<String>,
    /// When the holder acquired it (the holder's wall clock; informative only).
    pub acquire_time: Option<Timestamp>,
    /// When the holder last renewed it (the holder's wall clock; informative only).
    pub renew_time: Option<Timestamp>,
    /// How long the holder promises to renew within.
    pub lease_duration_seconds: Option<i32>,
    /// How many times the holder changed.
    pub transitions: Option<i32>,
    /// The object's resourceVersion: a write carrying it is a compare-and-swap.
    pub resource_version: Option<String>,
}

impl LeaseRecord {
    /// The holder, `None` when nobody holds it.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }

    /// The same record given up: no holder, no renewal (so a standby takes it at once).
    pub fn released(&self) -> LeaseRecord {
        LeaseRecord {
            holder: None,
            renew_time: None,
            ..self.clone()
        }
    }
}

/// What one read of the Lease gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The Lease exists.
    Found(LeaseRecord),
    /// There is no Lease.
    NotFound,
    /// The read failed (or timed out).
    Failed,
}

/// What the write of an [`Action`] gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; the record as the API server returned it.
    Written(LeaseRecord),
    /// 409: someone else wrote first (or created it first).
    Conflict,
    /// Any other failure, a timeout included: we do not know whether it landed.
    Failed,
}

/// Why a leader stopped leading. Once a replica stepped down it never leads again (the process,
/// or a new campaign, starts over as a standby).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// Another replica holds the Lease.
    #[error("another replica ({0}) holds the lease")]
    TakenBy(String),
    /// Someone else cleared the holder or deleted the Lease.
    #[error("the lease was cleared or deleted by someone else")]
    Vanished,
    /// A renewal met a 409: the Lease changed since it was read, so it may not be ours.
    #[error("a renewal conflicted with another write to the lease")]
    Conflict,
    /// No renewal succeeded within the renew deadline.
    #[error("could not renew the lease within the renew deadline")]
    RenewDeadline,
    /// The campaign ended (released on shutdown, or its task stopped).
    #[error("the campaign ended")]
    Ended,
}

/// The next step the shell carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No Lease exists: create it with this record (we hold it if the create succeeds).
    Create(LeaseRecord),
    /// We hold it: write this record (same holder, acquire time and transitions; new renewTime).
    Renew(LeaseRecord),
    /// It expired or was released: write this record, us as holder, transitions + 1.
    TakeOver(LeaseRecord),
    /// Someone else holds it and has not expired: read again later.
    Wait,
    /// We led and must stop now.
    StepDown(Lost),
}

/// What a step changed about this replica's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// We lead from now on.
    Acquired,
    /// We still lead, with a later deadline.
    Renewed,
    /// We led and stepped down.
    SteppedDown(Lost),
}

/// This replica's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Standby: someone else leads, or nobody yet.
    Follower,
    /// Leader; `renewed_at` is when the last successful write was *sent* (not answered), so the
    /// deadline counts from before the API server could have stored it.
    Leader {
        /// When the last successful write was sent.
        renewed_at: Instant,
    },
    /// Led and stepped down, for good.
    SteppedDown(Lost),
}

/// The kind of write in flight, to read its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Create,
    Renew,
    TakeOver,
}

/// The election of one replica.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    role: Role,
    /// The last record read, and when it last changed (local monotonic time).
    observed: Option<(LeaseRecord, Instant)>,
    pending: Option<(Pending, LeaseRecord)>,
}

impl Elector {
    /// A standby named `identity` that writes `lease_duration` into the Lease and steps down when
    /// it has not renewed for `renew_deadline` (which must be shorter than `lease_duration`: the
    /// difference is the margin for clock rates and in-flight writes).
    pub fn new(
        identity: impl Into<String>,
        lease_duration: Duration,
        renew_deadline: Duration,
    ) -> Self {
        Self {
            identity: identity.into(),
            lease_duration,
            renew_deadline,
            role: Role::Follower,
            observed: None,
            pending: None,
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The current role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// Until when we may act as leader (local monotonic time); `None` unless leading.
    pub fn leading_until(&self) -> Option<Instant> {
        match self.role {
            Role::Leader { renewed_at } => Some(renewed_at + self.renew_deadline),
            _ => None,
        }
    }

    /// Decides what to do after reading the Lease at `now`; `wall` is this replica's wall clock,
    /// written into renewTime and acquireTime (informative only).
    pub fn observe(&mut self, observation: Observation, now: Instant, wall: Timestamp) -> Action {
        self.pending = None;
        if let Some(lost) = self.expire(now) {
            return Action::StepDown(lost);
        }
        if let Role::SteppedDown(lost) = &self.role {
            return Action::StepDown(lost.clone());
        }
        let leading = matches!(self.role, Role::Leader { .. });
        let record = match observation {
            Observation::Failed => return Action::Wait,
            Observation::NotFound if leading => return self.step_down(Lost::Vanished),
            Observation::NotFound => {
                let record = LeaseRecord {
                    holder: Some(self.identity.clone()),
                    acquire_time: Some(wall),
                    renew_time: Some(wall),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    transitions: Some(0),
                    resource_version: None,
                };
                self.pending = Some((Pending::Create, record.clone()));
                return Action::Create(record);
            }
            Observation::Found(record) => record,
        };
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record)
        {
            self.observed = Some((record.clone(), now));
        }
        match record.holder() {
            Some(holder) if holder == self.identity => {
                // Ours: renewing keeps acquireTime and transitions. A new process of the same
                // identity (a restarted container) takes its own lease back as client-go does:
                // the old process is gone.
                let renewed = LeaseRecord {
                    renew_time: Some(wall),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    ..record
                };
                self.pending = Some((Pending::Renew, renewed.clone()));
                Action::Renew(renewed)
            }
            Some(holder) if leading => self.step_down(Lost::TakenBy(holder.to_owned())),
            None if leading => self.step_down(Lost::Vanished),
            Some(_) if !self.holder_expired(&record, now) => Action::Wait,
            _ => {
                let taken = LeaseRecord {
                    holder: Some(self.identity.clone()),
                    acquire_time: Some(wall),
                    renew_time: Some(wall),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    transitions: Some(record.transitions.unwrap_or(0).saturating_add(1)),
                    resource_version: record.resource_version.clone(),
                };
                self.pending = Some((Pending::TakeOver, taken.clone()));
                Action::TakeOver(taken)
            }
        }
    }

    /// Takes in the outcome of the write the last [`Elector::observe`] asked for, sent at
    /// `sent_at` and answered at `now`.
    pub fn written(&mut self, outcome: WriteOutcome, sent_at: Instant, now: Instant) -> Transition {
        let Some((pending, _)) = self.pending.take() else {
            return Transition::None;
        };
        if let Some(lost) = self.expire(now) {
            return Transition::SteppedDown(lost);
        }
        let leading = matches!(self.role, Role::Leader { .. });
        match outcome {
            WriteOutcome::Written(record) => {
                self.observed = Some((record, now));
                self.role = Role::Leader {
                    renewed_at: sent_at,
                };
                match (pending, leading) {
                    (Pending::Renew, true) => Transition::Renewed,
                    _ => Transition::Acquired,
                }
            }
            WriteOutcome::Conflict if leading => {
                self.role = Role::SteppedDown(Lost::Conflict);
                Transition::SteppedDown(Lost::Conflict)
            }
            // A standby that lost the race simply does not hold it; a failed write of a leader
            // is retried until the deadline.
            WriteOutcome::Conflict | WriteOutcome::Failed => Transition::None,
        }
    }

    /// Steps down if the renew deadline has passed at `now`; `Some` only at that transition.
    pub fn expire(&mut self, now: Instant) -> Option<Lost> {
        let until = self.leading_until()?;
        if now < until {
            return None;
        }
        self.role = Role::SteppedDown(Lost::RenewDeadline);
        Some(Lost::RenewDeadline)
    }

    /// Steps down for good (a released campaign).
    pub fn end(&mut self) {
        if !matches!(self.role, Role::SteppedDown(_)) {
            self.role = Role::SteppedDown(Lost::Ended);
        }
    }

    fn step_down(&mut self, lost: Lost) -> Action {
        self.role = Role::SteppedDown(lost.clone());
        Action::StepDown(lost)
    }

    /// The holder has not changed the record for its lease duration of *our* monotonic time.
    fn holder_expired(&self, record: &LeaseRecord, now: Instant) -> bool {
        let duration = record
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(self.lease_duration, Duration::from_secs);
        self.observed
            .as_ref()
            .is_some_and(|(_, since)| *since + duration < now)
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// The record that releases the lease, if `observation` shows `identity` holding it.
pub fn release(observation: &Observation, identity: &str) -> Option<LeaseRecord> {
    match observation {
        Observation::Found(record) if record.holder() == Some(identity) => Some(record.released()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    const ME: &str = "me";
    const OTHER: &str = "other";
    const DURATION: Duration = Duration::from_secs(5);
    const DEADLINE: Duration = Duration::from_secs(3);

    /// One step of a scenario, at a time in milliseconds after the start.
    #[derive(Clone, Debug)]
    enum Step {
        /// Read this, expect this kind of action.
        Read(u64, Observation, Expect),
        /// The write of the last action gave this (sent and answered at the same time), expect
        /// this transition.
        Wrote(u64, WriteOutcome, Transition),
        /// The deadline check at this time.
        Tick(u64, Option<Lost>),
    }

    /// The kind of action expected (the records written are checked in their own tests).
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Expect {
        Create,
        Renew,
        TakeOver,
        Wait,
        StepDown(Lost),
    }

    fn kind(action: &Action) -> Expect {
        match action {
            Action::Create(_) => Expect::Create,
            Action::Renew(_) => Expect::Renew,
            Action::TakeOver(_) => Expect::TakeOver,
            Action::Wait => Expect::Wait,
            Action::StepDown(lost) => Expect::StepDown(lost.clone()),
        }
    }

    fn held(holder: &str, rv: u32) -> Observation {
        Observation::Found(record(holder, rv, Timestamp::UNIX_EPOCH))
    }

    fn record(holder: &str, rv: u32, renewed: Timestamp) -> LeaseRecord {
        LeaseRecord {
            holder: (!holder.is_empty()).then(|| holder.to_owned()),
            acquire_time: Some(Timestamp::UNIX_EPOCH),
            renew_time: Some(renewed),
            lease_duration_seconds: Some(5),
            transitions: Some(3),
            resource_version: Some(rv.to_string()),
        }
    }

    fn written(holder: &str, rv: u32) -> WriteOutcome {
        WriteOutcome::Written(record(holder, rv, Timestamp::UNIX_EPOCH))
    }

    fn run(name: &str, steps: &[Step]) -> Elector {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut elector = Elector::new(ME, DURATION, DEADLINE);
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Read(ms, observation, expect) => {
                    let action = elector.observe(observation.clone(), at(*ms), Timestamp::now());
                    assert_eq!(kind(&action), *expect, "{name}: step {i} ({step:?})");
                }
                Step::Wrote(ms, outcome, expect) => {
                    let transition = elector.written(outcome.clone(), at(*ms), at(*ms));
                    assert_eq!(transition, *expect, "{name}: step {i} ({step:?})");
                }
                Step::Tick(ms, expect) => {
                    assert_eq!(
                        elector.expire(at(*ms)),
                        *expect,
                        "{name}: step {i} ({step:?})"
                    );
                }
            }
        }
        elector
    }

    #[test]
    fn every_transition() {
        use Expect as E;
        use Step::{Read, Tick, Wrote};
        use Transition as T;
        let scenarios: Vec<(&str, Vec<Step>, Role)> = vec![
            (
                "no lease: create it and lead",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                ],
                Role::Leader {
                    renewed_at: Instant::now(),
                },
            ),
            (
                "create lost the race (409): we do not lead",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, WriteOutcome::Conflict, T::None),
                ],
                Role::Follower,
            ),
            (
                "a failed read waits",
                vec![Read(0, Observation::Failed, E::Wait)],
                Role::Follower,
            ),
            (
                "a live holder is waited for",
                vec![
                    Read(0, held(OTHER, 1), E::Wait),
                    Read(1_000, held(OTHER, 2), E::Wait),
                    Read(4_999, held(OTHER, 2), E::Wait),
                ],
                Role::Follower,
            ),
            (
                "a released lease (holder empty) is taken at once",
                vec![
                    Read(0, held("", 1), E::TakeOver),
                    Wrote(0, written(ME, 2), T::Acquired),
                ],
                Role::Leader {
                    renewed_at: Instant::now(),
                },
            ),
            (
                "a holder that stops renewing is taken over after the lease duration of local time",
                vec![
                    Read(0, held(OTHER, 7), E::Wait),
                    Read(3_000, held(OTHER, 7), E::Wait),
                    Read(5_000, held(OTHER, 7), E::Wait),
                    Read(5_001, held(OTHER, 7), E::TakeOver),
                    Wrote(5_010, written(ME, 8), T::Acquired),
                ],
                Role::Leader {
                    renewed_at: Instant::now(),
                },
            ),
            (
                "expiry counts from the last change we saw, not from the first read",
                vec![
                    Read(0, held(OTHER, 1), E::Wait),
                    Read(4_000, held(OTHER, 2), E::Wait),
                    Read(8_000, held(OTHER, 2), E::Wait),
                    Read(9_001, held(OTHER, 2), E::TakeOver),
                ],
                Role::Follower,
            ),
            (
                "a takeover that loses the race (409) does not lead",
                vec![
                    Read(0, held(OTHER, 1), E::Wait),
                    Read(6_000, held(OTHER, 1), E::TakeOver),
                    Wrote(6_000, WriteOutcome::Conflict, T::None),
                    Read(7_000, held("third", 2), E::Wait),
                ],
                Role::Follower,
            ),
            (
                "a leader renews, and each renewal moves the deadline",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                    Read(1_000, held(ME, 1), E::Renew),
                    Wrote(1_000, written(ME, 2), T::Renewed),
                    Tick(3_500, None),
                    Read(3_900, held(ME, 2), E::Renew),
                    Wrote(3_900, written(ME, 3), T::Renewed),
                    Tick(6_899, None),
                ],
                Role::Leader {
                    renewed_at: Instant::now(),
                },
            ),
            (
                "a leader whose renewal conflicts (409) does not hold it: steps down",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                    Read(1_000, held(ME, 1), E::Renew),
                    Wrote(
                        1_000,
                        WriteOutcome::Conflict,
                        T::SteppedDown(Lost::Conflict),
                    ),
                    Read(2_000, held(ME, 2), E::StepDown(Lost::Conflict)),
                ],
                Role::SteppedDown(Lost::Conflict),
            ),
            (
                "a leader that reads another holder steps down at once",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                    Read(
                        1_000,
                        held(OTHER, 2),
                        E::StepDown(Lost::TakenBy(OTHER.into())),
                    ),
                ],
                Role::SteppedDown(Lost::TakenBy(OTHER.into())),
            ),
            (
                "a leader whose lease was cleared by someone else steps down",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                    Read(1_000, held("", 2), E::StepDown(Lost::Vanished)),
                ],
                Role::SteppedDown(Lost::Vanished),
            ),
            (
                "a leader whose lease was deleted steps down",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                    Read(1_000, Observation::NotFound, E::StepDown(Lost::Vanished)),
                ],
                Role::SteppedDown(Lost::Vanished),
            ),
            (
                "failed renewals are retried until the renew deadline, then it steps down",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                    Read(1_000, Observation::Failed, E::Wait),
                    Read(2_000, held(ME, 1), E::Renew),
                    Wrote(2_000, WriteOutcome::Failed, T::None),
                    Tick(2_999, None),
                    Tick(3_000, Some(Lost::RenewDeadline)),
                    Tick(3_001, None),
                    Read(4_000, held(ME, 1), E::StepDown(Lost::RenewDeadline)),
                ],
                Role::SteppedDown(Lost::RenewDeadline),
            ),
            (
                "a renewal answered after the deadline does not revive the leader",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                    Read(2_900, held(ME, 1), E::Renew),
                    Wrote(3_100, written(ME, 2), T::SteppedDown(Lost::RenewDeadline)),
                ],
                Role::SteppedDown(Lost::RenewDeadline),
            ),
            (
                "a deadline noticed at the next read steps down without writing",
                vec![
                    Read(0, Observation::NotFound, E::Create),
                    Wrote(0, written(ME, 1), T::Acquired),
                    Read(9_000, held(ME, 1), E::StepDown(Lost::RenewDeadline)),
                ],
                Role::SteppedDown(Lost::RenewDeadline),
            ),
            (
                "a new process of the holder's identity takes its lease back",
                vec![
                    Read(0, held(ME, 4), E::Renew),
                    Wrote(0, written(ME, 5), T::Acquired),
                ],
                Role::Leader {
                    renewed_at: Instant::now(),
                },
            ),
            (
                "a write outcome without a write in flight changes nothing",
                vec![
                    Read(0, held(OTHER, 1), E::Wait),
                    Wrote(0, written(ME, 2), T::None),
                ],
                Role::Follower,
            ),
        ];
        for (name, steps, role) in scenarios {
            let elector = run(name, &steps);
            match (elector.role(), &role) {
                (Role::Leader { .. }, Role::Leader { .. }) => {}
                (got, want) => assert_eq!(got, want, "{name}: final role"),
            }
        }
    }

    #[test]
    fn skewed_renew_times_never_make_a_standby_take_over_while_the_holder_renews() {
        let skews = [
            SignedDuration::from_hours(-24),
            SignedDuration::from_mins(-10),
            SignedDuration::from_mins(10),
            SignedDuration::from_hours(24),
        ];
        for skew in skews {
            let t0 = Instant::now();
            let mut elector = Elector::new(ME, DURATION, DEADLINE);
            let wall = Timestamp::now();
            // The holder renews every second for a minute, its clock off by `skew`.
            for s in 0..60u32 {
                let renewed = wall + skew + SignedDuration::from_secs(i64::from(s));
                let seen = Observation::Found(record(OTHER, s + 1, renewed));
                let now = t0 + Duration::from_secs(u64::from(s));
                let action = elector.observe(seen, now, wall);
                assert_eq!(action, Action::Wait, "skew {skew}, second {s}");
            }
            // It stops: taken over once the lease duration of our own time has passed.
            let last = Observation::Found(record(
                OTHER,
                60,
                wall + skew + SignedDuration::from_secs(59),
            ));
            for (after, expect) in [(1, Expect::Wait), (5, Expect::Wait), (6, Expect::TakeOver)] {
                let now = t0 + Duration::from_secs(59 + after);
                let action = elector.observe(last.clone(), now, wall);
                assert_eq!(
                    kind(&action),
                    expect,
                    "skew {skew}, {after} s after the last renewal"
                );
            }
        }
    }

    #[test]
    fn the_lease_duration_written_by_the_holder_is_the_one_waited_for() {
        let t0 = Instant::now();
        let mut elector = Elector::new(ME, DURATION, DEADLINE);
        let mut long = record(OTHER, 1, Timestamp::UNIX_EPOCH);
        long.lease_duration_seconds = Some(15);
        let seen = Observation::Found(long);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            elector.observe(seen.clone(), at(0), Timestamp::now()),
            Action::Wait
        );
        assert_eq!(
            elector.observe(seen.clone(), at(10), Timestamp::now()),
            Action::Wait
        );
        assert_eq!(
            kind(&elector.observe(seen, at(16), Timestamp::now())),
            Expect::TakeOver
        );
    }

    #[test]
    fn writes_carry_identity_times_transitions_and_the_version_read() {
        let t0 = Instant::now();
        let wall = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_000);
        let mut elector = Elector::new(ME, DURATION, DEADLINE);
        let Action::Create(created) = elector.observe(Observation::NotFound, t0, wall) else {
            panic!("expected a create");
        };
        assert_eq!(
            created,
            LeaseRecord {
                holder: Some(ME.into()),
                acquire_time: Some(wall),
                renew_time: Some(wall),
                lease_duration_seconds: Some(5),
                transitions: Some(0),
                resource_version: None,
            }
        );

        let mut standby = Elector::new(ME, DURATION, DEADLINE);
        let theirs = record(OTHER, 41, Timestamp::UNIX_EPOCH);
        standby.observe(Observation::Found(theirs.clone()), t0, wall);
        let later = t0 + Duration::from_secs(6);
        let Action::TakeOver(taken) = standby.observe(Observation::Found(theirs), later, wall)
        else {
            panic!("expected a takeover");
        };
        assert_eq!(taken.holder.as_deref(), Some(ME));
        assert_eq!(taken.transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(wall));
        assert_eq!(
            taken.resource_version.as_deref(),
            Some("41"),
            "compare-and-swap"
        );
        standby.written(WriteOutcome::Written(taken.clone()), later, later);

        let renew_wall = wall + SignedDuration::from_secs(1);
        let Action::Renew(renewed) =
            standby.observe(Observation::Found(taken.clone()), later, renew_wall)
        else {
            panic!("expected a renewal");
        };
        assert_eq!(renewed.acquire_time, Some(wall), "acquireTime kept");
        assert_eq!(renewed.renew_time, Some(renew_wall));
        assert_eq!(renewed.transitions, Some(4), "transitions kept");
        assert_eq!(renewed.resource_version, taken.resource_version);
    }

    #[test]
    fn the_deadline_counts_from_when_the_write_was_sent() {
        let t0 = Instant::now();
        let mut elector = Elector::new(ME, DURATION, DEADLINE);
        elector.observe(Observation::NotFound, t0, Timestamp::now());
        let answered = t0 + Duration::from_secs(2);
        elector.written(written(ME, 1), t0, answered);
        assert_eq!(elector.leading_until(), Some(t0 + DEADLINE));
    }

    #[test]
    fn release_clears_only_our_own_holder() {
        let ours = record(ME, 3, Timestamp::UNIX_EPOCH);
        let released = release(&Observation::Found(ours.clone()), ME);
        assert_eq!(
            released,
            Some(LeaseRecord {
                holder: None,
                renew_time: None,
                ..ours
            })
        );
        assert_eq!(release(&held(OTHER, 3), ME), None);
        assert_eq!(release(&held("", 3), ME), None);
        assert_eq!(release(&Observation::NotFound, ME), None);
        assert_eq!(release(&Observation::Failed, ME), None);
    }

    #[test]
    fn an_ended_campaign_never_leads_again() {
        let t0 = Instant::now();
        let mut elector = Elector::new(ME, DURATION, DEADLINE);
        elector.end();
        assert_eq!(
            elector.observe(Observation::NotFound, t0, Timestamp::now()),
            Action::StepDown(Lost::Ended)
        );
        assert_eq!(elector.leading_until(), None);
    }
}
