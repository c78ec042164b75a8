//! Services and EndpointSlices as the speaker's watches decode them: whole, except for the
//! metadata, of which only what the speaker or kube's watcher reads is decoded. `managedFields`
//! is about half of a Service's bytes (a list of 10,000 is 24 MB of JSON) and, decoded into
//! JSON values, most of its allocations; skipping it (and annotations, owners, finalizers,
//! generateName) makes the first lists cheaper in time and memory. Each converts into the
//! k8s-openapi type the world takes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Service, ServiceSpec, ServiceStatus};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::runtime::watcher;
use serde::{Deserialize, Deserializer};

/// The metadata fields kept: identity, labels (serviceSelectors, the slices' Service name),
/// the resource version (the watcher resumes from it) and the timestamps.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

fn slim_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let Some(m) = Option::<Meta>::deserialize(deserializer)? else {
        return Ok(ObjectMeta::default());
    };
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        generation: m.generation,
        labels: m.labels,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

/// Implements [`Resource`] for a decoded type as its k8s-openapi type has it.
macro_rules! resource_as {
    ($decoded:ty, $full:ty) => {
        impl Resource for $decoded {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$full as Resource>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$full as Resource>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$full as Resource>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$full as Resource>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A Service, its metadata slimmed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DecodedService {
    #[serde(deserialize_with = "slim_meta", default)]
    metadata: ObjectMeta,
    spec: Option<ServiceSpec>,
    status: Option<ServiceStatus>,
}

resource_as!(DecodedService, Service);

impl From<DecodedService> for Service {
    fn from(d: DecodedService) -> Service {
        Service {
            metadata: d.metadata,
            spec: d.spec,
            status: d.status,
        }
    }
}

/// An EndpointSlice, its metadata slimmed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecodedSlice {
    #[serde(deserialize_with = "slim_meta", default)]
    metadata: ObjectMeta,
    // Options, as null is what Go writes for an empty list.
    address_type: Option<String>,
    endpoints: Option<Vec<Endpoint>>,
    ports: Option<Vec<EndpointPort>>,
}

resource_as!(DecodedSlice, EndpointSlice);

impl From<DecodedSlice> for EndpointSlice {
    fn from(d: DecodedSlice) -> EndpointSlice {
        EndpointSlice {
            metadata: d.metadata,
            address_type: d.address_type.unwrap_or_default(),
            endpoints: d.endpoints.unwrap_or_default(),
            ports: d.ports,
        }
    }
}

/// A watch event of a decoded type as one of its k8s-openapi type.
pub fn full<D: Into<K>, K>(event: watcher::Event<D>) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(d) => watcher::Event::Apply(d.into()),
        watcher::Event::Delete(d) => watcher::Event::Delete(d.into()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(d) => watcher::Event::InitApply(d.into()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
#[path = "decoded/tests.rs"]
mod tests;
