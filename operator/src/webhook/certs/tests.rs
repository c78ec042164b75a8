//! The certificates: what [`issue`] makes (checked with the verifier a TLS client uses), and
//! the renewal [`plan`] as a table of rules plus a walk of a whole life at arbitrary wake-ups.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};

use super::*;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const MINUTE: Duration = Duration::from_secs(60);
/// Seconds since the epoch of every test's time 0 (in 2027).
const T0: i64 = 1_800_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).unwrap()
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap()
}

fn names() -> Vec<String> {
    service_dns_names("ferrolb-operator-webhook", "ferrolb-system")
}

// --- issue ---------------------------------------------------------------------------------

/// A verifier trusting every CA of a PEM bundle.
fn verifier(bundle: &str) -> Arc<WebPkiServerVerifier> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    assert!(!roots.is_empty());
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap()
}

/// Verifies `pair`'s certificate as a TLS client trusting only the CAs of `bundle` would, for
/// `name`, at `seconds` after T0.
fn verify(pair: &Pair, bundle: &str, name: &str, seconds: i64) -> Result<(), rustls::Error> {
    let leaf = CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let now = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(T0 + seconds).unwrap()));
    verifier(bundle)
        .verify_server_cert(&leaf, &[], &name, &[], now)
        .map(|_| ())
}

#[test]
fn an_issued_certificate_is_valid_for_every_name_of_the_service_under_its_own_ca() {
    let pair = issue(&names(), at(0), YEAR).unwrap();
    for name in names() {
        assert_eq!(verify(&pair, &pair.ca, &name, 0), Ok(()), "{name}");
    }
}

#[test]
fn an_issued_certificate_is_not_valid_for_another_name() {
    let pair = issue(&names(), at(0), YEAR).unwrap();
    for name in [
        "ferrolb-operator-webhook.default.svc",
        "other.ferrolb-system.svc",
        "kubernetes.default.svc",
    ] {
        let err = verify(&pair, &pair.ca, name, 0).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn an_issued_certificate_is_not_trusted_under_another_pairs_ca() {
    let pair = issue(&names(), at(0), YEAR).unwrap();
    let other = issue(&names(), at(0), YEAR).unwrap();
    assert_ne!(pair.ca, other.ca, "each pair has its own CA");
    let err = verify(&pair, &other.ca, &names()[0], 0).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        ),
        "{err:?}"
    );
}

#[test]
fn an_issued_certificate_is_valid_from_a_minute_before_now_for_the_lifetime() {
    let lifetime = Duration::from_secs(3600);
    let pair = issue(&names(), at(0), lifetime).unwrap();
    assert_eq!(pair.not_after, at(3600));
    let name = &names()[0];
    // (seconds after issuing, valid)
    for (seconds, valid) in [
        (-61, false),
        (-59, true),
        (0, true),
        (3599, true),
        (3601, false),
    ] {
        assert_eq!(
            verify(&pair, &pair.ca, name, seconds).is_ok(),
            valid,
            "at {seconds} s: {:?}",
            verify(&pair, &pair.ca, name, seconds)
        );
    }
}

#[test]
fn an_issued_key_is_a_private_key_matching_the_certificate() {
    let pair = issue(&names(), at(0), YEAR).unwrap();
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap()];
    assert_eq!(
        rustls::sign::CertifiedKey::new(chain, signing).keys_match(),
        Ok(())
    );
}

#[test]
fn the_debug_of_a_pair_shows_no_key() {
    let pair = issue(&names(), at(0), YEAR).unwrap();
    let debug = format!("{pair:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    for line in pair.key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line), "{debug}");
    }
    assert!(debug.contains("not_after"), "{debug}");
}

#[test]
fn during_a_renewal_the_trust_bundle_verifies_the_certificates_served_before_and_after() {
    // Made in the same second, the worst case: their CAs have the same name.
    for (a_at, b_at) in [(0, 0), (0, 21_024_000)] {
        let a = issue(&names(), at(a_at), YEAR).unwrap();
        let b = issue(&names(), at(b_at), YEAR).unwrap();
        for (phase, stored) in [
            ("trusting-next", trusting_next(&a, &b, at(b_at))),
            ("dropping-previous", dropping_previous(&a, &b, at(b_at))),
        ] {
            let bundle = String::from_utf8(trust_bundle(&stored.data)).unwrap();
            for (which, served) in [("a", &a), ("b", &b)] {
                assert_eq!(
                    verify(served, &bundle, &names()[0], b_at),
                    Ok(()),
                    "{phase}, issued at {a_at} and {b_at}: {which}"
                );
            }
        }
    }
}

// --- plan: the states of a renewal, written out ---------------------------------------------

/// A fake pair: the planner never parses PEM. `cert-N` is signed by `ca-N`.
fn pair(n: i64, not_after: Timestamp) -> Pair {
    Pair {
        cert: format!("cert-{n}"),
        key: format!("key-{n}"),
        ca: format!("ca-{n}"),
        not_after,
    }
}

/// The CA that signed a fake certificate.
fn ca_of(cert: &[u8]) -> String {
    String::from_utf8(cert.to_vec())
        .unwrap()
        .replace("cert-", "ca-")
}

fn stored(data: &[(&str, &str)], annotations: &[(&str, String)]) -> Stored {
    Stored {
        data: data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

/// Phase serving: `current` served, its CA trusted.
fn serving(current: &Pair, since: Timestamp) -> Stored {
    stored(
        &[
            (TLS_CRT, &current.cert),
            (TLS_KEY, &current.key),
            (CA_CRT, &current.ca),
        ],
        &[
            (NOT_AFTER, current.not_after.to_string()),
            (DNS_NAMES, names().join(",")),
            (PHASE, "serving".to_owned()),
            (SINCE, since.to_string()),
        ],
    )
}

/// Phase trusting-next: `current` served, `next` waiting, both CAs trusted.
fn trusting_next(current: &Pair, next: &Pair, since: Timestamp) -> Stored {
    stored(
        &[
            (TLS_CRT, &current.cert),
            (TLS_KEY, &current.key),
            (CA_CRT, &current.ca),
            (NEXT_TLS_CRT, &next.cert),
            (NEXT_TLS_KEY, &next.key),
            (NEXT_CA_CRT, &next.ca),
        ],
        &[
            (NOT_AFTER, current.not_after.to_string()),
            (NEXT_NOT_AFTER, next.not_after.to_string()),
            (DNS_NAMES, names().join(",")),
            (PHASE, "trusting-next".to_owned()),
            (SINCE, since.to_string()),
        ],
    )
}

/// Phase dropping-previous: `current` served, its CA and `previous`'s trusted.
fn dropping_previous(previous: &Pair, current: &Pair, since: Timestamp) -> Stored {
    stored(
        &[
            (TLS_CRT, &current.cert),
            (TLS_KEY, &current.key),
            (CA_CRT, &current.ca),
            (PREVIOUS_CA_CRT, &previous.ca),
        ],
        &[
            (NOT_AFTER, current.not_after.to_string()),
            (DNS_NAMES, names().join(",")),
            (PHASE, "dropping-previous".to_owned()),
            (SINCE, since.to_string()),
        ],
    )
}

fn without(mut s: Stored, keys: &[&str]) -> Stored {
    for key in keys {
        s.data.remove(*key);
        s.annotations.remove(*key);
    }
    s
}

fn with(mut s: Stored, key: &str, value: &str) -> Stored {
    if s.data.contains_key(key) {
        s.data.insert(key.to_owned(), value.as_bytes().to_vec());
    } else {
        s.annotations.insert(key.to_owned(), value.to_owned());
    }
    s
}

/// The CAs `trust_bundle` puts in the caBundle.
fn trusted(s: &Stored) -> BTreeSet<String> {
    String::from_utf8(trust_bundle(&s.data))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The caBundle the leader has injected for `stored` (it injects after every write).
fn bundle_of(stored: Option<&Stored>) -> Vec<u8> {
    stored.map(|s| trust_bundle(&s.data)).unwrap_or_default()
}

/// Plans with an `issue` that records whether it was called and makes `made`.
fn plan_recording(
    from: Option<&Stored>,
    now: Timestamp,
    lifetime: Duration,
    made: &Pair,
) -> (Plan, bool) {
    let called = Cell::new(false);
    let plan = plan(from, &bundle_of(from), &names(), now, lifetime, || {
        called.set(true);
        Ok::<_, String>(made.clone())
    })
    .unwrap();
    (plan, called.get())
}

fn wait(seconds: i64) -> Plan {
    Plan::Wait(Duration::from_secs(u64::try_from(seconds).unwrap()))
}

/// One whole life with a one-year lifetime: each row plans from the state the previous write
/// left, at a time (seconds after T0); `issue` makes the row's pair, and must be called exactly
/// when the row says a pair is made.
#[test]
fn a_certificate_is_renewed_in_three_phases_one_step_apart() {
    let life = secs(YEAR);
    let step = secs(step(YEAR));
    assert_eq!(step, 300);
    let renew = life - life / 3; // two thirds in
    let a = pair(1, at(life));
    let b = pair(2, at(renew + life));
    let c = pair(3, at(renew + renew + life));

    let s0 = serving(&a, at(0));
    let s1 = trusting_next(&a, &b, at(renew));
    let s2 = dropping_previous(&a, &b, at(renew + step));
    let s3 = serving(&b, at(renew + 2 * step));
    let s4 = trusting_next(&b, &c, at(renew + renew));

    // (what happens, plan from, at, pair made (None: issue not called), plan)
    #[allow(clippy::type_complexity)]
    let rows: Vec<(&str, Option<&Stored>, i64, Option<&Pair>, Plan)> = vec![
        (
            "no Secret: a fresh pair, serving",
            None,
            0,
            Some(&a),
            Plan::Write(s0.clone()),
        ),
        (
            "just written: wait for the renewal",
            Some(&s0),
            0,
            None,
            wait(renew),
        ),
        (
            "a second before the renewal: still waiting",
            Some(&s0),
            renew - 1,
            None,
            wait(1),
        ),
        (
            "a third of the lifetime left: trust the next CA",
            Some(&s0),
            renew,
            Some(&b),
            Plan::Write(s1.clone()),
        ),
        (
            "just written: wait a step",
            Some(&s1),
            renew,
            None,
            wait(step),
        ),
        (
            "a second before the step: still waiting",
            Some(&s1),
            renew + step - 1,
            None,
            wait(1),
        ),
        (
            "a step later: serve the next pair",
            Some(&s1),
            renew + step,
            None,
            Plan::Write(s2.clone()),
        ),
        (
            "just written: wait a step",
            Some(&s2),
            renew + step,
            None,
            wait(step),
        ),
        (
            "a step later: drop the previous CA",
            Some(&s2),
            renew + 2 * step,
            None,
            Plan::Write(s3.clone()),
        ),
        (
            "serving again: wait for the next renewal",
            Some(&s3),
            renew + 2 * step,
            None,
            wait(renew - 2 * step),
        ),
        (
            "and the next renewal comes",
            Some(&s3),
            renew + renew,
            Some(&c),
            Plan::Write(s4),
        ),
    ];
    for (what, from, seconds, made, expected) in rows {
        let placeholder = pair(99, at(0));
        let (plan, called) = plan_recording(from, at(seconds), YEAR, made.unwrap_or(&placeholder));
        assert_eq!(plan, expected, "{what}");
        assert_eq!(called, made.is_some(), "{what}: issue called");
    }
}

/// One row per rule: the Secret, the time, the lifetime; whether a pair is made (the new pair
/// `new`, valid for the lifetime from the row's time) and the plan.
#[test]
fn every_plan_rule() {
    let a = pair(1, at(secs(YEAR)));
    let b = pair(2, at(21_100_000 + secs(YEAR)));
    let s = serving(&a, at(0));
    let tn = trusting_next(&a, &b, at(21_100_000));
    let new_at = |seconds: i64, lifetime: Duration| pair(9, at(seconds + secs(lifetime)));
    let fresh_at = |seconds: i64, lifetime: Duration| {
        Plan::Write(serving(&new_at(seconds, lifetime), at(seconds)))
    };

    #[allow(clippy::type_complexity)]
    let rows: Vec<(&str, Stored, i64, Duration, bool, Plan)> = vec![
        (
            "a Secret for other DNS names gets a fresh pair",
            with(s.clone(), DNS_NAMES, "ferrolb-operator-webhook.other.svc"),
            1000,
            YEAR,
            true,
            fresh_at(1000, YEAR),
        ),
        (
            "a pair at its expiry gets a fresh one",
            s.clone(),
            secs(YEAR),
            YEAR,
            true,
            fresh_at(secs(YEAR), YEAR),
        ),
        (
            "a pair past its expiry gets a fresh one",
            s.clone(),
            secs(YEAR) + 1,
            YEAR,
            true,
            fresh_at(secs(YEAR) + 1, YEAR),
        ),
        (
            "a Secret without tls.key gets a fresh pair",
            without(s.clone(), &[TLS_KEY]),
            1000,
            YEAR,
            true,
            fresh_at(1000, YEAR),
        ),
        (
            "an empty tls.crt counts as none",
            with(s.clone(), TLS_CRT, ""),
            1000,
            YEAR,
            true,
            fresh_at(1000, YEAR),
        ),
        (
            "a Secret without ca.crt gets a fresh pair",
            without(s.clone(), &[CA_CRT]),
            1000,
            YEAR,
            true,
            fresh_at(1000, YEAR),
        ),
        (
            "an unreadable expiry gets a fresh pair",
            with(s.clone(), NOT_AFTER, "soon"),
            1000,
            YEAR,
            true,
            fresh_at(1000, YEAR),
        ),
        (
            "a pair expiring in the middle of a renewal gets a fresh one",
            tn.clone(),
            secs(YEAR),
            YEAR,
            true,
            fresh_at(secs(YEAR), YEAR),
        ),
        (
            "no phase annotation: the same contents, the phase's clock started now",
            without(s.clone(), &[PHASE]),
            1000,
            YEAR,
            false,
            Plan::Write(serving(&a, at(1000))),
        ),
        (
            "a phase annotation naming another phase: restamped with the phase the entries show",
            with(tn.clone(), PHASE, "serving"),
            21_100_100,
            YEAR,
            false,
            Plan::Write(trusting_next(&a, &b, at(21_100_100))),
        ),
        (
            "an unknown phase name: restamped",
            with(s.clone(), PHASE, "rotating"),
            1000,
            YEAR,
            false,
            Plan::Write(serving(&a, at(1000))),
        ),
        (
            "an unreadable phase start: restamped",
            with(tn.clone(), SINCE, "yesterday"),
            21_100_100,
            YEAR,
            false,
            Plan::Write(trusting_next(&a, &b, at(21_100_100))),
        ),
        (
            "a pair outliving a shortened lifetime starts a renewal at once",
            s.clone(),
            1000,
            MINUTE,
            true,
            Plan::Write(trusting_next(&a, &new_at(1000, MINUTE), at(1000))),
        ),
        (
            "a pair outliving the lifetime by less than a minute of clock skew waits",
            serving(&pair(1, at(1000 + secs(YEAR) + 59)), at(1000)),
            1000,
            YEAR,
            false,
            wait(secs(YEAR) + 59 - secs(YEAR) / 3),
        ),
        (
            "a pair outliving the lifetime by more than a minute starts a renewal",
            serving(&pair(1, at(1000 + secs(YEAR) + 61)), at(1000)),
            1000,
            YEAR,
            true,
            Plan::Write(trusting_next(
                &pair(1, at(1000 + secs(YEAR) + 61)),
                &new_at(1000, YEAR),
                at(1000),
            )),
        ),
        (
            "trusting-next without the next expiry goes back to serving",
            without(tn.clone(), &[NEXT_NOT_AFTER]),
            21_100_100,
            YEAR,
            false,
            Plan::Write(serving(&a, at(21_100_100))),
        ),
        (
            "trusting-next with an expired next pair goes back to serving",
            with(tn.clone(), NEXT_NOT_AFTER, &at(21_100_000).to_string()),
            21_100_100,
            YEAR,
            false,
            Plan::Write(serving(&a, at(21_100_100))),
        ),
        (
            "trusting-next without next-tls.key goes back to serving",
            without(tn.clone(), &[NEXT_TLS_KEY]),
            21_100_100,
            YEAR,
            false,
            Plan::Write(serving(&a, at(21_100_100))),
        ),
        (
            "trusting-next without next-ca.crt goes back to serving",
            without(tn.clone(), &[NEXT_CA_CRT]),
            21_100_100,
            YEAR,
            false,
            Plan::Write(serving(&a, at(21_100_100))),
        ),
        (
            "back in serving after a dropped next pair, the renewal starts again",
            serving(&a, at(21_100_100)),
            21_100_100,
            YEAR,
            true,
            Plan::Write(trusting_next(&a, &new_at(21_100_100, YEAR), at(21_100_100))),
        ),
    ];
    for (rule, from, seconds, lifetime, makes, expected) in rows {
        let (plan, called) = plan_recording(
            Some(&from),
            at(seconds),
            lifetime,
            &new_at(seconds, lifetime),
        );
        assert_eq!(plan, expected, "{rule}");
        assert_eq!(called, makes, "{rule}: issue called");
    }
}

#[test]
fn trusting_next_with_an_empty_next_certificate_goes_back_to_serving() {
    let a = pair(1, at(secs(YEAR)));
    let b = pair(2, at(21_100_000 + secs(YEAR)));
    let from = with(trusting_next(&a, &b, at(21_100_000)), NEXT_TLS_CRT, "");
    for seconds in [21_100_100, 21_100_000 + secs(step(YEAR))] {
        let (plan, called) = plan_recording(Some(&from), at(seconds), YEAR, &pair(9, at(0)));
        assert_eq!(plan, Plan::Write(serving(&a, at(seconds))), "at {seconds}");
        assert!(!called);
    }
}

#[test]
fn a_failure_to_issue_is_the_plans_error() {
    let a = pair(1, at(secs(YEAR)));
    for (what, from) in [("no Secret", None), ("a renewal", Some(serving(&a, at(0))))] {
        let plan = plan(
            from.as_ref(),
            &bundle_of(from.as_ref()),
            &names(),
            at(secs(YEAR) - 1),
            YEAR,
            || Err("no entropy"),
        );
        assert_eq!(plan, Err("no entropy"), "{what}");
    }
}

#[test]
fn a_step_is_a_twelfth_of_the_lifetime_between_one_second_and_five_minutes() {
    // (lifetime, step), seconds
    for (lifetime, expected) in [
        (0, 1),
        (6, 1),
        (12, 1),
        (24, 2),
        (60, 5),
        (720, 60),
        (3600, 300),
        (3601, 300),
        (secs(YEAR), 300),
    ] {
        let lifetime = Duration::from_secs(u64::try_from(lifetime).unwrap());
        assert_eq!(
            step(lifetime),
            Duration::from_secs(expected),
            "lifetime {lifetime:?}"
        );
    }
}

#[test]
fn the_trust_bundle_is_the_current_next_and_previous_ca_one_per_line() {
    // (entries, bundle)
    for (data, expected) in [
        (vec![(CA_CRT, "A\n")], "A\n"),
        (vec![(CA_CRT, "A")], "A\n"),
        (vec![(CA_CRT, "A"), (NEXT_CA_CRT, "B\n")], "A\nB\n"),
        (vec![(PREVIOUS_CA_CRT, "A"), (CA_CRT, "B")], "B\nA\n"),
        (vec![(CA_CRT, "A"), (NEXT_CA_CRT, "")], "A\n"),
        (vec![(TLS_CRT, "cert"), (TLS_KEY, "key")], ""),
    ] {
        let data = data
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(String::from_utf8(trust_bundle(&data)).unwrap(), expected);
    }
}

#[test]
fn the_service_is_named_as_the_api_server_may_name_it() {
    assert_eq!(
        names(),
        [
            "ferrolb-operator-webhook.ferrolb-system.svc",
            "ferrolb-operator-webhook.ferrolb-system.svc.cluster.local",
            "ferrolb-operator-webhook.ferrolb-system",
            "ferrolb-operator-webhook",
        ]
    );
}

// --- plan: a whole life at arbitrary wake-ups ------------------------------------------------

fn phase_of(s: &Stored) -> String {
    s.annotations.get(PHASE).cloned().unwrap_or_default()
}

proptest! {
    /// The leader plans at arbitrary times no later than the planner asked (watch events,
    /// rechecks, leader changes: the planner remembers nothing but the Secret), and after every
    /// write plans again at once. Replicas serve the `tls.crt` of the Secret before a write or
    /// after it (they follow the watch), and the API server trusts the caBundle of either
    /// (it follows the leader's injection). So across every write, both served certificates are
    /// trusted by both bundles; the served certificate never expires, so no fresh pair is made
    /// after the first; the phases follow each other in order, a step apart at least; and a
    /// write is never followed by another at the same time (a restart right after it has
    /// nothing to do), the same Secret at the same time giving the same plan.
    #[test]
    fn what_replicas_may_serve_is_always_trusted(
        lifetime in prop::sample::select(vec![6u64, 60, 3600, 86_400, 365 * 86_400]),
        wakes in prop::collection::vec(0i64..=1000, 1..120),
    ) {
        let lifetime = Duration::from_secs(lifetime);
        let step = secs(step(lifetime));
        let issue_at = |t: i64| move || Ok::<_, String>(pair(t, at(t + secs(lifetime))));
        let mut now = 0;
        let mut current: Option<Stored> = None;
        let mut phase_since = 0;
        let mut promotions = 0;
        for permille in wakes {
            if let Some(current) = &current {
                prop_assert!(now < time_of(current, NOT_AFTER), "the served certificate expired at {}", now);
            }
            let first = plan(current.as_ref(), &bundle_of(current.as_ref()), &names(), at(now), lifetime, issue_at(now)).unwrap();
            let again = plan(current.as_ref(), &bundle_of(current.as_ref()), &names(), at(now), lifetime, issue_at(now)).unwrap();
            prop_assert_eq!(&first, &again, "the same Secret at the same time, the same plan");
            let wait = match first {
                Plan::Write(next) => {
                    if let Some(previous) = &current {
                        let served_before = ca_of(&previous.data[TLS_CRT]);
                        let served_after = ca_of(&next.data[TLS_CRT]);
                        for (name, bundle) in [("before", trusted(previous)), ("after", trusted(&next))] {
                            prop_assert!(bundle.contains(&served_before), "{} misses {}", name, served_before);
                            prop_assert!(bundle.contains(&served_after), "{} misses {}", name, served_after);
                        }
                        let order = (phase_of(previous), phase_of(&next));
                        prop_assert!(
                            matches!(
                                (order.0.as_str(), order.1.as_str()),
                                ("serving", "trusting-next")
                                    | ("trusting-next", "dropping-previous")
                                    | ("dropping-previous", "serving")
                            ),
                            "{:?}",
                            order
                        );
                        if order.0 != "serving" {
                            prop_assert!(now - phase_since >= step, "{:?} after {} s", order, now - phase_since);
                        }
                        if order.1 == "dropping-previous" {
                            promotions += 1;
                        }
                    }
                    phase_since = now;
                    current = Some(next);
                    let after = plan(current.as_ref(), &bundle_of(current.as_ref()), &names(), at(now), lifetime, || -> Result<Pair, String> {
                        panic!("a pair made right after a write")
                    })
                    .unwrap();
                    match after {
                        Plan::Wait(wait) => wait,
                        Plan::Write(s) => {
                            return Err(TestCaseError::fail(format!("a second write at once: {s:?}")));
                        }
                    }
                }
                Plan::Wait(wait) => wait,
            };
            prop_assert!(wait > Duration::ZERO);
            // Early by any fraction, but a second at least (the times are whole seconds).
            let wait = secs(wait);
            let planned_at = now;
            now += ((wait * permille + 999) / 1000).clamp(1, wait);
            // A walk past the first pair's expiry has served another one.
            if planned_at >= secs(lifetime) {
                prop_assert!(promotions >= 1);
            }
        }
    }
}

fn time_of(s: &Stored, key: &str) -> i64 {
    s.annotations[key].parse::<Timestamp>().unwrap().as_second() - T0
}

/// The next pair is served only once the API server trusts its CA, and the previous CA is
/// dropped only once the current one is trusted: a caBundle whose update was refused holds the
/// renewal where it is, however long the step is past.
#[test]
fn a_phase_waits_for_the_ca_bundle_to_hold_what_it_serves() {
    let lifetime = Duration::from_secs(60);
    let step = step(lifetime);
    let first = pair(0, at(60));
    let Plan::Write(serving) = plan(None, &[], &names(), at(0), lifetime, || {
        Ok::<_, String>(first.clone())
    })
    .unwrap() else {
        panic!("no fresh pair")
    };
    let second = pair(40, at(100));
    let Plan::Write(trusting) = plan(
        Some(&serving),
        &bundle_of(Some(&serving)),
        &names(),
        at(40),
        lifetime,
        || Ok::<_, String>(second.clone()),
    )
    .unwrap() else {
        panic!("no renewal")
    };
    let late = at(40 + 3 * secs(step));
    let stale = bundle_of(Some(&serving));
    let never = || -> Result<Pair, String> { panic!("no pair is made") };
    assert_eq!(
        plan(Some(&trusting), &stale, &names(), late, lifetime, never).unwrap(),
        Plan::Wait(step),
        "the next CA is not trusted yet: keep serving the current pair"
    );
    let Plan::Write(promoted) = plan(
        Some(&trusting),
        &bundle_of(Some(&trusting)),
        &names(),
        late,
        lifetime,
        never,
    )
    .unwrap() else {
        panic!("not promoted once trusted")
    };
    let later = at(40 + 5 * secs(step));
    assert_eq!(
        plan(Some(&promoted), &stale, &names(), later, lifetime, never).unwrap(),
        Plan::Wait(step),
        "the served CA is not trusted: keep the previous one trusted too"
    );
}

/// A phase stamped in the future (a leader whose clock ran ahead) starts over now instead of
/// stalling until that clock is reached.
#[test]
fn a_phase_stamped_in_the_future_starts_over_now() {
    let lifetime = Duration::from_secs(60);
    let first = pair(0, at(60));
    let Plan::Write(mut serving) = plan(None, &[], &names(), at(0), lifetime, || {
        Ok::<_, String>(first.clone())
    })
    .unwrap() else {
        panic!("no fresh pair")
    };
    serving
        .annotations
        .insert(SINCE.to_owned(), at(3600).to_string());
    let Plan::Write(restamped) = plan(
        Some(&serving),
        &bundle_of(Some(&serving)),
        &names(),
        at(10),
        lifetime,
        || -> Result<Pair, String> { panic!("no pair is made") },
    )
    .unwrap() else {
        panic!("not restamped")
    };
    assert_eq!(restamped.annotations[SINCE], at(10).to_string());
    assert_eq!(restamped.data, serving.data);
}
