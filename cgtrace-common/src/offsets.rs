//! Kernel layout values, read from the running kernel's BTF at startup.
//!
//! Rust eBPF has no CO-RE field relocations, so the collector resolves every
//! member offset and enum value it needs from `/sys/kernel/btf/vmlinux` and
//! hands them to the programs as the read-only global `OFFSETS`. The same
//! object file then runs on any kernel whose BTF has these members.

/// Marks an offset the running kernel does not have. Programs skip the read
/// and leave the field unknown.
pub const ABSENT: u32 = u32::MAX;

/// Member offsets (bytes) and enum values of the running kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_cgroups: u32,
    pub task_mm: u32,
    pub task_real_cred: u32,
    pub task_signal: u32,
    pub cred_uid: u32,
    pub signal_oom_score_adj: u32,

    // struct css_set / cgroup_subsys_state / cgroup / kernfs_node / cgroup_root
    pub css_set_subsys: u32,
    /// `enum cgroup_subsys_id` value of `memory_cgrp_id`.
    pub memory_cgrp_id: u32,
    pub css_cgroup: u32,
    pub css_parent: u32,
    pub cgroup_kn: u32,
    pub cgroup_root: u32,
    pub cgroup_level: u32,
    pub kernfs_node_id: u32,
    pub cgroup_root_hierarchy_id: u32,

    // struct mem_cgroup / page_counter
    /// Offset of `css` in `struct mem_cgroup` (0 on every kernel so far, but
    /// read rather than assumed).
    pub memcg_css: u32,
    pub memcg_memory: u32,
    /// `memsw` (cgroup v1 memory+swap counter); [`ABSENT`] without `CONFIG_MEMCG_V1`.
    pub memcg_memsw: u32,
    pub memcg_oom_group: u32,
    pub memcg_events_local: u32,
    /// `enum memcg_memory_event` value of `MEMCG_OOM_KILL`.
    pub memcg_event_oom_kill: u32,
    pub page_counter_usage: u32,
    pub page_counter_max: u32,

    // struct mm_struct
    pub mm_total_vm: u32,
    pub mm_pgtables_bytes: u32,
    /// Offset of the first RSS counter's value inside `mm_struct`:
    /// `rss_stat[0].count` (a `percpu_counter`, 6.2+) or `rss_stat.count[0]`.
    pub mm_rss_first: u32,
    /// Distance between consecutive RSS counters.
    pub mm_rss_stride: u32,
    /// `MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SHMEMPAGES`.
    pub mm_filepages: u32,
    pub mm_anonpages: u32,
    pub mm_shmempages: u32,

    // struct oom_control (fentry variant only)
    pub oc_memcg: u32,
    pub oc_totalpages: u32,
    pub oc_constraint: u32,

    // struct folio
    pub folio_flags: u32,
    pub folio_memcg_data: u32,
    /// `_flags_1`: the order of a large folio lives in its low byte.
    pub folio_flags_1: u32,
    /// `enum pageflags` value of `PG_head` (a large folio's first page).
    pub pg_head: u32,
    /// `MEMCG_DATA_FLAGS_MASK`: low bits of `memcg_data` that are flags.
    pub memcg_data_flags_mask: u32,
    pub task_flags: u32,
    pub page_counter_high: u32,
    // struct reclaim_stat
    pub reclaim_stat_nr_dirty: u32,
    pub reclaim_stat_nr_writeback: u32,
    /// `cgroup.subsys`: a new cgroup's css pointers (for `cgroup_mkdir`).
    pub cgroup_subsys: u32,
    // folio → file (for per-file counts)
    pub folio_mapping: u32,
    pub address_space_host: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub super_block_dev: u32,
    /// `cgroup.self`: the cgroup's own css, whose `parent` leads to the
    /// parent cgroup (for the filter's allowlist to follow new children).
    pub cgroup_self: u32,

    // CFS bandwidth: task_struct.se, sched_entity, cfs_rq, task_group
    /// `task_struct.se.cfs_rq`: the run queue a task's entity is on.
    pub task_se_cfs_rq: u32,
    /// `task_struct.se.parent`.
    pub task_se_parent: u32,
    pub se_cfs_rq: u32,
    pub se_parent: u32,
    pub cfs_rq_runtime_enabled: u32,
    /// `cfs_rq.throttled`: a bitfield on 6.18 (`bool throttled:1`), an int
    /// before. Byte offset, and the mask of its bit in that byte.
    pub cfs_rq_throttled_byte: u32,
    pub cfs_rq_throttled_mask: u32,
    /// `cfs_rq.throttle_count`: throttled levels at and above this one.
    pub cfs_rq_throttle_count: u32,
    pub cfs_rq_tg: u32,
    /// `task_group.css`.
    pub tg_css: u32,

    /// Kernel enum values of the memcg stat items, in `ChargeKind` order
    /// (`ABSENT` where this kernel has no such item).
    pub memcg_stat_items: [u32; crate::pagecache::CHARGE_KINDS],
    /// Explicit padding; always zero.
    pub padding_items: u32,

    /// `PAGE_SHIFT` of the running kernel.
    pub page_shift: u32,
    /// `oom_control.chosen`: the victim, where `mark_victim` carries only
    /// its pid (5.10 does).
    pub oc_chosen: u32,
}
const _: () = assert!(core::mem::size_of::<Offsets>() == 288);

impl Offsets {
    /// Every offset absent: the programs read nothing until the collector
    /// overrides the global.
    pub const ABSENT: Self = Self {
        task_pid: ABSENT,
        task_tgid: ABSENT,
        task_comm: ABSENT,
        task_cgroups: ABSENT,
        task_mm: ABSENT,
        task_real_cred: ABSENT,
        task_signal: ABSENT,
        cred_uid: ABSENT,
        signal_oom_score_adj: ABSENT,
        css_set_subsys: ABSENT,
        memory_cgrp_id: ABSENT,
        css_cgroup: ABSENT,
        css_parent: ABSENT,
        cgroup_kn: ABSENT,
        cgroup_root: ABSENT,
        cgroup_level: ABSENT,
        kernfs_node_id: ABSENT,
        cgroup_root_hierarchy_id: ABSENT,
        memcg_css: ABSENT,
        memcg_memory: ABSENT,
        memcg_memsw: ABSENT,
        memcg_oom_group: ABSENT,
        memcg_events_local: ABSENT,
        memcg_event_oom_kill: ABSENT,
        page_counter_usage: ABSENT,
        page_counter_max: ABSENT,
        mm_total_vm: ABSENT,
        mm_pgtables_bytes: ABSENT,
        mm_rss_first: ABSENT,
        mm_rss_stride: ABSENT,
        mm_filepages: ABSENT,
        mm_anonpages: ABSENT,
        mm_shmempages: ABSENT,
        oc_memcg: ABSENT,
        oc_totalpages: ABSENT,
        oc_constraint: ABSENT,
        folio_flags: ABSENT,
        folio_memcg_data: ABSENT,
        folio_flags_1: ABSENT,
        pg_head: ABSENT,
        memcg_data_flags_mask: 0,
        task_flags: ABSENT,
        page_counter_high: ABSENT,
        reclaim_stat_nr_dirty: ABSENT,
        reclaim_stat_nr_writeback: ABSENT,
        cgroup_subsys: ABSENT,
        folio_mapping: ABSENT,
        address_space_host: ABSENT,
        inode_ino: ABSENT,
        inode_sb: ABSENT,
        super_block_dev: ABSENT,
        cgroup_self: ABSENT,
        task_se_cfs_rq: ABSENT,
        task_se_parent: ABSENT,
        se_cfs_rq: ABSENT,
        se_parent: ABSENT,
        cfs_rq_runtime_enabled: ABSENT,
        cfs_rq_throttled_byte: ABSENT,
        cfs_rq_throttled_mask: 0,
        cfs_rq_throttle_count: ABSENT,
        cfs_rq_tg: ABSENT,
        tg_css: ABSENT,
        memcg_stat_items: [ABSENT; crate::pagecache::CHARGE_KINDS],
        padding_items: 0,
        page_shift: 12,
        oc_chosen: ABSENT,
    };
}

/// The offsets the page-cache programs load straight from BTF-typed
/// pointers (a folio argument, the current task), in a read-only global of
/// their own: the verifier sees each as a constant, checks the load against
/// the kernel's BTF at that offset, and needs no helper call for it. A
/// wrong offset is refused at load time, never read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectOffsets {
    pub folio_flags: u32,
    pub folio_memcg_data: u32,
    pub folio_flags_1: u32,
    /// `task_struct.cgroups`.
    pub task_cgroups: u32,
    /// `task_struct.flags`.
    pub task_flags: u32,
    /// `css_set.subsys[memory_cgrp_id]`: read by helper (the css_set is
    /// reached through an RCU pointer), at a constant offset.
    pub css_set_memcg: u32,
    /// 1 where the kernel has `bpf_get_current_task_btf` (5.11+), whose
    /// task the programs load from directly; 0 before, where the current
    /// task is a plain address its fields are read from by helper.
    pub current_task_btf: u32,
    /// 1 where the folio's memcg is the pointer `page->mem_cgroup` (before
    /// 5.11): loaded directly it would be a typed pointer, which the
    /// programs cannot mask, so it is read by helper as a plain number.
    pub memcg_pointer: u32,
    /// `obj_cgroup.memcg`, where a folio's `memcg_data` holds an object
    /// cgroup rather than the memcg (kernels that reparent LRU folios when a
    /// memcg dies, as 7.3 does); `ABSENT` elsewhere.
    pub objcg_memcg: u32,
}

impl DirectOffsets {
    pub const ABSENT: Self = Self {
        folio_flags: ABSENT,
        folio_memcg_data: ABSENT,
        folio_flags_1: ABSENT,
        task_cgroups: ABSENT,
        task_flags: ABSENT,
        css_set_memcg: ABSENT,
        current_task_btf: 0,
        memcg_pointer: 0,
        objcg_memcg: ABSENT,
    };

    /// The direct offsets within `offsets` (the kernel's facts beside them,
    /// `current_task_btf` and `memcg_pointer`, are the caller's to set).
    #[must_use]
    pub fn of(offsets: &Offsets) -> Self {
        let css_set_memcg = if offsets.css_set_subsys == ABSENT || offsets.memory_cgrp_id == ABSENT
        {
            ABSENT
        } else {
            offsets.css_set_subsys + 8 * offsets.memory_cgrp_id
        };
        Self {
            folio_flags: offsets.folio_flags,
            folio_memcg_data: offsets.folio_memcg_data,
            folio_flags_1: offsets.folio_flags_1,
            task_cgroups: offsets.task_cgroups,
            task_flags: offsets.task_flags,
            css_set_memcg,
            current_task_btf: 0,
            memcg_pointer: 0,
            objcg_memcg: ABSENT,
        }
    }
}
