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
    /// Each value with the number of the insertion that gave its key its
    /// place in `order`.
    entries: HashMap<K, (u64, Box<V>)>,
    /// Keys in insertion order, oldest first, each with its insertion's
    /// number. A removed key keeps its place until a sweep; a place whose
    /// number is not its key's entry's is such a leftover (the key may
    /// have been inserted again since, with a place of its own).
    order: VecDeque<(K, u64)>,
    insertions: u64,
}

/// A hash table size for up to `entries` live ones (and one more for a
/// moment) among as many removed: twice as many slots, so a rehash always
/// finds half of them free and rehashes in place instead of growing.
#[must_use]
pub fn table_size(entries: usize) -> usize {
    2 * (entries + 2)
}

/// Leftover places in the order beyond the live ones before a sweep. A
/// sweep is a pass over the order, so it waits until leftovers outnumber
/// live keys (and this many more): a constant cost per removal, and an
/// order at most about twice the live keys. Sweeping only near the
/// capacity instead left a churning cgroup's keys for hours: heaptrack
/// found 13,787 of the identity cache's key allocations still live in a
/// recorder after 7 minutes of the soak's churn, one per cgroup made.
const ORDER_SLACK: usize = 1024;

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
            insertions: 0,
        }
    }

    /// A map whose table is made at its final size, for one that churns at
    /// the pace of cgroups (see the type's note). The order is not: it
    /// holds about twice the live keys, and a ring made for the capacity
    /// would be touched a page at a time, for hours, as its window moves.
    #[must_use]
    pub fn presized(capacity: usize) -> Self {
        Self {
            entries: HashMap::with_capacity(table_size(capacity)),
            ..Self::new(capacity)
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
        self.entries.get(key).map(|(_, value)| value.as_ref())
    }

    /// Inserts or replaces `key` (a replaced key keeps its place); a new
    /// key beyond the capacity evicts the oldest one.
    pub fn insert(&mut self, key: K, value: V) {
        if let Some((_, old)) = self.entries.get_mut(&key) {
            **old = value;
            return;
        }
        self.insertions += 1;
        self.entries
            .insert(key.clone(), (self.insertions, Box::new(value)));
        self.order.push_back((key, self.insertions));
        while self.entries.len() > self.capacity {
            let Some((oldest, number)) = self.order.pop_front() else {
                break;
            };
            if self.is_place_of(&oldest, number) {
                self.entries.remove(&oldest);
            }
        }
    }

    /// Forgets `key`; its place in the order goes at the next sweep.
    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if self.entries.remove(key).is_none() {
            return;
        }
        if self.order.len() > 2 * self.entries.len() + ORDER_SLACK {
            let entries = &self.entries;
            self.order
                .retain(|(key, number)| entries.get::<K>(key).is_some_and(|(n, _)| n == number));
        }
    }

    /// Whether `number` is the place of `key`'s entry.
    fn is_place_of(&self, key: &K, number: u64) -> bool {
        self.entries.get(key).is_some_and(|(n, _)| *n == number)
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
    fn removed_keys_leave_the_order_under_churn() {
        let mut map = BoundedMap::presized(65_536);
        for round in 0..200_000_u32 {
            map.insert(round, round);
            if round >= 10 {
                map.remove(&(round - 10));
            }
        }
        assert_eq!(map.len(), 10);
        assert!(
            map.order.len() <= 2 * map.len() + super::ORDER_SLACK + 1,
            "{} places kept for {} keys",
            map.order.len(),
            map.len()
        );
        assert!(map.order.capacity() < 4096, "{}", map.order.capacity());
    }

    #[test]
    fn a_key_removed_and_inserted_again_is_evicted_by_its_new_place() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.remove(&"a");
        map.insert("b", 2);
        map.insert("a", 3);
        map.insert("c", 4);
        assert_eq!(map.get(&"b"), None, "b is the oldest key");
        assert_eq!(map.get(&"a"), Some(&3));
        assert_eq!(map.get(&"c"), Some(&4));
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
