use proptest::prelude::*;

use super::*;

const LOCAL: u32 = 0x1111;
const REMOTE: u32 = 0x2222;
const MS: Duration = Duration::from_millis(1);

fn local() -> NonZeroU32 {
    NonZeroU32::new(LOCAL).unwrap()
}

fn timers(tx_ms: u64, rx_ms: u64, detect_mult: u8) -> Timers {
    Timers {
        desired_min_tx: MS * u32::try_from(tx_ms).unwrap(),
        required_min_rx: MS * u32::try_from(rx_ms).unwrap(),
        detect_mult,
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        timers: timers(100, 200, 3),
        passive: false,
    }
}

/// What the peer sends in `state`: 300 ms desired, 50 ms required, multiplier 4.
fn peer(state: State) -> Packet {
    Packet {
        diag: Diag::None,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 4,
        my_discriminator: REMOTE,
        your_discriminator: if state == State::Down { 0 } else { LOCAL },
        desired_min_tx_us: 300_000,
        required_min_rx_us: 50_000,
        required_min_echo_rx_us: 0,
    }
}

fn sent(actions: &[Action]) -> Vec<Packet> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(*p),
            Action::StateChanged { .. } => None,
        })
        .collect()
}

fn changes(actions: &[Action]) -> Vec<(State, State, Diag)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StateChanged { from, to, diag } => Some((*from, *to, *diag)),
            Action::Send(_) => None,
        })
        .collect()
}

/// A session brought to `state` at `now` by the peer's packets (or by `admin_down`); Up means
/// Up with the Poll Sequence of reaching Up finished.
fn session_in(state: State, now: Instant) -> Session {
    let mut s = Session::new(config(), local(), 7, now);
    match state {
        State::Down => {}
        State::Init => {
            s.receive(now, &peer(State::Down));
        }
        State::Up => {
            s.receive(now, &peer(State::Down));
            s.receive(now, &peer(State::Up));
            s.receive(
                now,
                &Packet {
                    final_: true,
                    ..peer(State::Up)
                },
            );
        }
        State::AdminDown => {
            s.admin_down(now);
        }
    }
    assert_eq!(s.state(), state);
    assert!(!s.polling());
    s
}

// ---- the transition table of RFC 5880 §6.8.6 ----

#[test]
fn every_local_state_against_every_received_state_follows_the_rfc() {
    use State::*;
    let n = |d| Diag::NeighborSignaledSessionDown == d;
    // (local, received, new state, whether the diagnostic is "neighbor signaled down")
    let table = [
        (AdminDown, AdminDown, AdminDown, false),
        (AdminDown, Down, AdminDown, false),
        (AdminDown, Init, AdminDown, false),
        (AdminDown, Up, AdminDown, false),
        (Down, AdminDown, Down, false),
        (Down, Down, Init, false),
        (Down, Init, Up, false),
        (Down, Up, Down, false),
        (Init, AdminDown, Down, true),
        (Init, Down, Init, false),
        (Init, Init, Up, false),
        (Init, Up, Up, false),
        (Up, AdminDown, Down, true),
        (Up, Down, Down, true),
        (Up, Init, Up, false),
        (Up, Up, Up, false),
    ];
    let now = Instant::now();
    for (from, received, to, neighbor_down) in table {
        let mut s = session_in(from, now);
        let out = s.receive(now + MS, &peer(received));
        assert_eq!(s.state(), to, "{from} receiving {received}");
        let want = if from == to {
            vec![]
        } else {
            vec![(from, to, s.local_diag())]
        };
        assert_eq!(changes(&out), want, "{from} receiving {received}");
        if from != to {
            assert_eq!(
                n(s.local_diag()),
                neighbor_down,
                "{from} receiving {received}"
            );
            let packets = sent(&out);
            assert_eq!(packets.len(), 1, "a state change is told at once");
            assert_eq!(packets[0].state, to);
        }
    }
}

#[test]
fn reaching_up_clears_the_diagnostic_of_the_last_time_down() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    s.receive(now, &peer(State::Down));
    assert_eq!(s.local_diag(), Diag::NeighborSignaledSessionDown);
    s.receive(now, &peer(State::Init));
    assert_eq!(s.state(), State::Up);
    assert_eq!(s.local_diag(), Diag::None);
}

#[test]
fn a_packet_for_another_discriminator_is_ignored() {
    let now = Instant::now();
    let mut s = session_in(State::Init, now);
    let out = s.receive(
        now,
        &Packet {
            your_discriminator: LOCAL + 1,
            ..peer(State::Up)
        },
    );
    assert!(out.is_empty());
    assert_eq!(s.state(), State::Init);
}

// ---- what we send ----

#[test]
fn a_new_session_sends_at_once_at_the_slow_rate_with_no_remote_discriminator() {
    let now = Instant::now();
    let mut s = Session::new(config(), local(), 1, now);
    assert_eq!(s.next_deadline(), Some(now));
    let packets = sent(&s.on_timer(now));
    assert_eq!(packets.len(), 1);
    let p = packets[0];
    assert_eq!(p.state, State::Down);
    assert_eq!(p.my_discriminator, LOCAL);
    assert_eq!(p.your_discriminator, 0);
    assert_eq!(
        p.desired_min_tx_us, 1_000_000,
        "not Up: at least one second"
    );
    assert_eq!(p.required_min_rx_us, 200_000);
    assert_eq!(p.required_min_echo_rx_us, 0, "no echo");
    assert_eq!(p.detect_mult, 3);
    assert!(!p.poll && !p.final_ && !p.demand);
    assert_eq!(
        crate::bfd::packet::decode(&crate::bfd::packet::encode(&p)),
        Ok(p)
    );
}

#[test]
fn passive_session_sends_nothing_until_the_peer_is_heard() {
    let now = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            passive: true,
            ..config()
        },
        local(),
        1,
        now,
    );
    assert_eq!(s.next_deadline(), None);
    assert!(s.on_timer(now + Duration::from_secs(10)).is_empty());
    let out = s.receive(now + Duration::from_secs(10), &peer(State::Down));
    let packets = sent(&out);
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].your_discriminator, REMOTE);
    assert_eq!(packets[0].state, State::Init);
}

#[test]
fn passive_session_falls_silent_again_when_the_peer_is_forgotten() {
    let now = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            passive: true,
            ..config()
        },
        local(),
        1,
        now,
    );
    s.receive(now, &peer(State::Down));
    let detect = s.detection_time().unwrap();
    let out = s.on_timer(now + detect);
    assert_eq!(
        changes(&out),
        [(State::Init, State::Down, Diag::ControlDetectionTimeExpired)]
    );
    assert_eq!(s.remote_discriminator(), 0);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn a_poll_is_answered_at_once_with_final_and_without_poll() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    let out = s.receive(
        now,
        &Packet {
            poll: true,
            ..peer(State::Up)
        },
    );
    let packets = sent(&out);
    assert_eq!(packets.len(), 1);
    assert!(packets[0].final_ && !packets[0].poll);
    assert_eq!(packets[0].state, State::Up);
}

#[test]
fn a_poll_is_answered_even_when_the_peer_wants_no_periodic_packets() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    let out = s.receive(
        now,
        &Packet {
            poll: true,
            required_min_rx_us: 0,
            ..peer(State::Up)
        },
    );
    assert_eq!(sent(&out).len(), 1);
    assert_eq!(s.tx_interval(), Duration::ZERO);
    assert_eq!(s.next_deadline(), s.detect_deadline);
    assert!(sent(&s.on_timer(now + 10 * MS)).is_empty());
}

#[test]
fn a_peer_in_demand_mode_gets_no_periodic_packets_while_both_are_up() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    s.receive(
        now,
        &Packet {
            demand: true,
            ..peer(State::Up)
        },
    );
    assert!(sent(&s.on_timer(now + 200 * MS)).is_empty());
    // Its Poll (how a Demand-mode peer checks the path) is still answered.
    let out = s.receive(
        now + 300 * MS,
        &Packet {
            demand: true,
            poll: true,
            ..peer(State::Up)
        },
    );
    assert!(sent(&out)[0].final_);
}

// ---- Poll Sequences and timers ----

#[test]
fn reaching_up_advertises_the_profile_with_poll_until_final() {
    let now = Instant::now();
    let mut s = session_in(State::Init, now);
    assert_eq!(s.tx_interval(), SLOW_TX, "max(1 s, the peer's 50 ms)");
    let out = s.receive(now, &peer(State::Up));
    let p = sent(&out)[0];
    assert!(p.poll);
    assert_eq!(p.desired_min_tx_us, 100_000);
    assert!(s.polling());
    // A faster rate is used at once: the peer computes its detection time from it.
    assert_eq!(s.tx_interval(), 100 * MS);
    let next = s.next_deadline().unwrap();
    assert!(next <= now + 100 * MS);
    assert!(sent(&s.on_timer(next))[0].poll, "periodic packets carry P");
    s.receive(
        next,
        &Packet {
            final_: true,
            ..peer(State::Up)
        },
    );
    assert!(!s.polling());
    let next = s.next_deadline().unwrap();
    assert!(!sent(&s.on_timer(next))[0].poll);
}

#[test]
fn a_slower_transmit_interval_applies_only_after_final() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    assert_eq!(s.tx_interval(), 100 * MS);
    let out = s.set_timers(now, timers(500, 200, 3));
    let p = sent(&out)[0];
    assert!(p.poll);
    assert_eq!(p.desired_min_tx_us, 500_000);
    assert_eq!(
        s.tx_interval(),
        100 * MS,
        "the old, faster rate until Final"
    );
    s.receive(
        now,
        &Packet {
            final_: true,
            ..peer(State::Up)
        },
    );
    assert_eq!(s.tx_interval(), 500 * MS);
}

#[test]
fn a_shorter_receive_interval_counts_for_detection_only_after_final() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    // The peer sends every 300 ms, multiplier 4.
    assert_eq!(s.detection_time(), Some(1200 * MS));
    s.set_timers(now, timers(100, 500, 3));
    s.receive(now, &peer(State::Up));
    assert_eq!(
        s.detection_time(),
        Some(2000 * MS),
        "a longer receive interval counts at once"
    );
    s.receive(
        now,
        &Packet {
            final_: true,
            ..peer(State::Up)
        },
    );
    s.set_timers(now, timers(100, 10, 3));
    s.receive(now, &peer(State::Up));
    assert_eq!(
        s.detection_time(),
        Some(2000 * MS),
        "the old, longer one until Final"
    );
    s.receive(
        now,
        &Packet {
            final_: true,
            ..peer(State::Up)
        },
    );
    assert_eq!(s.detection_time(), Some(1200 * MS));
}

#[test]
fn timers_changed_while_not_up_apply_at_once_without_poll() {
    let now = Instant::now();
    let mut s = session_in(State::Init, now);
    let out = s.set_timers(now, timers(2000, 700, 5));
    assert!(out.is_empty());
    assert!(!s.polling());
    let p = s.packet();
    assert_eq!(
        (p.desired_min_tx_us, p.required_min_rx_us, p.detect_mult),
        (2_000_000, 700_000, 5)
    );
    assert_eq!(s.tx_interval(), 2000 * MS);
}

#[test]
fn the_same_timers_again_start_no_poll() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    assert!(s.set_timers(now, config().timers).is_empty());
    assert!(!s.polling());
}

#[test]
fn leaving_up_returns_to_the_slow_rate_and_ends_a_poll() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    s.set_timers(now, timers(50, 200, 3));
    assert!(s.polling());
    let out = s.receive(now, &peer(State::Down));
    assert_eq!(sent(&out)[0].desired_min_tx_us, 1_000_000);
    assert!(!s.polling());
    assert_eq!(s.tx_interval(), SLOW_TX);
}

#[test]
fn detection_time_expiry_takes_up_down_with_diagnostic_1() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    let detect = s.detection_time().unwrap();
    assert!(changes(&s.on_timer(now + detect - Duration::from_micros(1))).is_empty());
    let out = s.on_timer(now + detect);
    assert_eq!(
        changes(&out),
        [(State::Up, State::Down, Diag::ControlDetectionTimeExpired)]
    );
    let p = sent(&out)[0];
    assert_eq!(
        (p.state, p.diag, p.your_discriminator),
        (State::Down, Diag::ControlDetectionTimeExpired, 0)
    );
}

#[test]
fn admin_down_tells_the_peer_and_ignores_it_until_admin_up() {
    let now = Instant::now();
    let mut s = session_in(State::Up, now);
    let out = s.admin_down(now);
    assert_eq!(
        changes(&out),
        [(State::Up, State::AdminDown, Diag::AdministrativelyDown)]
    );
    let p = sent(&out)[0];
    assert_eq!(
        (p.state, p.diag),
        (State::AdminDown, Diag::AdministrativelyDown)
    );
    assert_eq!(p.desired_min_tx_us, 1_000_000);
    assert!(s.admin_down(now).is_empty(), "once");
    // No detection in AdminDown; packets keep going out, slowly.
    let out = s.on_timer(now + Duration::from_secs(5));
    assert!(changes(&out).is_empty());
    assert_eq!(sent(&out)[0].state, State::AdminDown);
    assert!(
        s.receive(
            now,
            &Packet {
                poll: true,
                ..peer(State::Up)
            }
        )
        .is_empty()
    );
    let out = s.admin_up(now);
    assert_eq!(
        changes(&out),
        [(State::AdminDown, State::Down, Diag::AdministrativelyDown)]
    );
}

#[test]
fn with_multiplier_1_no_period_exceeds_90_percent() {
    let now = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            timers: timers(1000, 1000, 1),
            passive: false,
        },
        local(),
        99,
        now,
    );
    let mut t = now;
    s.on_timer(t);
    for _ in 0..200 {
        let next = s.next_deadline().unwrap();
        let gap = next - t;
        assert!(gap >= 750 * MS && gap <= 900 * MS, "{gap:?}");
        t = next;
        s.on_timer(t);
    }
}

#[test]
fn the_same_seed_gives_the_same_periods() {
    let periods = |seed| {
        let now = Instant::now();
        let mut s = Session::new(config(), local(), seed, now);
        let mut t = now;
        (0..20)
            .map(|_| {
                s.on_timer(t);
                let next = s.next_deadline().unwrap();
                let gap = next - t;
                t = next;
                gap
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(periods(5), periods(5));
    assert_ne!(periods(5), periods(6));
}

// ---- properties ----

/// Any interval a profile or a peer may give, in microseconds.
fn interval_us() -> impl Strategy<Value = u32> {
    prop_oneof![1_000u32..2_000_000, 1u32..=u32::MAX]
}

/// Brings a session Up against a peer with these timers, Final included.
fn up_against(ours: Timers, theirs: (u32, u32, u8), seed: u64, now: Instant) -> (Session, Packet) {
    let (desired, required, mult) = theirs;
    let mut s = Session::new(
        SessionConfig {
            timers: ours,
            passive: false,
        },
        local(),
        seed,
        now,
    );
    let packet = |state| Packet {
        desired_min_tx_us: desired,
        required_min_rx_us: required,
        detect_mult: mult,
        ..peer(state)
    };
    s.receive(now, &packet(State::Down));
    s.receive(now, &packet(State::Up));
    let fin = Packet {
        final_: true,
        ..packet(State::Up)
    };
    s.receive(now, &fin);
    (s, packet(State::Up))
}

prop_compose! {
    fn our_timers()(tx in 1u64..60_000, rx in 1u64..60_000, mult in 1u8..=255) -> Timers {
        timers(tx, rx, mult)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Wait(u32),
    SetTimers(Timers),
    AdminDown,
    AdminUp,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..5_000_000).prop_map(Op::Wait),
        our_timers().prop_map(Op::SetTimers),
        Just(Op::AdminDown),
        Just(Op::AdminUp),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn tx_interval_and_detection_time_follow_the_rfc_formulas(
        ours in our_timers(),
        desired in interval_us(),
        required in interval_us(),
        mult in 1u8..=255,
        seed: u64,
    ) {
        let now = Instant::now();
        let (s, _) = up_against(ours, (desired, required, mult), seed, now);
        prop_assert_eq!(s.state(), State::Up);
        let tx = ours.desired_min_tx.max(micros(required));
        prop_assert_eq!(s.tx_interval(), tx);
        let detect = ours.required_min_rx.max(micros(desired)) * u32::from(mult);
        prop_assert_eq!(s.detection_time(), Some(detect));
        prop_assert_eq!(s.next_deadline().map(|d| d <= now + tx), Some(true));
    }

    #[test]
    fn every_transmit_period_is_within_the_jitter_bounds(
        ours in our_timers(),
        required in 1_000u32..2_000_000,
        seed: u64,
    ) {
        let now = Instant::now();
        // The peer's detection inputs are huge, so only transmissions are due.
        let (mut s, _) = up_against(ours, (u32::MAX, required, 255), seed, now);
        let interval = s.tx_interval();
        let max_permille = if ours.detect_mult == 1 { 900 } else { 1000 };
        let mut t = now;
        s.on_timer(t);
        for _ in 0..50 {
            let next = s.next_deadline().unwrap();
            let gap = next - t;
            prop_assert!(gap >= interval * 750 / 1000, "{:?} of {:?}", gap, interval);
            prop_assert!(gap <= interval * max_permille / 1000, "{:?} of {:?}", gap, interval);
            t = next;
            let out = s.on_timer(t);
            prop_assert_eq!(sent(&out).len(), 1);
        }
    }

    #[test]
    fn a_session_never_leaves_down_without_a_packet_from_the_peer(
        ops in proptest::collection::vec(op(), 0..60),
        passive: bool,
        seed: u64,
    ) {
        let mut t = Instant::now();
        let mut s = Session::new(SessionConfig { passive, ..config() }, local(), seed, t);
        for op in ops {
            let out = match op {
                Op::Wait(us) => {
                    t += micros(us);
                    let mut out = Vec::new();
                    while let Some(d) = s.next_deadline().filter(|d| *d <= t) {
                        out.extend(s.on_timer(d));
                    }
                    out
                }
                Op::SetTimers(timers) => s.set_timers(t, timers),
                Op::AdminDown => s.admin_down(t),
                Op::AdminUp => s.admin_up(t),
            };
            prop_assert!(matches!(s.state(), State::Down | State::AdminDown));
            for p in sent(&out) {
                prop_assert!(!passive, "a passive session sent {:?}", p);
                prop_assert_eq!(p.your_discriminator, 0);
                prop_assert!(p.desired_min_tx_us >= 1_000_000);
            }
        }
    }

    #[test]
    fn a_silent_peer_is_declared_down_after_the_detection_time_and_not_before(
        tx in 10u64..2_000,
        rx in 10u64..2_000,
        our_mult in 1u8..=255,
        desired in 1_000u32..2_000_000,
        required in 1_000u32..2_000_000,
        mult in 1u8..=10,
        seed: u64,
    ) {
        let start = Instant::now();
        let ours = timers(tx, rx, our_mult);
        let (mut s, keepalive) = up_against(ours, (desired, required, mult), seed, start);
        // The peer keeps talking for a while, then stops at `last`.
        let last = start + Duration::from_millis(10);
        s.receive(last, &keepalive);
        let detect = s.detection_time().unwrap();
        let down_at = last + detect;
        loop {
            let d = s.next_deadline().unwrap();
            let out = s.on_timer(d);
            if d < down_at {
                prop_assert_eq!(s.state(), State::Up, "down early at {:?} of {:?}", d - last, detect);
                prop_assert!(changes(&out).is_empty());
            } else {
                prop_assert_eq!(d, down_at);
                prop_assert_eq!(
                    changes(&out),
                    vec![(State::Up, State::Down, Diag::ControlDetectionTimeExpired)]
                );
                break;
            }
        }
    }

    #[test]
    fn arbitrary_packets_never_panic_nor_wake_us_in_the_past(
        packets in proptest::collection::vec(
            (0usize..4, any::<bool>(), any::<bool>(), any::<bool>(), 1u8..=255, any::<u32>(), any::<u32>(), 0u32..3_000_000),
            0..40,
        ),
        seed: u64,
    ) {
        let mut t = Instant::now();
        let mut s = Session::new(config(), local(), seed, t);
        for (state, poll, final_, demand, detect_mult, desired, required, wait) in packets {
            t += micros(wait);
            while let Some(d) = s.next_deadline().filter(|d| *d <= t) {
                s.on_timer(d);
                prop_assert!(s.next_deadline().is_none_or(|n| n > d));
            }
            let p = Packet {
                state: State::ALL[state],
                poll,
                final_,
                demand,
                detect_mult,
                desired_min_tx_us: desired,
                required_min_rx_us: required,
                ..peer(State::ALL[state])
            };
            for packet in sent(&s.receive(t, &p)) {
                prop_assert!(!(packet.poll && packet.final_), "P and F together");
            }
        }
    }
}
