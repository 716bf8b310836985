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
    cgroup::{CGROUP_PATH_MAX, CgroupCreatedRecord, CgroupRef, CgroupRemovedRecord},
    offsets::{ABSENT, Offsets},
    stats::{LossCounter, ReadChain},
};

use crate::{
    failure::{Chain as _, Failure, finish, note},
    filter,
    kernel::{ReadError, at, cgroup_ref, memcg_ref, read},
    maps::{EVENTS, count, offsets},
    pagecache::map_memcg,
};

#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "cgroup_mkdir", try_cgroup_mkdir(&ctx))
}

#[inline(always)]
fn try_cgroup_mkdir(ctx: &BtfTracePointContext) -> Result<(), Failure> {
    let o = offsets();
    let cgroup: u64 = ctx.arg(0);
    let path: u64 = ctx.arg(1);
    let created = cgroup_ref(o, cgroup).chain(ReadChain::CgroupIdentity)?;
    // Each step goes on whatever the one before could not do.
    let announced = announce(&created, path);
    let memcg = new_memcg(o, cgroup);
    if memcg != 0 {
        match memcg_ref(o, memcg).chain(ReadChain::MemcgIdentity) {
            Ok(memcg_cgroup) => map_memcg(memcg, memcg_cgroup),
            Err(failure) => note(ctx, "cgroup_mkdir", failure),
        }
    }
    if let Err(failure) = filter::cgroup_created(o, cgroup, &created, memcg) {
        note(ctx, "cgroup_mkdir", failure);
    }
    announced
}

#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "cgroup_rmdir", try_cgroup_rmdir(&ctx))
}

/// Says which cgroup went, if the filter keeps it.
#[inline(always)]
fn try_cgroup_rmdir(ctx: &BtfTracePointContext) -> Result<(), Failure> {
    let cgroup: u64 = ctx.arg(0);
    let removed = cgroup_ref(offsets(), cgroup).chain(ReadChain::CgroupIdentity)?;
    if !filter::cgroup_allowed(&removed) {
        return Ok(());
    }
    let Some(mut slot) = EVENTS.reserve::<CgroupRemovedRecord>(0) else {
        return Err(Failure::RING_BUF_FULL);
    };
    slot.write(CgroupRemovedRecord {
        header: RecordHeader {
            kind: RecordKind::CgroupRemoved as u32,
            size: core::mem::size_of::<CgroupRemovedRecord>() as u32,
            // SAFETY: a helper call with no arguments.
            monotonic_ns: unsafe { bpf_ktime_get_ns() },
        },
        cgroup: removed,
    });
    slot.submit(0);
    count(LossCounter::Submitted);
    Ok(())
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

/// Sends a new cgroup's id and path to the collector (with the path empty
/// if it could not be read: the id still names it).
#[inline(always)]
fn announce(created: &CgroupRef, path: u64) -> Result<(), Failure> {
    // Filled in place: the 256-byte path would crowd the BPF stack.
    let Some(mut slot) = EVENTS.reserve::<CgroupCreatedRecord>(0) else {
        return Err(Failure::RING_BUF_FULL);
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
    let read = unsafe { bpf_probe_read_kernel_str_bytes(path as *const u8, &mut record.path) }
        .map(|_| ())
        .map_err(|errno| ReadError(errno.into()));
    slot.submit(0);
    count(LossCounter::Submitted);
    read.chain(ReadChain::CgroupPath)
}
