//! The removed cgroups a session still remembers: the latest
//! [`REMOVED_NAMES_KEPT`], each until it is made again or falls out.
//!
//! A removed cgroup is still named by events after its removal (a kill the
//! kernel log tells later, a zombie memcg's leftover page cache evicted
//! minutes on), so its name is kept for a while, and it stays marked as
//! removed while it is: naming it again for such an event does not bring
//! it back (its series would never expire). Only a new cgroup with its id
//! (`cgroup_mkdir`) does.

use std::collections::{HashMap, VecDeque};

use cgtrace_common::cgroup::CgroupRef;

use crate::identity::bounded::table_size;

/// Removed cgroups whose names a session keeps: the latest this many. Under
/// churn, kept all, the names would grow without bound (a busy CI node makes
/// over 100,000 cgroups an hour). Without churn they stay.
pub const REMOVED_NAMES_KEPT: usize = 4096;

/// Removed cgroups, oldest first, and which of them are still removed.
#[derive(Debug)]
pub struct Removals {
    /// Each removal, with its number.
    order: VecDeque<(CgroupRef, u64)>,
    /// The latest removal of each cgroup not made again since.
    latest: HashMap<(u32, u64), u64>,
    count: u64,
}

impl Default for Removals {
    /// Made at their final size: a table that grew under churn would be
    /// steps in the collector's RSS (see `identity::bounded`).
    fn default() -> Self {
        Self {
            order: VecDeque::with_capacity(REMOVED_NAMES_KEPT + 1),
            latest: HashMap::with_capacity(table_size(REMOVED_NAMES_KEPT)),
            count: 0,
        }
    }
}

impl Removals {
    /// Whether `cgroup` was removed (and not made again since), while it is
    /// remembered.
    #[must_use]
    pub fn contains(&self, cgroup: CgroupRef) -> bool {
        self.latest.contains_key(&key(cgroup))
    }

    /// A cgroup made (or an id given to a new one): no longer removed.
    pub fn created(&mut self, cgroup: CgroupRef) {
        self.latest.remove(&key(cgroup));
    }

    /// Marks `cgroup` removed. Returns the oldest removed cgroup once more
    /// than [`REMOVED_NAMES_KEPT`] are remembered, for its names to be
    /// forgotten, unless it was made again since.
    pub fn removed(&mut self, cgroup: CgroupRef) -> Option<CgroupRef> {
        self.count += 1;
        self.order.push_back((cgroup, self.count));
        self.latest.insert(key(cgroup), self.count);
        if self.order.len() <= REMOVED_NAMES_KEPT {
            return None;
        }
        let (oldest, removal) = self.order.pop_front()?;
        if self.latest.get(&key(oldest)) != Some(&removal) {
            return None;
        }
        self.latest.remove(&key(oldest));
        Some(oldest)
    }
}

fn key(cgroup: CgroupRef) -> (u32, u64) {
    (cgroup.hierarchy, cgroup.id)
}

#[cfg(test)]
mod tests {
    use cgtrace_common::cgroup::CgroupRef;

    use super::{REMOVED_NAMES_KEPT, Removals};

    fn cgroup(id: u64) -> CgroupRef {
        CgroupRef {
            id,
            hierarchy: 4,
            level: 1,
        }
    }

    #[test]
    fn the_oldest_removal_falls_out_once_the_cap_is_passed() {
        let mut removals = Removals::default();
        let cap = u64::try_from(REMOVED_NAMES_KEPT).unwrap();
        for id in 1..=cap {
            assert_eq!(removals.removed(cgroup(id)), None);
        }
        assert!(removals.contains(cgroup(1)));
        assert_eq!(removals.removed(cgroup(cap + 1)), Some(cgroup(1)));
        assert!(!removals.contains(cgroup(1)));
        assert!(removals.contains(cgroup(2)));
    }

    #[test]
    fn a_cgroup_made_again_is_neither_removed_nor_forgotten() {
        let mut removals = Removals::default();
        removals.removed(cgroup(1));
        removals.created(cgroup(1));
        assert!(!removals.contains(cgroup(1)));
        let cap = u64::try_from(REMOVED_NAMES_KEPT).unwrap();
        let fell_out: Vec<_> = (100..100 + cap)
            .filter_map(|id| removals.removed(cgroup(id)))
            .collect();
        assert!(fell_out.is_empty(), "made again: kept, {fell_out:?}");
    }

    #[test]
    fn removed_twice_falls_out_with_its_latest_removal() {
        let mut removals = Removals::default();
        removals.removed(cgroup(1));
        removals.created(cgroup(1));
        removals.removed(cgroup(1));
        let cap = u64::try_from(REMOVED_NAMES_KEPT).unwrap();
        let fell_out: Vec<_> = (100..99 + cap)
            .filter_map(|id| removals.removed(cgroup(id)))
            .collect();
        assert!(fell_out.is_empty(), "its first removal is not its latest");
        assert_eq!(removals.removed(cgroup(99 + cap)), Some(cgroup(1)));
    }
}
