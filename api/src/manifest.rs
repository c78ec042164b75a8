//! Reading `LoadBalancerConfig` manifests as admins write them (YAML, possibly several documents),
//! with errors that say where and what: malformed YAML, a wrong kind, a wrong type or an unknown
//! field never panics and never passes silently.

use std::fmt;

use kube::Resource;
use serde_json::Value;

use crate::v1alpha1::LoadBalancerConfig;

/// Why a manifest could not be read as a `LoadBalancerConfig`.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// The stream holds no document.
    #[error("no LoadBalancerConfig found: the input is empty")]
    Empty,
    /// A document is not a LoadBalancerConfig.
    #[error(
        "document {doc}: {found} is not a LoadBalancerConfig (expected apiVersion {api_version}, kind {kind})"
    )]
    WrongKind {
        /// 1-based index of the document.
        doc: usize,
        /// What the document says it is.
        found: String,
        /// The expected apiVersion.
        api_version: String,
        /// The expected kind.
        kind: String,
    },
    /// More than one LoadBalancerConfig: only one may exist.
    #[error(
        "documents {first} and {second} are both LoadBalancerConfigs; a cluster has exactly one"
    )]
    Several {
        /// 1-based index of the first.
        first: usize,
        /// 1-based index of the second.
        second: usize,
    },
    /// Fields the API does not know, most likely typos.
    #[error("{}", UnknownFields(.0))]
    UnknownFields(Vec<String>),
    /// A field of the wrong type or shape.
    #[error("{path}: {message}")]
    Shape {
        /// JSON path of the field.
        path: String,
        /// What serde said.
        message: String,
    },
}

struct UnknownFields<'a>(&'a [String]);

impl fmt::Display for UnknownFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, path) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{path}: unknown field")?;
            if path.ends_with(".password") {
                f.write_str(" (passwords are never accepted inline: put it in a Secret and set passwordSecretRef)")?;
            }
        }
        Ok(())
    }
}

/// Parses a YAML stream that must hold exactly one `LoadBalancerConfig`.
pub fn parse_config(text: &str) -> Result<LoadBalancerConfig, ManifestError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    let api_version = LoadBalancerConfig::api_version(&()).into_owned();
    let kind = LoadBalancerConfig::kind(&()).into_owned();
    let mut found: Option<(usize, Value)> = None;
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue; // an empty document between `---` separators
        }
        let doc_api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let doc_kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        if doc_api != api_version || doc_kind != kind {
            let found = if doc_kind.is_empty() && doc_api.is_empty() {
                "a document without apiVersion and kind".to_owned()
            } else {
                format!("{doc_api}/{doc_kind}")
            };
            return Err(ManifestError::WrongKind {
                doc: i + 1,
                found,
                api_version,
                kind,
            });
        }
        if let Some((first, _)) = found {
            return Err(ManifestError::Several {
                first: first + 1,
                second: i + 1,
            });
        }
        found = Some((i, doc));
    }
    let (_, doc) = found.ok_or(ManifestError::Empty)?;
    from_value(doc)
}

/// Deserializes one document, collecting unknown fields and naming the path of a type error.
pub fn from_value(doc: Value) -> Result<LoadBalancerConfig, ManifestError> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(json_path(&path));
    let de = serde_ignored::Deserializer::new(doc, &mut record);
    let config: LoadBalancerConfig =
        serde_path_to_error::deserialize(de).map_err(|e| ManifestError::Shape {
            path: match json_path_str(&e.path().to_string()) {
                p if p.is_empty() => "(document)".to_owned(),
                p => p,
            },
            message: e.inner().to_string(),
        })?;
    // apiVersion and kind were checked above; unknown fields under metadata are Kubernetes'
    // business (it prunes or rejects them itself).
    unknown.retain(|p| p != "apiVersion" && p != "kind" && !p.starts_with("metadata."));
    if unknown.is_empty() {
        Ok(config)
    } else {
        Err(ManifestError::UnknownFields(unknown))
    }
}

fn json_path(path: &serde_ignored::Path<'_>) -> String {
    json_path_str(&path.to_string())
}

/// `spec.addressPools.1.name` → `spec.addressPools[1].name`: a path as serde_ignored and
/// serde_path_to_error print it, written the way the validator names fields.
pub fn json_path_str(dotted: &str) -> String {
    let mut out = String::with_capacity(dotted.len());
    for part in dotted.split('.').filter(|p| !p.is_empty() && *p != "?") {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "apiVersion: ferrolb.io/v1alpha1\nkind: LoadBalancerConfig\nmetadata:\n  name: ferrolb\n";

    #[test]
    fn reads_a_minimal_config_with_defaults() {
        let config = parse_config(&format!("{HEADER}spec: {{}}\n")).unwrap();
        assert_eq!(config.spec.namespace, "ferrolb-system");
        assert_eq!(config.spec.log_level, "info");
        assert_eq!(config.spec.controller.replicas, 2);
    }

    #[test]
    fn names_unknown_fields_by_path() {
        let text = format!(
            "{HEADER}spec:\n  addressPools:\n  - name: a\n    adresses: [203.0.113.0/28]\n    addresses: [203.0.113.0/28]\n  bgpPeers:\n  - name: p\n    myASN: 1\n    peerASN: 2\n    peerAddress: 198.51.100.1\n    password: hunter2\n"
        );
        let err = parse_config(&text).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("spec.addressPools[0].adresses: unknown field"),
            "{msg}"
        );
        assert!(
            msg.contains(
                "spec.bgpPeers[0].password: unknown field (passwords are never accepted inline"
            ),
            "{msg}"
        );
        assert!(
            !msg.contains("hunter2"),
            "a password must never be echoed: {msg}"
        );
    }

    #[test]
    fn names_the_path_of_a_wrong_type() {
        let text = format!(
            "{HEADER}spec:\n  bgpPeers:\n  - name: p\n    myASN: 4294967296\n    peerASN: 2\n    peerAddress: 198.51.100.1\n"
        );
        let err = parse_config(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.bgpPeers[0].myASN: invalid value"),
            "{err}"
        );
        let text = format!("{HEADER}spec:\n  addressPools: {{}}\n");
        let err = parse_config(&text).unwrap_err().to_string();
        assert!(err.starts_with("spec.addressPools: invalid type"), "{err}");
    }

    #[test]
    fn a_missing_spec_is_named() {
        let err = parse_config(HEADER).unwrap_err().to_string();
        assert_eq!(err, "(document): missing field `spec`");
    }

    #[test]
    fn rejects_wrong_kind_several_configs_empty_input_and_bad_yaml() {
        let err = parse_config("apiVersion: v1\nkind: ConfigMap\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "document 1: v1/ConfigMap is not a LoadBalancerConfig (expected apiVersion ferrolb.io/v1alpha1, kind LoadBalancerConfig)"
        );
        let two = format!("{HEADER}---\n{HEADER}");
        assert_eq!(
            parse_config(&two).unwrap_err().to_string(),
            "documents 1 and 2 are both LoadBalancerConfigs; a cluster has exactly one"
        );
        assert!(matches!(parse_config(""), Err(ManifestError::Empty)));
        assert!(matches!(
            parse_config("spec: [unclosed"),
            Err(ManifestError::Yaml(_))
        ));
        assert!(matches!(
            parse_config("- 1\n- 2\n"),
            Err(ManifestError::WrongKind { .. })
        ));
    }
}
