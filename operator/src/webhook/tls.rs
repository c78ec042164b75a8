//! Where the served certificate comes from, and, on the leader, the self-managed one's upkeep.
//!
//! - Self-managed (plain manifests): the leader keeps the Secret [`certs::SECRET`] as
//!   [`certs::plan`] decides and the webhook configuration's `caBundle` equal to its trusted
//!   CAs; every replica watches the Secret and serves its `tls.crt`.
//! - Provided (OLM, cert-manager): every replica serves `tls.crt`/`tls.key` from a directory,
//!   re-read every few seconds (kubelets update mounted Secrets in place); the operator writes
//!   neither the Secret nor the `caBundle`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::certs::{self, Plan, Stored, entries};
use super::server::ServingCert;
use super::{VALIDATING_WEBHOOK, WEBHOOK_CONFIGURATION};
use crate::metrics::{CertLabels, Metrics};
use crate::render::FIELD_MANAGER;

/// How often provided files are read again.
const FILE_POLL: Duration = Duration::from_secs(5);
/// The leader's longest sleep between two looks at the Secret and the caBundle (it also wakes
/// at once when either changes).
const RECHECK: Duration = Duration::from_secs(60);

fn loaded(cert: &ServingCert, metrics: &Metrics, from: &str, crt: &[u8], key: &[u8]) {
    match cert.load(crt, key) {
        Ok(true) => {
            tracing::info!(from, "serving a new webhook certificate");
            metrics
                .webhook_cert_loads
                .get_or_create(&CertLabels { result: "loaded" })
                .inc();
        }
        Ok(false) => {}
        Err(e) => {
            // Keep serving the last good one; the error names no key material.
            tracing::error!(from, error = %e, "cannot load the webhook certificate");
            metrics
                .webhook_cert_loads
                .get_or_create(&CertLabels { result: "invalid" })
                .inc();
        }
    }
}

/// Every replica, self-managed: serves the Secret's pair, as it changes. Ends only with the
/// process.
pub async fn follow_secret(
    client: Client,
    namespace: String,
    cert: Arc<ServingCert>,
    metrics: Metrics,
) {
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", certs::SECRET));
    let mut events = watcher::watcher(secrets, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                let data = secret.data.unwrap_or_default();
                let get = |k: &str| data.get(k).map(|b| b.0.as_slice()).unwrap_or_default();
                loaded(
                    &cert,
                    &metrics,
                    "secret",
                    get(entries::TLS_CRT),
                    get(entries::TLS_KEY),
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching the webhook certificate Secret"),
        }
    }
}

/// Every replica, provided: serves `tls.crt` and `tls.key` from `dir`, read again every few
/// seconds. Ends only with the process.
pub async fn follow_files(dir: PathBuf, cert: Arc<ServingCert>, metrics: Metrics) {
    let mut last_error = String::new();
    loop {
        let read = async {
            let crt = tokio::fs::read(dir.join(entries::TLS_CRT)).await?;
            let key = tokio::fs::read(dir.join(entries::TLS_KEY)).await?;
            std::io::Result::Ok((crt, key))
        };
        match read.await {
            Ok((crt, key)) => {
                last_error.clear();
                loaded(&cert, &metrics, "files", &crt, &key);
            }
            Err(e) => {
                let why = e.to_string();
                if why != last_error {
                    tracing::error!(dir = %dir.display(), error = %why, "cannot read the webhook certificate files");
                    last_error = why;
                }
            }
        }
        tokio::time::sleep(FILE_POLL).await;
    }
}

/// The leader, self-managed: keeps the Secret and the caBundle. Ends only with leadership.
pub async fn keep(client: Client, namespace: String, service: String, lifetime: Duration) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let dns_names = certs::service_dns_names(&service, &namespace);
    // Wake on any change of the Secret or the webhook configuration (a re-applied install).
    let secret_changes = watcher::watcher(
        secrets.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", certs::SECRET)),
    )
    .default_backoff();
    let configuration_changes = watcher::watcher(
        configurations.clone(),
        watcher::Config::default().fields(&format!("metadata.name={WEBHOOK_CONFIGURATION}")),
    )
    .default_backoff();
    let mut changes = futures::stream::select(
        secret_changes.map(|_| ()).boxed(),
        configuration_changes.map(|_| ()).boxed(),
    );
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match keep_once(&secrets, &configurations, &dns_names, lifetime).await {
            Ok(wait) => {
                backoff = Duration::from_secs(1);
                wait.min(RECHECK)
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "keeping the webhook certificate");
                let wait = backoff;
                backoff = (backoff * 2).min(RECHECK);
                wait
            }
        };
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        // Several changes arrive together (our own writes among them): look once per burst.
        tokio::select! {
            () = &mut sleep => {}
            _ = changes.next() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One look: the next write of the Secret, if due, and the caBundle. Returns how long nothing
/// is due.
async fn keep_once(
    secrets: &Api<Secret>,
    configurations: &Api<ValidatingWebhookConfiguration>,
    dns_names: &[String],
    lifetime: Duration,
) -> anyhow::Result<Duration> {
    let secret = secrets.get_opt(certs::SECRET).await?;
    let stored = secret.as_ref().map(|s| Stored {
        data: s
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
        annotations: s.annotations().clone(),
    });
    let trusted = ca_bundle(&configurations.get(WEBHOOK_CONFIGURATION).await?);
    let now = Timestamp::now();
    let plan = certs::plan(stored.as_ref(), &trusted, dns_names, now, lifetime, || {
        certs::issue(dns_names, now, lifetime)
    })?;
    let (data, wait) = match plan {
        Plan::Write(next) => {
            let phase = next
                .annotations
                .get(certs::PHASE)
                .cloned()
                .unwrap_or_default();
            write_secret(secrets, secret, &next).await?;
            tracing::info!(%phase, "webhook certificate Secret written");
            // Plan again at once: the next phase may already be due (a restamp, say).
            (next.data, Duration::ZERO)
        }
        Plan::Wait(wait) => (stored.map(|s| s.data).unwrap_or_default(), wait),
    };
    let bundle = certs::trust_bundle(&data);
    if !bundle.is_empty() && bundle != trusted {
        inject_ca(configurations, &bundle).await?;
    }
    Ok(wait)
}

/// The webhook's `caBundle` as the API server has it.
fn ca_bundle(configuration: &ValidatingWebhookConfiguration) -> Vec<u8> {
    configuration
        .webhooks
        .iter()
        .flatten()
        .find(|w| w.name == VALIDATING_WEBHOOK)
        .and_then(|w| w.client_config.ca_bundle.as_ref())
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

async fn write_secret(
    secrets: &Api<Secret>,
    old: Option<Secret>,
    next: &Stored,
) -> kube::Result<()> {
    let data = next
        .data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone())))
        .collect();
    match old {
        Some(mut secret) => {
            // A replace under the read resourceVersion: a concurrent writer makes it fail and
            // the next look plans again from what is there.
            secret.data = Some(data);
            secret.metadata.annotations = Some(merged(secret.annotations(), &next.annotations));
            secrets
                .replace(certs::SECRET, &PostParams::default(), &secret)
                .await?;
        }
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(certs::SECRET.to_owned()),
                    labels: Some(
                        [
                            ("app.kubernetes.io/name", "ferrolb"),
                            ("app.kubernetes.io/component", "webhook"),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    ),
                    annotations: Some(next.annotations.clone()),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".to_owned()),
                data: Some(data),
                ..Secret::default()
            };
            secrets.create(&PostParams::default(), &secret).await?;
        }
    }
    Ok(())
}

/// The Secret's annotations with ours replaced (and ours that the plan dropped removed).
fn merged(
    current: &std::collections::BTreeMap<String, String>,
    ours: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let mut all: std::collections::BTreeMap<String, String> = current
        .iter()
        .filter(|(k, _)| !k.starts_with("ferrolb.io/webhook-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all.extend(ours.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

/// Makes the webhook's `caBundle` `bundle`. Only that field is the operator's: the rest of the
/// configuration is the install's.
async fn inject_ca(
    configurations: &Api<ValidatingWebhookConfiguration>,
    bundle: &[u8],
) -> kube::Result<()> {
    let patch = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION},
        "webhooks": [{
            "name": VALIDATING_WEBHOOK,
            "clientConfig": {"caBundle": ByteString(bundle.to_vec())},
        }],
    });
    configurations
        .patch(
            WEBHOOK_CONFIGURATION,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    tracing::info!(
        configuration = WEBHOOK_CONFIGURATION,
        "webhook caBundle injected"
    );
    Ok(())
}
