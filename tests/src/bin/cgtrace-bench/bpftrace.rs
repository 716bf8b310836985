//! The peer: bpftrace scripts doing the aggregation a cgtrace view does, on
//! the same tracepoints, and the kernel's run-time statistics of programs
//! other tools loaded.

use std::collections::HashSet;
use std::os::fd::AsFd as _;

use cgtrace::probe::prog_info::{self, ProgramCounters};

/// Per-cgroup counts on the tracepoints `cgtrace cache` attaches (page-cache
/// insertions and deletions, reclaim stalls, shrink passes, memcg stat
/// updates, cgroup creation), printed every second as the view prints its
/// intervals. bpftrace keys page-cache events by the acting task's cgroup:
/// it does not resolve a page's owner, which cgtrace does. `BEGIN` prints
/// the line the benchmark waits for.
pub const CACHE_SCRIPT: &str = r#"
BEGIN { printf("ready\n"); }
tracepoint:filemap:mm_filemap_add_to_page_cache { @added[cgroup] = count(); }
tracepoint:filemap:mm_filemap_delete_from_page_cache { @deleted[cgroup] = count(); }
tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin,
tracepoint:vmscan:mm_vmscan_direct_reclaim_begin { @start[tid] = nsecs; }
tracepoint:vmscan:mm_vmscan_memcg_reclaim_end,
tracepoint:vmscan:mm_vmscan_direct_reclaim_end /@start[tid]/ {
    @stall_ns[cgroup] = hist(nsecs - @start[tid]);
    delete(@start[tid]);
}
tracepoint:vmscan:mm_vmscan_lru_shrink_inactive { @reclaimed[cgroup] = sum(args->nr_reclaimed); }
tracepoint:memcg:mod_memcg_state,
tracepoint:memcg:mod_memcg_lruvec_state { @stat[args->id, args->item] = sum(args->val); }
tracepoint:cgroup:cgroup_mkdir { @created = count(); }
interval:s:1 { print(@added); print(@deleted); print(@reclaimed); print(@stall_ns); print(@stat); }
"#;

/// Tracepoints [`CACHE_SCRIPT`] attaches.
pub const CACHE_TRACEPOINTS: usize = 10;

/// Whether bpftrace is installed.
pub fn available() -> bool {
    std::process::Command::new("bpftrace")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Ids of every BPF program loaded on the machine now.
pub fn loaded_program_ids() -> HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

/// Name and counters of each program loaded since `before` was taken: the
/// programs of a tool started in between.
pub fn programs_since(before: &HashSet<u32>) -> Vec<(u32, String, ProgramCounters)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| !before.contains(&p.id()))
        .filter_map(|p| {
            let fd = p.fd().ok()?;
            let counters = prog_info::counters(fd.as_fd()).ok()?;
            let name = p.name_as_str().unwrap_or("?").to_owned();
            Some((p.id(), name, counters))
        })
        .collect()
}
