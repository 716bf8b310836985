//! Page-cache flows per owner, from the probe's counters: one function
//! decides what counts as added, removed, evicted for which reason and by
//! whom ([`by_owner`]), and running totals per owner follow the counters.

use std::collections::HashMap;

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CHARGE_KINDS, CacheReason, ChargeKind, ReclaimKind, StallStats},
};

use crate::event::{ProbeCounters, Stall};

/// Running page-cache counts per owner since the session started.
#[derive(Debug, Default)]
pub struct CacheModel {
    /// Pages added minus pages removed or evicted since start, per owner.
    net_pages: HashMap<CgroupRef, i64>,
    /// Pages added, removed or evicted since start, per owner: unchanged
    /// between two intervals means the cgroup's page cache was quiet.
    moved_pages: HashMap<CgroupRef, u64>,
}

impl CacheModel {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops a removed cgroup's counts.
    pub fn forget(&mut self, cgroup: CgroupRef) {
        self.net_pages.remove(&cgroup);
        self.moved_pages.remove(&cgroup);
    }

    /// Folds in one interval's counters.
    pub fn add(&mut self, counters: &ProbeCounters) {
        for flow in &counters.flows {
            let Some(owner) = flow.owner else {
                continue;
            };
            *self.moved_pages.entry(owner).or_default() += flow.pages;
            let signed = i64::try_from(flow.pages).unwrap_or(i64::MAX);
            let net = self.net_pages.entry(owner).or_default();
            *net += if flow.reason == CacheReason::Added {
                signed
            } else {
                -signed
            };
        }
    }

    /// Pages added minus pages removed or evicted since cgtrace started.
    #[must_use]
    pub fn net_pages(&self, cgroup: CgroupRef) -> i64 {
        self.net_pages.get(&cgroup).copied().unwrap_or(0)
    }

    /// Pages added, removed or evicted since cgtrace started.
    #[must_use]
    pub fn moved_pages(&self, cgroup: CgroupRef) -> u64 {
        self.moved_pages.get(&cgroup).copied().unwrap_or(0)
    }
}

/// Flows and stalls added up over several intervals (a scenario, a test).
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Pages by (owner, actor, reason).
    pub flows: HashMap<(Option<CgroupRef>, Option<CgroupRef>, CacheReason), u64>,
    pub stalls: Vec<Stall>,
    /// `(charged, uncharged)` pages by (cgroup id, kind).
    pub charges: HashMap<(u64, ChargeKind), (u64, u64)>,
}

impl Totals {
    pub fn add(&mut self, interval: &ProbeCounters) {
        for flow in &interval.flows {
            *self
                .flows
                .entry((flow.owner, flow.actor, flow.reason))
                .or_default() += flow.pages;
        }
        self.stalls.extend(interval.stalls.iter().cloned());
        for charge in interval.charges.iter().flatten() {
            let slot = self
                .charges
                .entry((charge.cgroup.map_or(0, |c| c.id), charge.kind))
                .or_default();
            slot.0 += charge.charged;
            slot.1 += charge.uncharged;
        }
    }

    /// `(charged, uncharged)` pages of `kind` for the cgroup with id `memcg`.
    #[must_use]
    pub fn charges_of(&self, memcg: u64, kind: ChargeKind) -> (u64, u64) {
        self.charges
            .get(&(memcg, kind))
            .copied()
            .unwrap_or_default()
    }

    /// Pages of the cgroup with id `owner` that moved for `reason`, by any actor.
    #[must_use]
    pub fn owned(&self, owner: u64, reason: CacheReason) -> u64 {
        self.sum(|o, _, r| o == Some(owner) && r == reason)
    }

    /// Pages of `owner` evicted by reclaim, any reason.
    #[must_use]
    pub fn evicted(&self, owner: u64) -> u64 {
        self.sum(|o, _, r| o == Some(owner) && r.is_reclaim())
    }

    /// Pages of `owner` that `actor` moved for `reason`.
    #[must_use]
    pub fn between(&self, owner: u64, actor: u64, reason: CacheReason) -> u64 {
        self.sum(|o, a, r| o == Some(owner) && a == Some(actor) && r == reason)
    }

    fn sum(&self, mut matches: impl FnMut(Option<u64>, Option<u64>, CacheReason) -> bool) -> u64 {
        self.flows
            .iter()
            .filter(|((o, a, r), _)| matches(o.map(|c| c.id), a.map(|c| c.id), *r))
            .map(|(_, pages)| pages)
            .sum()
    }

    /// Stalls charged to the cgroup with id `memcg` for `kind`, merged.
    #[must_use]
    pub fn stalls_of(&self, memcg: u64, kind: ReclaimKind) -> Option<StallStats> {
        let mut matching = self
            .stalls
            .iter()
            .filter(|s| s.kind == kind && s.cgroup.is_some_and(|c| c.id == memcg));
        let mut merged = *matching.next()?.stats;
        for stall in matching {
            merged.merge(&stall.stats);
        }
        Some(merged)
    }
}

/// One owner's page-cache activity in an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerActivity {
    pub owner: Option<CgroupRef>,
    pub added: u64,
    pub removed: u64,
    /// Evicted pages by reason (indexed by `CacheReason as usize`; the
    /// `Added` and `Removed` slots stay 0).
    pub evicted: [u64; cgtrace_common::pagecache::CACHE_REASONS],
    /// Evicted by tasks outside the owner's own cgroup.
    pub evicted_by_others: u64,
    /// Who evicted these pages, most first: `(actor, reason, pages)`.
    pub reclaimers: Vec<(Option<CgroupRef>, CacheReason, u64)>,
    /// `(charged, uncharged)` pages per `ChargeKind`; `None` when the memcg
    /// stat tracepoints are not attached.
    pub charges: Option<[(u64, u64); CHARGE_KINDS]>,
}

impl OwnerActivity {
    #[must_use]
    pub fn evicted_total(&self) -> u64 {
        self.evicted.iter().sum()
    }

    /// Pages charged and uncharged over the memory types (refaults excluded).
    #[must_use]
    pub fn charge_totals(&self) -> Option<(u64, u64)> {
        let charges = self.charges?;
        // File already includes shmem: count it once.
        let kinds = [
            ChargeKind::Anon,
            ChargeKind::File,
            ChargeKind::Kernel,
            ChargeKind::Sock,
        ];
        Some(kinds.iter().fold((0, 0), |(charged, uncharged), kind| {
            let (more_charged, more_uncharged) = charges[*kind as usize];
            (charged + more_charged, uncharged + more_uncharged)
        }))
    }
}

/// Groups an interval's flows by owner, busiest first.
#[must_use]
pub fn by_owner(interval: &ProbeCounters) -> Vec<OwnerActivity> {
    let mut owners: HashMap<Option<CgroupRef>, OwnerActivity> = HashMap::new();
    let with_charges = interval.charges.is_some();
    let new_row = |owner| OwnerActivity {
        owner,
        added: 0,
        removed: 0,
        evicted: [0; cgtrace_common::pagecache::CACHE_REASONS],
        evicted_by_others: 0,
        reclaimers: Vec::new(),
        charges: with_charges.then_some([(0, 0); CHARGE_KINDS]),
    };
    for charge in interval.charges.iter().flatten() {
        let entry = owners
            .entry(charge.cgroup)
            .or_insert_with(|| new_row(charge.cgroup));
        if let Some(charges) = &mut entry.charges {
            let slot = &mut charges[charge.kind as usize];
            slot.0 += charge.charged;
            slot.1 += charge.uncharged;
        }
    }
    for flow in &interval.flows {
        let entry = owners
            .entry(flow.owner)
            .or_insert_with(|| new_row(flow.owner));
        match flow.reason {
            CacheReason::Added => entry.added += flow.pages,
            CacheReason::Removed => entry.removed += flow.pages,
            reason => {
                entry.evicted[reason as usize] += flow.pages;
                if flow.actor != flow.owner {
                    entry.evicted_by_others += flow.pages;
                }
                entry.reclaimers.push((flow.actor, reason, flow.pages));
            }
        }
    }
    let mut rows: Vec<OwnerActivity> = owners.into_values().collect();
    for row in &mut rows {
        row.reclaimers.sort_by_key(|r| std::cmp::Reverse(r.2));
    }
    // Busiest first; ties in a stable order, so a replay prints the same.
    rows.sort_by_key(|row| {
        (
            std::cmp::Reverse(row.added + row.evicted_total() + row.removed),
            row.owner.map(|c| (c.hierarchy, c.id)),
        )
    });
    rows
}

#[cfg(test)]
mod tests {
    use cgtrace_common::{
        cgroup::CgroupRef,
        pagecache::{CacheReason, ChargeKind},
    };

    use super::{CacheModel, by_owner};
    use crate::event::{Charge, Flow, ProbeCounters};

    fn cgroup(id: u64) -> CgroupRef {
        CgroupRef {
            id,
            hierarchy: 4,
            level: 1,
        }
    }

    fn flow(owner: u64, actor: u64, reason: CacheReason, pages: u64) -> Flow {
        Flow {
            owner: Some(cgroup(owner)),
            actor: Some(cgroup(actor)),
            reason,
            pages,
        }
    }

    #[test]
    fn flows_are_bucketed_by_owner_and_net_is_kept() {
        let mut model = CacheModel::new();
        let counters = ProbeCounters {
            start_ns: 1_000,
            end_ns: 2_000_001_000,
            flows: vec![
                flow(10, 10, CacheReason::Added, 50),
                flow(10, 11, CacheReason::AncestorLimit, 30),
                flow(10, 10, CacheReason::Removed, 5),
            ],
            ..ProbeCounters::default()
        };
        model.add(&counters);
        assert!((counters.seconds() - 2.0).abs() < 1e-9);
        let rows = by_owner(&counters);
        assert_eq!(rows.len(), 1);
        let a = &rows[0];
        assert_eq!(a.owner, Some(cgroup(10)));
        assert_eq!(a.added, 50);
        assert_eq!(a.removed, 5);
        assert_eq!(a.evicted[CacheReason::AncestorLimit as usize], 30);
        assert_eq!(a.evicted_by_others, 30);
        assert_eq!(
            a.reclaimers,
            vec![(Some(cgroup(11)), CacheReason::AncestorLimit, 30)]
        );
        assert_eq!(model.net_pages(cgroup(10)), 50 - 30 - 5);
        assert_eq!(model.moved_pages(cgroup(10)), 85);
        assert!(a.charges.is_none(), "no memcg stat tracepoints here");
    }

    #[test]
    fn charges_make_rows_of_their_own() {
        let counters = ProbeCounters {
            charges: Some(vec![
                Charge {
                    cgroup: Some(cgroup(10)),
                    kind: ChargeKind::File,
                    charged: 15,
                    uncharged: 0,
                },
                Charge {
                    cgroup: Some(cgroup(11)),
                    kind: ChargeKind::Anon,
                    charged: 0,
                    uncharged: 7,
                },
            ]),
            ..ProbeCounters::default()
        };
        let rows = by_owner(&counters);
        let a = rows.iter().find(|r| r.owner == Some(cgroup(10))).unwrap();
        assert_eq!(a.charges.unwrap()[ChargeKind::File as usize], (15, 0));
        let b = rows.iter().find(|r| r.owner == Some(cgroup(11))).unwrap();
        assert_eq!(b.charge_totals(), Some((0, 7)));
        assert_eq!(b.added, 0, "a row for charges alone");
    }

    #[test]
    fn rows_that_tie_come_in_a_stable_order() {
        let counters = ProbeCounters {
            flows: vec![
                flow(12, 12, CacheReason::Added, 5),
                flow(10, 10, CacheReason::Added, 5),
                flow(11, 11, CacheReason::Added, 9),
            ],
            ..ProbeCounters::default()
        };
        let owners: Vec<_> = by_owner(&counters)
            .iter()
            .map(|r| r.owner.unwrap().id)
            .collect();
        assert_eq!(owners, [11, 10, 12]);
    }
}
