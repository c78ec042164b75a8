//! Which `ferrolb.io/Announced` condition a Service gets, which speaker writes it, and whether
//! it must be written now. Pure: the event loop only carries the decision out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ferrolb_api::condition::reasons;

use super::{ServiceView, leader};

/// The condition one speaker writes for a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnouncedCondition {
    /// `True` when some address of the Service is announced.
    pub status: &'static str,
    /// `Announced`, `NoReadyEndpoints` or `NoEligibleNode`.
    pub reason: &'static str,
    /// Who announces which address, on which interface; or why nobody does.
    pub message: String,
}

/// What BGP does with one address: whether some node announces it to some peer, and the text
/// [`super::bgp::announcers_text`] makes of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAnnounced {
    pub announced: bool,
    pub text: String,
}

/// The condition `me` writes for `svc`, or None when another speaker writes it (or the Service
/// has no address with an advertisement).
///
/// The writer is the leader of the Service's first address with an L2 advertisement, or, when
/// nobody may announce it (or it has only BGP advertisements), the live speaker ranked first for
/// it, so exactly one speaker writes. `leaders` holds the leader of every address with an L2
/// advertisement (None: nobody may announce it); `interfaces` says on which of this node's
/// interfaces an address is answered; `bgp` says what BGP does with an address (None: no BGP
/// advertisement covers it).
pub fn announced_condition(
    me: &str,
    svc: &ServiceView,
    leaders: &BTreeMap<IpAddr, Option<String>>,
    live: &BTreeSet<String>,
    interfaces: impl Fn(IpAddr) -> String,
    bgp: impl Fn(IpAddr) -> Option<BgpAnnounced>,
) -> Option<AnnouncedCondition> {
    let advertised: Vec<(IpAddr, Option<&String>)> = svc
        .ips
        .iter()
        .filter_map(|ip| Some((*ip, leaders.get(ip)?.as_ref())))
        .collect();
    let routed: Vec<BgpAnnounced> = svc.ips.iter().filter_map(|ip| bgp(*ip)).collect();
    let writer = match advertised.first() {
        Some(&(_, Some(leader))) => Some(leader.as_str()),
        Some(&(first, None)) => leader(first, live.iter().map(String::as_str)),
        None => {
            let first = svc.ips.iter().find(|ip| bgp(**ip).is_some())?;
            leader(*first, live.iter().map(String::as_str))
        }
    };
    if writer != Some(me) {
        return None;
    }
    let by_l2 = advertised.iter().any(|(_, l)| l.is_some());
    let by_bgp = routed.iter().any(|b| b.announced);
    Some(if by_l2 || by_bgp {
        let mut parts = Vec::new();
        if !advertised.is_empty() {
            let l2: Vec<String> = advertised
                .iter()
                .map(|(ip, l)| match l {
                    Some(node) if *node == me => {
                        format!("{ip} from node {node} on {}", interfaces(*ip))
                    }
                    Some(node) => format!("{ip} from node {node}"),
                    None => format!("{ip} not announced"),
                })
                .collect();
            parts.push(format!("Layer 2: {}", l2.join("; ")));
        }
        if !routed.is_empty() {
            let texts: Vec<&str> = routed.iter().map(|b| b.text.as_str()).collect();
            parts.push(format!("BGP: {}", texts.join("; ")));
        }
        AnnouncedCondition {
            status: "True",
            reason: reasons::ANNOUNCED,
            message: parts.join(". "),
        }
    } else if svc.endpoint_nodes.is_empty() {
        AnnouncedCondition {
            status: "False",
            reason: reasons::NO_READY_ENDPOINTS,
            message: "not announced: the Service has no ready endpoint".to_owned(),
        }
    } else if advertised.is_empty() {
        AnnouncedCondition {
            status: "False",
            reason: reasons::NO_ELIGIBLE_NODE,
            message: "not announced: no Ready node the BGP advertisements select has a session with a peer they name (with externalTrafficPolicy Local, one that hosts a ready endpoint)".to_owned(),
        }
    } else {
        AnnouncedCondition {
            status: "False",
            reason: reasons::NO_ELIGIBLE_NODE,
            message: "not announced: no live speaker on a node the advertisements select (with externalTrafficPolicy Local, one that hosts a ready endpoint)".to_owned(),
        }
    })
}

/// What to do about a Service's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// The Service's status shows it already: forget what was sent.
    Settled,
    /// It was sent a moment ago and has not come back through the watch yet: wait.
    InFlight,
    /// Write it (and remember it was sent).
    Send,
}

/// Whether to write `want` (status, message), given what the Service's status `holds` now and
/// what was `sent` (status, message, how long ago) and has not come back yet; a write that has not
/// come back after `resend` is sent again.
pub fn condition_write(
    want: (&str, &str),
    holds: Option<(&str, &str)>,
    sent: Option<(&str, &str, Duration)>,
    resend: Duration,
) -> Write {
    if holds == Some(want) {
        Write::Settled
    } else if sent.is_some_and(|(s, m, ago)| (s, m) == want && ago < resend) {
        Write::InFlight
    } else {
        Write::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc(ips: &[&str], endpoint_nodes: &[&str]) -> ServiceView {
        ServiceView {
            key: "shop/web".into(),
            ips: ips.iter().map(|s| ip(s)).collect(),
            local: false,
            endpoint_nodes: endpoint_nodes.iter().map(|s| (*s).to_owned()).collect(),
            selected_by: Default::default(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn on(ip: IpAddr) -> String {
        format!("eth0 ({ip})")
    }

    type Leaders = BTreeMap<IpAddr, Option<String>>;
    /// Status, reason, message.
    type Expected = (&'static str, &'static str, String);

    const A: &str = "203.0.113.1";
    const B: &str = "203.0.113.2";
    const V6: &str = "2001:db8::1";

    /// The live speaker ranked first for `addr` among `live`.
    fn first_ranked(addr: &str, live: &BTreeSet<String>) -> String {
        leader(ip(addr), live.iter().map(String::as_str))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn the_condition_says_who_announces_what_or_why_nobody_does() {
        let live = set(&["node-1", "node-2", "node-3"]);
        let leaders = |pairs: &[(&str, Option<&str>)]| -> BTreeMap<IpAddr, Option<String>> {
            pairs
                .iter()
                .map(|(a, l)| (ip(a), l.map(str::to_owned)))
                .collect()
        };
        let nobody_writer = first_ranked(A, &live);
        #[rustfmt::skip]
        let rows: Vec<(&str, &str, ServiceView, Leaders, Option<Expected>)> = vec![
            ("the leader of the only address writes True with its interfaces",
             "node-1", svc(&[A], &["node-1"]), leaders(&[(A, Some("node-1"))]),
             Some(("True", "Announced", format!("Layer 2: {A} from node node-1 on eth0 ({A})")))),
            ("another node leads: not this node's to write",
             "node-2", svc(&[A], &["node-1"]), leaders(&[(A, Some("node-1"))]),
             None),
            ("two addresses: the first's leader writes, naming the other's leader",
             "node-1", svc(&[A, V6], &["node-1"]), leaders(&[(A, Some("node-1")), (V6, Some("node-2"))]),
             Some(("True", "Announced", format!("Layer 2: {A} from node node-1 on eth0 ({A}); {V6} from node node-2")))),
            ("the second's leader does not write",
             "node-2", svc(&[A, V6], &["node-1"]), leaders(&[(A, Some("node-1")), (V6, Some("node-2"))]),
             None),
            ("the first is not announced but the second is: still True",
             nobody_writer.as_str(), svc(&[A, B], &["node-1"]), leaders(&[(A, None), (B, Some("node-9"))]),
             Some(("True", "Announced", format!("Layer 2: {A} not announced; {B} from node node-9")))),
            ("an address without an advertisement is left out",
             "node-1", svc(&["198.51.100.7", A], &["node-1"]), leaders(&[(A, Some("node-1"))]),
             Some(("True", "Announced", format!("Layer 2: {A} from node node-1 on eth0 ({A})")))),
            ("no advertised address: nothing to write",
             "node-1", svc(&["198.51.100.7"], &["node-1"]), leaders(&[]),
             None),
            ("nobody may announce, no endpoint: the first-ranked live speaker says NoReadyEndpoints",
             nobody_writer.as_str(), svc(&[A], &[]), leaders(&[(A, None)]),
             Some(("False", "NoReadyEndpoints", "not announced: the Service has no ready endpoint".to_owned()))),
            ("nobody may announce, endpoints exist: NoEligibleNode",
             nobody_writer.as_str(), svc(&[A], &["node-7"]), leaders(&[(A, None)]),
             Some(("False", "NoEligibleNode", "not announced: no live speaker on a node the advertisements select (with externalTrafficPolicy Local, one that hosts a ready endpoint)".to_owned()))),
        ];
        for (what, me, svc, leaders, want) in rows {
            let got = announced_condition(me, &svc, &leaders, &live, on, |_| None);
            let got = got.map(|c| (c.status, c.reason, c.message));
            assert_eq!(got, want, "{what}");
        }
        // Exactly one live speaker writes when nobody may announce.
        let writers: Vec<&String> = live
            .iter()
            .filter(|me| {
                announced_condition(
                    me,
                    &svc(&[A], &[]),
                    &leaders(&[(A, None)]),
                    &live,
                    on,
                    |_| None,
                )
                .is_some()
            })
            .collect();
        assert_eq!(writers, [&nobody_writer]);
    }

    #[test]
    fn bgp_addresses_are_reported_by_the_first_ranked_live_speaker_or_beside_layer_2() {
        let live = set(&["node-1", "node-2", "node-3"]);
        let writer = first_ranked(A, &live);
        let other = live.iter().find(|n| **n != writer).unwrap().clone();
        let text = format!("{A} to frr (198.51.100.1, AS 64512) from node-1, node-2");
        let bgp = |announced: bool| {
            let text = if announced {
                text.clone()
            } else {
                format!("{A} not announced")
            };
            move |ip: IpAddr| {
                (ip == self::ip(A)).then(|| BgpAnnounced {
                    announced,
                    text: text.clone(),
                })
            }
        };
        let none = BTreeMap::new();
        let got = |me: &str, svc: &ServiceView, leaders: &Leaders, announced: bool| {
            announced_condition(me, svc, leaders, &live, on, bgp(announced))
                .map(|c| (c.status, c.reason, c.message))
        };
        assert_eq!(
            got(&writer, &svc(&[A], &["node-1"]), &none, true),
            Some(("True", "Announced", format!("BGP: {text}")))
        );
        assert_eq!(
            got(&other, &svc(&[A], &["node-1"]), &none, true),
            None,
            "one writer"
        );
        assert_eq!(
            got(&writer, &svc(&[A], &[]), &none, false),
            Some((
                "False",
                "NoReadyEndpoints",
                "not announced: the Service has no ready endpoint".to_owned()
            ))
        );
        assert_eq!(
            got(&writer, &svc(&[A], &["node-1"]), &none, false).map(|c| c.1),
            Some("NoEligibleNode")
        );
        // Announced both ways: the Layer 2 leader writes both.
        let l2: Leaders = [(ip(A), Some(other.clone()))].into();
        assert_eq!(
            got(&other, &svc(&[A], &["node-1"]), &l2, true),
            Some((
                "True",
                "Announced",
                format!("Layer 2: {A} from node {other} on eth0 ({A}). BGP: {text}")
            ))
        );
        assert_eq!(got(&writer, &svc(&[A], &["node-1"]), &l2, true), None);
        // An address of another family without an advertisement is left out.
        assert_eq!(
            got(&writer, &svc(&[A, V6], &["node-1"]), &none, true),
            Some(("True", "Announced", format!("BGP: {text}")))
        );
    }

    #[test]
    fn a_condition_is_written_until_the_status_shows_it_and_resent_when_it_does_not_come_back() {
        const RESEND: Duration = Duration::from_secs(10);
        let want = ("True", "m");
        let soon = Duration::from_secs(1);
        let late = Duration::from_secs(11);
        #[rustfmt::skip]
        let rows = [
            ("never written", None, None, Write::Send),
            ("the status shows it", Some(("True", "m")), None, Write::Settled),
            ("the status shows it, a send still recorded", Some(("True", "m")), Some(("True", "m", soon)), Write::Settled),
            ("the status differs, nothing sent", Some(("False", "m")), None, Write::Send),
            ("sent a moment ago", Some(("False", "m")), Some(("True", "m", soon)), Write::InFlight),
            ("sent long ago and not back", Some(("False", "m")), Some(("True", "m", late)), Write::Send),
            ("something else was sent", None, Some(("True", "other", soon)), Write::Send),
            ("same message, other status", Some(("False", "m")), None, Write::Send),
        ];
        for (what, holds, sent, expected) in rows {
            assert_eq!(
                condition_write(want, holds, sent, RESEND),
                expected,
                "{what}"
            );
        }
    }
}
