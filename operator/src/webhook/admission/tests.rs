//! The admission decision on AdmissionReviews as the API server sends them
//! (admission.k8s.io/v1, the LoadBalancerConfig as stored, with its server-set metadata).

use ferrolb_api::LoadBalancerConfigSpec;
use serde_json::{Value, json};

use super::*;

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

fn valid_spec() -> Value {
    json!({
        "addressPools": [{"name": "public", "addresses": ["203.0.113.0/28"]}],
        "l2Advertisements": [{"name": "lan", "addressPools": ["public"]}],
    })
}

/// Two overlapping pools and an advertisement of a pool that does not exist.
fn invalid_spec() -> Value {
    json!({
        "addressPools": [
            {"name": "public", "addresses": ["203.0.113.0/28"]},
            {"name": "more", "addresses": ["203.0.113.8/29"]},
        ],
        "l2Advertisements": [{"name": "lan", "addressPools": ["missing"]}],
    })
}

/// The object as the API server holds it.
fn config(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "LoadBalancerConfig",
        "metadata": {
            "name": name,
            "uid": "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4",
            "generation": 1,
            "creationTimestamp": "2026-03-01T10:00:00Z",
            "annotations": {"team": "network"},
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "ferrolb.io/v1alpha1",
                "time": "2026-03-01T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:addressPools": {}}},
            }],
        },
        "spec": spec,
    })
}

fn deleting(mut object: Value) -> Value {
    object["metadata"]["deletionTimestamp"] = json!("2026-03-02T10:00:00Z");
    object["metadata"]["finalizers"] = json!(["ferrolb.io/cleanup"]);
    object
}

/// An AdmissionReview body for `operation` of the config `name`.
fn body(operation: &str, name: &str, object: Option<Value>, old: Option<Value>) -> Value {
    let options = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "ferrolb.io", "version": "v1alpha1", "kind": "LoadBalancerConfig"},
            "resource": {"group": "ferrolb.io", "version": "v1alpha1", "resource": "loadbalancerconfigs"},
            "requestKind": {"group": "ferrolb.io", "version": "v1alpha1", "kind": "LoadBalancerConfig"},
            "requestResource": {"group": "ferrolb.io", "version": "v1alpha1", "resource": "loadbalancerconfigs"},
            "name": name,
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options},
        },
    })
}

fn request(body: &Value) -> AdmissionRequest<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(body.clone()).unwrap();
    review.try_into().unwrap()
}

/// The message `ferrolb-operator validate` prints for `spec`: every problem, one per line.
fn problems_of(spec: Value) -> String {
    let spec: LoadBalancerConfigSpec = serde_json::from_value(spec).unwrap();
    validate(&spec).unwrap_err().to_string()
}

fn one_config() -> Vec<String> {
    vec!["ferrolb".to_owned()]
}

/// One row per rule: the review, the configs that exist; `None` if allowed, or the denial's
/// exact message.
#[test]
fn every_admission_rule() {
    let invalid = [
        r#"spec.addressPools[1].addresses[0]: "203.0.113.8/29": overlaps spec.addressPools[0].addresses[0] (203.0.113.0/28); no address may be in two pools or twice in one"#,
        r#"spec.l2Advertisements[0].addressPools[0]: "missing": no address pool with this name"#,
    ]
    .join("\n");
    assert_eq!(
        problems_of(invalid_spec()),
        invalid,
        "the webhook says what `validate` says"
    );
    let mut with_typo = valid_spec();
    with_typo["addressPools"][0]["adresses"] = json!(["203.0.113.16/28"]);
    let mut wrong_kind = body("CREATE", "web", Some(config("web", valid_spec())), None);
    wrong_kind["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    wrong_kind["request"]["resource"] =
        json!({"group": "", "version": "v1", "resource": "configmaps"});
    let mut other_group = body(
        "CREATE",
        "ferrolb",
        Some(config("ferrolb", invalid_spec())),
        None,
    );
    other_group["request"]["kind"]["group"] = json!("metallb.io");

    let none: Vec<String> = Vec::new();
    let one = one_config();
    let two = vec!["ferrolb".to_owned(), "other".to_owned()];
    let rows: Vec<(&str, Value, &[String], Option<String>)> = vec![
        (
            "a valid config is created",
            body("CREATE", "ferrolb", Some(config("ferrolb", valid_spec())), None),
            &none,
            None,
        ),
        (
            "an invalid config is denied with every problem, one per line",
            body("CREATE", "ferrolb", Some(config("ferrolb", invalid_spec())), None),
            &none,
            Some(invalid.clone()),
        ),
        (
            "a second config is denied, naming the one that exists",
            body("CREATE", "other", Some(config("other", valid_spec())), None),
            &one,
            Some(
                "a cluster has exactly one LoadBalancerConfig, and \"ferrolb\" exists: change that one (kubectl edit lbc ferrolb)"
                    .to_owned(),
            ),
        ),
        (
            "creating the config that exists is no second config (the API server answers the conflict)",
            body("CREATE", "ferrolb", Some(config("ferrolb", valid_spec())), None),
            &one,
            None,
        ),
        (
            "a change that leaves an invalid spec as it is passes (finalizers, annotations)",
            body(
                "UPDATE",
                "ferrolb",
                Some(config("ferrolb", invalid_spec())),
                Some(config("ferrolb", invalid_spec())),
            ),
            &one,
            None,
        ),
        (
            "a change of the spec to an invalid one is denied",
            body(
                "UPDATE",
                "ferrolb",
                Some(config("ferrolb", invalid_spec())),
                Some(config("ferrolb", valid_spec())),
            ),
            &one,
            Some(invalid.clone()),
        ),
        (
            "a change of the spec to a valid one passes",
            body(
                "UPDATE",
                "ferrolb",
                Some(config("ferrolb", valid_spec())),
                Some(config("ferrolb", invalid_spec())),
            ),
            &one,
            None,
        ),
        (
            "a config being deleted passes whatever its spec",
            body(
                "UPDATE",
                "ferrolb",
                Some(deleting(config("ferrolb", invalid_spec()))),
                Some(config("ferrolb", valid_spec())),
            ),
            &one,
            None,
        ),
        (
            "the one-config rule is for creates: a second config that slipped in can be fixed",
            body(
                "UPDATE",
                "other",
                Some(config("other", valid_spec())),
                Some(config("other", invalid_spec())),
            ),
            &two,
            None,
        ),
        (
            "a field of the wrong type is denied, naming its path",
            body("CREATE", "ferrolb", Some(config("ferrolb", json!({"addressPools": {}}))), None),
            &none,
            Some("spec.addressPools: invalid type: map, expected a sequence".to_owned()),
        ),
        (
            "a deletion passes",
            body("DELETE", "ferrolb", None, Some(config("ferrolb", invalid_spec()))),
            &one,
            None,
        ),
        (
            "another kind is denied: the webhook's rules are wrong",
            wrong_kind,
            &none,
            Some(
                "this webhook validates ferrolb.io/LoadBalancerConfig only, not /ConfigMap: check the rules of the ValidatingWebhookConfiguration"
                    .to_owned(),
            ),
        ),
        (
            "the same kind in another group is another kind",
            other_group,
            &none,
            Some(
                "this webhook validates ferrolb.io/LoadBalancerConfig only, not metallb.io/LoadBalancerConfig: check the rules of the ValidatingWebhookConfiguration"
                    .to_owned(),
            ),
        ),
        (
            "an unknown field in the spec is denied, naming it",
            body("CREATE", "ferrolb", Some(config("ferrolb", with_typo)), None),
            &none,
            Some("spec.addressPools[0].adresses: unknown field".to_owned()),
        ),
        (
            "a create without an object is denied",
            body("CREATE", "ferrolb", None, None),
            &none,
            Some("the request carries no object".to_owned()),
        ),
    ];
    for (rule, body, configs, denial) in rows {
        let cluster = Cluster {
            configs,
            nodes: None,
        };
        let response = decide(&request(&body), cluster);
        assert_eq!(response.uid, UID, "{rule}: the uid is the request's");
        match denial {
            None => assert!(
                response.allowed,
                "{rule}: denied with {:?}",
                response.result.message
            ),
            Some(message) => {
                assert!(!response.allowed, "{rule}: allowed");
                assert_eq!(response.result.message, message, "{rule}");
            }
        }
    }
}

#[test]
fn a_review_is_answered_with_an_admission_review_of_the_same_version() {
    let body = serde_json::to_vec(&body(
        "CREATE",
        "ferrolb",
        Some(config("ferrolb", invalid_spec())),
        None,
    ))
    .unwrap();
    let answer = review(&body, Cluster::default()).unwrap();
    let answer = serde_json::to_value(&answer).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], UID);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["status"]["message"],
        problems_of(invalid_spec())
    );
    assert!(answer.get("request").is_none(), "{answer}");
}

#[test]
fn an_allowing_review_carries_the_uid_and_allowed() {
    let body = serde_json::to_vec(&body(
        "CREATE",
        "ferrolb",
        Some(config("ferrolb", valid_spec())),
        None,
    ))
    .unwrap();
    let answer = serde_json::to_value(review(&body, Cluster::default()).unwrap()).unwrap();
    assert_eq!(
        (
            &answer["apiVersion"],
            &answer["kind"],
            &answer["response"]["uid"],
            &answer["response"]["allowed"]
        ),
        (
            &json!("admission.k8s.io/v1"),
            &json!("AdmissionReview"),
            &json!(UID),
            &json!(true)
        )
    );
}

#[test]
fn a_body_that_is_no_admission_review_with_a_request_is_an_error_saying_why() {
    // (body, how the error begins)
    for (body, expected) in [
        (&b"not json"[..], "the body is not an AdmissionReview: "),
        (b"", "the body is not an AdmissionReview: "),
        (b"[1, 2]", "the body is not an AdmissionReview: "),
        (
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}}"#,
            "the body is not an AdmissionReview: ",
        ),
        (
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
            "the AdmissionReview has no request",
        ),
    ] {
        let err = review(body, Cluster::default()).unwrap_err();
        assert!(
            err.starts_with(expected),
            "{}: {err}",
            String::from_utf8_lossy(body)
        );
    }
}

/// A valid config that is probably wrong is allowed, with `validate::warnings` as admission
/// warnings (kubectl prints them); the node-dependent ones only once the nodes are known.
#[test]
fn a_valid_config_is_allowed_with_its_warnings() {
    let spec = json!({
        "addressPools": [{"name": "public", "addresses": ["203.0.113.0/28"]}],
        "speaker": {"nodeSelector": {"rack": "nowhere"}},
    });
    let review = body(
        "CREATE",
        "ferrolb",
        Some(config("ferrolb", spec.clone())),
        None,
    );
    let warnings = |nodes: Option<&[BTreeMap<String, String>]>| {
        let configs: Vec<String> = Vec::new();
        let response = decide(
            &request(&review),
            Cluster {
                configs: &configs,
                nodes,
            },
        );
        assert!(response.allowed);
        response.warnings.unwrap_or_default()
    };
    let typed: LoadBalancerConfigSpec = serde_json::from_value(spec).unwrap();
    let nodes = [BTreeMap::from([("rack".to_owned(), "a".to_owned())])];
    for known in [None, Some(&nodes[..])] {
        let want: Vec<String> = ferrolb_api::validate::warnings(&typed, known)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(warnings(known), want);
    }
    assert_eq!(warnings(None).len(), 1, "the pool no advertisement selects");
    assert_eq!(
        warnings(Some(&nodes)).len(),
        2,
        "and the speaker node selector that matches no node"
    );
    assert!(
        warnings(Some(&nodes))
            .iter()
            .any(|w| w.starts_with("spec.speaker.nodeSelector: "))
    );
    assert!(
        warnings(Some(&nodes)).iter().all(|w| w.len() <= 256),
        "the API server truncates longer warnings"
    );
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9./:-]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the body, the answer is a review or an error saying why, never a panic.
        #[test]
        fn any_bytes_are_answered(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = review(&body, Cluster::default());
        }

        /// Whatever a review's spec holds (wrong types, unknown fields, nesting), it is decided.
        #[test]
        fn any_spec_is_decided(spec in json_value(), operation in prop::sample::select(vec!["CREATE", "UPDATE"])) {
            let old = (operation == "UPDATE").then(|| config("ferrolb", valid_spec()));
            let body = body(operation, "ferrolb", Some(config("ferrolb", spec)), old);
            if let Ok(review) = serde_json::from_value::<AdmissionReview<DynamicObject>>(body.clone())
                && let Ok(request) = review.try_into()
            {
                let _ = decide(&request, Cluster::default());
            }
            let _ = review(body.to_string().as_bytes(), Cluster::default());
        }
    }
}
