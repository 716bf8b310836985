//! Reads the page-cache and reclaim maps: per-CPU values summed, memcg
//! pointers with the cgroups they belong to. The maps are cumulative since
//! attach; [`CounterDiffer`] turns successive samples into what moved
//! between them, the [`ProbeCounters`] event.
//!
//! A value lower than last time means the kernel's LRU map evicted and
//! restarted the key, and the new value is all delta.

use std::{cell::Cell, collections::HashMap};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap},
};
use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{
        CacheKey, CacheReason, ChargeKey, ChargeKind, ChargeValue, FileKey, ReclaimKind, StallKey,
        StallStats,
    },
};

use super::{ProbeError, take_map};
use crate::{
    event::{Charge, FileFlow, Flow, ProbeCounters, Stall},
    system::Clock,
};

/// The maps, taken out of the loaded object.
pub struct CacheMaps {
    cache: PerCpuHashMap<MapData, CacheKey, u64>,
    refs: BpfHashMap<MapData, u64, CgroupRef>,
    stalls: PerCpuHashMap<MapData, StallKey, StallStats>,
    /// Present when the memcg stat tracepoints are attached.
    charges: Option<PerCpuHashMap<MapData, ChargeKey, ChargeValue>>,
    /// Present with per-file counting.
    files: Option<PerCpuHashMap<MapData, FileKey, u64>>,
    /// How many entries each map gave last time, so a sample allocates its
    /// vectors once at about the right size instead of growing them entry
    /// by entry: a live view samples every second, and each regrowth walks
    /// the allocator's free lists through memory gone cold since.
    sizes: Cell<[usize; 5]>,
}

impl CacheMaps {
    /// Deletes the entries of memcgs that are gone (`keys`, from
    /// [`CounterDiffer::keys_of`]), once their last counts were sampled:
    /// the stall and charge maps are not LRU and would fill with removed
    /// cgroups' entries under churn, and in the LRU maps they would push
    /// out live ones. A memcg that is still charged (a v1 zombie) and
    /// evicts again makes its entries anew.
    pub fn remove(&mut self, keys: &GoneKeys) {
        for key in &keys.pages {
            let _ = self.cache.remove(key);
        }
        for key in &keys.stalls {
            let _ = self.stalls.remove(key);
        }
        if let Some(charges) = &mut self.charges {
            for key in &keys.charges {
                let _ = charges.remove(key);
            }
        }
        if let Some(files) = &mut self.files {
            for key in &keys.files {
                let _ = files.remove(key);
            }
        }
        for ptr in &keys.pointers {
            let _ = self.refs.remove(ptr);
        }
    }
}

/// The map entries of memcgs that are gone.
#[derive(Debug, Default)]
pub struct GoneKeys {
    pages: Vec<CacheKey>,
    stalls: Vec<StallKey>,
    charges: Vec<ChargeKey>,
    files: Vec<FileKey>,
    pointers: Vec<u64>,
}

/// Collects `entries` into a vector sized by the last sample's count.
fn collect_sized<T>(
    entries: impl Iterator<Item = T>,
    sizes: &mut [usize; 5],
    which: usize,
) -> Vec<T> {
    let mut collected = Vec::with_capacity(sizes[which] + sizes[which] / 8);
    collected.extend(entries);
    sizes[which] = collected.len();
    collected
}

/// Cumulative counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct CacheSample {
    pub monotonic_ns: u64,
    /// Pages per (owner, actor, reason), summed over CPUs.
    pub pages: Vec<(CacheKey, u64)>,
    /// memcg pointer → cgroup.
    pub refs: HashMap<u64, CgroupRef>,
    pub stalls: Vec<(StallKey, StallStats)>,
    /// Pages charged and uncharged per (memcg, kind); `None` when the memcg
    /// stat tracepoints are not attached.
    pub charges: Option<Vec<(ChargeKey, ChargeValue)>>,
    /// Pages per (owner, file, reason); `None` without per-file counting.
    pub files: Option<Vec<(FileKey, u64)>>,
}

impl CacheMaps {
    pub fn take(ebpf: &mut Ebpf, with_charges: bool, with_files: bool) -> Result<Self, ProbeError> {
        let map_error = |name| move |source| ProbeError::Map { name, source };
        let charges = if with_charges {
            Some(
                PerCpuHashMap::try_from(take_map(ebpf, "CHARGES")?)
                    .map_err(map_error("CHARGES"))?,
            )
        } else {
            None
        };
        let files = if with_files {
            Some(PerCpuHashMap::try_from(take_map(ebpf, "FILES")?).map_err(map_error("FILES"))?)
        } else {
            None
        };
        Ok(Self {
            charges,
            files,
            cache: PerCpuHashMap::try_from(take_map(ebpf, "CACHE")?).map_err(map_error("CACHE"))?,
            refs: BpfHashMap::try_from(take_map(ebpf, "MEMCG_REFS")?)
                .map_err(map_error("MEMCG_REFS"))?,
            stalls: PerCpuHashMap::try_from(take_map(ebpf, "STALLS")?)
                .map_err(map_error("STALLS"))?,
            sizes: Cell::new([0; 5]),
        })
    }

    /// Reads every map. Entries that vanish while iterating (LRU eviction)
    /// are skipped; the next sample sees the current state.
    #[must_use]
    pub fn sample(&self) -> CacheSample {
        let monotonic_ns = Clock::monotonic_now_ns();
        let mut sizes = self.sizes.get();
        let pages = collect_sized(
            self.cache
                .iter()
                .filter_map(Result::ok)
                .map(|(key, values)| (key, values.iter().sum())),
            &mut sizes,
            0,
        );
        let mut refs = HashMap::with_capacity(sizes[1] + sizes[1] / 8);
        refs.extend(self.refs.iter().filter_map(Result::ok));
        sizes[1] = refs.len();
        let stalls = collect_sized(
            self.stalls
                .iter()
                .filter_map(Result::ok)
                .map(|(key, values)| {
                    let mut totals = StallStats::default();
                    for cpu in values.iter() {
                        totals.merge(cpu);
                    }
                    (key, totals)
                }),
            &mut sizes,
            2,
        );
        let charges = self.charges.as_ref().map(|map| {
            collect_sized(
                map.iter().filter_map(Result::ok).map(|(key, values)| {
                    let total =
                        values
                            .iter()
                            .fold(ChargeValue::default(), |sum, cpu| ChargeValue {
                                charged: sum.charged + cpu.charged,
                                uncharged: sum.uncharged + cpu.uncharged,
                            });
                    (key, total)
                }),
                &mut sizes,
                3,
            )
        });
        let files = self.files.as_ref().map(|map| {
            collect_sized(
                map.iter()
                    .filter_map(Result::ok)
                    .map(|(key, values)| (key, values.iter().sum())),
                &mut sizes,
                4,
            )
        });
        self.sizes.set(sizes);
        CacheSample {
            monotonic_ns,
            pages,
            refs,
            stalls,
            charges,
            files,
        }
    }
}

/// Remembers the last sample, to turn the next into what moved since.
#[derive(Debug, Default)]
pub struct CounterDiffer {
    previous_pages: HashMap<CacheKey, u64>,
    previous_stalls: HashMap<StallKey, StallStats>,
    previous_charges: HashMap<ChargeKey, ChargeValue>,
    previous_files: HashMap<FileKey, u64>,
    refs: HashMap<u64, CgroupRef>,
    previous_ns: Option<u64>,
}

fn delta(now: u64, before: Option<u64>) -> u64 {
    match before {
        Some(before) if now >= before => now - before,
        // Restarted (LRU eviction) or new: all of it is new.
        _ => now,
    }
}

impl CounterDiffer {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// What moved between the previous sample (attach, for the first) and
    /// `sample`.
    pub fn update(&mut self, sample: &CacheSample) -> ProbeCounters {
        // Newer mappings win: a pointer reused by a new memcg is re-learnt.
        self.refs
            .extend(sample.refs.iter().map(|(ptr, cgroup)| (*ptr, *cgroup)));
        let flows = self.flow_deltas(sample);
        let stalls = self.stall_deltas(sample);
        let charges = sample.charges.as_ref().map(|c| self.charge_deltas(c));
        let files = sample.files.as_ref().map(|f| self.file_deltas(f));
        self.forget_gone(sample);
        let start_ns = self.previous_ns.unwrap_or(sample.monotonic_ns);
        self.previous_ns = Some(sample.monotonic_ns);
        ProbeCounters {
            start_ns,
            end_ns: sample.monotonic_ns,
            flows,
            stalls,
            charges,
            files,
        }
    }

    /// Keeps only what the maps still hold. An entry the kernel dropped (a
    /// removed cgroup's, or one the LRU evicted) counts from zero if it
    /// comes back, so its last value serves nothing, and kept it would grow
    /// with every cgroup the node ever made; a pointer no entry uses any
    /// more is forgotten likewise.
    fn forget_gone(&mut self, sample: &CacheSample) {
        fn keep_only<K: Eq + std::hash::Hash, V>(
            previous: &mut HashMap<K, V>,
            now: &[(K, impl Sized)],
        ) {
            if previous.len() > now.len() {
                let current: std::collections::HashSet<&K> = now.iter().map(|(k, _)| k).collect();
                previous.retain(|key, _| current.contains(key));
            }
        }
        keep_only(&mut self.previous_pages, &sample.pages);
        keep_only(&mut self.previous_stalls, &sample.stalls);
        if let Some(charges) = &sample.charges {
            keep_only(&mut self.previous_charges, charges);
        }
        if let Some(files) = &sample.files {
            keep_only(&mut self.previous_files, files);
        }
        if self.refs.len() > sample.refs.len() {
            let mut used: std::collections::HashSet<u64> = sample.refs.keys().copied().collect();
            used.extend(sample.pages.iter().flat_map(|(k, _)| [k.owner, k.actor]));
            used.extend(sample.stalls.iter().map(|(k, _)| k.memcg));
            used.extend(sample.charges.iter().flatten().map(|(k, _)| k.memcg));
            used.extend(sample.files.iter().flatten().map(|(k, _)| k.owner));
            self.refs.retain(|ptr, _| used.contains(ptr));
        }
    }

    /// The entries, as of the last sample, of the memcgs of `cgroups`
    /// (removed cgroups), which the differ forgets too.
    pub fn keys_of(&mut self, cgroups: &[CgroupRef]) -> GoneKeys {
        let gone: std::collections::HashSet<(u32, u64)> =
            cgroups.iter().map(|c| (c.hierarchy, c.id)).collect();
        let pointers: std::collections::HashSet<u64> = self
            .refs
            .iter()
            .filter(|(_, c)| gone.contains(&(c.hierarchy, c.id)))
            .map(|(ptr, _)| *ptr)
            .collect();
        if pointers.is_empty() {
            return GoneKeys::default();
        }
        let keys = GoneKeys {
            pages: self
                .previous_pages
                .keys()
                .filter(|k| pointers.contains(&k.owner) || pointers.contains(&k.actor))
                .copied()
                .collect(),
            stalls: self
                .previous_stalls
                .keys()
                .filter(|k| pointers.contains(&k.memcg))
                .copied()
                .collect(),
            charges: self
                .previous_charges
                .keys()
                .filter(|k| pointers.contains(&k.memcg))
                .copied()
                .collect(),
            files: self
                .previous_files
                .keys()
                .filter(|k| pointers.contains(&k.owner))
                .copied()
                .collect(),
            pointers: pointers.iter().copied().collect(),
        };
        for key in &keys.pages {
            self.previous_pages.remove(key);
        }
        for key in &keys.stalls {
            self.previous_stalls.remove(key);
        }
        for key in &keys.charges {
            self.previous_charges.remove(key);
        }
        for key in &keys.files {
            self.previous_files.remove(key);
        }
        self.refs.retain(|ptr, _| !pointers.contains(ptr));
        keys
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
            if moved > 0 {
                let owner = self.name(key.owner);
                let actor = self.name(key.actor);
                *flows.entry((owner, actor, reason)).or_default() += moved;
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
        flows.sort_by_key(|f| {
            (
                std::cmp::Reverse(f.pages),
                f.owner.map(|c| (c.hierarchy, c.id)),
                f.actor.map(|c| (c.hierarchy, c.id)),
                f.reason as u32,
            )
        });
        flows
    }

    fn stall_deltas(&mut self, sample: &CacheSample) -> Vec<Stall> {
        let mut stalls = Vec::new();
        for (key, totals) in &sample.stalls {
            let before = self.previous_stalls.insert(*key, *totals);
            let Some(kind) = ReclaimKind::from_u32(key.kind) else {
                continue;
            };
            // A count lower than last time: the entry restarted.
            let before = before.filter(|b| b.count <= totals.count && b.scanned <= totals.scanned);
            let stats = totals.since(&before.unwrap_or_default());
            if stats.count > 0 || stats.scanned > 0 {
                stalls.push(Stall {
                    cgroup: self.name(key.memcg),
                    kind,
                    stats: Box::new(stats),
                });
            }
        }
        stalls.sort_by_key(|s| {
            (
                std::cmp::Reverse(s.stats.total_ns),
                s.cgroup.map(|c| (c.hierarchy, c.id)),
                s.kind as u32,
            )
        });
        stalls
    }

    fn charge_deltas(&mut self, charges: &[(ChargeKey, ChargeValue)]) -> Vec<Charge> {
        let mut out = Vec::new();
        for (key, value) in charges {
            let before = self.previous_charges.insert(*key, *value);
            let Some(kind) = ChargeKind::from_u32(key.kind) else {
                continue;
            };
            let before =
                before.filter(|b| b.charged <= value.charged && b.uncharged <= value.uncharged);
            let base = before.unwrap_or_default();
            let change = Charge {
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
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use cgtrace_common::{
        cgroup::CgroupRef,
        pagecache::{
            CacheKey, CacheReason, ChargeKey, ChargeKind, ChargeValue, ReclaimKind, StallKey,
            StallStats, stall_bucket,
        },
    };

    use super::{CacheSample, CounterDiffer};

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
    fn intervals_are_differences_named_by_cgroup() {
        let mut differ = CounterDiffer::new();
        let first = differ.update(&sample(1_000, &[(key(A, A, CacheReason::Added), 100)]));
        assert_eq!(first.flows.len(), 1);
        assert_eq!(first.flows[0].pages, 100);
        let second = differ.update(&sample(
            2_000_001_000,
            &[
                (key(A, A, CacheReason::Added), 150),
                (key(A, B, CacheReason::AncestorLimit), 30),
            ],
        ));
        assert_eq!((second.start_ns, second.end_ns), (1_000, 2_000_001_000));
        assert_eq!(second.flows.len(), 2);
        assert_eq!(second.flows[0].pages, 50);
        assert_eq!(second.flows[1].owner, Some(cgroup(10)));
        assert_eq!(second.flows[1].actor, Some(cgroup(11)));
    }

    #[test]
    fn what_the_maps_dropped_is_forgotten_and_counts_afresh() {
        let mut differ = CounterDiffer::new();
        let (a, b) = (key(A, A, CacheReason::Added), key(B, B, CacheReason::Added));
        differ.update(&sample(0, &[(a, 100), (b, 7)]));
        // B's cgroup is gone: the LRU dropped its entry.
        differ.update(&sample(1, &[(a, 120)]));
        assert_eq!(differ.previous_pages.len(), 1);
        // And a pointer neither the refs map nor an entry holds.
        let mut gone = sample(2, &[(a, 120)]);
        gone.refs.remove(&B);
        differ.update(&gone);
        assert!(!differ.refs.contains_key(&B), "B's pointer is unused now");
        // A new entry at the same key counts in full.
        let again = differ.update(&sample(3, &[(a, 120), (b, 3)]));
        assert_eq!(again.flows.len(), 1);
        assert_eq!(again.flows[0].pages, 3);
    }

    #[test]
    fn a_removed_cgroups_entries_are_found_and_forgotten() {
        let mut differ = CounterDiffer::new();
        let kept = key(A, A, CacheReason::Added);
        let evicted_by_b = key(A, B, CacheReason::AncestorLimit);
        let own = key(B, B, CacheReason::Added);
        differ.update(&sample(0, &[(kept, 1), (evicted_by_b, 2), (own, 3)]));
        let gone = differ.keys_of(&[cgroup(11)]);
        assert_eq!(gone.pages.len(), 2, "as owner and as actor");
        assert_eq!(gone.pointers, [B]);
        assert_eq!(differ.previous_pages.len(), 1);
        assert!(differ.keys_of(&[cgroup(99)]).pages.is_empty());
    }

    #[test]
    fn charges_are_split_by_kind_and_direction() {
        let mut differ = CounterDiffer::new();
        let file = ChargeKey {
            memcg: A,
            kind: ChargeKind::File as u32,
            padding: 0,
        };
        let value = |charged, uncharged| ChargeValue { charged, uncharged };
        let mut s = sample(0, &[]);
        s.charges = Some(vec![(file, value(10, 2))]);
        differ.update(&s);
        let mut s = sample(1, &[]);
        s.charges = Some(vec![(file, value(25, 2))]);
        let charges = differ.update(&s).charges.unwrap();
        assert_eq!(charges.len(), 1);
        assert_eq!((charges[0].charged, charges[0].uncharged), (15, 0));
        assert_eq!(charges[0].cgroup, Some(cgroup(10)));
    }

    #[test]
    fn a_restarted_counter_counts_in_full() {
        let mut differ = CounterDiffer::new();
        differ.update(&sample(0, &[(key(A, A, CacheReason::Added), 100)]));
        let after_eviction = differ.update(&sample(1, &[(key(A, A, CacheReason::Added), 7)]));
        assert_eq!(after_eviction.flows[0].pages, 7);
        let quiet = differ.update(&sample(2, &[(key(A, A, CacheReason::Added), 7)]));
        assert!(quiet.flows.is_empty());
    }

    #[test]
    fn unknown_pointers_and_reasons_are_kept_apart() {
        let mut differ = CounterDiffer::new();
        let counters = differ.update(&sample(
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
        assert_eq!(counters.flows.len(), 1);
        assert_eq!(counters.flows[0].owner, None);
    }

    #[test]
    fn stall_quantiles_come_from_the_interval_histogram() {
        let mut differ = CounterDiffer::new();
        let mut totals = StallStats::default();
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
        s.stalls = vec![(stall_key, totals)];
        let counters = differ.update(&s);
        let stall = &counters.stalls[0];
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
        assert!(differ.update(&again).stalls.is_empty());
    }
}
