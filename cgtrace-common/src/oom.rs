//! The OOM-kill record: one per task the OOM killer marks as its victim.

use crate::{RecordHeader, cgroup::CgroupRef};

crate::code_enum! {
    /// How the programs found the memory cgroup whose limit was hit.
    pub enum ConstraintSource: u8 {
        /// Not found: a global OOM, or the variant in use cannot tell.
        None = 0 => "none",
        /// `oom_control->memcg`, read on entry to `out_of_memory()` (fentry).
        OomControl = 1 => "oom_control",
        /// The lowest ancestor of the allocating task's memory cgroup
        /// (itself included) whose usage is within one maximal charge of its
        /// limit: the counter the kernel's `page_counter_try_charge()` failed on.
        LimitWalk = 2 => "limit_walk",
    }
}

impl ConstraintSource {
    /// The record's byte; an unknown value as `None`.
    #[must_use]
    pub const fn from_u8(value: u8) -> Self {
        match Self::from_u32(value as u32) {
            Some(source) => source,
            None => Self::None,
        }
    }
}

/// `OomRecord::flags`: a `memory.oom.group` ancestor makes this a group kill.
pub const OOM_FLAG_GROUP_KILL: u8 = 1 << 0;
/// `OomRecord::flags`: the limit that was hit is v1 `memory.memsw.limit_in_bytes`.
pub const OOM_FLAG_MEMSW_LIMIT: u8 = 1 << 1;
/// `OomRecord::flags`: a kernel read failed; some fields are zero.
pub const OOM_FLAG_READ_FAILED: u8 = 1 << 2;

/// One OOM kill, from `tp_btf` `mark_victim` (arg 0: the victim task). The
/// current task is the one whose allocation failed (the trigger).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomRecord {
    pub header: RecordHeader,
    /// Victim process (thread group) id and the thread the kernel picked.
    pub victim_tgid: u32,
    pub victim_tid: u32,
    pub trigger_tgid: u32,
    pub trigger_tid: u32,
    pub victim_uid: u32,
    pub oom_score_adj: i16,
    /// A [`ConstraintSource`] value.
    pub constraint_source: u8,
    /// `OOM_FLAG_*` bits.
    pub flags: u8,
    pub victim_comm: [u8; 16],
    pub trigger_comm: [u8; 16],
    pub victim_memcg: CgroupRef,
    pub trigger_memcg: CgroupRef,
    /// The memory cgroup whose limit was hit; `id == 0` when none was found.
    pub oom_memcg: CgroupRef,
    /// That memcg's `page_counter` max and usage at the moment of the kill, in pages.
    pub oom_memcg_limit_pages: u64,
    pub oom_memcg_usage_pages: u64,
    /// The victim's `mm`: pages, as the kernel's own "Killed process" line
    /// reports them (approximate per-CPU counters, may dip below zero).
    pub total_vm_pages: u64,
    pub anon_rss_pages: i64,
    pub file_rss_pages: i64,
    pub shmem_rss_pages: i64,
    pub pgtables_bytes: u64,
    /// `memory_events_local[MEMCG_OOM_KILL]` of the victim's memcg after this
    /// kill. The kernel bumps it just before marking a victim it kills, and
    /// not when it only hurries along a task that is already exiting, so an
    /// unchanged value means "not counted as a kill".
    pub victim_memcg_oom_kills: u64,
    /// `oom_control->totalpages` and `->constraint` (fentry variant only).
    pub oc_totalpages: u64,
    pub oc_constraint: u32,
    /// Explicit padding; always zero.
    pub padding: u32,
}
const _: () = assert!(core::mem::size_of::<OomRecord>() == 200);
