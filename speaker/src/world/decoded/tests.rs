use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::ObjectList;
use kube::core::WatchEvent;
use serde_json::{Value, json};

use super::*;

/// A Service and its EndpointSlice as the testbed's API server serves them (`managedFields`
/// included); the Service has two labels and a finalizer added.
const SERVICE: &str = include_str!("service.json");
const SLICE: &str = include_str!("slice.json");

/// `full` without the metadata the decoded types skip.
fn without_skipped(mut meta: ObjectMeta) -> ObjectMeta {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    meta
}

#[test]
fn a_decoded_service_is_the_service_but_for_the_skipped_metadata() {
    let full: Service = serde_json::from_str(SERVICE).unwrap();
    assert!(
        full.metadata.managed_fields.is_some(),
        "the fixture has them"
    );
    let decoded: Service = serde_json::from_str::<DecodedService>(SERVICE)
        .unwrap()
        .into();
    assert_eq!(
        decoded,
        Service {
            metadata: without_skipped(full.metadata.clone()),
            ..full.clone()
        }
    );
    // What the speaker and kube's watcher read is all there.
    assert_eq!(decoded.metadata.labels.as_ref().map(BTreeMap::len), Some(2));
    assert!(decoded.metadata.resource_version.is_some());
    assert!(decoded.metadata.uid.is_some());
    assert!(
        decoded
            .status
            .unwrap()
            .conditions
            .is_some_and(|c| c.len() == 2)
    );
}

#[test]
fn a_decoded_slice_is_the_slice_but_for_the_skipped_metadata() {
    let full: EndpointSlice = serde_json::from_str(SLICE).unwrap();
    assert!(
        full.metadata.managed_fields.is_some(),
        "the fixture has them"
    );
    assert!(
        full.metadata.owner_references.is_some(),
        "the fixture has them"
    );
    let decoded: EndpointSlice = serde_json::from_str::<DecodedSlice>(SLICE).unwrap().into();
    assert_eq!(
        decoded,
        EndpointSlice {
            metadata: without_skipped(full.metadata.clone()),
            ..full.clone()
        }
    );
    assert!(!decoded.endpoints.is_empty());
}

#[test]
fn nulls_decode_as_k8s_openapi_decodes_them() {
    // Go writes an empty list as null.
    let mut slice: Value = serde_json::from_str(SLICE).unwrap();
    slice["endpoints"] = Value::Null;
    slice["ports"] = Value::Null;
    slice["metadata"]["labels"] = Value::Null;
    let full: EndpointSlice = serde_json::from_value(slice.clone()).unwrap();
    let decoded: EndpointSlice = serde_json::from_value::<DecodedSlice>(slice)
        .unwrap()
        .into();
    assert_eq!(decoded.endpoints, full.endpoints);
    assert!(decoded.endpoints.is_empty());
    assert_eq!(
        decoded,
        EndpointSlice {
            metadata: without_skipped(full.metadata.clone()),
            ..full
        }
    );

    let bare = json!({"apiVersion": "v1", "kind": "Service", "metadata": null});
    let full: Service = serde_json::from_value(bare.clone()).unwrap();
    let decoded: Service = serde_json::from_value::<DecodedService>(bare)
        .unwrap()
        .into();
    assert_eq!(decoded, full);
}

#[test]
fn lists_and_watch_events_decode_with_their_resource_versions() {
    let service: Value = serde_json::from_str(SERVICE).unwrap();
    let list = json!({
        "apiVersion": "v1", "kind": "ServiceList",
        "metadata": {"resourceVersion": "4711", "continue": "next"},
        "items": [service.clone(), service.clone()],
    });
    let list: ObjectList<DecodedService> = serde_json::from_value(list).unwrap();
    assert_eq!(list.metadata.resource_version.as_deref(), Some("4711"));
    assert_eq!(list.metadata.continue_.as_deref(), Some("next"));
    assert_eq!(list.items.len(), 2);
    assert_eq!(
        list.items[0].resource_version(),
        service["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned)
    );

    let event = json!({"type": "MODIFIED", "object": service});
    match serde_json::from_value::<WatchEvent<DecodedService>>(event).unwrap() {
        WatchEvent::Modified(s) => assert_eq!(s.name_any(), "bg-00042"),
        other => panic!("{other:?}"),
    }
    let bookmark = json!({"type": "BOOKMARK", "object": {
        "apiVersion": "v1", "kind": "Service", "metadata": {"resourceVersion": "4712"}}});
    assert!(matches!(
        serde_json::from_value::<WatchEvent<DecodedService>>(bookmark).unwrap(),
        WatchEvent::Bookmark(b) if b.metadata.resource_version == "4712"
    ));
}

#[test]
fn the_decoded_types_are_served_where_their_kinds_are() {
    assert_eq!(
        DecodedService::url_path(&(), Some("ns")),
        Service::url_path(&(), Some("ns"))
    );
    assert_eq!(
        DecodedSlice::url_path(&(), None),
        EndpointSlice::url_path(&(), None)
    );
    assert_eq!(DecodedSlice::api_version(&()), "discovery.k8s.io/v1");
}
