//! The bundle says what the plain install says (permissions, Deployment, webhook), plus what
//! OLM needs; the catalog carries exactly the bundle's objects.

use base64::Engine as _;
use serde_json::{Value, json};

use super::*;
use crate::render::install::operator_rbac;

fn release(version: &str, replaces: Option<&str>) -> Release {
    Release {
        settings: Settings {
            image: format!("registry.example/ferrolb/ferrolb:{version}"),
            version: version.to_owned(),
        },
        replaces: replaces.map(str::to_owned),
    }
}

fn csv() -> Value {
    cluster_service_version(&release("v1.2.3", Some("v1.2.2"))).unwrap()
}

#[test]
fn names_follow_the_version() {
    let r = release("v1.2.3", None);
    assert_eq!(r.csv_name(), "ferrolb.v1.2.3");
    assert_eq!(r.semver(), "1.2.3");
}

#[test]
fn permissions_are_the_plain_installs() {
    let csv = csv();
    let settings = release("v1.2.3", None).settings;
    let (sa, cluster_role, _, role, _) = operator_rbac(&settings);
    let install = &csv["spec"]["install"]["spec"];
    let sa = json!(sa.metadata.name);
    assert_eq!(install["clusterPermissions"][0]["serviceAccountName"], sa);
    assert_eq!(install["permissions"][0]["serviceAccountName"], sa);
    assert_eq!(
        install["clusterPermissions"][0]["rules"],
        json!(cluster_role.rules)
    );
    assert_eq!(install["permissions"][0]["rules"], json!(role.rules));
    assert_eq!(install["clusterPermissions"].as_array().unwrap().len(), 1);
    assert_eq!(install["permissions"].as_array().unwrap().len(), 1);
}

#[test]
fn the_deployment_is_the_plain_one_with_olms_certificate_and_a_related_image() {
    let csv = csv();
    let settings = release("v1.2.3", None).settings;
    let deployment = &csv["spec"]["install"]["spec"]["deployments"][0];
    assert_eq!(deployment["name"], OPERATOR);
    let plain = serde_json::to_value(operator_deployment(&settings).spec).unwrap();
    let mut ours = deployment["spec"].clone();
    let container = &mut ours["template"]["spec"]["containers"][0];
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    assert!(
        args.contains(&"--webhook-certs=files".to_owned()),
        "{args:?}"
    );
    assert!(args.contains(&format!("--webhook-cert-dir={OLM_CERT_DIR}")));
    let envs = container["env"].as_array().unwrap().clone();
    let value = |name: &str| {
        envs.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(value(env::RELATED_IMAGE), Some(json!(settings.image)));
    assert_eq!(value(env::IMAGE), None, "one image variable, OLM's");
    assert_eq!(
        csv["spec"]["relatedImages"],
        json!([{"name": "ferrolb", "image": settings.image}])
    );
    assert_eq!(
        csv["metadata"]["annotations"]["containerImage"],
        json!(settings.image)
    );
    // Apart from those, the plain Deployment.
    container["args"] = plain["template"]["spec"]["containers"][0]["args"].clone();
    container["env"] = plain["template"]["spec"]["containers"][0]["env"].clone();
    assert_eq!(ours, plain);
}

#[test]
fn the_webhook_is_the_plain_installs() {
    let csv = csv();
    let plain =
        serde_json::to_value(webhook_configuration(&release("v1.2.3", None).settings)).unwrap();
    let plain = &plain["webhooks"][0];
    let ours = &csv["spec"]["webhookdefinitions"][0];
    assert_eq!(ours["type"], "ValidatingAdmissionWebhook");
    assert_eq!(ours["deploymentName"], OPERATOR);
    assert_eq!(ours["targetPort"], json!(PORT));
    assert_eq!(ours["generateName"], plain["name"]);
    assert_eq!(
        ours["webhookPath"],
        plain["clientConfig"]["service"]["path"]
    );
    for field in [
        "rules",
        "failurePolicy",
        "matchPolicy",
        "sideEffects",
        "timeoutSeconds",
        "admissionReviewVersions",
    ] {
        assert_eq!(ours[field], plain[field], "{field}");
    }
}

#[test]
fn upgrades_replace_the_previous_release_and_skip_any_older() {
    let csv = csv();
    assert_eq!(csv["metadata"]["name"], "ferrolb.v1.2.3");
    assert_eq!(csv["spec"]["version"], "1.2.3");
    assert_eq!(csv["spec"]["replaces"], "ferrolb.v1.2.2");
    assert_eq!(csv["metadata"]["annotations"]["olm.skipRange"], "<1.2.3");
    let first = cluster_service_version(&release("v0.1.0", None)).unwrap();
    assert!(first["spec"].get("replaces").is_none());
}

#[test]
fn installs_cluster_wide_only() {
    let modes = &csv()["spec"]["installModes"];
    let supported: Vec<&str> = modes
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["supported"] == true)
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(supported, ["AllNamespaces"]);
    assert_eq!(modes.as_array().unwrap().len(), 4);
}

#[test]
fn examples_are_valid_configs() {
    let csv = csv();
    let text = csv["metadata"]["annotations"]["alm-examples"]
        .as_str()
        .unwrap();
    let examples: Vec<Value> = serde_json::from_str(text).unwrap();
    assert_eq!(examples.len(), SAMPLES.len());
    for example in examples {
        let config = ferrolb_api::manifest::from_value(example.clone()).unwrap();
        ferrolb_api::validate(&config.spec).unwrap_or_else(|p| panic!("{example}: {p}"));
    }
}

/// Every field of the CRD's spec and status has a descriptor with its description.
#[test]
fn every_field_has_a_descriptor() {
    let csv = csv();
    let owned = &csv["spec"]["customresourcedefinitions"]["owned"][0];
    assert_eq!(owned["name"], "loadbalancerconfigs.ferrolb.io");
    assert_eq!(owned["kind"], "LoadBalancerConfig");
    assert_eq!(owned["version"], "v1alpha1");
    let paths = |key: &str| -> Vec<String> {
        owned[key]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|d| {
                assert!(!d["description"].as_str().unwrap().is_empty(), "{d}");
                assert!(!d["displayName"].as_str().unwrap().is_empty(), "{d}");
            })
            .map(|d| d["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let spec = paths("specDescriptors");
    for path in [
        "namespace",
        "addressPools",
        "addressPools[0].name",
        "addressPools[0].addresses",
        "addressPools[0].autoAssign",
        "l2Advertisements[0].addressPools",
        "bgpPeers[0].peerASN",
        "bgpPeers[0].passwordSecretRef",
        "controller.replicas",
        "speaker.tolerations",
    ] {
        assert!(spec.iter().any(|p| p == path), "no spec descriptor {path}");
    }
    let status = paths("statusDescriptors");
    for path in ["conditions", "version.operator", "version.operand", "pools"] {
        assert!(
            status.iter().any(|p| p == path),
            "no status descriptor {path}"
        );
    }
    // The console shows the conditions as conditions.
    let conditions = owned["statusDescriptors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "conditions")
        .unwrap();
    assert_eq!(
        conditions["x-descriptors"],
        json!(["urn:alm:descriptor:io.kubernetes.conditions"])
    );
    // Exactly one descriptor per path.
    let mut sorted = spec.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), spec.len());
}

/// The BGPSession is owned too, described from its schema like the config, and hidden from the
/// console's create forms: the speakers write them.
#[test]
fn the_bgp_session_is_owned_described_and_internal() {
    let csv = csv();
    let owned = csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .unwrap();
    let kinds: Vec<&str> = owned.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["LoadBalancerConfig", "BGPSession"]);
    let session = &owned[1];
    assert_eq!(session["name"], "bgpsessions.ferrolb.io");
    assert_eq!(session["version"], "v1alpha1");
    assert_eq!(session["displayName"], "BGP Session");
    assert!(!session["description"].as_str().unwrap().is_empty());
    assert!(
        !session["resources"].as_array().unwrap().is_empty(),
        "the scorecard's olm-crds-have-resources wants resources on every owned CRD"
    );
    let paths = |key: &str| -> Vec<String> {
        session[key]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|d| assert!(!d["description"].as_str().unwrap().is_empty(), "{d}"))
            .map(|d| d["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        paths("specDescriptors"),
        ["myASN", "node", "peer", "peerASN", "peerAddress"]
    );
    assert_eq!(
        paths("statusDescriptors"),
        [
            "bfd",
            "bfd.detectionTime",
            "bfd.downEvents",
            "bfd.lastError",
            "bfd.state",
            "bfd.transmitInterval",
            "downSince",
            "establishedSince",
            "lastError",
            "routesSent",
            "state"
        ]
    );
    let internal: Vec<String> = serde_json::from_str(
        csv["metadata"]["annotations"][INTERNAL_OBJECTS]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(internal, ["bgpsessions.ferrolb.io"]);
    // No example: nobody creates one by hand.
    let examples: Vec<Value> = serde_json::from_str(
        csv["metadata"]["annotations"]["alm-examples"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(examples.iter().all(|e| e["kind"] == "LoadBalancerConfig"));
}

#[test]
fn display_names_split_words() {
    for (field, name) in [
        ("addressPools", "Address Pools"),
        ("myASN", "My ASN"),
        ("peerASN", "Peer ASN"),
        ("namespace", "Namespace"),
        ("bfdProfile", "Bfd Profile"),
        ("ipv4", "Ipv4"),
        ("excludeInterfaces", "Exclude Interfaces"),
    ] {
        assert_eq!(display_name(field), name);
    }
}

#[test]
fn the_manifests_hold_the_csv_the_crd_the_roles_and_the_budget() {
    let files = bundle_manifests(&release("v1.2.3", None)).unwrap();
    let kinds: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, o)| (name.as_str(), o["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                "ferrolb.clusterserviceversion.yaml",
                "ClusterServiceVersion"
            ),
            (
                "ferrolb.io_loadbalancerconfigs.yaml",
                "CustomResourceDefinition"
            ),
            ("ferrolb.io_bgpsessions.yaml", "CustomResourceDefinition"),
            (
                "ferrolb-controller_rbac.authorization.k8s.io_v1_clusterrole.yaml",
                "ClusterRole"
            ),
            (
                "ferrolb-speaker_rbac.authorization.k8s.io_v1_clusterrole.yaml",
                "ClusterRole"
            ),
            (
                "ferrolb-operator_policy_v1_poddisruptionbudget.yaml",
                "PodDisruptionBudget"
            ),
        ]
    );
    for (name, object) in &files {
        assert!(object["metadata"].get("namespace").is_none(), "{name}");
    }
}

#[test]
fn the_bundle_image_is_labelled_as_annotations_yaml_says() {
    let dockerfile = bundle_dockerfile();
    assert!(dockerfile.starts_with("FROM scratch\n"));
    for (key, value) in bundle_annotations() {
        assert!(
            dockerfile.contains(&format!("LABEL {key}={value}\n")),
            "{key}"
        );
    }
    assert_eq!(
        bundle_annotations()["operators.operatorframework.io.bundle.channel.default.v1"],
        CHANNEL
    );
}

#[test]
fn the_catalog_chains_releases_and_carries_their_objects() {
    let releases = [release("v1.2.2", None), release("v1.2.3", Some("v1.2.2"))];
    let objects = catalog(&releases).unwrap();
    assert_eq!(objects[0]["schema"], "olm.package");
    assert_eq!(objects[0]["defaultChannel"], CHANNEL);
    assert_eq!(objects[1]["schema"], "olm.channel");
    assert_eq!(
        objects[1]["entries"],
        json!([
            {"name": "ferrolb.v1.2.2", "skipRange": "<1.2.2"},
            {"name": "ferrolb.v1.2.3", "replaces": "ferrolb.v1.2.2", "skipRange": "<1.2.3"},
        ])
    );
    for (bundle, release) in objects[2..].iter().zip(&releases) {
        assert_eq!(bundle["schema"], "olm.bundle");
        assert_eq!(bundle["name"], json!(release.csv_name()));
        assert_eq!(bundle["image"], "", "OLM would unpack a named bundle image");
        assert_eq!(
            bundle["relatedImages"],
            json!([{"name": "ferrolb", "image": release.settings.image}])
        );
        let carried: Vec<Value> = bundle["properties"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["type"] == "olm.bundle.object")
            .map(|p| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(p["value"]["data"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice(&data).unwrap()
            })
            .collect();
        let manifests: Vec<Value> = bundle_manifests(release)
            .unwrap()
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        assert_eq!(carried, manifests);
        let package = bundle["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == "olm.package")
            .unwrap();
        assert_eq!(package["value"]["version"], json!(release.semver()));
        let provided: Vec<&Value> = bundle["properties"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["type"] == "olm.gvk")
            .map(|p| &p["value"])
            .collect();
        assert_eq!(
            provided,
            [
                &json!({"group": "ferrolb.io", "kind": "LoadBalancerConfig", "version": "v1alpha1"}),
                &json!({"group": "ferrolb.io", "kind": "BGPSession", "version": "v1alpha1"}),
            ]
        );
    }
    assert!(catalog(&[]).is_err());
}
