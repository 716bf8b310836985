//! CFS bandwidth throttling: one record per span during which a cgroup's
//! run queue on one CPU was throttled (its quota for the period ran out).

use crate::{RecordHeader, cgroup::CgroupRef};

/// A throttle span, sent when it ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleRecord {
    pub header: RecordHeader,
    /// The cgroup (cpu controller hierarchy) whose quota ran out.
    pub cgroup: CgroupRef,
    pub cpu: u32,
    /// The task that was running when the quota ran out.
    pub pid: u32,
    pub comm: [u8; 16],
    /// `CLOCK_MONOTONIC` when the span began and ended.
    pub start_ns: u64,
    pub end_ns: u64,
    /// `struct task_group *`, to tell groups apart before they are named.
    pub task_group: u64,
}
const _: () = assert!(core::mem::size_of::<ThrottleRecord>() == 80);

/// A span in progress, kept per `struct cfs_rq *` until it ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottleStart {
    pub start_ns: u64,
    pub pid: u32,
    pub cpu: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ThrottleStart>() == 32);

/// Slots for run queues throttled at once on one CPU.
pub const OPEN_SLOTS: usize = 8;

/// The throttled run queues of one CPU (`struct cfs_rq *`, 0 for a free
/// slot), so that any context switch on that CPU can notice when one is
/// running again, even if the group's tasks have moved to other CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenRunQueues {
    pub count: u32,
    /// Explicit padding; always zero.
    pub padding: u32,
    pub slots: [u64; OPEN_SLOTS],
}
const _: () = assert!(core::mem::size_of::<OpenRunQueues>() == 72);
