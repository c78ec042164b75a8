//! What the operands look like, as rules, plus golden files: `config/` for the default spec, and
//! `golden/custom.yaml` for a spec that sets every knob (`UPDATE_GOLDEN=1 cargo test -p
//! ferrolb-operator render` rewrites it after a deliberate change).

use ferrolb_api::LoadBalancerConfigSpec;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};

use super::*;

fn settings() -> Settings {
    Settings {
        image: "registry.example/ferrolb:v9.9.9".to_owned(),
        version: "v9.9.9".to_owned(),
    }
}

/// A spec that sets every knob the operands take.
fn custom() -> LoadBalancerConfigSpec {
    serde_json::from_value(json!({
        "namespace": "lb",
        "logLevel": "debug",
        "loadBalancerClass": "example.com/lb",
        "controller": {
            "replicas": 3,
            "nodeSelector": {"node-role.example/infra": ""},
            "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            "priorityClassName": "system-cluster-critical",
        },
        "speaker": {
            "nodeSelector": {"ferrolb.io/speaker": "true"},
            "tolerations": [
                {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoExecute"}],
            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}},
            "priorityClassName": "system-node-critical",
            "excludeInterfaces": ["^bond\\d+$", "^ens9$"],
        },
    }))
    .unwrap()
}

fn controller_pod(o: &Operands) -> &PodSpec {
    o.controller
        .spec
        .as_ref()
        .and_then(|d| d.template.spec.as_ref())
        .unwrap()
}

fn speaker_pod(o: &Operands) -> &PodSpec {
    o.speaker
        .spec
        .as_ref()
        .and_then(|d| d.template.spec.as_ref())
        .unwrap()
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn every_knob_reaches_the_pods() {
    let o = operands(&custom(), &settings());
    let deployment = o.controller.spec.as_ref().unwrap();
    assert_eq!(deployment.replicas, Some(3));
    let c = controller_pod(&o);
    assert_eq!(
        c.node_selector
            .as_ref()
            .unwrap()
            .get("node-role.example/infra"),
        Some(&String::new())
    );
    assert_eq!(c.tolerations.as_ref().unwrap().len(), 1);
    assert!(c.affinity.as_ref().unwrap().node_affinity.is_some());
    assert!(
        c.affinity.as_ref().unwrap().pod_anti_affinity.is_none(),
        "an affinity from the spec replaces the default spread"
    );
    assert_eq!(
        c.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    let container = &c.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/ferrolb:v9.9.9")
    );
    assert_eq!(
        env(container, "FERROLB_LOG_LEVEL").as_deref(),
        Some("debug")
    );
    let limits = container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["memory"].0, "256Mi");

    let s = speaker_pod(&o);
    assert_eq!(
        s.node_selector.as_ref().unwrap().get("ferrolb.io/speaker"),
        Some(&"true".to_owned())
    );
    let keys: Vec<&str> = s
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.as_deref())
        .collect();
    assert_eq!(
        keys,
        [
            "node-role.kubernetes.io/control-plane",
            "node.kubernetes.io/network-unavailable",
            "dedicated"
        ],
        "the speaker's own tolerations stay, the spec's are added once"
    );
    assert_eq!(
        s.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let container = &s.containers[0];
    assert_eq!(
        env(container, "FERROLB_LOG_LEVEL").as_deref(),
        Some("debug")
    );
    let args = container.args.as_ref().unwrap();
    assert!(args.contains(&"--exclude-interface=^bond\\d+$".to_owned()));
    assert!(args.contains(&"--exclude-interface=^ens9$".to_owned()));
    assert_eq!(
        container
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["cpu"]
            .0,
        "20m"
    );
}

#[test]
fn defaults_spread_controllers_and_size_both() {
    let o = operands(&LoadBalancerConfigSpec::default(), &settings());
    assert_eq!(o.controller.spec.as_ref().unwrap().replicas, Some(2));
    let c = controller_pod(&o);
    assert!(c.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
    assert_eq!(
        env(&c.containers[0], "FERROLB_LOG_LEVEL").as_deref(),
        Some("info")
    );
    for pod in [c, speaker_pod(&o)] {
        let r = pod.containers[0].resources.as_ref().unwrap();
        assert!(r.requests.as_ref().unwrap().contains_key("memory"));
        assert!(r.limits.as_ref().unwrap().contains_key("memory"));
    }
}

#[test]
fn everything_namespaced_lives_in_the_operand_namespace() {
    let o = operands(&custom(), &settings());
    assert_eq!(o.namespace.metadata.name.as_deref(), Some("lb"));
    let v = serde_json::to_value(&o.service_accounts).unwrap();
    let mut namespaces: Vec<Value> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|sa| sa["metadata"]["namespace"].clone())
        .collect();
    namespaces.push(json!(o.controller.metadata.namespace));
    namespaces.push(json!(o.speaker.metadata.namespace));
    for r in &o.roles {
        namespaces.push(json!(r.metadata.namespace));
    }
    for b in &o.role_bindings {
        namespaces.push(json!(b.metadata.namespace));
        for s in b.subjects.iter().flatten() {
            namespaces.push(json!(s.namespace));
        }
    }
    for b in &o.cluster_role_bindings {
        for s in b.subjects.iter().flatten() {
            namespaces.push(json!(s.namespace));
        }
    }
    assert!(namespaces.iter().all(|n| n == "lb"), "{namespaces:?}");
}

#[test]
fn the_namespace_admits_the_speaker_under_pod_security() {
    let ns = namespace(&LoadBalancerConfigSpec::default(), &settings());
    let labels = ns.metadata.labels.unwrap();
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels[&format!("pod-security.kubernetes.io/{mode}")],
            "privileged"
        );
    }
}

#[test]
fn least_privilege_no_wildcards_no_secrets_and_only_net_raw() {
    for role in cluster_roles(&settings()) {
        for rule in role.rules.iter().flatten() {
            let all = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten());
            for word in all {
                assert_ne!(word, "*", "wildcard in {:?}", role.metadata.name);
            }
            assert!(
                !rule.resources.iter().flatten().any(|r| r == "secrets"),
                "{:?} may read Secrets",
                role.metadata.name
            );
            assert!(!rule.verbs.iter().any(|v| v == "escalate" || v == "bind"));
        }
    }
    let o = operands(&LoadBalancerConfigSpec::default(), &settings());
    let c = &controller_pod(&o).containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(sc.capabilities.as_ref().unwrap().add.is_none());
    let psc = controller_pod(&o).security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    let s = &speaker_pod(&o).containers[0];
    let caps = s
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_RAW".to_owned()][..]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
}

#[test]
fn selectors_stay_stable_across_versions_and_match_the_pods() {
    let old = operands(&LoadBalancerConfigSpec::default(), &settings());
    let new = operands(
        &LoadBalancerConfigSpec::default(),
        &Settings {
            image: "registry.example/ferrolb:v10.0.0".into(),
            version: "v10.0.0".into(),
        },
    );
    let d = |o: &Operands| o.controller.spec.as_ref().unwrap().selector.clone();
    let s = |o: &Operands| o.speaker.spec.as_ref().unwrap().selector.clone();
    assert_eq!(d(&old), d(&new), "a Deployment's selector is immutable");
    assert_eq!(s(&old), s(&new), "a DaemonSet's selector is immutable");
    let template_labels = old
        .speaker
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    for (k, v) in s(&old).match_labels.unwrap() {
        assert_eq!(template_labels.get(&k), Some(&v));
    }
    assert_eq!(
        template_labels["app.kubernetes.io/managed-by"],
        "ferrolb-operator"
    );
    assert_eq!(template_labels["app.kubernetes.io/version"], "v9.9.9");
}

#[test]
fn bindings_name_only_the_shipped_cluster_roles() {
    let o = operands(&custom(), &settings());
    let names: Vec<String> = cluster_roles(&settings())
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect();
    for b in &o.cluster_role_bindings {
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert!(names.contains(&b.role_ref.name));
    }
    assert_eq!(names, [CONTROLLER_ROLE, SPEAKER_ROLE]);
}

#[test]
fn the_committed_install_files_are_what_the_code_renders() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in crate::manifests::files().unwrap() {
        let committed = std::fs::read_to_string(root.join(&file.path)).unwrap_or_default();
        assert!(
            committed == file.text,
            "{} is stale: run `make generate` and commit the result",
            file.path
        );
    }
}

#[test]
fn a_spec_with_every_knob_renders_as_the_golden_file() {
    let o = operands(&custom(), &settings());
    let mut text = to_yaml(std::slice::from_ref(&o.namespace)).unwrap();
    text.push_str(&to_yaml(&o.service_accounts).unwrap());
    text.push_str(&to_yaml(&o.cluster_role_bindings).unwrap());
    text.push_str(&to_yaml(&o.roles).unwrap());
    text.push_str(&to_yaml(&o.role_bindings).unwrap());
    text.push_str(&document(&o.controller).unwrap());
    text.push_str(&document(&o.speaker).unwrap());
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/render/golden/custom.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        golden == text,
        "{} differs from the rendering; if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}

#[test]
fn yaml_reads_back_as_the_same_objects() {
    let o = operands(&custom(), &settings());
    let yaml = document(&o.speaker).unwrap();
    let back: k8s_openapi::api::apps::v1::DaemonSet = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, o.speaker);
}

#[test]
fn a_new_membership_secret_counts_the_configs_rotation_request_as_served() {
    let config: ferrolb_api::LoadBalancerConfig = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1alpha1", "kind": "LoadBalancerConfig",
        "metadata": {"name": "ferrolb", "uid": "u1",
            "annotations": {"ferrolb.io/rotate-membership-key": "2025-06-01"}},
        "spec": {},
    }))
    .unwrap();
    let secret = membership_secret(&config, "ferrolb-system", "00ff".to_owned());
    assert_eq!(
        secret
            .metadata
            .annotations
            .unwrap()
            .get(crate::rotation::REQUEST)
            .map(String::as_str),
        Some("2025-06-01")
    );
    assert_eq!(
        secret.string_data.unwrap().get("key").map(String::as_str),
        Some("00ff")
    );
    let mut plain = config.clone();
    plain.metadata.annotations = None;
    let secret = membership_secret(&plain, "ferrolb-system", "00ff".to_owned());
    assert_eq!(secret.metadata.annotations, None);
}

#[test]
fn the_speaker_may_get_only_the_secrets_the_config_names_as_bgp_passwords() {
    let role = |spec: &LoadBalancerConfigSpec| speaker_bindings(spec, &settings()).1;
    let secrets = |role: &k8s_openapi::api::rbac::v1::Role| -> Vec<PolicyRuleView> {
        role.rules
            .iter()
            .flatten()
            .filter(|r| r.resources.iter().flatten().any(|r| r == "secrets"))
            .map(|r| (r.verbs.clone(), r.resource_names.clone()))
            .collect()
    };
    assert!(secrets(&role(&LoadBalancerConfigSpec::default())).is_empty());
    let spec: LoadBalancerConfigSpec = serde_json::from_value(json!({
        "bgpPeers": [
            {"name": "a", "myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1",
             "passwordSecretRef": {"name": "tor-b"}},
            {"name": "b", "myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.2"},
            {"name": "c", "myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.3",
             "passwordSecretRef": {"name": "tor-a", "key": "md5"}},
            {"name": "d", "myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.4",
             "passwordSecretRef": {"name": "tor-b"}},
        ],
    }))
    .unwrap();
    assert_eq!(
        secrets(&role(&spec)),
        vec![(
            vec!["get".to_owned()],
            Some(vec!["tor-a".to_owned(), "tor-b".to_owned()])
        )],
        "get only, by name, each once"
    );
}

type PolicyRuleView = (Vec<String>, Option<Vec<String>>);

/// The speaker writes its BGPSessions in the operand namespace (its Role), nowhere else (not
/// its cluster role).
#[test]
fn the_speaker_writes_bgp_sessions_in_the_operand_namespace_only() {
    let (_, role, binding) = speaker_bindings(&custom(), &settings());
    assert_eq!(role.metadata.namespace.as_deref(), Some("lb"));
    assert_eq!(binding.metadata.namespace.as_deref(), Some("lb"));
    let on = |resource: &str| -> Vec<Vec<String>> {
        role.rules
            .iter()
            .flatten()
            .filter(|r| r.resources.iter().flatten().any(|r| r == resource))
            .inspect(|r| {
                assert_eq!(
                    r.api_groups.as_deref(),
                    Some(&["ferrolb.io".to_owned()][..])
                );
                assert_eq!(
                    r.resource_names, None,
                    "{resource}: every session, by any name"
                );
            })
            .map(|r| r.verbs.clone())
            .collect()
    };
    assert_eq!(
        on("bgpsessions"),
        [["get", "list", "create", "patch", "delete"].map(str::to_owned)]
    );
    assert_eq!(on("bgpsessions/status"), [["patch"].map(str::to_owned)]);
    for cluster_role in cluster_roles(&settings()) {
        for rule in cluster_role.rules.iter().flatten() {
            assert!(
                !rule
                    .resources
                    .iter()
                    .flatten()
                    .any(|r| r.starts_with("bgpsessions")),
                "{:?} grants BGPSessions cluster-wide",
                cluster_role.metadata.name
            );
        }
    }
}

/// The speaker's pod name and UID reach it, for the ownerReference on its BGPSessions.
#[test]
fn the_speaker_knows_its_pod_name_and_uid() {
    let o = operands(&LoadBalancerConfigSpec::default(), &settings());
    let container = &speaker_pod(&o).containers[0];
    let field = |name: &str| -> Option<String> {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)?
            .value_from
            .as_ref()?
            .field_ref
            .as_ref()
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(field("POD_UID").as_deref(), Some("metadata.uid"));
    assert_eq!(field("NODE_NAME").as_deref(), Some("spec.nodeName"));
}

/// The API server lets the operator create a Role only if the operator holds every permission
/// the Role grants (RBAC escalation prevention: it has no `escalate`), so its cluster role
/// covers each Role it renders, for any spec (BGP password Secrets included).
#[test]
fn the_operator_holds_every_permission_its_roles_grant() {
    let held = install::operator_cluster_role(&settings()).rules.unwrap();
    let covers = |group: &str, resource: &str, verb: &str, name: Option<&str>| {
        held.iter().any(|h| {
            let has =
                |list: &Option<Vec<String>>, want: &str| list.iter().flatten().any(|x| x == want);
            has(&h.api_groups, group)
                && has(&h.resources, resource)
                && h.verbs.iter().any(|v| v == verb)
                && match (&h.resource_names, name) {
                    (None, _) => true,
                    (Some(names), Some(name)) => names.iter().any(|n| n == name),
                    (Some(_), None) => false,
                }
        })
    };
    let with_password: LoadBalancerConfigSpec = serde_json::from_value(json!({
        "bgpPeers": [{"name": "tor", "myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1",
                      "passwordSecretRef": {"name": "tor"}}],
    }))
    .unwrap();
    for spec in [LoadBalancerConfigSpec::default(), custom(), with_password] {
        for role in operands(&spec, &settings()).roles {
            for rule in role.rules.iter().flatten() {
                let names: Vec<Option<&str>> = match &rule.resource_names {
                    None => vec![None],
                    Some(names) => names.iter().map(|n| Some(n.as_str())).collect(),
                };
                for group in rule.api_groups.iter().flatten() {
                    for resource in rule.resources.iter().flatten() {
                        for verb in &rule.verbs {
                            for name in &names {
                                assert!(
                                    covers(group, resource, verb, *name),
                                    "the operator lacks {verb} {group}/{resource} {name:?}, \
                                     which the Role {:?} grants",
                                    role.metadata.name
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
