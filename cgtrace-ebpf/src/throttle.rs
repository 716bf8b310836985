//! CFS bandwidth throttling spans, per cgroup and CPU run queue.
//!
//! * tp_btf `sched_switch` (every kernel with BTF): a task of the root group
//!   is never throttled (one direct load). A task switched out whose own
//!   `cfs_rq->throttle_count` is 0 is under no throttled group; otherwise its
//!   run queues are walked up, and a span starts at the first switch that
//!   sees one throttled (the task switched out is the one that ran out the
//!   quota). Each CPU keeps its throttled run queues in a short per-CPU list,
//!   and the next switch on that CPU after one runs again ends its span,
//!   wherever the group's tasks have moved.
//! * fentry/fexit `throttle_cfs_rq` / `unthrottle_cfs_rq`, where the kernel
//!   allows trampolines: the exact moments.
//!
//! Spans are rare (at most one per period per run queue) and go through the
//! ring buffer when they end.

use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, fentry, fexit, map},
    maps::{HashMap, PerCpuArray},
    programs::{BtfTracePointContext, FEntryContext, FExitContext},
};
use cgtrace_common::{
    RecordHeader, RecordKind,
    cgroup::CgroupRef,
    offsets::Offsets,
    stats::{LossCounter, ReadChain},
    throttle::{OPEN_SLOTS, OpenRunQueues, ThrottleRecord, ThrottleStart},
};

use crate::{
    failure::{Chain as _, Failure, count_read, finish},
    kernel::{css_ref, read},
    maps::{EVENTS, count, offsets},
};

/// Run-queue levels walked above a task: the task's group and four
/// ancestors (a Kubernetes container, its pod, QoS class and kubepods).
const MAX_LEVELS: usize = 5;

/// Throttled run queues, by `struct cfs_rq *`.
#[map]
static THROTTLED: HashMap<u64, ThrottleStart> = HashMap::with_max_entries(16_384, 0);

/// `sched_switch(preempt, prev, next, prev_state)`.
#[btf_tracepoint(function = "sched_switch")]
pub fn throttle_switch(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "throttle_switch", try_throttle_switch(&ctx))
}

#[inline(always)]
fn try_throttle_switch(ctx: &BtfTracePointContext) -> Result<(), Failure> {
    let o = offsets();
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    walk(o, prev, Side::Prev)?;
    walk(o, next, Side::Next)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Switched out: may have just run out its group's quota.
    Prev,
    /// Switched in: its groups are running again.
    Next,
}

/// `task_struct.se.parent`, as a read-only global: the verifier knows its
/// value, so the program may load the field straight from the BTF-typed
/// task pointer instead of calling `bpf_probe_read_kernel` (this check runs
/// twice on every context switch; the helper call doubled its cost).
#[unsafe(no_mangle)]
static TASK_SE_PARENT: Global<u32> = Global::new(u32::MAX);

/// `task->se.parent` by a direct load; `None` if the offset is unknown.
#[inline(always)]
fn task_se_parent(task: u64) -> Option<u64> {
    let offset = TASK_SE_PARENT.load();
    if offset == u32::MAX {
        return None;
    }
    // SAFETY: `task` is a `struct task_struct *` argument of a BTF
    // tracepoint; the verifier checks this load against BTF (the offset is a
    // constant it can see) and makes it fault-safe.
    Some(unsafe {
        core::ptr::read_volatile((task as *const u8).add(offset as usize).cast::<u64>())
    })
}

/// Looks for a newly throttled run queue above a task switched out.
#[inline(always)]
fn walk(o: &Offsets, task: u64, side: Side) -> Result<(), Failure> {
    if side == Side::Next {
        return end_unthrottled(o);
    }
    // Tasks of the root group have no bandwidth limit above them.
    let Some(mut se) = task_se_parent(task) else {
        return Ok(());
    };
    if se == 0 {
        return Ok(());
    }
    let mut cfs_rq: u64 = read(task, o.task_se_cfs_rq).chain(ReadChain::RunQueue)?;
    // Only a task under a throttled group can have just throttled it.
    let throttle_count: i32 = read(cfs_rq, o.cfs_rq_throttle_count).chain(ReadChain::RunQueue)?;
    if throttle_count == 0 {
        return Ok(());
    }
    // SAFETY: a helper call with no arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // A span that could not start does not stop the walk: the levels above
    // may still start theirs.
    let mut outcome = Ok(());
    for _ in 0..MAX_LEVELS {
        if cfs_rq == 0 {
            break;
        }
        if read::<i32>(cfs_rq, o.cfs_rq_runtime_enabled).unwrap_or(0) != 0
            && is_throttled(o, cfs_rq)
            && THROTTLED.get_ptr(cfs_rq).is_none()
            && let Err(failure) = start(o, cfs_rq, task, cpu)
        {
            outcome = Err(failure);
        }
        if se == 0 {
            break;
        }
        cfs_rq = read(se, o.se_cfs_rq).unwrap_or(0);
        se = read(se, o.se_parent).unwrap_or(0);
    }
    outcome
}

/// This CPU's throttled run queues (sched_switch variant only).
#[map]
static OPEN: PerCpuArray<OpenRunQueues> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn is_throttled(o: &Offsets, cfs_rq: u64) -> bool {
    read::<u8>(cfs_rq, o.cfs_rq_throttled_byte)
        .is_ok_and(|byte| u32::from(byte) & o.cfs_rq_throttled_mask != 0)
}

/// Records the start of a span and remembers its run queue on this CPU.
#[inline(always)]
fn start(o: &Offsets, cfs_rq: u64, task: u64, cpu: u32) -> Result<(), Failure> {
    let Some(open) = OPEN.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: this CPU's slot of a per-CPU array; only programs on this CPU
    // write it, one at a time.
    let open = unsafe { &mut *open };
    let Some(free) = open.slots.iter().position(|slot| *slot == 0) else {
        // More run queues throttled at once on one CPU than slots: say so.
        return Err(Failure::MAP_FULL);
    };
    let mut comm = [0u8; 16];
    // SAFETY: a fault-safe copy of the task's comm into a local.
    if let Ok(c) = unsafe {
        bpf_probe_read_kernel::<[u8; 16]>((task + u64::from(o.task_comm)) as *const [u8; 16])
    } {
        comm = c;
    }
    let begun = ThrottleStart {
        // SAFETY: a helper call with no arguments.
        start_ns: unsafe { bpf_ktime_get_ns() },
        pid: read::<i32>(task, o.task_tgid).unwrap_or(0) as u32,
        cpu,
        comm,
    };
    if THROTTLED.insert(cfs_rq, begun, 0).is_err() {
        return Err(Failure::MAP_FULL);
    }
    if free < OPEN_SLOTS {
        open.slots[free] = cfs_rq;
        open.count += 1;
    }
    Ok(())
}

/// Ends the spans of this CPU's run queues that are running again. Any
/// switch on the CPU does it: the group's tasks may have moved elsewhere.
#[inline(always)]
fn end_unthrottled(o: &Offsets) -> Result<(), Failure> {
    let Some(open) = OPEN.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: as in `start`.
    let open = unsafe { &mut *open };
    if open.count == 0 {
        return Ok(());
    }
    let mut outcome = Ok(());
    for index in 0..OPEN_SLOTS {
        let cfs_rq = open.slots[index];
        if cfs_rq == 0 || is_throttled(o, cfs_rq) {
            continue;
        }
        open.slots[index] = 0;
        open.count = open.count.saturating_sub(1);
        if let Some(begun) = THROTTLED.get_ptr(cfs_rq) {
            // SAFETY: the pointer comes from a successful hash map lookup.
            let begun = unsafe { *begun };
            let _ = THROTTLED.remove(cfs_rq);
            if let Err(failure) = send(o, cfs_rq, &begun) {
                outcome = Err(failure);
            }
        }
    }
    outcome
}

/// Sends a finished span. A span whose cgroup cannot be read still goes
/// out, with cgroup id 0, and the failed read is counted.
#[inline(always)]
fn send(o: &Offsets, cfs_rq: u64, start: &ThrottleStart) -> Result<(), Failure> {
    let group = read::<u64>(cfs_rq, o.cfs_rq_tg)
        .and_then(|task_group| Ok((task_group, css_ref(o, task_group + u64::from(o.tg_css))?)));
    let (task_group, cgroup) = group.unwrap_or_else(|_| {
        count_read(ReadChain::RunQueueGroup);
        (
            0,
            CgroupRef {
                id: 0,
                hierarchy: 0,
                level: 0,
            },
        )
    });
    if !crate::filter::cgroup_allowed(&cgroup) {
        return Ok(());
    }
    let Some(mut slot) = EVENTS.reserve::<ThrottleRecord>(0) else {
        return Err(Failure::RING_BUF_FULL);
    };
    slot.write(ThrottleRecord {
        header: RecordHeader {
            kind: RecordKind::ThrottleSpan as u32,
            size: core::mem::size_of::<ThrottleRecord>() as u32,
            // SAFETY: a helper call with no arguments.
            monotonic_ns: unsafe { bpf_ktime_get_ns() },
        },
        cgroup,
        cpu: start.cpu,
        pid: start.pid,
        comm: start.comm,
        start_ns: start.start_ns,
        // SAFETY: a helper call with no arguments.
        end_ns: unsafe { bpf_ktime_get_ns() },
        task_group,
    });
    slot.submit(0);
    count(LossCounter::Submitted);
    Ok(())
}

/// `throttle_cfs_rq(cfs_rq)` returning: the quota ran out, usually in the
/// context of the task that ran it out; a throttle as a task is enqueued
/// again (`check_enqueue_throttle`) runs in the waker's context instead.
/// At its exit, not its entry: it gives up without throttling when it
/// races with a refill (`__assign_cfs_rq_runtime` succeeds), and a span
/// started there would run on to the next real unthrottle.
#[fexit(function = "throttle_cfs_rq")]
pub fn throttle_exit(ctx: FExitContext) -> u32 {
    let cfs_rq: u64 = ctx.arg(0);
    if !is_throttled(offsets(), cfs_rq) {
        return 0;
    }
    let start = ThrottleStart {
        // SAFETY: helper calls with no arguments.
        start_ns: unsafe { bpf_ktime_get_ns() },
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        // SAFETY: a helper call with no arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let kept = THROTTLED
        .insert(cfs_rq, start, 0)
        .map_err(|_| Failure::MAP_FULL);
    finish(&ctx, "throttle_exit", kept)
}

/// `unthrottle_cfs_rq(cfs_rq)`: the period timer refilled the quota.
#[fentry(function = "unthrottle_cfs_rq")]
pub fn unthrottle_enter(ctx: FEntryContext) -> u32 {
    let cfs_rq: u64 = ctx.arg(0);
    let Some(start) = THROTTLED.get_ptr(cfs_rq) else {
        return 0;
    };
    // SAFETY: the pointer comes from a successful hash map lookup.
    let start = unsafe { *start };
    let _ = THROTTLED.remove(cfs_rq);
    finish(&ctx, "unthrottle_enter", send(offsets(), cfs_rq, &start))
}
