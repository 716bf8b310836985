//! Per-interval deltas of a cgroup's own counter files: memory events
//! (which no tracepoint reports), and charges and refaults from memory.stat
//! where the memcg stat tracepoints are missing.

use std::collections::HashMap;

use cgtrace_common::{cgroup::CgroupRef, pagecache::CHARGE_KINDS};

use super::{
    Resolver,
    stat::{self, MemoryEvents},
};

/// `(charged, uncharged)` pages per `ChargeKind`.
pub type Charges = [(u64, u64); CHARGE_KINDS];

/// A cgroup by what identifies it: its hierarchy and id.
type Key = (u32, u64);

/// Remembers each cgroup's last counter values. Cgroups that existed when
/// [`CgroupPoller::prime`] ran are counted from that moment; cgroups created
/// later from zero, since all their events happened while cgtrace watched.
#[derive(Debug, Default)]
pub struct CgroupPoller {
    events: HashMap<Key, MemoryEvents>,
    gauges: HashMap<Key, [Option<u64>; CHARGE_KINDS]>,
}

impl CgroupPoller {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the current counters of every cgroup in `hierarchy`.
    pub fn prime(&mut self, resolver: &mut Resolver, hierarchy: u32) {
        let Some(h) = resolver.hierarchies().by_id(hierarchy).cloned() else {
            return;
        };
        for (id, path) in resolver.cgroups(hierarchy) {
            if let Ok(events) = stat::read_events(&h.mount, &path, h.version) {
                self.events.insert((hierarchy, id), events);
            }
            if let Ok(stat) = stat::read(&h.mount, &path) {
                self.gauges
                    .insert((hierarchy, id), stat::charge_gauges(&stat, h.version));
            }
        }
    }

    /// Memory events since the last call for this cgroup, and the file they
    /// were read from. `None` if the cgroup is gone.
    pub fn events(
        &mut self,
        cgroup: CgroupRef,
        resolver: &mut Resolver,
    ) -> Option<(MemoryEvents, &'static str)> {
        let path = resolver.path(cgroup)?;
        let hierarchy = resolver.hierarchies().by_id(cgroup.hierarchy)?;
        let now = stat::read_events(&hierarchy.mount, &path, hierarchy.version).ok()?;
        let before = self
            .events
            .insert((cgroup.hierarchy, cgroup.id), now)
            .unwrap_or_default();
        Some((now.since(&before), MemoryEvents::source(hierarchy.version)))
    }

    /// Charges and refaults since the last call, from memory.stat: the
    /// positive part of each gauge's change counts as charged, the negative
    /// part as uncharged (net changes only: a page charged and uncharged
    /// within one interval is not seen).
    pub fn charges(
        &mut self,
        cgroup: CgroupRef,
        resolver: &mut Resolver,
        page_size: u64,
    ) -> Option<Charges> {
        let path = resolver.path(cgroup)?;
        let hierarchy = resolver.hierarchies().by_id(cgroup.hierarchy)?;
        let stat = stat::read(&hierarchy.mount, &path).ok()?;
        let now = stat::charge_gauges(&stat, hierarchy.version);
        let before = self
            .gauges
            .insert((cgroup.hierarchy, cgroup.id), now)
            .unwrap_or([Some(0); CHARGE_KINDS]);
        let mut charges = [(0, 0); CHARGE_KINDS];
        for (index, slot) in charges.iter_mut().enumerate() {
            let (Some(now), Some(then)) = (now[index], before[index]) else {
                continue;
            };
            // Refault counters are counts; the memory gauges are bytes.
            let unit = if index >= cgtrace_common::pagecache::ChargeKind::RefaultAnon as usize {
                1
            } else {
                page_size.max(1)
            };
            *slot = if now >= then {
                ((now - then) / unit, 0)
            } else {
                (0, (then - now) / unit)
            };
        }
        Some(charges)
    }
}
