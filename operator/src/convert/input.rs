//! Reading the input: a YAML stream of Kubernetes objects, as `kubectl get ... -o yaml` prints
//! them (one `kind: List` with `items`) or as admins keep them (several documents).

use std::collections::BTreeMap;

use ferrolb_api::manifest::json_path_str;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ConvertError;
use super::findings::Source;

/// One object of the input, with what every conversion needs from its metadata.
#[derive(Clone, Debug)]
pub(super) struct Object {
    /// Kind, namespace and name.
    pub source: Source,
    /// `apiVersion`, e.g. `metallb.io/v1beta2`.
    pub api_version: String,
    /// `metadata.labels` (pools are selected by them).
    pub labels: BTreeMap<String, String>,
    /// `spec`, or null when the object has none.
    pub spec: Value,
}

impl Object {
    /// The API group: `metallb.io` of `metallb.io/v1beta1`, empty for the core group (`v1`).
    pub fn group(&self) -> &str {
        self.api_version
            .split_once('/')
            .map_or("", |(group, _)| group)
    }

    /// The version: `v1beta1` of `metallb.io/v1beta1`.
    pub fn version(&self) -> &str {
        self.api_version
            .split_once('/')
            .map_or(self.api_version.as_str(), |(_, version)| version)
    }
}

/// Every object in `text`, in order, with `List`s flattened.
pub(super) fn objects(text: &str) -> Result<Vec<Object>, ConvertError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ConvertError::Yaml(e.to_string()))?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        collect(doc, i + 1, &mut out)?;
    }
    Ok(out)
}

fn collect(doc: Value, index: usize, out: &mut Vec<Object>) -> Result<(), ConvertError> {
    let Value::Object(mut map) = doc else {
        return if doc.is_null() {
            Ok(()) // an empty document between `---` separators
        } else {
            Err(ConvertError::NotAnObject { doc: index })
        };
    };
    let text = |map: &serde_json::Map<String, Value>, key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let kind = text(&map, "kind");
    let api_version = text(&map, "apiVersion");
    if kind.is_empty() || api_version.is_empty() {
        return Err(ConvertError::NotAnObject { doc: index });
    }
    // `kind: List` (kubectl), or a typed list such as IPAddressPoolList (the API server).
    if kind.ends_with("List")
        && let Some(Value::Array(items)) = map.remove("items")
    {
        for item in items {
            collect(item, index, out)?;
        }
        return Ok(());
    }
    let metadata = map.remove("metadata").unwrap_or(Value::Null);
    let field = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
    let labels = metadata
        .get("labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    out.push(Object {
        source: Source {
            kind,
            namespace: field("namespace"),
            name: field("name").unwrap_or_else(|| "(unnamed)".to_owned()),
        },
        api_version,
        labels,
        spec: map.remove("spec").unwrap_or(Value::Null),
    });
    Ok(())
}

/// An object's spec read as `T`: the fields this converter does not know (as `spec.PATH`), or
/// why the spec cannot be read at all (a wrong type: `spec.PATH: what serde said`).
pub(super) fn spec<T: DeserializeOwned>(object: &Object) -> Result<(T, Vec<String>), String> {
    let spec = match &object.spec {
        Value::Null => Value::Object(serde_json::Map::new()),
        spec => spec.clone(),
    };
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(json_path(&path.to_string()));
    let de = serde_ignored::Deserializer::new(spec, &mut record);
    let spec: T = serde_path_to_error::deserialize(de)
        .map_err(|e| format!("{}: {}", json_path(&e.path().to_string()), e.inner()))?;
    Ok((spec, unknown))
}

/// `serviceAllocation.namespaces.1` → `spec.serviceAllocation.namespaces[1]`.
fn json_path(dotted: &str) -> String {
    json_path_str(&format!("spec.{dotted}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_flattened_and_empty_documents_skipped() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: metallb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {name: a, namespace: metallb-system, labels: {tier: web}}\n  spec: {addresses: [192.0.2.0/28]}\n---\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: b}\n";
        let objects = objects(text).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(
            objects[0].source.to_string(),
            "IPAddressPool metallb-system/a"
        );
        assert_eq!(objects[0].labels["tier"], "web");
        assert_eq!(objects[0].group(), "metallb.io");
        assert_eq!(objects[0].version(), "v1beta1");
        assert_eq!(objects[1].source.to_string(), "L2Advertisement b");
        assert!(objects[1].spec.is_null());
    }

    #[test]
    fn a_document_that_is_no_object_is_an_error() {
        for text in ["42\n", "- a\n", "metadata: {name: x}\n"] {
            assert!(
                matches!(objects(text), Err(ConvertError::NotAnObject { doc: 1 })),
                "{text:?}"
            );
        }
        assert!(matches!(objects("{"), Err(ConvertError::Yaml(_))));
    }
}
