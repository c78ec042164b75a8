//! The webhook's self-managed certificates, decided purely: what the Secret holds now, the
//! time and the wanted lifetime in, the next Secret contents (or how long to wait) out.
//!
//! # A fresh authority per certificate, rotated in three phases
//!
//! Each serving certificate comes with its own CA, made together; the CA's key signs that one
//! certificate and is thrown away, so nothing the operator keeps can sign another. The API
//! server trusts the CAs in the ValidatingWebhookConfiguration's `caBundle`, which the leader
//! keeps equal to [`trust_bundle`]. Every replica serves `tls.crt` from the Secret, and picks up
//! a new one from its watch without a restart. A renewal runs in three phases, one
//! [`step`] apart, so the API server trusts every certificate a replica may serve:
//!
//! | phase | Secret entries | caBundle | replicas serve |
//! |---|---|---|---|
//! | serving | `tls.*`, `ca.crt` = A | A | A's |
//! | trusting-next | + `next-tls.*`, `next-ca.crt` = B | A, B | A's |
//! | dropping-previous | `tls.*`, `ca.crt` = B, `previous-ca.crt` = A | A, B | B's |
//! | serving | `tls.*`, `ca.crt` = B | B | B's |
//!
//! A renewal starts when a third of the lifetime is left, or at once when the certificate
//! outlives the wanted lifetime (the flag was shortened). A Secret without a usable pair (none
//! yet, expired, other DNS names, unreadable) gets a fresh pair at once: that is the only
//! write after which a request may fail, until the API server sees the new caBundle.
//!
//! The Secret is the state, as for the membership key: the entries say the phase, [`PHASE`]
//! and [`SINCE`] when it began, so a new leader continues where the last one was. Keys are
//! never logged.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The Secret (in the operator's namespace) holding the serving pair and the trusted CAs.
pub const SECRET: &str = "ferrolb-operator-webhook-tls";
/// On the Secret: when `tls.crt` expires (RFC 3339).
pub const NOT_AFTER: &str = "ferrolb.io/webhook-cert-not-after";
/// On the Secret: when `next-tls.crt` expires (RFC 3339), during trusting-next.
pub const NEXT_NOT_AFTER: &str = "ferrolb.io/webhook-next-cert-not-after";
/// On the Secret: the DNS names the certificates are for, comma-separated.
pub const DNS_NAMES: &str = "ferrolb.io/webhook-cert-dns-names";
/// On the Secret: the phase written last ([`Phase::name`]).
pub const PHASE: &str = "ferrolb.io/webhook-cert-phase";
/// On the Secret: when [`PHASE`] was written (RFC 3339).
pub const SINCE: &str = "ferrolb.io/webhook-cert-phase-since";

/// Entries of the Secret.
pub mod entries {
    /// The serving certificate (PEM), what every replica serves.
    pub const TLS_CRT: &str = "tls.crt";
    /// Its private key (PEM).
    pub const TLS_KEY: &str = "tls.key";
    /// The CA that signed `tls.crt` (PEM).
    pub const CA_CRT: &str = "ca.crt";
    /// The next serving certificate, during trusting-next.
    pub const NEXT_TLS_CRT: &str = "next-tls.crt";
    /// Its private key.
    pub const NEXT_TLS_KEY: &str = "next-tls.key";
    /// The CA that signed it.
    pub const NEXT_CA_CRT: &str = "next-ca.crt";
    /// The CA of the certificate served before, during dropping-previous.
    pub const PREVIOUS_CA_CRT: &str = "previous-ca.crt";
}
use entries::*;

/// A renewal's phase, as the Secret's entries show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// One pair, one trusted CA.
    Serving,
    /// The next CA is trusted; the current pair is still served.
    TrustingNext,
    /// The next pair is served; the previous CA is still trusted.
    DroppingPrevious,
}

impl Phase {
    /// The phase's name in [`PHASE`].
    pub fn name(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::TrustingNext => "trusting-next",
            Phase::DroppingPrevious => "dropping-previous",
        }
    }

    fn of(data: &BTreeMap<String, Vec<u8>>) -> Phase {
        if data.contains_key(NEXT_TLS_CRT) {
            Phase::TrustingNext
        } else if data.contains_key(PREVIOUS_CA_CRT) {
            Phase::DroppingPrevious
        } else {
            Phase::Serving
        }
    }
}

/// A serving certificate and key with the CA that signed it, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Pair {
    /// The serving certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// The CA certificate.
    pub ca: String,
    /// When both expire.
    pub not_after: Timestamp,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Makes a CA and a serving certificate for `dns_names`, valid from a minute before `now`
/// (clocks differ) for `lifetime`. ECDSA P-256, as the API server and every TLS stack accept.
pub fn issue(
    dns_names: &[String],
    now: Timestamp,
    lifetime: Duration,
) -> Result<Pair, rcgen::Error> {
    let not_before = to_time(now - SignedDuration::from_secs(60));
    let not_after_ts = now + SignedDuration::try_from(lifetime).unwrap_or(SignedDuration::MAX);
    let not_after = to_time(not_after_ts);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("ferrolb-operator-webhook-ca@{now}"),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
        ca: ca_cert.pem(),
        not_after: Timestamp::from_second(not_after.unix_timestamp()).unwrap_or(not_after_ts),
    })
}

fn to_time(t: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The time between two phases of a renewal: a twelfth of the lifetime, between 1 s and
/// 5 min. The API server sees a new caBundle and the replicas a new Secret within a second
/// (both watch), so even the shortest step is ample; a long one costs nothing.
pub fn step(lifetime: Duration) -> Duration {
    (lifetime / 12).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// The Secret as the planner sees it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Its entries.
    pub data: BTreeMap<String, Vec<u8>>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Entry names and annotations only: the entries hold private keys.
impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("entries", &self.data.keys().collect::<Vec<_>>())
            .field("annotations", &self.annotations)
            .finish()
    }
}

/// What to do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Write these contents, then plan again.
    Write(Stored),
    /// Nothing to do for this long.
    Wait(Duration),
}

/// Decides the next step for the Secret (`None`: it does not exist), the `caBundle` the API
/// server trusts now, the DNS names the certificate must carry, the time, and the wanted
/// lifetime; `issue` makes a new pair when one is needed.
///
/// A phase moves on only once `trusted` holds what the next one serves: were the caBundle's
/// update refused for a whole step (a policy, a GitOps tool reverting it), promoting the next
/// pair would fail every request; it waits instead.
pub fn plan<E>(
    stored: Option<&Stored>,
    trusted: &[u8],
    dns_names: &[String],
    now: Timestamp,
    lifetime: Duration,
    issue: impl FnOnce() -> Result<Pair, E>,
) -> Result<Plan, E> {
    let names = dns_names.join(",");
    let empty = Stored::default();
    let stored = stored.unwrap_or(&empty);
    let time_of = |key: &str| {
        stored
            .annotations
            .get(key)
            .and_then(|v| v.parse::<Timestamp>().ok())
    };
    let has = |key: &str| stored.data.get(key).is_some_and(|v| !v.is_empty());
    let lifetime_signed = SignedDuration::try_from(lifetime).unwrap_or(SignedDuration::MAX);

    let usable = has(TLS_CRT)
        && has(TLS_KEY)
        && has(CA_CRT)
        && stored.annotations.get(DNS_NAMES) == Some(&names)
        && time_of(NOT_AFTER).is_some_and(|t| now < t);
    if !usable {
        let pair = issue()?;
        let mut fresh = Stored::default();
        put_current(&mut fresh, &pair);
        fresh.annotations.insert(DNS_NAMES.to_owned(), names);
        stamp(&mut fresh, Phase::Serving, now);
        return Ok(Plan::Write(fresh));
    }

    let phase = Phase::of(&stored.data);
    let since = match time_of(SINCE) {
        // A stamp from the future (a leader with a fast clock) would stall the phase: restamp.
        Some(since)
            if stored.annotations.get(PHASE).map(String::as_str) == Some(phase.name())
                && since <= now =>
        {
            since
        }
        // The clock counts only for the phase it was written with: in doubt, start it now.
        _ => {
            let mut restamped = stored.clone();
            stamp(&mut restamped, phase, now);
            return Ok(Plan::Write(restamped));
        }
    };
    let step = step(lifetime);
    let step_signed = SignedDuration::try_from(step).unwrap_or(SignedDuration::MAX);
    let wait_until = |t: Timestamp| Plan::Wait(unsigned(t.duration_since(now)));
    match phase {
        Phase::Serving => {
            let not_after = time_of(NOT_AFTER).unwrap_or(now);
            let renew_at = not_after - lifetime_signed / 3;
            let outlives =
                not_after.duration_since(now) > lifetime_signed + SignedDuration::from_secs(60);
            if now < renew_at && !outlives {
                return Ok(wait_until(renew_at));
            }
            let pair = issue()?;
            let mut next = stored.clone();
            next.data
                .insert(NEXT_TLS_CRT.to_owned(), pair.cert.into_bytes());
            next.data
                .insert(NEXT_TLS_KEY.to_owned(), pair.key.into_bytes());
            next.data
                .insert(NEXT_CA_CRT.to_owned(), pair.ca.into_bytes());
            next.annotations
                .insert(NEXT_NOT_AFTER.to_owned(), pair.not_after.to_string());
            stamp(&mut next, Phase::TrustingNext, now);
            Ok(Plan::Write(next))
        }
        Phase::TrustingNext => {
            let next_usable = has(NEXT_TLS_CRT)
                && has(NEXT_TLS_KEY)
                && has(NEXT_CA_CRT)
                && time_of(NEXT_NOT_AFTER).is_some_and(|t| now < t);
            if !next_usable {
                // A half-written next pair (a hand edit): drop it and renew again.
                let mut back = stored.clone();
                for key in [NEXT_TLS_CRT, NEXT_TLS_KEY, NEXT_CA_CRT] {
                    back.data.remove(key);
                }
                back.annotations.remove(NEXT_NOT_AFTER);
                stamp(&mut back, Phase::Serving, now);
                return Ok(Plan::Write(back));
            }
            if now < since + step_signed {
                return Ok(wait_until(since + step_signed));
            }
            if !contains(trusted, stored.data.get(NEXT_CA_CRT)) {
                return Ok(Plan::Wait(step));
            }
            let mut promoted = stored.clone();
            let take = |s: &mut Stored, key: &str| s.data.remove(key).unwrap_or_default();
            let previous_ca = take(&mut promoted, CA_CRT);
            let cert = take(&mut promoted, NEXT_TLS_CRT);
            let key = take(&mut promoted, NEXT_TLS_KEY);
            let ca = take(&mut promoted, NEXT_CA_CRT);
            promoted.data.insert(TLS_CRT.to_owned(), cert);
            promoted.data.insert(TLS_KEY.to_owned(), key);
            promoted.data.insert(CA_CRT.to_owned(), ca);
            promoted
                .data
                .insert(PREVIOUS_CA_CRT.to_owned(), previous_ca);
            if let Some(not_after) = promoted.annotations.remove(NEXT_NOT_AFTER) {
                promoted.annotations.insert(NOT_AFTER.to_owned(), not_after);
            }
            stamp(&mut promoted, Phase::DroppingPrevious, now);
            Ok(Plan::Write(promoted))
        }
        Phase::DroppingPrevious => {
            if now < since + step_signed {
                return Ok(wait_until(since + step_signed));
            }
            if !contains(trusted, stored.data.get(CA_CRT)) {
                return Ok(Plan::Wait(step));
            }
            let mut done = stored.clone();
            done.data.remove(PREVIOUS_CA_CRT);
            stamp(&mut done, Phase::Serving, now);
            Ok(Plan::Write(done))
        }
    }
}

/// Whether the PEM bundle `trusted` holds the certificate `pem`.
fn contains(trusted: &[u8], pem: Option<&Vec<u8>>) -> bool {
    let Some(pem) = pem.map(|p| p.trim_ascii()).filter(|p| !p.is_empty()) else {
        return false;
    };
    trusted.windows(pem.len()).any(|w| w == pem)
}

fn put_current(stored: &mut Stored, pair: &Pair) {
    stored
        .data
        .insert(TLS_CRT.to_owned(), pair.cert.clone().into_bytes());
    stored
        .data
        .insert(TLS_KEY.to_owned(), pair.key.clone().into_bytes());
    stored
        .data
        .insert(CA_CRT.to_owned(), pair.ca.clone().into_bytes());
    stored
        .annotations
        .insert(NOT_AFTER.to_owned(), pair.not_after.to_string());
}

fn stamp(stored: &mut Stored, phase: Phase, now: Timestamp) {
    stored
        .annotations
        .insert(PHASE.to_owned(), phase.name().to_owned());
    stored.annotations.insert(SINCE.to_owned(), now.to_string());
}

fn unsigned(d: SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// The CAs the API server must trust for this Secret (the `caBundle`): the current one and,
/// during a renewal, the next or the previous one.
pub fn trust_bundle(data: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut bundle = Vec::new();
    for key in [CA_CRT, NEXT_CA_CRT, PREVIOUS_CA_CRT] {
        if let Some(pem) = data.get(key).filter(|p| !p.is_empty()) {
            bundle.extend_from_slice(pem);
            if !pem.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
    }
    bundle
}

/// The DNS names of the webhook Service `service` in `namespace`, as the API server may name it.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

#[cfg(test)]
mod tests;
