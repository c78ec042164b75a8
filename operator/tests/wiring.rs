//! What the operator deploys and its own install (`config/operator`) use exactly the names in
//! `ferrolb_api::wiring` that the binaries read: ports, env names, flags, labels, the membership
//! Secret, the Lease. Checked on the objects as the API server receives them (JSON), so a field
//! the renderer misspells or drops shows here, not in a cluster.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ferrolb_api::LoadBalancerConfigSpec;
use ferrolb_api::v1alpha1::DEFAULT_NAMESPACE;
use ferrolb_api::wiring::{env, flags, labels, names, ports};
use ferrolb_operator::render::{self, Settings};
use serde_json::{Value, json};

/// Every operand the operator renders for the default spec, as JSON.
fn operands() -> Vec<Value> {
    let ops = render::operands(
        &LoadBalancerConfigSpec::default(),
        &Settings::of_this_build(),
    );
    let mut docs = vec![json(&ops.namespace)];
    docs.extend(ops.service_accounts.iter().map(json));
    docs.extend(ops.cluster_role_bindings.iter().map(json));
    docs.extend(ops.roles.iter().map(json));
    docs.extend(ops.role_bindings.iter().map(json));
    docs.push(json(&ops.controller));
    docs.push(json(&ops.speaker));
    docs
}

fn json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

/// Every document of every YAML file under `config/<dir>`.
fn documents(dir: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(dir);
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    docs
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn component_labels(component: &str) -> Value {
    json!({labels::NAME: labels::NAME_VALUE, labels::COMPONENT: component})
}

/// The one container's env: name → value (None for a downward-API reference).
fn env_of(container: &Value) -> BTreeMap<String, Option<String>> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn ports_of(container: &Value) -> BTreeMap<String, (u64, String)> {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                (
                    p["containerPort"].as_u64().unwrap(),
                    p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                ),
            )
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Checks the workload `kind/name` of `component`; returns its one container.
fn workload<'a>(docs: &'a [Value], kind: &str, name: &str, component: &str) -> &'a Value {
    let w = object(docs, kind, name);
    assert_eq!(w["metadata"]["namespace"], DEFAULT_NAMESPACE, "{name}");
    assert_eq!(
        w["metadata"]["labels"][labels::COMPONENT],
        component,
        "{name}"
    );
    assert_eq!(
        w["spec"]["selector"]["matchLabels"],
        component_labels(component),
        "{name}"
    );
    let template = &w["spec"]["template"]["metadata"]["labels"];
    for (key, value) in component_labels(component).as_object().unwrap() {
        assert_eq!(&template[key], value, "{name}: pod label {key}");
    }
    let pod = &w["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name, "{name}");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{name}");
    &containers[0]
}

#[test]
fn the_speaker_daemonset_uses_the_wiring_names() {
    let docs = operands();
    let c = workload(&docs, "DaemonSet", names::SPEAKER, labels::SPEAKER);
    assert_eq!(
        strings(&c["args"]),
        [
            format!("--{}=0.0.0.0:{}", flags::HEALTH_ADDR, ports::SPEAKER_HEALTH),
            format!("--{}={}", flags::MEMBERLIST_PORT, ports::MEMBERSHIP),
        ]
    );
    assert_eq!(
        env_of(c),
        BTreeMap::from([
            (env::NODE_NAME.to_owned(), None),
            (env::POD_NAME.to_owned(), None),
            (env::POD_NAMESPACE.to_owned(), None),
            (env::POD_UID.to_owned(), None),
            (env::LOG_LEVEL.to_owned(), Some("info".to_owned())),
            (env::LOG_FORMAT.to_owned(), Some("json".to_owned())),
            (
                env::MEMBERLIST_KEY_FILE.to_owned(),
                Some(names::MEMBERLIST_KEY_FILE.to_owned())
            ),
        ])
    );
    assert_eq!(
        ports_of(c),
        BTreeMap::from([
            (
                ports::MONITORING_NAME.to_owned(),
                (u64::from(ports::SPEAKER_HEALTH), "TCP".to_owned())
            ),
            (
                ports::MEMBERSHIP_NAME.to_owned(),
                (u64::from(ports::MEMBERSHIP), "UDP".to_owned())
            ),
        ])
    );
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0]["mountPath"], names::MEMBERLIST_MOUNT);
    let volume_name = &mounts[0]["name"];
    let ds = object(&docs, "DaemonSet", names::SPEAKER);
    let volume = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == *volume_name)
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], names::MEMBERLIST_SECRET);
    // The Secret's key is the file's name in the mount (no `items` remapping).
    assert!(volume["secret"].get("items").is_none());
}

#[test]
fn the_controller_deployment_uses_the_wiring_names() {
    let docs = operands();
    let c = workload(&docs, "Deployment", names::CONTROLLER, labels::CONTROLLER);
    assert_eq!(
        strings(&c["args"]),
        [format!(
            "--{}=0.0.0.0:{}",
            flags::HEALTH_ADDR,
            ports::CONTROLLER_HEALTH
        )]
    );
    assert_eq!(
        env_of(c),
        BTreeMap::from([
            (env::POD_NAME.to_owned(), None),
            (env::POD_NAMESPACE.to_owned(), None),
            (env::LOG_LEVEL.to_owned(), Some("info".to_owned())),
            (env::LOG_FORMAT.to_owned(), Some("json".to_owned())),
        ])
    );
    assert_eq!(
        ports_of(c),
        BTreeMap::from([(
            ports::MONITORING_NAME.to_owned(),
            (u64::from(ports::CONTROLLER_HEALTH), "TCP".to_owned())
        )])
    );
    let anti = &object(&docs, "Deployment", names::CONTROLLER)["spec"]["template"]["spec"]["affinity"]
        ["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        ["labelSelector"]["matchLabels"];
    assert_eq!(*anti, component_labels(labels::CONTROLLER));
}

#[test]
fn the_namespace_and_rbac_use_the_wiring_names() {
    let rbac = operands();
    object(&rbac, "Namespace", DEFAULT_NAMESPACE);
    for name in [names::CONTROLLER, names::SPEAKER] {
        let sa = object(&rbac, "ServiceAccount", name);
        assert_eq!(sa["metadata"]["namespace"], DEFAULT_NAMESPACE);
    }
    let election = object(&rbac, "Role", "ferrolb-controller-leader-election");
    let lease_names: BTreeSet<String> = election["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("resourceNames"))
        .flat_map(strings)
        .collect();
    assert_eq!(
        lease_names,
        BTreeSet::from([names::CONTROLLER_LEASE.to_owned()])
    );
}

/// Every env var the operands or the operator's install set is one the binaries know.
#[test]
fn every_env_name_in_the_manifests_is_a_wiring_name() {
    fn walk(v: &Value, found: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(env)) = m.get("env") {
                    found.extend(
                        env.iter()
                            .filter_map(|e| e["name"].as_str().map(str::to_owned)),
                    );
                }
                m.values().for_each(|v| walk(v, found));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    for doc in operands().iter().chain(&documents("operator")) {
        walk(doc, &mut found);
    }
    let known: BTreeSet<String> = env::ALL.iter().map(|s| (*s).to_owned()).collect();
    assert!(
        found.is_subset(&known),
        "unknown: {:?}",
        found.difference(&known)
    );
}
