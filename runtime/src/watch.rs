//! A watched kind's objects, kept as the caller's slim value per key, with kube's relists made
//! atomic.
//!
//! kube's watcher emits `Init`, `InitApply` for every object and `InitDone` on every (re)list,
//! after a watch expired or the API server went away. Applying the `InitApply` objects one by one
//! and removing the missing ones at the end shows a world that is half old and half new for the
//! length of the list; clearing it at `Init` shows a half-empty one (an address without its
//! Service, a Service without its endpoints). [`Relisted`] buffers the list and swaps it in at
//! `InitDone`, then reports exactly which keys were added, changed or removed, so the caller
//! updates what depends on them and nothing else.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use kube::runtime::watcher;

/// One key's change, with the value it had before (the new one is in the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change<Key, V> {
    /// A key that was not there.
    Added(Key),
    /// A key whose value changed.
    Changed {
        /// The key.
        key: Key,
        /// Its value before.
        old: V,
    },
    /// A key that is gone.
    Removed {
        /// The key.
        key: Key,
        /// Its last value.
        old: V,
    },
}

impl<Key, V> Change<Key, V> {
    /// The key that changed.
    pub fn key(&self) -> &Key {
        match self {
            Change::Added(key) | Change::Changed { key, .. } | Change::Removed { key, .. } => key,
        }
    }

    /// The value before the change (None for an added key).
    pub fn old(&self) -> Option<&V> {
        match self {
            Change::Added(_) => None,
            Change::Changed { old, .. } | Change::Removed { old, .. } => Some(old),
        }
    }
}

/// The objects of one watch, as `V` per key, relists swapped in whole.
#[derive(Clone, Debug)]
pub struct Relisted<V, Key = String> {
    items: BTreeMap<Key, V>,
    /// The relist under way, if any.
    relist: Option<BTreeMap<Key, V>>,
    synced: bool,
}

impl<V, Key> Default for Relisted<V, Key> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<V: PartialEq, Key: Ord + Clone> Relisted<V, Key> {
    /// Applies one watch event: `key` names an object, `value` makes the value kept for it (None:
    /// the object is not tracked, as if deleted). Returns what changed in the store: nothing
    /// while a relist is buffered, every difference at its `InitDone`.
    pub fn apply<K>(
        &mut self,
        event: watcher::Event<K>,
        key: impl Fn(&K) -> Key,
        value: impl Fn(K) -> Option<V>,
    ) -> Vec<Change<Key, V>> {
        match event {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                let k = key(&obj);
                let buffer = self.relist.get_or_insert_default();
                match value(obj) {
                    Some(v) => {
                        buffer.insert(k, v);
                    }
                    None => {
                        buffer.remove(&k);
                    }
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                self.synced = true;
                let fresh = self.relist.take().unwrap_or_default();
                self.swap(fresh)
            }
            watcher::Event::Apply(obj) => {
                let k = key(&obj);
                match value(obj) {
                    Some(v) => self.upsert(k, v),
                    None => self.remove(&k),
                }
                .into_iter()
                .collect()
            }
            watcher::Event::Delete(obj) => self.remove(&key(&obj)).into_iter().collect(),
        }
    }

    /// Replaces everything by `fresh`; returns the differences.
    fn swap(&mut self, fresh: BTreeMap<Key, V>) -> Vec<Change<Key, V>> {
        let old = std::mem::replace(&mut self.items, fresh);
        let mut changes: Vec<Change<Key, V>> = self
            .items
            .keys()
            .filter(|k| !old.contains_key(*k))
            .map(|k| Change::Added(k.clone()))
            .collect();
        for (key, old) in old {
            match self.items.get(&key) {
                None => changes.push(Change::Removed { key, old }),
                Some(new) if *new != old => changes.push(Change::Changed { key, old }),
                Some(_) => {}
            }
        }
        changes
    }

    /// Sets `key` to `value` outside a watch (or for an `Apply`); None when it already held it.
    pub fn upsert(&mut self, key: Key, value: V) -> Option<Change<Key, V>> {
        match self.items.get_mut(&key) {
            Some(held) if *held == value => None,
            Some(held) => Some(Change::Changed {
                key,
                old: std::mem::replace(held, value),
            }),
            None => {
                self.items.insert(key.clone(), value);
                Some(Change::Added(key))
            }
        }
    }

    /// Forgets `key`; None when it was not there.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<Change<Key, V>>
    where
        Key: Borrow<Q>,
    {
        let (key, old) = self.items.remove_entry(key)?;
        Some(Change::Removed { key, old })
    }
}

impl<V, Key: Ord> Relisted<V, Key> {
    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        Key: Borrow<Q>,
    {
        self.items.get(key)
    }

    /// The whole store.
    pub fn as_map(&self) -> &BTreeMap<Key, V> {
        &self.items
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &V)> {
        self.items.iter()
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.items.keys()
    }

    /// Every value, in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.items.values()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the first list completed: before, the store is not the cluster's picture yet.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Whether a relist is being buffered now (the store still shows the previous one).
    pub fn relisting(&self) -> bool {
        self.relist.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use watcher::Event;

    /// An object: a name and a value; a negative value is "not tracked".
    type Obj = (&'static str, i32);
    type Changes = Change<String, i32>;

    fn apply(store: &mut Relisted<i32>, event: Event<Obj>) -> Vec<Change<String, i32>> {
        store.apply(event, |o| o.0.to_owned(), |o| (o.1 >= 0).then_some(o.1))
    }

    fn added(k: &str) -> Change<String, i32> {
        Change::Added(k.to_owned())
    }

    #[test]
    fn a_relist_is_invisible_until_it_completes_then_reports_every_difference() {
        let mut store = Relisted::default();
        assert!(!store.is_synced());
        assert!(apply(&mut store, Event::Init).is_empty());
        assert!(apply(&mut store, Event::InitApply(("a", 1))).is_empty());
        assert!(store.is_empty(), "the first list is buffered too");
        assert_eq!(apply(&mut store, Event::InitDone), [added("a")]);
        assert!(store.is_synced());
        apply(&mut store, Event::Apply(("b", 2)));
        apply(&mut store, Event::Apply(("c", 3)));

        // The watch expired: a relist where a is unchanged, b changed, c gone, d new.
        apply(&mut store, Event::Init);
        assert!(store.relisting());
        for obj in [("a", 1), ("b", 20), ("d", 4)] {
            assert!(apply(&mut store, Event::InitApply(obj)).is_empty());
        }
        assert_eq!(
            store
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<Vec<_>>(),
            [("a", 1), ("b", 2), ("c", 3)],
            "the old world stays whole while the list arrives"
        );
        let changes = apply(&mut store, Event::InitDone);
        assert_eq!(
            changes,
            [
                added("d"),
                Change::Changed {
                    key: "b".into(),
                    old: 2
                },
                Change::Removed {
                    key: "c".into(),
                    old: 3
                },
            ]
        );
        assert!(!store.relisting());
        assert_eq!(
            store
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<Vec<_>>(),
            [("a", 1), ("b", 20), ("d", 4)]
        );
    }

    #[test]
    fn single_events_report_only_real_changes() {
        let mut store = Relisted::default();
        #[rustfmt::skip]
        let rows: [(&str, Event<Obj>, Vec<Changes>); 7] = [
            ("new key", Event::Apply(("a", 1)), vec![added("a")]),
            ("same value: nothing", Event::Apply(("a", 1)), vec![]),
            ("new value", Event::Apply(("a", 2)), vec![Change::Changed { key: "a".into(), old: 1 }]),
            ("no longer tracked: removed", Event::Apply(("a", -1)), vec![Change::Removed { key: "a".into(), old: 2 }]),
            ("untracked and absent: nothing", Event::Apply(("a", -1)), vec![]),
            ("delete of an absent key: nothing", Event::Delete(("a", 1)), vec![]),
            ("back", Event::Apply(("a", 3)), vec![added("a")]),
        ];
        for (what, event, expected) in rows {
            assert_eq!(apply(&mut store, event), expected, "{what}");
        }
        assert_eq!(
            apply(&mut store, Event::Delete(("a", 0))),
            [Change::Removed {
                key: "a".into(),
                old: 3
            }]
        );
        assert_eq!(store.upsert("x".into(), 1), Some(added("x")));
        assert_eq!(store.upsert("x".into(), 1), None);
        assert_eq!(store.get("x"), Some(&1));
    }

    fn arb_event() -> impl Strategy<Value = Event<Obj>> {
        let obj = (prop::sample::select(vec!["a", "b", "c", "d"]), -1..3i32);
        prop_oneof![
            Just(Event::Init),
            obj.clone().prop_map(Event::InitApply),
            Just(Event::InitDone),
            obj.clone().prop_map(Event::Apply),
            obj.prop_map(Event::Delete),
        ]
    }

    proptest! {
        /// Replaying the reported changes onto a copy of the store before the event gives the
        /// store after it: no change is missed and none is invented.
        #[test]
        fn reported_changes_turn_the_old_store_into_the_new(events in prop::collection::vec(arb_event(), 0..60)) {
            let mut store = Relisted::default();
            let mut mirror: BTreeMap<String, i32> = BTreeMap::new();
            for event in events {
                for change in apply(&mut store, event) {
                    match change {
                        Change::Added(k) => {
                            prop_assert!(!mirror.contains_key(&k));
                            mirror.insert(k.clone(), *store.get(&k).unwrap());
                        }
                        Change::Changed { key, old } => {
                            prop_assert_eq!(mirror.insert(key.clone(), *store.get(&key).unwrap()), Some(old));
                            prop_assert_ne!(store.get(&key), Some(&old));
                        }
                        Change::Removed { key, old } => {
                            prop_assert_eq!(mirror.remove(&key), Some(old));
                        }
                    }
                }
                let held: BTreeMap<String, i32> = store.iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(&held, &mirror);
            }
        }
    }
}
