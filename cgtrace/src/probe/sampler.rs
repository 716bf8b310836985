//! Reads the page-cache and reclaim maps: per-CPU values summed, memcg
//! pointers with the cgroups they belong to. The values are cumulative
//! since attach; `model::cache` turns successive samples into intervals.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap},
};
use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{
        CacheKey, ChargeKey, ChargeValue, FileKey, STALL_BUCKETS, StallKey, StallStats,
        stall_bucket_floor,
    },
};

use super::{ProbeError, take_map};
use crate::system::Clock;

/// The maps, taken out of the loaded object.
pub struct CacheMaps {
    cache: PerCpuHashMap<MapData, CacheKey, u64>,
    refs: BpfHashMap<MapData, u64, CgroupRef>,
    stalls: PerCpuHashMap<MapData, StallKey, StallStats>,
    /// Present when the memcg stat tracepoints are attached.
    charges: Option<PerCpuHashMap<MapData, ChargeKey, ChargeValue>>,
    /// Present with per-file counting.
    files: Option<PerCpuHashMap<MapData, FileKey, u64>>,
}

/// Reclaim statistics of one memcg and kind, all CPUs together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallTotals {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub scanned: u64,
    pub reclaimed: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub buckets: Vec<u64>,
}

impl Default for StallTotals {
    fn default() -> Self {
        Self {
            count: 0,
            total_ns: 0,
            max_ns: 0,
            scanned: 0,
            reclaimed: 0,
            dirty: 0,
            writeback: 0,
            buckets: vec![0; STALL_BUCKETS],
        }
    }
}

impl StallTotals {
    /// Adds one CPU's counters.
    fn add(&mut self, cpu: &StallStats) {
        self.merge(&Self {
            count: cpu.count,
            total_ns: cpu.total_ns,
            max_ns: cpu.max_ns,
            scanned: cpu.scanned,
            reclaimed: cpu.reclaimed,
            dirty: cpu.dirty,
            writeback: cpu.writeback,
            buckets: cpu.buckets.to_vec(),
        });
    }

    /// Adds `other` (counts summed, the larger max kept).
    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
        self.scanned += other.scanned;
        self.reclaimed += other.reclaimed;
        self.dirty += other.dirty;
        self.writeback += other.writeback;
        for (total, more) in self.buckets.iter_mut().zip(&other.buckets) {
            *total += more;
        }
    }

    /// What was counted since `before`; the max stays the running max,
    /// since the kernel keeps no per-interval max.
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        Self {
            count: self.count.saturating_sub(before.count),
            total_ns: self.total_ns.saturating_sub(before.total_ns),
            max_ns: self.max_ns,
            scanned: self.scanned.saturating_sub(before.scanned),
            reclaimed: self.reclaimed.saturating_sub(before.reclaimed),
            dirty: self.dirty.saturating_sub(before.dirty),
            writeback: self.writeback.saturating_sub(before.writeback),
            buckets: self
                .buckets
                .iter()
                .zip(&before.buckets)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        }
    }

    /// The `q` quantile (0..=1) from the histogram: the top of the bucket it
    /// falls in, never above the observed max. `None` without stalls.
    #[must_use]
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within a histogram of u64 counts"
        )]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let top = if bucket + 1 < STALL_BUCKETS {
                    stall_bucket_floor(bucket + 1)
                } else {
                    u64::MAX
                };
                return Some(top.min(self.max_ns));
            }
        }
        Some(self.max_ns)
    }
}

/// Cumulative counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct CacheSample {
    pub monotonic_ns: u64,
    /// Pages per (owner, actor, reason), summed over CPUs.
    pub pages: Vec<(CacheKey, u64)>,
    /// memcg pointer → cgroup.
    pub refs: HashMap<u64, CgroupRef>,
    pub stalls: Vec<(StallKey, StallTotals)>,
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
        })
    }

    /// Reads every map. Entries that vanish while iterating (LRU eviction)
    /// are skipped; the next sample sees the current state.
    #[must_use]
    pub fn sample(&self) -> CacheSample {
        let monotonic_ns = Clock::monotonic_now_ns();
        let pages = self
            .cache
            .iter()
            .filter_map(Result::ok)
            .map(|(key, values)| (key, values.iter().sum()))
            .collect();
        let refs = self.refs.iter().filter_map(Result::ok).collect();
        let stalls = self
            .stalls
            .iter()
            .filter_map(Result::ok)
            .map(|(key, values)| {
                let mut totals = StallTotals::default();
                for cpu in values.iter() {
                    totals.add(cpu);
                }
                (key, totals)
            })
            .collect();
        let charges = self.charges.as_ref().map(|map| {
            map.iter()
                .filter_map(Result::ok)
                .map(|(key, values)| {
                    let total =
                        values
                            .iter()
                            .fold(ChargeValue::default(), |sum, cpu| ChargeValue {
                                charged: sum.charged + cpu.charged,
                                uncharged: sum.uncharged + cpu.uncharged,
                            });
                    (key, total)
                })
                .collect()
        });
        let files = self.files.as_ref().map(|map| {
            map.iter()
                .filter_map(Result::ok)
                .map(|(key, values)| (key, values.iter().sum()))
                .collect()
        });
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
