//! A map that forgets its oldest entries beyond a fixed size: names of
//! cgroups that are gone must outlive the cgroup (an OOM-killed container is
//! still named in the event), but a node churning through containers for
//! weeks must not grow the collector without bound.

use std::{
    borrow::Borrow,
    collections::{HashMap, VecDeque},
    hash::Hash,
};

/// Values sit behind a box, and a map that churns at the pace of cgroups is
/// made at its final size ([`BoundedMap::presized`]): under churn (as many
/// removals as insertions) a hash table full of removed slots grows to four
/// times its entries before it reuses them, and each growth, of a table of
/// whole values, was a step in the collector's RSS in an hour's soak. So
/// its table holds a key and a pointer per slot and never grows.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    capacity: usize,
    entries: HashMap<K, Box<V>>,
    /// Keys in insertion order, oldest first.
    order: VecDeque<K>,
}

/// A hash table size for up to `entries` live ones (and one more for a
/// moment) among as many removed: twice as many slots, so a rehash always
/// finds half of them free and rehashes in place instead of growing.
#[must_use]
pub fn table_size(entries: usize) -> usize {
    2 * (entries + 2)
}

impl<K: Clone + Eq + Hash, V> BoundedMap<K, V> {
    /// A map whose table grows as it fills: for large capacities that
    /// churn slowly (pods and containers come and go at a pod's pace), where
    /// a table made at its final size would cost more pages than it saves.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A map made at its final size, for one that churns at the pace of
    /// cgroups (see the type's note).
    #[must_use]
    pub fn presized(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::with_capacity(table_size(capacity)),
            order: VecDeque::with_capacity(2 * capacity + 1),
        }
    }

    /// The value of `key`, looked up by any borrowed form of it (a `&str`
    /// for a `String` key), so a lookup allocates nothing.
    #[must_use]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.get(key).map(AsRef::as_ref)
    }

    /// Inserts or replaces `key`; a new key beyond the capacity evicts the
    /// oldest one.
    pub fn insert(&mut self, key: K, value: V) {
        if self.entries.insert(key.clone(), Box::new(value)).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.entries.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// Forgets `key`. (Its place in the order goes when the order has
    /// grown to twice the capacity, so removals keep it bounded too.)
    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.remove(key);
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key::<K>(k));
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedMap;

    #[test]
    fn churn_never_grows_the_table() {
        let mut map = BoundedMap::presized(1000);
        let slots = map.entries.capacity();
        for round in 0..50_000_u32 {
            map.insert(round, round);
            if round % 3 == 0 {
                map.remove(&round);
            }
        }
        // Removed slots lower what is left until a rehash in place; a
        // growth would double it.
        assert!(
            map.entries.capacity() <= slots,
            "the table grew under churn: {slots} → {}",
            map.entries.capacity()
        );
        assert!(map.len() <= 1000);
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("a", 10);
        assert_eq!(map.get(&"a"), Some(&10));
        map.insert("c", 3);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"a"), None, "the oldest key goes first");
        assert_eq!(map.get(&"b"), Some(&2));
        assert_eq!(map.get(&"c"), Some(&3));
    }
}
