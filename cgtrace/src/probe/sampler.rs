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
    pagecache::{CacheKey, ChargeKey, ChargeValue, FileKey, STALL_BUCKETS, StallKey, StallStats},
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
    fn add(&mut self, cpu: &StallStats) {
        self.count += cpu.count;
        self.total_ns += cpu.total_ns;
        self.max_ns = self.max_ns.max(cpu.max_ns);
        self.scanned += cpu.scanned;
        self.reclaimed += cpu.reclaimed;
        self.dirty += cpu.dirty;
        self.writeback += cpu.writeback;
        for (total, bucket) in self.buckets.iter_mut().zip(cpu.buckets.iter()) {
            *total += bucket;
        }
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
