//! Timers: keepalive cadence, hold expiry, connect retry back-off and restart.

use super::open::open_refusal;
use super::*;

#[test]
fn keepalives_are_sent_every_keepalive_interval() {
    let now = t0();
    let mut s = session();
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    assert_eq!(s.next_deadline(), Some(now + secs(30)));
    assert!(s.on_timer(now + secs(29)).is_empty());
    for i in 1..=2 {
        let at = now + secs(30 * i);
        assert_eq!(s.next_deadline(), Some(at));
        let out = s.on_timer(at);
        assert_eq!(out, vec![Action::Send(id, wire::encode_keepalive())]);
        s.receive(at, id, &wire::encode_keepalive());
    }
}

#[test]
fn sending_an_update_restarts_the_keepalive_timer() {
    let now = t0();
    let mut s = session();
    establish(&mut s, now, &PeerOpen::new());
    s.set_routes(now + secs(20), routes(&["192.0.2.1/32"]));
    assert_eq!(s.next_deadline(), Some(now + secs(50)));
}

#[test]
fn zero_hold_time_means_no_keepalives_and_no_hold_timer() {
    let now = t0();
    let mut s = session();
    let peer = PeerOpen {
        hold: 0,
        ..PeerOpen::new()
    };
    establish(&mut s, now, &peer);
    assert_eq!(s.next_deadline(), None);
    assert!(s.on_timer(now + secs(100_000)).is_empty());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn hold_timer_expiry_sends_4_0_and_goes_down() {
    let now = t0();
    let mut s = session();
    s.set_routes(now, routes(&["192.0.2.1/32"]));
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    s.on_timer(now + secs(30));
    s.on_timer(now + secs(60));
    let out = s.on_timer(now + secs(90));
    assert_eq!(notifications(&out), vec![(4, 0)]);
    assert!(out.contains(&Action::Close(id)));
    assert!(matches!(out.last(), Some(Action::Down(_))));
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.prefixes_announced(), 0, "the peer dropped our routes");
    assert_eq!(s.counters().notifications_sent.get(&(4, 0)), Some(&1));
}

#[test]
fn a_keepalive_from_the_peer_restarts_the_hold_timer() {
    let now = t0();
    let mut s = session();
    let (id, _) = establish(&mut s, now, &PeerOpen::new());
    s.on_timer(now + secs(30));
    s.receive(now + secs(60), id, &wire::encode_keepalive());
    s.on_timer(now + secs(60));
    assert!(notifications(&s.on_timer(now + secs(90))).is_empty());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn the_peer_waiting_for_our_open_times_out_after_4_minutes() {
    let now = t0();
    let mut s = session();
    dial(&mut s, now);
    assert_eq!(s.next_deadline(), Some(now + secs(240)));
    assert_eq!(notifications(&s.on_timer(now + secs(240))), vec![(4, 0)]);
}

#[test]
fn connect_retry_backs_off_exponentially_with_bounded_jitter_up_to_the_cap() {
    let now = t0();
    let mut s = session();
    let mut at = now;
    let out = s.start(at);
    let mut id = match out.as_slice() {
        [Action::Connect(id)] => *id,
        other => panic!("{other:?}"),
    };
    let mut delays = Vec::new();
    for _ in 0..12 {
        s.connect_failed(at, id);
        assert_eq!(s.state(), State::Active);
        let next = s.next_deadline().unwrap();
        delays.push(next - at);
        at = next;
        let out = s.on_timer(at);
        id = match out.as_slice() {
            [Action::Connect(id)] => *id,
            other => panic!("{other:?}"),
        };
    }
    // After the i-th failure in a row: 2^i s, capped at 60 s, times a jitter in [0.75, 1].
    for (i, d) in delays.iter().enumerate() {
        let base = secs(1u64 << i.min(6)).min(DEFAULT_CONNECT_RETRY_MAX);
        assert!(
            *d <= base && *d >= base * 3 / 4,
            "delay {i}: {d:?} not in [0.75, 1] × {base:?}"
        );
    }
    assert!(delays.iter().all(|d| *d <= DEFAULT_CONNECT_RETRY_MAX));
}

#[test]
fn a_dial_that_does_not_finish_in_time_is_abandoned_and_retried() {
    let now = t0();
    let mut s = session();
    let first = match s.start(now).as_slice() {
        [Action::Connect(id)] => *id,
        other => panic!("{other:?}"),
    };
    let at = s.next_deadline().unwrap();
    let out = s.on_timer(at);
    assert!(matches!(out.as_slice(), [Action::Close(c), Action::Connect(_)] if *c == first));
}

#[test]
fn the_same_seed_gives_the_same_delays() {
    let backoff = |seed| {
        let mut b = crate::bgp::config::Backoff::new(secs(1), secs(60), seed);
        (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
    };
    assert_eq!(backoff(3), backoff(3));
    assert_ne!(backoff(3), backoff(4));
}

#[test]
fn a_session_that_flaps_soon_after_established_keeps_backing_off() {
    let now = t0();
    let mut s = session();
    let mut at = now;
    let mut last = Duration::ZERO;
    for round in 0..4 {
        let (id, _) = if round == 0 {
            establish(&mut s, at, &PeerOpen::new())
        } else {
            at = s.next_deadline().unwrap();
            let out = s.on_timer(at);
            let Some(Action::Connect(id)) = out.last().cloned() else {
                panic!("{out:?}");
            };
            s.connected(at, id);
            s.receive(at, id, &PeerOpen::new().bytes());
            s.receive(at, id, &wire::encode_keepalive());
            (id, out)
        };
        s.closed(at + secs(1), id);
        let delay = s.next_deadline().unwrap() - (at + secs(1));
        assert!(delay >= last, "round {round}: {delay:?} < {last:?}");
        last = delay;
    }
    assert!(last >= secs(6), "backed off to {last:?}");
}

#[test]
fn idle_after_an_error_refuses_connections_until_the_restart_timer() {
    let now = t0();
    let (mut s, _) = open_refusal(
        config(),
        &PeerOpen {
            asn: 1,
            ..PeerOpen::new()
        },
    );
    let (id, out) = s.accept(now);
    assert_eq!(out, vec![Action::Close(id)]);
    let at = s.next_deadline().unwrap();
    assert!(matches!(s.on_timer(at).as_slice(), [Action::Connect(_)]));
}
