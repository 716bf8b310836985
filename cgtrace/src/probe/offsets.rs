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
    /// Whether the kernel has `bpf_get_current_task_btf` (5.11+).
    pub current_task_btf: bool,
    /// Whether `mark_victim` carries the victim's pid rather than its task
    /// (5.10 does).
    pub mark_victim_pid: bool,
    /// Whether a page's memcg is the pointer `page->mem_cgroup` (before
    /// 5.11) rather than the number `memcg_data`.
    pub memcg_pointer: bool,
    /// `obj_cgroup.memcg` where a folio's `memcg_data` holds an object
    /// cgroup (see [`folios_hold_objcg`]).
    pub objcg_memcg: Option<u32>,
}

/// Every optional member and what a kernel without it loses: the declared
/// fallback. A member the programs read but BTF does not have is read by
/// none of them (it stays `ABSENT`, and the programs skip what needs it);
/// one missing from this table fails the tests
/// (`every_optional_member_declares_what_its_absence_costs`), so no read
/// goes without a decision about the kernels that lack it.
pub const DECLARED_ABSENCES: &[(&str, &str)] = &[
    ("task_struct.mm", "the victim's memory sizes"),
    ("task_struct.real_cred", "the victim's uid"),
    ("task_struct.signal", "the victim's oom_score_adj"),
    ("cred.uid", "the victim's uid"),
    ("signal_struct.oom_score_adj", "the victim's oom_score_adj"),
    (
        "mem_cgroup.memsw",
        "whether a kill was at a memory+swap limit (v1)",
    ),
    ("mem_cgroup.oom_group", "group kills (memory.oom.group)"),
    (
        "mem_cgroup.memory_events_local",
        "the victim memcg's own OOM kill count",
    ),
    ("MEMCG_OOM_KILL", "the victim memcg's own OOM kill count"),
    ("mm_struct.total_vm", "the victim's total_vm"),
    ("mm_struct.pgtables_bytes", "the victim's page tables"),
    ("mm_struct.rss_stat", "the victim's RSS by kind"),
    ("MM_FILEPAGES", "the victim's file RSS"),
    ("MM_ANONPAGES", "the victim's anonymous RSS"),
    ("MM_SHMEMPAGES", "the victim's shmem RSS"),
    (
        "oom_control.memcg",
        "the constraining memcg from oom_control (the limit walk finds it)",
    ),
    ("oom_control.totalpages", "the OOM domain's size"),
    (
        "oom_control.constraint",
        "the kill's constraint from oom_control",
    ),
    (
        "oom_control.chosen",
        "the victim on kernels whose mark_victim carries a pid",
    ),
    (
        "folio.flags",
        "large page-cache folios (each counts one page)",
    ),
    (
        "folio.memcg_data",
        "page-cache owners (no page-cache attribution)",
    ),
    (
        "folio._flags_1",
        "large page-cache folios (each counts one page)",
    ),
    ("PG_head", "large page-cache folios (each counts one page)"),
    (
        "obj_cgroup.memcg",
        "page-cache owners where folios hold an object cgroup (no page-cache attribution)",
    ),
    (
        "task_struct.flags",
        "telling reclaim from removal (evictions count as removals)",
    ),
    (
        "page_counter.high",
        "memory.high limits in the reclaim target walk",
    ),
    ("reclaim_stat.nr_dirty", "dirty pages met by reclaim"),
    (
        "reclaim_stat.nr_writeback",
        "writeback pages met by reclaim",
    ),
    (
        "cgroup.subsys",
        "a new cgroup's memcg, for a filter's verdict cache",
    ),
    ("folio.mapping", "page cache by file (cache --files)"),
    ("address_space.host", "page cache by file (cache --files)"),
    ("inode.i_ino", "page cache by file (cache --files)"),
    ("inode.i_sb", "page cache by file (cache --files)"),
    ("super_block.s_dev", "page cache by file (cache --files)"),
    (
        "cgroup.self",
        "a filter following cgroups created inside a selected one",
    ),
    ("task_struct.se.cfs_rq", "throttle spans (tp_btf variant)"),
    (
        "task_struct.se.parent",
        "throttle spans of nested groups (tp_btf variant)",
    ),
    (
        "sched_entity.cfs_rq",
        "throttle spans of nested groups (tp_btf variant)",
    ),
    (
        "sched_entity.parent",
        "throttle spans of nested groups (tp_btf variant)",
    ),
    ("cfs_rq.runtime_enabled", "throttle spans (tp_btf variant)"),
    ("cfs_rq.throttled", "throttle spans (tp_btf variant)"),
    (
        "cfs_rq.throttle_count",
        "throttle spans under a throttled parent (tp_btf variant)",
    ),
    ("cfs_rq.tg", "the throttled group (throttle spans)"),
    ("task_group.css", "the throttled group (throttle spans)"),
];

/// What a kernel without optional member `name` loses.
#[must_use]
pub fn cost_of_absence(name: &str) -> Option<&'static str> {
    DECLARED_ABSENCES
        .iter()
        .find(|(member, _)| *member == name)
        .map(|(_, cost)| *cost)
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

    // Where folios hold an object cgroup, its memcg member is one more
    // read on the way to the owner: without it, no owner at all.
    let objcg_memcg = folios_hold_objcg(btf)
        .then(|| optional(btf.offset_of("obj_cgroup", "memcg"), "obj_cgroup.memcg"));
    let mut offsets = Offsets {
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
        folio_flags: optional(first_of(btf, FOLIO_FLAGS), "folio.flags"),
        folio_memcg_data: optional(first_of(btf, FOLIO_MEMCG), "folio.memcg_data"),
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
        folio_mapping: optional(first_of(btf, FOLIO_MAPPING), "folio.mapping"),
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
        oc_chosen: optional(btf.offset_of("oom_control", "chosen"), "oom_control.chosen"),
    };

    if objcg_memcg == Some(ABSENT) {
        offsets.folio_memcg_data = ABSENT;
    }

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
        current_task_btf: btf.enum_value("BPF_FUNC_get_current_task_btf").is_ok(),
        mark_victim_pid: btf.tracepoint_arg_is_pointer("mark_victim", 0) == Some(false),
        objcg_memcg: objcg_memcg.filter(|offset| *offset != ABSENT),
        memcg_pointer: btf.offset_of("page", "mem_cgroup").is_ok()
            && btf.offset_of("folio", "memcg_data").is_err()
            && btf.offset_of("page", "memcg_data").is_err(),
    })
}

/// A folio's members, and where a kernel before folios (5.15 and older)
/// has them: a folio overlays its head page, and the filemap tracepoints
/// there take the `struct page` itself. Before 5.11 the memcg is a plain
/// pointer, `page->mem_cgroup` (its low bit marks a slab page's object
/// cgroups, which page-cache pages never are).
const FOLIO_FLAGS: &[(&str, &str)] = &[("folio", "flags"), ("page", "flags")];
const FOLIO_MAPPING: &[(&str, &str)] = &[("folio", "mapping"), ("page", "mapping")];
const FOLIO_MEMCG: &[(&str, &str)] = &[
    ("folio", "memcg_data"),
    ("page", "memcg_data"),
    ("page", "mem_cgroup"),
];

/// Whether page-cache folios are charged through an object cgroup: kernels
/// that reparent LRU folios when their memcg dies (7.3 does, with
/// `lru_reparent_memcg`; 6.18 does not) keep an `obj_cgroup` in `memcg_data`, one step
/// from the memcg, as kernel memory always had.
fn folios_hold_objcg(btf: &Btf) -> bool {
    btf.has(crate::btf::Kind::Func, "lru_reparent_memcg")
}

/// The offset of the first of `candidates` (`struct`, `member`) this kernel
/// has; the newest first, each older one a declared fallback at the same
/// place in the same object.
fn first_of(btf: &Btf, candidates: &[(&str, &str)]) -> Result<u32, BtfError> {
    let mut first_error = None;
    for (type_name, member) in candidates {
        match btf.offset_of(type_name, member) {
            Ok(offset) => return Ok(offset),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or(BtfError::MissingMember {
        type_name: String::new(),
        member: String::new(),
    }))
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
    use super::{DECLARED_ABSENCES, cost_of_absence, resolve};
    use crate::btf::{Btf, fixture::Builder};

    /// A kernel with the required members and nothing else.
    fn bare_kernel() -> Btf {
        let mut b = Builder::new();
        let long = b.int("long", 8);
        let int = b.int("int", 4);
        let ptr = b.ptr(long);
        b.structure(
            "task_struct",
            64,
            &[
                ("pid", int, 0),
                ("tgid", int, 4),
                ("comm", long, 8),
                ("cgroups", ptr, 16),
            ],
        );
        let subsys = b.array(ptr, 14, int);
        b.structure("css_set", 112, &[("subsys", subsys, 0)]);
        b.enumeration("cgroup_subsys_id", &[("memory_cgrp_id", 4)]);
        let css = b.structure(
            "cgroup_subsys_state",
            16,
            &[("cgroup", ptr, 0), ("parent", ptr, 8)],
        );
        b.structure(
            "cgroup",
            24,
            &[("kn", ptr, 0), ("root", ptr, 8), ("level", int, 16)],
        );
        b.structure("kernfs_node", 8, &[("id", long, 0)]);
        b.structure("cgroup_root", 4, &[("hierarchy_id", int, 0)]);
        let counter = b.structure("page_counter", 16, &[("usage", long, 0), ("max", long, 8)]);
        b.structure(
            "mem_cgroup",
            32,
            &[("css", css, 0), ("memory", counter, 16)],
        );
        // Folios holding an object cgroup, whose memcg member is missing.
        b.func("lru_reparent_memcg");
        Btf::parse(b.build()).unwrap()
    }

    #[test]
    fn every_optional_member_declares_what_its_absence_costs() {
        let layout = resolve(&bare_kernel()).expect("the required members are there");
        let undeclared: Vec<&String> = layout
            .absent
            .iter()
            .filter(|member| cost_of_absence(member).is_none())
            .collect();
        assert!(
            undeclared.is_empty(),
            "read by the programs, absent from this kernel, and no fallback declared: {undeclared:?}"
        );
        // And no declaration outlives the member it was for.
        let stale: Vec<&str> = DECLARED_ABSENCES
            .iter()
            .map(|(member, _)| *member)
            .filter(|member| !layout.absent.iter().any(|absent| absent == member))
            .collect();
        assert!(stale.is_empty(), "declared, but never read: {stale:?}");
    }

    #[test]
    fn a_kernel_before_folios_gives_the_pages_members() {
        let mut b = Builder::new();
        let long = b.int("long", 8);
        let ptr = b.ptr(long);
        // 5.10: no struct folio; the memcg is `page->mem_cgroup` in a union.
        let memcg = b.union("", 8, &[("mem_cgroup", ptr, 0), ("obj_cgroups", ptr, 0)]);
        b.structure(
            "page",
            64,
            &[("flags", long, 0), ("mapping", ptr, 24), ("", memcg, 56)],
        );
        let btf = Btf::parse(b.build()).unwrap();
        assert_eq!(super::first_of(&btf, super::FOLIO_MEMCG).unwrap(), 56);
        assert_eq!(super::first_of(&btf, super::FOLIO_MAPPING).unwrap(), 24);
        assert_eq!(super::first_of(&btf, super::FOLIO_FLAGS).unwrap(), 0);
    }

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
