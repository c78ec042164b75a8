//! Reads the Secrets that hold the BGP peers' TCP-MD5 passwords, off the event loop.
//!
//! The speaker may `get` only the Secrets the LoadBalancerConfig references, in its own namespace
//! (the operator grants exactly those names), so it cannot watch them: a task reads each wanted
//! Secret when the wanted set changes and every [`REREAD`] after, and publishes what it read when
//! that changed. Nothing here logs a Secret's data.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::watch;

/// How often the wanted Secrets are read again (a changed password takes effect this late).
pub const REREAD: Duration = Duration::from_secs(30);

/// A Secret as read: its data (None: it does not exist), or why it could not be read.
pub type Read = Result<Option<BTreeMap<String, Vec<u8>>>, String>;

/// Every wanted Secret, by name, as last read.
pub type SecretsRead = BTreeMap<String, Read>;

/// The handle on the reading task; dropping it ends the task.
#[derive(Debug)]
pub struct SecretReader {
    wanted: watch::Sender<BTreeSet<String>>,
    read: watch::Receiver<SecretsRead>,
}

impl SecretReader {
    /// Starts reading Secrets of `namespace` with `client`; none are wanted yet.
    pub fn spawn(client: Client, namespace: &str) -> SecretReader {
        let (wanted, wanted_rx) = watch::channel(BTreeSet::new());
        let (read_tx, read) = watch::channel(SecretsRead::new());
        let api: Api<Secret> = Api::namespaced(client, namespace);
        tokio::spawn(read_loop(api, wanted_rx, read_tx));
        SecretReader { wanted, read }
    }

    /// The Secrets to read from now on (read at once when the set changed).
    pub fn set_wanted(&self, names: BTreeSet<String>) {
        self.wanted.send_if_modified(|w| {
            let changed = *w != names;
            *w = names;
            changed
        });
    }

    /// What was read; `changed()` on it wakes the loop when a read differs from the last.
    pub fn read(&mut self) -> &mut watch::Receiver<SecretsRead> {
        &mut self.read
    }
}

async fn read_loop(
    api: Api<Secret>,
    mut wanted: watch::Receiver<BTreeSet<String>>,
    read: watch::Sender<SecretsRead>,
) {
    loop {
        let names = wanted.borrow_and_update().clone();
        let mut now = SecretsRead::new();
        for name in names {
            let result = match api.get_opt(&name).await {
                Ok(secret) => Ok(secret.map(|s| {
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect()
                })),
                Err(kube::Error::Api(e)) if e.code == 403 => Err(format!(
                    "the speaker may not read Secret {name:?} (the operator grants only the Secrets the LoadBalancerConfig references)"
                )),
                Err(e) => Err(format!("cannot read Secret {name:?}: {e}")),
            };
            now.insert(name, result);
        }
        read.send_if_modified(|r| {
            let changed = *r != now;
            *r = now;
            changed
        });
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(REREAD) => {}
            () = read.closed() => return,
        }
    }
}
