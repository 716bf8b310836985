//! A CFS bandwidth throttle span of one cgroup on one CPU.

use cgtrace_common::cgroup::CgroupRef;
use serde::Serialize;

/// A span during which a cgroup's run queue on one CPU was throttled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThrottleSpan {
    /// The cgroup whose quota ran out (cpu controller hierarchy).
    pub cgroup: Option<String>,
    #[serde(skip)]
    pub cgroup_ref: Option<CgroupRef>,
    pub cpu: u32,
    /// The task that was running when the quota ran out.
    pub pid: u32,
    pub comm: String,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
}

impl ThrottleSpan {
    #[must_use]
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}
