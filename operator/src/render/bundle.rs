//! The OLM bundle (registry+v1) and a file-based catalog, rendered from the same functions as the
//! plain manifests: the ClusterServiceVersion carries the operator Deployment, its permissions
//! and its webhook; the CRDs, the operands' cluster roles and the disruption budget travel beside
//! it in `manifests/`.
//!
//! What differs from the plain install, and why:
//! - OLM makes the webhook's Service, configuration and certificate: the Deployment runs with
//!   `--webhook-certs=files` and reads the certificate OLM mounts. OLM's webhook definitions
//!   have no `matchConditions`, so under OLM a spec-preserving update (finalizers, labels) also
//!   reaches the webhook, which admits it.
//! - The operand image is named by `RELATED_IMAGE_FERROLB` and listed in `relatedImages`, so a
//!   disconnected mirror knows every image to copy.
//! - OLM picks the namespace (the OperatorGroup's), so no object here names one.
//! - The BGPSession is marked internal (`operators.operatorframework.io/internal-objects`): the
//!   speakers write them, so the console offers no form to create one, and it has no example.

use std::collections::BTreeMap;

use base64::Engine as _;
use ferrolb_api::wiring::env;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::install::{OPERATOR, operator_deployment, operator_rbac};
use super::webhook::{TIMEOUT_SECONDS, operator_disruption_budget, webhook_configuration};
use super::workloads::value_env;
use super::{Settings, YamlError, cluster_roles};
use crate::webhook::PORT;

/// The OLM package.
pub const PACKAGE: &str = "ferrolb";
/// The channel every release is published in.
pub const CHANNEL: &str = "stable";
/// Where OLM mounts the webhook certificate it makes (`tls.crt`, `tls.key`).
pub const OLM_CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";
/// The oldest Kubernetes FerroLB runs on: `matchConditions` on webhooks, CEL `messageExpression`
/// and `fieldPath` in the CRD are GA in 1.30.
pub const MIN_KUBE_VERSION: &str = "1.30.0";

/// The CSV annotation listing the CRDs the console hides (their objects are not for people to
/// create).
pub const INTERNAL_OBJECTS: &str = "operators.operatorframework.io/internal-objects";

/// The samples under `config/samples/`, which become the CSV's `alm-examples`.
pub const SAMPLES: [&str; 2] = [
    include_str!("../../../config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml"),
    include_str!("../../../config/samples/ferrolb_v1alpha1_loadbalancerconfig_bgp.yaml"),
];

/// One release in the catalog: its version and the one it upgrades from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The operator's settings (image and version, `vX.Y.Z`).
    pub settings: Settings,
    /// The version this one replaces in the channel (`vX.Y.Z`), if any.
    pub replaces: Option<String>,
}

impl Release {
    /// `X.Y.Z`, without the `v`.
    pub fn semver(&self) -> &str {
        self.settings
            .version
            .strip_prefix('v')
            .unwrap_or(&self.settings.version)
    }

    /// The CSV's name: `ferrolb.vX.Y.Z`.
    pub fn csv_name(&self) -> String {
        csv_name(&self.settings.version)
    }
}

fn csv_name(version: &str) -> String {
    format!(
        "{PACKAGE}.v{}",
        version.strip_prefix('v').unwrap_or(version)
    )
}

/// The Deployment OLM runs: the plain one, with the certificate OLM provides and the operand
/// image as a related image.
pub fn olm_deployment(settings: &Settings) -> Deployment {
    let mut deployment = operator_deployment(settings);
    if let Some(container) = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    {
        container.args.get_or_insert_with(Vec::new).extend([
            "--webhook-certs=files".to_owned(),
            format!("--webhook-cert-dir={OLM_CERT_DIR}"),
        ]);
        let envs = container.env.get_or_insert_with(Vec::new);
        envs.retain(|e| e.name != env::IMAGE);
        envs.push(value_env(env::RELATED_IMAGE, &settings.image));
    }
    deployment
}

/// An entry of the CSV's `customresourcedefinitions.owned`: how the console presents `crd`, the
/// kinds of the objects behind it (`resources`: the scorecard's `olm-crds-have-resources` wants
/// some for every owned CRD), and one descriptor per field of its `spec` and `status`.
fn owned_crd(
    crd: &CustomResourceDefinition,
    display_name: &str,
    description: &str,
    resources: Value,
) -> Result<Value, String> {
    let crd_json = serde_json::to_value(crd).map_err(|e| e.to_string())?;
    let version = &crd_json["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"]["properties"];
    let (mut spec_descriptors, mut status_descriptors) = (Vec::new(), Vec::new());
    descriptors(&schema["spec"], "", &mut spec_descriptors);
    descriptors(&schema["status"], "", &mut status_descriptors);
    Ok(json!({
        "name": crd.metadata.name,
        "version": version["name"],
        "kind": crd.spec.names.kind,
        "displayName": display_name,
        "description": description,
        "resources": resources,
        "specDescriptors": spec_descriptors,
        "statusDescriptors": status_descriptors,
    }))
}

/// The CSV's owned-CRD descriptors: one per field of `spec` and of `status`, with the schema's
/// description, so the console shows what `kubectl explain` shows.
fn descriptors(schema: &Value, path: &str, out: &mut Vec<Value>) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    for (name, field) in properties {
        let here = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let kind = field["type"].as_str().unwrap_or_default();
        let mut descriptor = json!({
            "path": here,
            "displayName": display_name(name),
            "description": field["description"].as_str().unwrap_or_default(),
        });
        if let Some(x) = x_descriptor(name, kind) {
            descriptor["x-descriptors"] = json!([x]);
        }
        out.push(descriptor);
        match kind {
            "object" => descriptors(field, &here, out),
            // Arrays of objects: the item fields, addressed as operator-sdk does (`list[0].x`).
            "array" if name != "conditions" => {
                descriptors(&field["items"], &format!("{here}[0]"), out);
            }
            _ => {}
        }
    }
}

fn x_descriptor(name: &str, kind: &str) -> Option<&'static str> {
    match (name, kind) {
        ("conditions", _) => Some("urn:alm:descriptor:io.kubernetes.conditions"),
        ("resources", _) => Some("urn:alm:descriptor:com.tectonic.ui:resourceRequirements"),
        ("nodeSelector", _) => Some("urn:alm:descriptor:com.tectonic.ui:selector:core:v1:Node"),
        ("tolerations", _) => Some("urn:alm:descriptor:io.kubernetes:Tolerations"),
        ("namespace", "string") => Some("urn:alm:descriptor:io.kubernetes:Namespace"),
        (_, "boolean") => Some("urn:alm:descriptor:com.tectonic.ui:booleanSwitch"),
        (_, "integer") => Some("urn:alm:descriptor:com.tectonic.ui:number"),
        (_, "string") => Some("urn:alm:descriptor:com.tectonic.ui:text"),
        _ => None,
    }
}

/// `addressPools` becomes `Address Pools`, `myASN` `My ASN`.
fn display_name(field: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = field.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let starts_word = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase() || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
        if starts_word {
            out.push(' ');
        }
        if i == 0 {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rules as the CSV spells them.
fn rules(rules: &Option<Vec<PolicyRule>>) -> Value {
    json!(rules.as_deref().unwrap_or_default())
}

/// The samples as JSON objects (the `alm-examples` annotation).
fn examples() -> Result<Value, String> {
    SAMPLES
        .iter()
        .map(|text| serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

const DESCRIPTION: &str = "\
FerroLB gives Services of type `LoadBalancer` external IP addresses on bare-metal Kubernetes, \
and makes them reachable from the network.

* **Address pools**: IPv4 and IPv6 ranges, per-namespace and per-Service choices, shared IPs.
* **Layer 2**: one node answers ARP and NDP for each IP; another takes over within a second when \
it fails.
* **BGP**: sessions with the network's routers, with BFD and graceful restart; every node's \
sessions are listed as `BGPSession` objects in the operands' namespace.

The operator owns the whole lifecycle from one cluster-wide `LoadBalancerConfig` named `ferrolb`: \
it validates it with an admission webhook (an invalid config is refused with the field and the \
value; a bad config never replaces the one in force), deploys the controller and the speakers \
with least-privilege identities, upgrades them without moving an IP, reports `Available`, \
`Progressing`, `Degraded`, `Upgradeable` and `ConfigValid`, and removes everything when the \
config is deleted.

Install, then create the config (samples: Layer 2, BGP):

```
kubectl apply -f - <<EOF
apiVersion: ferrolb.io/v1alpha1
kind: LoadBalancerConfig
metadata: {name: ferrolb}
spec:
  addressPools: [{name: lan, addresses: [192.0.2.240/28]}]
  l2Advertisements: [{name: lan, addressPools: [lan]}]
EOF
```

Upgrades wait while FerroLB is degraded or rolling out (the `Upgradeable` condition, reported \
to OLM). Uninstall: delete the config first (the operator removes the controller and the \
speakers), then the subscription and the ClusterServiceVersion.";

/// An SVG icon: a load balancer fanning out to three nodes.
const ICON_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" rx="12" fill="#b7410e"/><circle cx="32" cy="16" r="7" fill="#fff"/><path d="M32 23v9M32 32L14 44M32 32v12M32 32l18 12" stroke="#fff" stroke-width="3" fill="none"/><rect x="8" y="44" width="12" height="10" rx="2" fill="#fff"/><rect x="26" y="44" width="12" height="10" rx="2" fill="#fff"/><rect x="44" y="44" width="12" height="10" rx="2" fill="#fff"/></svg>"##;

/// The ClusterServiceVersion of `release`.
pub fn cluster_service_version(release: &Release) -> Result<Value, String> {
    let settings = &release.settings;
    let (sa, cluster_role, _, role, _) = operator_rbac(settings);
    let service_account = sa.metadata.name.unwrap_or_default();
    let deployment = olm_deployment(settings);
    let webhook = webhook_configuration(settings);
    let webhook = webhook
        .webhooks
        .and_then(|w| w.into_iter().next())
        .ok_or("the webhook configuration has no webhook")?;

    let [(_, config_crd), (_, session_crd)] = ferrolb_api::crd::crds();
    let owned = [
        owned_crd(
            &config_crd,
            "Load Balancer Config",
            "The one cluster-wide FerroLB configuration (named ferrolb): address pools, advertisements, BGP peers and how the controller and the speakers run.",
            json!([
                {"kind": "Namespace", "version": "v1"},
                {"kind": "ServiceAccount", "version": "v1"},
                {"kind": "Secret", "version": "v1"},
                {"kind": "Deployment", "version": "v1"},
                {"kind": "DaemonSet", "version": "v1"},
                {"kind": "Role", "version": "v1"},
                {"kind": "RoleBinding", "version": "v1"},
                {"kind": "ClusterRoleBinding", "version": "v1"},
            ]),
        )?,
        // Its resource: the speaker Pod that writes it and owns it.
        owned_crd(
            &session_crd,
            "BGP Session",
            "One BGP session of one node's speaker with one peer of the config's bgpPeers, as that speaker reports it: its state, since when it is up or down, the routes the peer holds from the node, the last error. Written by the speakers in the operands' namespace and owned by the speaker pod, so it goes with the pod; read-only for people.",
            json!([{"kind": "Pod", "version": "v1"}]),
        )?,
    ];

    let examples = serde_json::to_string(&examples()?).map_err(|e| e.to_string())?;
    let labels = deployment.metadata.labels.clone().unwrap_or_default();
    let mut annotations = BTreeMap::from([
        ("alm-examples".to_owned(), examples),
        ("capabilities".to_owned(), "Seamless Upgrades".to_owned()),
        ("categories".to_owned(), "Networking".to_owned()),
        ("containerImage".to_owned(), settings.image.clone()),
        (
            "description".to_owned(),
            "Load balancer for bare-metal Kubernetes: Layer 2 (ARP/NDP) and BGP.".to_owned(),
        ),
        (
            "operatorframework.io/suggested-namespace".to_owned(),
            super::install::OPERATOR_NAMESPACE.to_owned(),
        ),
        (
            "repository".to_owned(),
            "https://github.com/ferrolb/ferrolb".to_owned(),
        ),
        ("support".to_owned(), "FerroLB maintainers".to_owned()),
        (
            "features.operators.openshift.io/disconnected".to_owned(),
            "true".to_owned(),
        ),
        (
            "features.operators.openshift.io/fips-compliant".to_owned(),
            "false".to_owned(),
        ),
        (
            "features.operators.openshift.io/proxy-aware".to_owned(),
            "false".to_owned(),
        ),
        (
            "features.operators.openshift.io/tls-profiles".to_owned(),
            "false".to_owned(),
        ),
        (
            "features.operators.openshift.io/token-auth-aws".to_owned(),
            "false".to_owned(),
        ),
        (
            "features.operators.openshift.io/token-auth-azure".to_owned(),
            "false".to_owned(),
        ),
        (
            "features.operators.openshift.io/token-auth-gcp".to_owned(),
            "false".to_owned(),
        ),
    ]);
    // Every earlier version may upgrade straight to this one.
    annotations.insert("olm.skipRange".to_owned(), format!("<{}", release.semver()));
    annotations.insert(
        INTERNAL_OBJECTS.to_owned(),
        json!([session_crd.metadata.name]).to_string(),
    );

    let mut spec = json!({
        "displayName": "FerroLB",
        "description": DESCRIPTION,
        "version": release.semver(),
        "minKubeVersion": MIN_KUBE_VERSION,
        "maturity": "alpha",
        "provider": {"name": "FerroLB", "url": "https://github.com/ferrolb/ferrolb"},
        "maintainers": [{"name": "FerroLB maintainers", "email": "maintainers@ferrolb.io"}],
        "links": [
            {"name": "Source", "url": "https://github.com/ferrolb/ferrolb"},
            {"name": "Operations guide", "url": "https://github.com/ferrolb/ferrolb/blob/main/docs/operations.md"},
        ],
        "keywords": ["load balancer", "bare metal", "layer 2", "arp", "ndp", "bgp", "bfd", "networking"],
        "icon": [{
            "base64data": base64::engine::general_purpose::STANDARD.encode(ICON_SVG),
            "mediatype": "image/svg+xml",
        }],
        "installModes": [
            {"type": "OwnNamespace", "supported": false},
            {"type": "SingleNamespace", "supported": false},
            {"type": "MultiNamespace", "supported": false},
            {"type": "AllNamespaces", "supported": true},
        ],
        "customresourcedefinitions": {"owned": owned},
        "install": {"strategy": "deployment", "spec": {
            "clusterPermissions": [{"serviceAccountName": service_account, "rules": rules(&cluster_role.rules)}],
            "permissions": [{"serviceAccountName": service_account, "rules": rules(&role.rules)}],
            "deployments": [{
                "name": OPERATOR,
                "label": labels,
                "spec": deployment.spec,
            }],
        }},
        "webhookdefinitions": [{
            "type": "ValidatingAdmissionWebhook",
            "generateName": webhook.name,
            "deploymentName": OPERATOR,
            "containerPort": 443,
            "targetPort": PORT,
            "webhookPath": webhook.client_config.service.and_then(|s| s.path),
            "rules": webhook.rules,
            "failurePolicy": webhook.failure_policy,
            "matchPolicy": webhook.match_policy,
            "sideEffects": webhook.side_effects,
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": webhook.admission_review_versions,
        }],
        "relatedImages": [{"name": "ferrolb", "image": settings.image}],
    });
    if let Some(replaces) = &release.replaces {
        spec["replaces"] = json!(csv_name(replaces));
    }
    Ok(json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": release.csv_name(),
            "annotations": annotations,
            "labels": {"operatorframework.io/arch.amd64": "supported", "operatorframework.io/os.linux": "supported"},
        },
        "spec": spec,
    }))
}

/// The bundle's `metadata/annotations.yaml` labels, also the bundle image's labels.
pub fn bundle_annotations() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        (
            "operators.operatorframework.io.bundle.mediatype.v1",
            "registry+v1",
        ),
        (
            "operators.operatorframework.io.bundle.manifests.v1",
            "manifests/",
        ),
        (
            "operators.operatorframework.io.bundle.metadata.v1",
            "metadata/",
        ),
        ("operators.operatorframework.io.bundle.package.v1", PACKAGE),
        ("operators.operatorframework.io.bundle.channels.v1", CHANNEL),
        (
            "operators.operatorframework.io.bundle.channel.default.v1",
            CHANNEL,
        ),
        (
            "operators.operatorframework.io.test.mediatype.v1",
            "scorecard+v1",
        ),
        (
            "operators.operatorframework.io.test.config.v1",
            "tests/scorecard/",
        ),
    ])
}

/// `bundle.Dockerfile`: the bundle image, `FROM scratch` with the annotations as labels.
pub fn bundle_dockerfile() -> String {
    let mut text = String::from("FROM scratch\n\n");
    for (key, value) in bundle_annotations() {
        text.push_str(&format!("LABEL {key}={value}\n"));
    }
    text.push_str(
        "\nCOPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\nCOPY bundle/tests/scorecard /tests/scorecard/\n",
    );
    text
}

/// The scorecard's basic and OLM suites; the test image is built from operator-sdk's module.
/// `scorecard-test` takes a test's name (`basic-check-spec`); the label, as operator-sdk's own
/// configs have it, carries a `-test` suffix.
pub fn scorecard_config(image: &str) -> Value {
    let test = |suite: &str, name: &str| {
        json!({
            "entrypoint": ["scorecard-test", name],
            "image": image,
            "labels": {"suite": suite, "test": format!("{name}-test")},
        })
    };
    json!({
        "apiVersion": "scorecard.operatorframework.io/v1alpha3",
        "kind": "Configuration",
        "metadata": {"name": "config"},
        "stages": [{"parallel": true, "tests": [
            test("basic", "basic-check-spec"),
            test("olm", "olm-bundle-validation"),
            test("olm", "olm-crds-have-validation"),
            test("olm", "olm-crds-have-resources"),
            test("olm", "olm-spec-descriptors"),
            test("olm", "olm-status-descriptors"),
        ]}],
    })
}

/// Every object of the bundle's `manifests/`, by file name.
pub fn bundle_manifests(release: &Release) -> Result<Vec<(String, Value)>, String> {
    let settings = &release.settings;
    let mut files = vec![(
        format!("{PACKAGE}.clusterserviceversion.yaml"),
        cluster_service_version(release)?,
    )];
    for (file, crd) in ferrolb_api::crd::crds() {
        files.push((file.to_owned(), json(&crd)?));
    }
    for role in cluster_roles(settings) {
        let name = role.metadata.name.clone().unwrap_or_default();
        files.push((
            format!("{name}_rbac.authorization.k8s.io_v1_clusterrole.yaml"),
            json(&role)?,
        ));
    }
    files.push((
        format!("{OPERATOR}_policy_v1_poddisruptionbudget.yaml"),
        json(&operator_disruption_budget(settings))?,
    ));
    // OLM places these in the install namespace.
    for (_, object) in &mut files {
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
    }
    Ok(files)
}

/// The file-based catalog's package, its `stable` channel and one `olm.bundle` per release,
/// each carrying its objects (`olm.bundle.object`) and no bundle image: OLM installs such a
/// bundle from the catalog alone (it unpacks a bundle image whenever one is named, even with
/// the objects present), so only the operand image must be pullable or mirrored. A catalog for
/// a registry would instead `opm render` the published bundle images (`bundle.Dockerfile`).
pub fn catalog(releases: &[Release]) -> Result<Vec<Value>, String> {
    if releases.is_empty() {
        return Err("a catalog needs a release".to_owned());
    }
    let mut out = vec![
        json!({"schema": "olm.package", "name": PACKAGE, "defaultChannel": CHANNEL,
               "description": "Load balancer for bare-metal Kubernetes: Layer 2 (ARP/NDP) and BGP."}),
        json!({"schema": "olm.channel", "package": PACKAGE, "name": CHANNEL,
               "entries": releases.iter().map(|r| {
                   let mut entry = json!({"name": r.csv_name(), "skipRange": format!("<{}", r.semver())});
                   if let Some(replaces) = &r.replaces {
                       entry["replaces"] = json!(csv_name(replaces));
                   }
                   entry
               }).collect::<Vec<_>>()}),
    ];
    for release in releases {
        // The APIs the bundle provides, as `opm render` lists them: one olm.gvk per owned CRD.
        let mut properties: Vec<Value> = ferrolb_api::crd::crds()
            .iter()
            .map(|(_, crd)| json!({"type": "olm.gvk", "value": {"group": crd.spec.group, "kind": crd.spec.names.kind, "version": crd.spec.versions[0].name}}))
            .collect();
        properties.push(json!({"type": "olm.package", "value": {"packageName": PACKAGE, "version": release.semver()}}));
        for (_, object) in bundle_manifests(release)? {
            let data = serde_json::to_vec(&object).map_err(|e| e.to_string())?;
            properties.push(json!({"type": "olm.bundle.object", "value": {
                "data": base64::engine::general_purpose::STANDARD.encode(data)}}));
        }
        out.push(json!({
            "schema": "olm.bundle",
            "name": release.csv_name(),
            "package": PACKAGE,
            "image": "",
            "properties": properties,
            "relatedImages": [{"name": "ferrolb", "image": release.settings.image}],
        }));
    }
    Ok(out)
}

/// A typed object as JSON.
fn json<T: serde::Serialize>(object: &T) -> Result<Value, String> {
    serde_json::to_value(object).map_err(|e| e.to_string())
}

/// `value` as YAML (one document), for the bundle's files.
pub fn yaml(value: &Value) -> Result<String, YamlError> {
    super::document(value)
}

#[cfg(test)]
mod tests;
