//! The status rules, each as a small world.

use ferrolb_api::condition::is_valid_reason;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetStatus, Deployment, DeploymentSpec, DeploymentStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use super::*;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn deployment(desired: i32, ready: i32, updated: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            generation: Some(2),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(desired),
            ..DeploymentSpec::default()
        }),
        status: Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(desired),
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            ..DeploymentStatus::default()
        }),
    }
}

fn daemonset(desired: i32, ready: i32, updated: i32) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            generation: Some(5),
            ..ObjectMeta::default()
        },
        status: Some(DaemonSetStatus {
            observed_generation: Some(5),
            desired_number_scheduled: desired,
            number_ready: ready,
            updated_number_scheduled: Some(updated),
            ..DaemonSetStatus::default()
        }),
        ..DaemonSet::default()
    }
}

fn observed(controller: Deployment, speaker: DaemonSet) -> Observed {
    Observed {
        generation: Some(7),
        standing: Some(Standing::InForce),
        controller: Some(controller),
        speaker: Some(speaker),
        ..Observed::default()
    }
}

fn get<'a>(c: &'a [Condition], type_: &str) -> &'a Condition {
    c.iter().find(|c| c.type_ == type_).unwrap()
}

fn statuses(c: &Computed) -> Vec<(&str, &str)> {
    [AVAILABLE, PROGRESSING, DEGRADED, UPGRADEABLE, CONFIG_VALID]
        .iter()
        .map(|t| (*t, get(&c.conditions, t).status.as_str()))
        .collect()
}

#[test]
fn everything_ready_is_available_and_upgradeable() {
    let c = compute(
        &observed(deployment(2, 2, 2), daemonset(3, 3, 3)),
        &[],
        at(10),
    );
    assert_eq!(
        statuses(&c),
        [
            (AVAILABLE, "True"),
            (PROGRESSING, "False"),
            (DEGRADED, "False"),
            (UPGRADEABLE, "True"),
            (CONFIG_VALID, "True")
        ]
    );
    assert_eq!(
        c.speaker.as_ref().map(|s| (s.desired, s.ready, s.updated)),
        Some((3, 3, 3))
    );
    for cond in &c.conditions {
        assert_eq!(cond.observed_generation, Some(7));
    }
}

#[test]
fn a_rollout_is_progressing_with_counts_and_holds_upgrades() {
    let c = compute(
        &observed(deployment(2, 2, 2), daemonset(3, 3, 1)),
        &[],
        at(10),
    );
    let p = get(&c.conditions, PROGRESSING);
    assert_eq!(p.status, "True");
    assert_eq!(
        p.message,
        "controller 2/2 ready, 2 updated; speaker 3/3 ready, 1 updated"
    );
    assert_eq!(get(&c.conditions, UPGRADEABLE).status, "False");
    // Still Available: every speaker is ready while they roll one at a time.
    assert_eq!(get(&c.conditions, AVAILABLE).status, "True");
}

#[test]
fn a_key_rotation_is_progress_that_does_not_hold_upgrades() {
    let mut o = observed(deployment(2, 2, 2), daemonset(3, 3, 3));
    o.key_rotation = Some("rotating the membership key: step 1 of 3".to_owned());
    let c = compute(&o, &[], at(10));
    let p = get(&c.conditions, PROGRESSING);
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("True", reasons::ROTATING_KEY)
    );
    assert_eq!(
        p.message,
        "controller 2/2 ready, 2 updated; speaker 3/3 ready, 3 updated; rotating the membership key: step 1 of 3"
    );
    assert_eq!(get(&c.conditions, UPGRADEABLE).status, "True");
    assert_eq!(get(&c.conditions, AVAILABLE).status, "True");
    // A rollout at the same time says so first.
    o.speaker = Some(daemonset(3, 3, 1));
    let c = compute(&o, &[], at(10));
    let p = get(&c.conditions, PROGRESSING);
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("True", reasons::ROLLING_OUT)
    );
    assert!(
        p.message
            .ends_with("rotating the membership key: step 1 of 3"),
        "{}",
        p.message
    );
    assert_eq!(get(&c.conditions, UPGRADEABLE).status, "False");
}

#[test]
fn an_unobserved_generation_is_still_progressing() {
    let mut d = deployment(2, 2, 2);
    d.metadata.generation = Some(3);
    let c = compute(&observed(d, daemonset(3, 3, 3)), &[], at(10));
    assert_eq!(get(&c.conditions, PROGRESSING).status, "True");
}

#[test]
fn an_invalid_config_is_degraded_lists_the_problems_and_holds_upgrades() {
    let mut o = observed(deployment(2, 2, 2), daemonset(3, 3, 3));
    o.standing = Some(Standing::Invalid(
        "spec.addressPools[0].addresses[0]: \"x\": not an address".into(),
    ));
    let c = compute(&o, &[], at(10));
    let v = get(&c.conditions, CONFIG_VALID);
    assert_eq!(
        (v.status.as_str(), v.reason.as_str()),
        ("False", reasons::INVALID)
    );
    assert!(
        v.message
            .contains("spec.addressPools[0].addresses[0]: \"x\": not an address")
    );
    assert_eq!(get(&c.conditions, DEGRADED).status, "True");
    assert_eq!(get(&c.conditions, UPGRADEABLE).status, "False");
    // The last valid operands keep running and say so.
    assert_eq!(get(&c.conditions, AVAILABLE).status, "True");
}

#[test]
fn a_second_config_is_degraded_naming_the_one_in_force() {
    let o = Observed {
        generation: Some(1),
        standing: Some(Standing::Shadowed("ferrolb".into())),
        ..Observed::default()
    };
    let c = compute(&o, &[], at(10));
    let d = get(&c.conditions, DEGRADED);
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", reasons::NOT_IN_FORCE)
    );
    assert!(d.message.contains("ferrolb"));
    assert_eq!(get(&c.conditions, AVAILABLE).status, "False");
    assert_eq!(get(&c.conditions, PROGRESSING).status, "False");
}

#[test]
fn an_apply_failure_is_degraded_with_the_error() {
    let mut o = observed(deployment(2, 0, 0), daemonset(3, 0, 0));
    o.apply_error = Some("forbidden: cannot create daemonsets".into());
    let c = compute(&o, &[], at(10));
    let d = get(&c.conditions, DEGRADED);
    assert_eq!(d.reason, reasons::APPLY_FAILED);
    assert!(d.message.contains("forbidden"));
}

#[test]
fn a_namespace_that_refuses_the_speaker_is_degraded_before_pod_problems() {
    let mut o = observed(deployment(2, 2, 2), daemonset(3, 2, 3));
    o.pod_security = Some("namespace ferrolb-system enforces the Pod Security level".into());
    o.pod_problems = vec!["pod ferrolb-speaker-x: CrashLoopBackOff".into()];
    let c = compute(&o, &[], at(10));
    let d = get(&c.conditions, DEGRADED);
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", reasons::POD_SECURITY)
    );
    assert!(d.message.contains("Pod Security"), "{}", d.message);
    assert_eq!(get(&c.conditions, UPGRADEABLE).status, "False");
    // an apply failure says more and comes first
    o.apply_error = Some("forbidden".into());
    let c = compute(&o, &[], at(10));
    assert_eq!(get(&c.conditions, DEGRADED).reason, reasons::APPLY_FAILED);
}

#[test]
fn transition_times_move_only_when_a_status_flips() {
    let first = compute(
        &observed(deployment(2, 2, 2), daemonset(3, 3, 1)),
        &[],
        at(10),
    );
    // Same statuses later (other counts): every time kept.
    let again = compute(
        &observed(deployment(2, 2, 2), daemonset(3, 3, 2)),
        &first.conditions,
        at(20),
    );
    for c in &again.conditions {
        assert_eq!(c.last_transition_time, at(10), "{}", c.type_);
    }
    // The rollout ends: Progressing and Upgradeable flip, the others keep their time.
    let done = compute(
        &observed(deployment(2, 2, 2), daemonset(3, 3, 3)),
        &again.conditions,
        at(30),
    );
    assert_eq!(
        get(&done.conditions, PROGRESSING).last_transition_time,
        at(30)
    );
    assert_eq!(
        get(&done.conditions, UPGRADEABLE).last_transition_time,
        at(30)
    );
    assert_eq!(
        get(&done.conditions, AVAILABLE).last_transition_time,
        at(10)
    );
    // Nothing changes at all: the computed status equals the stored one (no write).
    let same = compute(
        &observed(deployment(2, 2, 2), daemonset(3, 3, 3)),
        &done.conditions,
        at(40),
    );
    assert_eq!(same, done);
}

#[test]
fn every_reason_is_camel_case() {
    for reason in reasons::ALL {
        assert!(is_valid_reason(reason), "{reason}");
        assert!(
            reason.chars().next().is_some_and(char::is_uppercase),
            "{reason}"
        );
    }
}

fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ferrolb-speaker-x"},
        "spec": {"nodeName": "node-2", "containers": []},
        "status": status,
    }))
    .unwrap()
}

#[test]
fn a_pod_that_cannot_start_names_its_reason_and_a_starting_one_none() {
    let waiting = |reason: &str, message: &str| {
        pod(serde_json::json!({"containerStatuses": [{
            "name": "speaker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}}]}))
    };
    assert_eq!(
        pod_problem(&waiting("ErrImagePull", "image ghcr.io/x:v9 not found")),
        Some("pod ferrolb-speaker-x on node-2: ErrImagePull: image ghcr.io/x:v9 not found".into())
    );
    assert_eq!(
        pod_problem(&waiting("CrashLoopBackOff", "")),
        Some("pod ferrolb-speaker-x on node-2: CrashLoopBackOff".into())
    );
    assert_eq!(pod_problem(&waiting("ContainerCreating", "")), None);
    assert_eq!(pod_problem(&waiting("PodInitializing", "")), None);
    let running = pod(serde_json::json!({"containerStatuses": [{
        "name": "speaker", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {}}}]}));
    assert_eq!(pod_problem(&running), None);
    assert_eq!(pod_problem(&pod(serde_json::json!({}))), None);
    let mut unschedulable: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ferrolb-controller-y"},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]},
    }))
    .unwrap();
    assert_eq!(
        pod_problem(&unschedulable),
        Some("pod ferrolb-controller-y: Unschedulable: 0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.".into())
    );
    // A pod on its way out, or finished, is not a problem of the rollout.
    let mut failed = unschedulable.clone();
    unschedulable.metadata.deletion_timestamp = Some(at(5));
    assert_eq!(pod_problem(&unschedulable), None);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    assert_eq!(pod_problem(&failed), None);
}

#[test]
fn failing_pods_are_degraded_with_every_reason_listed_up_to_five() {
    let mut o = observed(deployment(2, 2, 2), daemonset(3, 2, 1));
    o.pod_problems = (1..=7)
        .map(|i| format!("pod p{i} on node-{i}: ErrImagePull: not found"))
        .collect();
    let c = compute(&o, &[], at(10));
    let d = get(&c.conditions, DEGRADED);
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", reasons::PODS_FAILING)
    );
    assert_eq!(
        d.message,
        "7 operand pod(s) cannot become ready:\n\
         pod p1 on node-1: ErrImagePull: not found\n\
         pod p2 on node-2: ErrImagePull: not found\n\
         pod p3 on node-3: ErrImagePull: not found\n\
         pod p4 on node-4: ErrImagePull: not found\n\
         pod p5 on node-5: ErrImagePull: not found\n\
         and 2 more"
    );
    assert_eq!(get(&c.conditions, UPGRADEABLE).status, "False");
    // An invalid config is told first; the pods are a consequence to look at after.
    o.standing = Some(Standing::Invalid("spec.logLevel: \"x\": bad".into()));
    let c = compute(&o, &[], at(10));
    assert_eq!(get(&c.conditions, DEGRADED).reason, reasons::INVALID);
}

#[test]
fn events_tell_each_change_once_and_warn_when_it_is_for_the_worse() {
    let ready = compute(
        &observed(deployment(2, 2, 2), daemonset(3, 3, 3)),
        &[],
        at(10),
    );
    // From nothing: one Event per told condition, none a Warning.
    let first = transitions(&[], &ready.conditions);
    assert_eq!(
        first
            .iter()
            .map(|e| (e.reason.as_str(), e.type_ == EventType::Warning))
            .collect::<Vec<_>>(),
        [
            (reasons::VALID, false),
            (reasons::ALL_READY, false),
            (reasons::ROLLED_OUT, false),
            (reasons::AS_EXPECTED, false)
        ]
    );
    // Nothing changed: no Event, however often the status is computed.
    assert!(transitions(&ready.conditions, &ready.conditions).is_empty());
    // A speaker fails: Degraded (a Warning), Available lost (a Warning), Progressing.
    let mut o = observed(deployment(2, 2, 2), daemonset(3, 2, 2));
    o.speaker
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .number_ready = 0;
    o.pod_problems = vec!["pod s on node-1: ErrImagePull: not found".into()];
    let failing = compute(&o, &ready.conditions, at(20));
    let told = transitions(&ready.conditions, &failing.conditions);
    let summary: Vec<_> = told
        .iter()
        .map(|e| (e.reason.as_str(), e.type_ == EventType::Warning))
        .collect();
    assert_eq!(
        summary,
        [
            (reasons::NOT_READY, true),
            (reasons::ROLLING_OUT, false),
            (reasons::PODS_FAILING, true)
        ]
    );
    let degraded = told
        .iter()
        .find(|e| e.reason == reasons::PODS_FAILING)
        .unwrap();
    assert!(
        degraded
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("Degraded is True: 1 operand pod(s)")
                && n.contains("ErrImagePull")),
        "{:?}",
        degraded.note
    );
    for e in told.iter().chain(&first) {
        assert!(is_valid_reason(&e.reason), "{}", e.reason);
    }
}

#[test]
fn an_event_note_is_cut_to_one_kibibyte_on_a_char_boundary() {
    let long = "é".repeat(2000);
    let note = truncate_note(&long);
    assert!(note.len() <= 1024, "{}", note.len());
    assert!(note.ends_with("..."));
    assert_eq!(truncate_note("short"), "short");
}

fn session(node: &str, state: &str, down_since: Option<i64>, error: Option<&str>) -> BGPSession {
    let mut s = BGPSession::new(
        &format!("{node}-frr"),
        ferrolb_api::v1alpha1::BgpSessionSpec {
            node: node.to_owned(),
            peer: "frr".to_owned(),
            peer_address: "198.51.100.1".to_owned(),
            peer_asn: Some(64512),
            my_asn: 64513,
        },
    );
    s.status = Some(ferrolb_api::v1alpha1::BgpSessionStatus {
        state: state.to_owned(),
        established_since: None,
        down_since: down_since.map(at),
        routes_sent: 0,
        last_error: error.map(str::to_owned),
        bfd: None,
    });
    s
}

#[test]
fn bgp_established_turns_false_only_for_a_session_down_longer_than_the_grace() {
    let grace = BGP_DOWN_GRACE.as_secs() as i64;
    let with = |sessions: Vec<BGPSession>| Observed {
        bgp_sessions: Some(sessions),
        ..observed(deployment(2, 2, 2), daemonset(3, 3, 3))
    };
    let now = 10_000;
    let fresh = with(vec![
        session("node-1", "Established", None, None),
        session(
            "node-2",
            "Active",
            Some(now - grace + 1),
            Some("connection attempt failed"),
        ),
    ]);
    let c = compute(&fresh, &[], at(now));
    let bgp = get(&c.conditions, BGP_ESTABLISHED);
    assert_eq!(
        (bgp.status.as_str(), bgp.reason.as_str()),
        ("True", reasons::SESSIONS_ESTABLISHED)
    );
    assert_eq!(bgp.message, "2 BGP sessions, none down for more than 120s");

    let long = with(vec![
        session("node-1", "Established", None, None),
        session(
            "node-2",
            "Active",
            Some(now - grace),
            Some("connection attempt failed"),
        ),
    ]);
    let c = compute(&long, &c.conditions, at(now));
    let bgp = get(&c.conditions, BGP_ESTABLISHED);
    assert_eq!(
        (bgp.status.as_str(), bgp.reason.as_str()),
        ("False", reasons::SESSIONS_DOWN)
    );
    assert_eq!(
        bgp.message,
        format!(
            "1 of 2 BGP sessions down for more than 120s: node-2-frr (node node-2, peer frr at 198.51.100.1) Active since {}: connection attempt failed",
            at(now - grace).0
        )
    );
    // A BGP problem is not a degradation and holds no upgrade.
    assert_eq!(get(&c.conditions, DEGRADED).status, "False");
    assert_eq!(get(&c.conditions, UPGRADEABLE).status, "True");

    // Many down: five named, the rest counted.
    let many: Vec<BGPSession> = (0..8)
        .map(|i| session(&format!("node-{i}"), "Connect", Some(0), None))
        .collect();
    let c = compute(&with(many), &[], at(now));
    assert!(
        get(&c.conditions, BGP_ESTABLISHED)
            .message
            .ends_with("; and 3 more (kubectl get bgpsessions)")
    );

    // No peers any more: the condition goes.
    let none = observed(deployment(2, 2, 2), daemonset(3, 3, 3));
    let c = compute(&none, &c.conditions, at(now));
    assert!(c.conditions.iter().all(|c| c.type_ != BGP_ESTABLISHED));
}
