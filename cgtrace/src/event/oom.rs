//! An OOM kill: the victim, the task that invoked the killer, which limit
//! ran out and how full it was, from the probe or the kernel log.

use std::fmt;

use cgtrace_common::cgroup::CgroupRef;
use serde::Serialize;

/// Where an OOM record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OomSource {
    /// The eBPF probe on `mark_victim`, live.
    Probe,
    /// The kernel log (`/dev/kmsg`), for kills before cgtrace started.
    KernelLog,
}

/// What kind of OOM it was: which limit ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// A memory cgroup hit its limit.
    Memcg,
    /// The whole machine ran out of memory.
    Global,
    Cpuset,
    Mempolicy,
    /// Not determined.
    Unknown,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Memcg => "memcg",
            Self::Global => "global",
            Self::Cpuset => "cpuset",
            Self::Mempolicy => "mempolicy",
            Self::Unknown => "unknown",
        })
    }
}

/// How the constraint and the constraining memcg were determined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintFoundBy {
    /// `oom_control` read on entry to `out_of_memory()`: exact.
    OomControl,
    /// The lowest memcg above the allocating task that is at its limit:
    /// the counter the kernel's charge failed on. No memcg at its limit
    /// means a global OOM.
    LimitWalk,
    /// The kernel's own `oom-kill:constraint=...` log line.
    KernelLog,
    /// Nothing said.
    Unknown,
}

/// Which counter's limit was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// `memory.max` / `memory.limit_in_bytes`.
    Memory,
    /// v1 `memory.memsw.limit_in_bytes` (memory + swap).
    MemorySwap,
}

/// A task as an OOM record names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Task {
    /// Process id (thread group id).
    pub pid: u32,
    /// The thread the kernel acted on; `None` when only the pid is known.
    pub tid: Option<u32>,
    pub comm: String,
    pub uid: Option<u32>,
    /// The task's memory cgroup path below its hierarchy's mount.
    pub cgroup: Option<String>,
    #[serde(skip)]
    pub cgroup_ref: Option<CgroupRef>,
}

/// The memory cgroup whose limit was hit, at the moment of the kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OomMemcg {
    pub path: Option<String>,
    pub id: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    pub limit_kind: LimitKind,
    /// Where limit and usage were read: `kernel` (in the probe, at the
    /// kill) or `kernel_log` (the kernel's own report).
    pub values_from: &'static str,
    #[serde(skip)]
    pub cgroup_ref: Option<CgroupRef>,
}

/// The victim's memory as the kernel's "Killed process" line reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VictimMemory {
    pub total_vm_bytes: Option<u64>,
    pub anon_rss_bytes: Option<u64>,
    pub file_rss_bytes: Option<u64>,
    pub shmem_rss_bytes: Option<u64>,
    pub pgtables_bytes: Option<u64>,
}

/// One OOM kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OomKill {
    /// `CLOCK_MONOTONIC` nanoseconds (the kernel log's clock for log records).
    pub monotonic_ns: u64,
    pub source: OomSource,
    pub victim: Task,
    /// The task whose allocation failed and invoked the OOM killer.
    pub trigger: Option<Task>,
    pub constraint: Constraint,
    pub constraint_found_by: ConstraintFoundBy,
    pub oom_memcg: Option<OomMemcg>,
    pub memory: VictimMemory,
    pub oom_score_adj: Option<i16>,
    /// Whether `memory.oom.group` made this part of a whole-group kill.
    pub group_kill: Option<bool>,
    /// The victim memcg's `memory.events.local` `oom_kill` after this kill.
    pub victim_memcg_oom_kills: Option<u64>,
    /// Whether the kernel counted this as an OOM kill (`oom_kill` in
    /// `memory.events`): `false` when it only hurried along a task that was
    /// already exiting. `None` when it cannot be told.
    pub counted_as_kill: Option<bool>,
    /// Fields the probe could not read (a kernel read failed).
    pub incomplete: bool,
}
