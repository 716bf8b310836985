//! What a cgroup's own files say, sampled: memory usage, limit, watermark,
//! page cache and memory events; CFS bandwidth and its counters; pressure
//! stall information. Counters count from the moment the session started
//! watching (for a cgroup created later, from its creation), so a model
//! turns two samples into what happened between them, and a recording
//! replays from its first sample.

use cgtrace_common::{cgroup::CgroupRef, pagecache::CHARGE_KINDS};
use serde::Serialize;

use crate::cgroup::Version;

/// `(charged, uncharged)` pages per `ChargeKind` (refaults: counts).
pub type Charges = [(u64, u64); CHARGE_KINDS];

/// A memory cgroup's files at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySample {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub at_ns: u64,
    pub cgroup: CgroupRef,
    /// Which files these are (v1 and v2 name them differently).
    pub version: Version,
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    pub usage_bytes: Option<u64>,
    /// `memory.limit_in_bytes` or `memory.max`; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// The kernel's own high-water mark of usage since the cgroup was
    /// created: `memory.max_usage_in_bytes` (v1) or `memory.peak` (v2,
    /// since 5.19). It sees what sampling misses: an OOM victim may charge
    /// past the limit while it exits, for a moment no sample catches.
    pub peak_bytes: Option<u64>,
    /// The kernel's page-cache figure for the cgroup (`memory.stat`: v1
    /// `cache - shmem`, v2 `file - shmem`).
    pub page_cache_bytes: Option<u64>,
    /// Memory events counted since the session started watching.
    pub events: Option<MemoryEvents>,
    /// Pages charged and uncharged since the session started watching, from
    /// `memory.stat` (the rise of a gauge counts as charged, a fall as
    /// uncharged); present where the memcg stat tracepoints are missing.
    pub stat_charges: Option<Charges>,
}

/// A cpu cgroup's CFS bandwidth and counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSample {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub at_ns: u64,
    pub cgroup: CgroupRef,
    /// `cpu.stat` since the session started watching.
    pub stat: Option<CpuStat>,
    /// The quota now.
    pub bandwidth: Option<Bandwidth>,
    /// CPU time used since the session started watching (v2 `cpu.stat`,
    /// v1 `cpuacct.usage`).
    pub usage_ns: Option<u64>,
}

/// A cgroup's pressure stall information (`memory.pressure`,
/// `cpu.pressure`, `io.pressure`) at one moment; each `None` where the
/// kernel has no such file for the cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PressureSample {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub at_ns: u64,
    pub cgroup: CgroupRef,
    pub memory: Option<Pressure>,
    pub cpu: Option<Pressure>,
    pub io: Option<Pressure>,
}

/// One resource's pressure: some task stalled, and (memory, io; cpu on
/// cgroups) all tasks stalled at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pressure {
    pub some: PressureLine,
    pub full: Option<PressureLine>,
}

/// One line of a `*.pressure` file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PressureLine {
    /// Share of wall time stalled over the last 10, 60 and 300 s, in
    /// hundredths of a percent (the kernel prints two decimals).
    pub avg10_centi: u32,
    pub avg60_centi: u32,
    pub avg300_centi: u32,
    /// Microseconds stalled since the session started watching.
    pub total_us: u64,
}

/// Counts of memory events since the cgroup was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryEvents {
    /// Times usage went over `memory.high` (v2 only).
    pub high: Option<u64>,
    /// Times usage hit the limit (`max` in v2 memory.events; v1 `memory.failcnt`).
    pub max: Option<u64>,
    /// Times the OOM killer was invoked for the group (v2 only).
    pub oom: Option<u64>,
    /// Processes killed by the OOM killer.
    pub oom_kill: Option<u64>,
}

impl MemoryEvents {
    /// The events counted between `before` and `self`.
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        let d = |now: Option<u64>, then: Option<u64>| Some(now?.saturating_sub(then.unwrap_or(0)));
        Self {
            high: d(self.high, before.high),
            max: d(self.max, before.max),
            oom: d(self.oom, before.oom),
            oom_kill: d(self.oom_kill, before.oom_kill),
        }
    }

    /// `self + more`, field by field; a field stays unknown only where
    /// both are.
    #[must_use]
    pub fn plus(&self, more: &Self) -> Self {
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        Self {
            high: sum(self.high, more.high),
            max: sum(self.max, more.max),
            oom: sum(self.oom, more.oom),
            oom_kill: sum(self.oom_kill, more.oom_kill),
        }
    }

    /// Where the counts come from, for the views to say.
    #[must_use]
    pub const fn source(version: Version) -> &'static str {
        match version {
            Version::V1 => "memory.failcnt+memory.oom_control",
            Version::V2 => "memory.events",
        }
    }
}

/// CFS bandwidth counters from `cpu.stat`, in one unit for v1 and v2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuStat {
    /// Enforcement periods that have elapsed.
    pub nr_periods: u64,
    /// Periods in which the group was throttled.
    pub nr_throttled: u64,
    /// Total time run queues of the group spent throttled (v1
    /// `throttled_time`, v2 `throttled_usec`), nanoseconds.
    pub throttled_ns: u64,
    /// CPU time used (v2 `usage_usec`), nanoseconds; `None` on v1, where it
    /// is in the cpuacct hierarchy.
    pub usage_ns: Option<u64>,
}

impl CpuStat {
    /// The counts since `before`.
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        Self {
            nr_periods: self.nr_periods.saturating_sub(before.nr_periods),
            nr_throttled: self.nr_throttled.saturating_sub(before.nr_throttled),
            throttled_ns: self.throttled_ns.saturating_sub(before.throttled_ns),
            usage_ns: self
                .usage_ns
                .zip(before.usage_ns)
                .map(|(now, then)| now.saturating_sub(then)),
        }
    }
}

/// A CFS bandwidth limit: `quota_us` of CPU time per `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bandwidth {
    /// `None`: no limit (`-1` / `max`).
    pub quota_us: Option<u64>,
    pub period_us: u64,
}

impl Bandwidth {
    /// The limit in CPUs (cores): quota / period.
    #[must_use]
    pub fn cores(&self) -> Option<f64> {
        #[expect(clippy::cast_precision_loss, reason = "microsecond settings")]
        self.quota_us
            .map(|quota| quota as f64 / self.period_us.max(1) as f64)
    }

    /// The limit as Kubernetes writes it: millicores.
    #[must_use]
    pub fn millicores(&self) -> Option<u64> {
        self.quota_us
            .map(|quota| quota * 1000 / self.period_us.max(1))
    }
}
