//! OOM kills: tp_btf `mark_victim` (every kernel with BTF), plus fentry/fexit
//! on `out_of_memory()` where the kernel allows trampolines, which gives the
//! exact `oom_control` instead of the limit walk.

use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, fentry, fexit},
    programs::{BtfTracePointContext, FEntryContext, FExitContext},
};
use cgtrace_common::{
    RecordHeader, RecordKind,
    cgroup::CgroupRef,
    offsets::{ABSENT, Offsets},
    oom::{
        ConstraintSource, OOM_FLAG_GROUP_KILL, OOM_FLAG_MEMSW_LIMIT, OOM_FLAG_READ_FAILED,
        OomRecord,
    },
    stats::{LossCounter, ReadChain},
};

use crate::{
    failure::{Chain as _, Failure, finish},
    kernel::{
        MAX_CGROUP_DEPTH, ReadError, at, limit_walk, memcg_ref, page_counter, parent_memcg, read,
        task_memcg,
    },
    maps::{EVENTS, OOM_IN_PROGRESS, count, offsets},
};
use ReadChain::{OomControl, OomVictim, OomVictimMm};

#[fentry(function = "out_of_memory")]
pub fn oom_enter(ctx: FEntryContext) -> u32 {
    let oc: u64 = ctx.arg(0);
    let kept = OOM_IN_PROGRESS
        .insert(bpf_get_current_pid_tgid(), oc, 0)
        .map_err(|_| Failure::MAP_FULL);
    finish(&ctx, "oom_enter", kept)
}

#[fexit(function = "out_of_memory")]
pub fn oom_exit(_ctx: FExitContext) -> u32 {
    let _ = OOM_IN_PROGRESS.remove(bpf_get_current_pid_tgid());
    0
}

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "mark_victim", try_mark_victim(&ctx))
}

/// 1 where `mark_victim` carries the victim's pid (5.10 does) instead of
/// its task. The task is then the one `out_of_memory()` chose, when fentry
/// kept its `oom_control` and the pids agree; a member of a
/// `memory.oom.group` killed beside it, or a kill without fentry, has its
/// pid alone, flagged as read-failed. Read-only: the verifier drops the
/// path a kernel does not take.
#[unsafe(no_mangle)]
static MARK_VICTIM_PID: Global<u32> = Global::new(0);

/// The victim of a `mark_victim(int pid)`: `oc->chosen`, if it is `pid`.
#[inline(always)]
fn chosen_victim(o: &Offsets, pid: i32) -> Result<u64, ReadError> {
    let Some(oc) = OOM_IN_PROGRESS.get_ptr(bpf_get_current_pid_tgid()) else {
        return Err(ReadError::ABSENT);
    };
    // SAFETY: the pointer comes from a successful hash map lookup.
    let oc = unsafe { *oc };
    let chosen: u64 = read(oc, o.oc_chosen)?;
    if read::<i32>(chosen, o.task_pid)? == pid {
        Ok(chosen)
    } else {
        Err(ReadError::ABSENT)
    }
}

/// Sends the kill, with whatever could not be read left unknown and flagged:
/// a kill is never dropped for a field.
#[inline(always)]
fn try_mark_victim(ctx: &BtfTracePointContext) -> Result<(), Failure> {
    let (victim, pid) = if MARK_VICTIM_PID.load() == 0 {
        (ctx.arg::<u64>(0), 0)
    } else {
        let pid = ctx.arg::<u64>(0) as i32;
        (chosen_victim(offsets(), pid).unwrap_or(0), pid)
    };
    // A filtered view keeps kills whose victim's cgroup is allowed (a kill
    // under a selected pod's limit has its victim inside the pod); a victim
    // whose memcg cannot be read is kept rather than lost.
    if let Ok(memcg) = task_memcg(offsets(), victim)
        && !crate::filter::memcg_allowed(offsets(), memcg)
    {
        return Ok(());
    }
    // Reserve first and fill the record in place: a 200-byte record built on
    // the stack and then copied would not fit the 512-byte BPF stack.
    let Some(mut slot) = EVENTS.reserve::<OomRecord>(0) else {
        return Err(Failure::RING_BUF_FULL);
    };
    let record = slot.write(empty_record());
    let filled = fill_record(offsets(), victim, record);
    if filled.is_err() {
        record.flags |= OOM_FLAG_READ_FAILED;
    }
    if victim == 0 && pid > 0 {
        record.victim_tid = pid as u32;
    }
    slot.submit(0);
    count(LossCounter::Submitted);
    filled
}

#[inline(always)]
fn empty_record() -> OomRecord {
    OomRecord {
        header: RecordHeader {
            kind: RecordKind::OomKill as u32,
            size: core::mem::size_of::<OomRecord>() as u32,
            // SAFETY: a helper call with no arguments.
            monotonic_ns: unsafe { bpf_ktime_get_ns() },
        },
        victim_tgid: 0,
        victim_tid: 0,
        trigger_tgid: 0,
        trigger_tid: 0,
        victim_uid: 0,
        oom_score_adj: 0,
        constraint_source: ConstraintSource::None as u8,
        flags: 0,
        victim_comm: [0; 16],
        trigger_comm: [0; 16],
        victim_memcg: CgroupRef {
            id: 0,
            hierarchy: 0,
            level: 0,
        },
        trigger_memcg: CgroupRef {
            id: 0,
            hierarchy: 0,
            level: 0,
        },
        oom_memcg: CgroupRef {
            id: 0,
            hierarchy: 0,
            level: 0,
        },
        oom_memcg_limit_pages: 0,
        oom_memcg_usage_pages: 0,
        total_vm_pages: 0,
        anon_rss_pages: 0,
        file_rss_pages: 0,
        shmem_rss_pages: 0,
        pgtables_bytes: 0,
        victim_memcg_oom_kills: 0,
        oc_totalpages: 0,
        oc_constraint: 0,
        padding: 0,
    }
}

#[inline(always)]
fn fill_record(o: &Offsets, victim: u64, r: &mut OomRecord) -> Result<(), Failure> {
    let pid_tgid = bpf_get_current_pid_tgid();
    r.trigger_tgid = (pid_tgid >> 32) as u32;
    r.trigger_tid = pid_tgid as u32;
    r.trigger_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: a helper call with no arguments.
    let current = unsafe { bpf_get_current_task() };

    r.victim_tgid = read::<i32>(victim, o.task_tgid).chain(OomVictim)? as u32;
    r.victim_tid = read::<i32>(victim, o.task_pid).chain(OomVictim)? as u32;
    r.victim_comm = read(victim, o.task_comm).chain(OomVictim)?;

    let victim_memcg = task_memcg(o, victim).chain(ReadChain::TaskMemcg)?;
    r.victim_memcg = memcg_ref(o, victim_memcg).chain(ReadChain::MemcgIdentity)?;
    if o.memcg_event_oom_kill != ABSENT {
        r.victim_memcg_oom_kills = read(
            victim_memcg,
            at(o.memcg_events_local, 8 * o.memcg_event_oom_kill),
        )
        .chain(ReadChain::MemcgIdentity)?;
    }
    let trigger_memcg = task_memcg(o, current).chain(ReadChain::TaskMemcg)?;
    r.trigger_memcg = memcg_ref(o, trigger_memcg).chain(ReadChain::MemcgIdentity)?;

    let oom_memcg = match OOM_IN_PROGRESS.get_ptr(pid_tgid) {
        Some(oc) => {
            // SAFETY: the pointer comes from a successful hash map lookup.
            let oc = unsafe { *oc };
            r.constraint_source = ConstraintSource::OomControl as u8;
            r.oc_totalpages = read(oc, o.oc_totalpages).chain(OomControl)?;
            r.oc_constraint = read(oc, o.oc_constraint).chain(OomControl)?;
            read::<u64>(oc, o.oc_memcg).chain(OomControl)?
        }
        None => match limit_walk(o, trigger_memcg, false) {
            Some(hit) => {
                if hit.memsw {
                    r.flags |= OOM_FLAG_MEMSW_LIMIT;
                }
                r.oom_memcg_limit_pages = hit.max;
                r.oom_memcg_usage_pages = hit.usage;
                hit.memcg
            }
            None => 0,
        },
    };
    if oom_memcg != 0 {
        r.oom_memcg = memcg_ref(o, oom_memcg).chain(ReadChain::MemcgIdentity)?;
        if r.constraint_source == ConstraintSource::OomControl as u8 {
            let (max, usage) = page_counter(o, oom_memcg, o.memcg_memory).chain(OomControl)?;
            r.oom_memcg_limit_pages = max;
            r.oom_memcg_usage_pages = usage;
        }
        if r.constraint_source == ConstraintSource::None as u8 {
            r.constraint_source = ConstraintSource::LimitWalk as u8;
        }
    }
    if group_kill(o, victim_memcg, oom_memcg) {
        r.flags |= OOM_FLAG_GROUP_KILL;
    }

    let cred: u64 = read(victim, o.task_real_cred).chain(OomVictim)?;
    r.victim_uid = read(cred, o.cred_uid).chain(OomVictim)?;
    let signal: u64 = read(victim, o.task_signal).chain(OomVictim)?;
    r.oom_score_adj = read(signal, o.signal_oom_score_adj).chain(OomVictim)?;

    let mm: u64 = read(victim, o.task_mm).chain(OomVictimMm)?;
    r.total_vm_pages = read(mm, o.mm_total_vm).chain(OomVictimMm)?;
    r.anon_rss_pages = rss(o, mm, o.mm_anonpages).chain(OomVictimMm)?;
    r.file_rss_pages = rss(o, mm, o.mm_filepages).chain(OomVictimMm)?;
    r.shmem_rss_pages = rss(o, mm, o.mm_shmempages).chain(OomVictimMm)?;
    if o.mm_pgtables_bytes != ABSENT {
        r.pgtables_bytes = read(mm, o.mm_pgtables_bytes).chain(OomVictimMm)?;
    }
    Ok(())
}

/// Whether a memcg from the victim's up to the OOM domain (the whole tree for
/// a global OOM) has `memory.oom.group` set: then the kernel kills every task
/// in that group (`mem_cgroup_get_oom_group()`).
#[inline(always)]
fn group_kill(o: &Offsets, mut memcg: u64, oom_domain: u64) -> bool {
    for _ in 0..MAX_CGROUP_DEPTH {
        if memcg == 0 {
            return false;
        }
        if read::<u8>(memcg, o.memcg_oom_group).unwrap_or(0) != 0 {
            return true;
        }
        if memcg == oom_domain {
            return false;
        }
        memcg = parent_memcg(o, memcg);
    }
    false
}

/// One of the victim's RSS counters (`get_mm_counter()`): the counter's
/// global value, which is what the kernel's own OOM report prints.
#[inline(always)]
fn rss(o: &Offsets, mm: u64, member: u32) -> Result<i64, ReadError> {
    if member == ABSENT || o.mm_rss_stride == ABSENT {
        return Err(ReadError::ABSENT);
    }
    read(mm, at(o.mm_rss_first, member * o.mm_rss_stride))
}
