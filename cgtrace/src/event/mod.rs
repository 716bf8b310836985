//! The one currency of the program: every fact any view needs, as an
//! owned, decoded [`Event`].
//!
//! The probes (`probe/`), the cgroup files (`cgroup/`) and the kernel log
//! (`kmsg`) produce events; a recording stores them (`trace/`); the models
//! (`model/`) are fed them, live or replayed, and the views read the
//! models. A recording holds the models' inputs, never their outputs, so a
//! replay re-runs the same models and every view is the same either way.

mod cgroupfs;
mod counters;
mod oom;
mod throttle;

use cgtrace_common::cgroup::CgroupRef;
use serde::Serialize;

pub use self::{
    cgroupfs::{
        Bandwidth, Charges, CpuSample, CpuStat, MemoryEvents, MemorySample, Pressure, PressureLine,
        PressureSample,
    },
    counters::{Charge, FileFlow, Flow, ProbeCounters, Stall},
    oom::{
        Constraint, ConstraintFoundBy, LimitKind, OomKill, OomMemcg, OomSource, Task, VictimMemory,
    },
    throttle::ThrottleSpan,
};

/// Everything cgtrace knows, one fact at a time, in the order it learnt
/// them. A cgroup is named (by [`Event::CgroupCreated`] or
/// [`Event::CgroupNamed`]) before the first event that refers to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A cgroup was created while watched (`cgroup_mkdir`), with its path.
    CgroupCreated(CgroupNamed),
    /// The path of a cgroup that existed before, read from cgroupfs.
    CgroupNamed(CgroupNamed),
    /// A cgroup was removed (`cgroup_rmdir`).
    CgroupRemoved(CgroupRemoved),
    /// The names of the workload at a cgroup path, learnt from the node's
    /// files (pod logs, Docker state).
    WorkloadNamed(WorkloadNames),
    /// Boxed: OOM kills are rare and large, throttle spans frequent and small.
    OomKill(Box<OomKill>),
    ThrottleSpan(ThrottleSpan),
    /// The probe's counters over one sampling interval.
    Counters(Box<ProbeCounters>),
    Memory(Box<MemorySample>),
    Cpu(CpuSample),
    Pressure(Box<PressureSample>),
    /// The probe's delivery and loss counters (cumulative).
    Health(Health),
    /// Closes a sampling interval: every sample of the interval came before.
    Tick(Tick),
}

/// A cgroup and its path below its hierarchy's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupNamed {
    pub cgroup: CgroupRef,
    pub path: String,
}

/// A cgroup that was removed, and when (`CLOCK_MONOTONIC` nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupRemoved {
    pub at_ns: u64,
    pub cgroup: CgroupRef,
}

/// Workload names of the cgroup at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadNames {
    pub path: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

/// The end of a sampling interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The probe's counters at `at_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub at_ns: u64,
    pub stats: ProbeStats,
    /// The last of a session: its losses as they ended.
    pub is_final: bool,
}

/// Loss and delivery counters, summed over CPUs and programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbeStats {
    /// Records the programs put in the ring buffer.
    pub records: u64,
    /// Records lost because the ring buffer was full.
    pub ring_buffer_drops: u64,
    /// Records sent with some fields unknown because a kernel read failed.
    pub read_failures: u64,
    /// Program runs the kernel skipped because another BPF program was
    /// running on that CPU (`bpf_prog_info.recursion_misses`).
    pub recursion_misses: u64,
    /// Records the collector could not decode.
    pub decode_errors: u64,
    /// Reclaim contexts or stall histograms not kept because a map was full.
    pub map_full: u64,
}

impl ProbeStats {
    /// Events lost without a record of any kind.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.ring_buffer_drops + self.recursion_misses + self.decode_errors + self.map_full
    }
}

/// A kernel `comm` (NUL-padded, not necessarily UTF-8) as text.
#[must_use]
pub fn comm_to_string(comm: &[u8]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    crate::text::from_bytes(&comm[..len])
}
