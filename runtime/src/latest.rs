//! A queue that keeps only the latest value per key: for writes where only the last one matters
//! (a Service's condition), so it is bounded by the number of keys, however far the writer falls
//! behind, and a backlog costs one write per key, not one per change.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

struct Shared<K, V> {
    state: Mutex<State<K, V>>,
    notify: Notify,
}

struct State<K, V> {
    /// Keys in the order they were first queued.
    order: VecDeque<K>,
    values: HashMap<K, V>,
    closed: bool,
}

/// The sending half: [`LatestSender::send`] replaces what is queued for the key.
pub struct LatestSender<K, V> {
    shared: Arc<Shared<K, V>>,
}

/// The receiving half.
pub struct LatestReceiver<K, V> {
    shared: Arc<Shared<K, V>>,
}

impl<K, V> std::fmt::Debug for LatestSender<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestSender").finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for LatestReceiver<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestReceiver").finish_non_exhaustive()
    }
}

/// A new queue.
pub fn latest<K: Eq + Hash + Clone, V>() -> (LatestSender<K, V>, LatestReceiver<K, V>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            order: VecDeque::new(),
            values: HashMap::new(),
            closed: false,
        }),
        notify: Notify::new(),
    });
    (
        LatestSender {
            shared: shared.clone(),
        },
        LatestReceiver { shared },
    )
}

impl<K, V> Shared<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Eq + Hash + Clone, V> LatestSender<K, V> {
    /// Queues `value` for `key`, replacing a value still queued for it (which keeps its place).
    /// Never waits.
    pub fn send(&self, key: K, value: V) {
        let mut state = self.shared.lock();
        if state.values.insert(key.clone(), value).is_none() {
            state.order.push_back(key);
        }
        drop(state);
        self.shared.notify.notify_one();
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.shared.lock().values.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V> Drop for LatestSender<K, V> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.notify.notify_one();
    }
}

impl<K: Eq + Hash + Clone, V> LatestReceiver<K, V> {
    /// The oldest queued key with its latest value; None once the sender is gone and nothing
    /// is left.
    pub async fn recv(&mut self) -> Option<(K, V)> {
        loop {
            {
                let mut state = self.shared.lock();
                while let Some(key) = state.order.pop_front() {
                    if let Some(value) = state.values.remove(&key) {
                        return Some((key, value));
                    }
                }
                if state.closed {
                    return None;
                }
            }
            self.shared.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_latest_value_per_key_is_delivered_in_first_queued_order() {
        let (tx, mut rx) = latest();
        tx.send("a", 1);
        tx.send("b", 1);
        tx.send("a", 2);
        tx.send("c", 1);
        tx.send("b", 2);
        assert_eq!(tx.len(), 3, "bounded by the keys, not the sends");
        assert_eq!(rx.recv().await, Some(("a", 2)));
        tx.send("a", 3);
        assert_eq!(rx.recv().await, Some(("b", 2)));
        assert_eq!(rx.recv().await, Some(("c", 1)));
        assert_eq!(rx.recv().await, Some(("a", 3)));
        assert!(tx.is_empty());
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn the_receiver_wakes_for_a_later_send_and_drains_after_the_sender_is_gone() {
        let (tx, mut rx) = latest();
        let receiver = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = rx.recv().await {
                got.push(item);
            }
            got
        });
        tokio::task::yield_now().await;
        tx.send("x", 1);
        tokio::task::yield_now().await;
        tx.send("y", 2);
        drop(tx);
        let got = receiver.await.unwrap();
        assert_eq!(got, [("x", 1), ("y", 2)]);
    }
}
