//! Each memory cgroup's facts from its samples: usage and limit, memory
//! events and `memory.stat` charges since its previous sample, and the page
//! cache it owns.
//!
//! Page cache owned: the kernel's figure when cgtrace first sees a cgroup,
//! then that figure plus what cgtrace counted since (the probe's flows).
//! The kernel's figure is read a moment after the probe's counters are
//! sampled, so pages added or evicted in between are in one and not the
//! other. Under heavy churn that would skew the anchor by the churn of that
//! moment, so the anchor is taken again whenever the cgroup is quiet (no
//! page added, removed or evicted since its previous sample — at its limit,
//! adds and evictions can balance, so the net count alone cannot tell). On
//! v1 the figure is then exact; v2 folds per-CPU deltas into `memory.stat`
//! lazily, so there it is as exact as the kernel's own file.

use std::collections::HashMap;

use cgtrace_common::{cgroup::CgroupRef, pagecache::CHARGE_KINDS};

use super::cache::CacheModel;
use crate::{
    cgroup::Version,
    event::{Charges, MemoryEvents, MemorySample, ProbeCounters},
};

/// What one sample says, with the counters turned into changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryFacts {
    pub at_ns: u64,
    pub cgroup: CgroupRef,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    /// Page cache the cgroup owns (see the module docs).
    pub owned_bytes: Option<u64>,
    /// Memory events since the cgroup's previous sample, and the files'
    /// version (which names their source).
    pub events: Option<(MemoryEvents, Version)>,
    /// `memory.stat` charges since the previous sample.
    pub stat_charges: Option<Charges>,
}

/// The page-cache anchor of one cgroup.
#[derive(Debug)]
struct Anchor {
    /// Kernel figure minus cgtrace's net count, bytes.
    base: i64,
    /// Pages moved at the last sample, to tell a quiet interval.
    last_moved: u64,
}

#[derive(Debug, Default)]
struct Cgroup {
    anchor: Option<Anchor>,
    events: Option<MemoryEvents>,
    stat_charges: Option<Charges>,
}

/// Memory facts per cgroup, fed the probe's counters and the samples.
#[derive(Debug)]
pub struct MemoryModel {
    page_size: u64,
    cache: CacheModel,
    cgroups: HashMap<(u32, u64), Cgroup>,
}

impl MemoryModel {
    #[must_use]
    pub fn new(page_size: u64) -> Self {
        Self {
            page_size: page_size.max(1),
            cache: CacheModel::new(),
            cgroups: HashMap::new(),
        }
    }

    /// The running page-cache counts.
    #[must_use]
    pub fn cache(&self) -> &CacheModel {
        &self.cache
    }

    /// Drops what is kept of a removed cgroup (its id is not reused).
    pub fn forget(&mut self, cgroup: CgroupRef) {
        self.cgroups.remove(&(cgroup.hierarchy, cgroup.id));
        self.cache.forget(cgroup);
    }

    /// Folds in the probe's counters.
    pub fn counters(&mut self, counters: &ProbeCounters) {
        self.cache.add(counters);
    }

    /// Folds in a sample and says what it means.
    pub fn sample(&mut self, sample: &MemorySample) -> MemoryFacts {
        let page = i64::try_from(self.page_size).unwrap_or(4096);
        let net_bytes = self.cache.net_pages(sample.cgroup) * page;
        let moved = self.cache.moved_pages(sample.cgroup);
        let state = self
            .cgroups
            .entry((sample.cgroup.hierarchy, sample.cgroup.id))
            .or_default();
        let kernel = sample.page_cache_bytes.and_then(|b| i64::try_from(b).ok());
        let owned_bytes = match (&mut state.anchor, kernel) {
            (None, None) => None,
            (None, Some(kernel)) => {
                state.anchor = Some(Anchor {
                    base: kernel - net_bytes,
                    last_moved: moved,
                });
                u64::try_from(kernel).ok()
            }
            (Some(anchor), kernel) => {
                if anchor.last_moved == moved
                    && let Some(kernel) = kernel
                {
                    anchor.base = kernel - net_bytes;
                }
                anchor.last_moved = moved;
                // Below zero only when the anchor was read from a lagging
                // v2 memory.stat; the cgroup cannot own less than nothing.
                Some(u64::try_from(anchor.base + net_bytes).unwrap_or(0))
            }
        };
        let events = sample.events.map(|now| {
            let before = state.events.replace(now).unwrap_or_default();
            (now.since(&before), sample.version)
        });
        let stat_charges = sample.stat_charges.map(|now| {
            let before = state
                .stat_charges
                .replace(now)
                .unwrap_or([(0, 0); CHARGE_KINDS]);
            let mut delta = [(0, 0); CHARGE_KINDS];
            for ((slot, now), then) in delta.iter_mut().zip(now).zip(before) {
                *slot = (now.0.saturating_sub(then.0), now.1.saturating_sub(then.1));
            }
            delta
        });
        MemoryFacts {
            at_ns: sample.at_ns,
            cgroup: sample.cgroup,
            usage_bytes: sample.usage_bytes,
            limit_bytes: sample.limit_bytes,
            peak_bytes: sample.peak_bytes,
            owned_bytes,
            events,
            stat_charges,
        }
    }
}

#[cfg(test)]
mod tests {
    use cgtrace_common::{
        cgroup::CgroupRef,
        pagecache::{CHARGE_KINDS, CacheReason, ChargeKind},
    };

    use super::MemoryModel;
    use crate::{
        cgroup::Version,
        event::{Flow, MemoryEvents, MemorySample, ProbeCounters},
    };

    const APP: CgroupRef = CgroupRef {
        id: 7,
        hierarchy: 4,
        level: 1,
    };

    fn sample(page_cache: u64) -> MemorySample {
        MemorySample {
            at_ns: 0,
            cgroup: APP,
            version: Version::V1,
            usage_bytes: None,
            limit_bytes: None,
            peak_bytes: None,
            page_cache_bytes: Some(page_cache),
            events: None,
            stat_charges: None,
        }
    }

    fn moved(model: &mut MemoryModel, reason: CacheReason, pages: u64) {
        model.counters(&ProbeCounters {
            flows: vec![Flow {
                owner: Some(APP),
                actor: Some(APP),
                reason,
                pages,
            }],
            ..ProbeCounters::default()
        });
    }

    #[test]
    fn the_page_cache_anchor_is_taken_again_whenever_the_cgroup_is_quiet() {
        let mut model = MemoryModel::new(4096);
        // First sight mid-churn: the file was read a moment after pages
        // cgtrace has not counted yet were evicted, so it is 8 KiB low.
        assert_eq!(model.sample(&sample(32_768)).owned_bytes, Some(32_768));
        moved(&mut model, CacheReason::Added, 1);
        assert_eq!(model.sample(&sample(999)).owned_bytes, Some(36_864));
        // At the limit: one page added and one evicted leave the net count
        // as it was, but that is churn, not quiet.
        moved(&mut model, CacheReason::Added, 1);
        moved(&mut model, CacheReason::OwnLimit, 1);
        assert_eq!(model.sample(&sample(999)).owned_bytes, Some(36_864));
        // Quiet (nothing moved since the last sample): anchored again on
        // the kernel's figure, which from now on the counts follow exactly.
        assert_eq!(model.sample(&sample(45_056)).owned_bytes, Some(45_056));
        moved(&mut model, CacheReason::OwnLimit, 11);
        assert_eq!(model.sample(&sample(999)).owned_bytes, Some(0));
        // Quiet again: the kernel's figure, whatever it says now.
        assert_eq!(model.sample(&sample(8192)).owned_bytes, Some(8192));
        // An anchor from a lagging file cannot make the figure negative.
        moved(&mut model, CacheReason::OwnLimit, 5);
        assert_eq!(model.sample(&sample(999)).owned_bytes, Some(0));
    }

    #[test]
    fn counters_become_changes_since_the_previous_sample() {
        let mut model = MemoryModel::new(4096);
        let mut charges = [(0, 0); CHARGE_KINDS];
        charges[ChargeKind::File as usize] = (10, 4);
        let first = MemorySample {
            events: Some(MemoryEvents {
                max: Some(3),
                ..MemoryEvents::default()
            }),
            stat_charges: Some(charges),
            ..sample(0)
        };
        let facts = model.sample(&first);
        assert_eq!(facts.events.unwrap().0.max, Some(3), "counted from zero");
        assert_eq!(
            facts.stat_charges.unwrap()[ChargeKind::File as usize],
            (10, 4)
        );
        charges[ChargeKind::File as usize] = (15, 4);
        let second = MemorySample {
            events: Some(MemoryEvents {
                max: Some(5),
                ..MemoryEvents::default()
            }),
            stat_charges: Some(charges),
            ..sample(0)
        };
        let facts = model.sample(&second);
        assert_eq!(facts.events.unwrap().0.max, Some(2));
        assert_eq!(
            facts.stat_charges.unwrap()[ChargeKind::File as usize],
            (5, 0)
        );
        // A cgroup gone: its files unread, nothing to say.
        let gone = model.sample(&MemorySample {
            page_cache_bytes: None,
            ..sample(0)
        });
        assert!(gone.events.is_none() && gone.stat_charges.is_none());
    }
}
