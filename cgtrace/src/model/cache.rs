//! Page-cache flows and reclaim stalls per interval, from the cumulative
//! counters the probes keep.
//!
//! A flow is "`pages` of `owner`'s page cache were added (or evicted for
//! `reason`) by a task in `actor`". Counters are cumulative per key; a value
//! lower than last time means the kernel's LRU map evicted and restarted the
//! key, and the new value is all delta.

use std::collections::HashMap;

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{
        CHARGE_KINDS, CacheKey, CacheReason, ChargeKey, ChargeKind, ChargeValue, FileKey,
        ReclaimKind, StallKey,
    },
};

use crate::probe::sampler::{CacheSample, StallTotals};

/// Pages that moved in one interval under one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// `None`: uncharged pages, or a memcg that could not be named.
    pub owner: Option<CgroupRef>,
    pub actor: Option<CgroupRef>,
    pub reason: CacheReason,
    pub pages: u64,
}

/// Reclaim stalls of one memcg in one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallDelta {
    pub cgroup: Option<CgroupRef>,
    pub kind: ReclaimKind,
    /// Counted in the interval; `max_ns` is the longest stall since cgtrace
    /// started (the kernel keeps a running max).
    pub stats: StallTotals,
}

/// Pages of one kind charged to and uncharged from one memcg in an interval
/// (for the refault kinds, `charged` counts refaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChargeDelta {
    pub cgroup: Option<CgroupRef>,
    pub kind: ChargeKind,
    pub charged: u64,
    pub uncharged: u64,
}

/// Pages of one file that moved in an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFlow {
    pub owner: Option<CgroupRef>,
    /// Kernel `dev_t` (major << 20 | minor) and inode number.
    pub dev: u32,
    pub ino: u64,
    pub reason: CacheReason,
    pub pages: u64,
}

/// What happened between two samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CacheInterval {
    pub start_ns: u64,
    pub end_ns: u64,
    pub flows: Vec<Flow>,
    pub stalls: Vec<StallDelta>,
    /// `None` when the memcg stat tracepoints are not attached.
    pub charges: Option<Vec<ChargeDelta>>,
    /// `None` without per-file counting.
    pub files: Option<Vec<FileFlow>>,
}

impl CacheInterval {
    #[must_use]
    pub fn seconds(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "durations well below 2^52 ns")]
        let ns = self.end_ns.saturating_sub(self.start_ns) as f64;
        ns / 1e9
    }
}

/// Turns cumulative samples into intervals and keeps running totals.
#[derive(Debug, Default)]
pub struct CacheModel {
    previous_pages: HashMap<CacheKey, u64>,
    previous_stalls: HashMap<StallKey, StallTotals>,
    previous_charges: HashMap<ChargeKey, ChargeValue>,
    previous_files: HashMap<FileKey, u64>,
    refs: HashMap<u64, CgroupRef>,
    previous_ns: Option<u64>,
    /// Pages added minus pages removed or evicted since start, per owner.
    net_pages: HashMap<CgroupRef, i64>,
    /// Pages added, removed or evicted since start, per owner: unchanged
    /// between two intervals means the cgroup's page cache was quiet.
    moved_pages: HashMap<CgroupRef, u64>,
}

fn delta(now: u64, before: Option<u64>) -> u64 {
    match before {
        Some(before) if now >= before => now - before,
        // Restarted (LRU eviction) or new: all of it is new.
        _ => now,
    }
}

impl CacheModel {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds in a sample and returns the interval since the previous one
    /// (since attach for the first).
    pub fn update(&mut self, sample: &CacheSample) -> CacheInterval {
        // Newer mappings win: a pointer reused by a new memcg is re-learnt.
        self.refs
            .extend(sample.refs.iter().map(|(ptr, cgroup)| (*ptr, *cgroup)));
        let flows = self.flow_deltas(sample);
        let stalls = self.stall_deltas(sample);
        let charges = sample.charges.as_ref().map(|c| self.charge_deltas(c));
        let files = sample.files.as_ref().map(|f| self.file_deltas(f));
        let start_ns = self.previous_ns.unwrap_or(sample.monotonic_ns);
        self.previous_ns = Some(sample.monotonic_ns);
        CacheInterval {
            start_ns,
            end_ns: sample.monotonic_ns,
            flows,
            stalls,
            charges,
            files,
        }
    }

    fn name(&self, ptr: u64) -> Option<CgroupRef> {
        self.refs.get(&ptr).copied()
    }

    fn flow_deltas(&mut self, sample: &CacheSample) -> Vec<Flow> {
        let mut flows: HashMap<(Option<CgroupRef>, Option<CgroupRef>, CacheReason), u64> =
            HashMap::new();
        for (key, value) in &sample.pages {
            let moved = delta(*value, self.previous_pages.insert(*key, *value));
            let Some(reason) = CacheReason::from_u32(key.reason) else {
                continue;
            };
            if moved == 0 {
                continue;
            }
            let owner = self.name(key.owner);
            let actor = self.name(key.actor);
            *flows.entry((owner, actor, reason)).or_default() += moved;
            if let Some(owner) = owner {
                *self.moved_pages.entry(owner).or_default() += moved;
                let signed = i64::try_from(moved).unwrap_or(i64::MAX);
                let net = self.net_pages.entry(owner).or_default();
                *net += if reason == CacheReason::Added {
                    signed
                } else {
                    -signed
                };
            }
        }
        let mut flows: Vec<Flow> = flows
            .into_iter()
            .map(|((owner, actor, reason), pages)| Flow {
                owner,
                actor,
                reason,
                pages,
            })
            .collect();
        flows.sort_by_key(|f| std::cmp::Reverse(f.pages));

        flows
    }

    fn stall_deltas(&mut self, sample: &CacheSample) -> Vec<StallDelta> {
        let mut stalls = Vec::new();
        for (key, totals) in &sample.stalls {
            let before = self.previous_stalls.insert(*key, totals.clone());
            let Some(kind) = ReclaimKind::from_u32(key.kind) else {
                continue;
            };
            // A count lower than last time: the entry restarted.
            let before = before.filter(|b| b.count <= totals.count && b.scanned <= totals.scanned);
            let stats = totals.since(&before.unwrap_or_default());
            if stats.count > 0 || stats.scanned > 0 {
                stalls.push(StallDelta {
                    cgroup: self.name(key.memcg),
                    kind,
                    stats,
                });
            }
        }
        stalls.sort_by_key(|s| std::cmp::Reverse(s.stats.total_ns));
        stalls
    }

    fn charge_deltas(&mut self, charges: &[(ChargeKey, ChargeValue)]) -> Vec<ChargeDelta> {
        let mut out = Vec::new();
        for (key, value) in charges {
            let before = self.previous_charges.insert(*key, *value);
            let Some(kind) = ChargeKind::from_u32(key.kind) else {
                continue;
            };
            let before =
                before.filter(|b| b.charged <= value.charged && b.uncharged <= value.uncharged);
            let base = before.unwrap_or_default();
            let change = ChargeDelta {
                cgroup: self.name(key.memcg),
                kind,
                charged: value.charged - base.charged,
                uncharged: value.uncharged - base.uncharged,
            };
            if change.charged > 0 || change.uncharged > 0 {
                out.push(change);
            }
        }
        out
    }

    fn file_deltas(&mut self, files: &[(FileKey, u64)]) -> Vec<FileFlow> {
        let mut out: Vec<FileFlow> = files
            .iter()
            .filter_map(|(key, value)| {
                let moved = delta(*value, self.previous_files.insert(*key, *value));
                let reason = CacheReason::from_u32(key.reason)?;
                (moved > 0).then(|| FileFlow {
                    owner: self.name(key.owner),
                    dev: key.dev,
                    ino: key.ino,
                    reason,
                    pages: moved,
                })
            })
            .collect();
        out.sort_by_key(|f| std::cmp::Reverse(f.pages));
        out
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
    pub stalls: Vec<StallDelta>,
    /// `(charged, uncharged)` pages by (cgroup id, kind).
    pub charges: HashMap<(u64, ChargeKind), (u64, u64)>,
}

impl Totals {
    pub fn add(&mut self, interval: &CacheInterval) {
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
    pub fn stalls_of(&self, memcg: u64, kind: ReclaimKind) -> Option<StallTotals> {
        let mut matching = self
            .stalls
            .iter()
            .filter(|s| s.kind == kind && s.cgroup.is_some_and(|c| c.id == memcg));
        let mut merged = matching.next()?.stats.clone();
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
pub fn by_owner(interval: &CacheInterval) -> Vec<OwnerActivity> {
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
    rows.sort_by(|a, b| {
        (b.added + b.evicted_total() + b.removed).cmp(&(a.added + a.evicted_total() + a.removed))
    });
    rows
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use cgtrace_common::{
        cgroup::CgroupRef,
        pagecache::{CacheKey, CacheReason, ReclaimKind, StallKey, stall_bucket},
    };

    use super::{CacheModel, by_owner};
    use crate::probe::sampler::{CacheSample, StallTotals};

    const A: u64 = 0xffff_0000_0000_a000;
    const B: u64 = 0xffff_0000_0000_b000;

    fn cgroup(id: u64) -> CgroupRef {
        CgroupRef {
            id,
            hierarchy: 4,
            level: 1,
        }
    }

    fn key(owner: u64, actor: u64, reason: CacheReason) -> CacheKey {
        CacheKey {
            owner,
            actor,
            reason: reason as u32,
            padding: 0,
        }
    }

    fn sample(at: u64, pages: &[(CacheKey, u64)]) -> CacheSample {
        CacheSample {
            monotonic_ns: at,
            pages: pages.to_vec(),
            refs: HashMap::from([(A, cgroup(10)), (B, cgroup(11))]),
            stalls: Vec::new(),
            charges: None,
            files: None,
        }
    }

    #[test]
    fn intervals_are_differences_and_net_is_kept() {
        let mut model = CacheModel::new();
        let first = model.update(&sample(1_000, &[(key(A, A, CacheReason::Added), 100)]));
        assert_eq!(first.flows.len(), 1);
        assert_eq!(first.flows[0].pages, 100);
        let second = model.update(&sample(
            2_000_001_000,
            &[
                (key(A, A, CacheReason::Added), 150),
                (key(A, B, CacheReason::AncestorLimit), 30),
                (key(A, A, CacheReason::Removed), 5),
            ],
        ));
        assert!((second.seconds() - 2.0).abs() < 1e-9);
        let rows = by_owner(&second);
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
        assert_eq!(model.net_pages(cgroup(10)), 150 - 30 - 5);
        assert!(
            a.charges.is_none(),
            "no memcg stat tracepoints in this sample"
        );
    }

    #[test]
    fn charges_are_split_by_kind_and_direction() {
        use cgtrace_common::pagecache::{ChargeKey, ChargeKind, ChargeValue};
        let mut model = CacheModel::new();
        let file = ChargeKey {
            memcg: A,
            kind: ChargeKind::File as u32,
            padding: 0,
        };
        let anon = ChargeKey {
            memcg: B,
            kind: ChargeKind::Anon as u32,
            padding: 0,
        };
        let mut s = sample(0, &[]);
        s.charges = Some(vec![(
            file,
            ChargeValue {
                charged: 10,
                uncharged: 2,
            },
        )]);
        model.update(&s);
        let mut s = sample(1, &[]);
        s.charges = Some(vec![
            (
                file,
                ChargeValue {
                    charged: 25,
                    uncharged: 2,
                },
            ),
            (
                anon,
                ChargeValue {
                    charged: 0,
                    uncharged: 7,
                },
            ),
        ]);
        let interval = model.update(&s);
        let rows = by_owner(&interval);
        let a = rows.iter().find(|r| r.owner == Some(cgroup(10))).unwrap();
        assert_eq!(a.charges.unwrap()[ChargeKind::File as usize], (15, 0));
        let b = rows.iter().find(|r| r.owner == Some(cgroup(11))).unwrap();
        assert_eq!(b.charge_totals(), Some((0, 7)));
        assert_eq!(b.added, 0, "a row for charges alone");
    }

    #[test]
    fn a_restarted_counter_counts_in_full() {
        let mut model = CacheModel::new();
        model.update(&sample(0, &[(key(A, A, CacheReason::Added), 100)]));
        let after_eviction = model.update(&sample(1, &[(key(A, A, CacheReason::Added), 7)]));
        assert_eq!(after_eviction.flows[0].pages, 7);
        let quiet = model.update(&sample(2, &[(key(A, A, CacheReason::Added), 7)]));
        assert!(quiet.flows.is_empty());
    }

    #[test]
    fn unknown_pointers_and_reasons_are_kept_apart() {
        let mut model = CacheModel::new();
        let interval = model.update(&sample(
            0,
            &[
                (key(0xdead, A, CacheReason::OwnLimit), 4),
                (
                    CacheKey {
                        owner: A,
                        actor: A,
                        reason: 99,
                        padding: 0,
                    },
                    1,
                ),
            ],
        ));
        assert_eq!(interval.flows.len(), 1);
        assert_eq!(interval.flows[0].owner, None);
    }

    #[test]
    fn stall_quantiles_come_from_the_interval_histogram() {
        let mut model = CacheModel::new();
        let mut totals = StallTotals::default();
        for ns in [1_000u64, 2_000, 3_000, 1_000_000] {
            totals.count += 1;
            totals.total_ns += ns;
            totals.max_ns = totals.max_ns.max(ns);
            totals.buckets[stall_bucket(ns)] += 1;
        }
        let stall_key = StallKey {
            memcg: A,
            kind: ReclaimKind::Memcg as u32,
            padding: 0,
        };
        let mut s = sample(0, &[]);
        s.stalls = vec![(stall_key, totals.clone())];
        let interval = model.update(&s);
        let stall = &interval.stalls[0];
        assert_eq!(stall.cgroup, Some(cgroup(10)));
        let stall = &stall.stats;
        assert_eq!(stall.count, 4);
        let (p50, p99) = (
            stall.quantile_ns(0.5).unwrap(),
            stall.quantile_ns(0.99).unwrap(),
        );
        assert!((2_000..=2_560).contains(&p50), "{p50}");
        assert_eq!(p99, 1_000_000, "capped at the max");
        assert!(p50 <= p99 && p99 <= stall.max_ns);

        // Nothing new: no stall row.
        let mut again = sample(1, &[]);
        again.stalls = vec![(stall_key, totals)];
        assert!(model.update(&again).stalls.is_empty());
    }
}
