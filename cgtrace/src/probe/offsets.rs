//! Fills `cgtrace_common::offsets::Offsets` from the running kernel's BTF.
//!
//! Members the OOM probe cannot work without are required; the rest are
//! optional and, when a kernel lacks them, stay `ABSENT` so the programs
//! skip those reads and the collector says which fields are unknown.

use cgtrace_common::{
    offsets::{ABSENT, Offsets},
    pagecache::ChargeKind,
};

use crate::btf::{Btf, BtfError};

/// The offsets, and the optional members this kernel does not have.
#[derive(Debug, Clone)]
pub struct KernelLayout {
    pub offsets: Offsets,
    /// Human-readable names of optional members that are absent.
    pub absent: Vec<String>,
    /// `enum oom_constraint` values, to decode the fentry variant's field.
    pub oom_constraints: Vec<(i64, &'static str)>,
}

/// Optional members to treat as absent whatever BTF says
/// (`--pretend-absent`): how a test shows a kernel that lacks one, on this
/// kernel, down to the programs' failed reads and their log.
static PRETEND_ABSENT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Treats these optional members (`struct.member`) as absent from now on.
pub fn pretend_absent(members: &[String]) {
    *PRETEND_ABSENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = members.to_vec();
}

/// Resolves every offset cgtrace uses. Fails only when a required member is
/// missing.
#[expect(
    clippy::too_many_lines,
    reason = "one flat table of every offset, read top to bottom"
)]
pub fn resolve(btf: &Btf) -> Result<KernelLayout, BtfError> {
    let mut absent = Vec::new();
    let (mm_rss_first, mm_rss_stride) = rss_layout(btf).unwrap_or_else(|_| {
        absent.push("mm_struct.rss_stat".to_owned());
        (ABSENT, ABSENT)
    });

    // `throttled` is `bool throttled:1` on 6.18 and an int before: read the
    // byte holding its bit and test that bit (a whole int's low byte is 0/1).
    let (cfs_rq_throttled_byte, cfs_rq_throttled_mask) =
        if let Ok(member) = btf.member("cfs_rq", "throttled") {
            (member.bit_offset / 8, 1u32 << (member.bit_offset % 8))
        } else {
            absent.push("cfs_rq.throttled".to_owned());
            (ABSENT, 0)
        };
    let pretended = PRETEND_ABSENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut optional = |result: Result<u32, BtfError>, name: &str| -> u32 {
        match result {
            Ok(offset) if !pretended.iter().any(|p| p == name) => offset,
            _ => {
                absent.push(name.to_owned());
                ABSENT
            }
        }
    };
    let enum_u32 = |name: &str| -> Result<u32, BtfError> {
        let value = btf.enum_value(name)?;
        u32::try_from(value).map_err(|_| BtfError::MissingEnumValue {
            name: format!("{name} (value {value} out of range)"),
        })
    };

    let offsets = Offsets {
        task_pid: btf.offset_of("task_struct", "pid")?,
        task_tgid: btf.offset_of("task_struct", "tgid")?,
        task_comm: btf.offset_of("task_struct", "comm")?,
        task_cgroups: btf.offset_of("task_struct", "cgroups")?,
        task_mm: optional(btf.offset_of("task_struct", "mm"), "task_struct.mm"),
        task_real_cred: optional(
            btf.offset_of("task_struct", "real_cred"),
            "task_struct.real_cred",
        ),
        task_signal: optional(btf.offset_of("task_struct", "signal"), "task_struct.signal"),
        cred_uid: optional(btf.offset_of("cred", "uid"), "cred.uid"),
        signal_oom_score_adj: optional(
            btf.offset_of("signal_struct", "oom_score_adj"),
            "signal_struct.oom_score_adj",
        ),
        css_set_subsys: btf.offset_of("css_set", "subsys")?,
        memory_cgrp_id: enum_u32("memory_cgrp_id")?,
        css_cgroup: btf.offset_of("cgroup_subsys_state", "cgroup")?,
        css_parent: btf.offset_of("cgroup_subsys_state", "parent")?,
        cgroup_kn: btf.offset_of("cgroup", "kn")?,
        cgroup_root: btf.offset_of("cgroup", "root")?,
        cgroup_level: btf.offset_of("cgroup", "level")?,
        kernfs_node_id: btf.offset_of("kernfs_node", "id")?,
        cgroup_root_hierarchy_id: btf.offset_of("cgroup_root", "hierarchy_id")?,
        memcg_css: btf.offset_of("mem_cgroup", "css")?,
        memcg_memory: btf.offset_of("mem_cgroup", "memory")?,
        memcg_memsw: optional(btf.offset_of("mem_cgroup", "memsw"), "mem_cgroup.memsw"),
        memcg_oom_group: optional(
            btf.offset_of("mem_cgroup", "oom_group"),
            "mem_cgroup.oom_group",
        ),
        memcg_events_local: optional(
            btf.offset_of("mem_cgroup", "memory_events_local"),
            "mem_cgroup.memory_events_local",
        ),
        memcg_event_oom_kill: optional(enum_u32("MEMCG_OOM_KILL"), "MEMCG_OOM_KILL"),
        page_counter_usage: btf.offset_of("page_counter", "usage")?,
        page_counter_max: btf.offset_of("page_counter", "max")?,
        mm_total_vm: optional(btf.offset_of("mm_struct", "total_vm"), "mm_struct.total_vm"),
        mm_pgtables_bytes: optional(
            btf.offset_of("mm_struct", "pgtables_bytes"),
            "mm_struct.pgtables_bytes",
        ),
        mm_rss_first,
        mm_rss_stride,
        mm_filepages: optional(enum_u32("MM_FILEPAGES"), "MM_FILEPAGES"),
        mm_anonpages: optional(enum_u32("MM_ANONPAGES"), "MM_ANONPAGES"),
        mm_shmempages: optional(enum_u32("MM_SHMEMPAGES"), "MM_SHMEMPAGES"),
        oc_memcg: optional(btf.offset_of("oom_control", "memcg"), "oom_control.memcg"),
        oc_totalpages: optional(
            btf.offset_of("oom_control", "totalpages"),
            "oom_control.totalpages",
        ),
        oc_constraint: optional(
            btf.offset_of("oom_control", "constraint"),
            "oom_control.constraint",
        ),
        folio_flags: optional(btf.offset_of("folio", "flags"), "folio.flags"),
        folio_memcg_data: optional(btf.offset_of("folio", "memcg_data"), "folio.memcg_data"),
        folio_flags_1: optional(btf.offset_of("folio", "_flags_1"), "folio._flags_1"),
        pg_head: optional(enum_u32("PG_head"), "PG_head"),
        // MEMCG_DATA_FLAGS_MASK is __NR_MEMCG_DATA_FLAGS - 1 (6.x); the
        // flags are the low bits of the pointer, which is at least 8-aligned.
        memcg_data_flags_mask: enum_u32("__NR_MEMCG_DATA_FLAGS")
            .map_or(7, |n| n.saturating_sub(1) | 3),
        task_flags: optional(btf.offset_of("task_struct", "flags"), "task_struct.flags"),
        page_counter_high: optional(btf.offset_of("page_counter", "high"), "page_counter.high"),
        reclaim_stat_nr_dirty: optional(
            btf.offset_of("reclaim_stat", "nr_dirty"),
            "reclaim_stat.nr_dirty",
        ),
        reclaim_stat_nr_writeback: optional(
            btf.offset_of("reclaim_stat", "nr_writeback"),
            "reclaim_stat.nr_writeback",
        ),
        cgroup_subsys: optional(btf.offset_of("cgroup", "subsys"), "cgroup.subsys"),
        folio_mapping: optional(btf.offset_of("folio", "mapping"), "folio.mapping"),
        address_space_host: optional(btf.offset_of("address_space", "host"), "address_space.host"),
        inode_ino: optional(btf.offset_of("inode", "i_ino"), "inode.i_ino"),
        inode_sb: optional(btf.offset_of("inode", "i_sb"), "inode.i_sb"),
        super_block_dev: optional(btf.offset_of("super_block", "s_dev"), "super_block.s_dev"),
        cgroup_self: optional(btf.offset_of("cgroup", "self"), "cgroup.self"),
        task_se_cfs_rq: optional(
            btf.offset_of("task_struct", "se.cfs_rq"),
            "task_struct.se.cfs_rq",
        ),
        task_se_parent: optional(
            btf.offset_of("task_struct", "se.parent"),
            "task_struct.se.parent",
        ),
        se_cfs_rq: optional(
            btf.offset_of("sched_entity", "cfs_rq"),
            "sched_entity.cfs_rq",
        ),
        se_parent: optional(
            btf.offset_of("sched_entity", "parent"),
            "sched_entity.parent",
        ),
        cfs_rq_runtime_enabled: optional(
            btf.offset_of("cfs_rq", "runtime_enabled"),
            "cfs_rq.runtime_enabled",
        ),
        cfs_rq_throttled_byte,
        cfs_rq_throttled_mask,
        cfs_rq_throttle_count: optional(
            btf.offset_of("cfs_rq", "throttle_count"),
            "cfs_rq.throttle_count",
        ),
        cfs_rq_tg: optional(btf.offset_of("cfs_rq", "tg"), "cfs_rq.tg"),
        tg_css: optional(btf.offset_of("task_group", "css"), "task_group.css"),
        memcg_stat_items: ChargeKind::KERNEL_NAMES.map(|name| enum_u32(name).unwrap_or(ABSENT)),
        padding_items: 0,
        page_shift: page_shift(),
        padding: 0,
    };

    let oom_constraints = [
        ("CONSTRAINT_NONE", "none"),
        ("CONSTRAINT_CPUSET", "cpuset"),
        ("CONSTRAINT_MEMORY_POLICY", "mempolicy"),
        ("CONSTRAINT_MEMCG", "memcg"),
    ]
    .into_iter()
    .filter_map(|(name, label)| btf.enum_value(name).ok().map(|v| (v, label)))
    .collect();

    Ok(KernelLayout {
        offsets,
        absent,
        oom_constraints,
    })
}

/// Where the RSS counters live in `mm_struct`: since 6.2 `rss_stat` is an
/// array of `struct percpu_counter` (read its `count`); before, a
/// `struct mm_rss_stat` holding an `atomic_long_t count[]`.
fn rss_layout(btf: &Btf) -> Result<(u32, u32), BtfError> {
    let rss = btf.member("mm_struct", "rss_stat")?;
    let base = rss.byte_offset().unwrap_or(ABSENT);
    let missing = || BtfError::MissingMember {
        type_name: "mm_struct".to_owned(),
        member: "rss_stat (unknown layout)".to_owned(),
    };
    if let Some((element, _)) = btf.array_of(rss.type_id) {
        let count = btf.offset_of("percpu_counter", "count")?;
        let stride = btf.size_of(element).ok_or_else(missing)?;
        return Ok((base + count, u32::try_from(stride).map_err(|_| missing())?));
    }
    let count = btf.offset_of("mm_rss_stat", "count")?;
    Ok((base + count, 8))
}

#[must_use]
pub fn page_shift() -> u32 {
    let page_size = rustix::param::page_size();
    if page_size.is_power_of_two() {
        page_size.trailing_zeros()
    } else {
        12
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;
    use crate::btf::Btf;

    /// The layout values measured on the 6.18 build hosts (see DESIGN.md §3)
    /// must come out of that kernel's BTF; elsewhere, just resolve cleanly.
    #[test]
    fn resolves_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            crate::note!("skipped: this kernel has no BTF");
            return;
        };
        let layout = resolve(&btf).expect("required members resolve");
        let o = layout.offsets;
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if release.starts_with("6.18.") {
            assert_eq!(o.cgroup_kn, 256);
            assert_eq!(o.kernfs_node_id, 96);
            assert_eq!(o.oc_memcg, 16);
            assert_eq!(o.memory_cgrp_id, 4);
        }
        assert!(layout.absent.is_empty(), "absent: {:?}", layout.absent);
        assert_eq!(layout.oom_constraints.len(), 4);
    }
}
