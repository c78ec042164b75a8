//! The membership keys: the one this speaker signs its messages with, and the others it accepts,
//! read from the mounted Secret `ferrolb-memberlist`.
//!
//! The Secret's entries are files in one directory (`--memberlist-key-file` names the first):
//!
//! | file | meaning |
//! |---|---|
//! | `key` | signs every message this speaker sends; accepted |
//! | `next` (optional) | accepted only: the key a rotation is about to send with |
//! | `previous` (optional) | accepted only: the key a rotation has stopped sending with |
//!
//! A rotation (run by the operator, see "Rotating the membership key" in `docs/operations.md`)
//! writes `key=A` → `key=A, next=B` → `key=B, previous=A` → `key=B`, and waits at each step
//! until every node has the new Secret.
//! So every speaker accepts B before any speaker sends with it, and keeps accepting A until no
//! speaker sends with it any more: no speaker ever drops a message of a live peer, whatever the
//! order in which the kubelets deliver the Secret.
//!
//! The files are read every [`REREAD`]. A change is taken only once a second read [`CONFIRM`]
//! later agrees, so an update caught halfway (each file is opened on its own, while the kubelet
//! swaps the whole directory) is never taken: half an update could drop the key a peer already
//! sends with.
//!
//! Keys are never logged: [`Keys`] prints only their lengths and count.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrolb_api::wiring::names;
use tokio::sync::watch;

/// How often the key files are read.
pub const REREAD: Duration = Duration::from_secs(10);
/// How long after a read that differs from the keys in use a second read confirms it.
pub const CONFIRM: Duration = Duration::from_millis(500);
/// Reads before a read that keeps changing is taken anyway (the Secret changes that often only
/// by hand; the next [`REREAD`] corrects it).
const MAX_READS: usize = 5;

/// The keys of the membership: one to sign with, every one of them to verify with.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    send: Vec<u8>,
    also_accepted: Vec<Vec<u8>>,
}

impl Keys {
    /// Signs with `send` and accepts it and `also_accepted` (empty keys and repeats dropped).
    pub fn new(send: Vec<u8>, also_accepted: impl IntoIterator<Item = Vec<u8>>) -> Keys {
        let mut others: Vec<Vec<u8>> = Vec::new();
        for key in also_accepted {
            if !key.is_empty() && key != send && !others.contains(&key) {
                others.push(key);
            }
        }
        Keys {
            send,
            also_accepted: others,
        }
    }

    /// One key, to sign and verify with.
    pub fn single(key: impl Into<Vec<u8>>) -> Keys {
        Keys::new(key.into(), [])
    }

    /// The key messages are signed with.
    pub fn send(&self) -> &[u8] {
        &self.send
    }

    /// The keys messages are accepted with: the send key first, then the others.
    pub fn accepted(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.send.as_slice()).chain(self.also_accepted.iter().map(Vec::as_slice))
    }
}

impl Default for Keys {
    fn default() -> Self {
        Keys::single(Vec::new())
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("Keys")
            .field("send", &format_args!("<{} bytes>", self.send.len()))
            .field("also_accepted", &self.also_accepted.len())
            .finish()
    }
}

/// The keys from the contents of the files `key`, `next` and `previous` (`None`: missing).
/// Surrounding whitespace is not part of a key; without a non-empty `key` there are no keys
/// (the membership stops, and Kubernetes readiness decides), whatever the others hold.
pub fn from_contents(
    key: Option<&[u8]>,
    next: Option<&[u8]>,
    previous: Option<&[u8]>,
) -> Option<Keys> {
    let clean = |bytes: Option<&[u8]>| {
        bytes
            .map(<[u8]>::trim_ascii)
            .filter(|b| !b.is_empty())
            .map(<[u8]>::to_vec)
    };
    let send = clean(key)?;
    Some(Keys::new(
        send,
        [clean(next), clean(previous)].into_iter().flatten(),
    ))
}

/// Where the key files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFiles {
    /// The key to send with (`--memberlist-key-file`).
    pub key: PathBuf,
    /// The key about to be sent with: `next` beside `key`.
    pub next: PathBuf,
    /// The key sent with before: `previous` beside `key`.
    pub previous: PathBuf,
}

impl KeyFiles {
    /// `key_file`, and `next` and `previous` in its directory (the Secret's other entries).
    pub fn beside(key_file: &Path) -> KeyFiles {
        let dir = key_file.parent().unwrap_or_else(|| Path::new(""));
        KeyFiles {
            key: key_file.to_path_buf(),
            next: dir.join(names::MEMBERLIST_SECRET_NEXT_KEY),
            previous: dir.join(names::MEMBERLIST_SECRET_PREVIOUS_KEY),
        }
    }

    /// The keys the files hold now (one read of each).
    pub async fn read(&self) -> Option<Keys> {
        async fn contents(path: &Path) -> Option<Vec<u8>> {
            tokio::fs::read(path).await.ok()
        }
        let key = contents(&self.key).await;
        let next = contents(&self.next).await;
        let previous = contents(&self.previous).await;
        from_contents(key.as_deref(), next.as_deref(), previous.as_deref())
    }

    /// The keys, once two reads [`CONFIRM`] apart agree (or after [`MAX_READS`] reads).
    async fn read_confirmed(&self) -> Option<Keys> {
        let mut last = self.read().await;
        for _ in 1..MAX_READS {
            tokio::time::sleep(CONFIRM).await;
            let again = self.read().await;
            if again == last {
                break;
            }
            last = again;
        }
        last
    }

    /// Watches the files from a task of its own (file reads never hold up the speaker's loop),
    /// reading them `every` ([`REREAD`] in the speaker): the receiver is marked changed after the
    /// first read, and after every confirmed change. The task ends when the receiver is dropped.
    pub fn watch(self, every: Duration) -> watch::Receiver<Option<Keys>> {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut current = self.read_confirmed().await;
            tx.send_replace(current.clone());
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                if self.read().await == current {
                    continue;
                }
                let confirmed = self.read_confirmed().await;
                if confirmed != current {
                    current = confirmed;
                    tx.send_replace(current.clone());
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_key_file_alone_signs_and_is_the_only_key_accepted() {
        let keys = from_contents(Some(b"a\n"), None, None).unwrap();
        assert_eq!(keys.send(), b"a");
        assert_eq!(keys.accepted().collect::<Vec<_>>(), [b"a"]);
    }

    #[test]
    fn next_and_previous_are_accepted_but_never_sent_with() {
        let keys = from_contents(Some(b"b"), Some(b"c"), Some(b" a ")).unwrap();
        assert_eq!(keys.send(), b"b");
        assert_eq!(
            keys.accepted().collect::<Vec<_>>(),
            [&b"b"[..], &b"c"[..], &b"a"[..]]
        );
    }

    #[test]
    fn without_a_send_key_there_are_no_keys_at_all() {
        assert_eq!(from_contents(None, Some(b"b"), Some(b"a")), None);
        assert_eq!(from_contents(Some(b" \n"), Some(b"b"), None), None);
    }

    #[test]
    fn empty_and_repeated_keys_are_dropped() {
        let keys = from_contents(Some(b"a"), Some(b"a"), Some(b"\n")).unwrap();
        assert_eq!(keys, Keys::single(*b"a"));
        assert_eq!(
            Keys::new(b"a".to_vec(), [b"b".to_vec(), b"b".to_vec()])
                .accepted()
                .count(),
            2
        );
    }

    #[test]
    fn debug_never_shows_a_key() {
        let keys = Keys::new(b"hunter2".to_vec(), [b"swordfish".to_vec()]);
        let text = format!("{keys:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("swordfish"),
            "{text}"
        );
        assert!(text.contains("<7 bytes>"), "{text}");
    }

    #[test]
    fn next_and_previous_are_looked_for_beside_the_key_file() {
        let files = KeyFiles::beside(Path::new(names::MEMBERLIST_KEY_FILE));
        assert_eq!(
            files.next,
            Path::new(names::MEMBERLIST_MOUNT).join(names::MEMBERLIST_SECRET_NEXT_KEY)
        );
        assert_eq!(
            files.previous,
            Path::new(names::MEMBERLIST_MOUNT).join(names::MEMBERLIST_SECRET_PREVIOUS_KEY)
        );
    }

    #[tokio::test]
    async fn the_watch_reports_the_first_read_and_then_each_change() {
        let dir = std::env::temp_dir().join(format!("ferrolb-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = KeyFiles::beside(&dir.join("key"));
        std::fs::write(&files.key, "old").unwrap();
        let mut rx = files.clone().watch(Duration::from_millis(50));
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), Some(Keys::single(*b"old")));
        std::fs::write(&files.next, "new").unwrap();
        tokio::time::timeout(CONFIRM * 4, rx.changed())
            .await
            .expect("the change is seen after its confirmation")
            .unwrap();
        assert_eq!(
            *rx.borrow(),
            Some(Keys::new(b"old".to_vec(), [b"new".to_vec()]))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn key() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec![b' ', b'\n', b'a', b'b', b'c']),
            0..4,
        ))
    }

    proptest! {
        /// Whatever the files hold: the send key is `key` (trimmed), it is accepted, every
        /// accepted key is one of the files' and non-empty, and none is accepted twice.
        #[test]
        fn keys_come_only_from_the_files(k in key(), n in key(), p in key()) {
            let trimmed = |b: &Option<Vec<u8>>| b.as_deref().map(<[u8]>::trim_ascii).map(<[u8]>::to_vec);
            match from_contents(k.as_deref(), n.as_deref(), p.as_deref()) {
                None => prop_assert!(trimmed(&k).is_none_or(|k| k.is_empty())),
                Some(keys) => {
                    prop_assert_eq!(Some(keys.send().to_vec()), trimmed(&k));
                    let accepted: Vec<&[u8]> = keys.accepted().collect();
                    prop_assert_eq!(accepted[0], keys.send());
                    let files = [trimmed(&k), trimmed(&n), trimmed(&p)];
                    for (i, a) in accepted.iter().enumerate() {
                        prop_assert!(!a.is_empty());
                        prop_assert!(files.iter().any(|f| f.as_deref() == Some(*a)));
                        prop_assert!(!accepted[..i].contains(a));
                    }
                    for f in files.iter().flatten().filter(|f| !f.is_empty()) {
                        prop_assert!(accepted.contains(&f.as_slice()));
                    }
                }
            }
        }
    }
}
