//! Cgroup creation (tp_btf `cgroup_mkdir`), for every feature: the new
//! cgroup's id and path go to the collector, so a cgroup that lives for less
//! than an interval is still named; a new memcg's pointer is mapped to its
//! cgroup; and a filter's allowlist follows the new cgroup if its parent is
//! allowed.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use cgtrace_common::{
    RecordHeader, RecordKind,
    cgroup::{CGROUP_PATH_MAX, CgroupCreatedRecord, CgroupRef},
    offsets::{ABSENT, Offsets},
    stats::LossCounter,
};

use crate::{
    filter,
    kernel::{at, cgroup_ref, memcg_ref, read},
    maps::{EVENTS, count, offsets},
    pagecache::map_memcg,
};

#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> u32 {
    let o = offsets();
    let cgroup: u64 = ctx.arg(0);
    let path: u64 = ctx.arg(1);
    let Ok(created) = cgroup_ref(o, cgroup) else {
        count(LossCounter::ReadFailed);
        return 0;
    };
    announce(&created, path);
    let memcg = new_memcg(o, cgroup);
    if memcg != 0
        && let Ok(memcg_cgroup) = memcg_ref(o, memcg)
    {
        map_memcg(memcg, memcg_cgroup);
    }
    filter::cgroup_created(o, cgroup, &created, memcg);
    0
}

/// The new cgroup's memcg, or 0 when it has no memory controller.
#[inline(always)]
fn new_memcg(o: &Offsets, cgroup: u64) -> u64 {
    if o.memory_cgrp_id == ABSENT {
        return 0;
    }
    match read::<u64>(cgroup, at(o.cgroup_subsys, 8 * o.memory_cgrp_id)) {
        Ok(css) if css != 0 => css - u64::from(o.memcg_css),
        _ => 0,
    }
}

/// Sends a new cgroup's id and path to the collector.
#[inline(always)]
fn announce(created: &CgroupRef, path: u64) {
    // Filled in place: the 256-byte path would crowd the BPF stack.
    let Some(mut slot) = EVENTS.reserve::<CgroupCreatedRecord>(0) else {
        count(LossCounter::RingBufFull);
        return;
    };
    let record = slot.write(CgroupCreatedRecord {
        header: RecordHeader {
            kind: RecordKind::CgroupCreated as u32,
            size: core::mem::size_of::<CgroupCreatedRecord>() as u32,
            // SAFETY: a helper call with no arguments.
            monotonic_ns: unsafe { bpf_ktime_get_ns() },
        },
        cgroup: *created,
        path: [0; CGROUP_PATH_MAX],
    });
    // SAFETY: reads a kernel string into the record's own buffer.
    if unsafe { bpf_probe_read_kernel_str_bytes(path as *const u8, &mut record.path) }.is_err() {
        count(LossCounter::ReadFailed);
    }
    slot.submit(0);
    count(LossCounter::Submitted);
}
