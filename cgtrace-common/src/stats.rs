//! Loss counters kept by the eBPF programs in a per-CPU array.
//!
//! The programs count what they could not deliver; the collector sums the
//! per-CPU values and reports them, so no event is lost without saying so.

crate::code_enum! {
    /// Index into the `LOSS` per-CPU array.
    pub enum LossCounter: u32 {
        /// `bpf_ringbuf_reserve` failed: the ring buffer was full.
        RingBufFull = 0 => "ring_buffer_full",
        /// Records successfully submitted to the ring buffer.
        Submitted = 1 => "submitted",
        /// A map was full: a reclaim context or a stall histogram was not kept.
        MapFull = 2 => "map_full",
    }
}

crate::code_enum! {
    /// Which chain of kernel fields a program could not read: an index into
    /// the `READ_FAILURES` per-CPU array. A failed read means an offset BTF
    /// did not give, a null pointer on the way, or a fault; the event is
    /// then dropped or goes out with those fields unknown, and is counted
    /// here by the chain that failed.
    pub enum ReadChain: u32 {
        /// `cgroup->kn->id`, `cgroup->level`, `cgroup->root->hierarchy_id`.
        CgroupIdentity = 0 => "cgroup_identity",
        /// The path string of `cgroup_mkdir`.
        CgroupPath = 1 => "cgroup_path",
        /// `cgroup->self.parent->cgroup` of a new cgroup (the filter's
        /// inheritance).
        CgroupParent = 2 => "cgroup_parent",
        /// `folio->memcg_data`, `folio->flags` and a large folio's order.
        FolioOwner = 3 => "folio_owner",
        /// `folio->mapping->host` and the inode's number and device.
        FolioFile = 4 => "folio_file",
        /// `task->cgroups->subsys[memory]`: a task's memcg.
        TaskMemcg = 5 => "task_memcg",
        /// `memcg->css.cgroup` and its identity.
        MemcgIdentity = 6 => "memcg_identity",
        /// `reclaim_stat->nr_dirty` / `nr_writeback`.
        ReclaimStat = 7 => "reclaim_stat",
        /// The OOM victim's pid, tgid, comm, credentials and `oom_score_adj`.
        OomVictim = 8 => "oom_victim",
        /// The OOM victim's `mm`: total VM, RSS counters, page tables.
        OomVictimMm = 9 => "oom_victim_mm",
        /// `oom_control`'s memcg, total pages and constraint, and the
        /// constraining memcg's page counter.
        OomControl = 10 => "oom_control",
        /// `task->se.cfs_rq` and the run queues' throttle state.
        RunQueue = 11 => "run_queue",
        /// `cfs_rq->tg->css`: a throttled run queue's cgroup.
        RunQueueGroup = 12 => "run_queue_group",
    }
}

/// Number of slots in the `READ_FAILURES` array.
#[expect(clippy::cast_possible_truncation, reason = "a handful of slots")]
pub const READ_CHAINS: u32 = ReadChain::COUNT as u32;

/// Number of slots in the `LOSS` array.
#[expect(clippy::cast_possible_truncation, reason = "a handful of slots")]
pub const LOSS_COUNTERS: u32 = LossCounter::COUNT as u32;
