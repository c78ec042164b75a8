use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

use super::*;

const STEP: Duration = Duration::from_secs(120);
const T0: i64 = 1_800_000_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_millisecond(T0 + seconds * 1000).unwrap()
}

fn secret(data: &[(&str, &str)], annotations: &[(&str, &str)]) -> SecretState {
    SecretState {
        data: data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn since(seconds: i64) -> String {
    at(seconds).to_string()
}

fn write(
    data: &[(&str, &str)],
    annotations: &[(&str, &str)],
    transition: Transition,
    requeue: Option<Duration>,
) -> Decision {
    Decision::Write {
        secret: secret(data, annotations),
        transition,
        requeue,
    }
}

/// One row per rule: the request, the Secret, the time (seconds after T0); the decision.
#[test]
fn every_rotation_rule() {
    let s0 = since(0);
    let s100 = since(100);
    let s130 = since(130);
    let s400 = since(400);
    let accepting = Phase::AcceptingNewKey.name();
    let sending = Phase::SendingNewKey.name();
    let done = Phase::Done.name();
    #[allow(clippy::type_complexity)]
    let rows: Vec<(&str, Option<&str>, SecretState, i64, Decision)> = vec![
        (
            "no request, no rotation: nothing to do",
            None,
            secret(&[("key", "A")], &[]),
            0,
            Decision::Idle,
        ),
        (
            "a blank request is no request",
            Some(" "),
            secret(&[("key", "A")], &[]),
            0,
            Decision::Idle,
        ),
        (
            "the request already served rotates nothing",
            Some("r1"),
            secret(
                &[("key", "A")],
                &[(REQUEST, "r1"), (PHASE, done), (SINCE, &s0)],
            ),
            500,
            Decision::Idle,
        ),
        (
            "a new request begins: the new key is only accepted",
            Some("r2"),
            secret(&[("key", "A")], &[(REQUEST, "r1")]),
            130,
            write(
                &[("key", "A"), ("next", "NEW")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s130)],
                Transition::Begin,
                Some(STEP),
            ),
        ),
        (
            "a Secret never rotated (no request recorded) begins too",
            Some("r1"),
            secret(&[("key", "A")], &[]),
            130,
            write(
                &[("key", "A"), ("next", "NEW")],
                &[(REQUEST, "r1"), (PHASE, accepting), (SINCE, &s130)],
                Transition::Begin,
                Some(STEP),
            ),
        ),
        (
            "other entries of the Secret are kept",
            Some("r2"),
            secret(&[("key", "A"), ("note", "x")], &[(REQUEST, "r1")]),
            130,
            write(
                &[("key", "A"), ("next", "NEW"), ("note", "x")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s130)],
                Transition::Begin,
                Some(STEP),
            ),
        ),
        (
            "a Secret without a key gets the new key at once",
            Some("r2"),
            secret(&[], &[(REQUEST, "r1")]),
            130,
            write(
                &[("key", "NEW")],
                &[(REQUEST, "r2"), (PHASE, done), (SINCE, &s130)],
                Transition::Replace,
                None,
            ),
        ),
        (
            "a blank key is no key",
            Some("r2"),
            secret(&[("key", "\n")], &[]),
            130,
            write(
                &[("key", "NEW")],
                &[(REQUEST, "r2"), (PHASE, done), (SINCE, &s130)],
                Transition::Replace,
                None,
            ),
        ),
        (
            "phase 1 waits out its step",
            Some("r2"),
            secret(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s100)],
            ),
            130,
            Decision::Wait {
                phase: Phase::AcceptingNewKey,
                due: Duration::from_secs(90),
            },
        ),
        (
            "phase 1 over: send with the new key, accept the old as previous",
            Some("r2"),
            secret(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s0)],
            ),
            130,
            write(
                &[("key", "B"), ("previous", "A")],
                &[(REQUEST, "r2"), (PHASE, sending), (SINCE, &s130)],
                Transition::Promote,
                Some(STEP),
            ),
        ),
        (
            "phase 1 is over exactly a step after it began",
            None,
            secret(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s0)],
            ),
            120,
            write(
                &[("key", "B"), ("previous", "A")],
                &[(REQUEST, "r2"), (PHASE, sending), (SINCE, &since(120))],
                Transition::Promote,
                Some(STEP),
            ),
        ),
        (
            "a rotation under way goes on when the request annotation is removed",
            None,
            secret(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s100)],
            ),
            130,
            Decision::Wait {
                phase: Phase::AcceptingNewKey,
                due: Duration::from_secs(90),
            },
        ),
        (
            "a newer request waits for the rotation under way",
            Some("r3"),
            secret(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s100)],
            ),
            130,
            Decision::Wait {
                phase: Phase::AcceptingNewKey,
                due: Duration::from_secs(90),
            },
        ),
        (
            "phase 1 without a start time starts over now",
            Some("r2"),
            secret(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting)],
            ),
            130,
            write(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s130)],
                Transition::RestartClock,
                Some(STEP),
            ),
        ),
        (
            "an unreadable start time starts the phase over",
            Some("r2"),
            secret(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, "yesterday")],
            ),
            130,
            write(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s130)],
                Transition::RestartClock,
                Some(STEP),
            ),
        ),
        (
            "a start time of another phase does not count (next added by hand after a rotation)",
            None,
            secret(
                &[("key", "A"), ("next", "MINE")],
                &[(REQUEST, "r1"), (PHASE, done), (SINCE, &s0)],
            ),
            500,
            write(
                &[("key", "A"), ("next", "MINE")],
                &[(REQUEST, "r1"), (PHASE, accepting), (SINCE, &since(500))],
                Transition::RestartClock,
                Some(STEP),
            ),
        ),
        (
            "a start time in the future waits one step at most",
            Some("r2"),
            secret(
                &[("key", "A"), ("next", "B")],
                &[(REQUEST, "r2"), (PHASE, accepting), (SINCE, &s400)],
            ),
            0,
            Decision::Wait {
                phase: Phase::AcceptingNewKey,
                due: STEP,
            },
        ),
        (
            "phase 2 waits out its step",
            Some("r2"),
            secret(
                &[("key", "B"), ("previous", "A")],
                &[(REQUEST, "r2"), (PHASE, sending), (SINCE, &s100)],
            ),
            219,
            Decision::Wait {
                phase: Phase::SendingNewKey,
                due: Duration::from_secs(1),
            },
        ),
        (
            "phase 2 over: the old key is dropped; nothing more is due",
            Some("r2"),
            secret(
                &[("key", "B"), ("previous", "A")],
                &[(REQUEST, "r2"), (PHASE, sending), (SINCE, &s0)],
            ),
            130,
            write(
                &[("key", "B")],
                &[(REQUEST, "r2"), (PHASE, done), (SINCE, &s130)],
                Transition::Finish,
                None,
            ),
        ),
        (
            "phase 2 over with a newer request waiting: look again soon",
            Some("r3"),
            secret(
                &[("key", "B"), ("previous", "A")],
                &[(REQUEST, "r2"), (PHASE, sending), (SINCE, &s0)],
            ),
            130,
            write(
                &[("key", "B")],
                &[(REQUEST, "r2"), (PHASE, done), (SINCE, &s130)],
                Transition::Finish,
                Some(Duration::from_secs(1)),
            ),
        ),
        (
            "phase 2 without a start time starts over now",
            None,
            secret(&[("key", "B"), ("previous", "A")], &[]),
            130,
            write(
                &[("key", "B"), ("previous", "A")],
                &[(PHASE, sending), (SINCE, &s130)],
                Transition::RestartClock,
                Some(STEP),
            ),
        ),
        (
            "next and previous both (a hand edit): next is promoted, the old previous dropped",
            None,
            secret(
                &[("key", "B"), ("next", "C"), ("previous", "A")],
                &[(PHASE, accepting), (SINCE, &s0)],
            ),
            130,
            write(
                &[("key", "C"), ("previous", "B")],
                &[(PHASE, sending), (SINCE, &s130)],
                Transition::Promote,
                Some(STEP),
            ),
        ),
        (
            "a next key promoted over a blank key leaves no previous",
            None,
            secret(
                &[("key", ""), ("next", "B")],
                &[(PHASE, accepting), (SINCE, &s0)],
            ),
            130,
            write(
                &[("key", "B")],
                &[(PHASE, done), (SINCE, &s130)],
                Transition::Promote,
                None,
            ),
        ),
    ];
    for (rule, request, secret, now, expected) in rows {
        let input = Input {
            request,
            secret: &secret,
            now: at(now),
            step: STEP,
        };
        assert_eq!(decide(input, || Some(b"NEW".to_vec())), expected, "{rule}");
    }
}

#[test]
fn a_key_is_made_only_when_a_rotation_begins() {
    let waiting = secret(
        &[("key", "A"), ("next", "B")],
        &[(PHASE, Phase::AcceptingNewKey.name()), (SINCE, &since(0))],
    );
    for (request, secret) in [
        (None, secret(&[("key", "A")], &[])),
        (Some("r1"), secret(&[("key", "A")], &[(REQUEST, "r1")])),
        (Some("r2"), waiting),
    ] {
        let input = Input {
            request,
            secret: &secret,
            now: at(1),
            step: STEP,
        };
        decide(input, || panic!("no key needed for {secret:?}"));
    }
}

#[test]
fn without_a_random_key_nothing_is_written() {
    let secret = secret(&[("key", "A")], &[]);
    let input = Input {
        request: Some("r1"),
        secret: &secret,
        now: at(0),
        step: STEP,
    };
    assert_eq!(decide(input, || None), Decision::NoKey);
}

#[test]
fn a_created_secret_serves_the_request_on_the_config() {
    assert_eq!(
        created_annotations(Some("r1")),
        BTreeMap::from([(REQUEST.to_owned(), "r1".to_owned())])
    );
    assert!(created_annotations(Some("")).is_empty());
    assert!(created_annotations(None).is_empty());
    let fresh = secret(&[("key", "A")], &[(REQUEST, "r1")]);
    let input = Input {
        request: Some("r1"),
        secret: &fresh,
        now: at(0),
        step: STEP,
    };
    assert_eq!(decide(input, || Some(b"B".to_vec())), Decision::Idle);
}

#[test]
fn the_status_names_the_phase_and_when_the_next_is_due_but_no_key() {
    let s = secret(
        &[("key", "SECRET-A"), ("next", "SECRET-B")],
        &[
            (REQUEST, "2025-06-01"),
            (PHASE, Phase::AcceptingNewKey.name()),
            (SINCE, &since(0)),
        ],
    );
    let text = describe(&s, STEP).unwrap();
    assert!(text.contains("request \"2025-06-01\""), "{text}");
    assert!(text.contains("step 1 of 3"), "{text}");
    assert!(
        text.contains(&format!("next step at {}", at(120))),
        "{text}"
    );
    assert!(!text.contains("SECRET"), "{text}");
    assert_eq!(describe(&secret(&[("key", "A")], &[]), STEP), None);
}

/// The keys a speaker on Secret version `s` sends with, and accepts.
fn send_and_accept(s: &SecretState) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let send = s.entry("key")?.clone();
    let accept = ["key", "next", "previous"]
        .iter()
        .filter_map(|name| s.entry(name).cloned())
        .collect();
    Some((send, accept))
}

fn compatible(a: &SecretState, b: &SecretState) -> bool {
    match (send_and_accept(a), send_and_accept(b)) {
        (Some((send_a, accept_a)), Some((send_b, accept_b))) => {
            accept_a.contains(&send_b) && accept_b.contains(&send_a)
        }
        // A speaker without a key runs no membership: it drops nobody, nobody waits for it.
        _ => true,
    }
}

proptest! {
    /// Reconciles at arbitrary times (watch events, requeues, operator restarts: the decision
    /// keeps no memory) and requests at arbitrary times: any two versions of the Secret that
    /// speakers may hold at once (a version stays in some pod until a step after the next one
    /// is written) agree on the keys (each accepts what the other sends), and the last request
    /// is served in the end with a key never used before.
    #[test]
    fn speakers_never_disagree_and_every_request_is_served(
        events in prop::collection::vec((0u64..300_000, prop::bool::weighted(0.2)), 1..40),
    ) {
        let step_ms = i64::try_from(STEP.as_millis()).unwrap();
        let mut now = T0;
        let mut state = secret(&[("key", "K0")], &[(REQUEST, "r0")]);
        let mut request = "r0".to_owned();
        let mut made = 0;
        // (written at, version), the first one "always".
        let mut versions: Vec<(i64, SecretState)> = vec![(i64::MIN / 2, state.clone())];
        let mut run = |now: i64, request: &str, state: &mut SecretState, versions: &mut Vec<(i64, SecretState)>| {
            let input = Input {
                request: Some(request),
                secret: state,
                now: Timestamp::from_millisecond(now).unwrap(),
                step: STEP,
            };
            let decision = decide(input, || {
                made += 1;
                Some(format!("K{made}").into_bytes())
            });
            if let Decision::Write { secret, .. } = decision {
                if secret.data != state.data {
                    versions.push((now, secret.clone()));
                }
                *state = secret;
            }
        };
        for (i, (advance, new_request)) in events.into_iter().enumerate() {
            now += i64::try_from(advance).unwrap();
            if new_request {
                request = format!("r{}", i + 1);
            }
            run(now, &request, &mut state, &mut versions);
        }
        // Then the operator keeps coming back: it ends served.
        for _ in 0..12 {
            now += step_ms / 2;
            run(now, &request, &mut state, &mut versions);
        }
        prop_assert_eq!(state.phase(), Phase::Done);
        prop_assert_eq!(state.annotations.get(REQUEST), Some(&request));
        if request != "r0" {
            prop_assert_ne!(state.data.get("key"), Some(&b"K0".to_vec()));
        }
        for i in 0..versions.len() {
            let until = versions.get(i + 1).map_or(i64::MAX, |(t, _)| t + step_ms);
            for (t, later) in &versions[i + 1..] {
                if *t < until {
                    prop_assert!(
                        compatible(&versions[i].1, later),
                        "{:?} and {:?} coexist", versions[i].1, later
                    );
                }
            }
        }
    }
}
