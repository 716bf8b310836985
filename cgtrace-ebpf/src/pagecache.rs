//! Page-cache ownership and reclaim attribution.
//!
//! * tp_btf `mm_filemap_add_to_page_cache` / `mm_filemap_delete_from_page_cache`
//!   (arg 0: the folio): pages (`1 << order`) counted per CPU under
//!   (owner memcg, actor memcg, reason). The owner is the memcg the folio is
//!   charged to; the actor is the current task's memcg.
//! * A deletion is reclaim when the current task runs with `PF_MEMALLOC`;
//!   `PF_KSWAPD` marks kswapd; otherwise the reclaim context recorded at
//!   `mm_vmscan_{memcg,direct}_reclaim_begin` says whose limit it was.
//! * Reclaim begin/end pairs give stall durations per memcg, kept as
//!   per-CPU histograms; `mm_vmscan_lru_shrink_inactive` adds what each
//!   reclaim scanned, reclaimed, and found dirty or under writeback.
//! * `cgroup_mkdir` (in `cgroups`) refreshes the memcg pointer → cgroup map, so
//!   a pointer reused by a new memcg is never reported under the old name.

use aya_ebpf::bindings::BPF_F_NO_PREALLOC;
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use cgtrace_common::{
    cgroup::CgroupRef,
    offsets::{ABSENT, Offsets},
    pagecache::{
        CacheKey, CacheReason, FileKey, ReclaimContext, ReclaimKind, STALL_BUCKETS, StallKey,
        StallStats, stall_bucket,
    },
    stats::ReadChain,
};

use crate::{
    failure::{Chain as _, Failure, count_read, finish, or_note},
    filter::memcg_allowed,
    kernel::{
        ReadError, current_task, current_task_memcg, direct_offset, limit_walk, load, load_task,
        memcg_ref, read,
    },
    maps::offsets,
};

/// `include/linux/sched.h`: set while a task reclaims memory (direct or
/// memcg reclaim, kswapd, kdamond). Unchanged from 2.6 through 6.18.
const PF_MEMALLOC: u32 = 0x0000_0800;
/// `include/linux/sched.h`: kswapd itself.
const PF_KSWAPD: u32 = 0x0002_0000;

/// Page-cache pages by (owner, actor, reason), per CPU. LRU so a node that
/// churns through cgroups never fills it; an evicted key only restarts its count.
#[map]
static CACHE: LruPerCpuHashMap<CacheKey, u64> = LruPerCpuHashMap::with_max_entries(16_384, 0);

/// Whether to count per file (`cgtrace cache --files`). Read-only (.rodata),
/// so with 0 the verifier removes the per-file code and it costs nothing.
#[unsafe(no_mangle)]
static FILES_ENABLED: Global<u32> = Global::new(0);

/// Page-cache pages by (owner, file, reason), per CPU, with `--files`.
#[map]
static FILES: LruPerCpuHashMap<FileKey, u64> = LruPerCpuHashMap::with_max_entries(16_384, 0);

/// memcg pointer → its cgroup.
#[map]
static MEMCG_REFS: LruHashMap<u64, CgroupRef> = LruHashMap::with_max_entries(16_384, 0);

/// Tasks between a reclaim begin and end tracepoint, by pid_tgid.
#[map]
static RECLAIMING: HashMap<u64, ReclaimContext> = HashMap::with_max_entries(8192, 0);

/// Reclaim stall histograms and shrink counters, per CPU. Allocated as keys
/// come (`BPF_F_NO_PREALLOC`): 1.4 KiB per CPU per entry would otherwise be
/// 5.6 MiB per CPU held from the start, for the few memcgs that reclaim.
#[map]
static STALLS: PerCpuHashMap<StallKey, StallStats> =
    PerCpuHashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// A zeroed `StallStats` to insert new keys from: at 1.4 KiB it cannot be
/// built on the 512-byte BPF stack.
#[map]
static STALLS_ZERO: PerCpuArray<StallStats> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "mm_filemap_add_to_page_cache")]
pub fn cache_add(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "cache_add", try_cache_add(&ctx))
}

#[inline(always)]
fn try_cache_add(ctx: &BtfTracePointContext) -> Result<(), Failure> {
    let o = offsets();
    let folio: u64 = ctx.arg(0);
    let (owner, pages) = folio_owner_and_pages(o, folio).chain(ReadChain::FolioOwner)?;
    let actor = current_memcg(ctx, "cache_add", current_task());
    if !(memcg_allowed(o, owner) || memcg_allowed(o, actor)) {
        return Ok(());
    }
    add(o, owner, actor, CacheReason::Added, pages);
    if FILES_ENABLED.load() != 0 {
        add_file(o, folio, owner, CacheReason::Added, pages).chain(ReadChain::FolioFile)?;
    }
    Ok(())
}

#[btf_tracepoint(function = "mm_filemap_delete_from_page_cache")]
pub fn cache_delete(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "cache_delete", try_cache_delete(&ctx))
}

#[inline(always)]
fn try_cache_delete(ctx: &BtfTracePointContext) -> Result<(), Failure> {
    let o = offsets();
    let folio: u64 = ctx.arg(0);
    let (owner, pages) = folio_owner_and_pages(o, folio).chain(ReadChain::FolioOwner)?;
    let current = current_task();
    let flags: u32 = load_task(current, direct_offset!(task_flags)).unwrap_or(0);
    let (reason, actor) = if flags & PF_MEMALLOC == 0 {
        (
            CacheReason::Removed,
            current_memcg(ctx, "cache_delete", current),
        )
    } else if flags & PF_KSWAPD != 0 {
        (
            CacheReason::Kswapd,
            current_memcg(ctx, "cache_delete", current),
        )
    } else {
        match RECLAIMING.get_ptr(bpf_get_current_pid_tgid()) {
            // SAFETY: the pointer comes from a successful hash map lookup.
            Some(context) => reclaim_reason(unsafe { &*context }, owner),
            None => (
                CacheReason::Proactive,
                current_memcg(ctx, "cache_delete", current),
            ),
        }
    };
    if !(memcg_allowed(o, owner) || memcg_allowed(o, actor)) {
        return Ok(());
    }
    add(o, owner, actor, reason, pages);
    if FILES_ENABLED.load() != 0 {
        add_file(o, folio, owner, reason, pages).chain(ReadChain::FolioFile)?;
    }
    Ok(())
}

/// The memcg of `task` (the current one, from [`current_task`]), or 0 (no
/// actor) with the failed read noted.
#[inline(always)]
fn current_memcg(ctx: &BtfTracePointContext, program: &'static str, task: u64) -> u64 {
    or_note(
        ctx,
        program,
        current_task_memcg(offsets(), task).chain(ReadChain::TaskMemcg),
        0,
    )
}

/// Counts the pages under the folio's file: `folio->mapping->host` gives
/// the inode, its number and its superblock's device.
#[inline(always)]
fn add_file(
    o: &Offsets,
    folio: u64,
    owner: u64,
    reason: CacheReason,
    pages: u64,
) -> Result<(), ReadError> {
    let mapping: u64 = read(folio, o.folio_mapping)?;
    let inode: u64 = read(mapping, o.address_space_host)?;
    let ino: u64 = read(inode, o.inode_ino)?;
    let sb: u64 = read(inode, o.inode_sb)?;
    let dev: u32 = read(sb, o.super_block_dev)?;
    let key = FileKey {
        owner,
        ino,
        dev,
        reason: reason as u32,
    };
    if let Some(value) = FILES.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a per-CPU map value (see `add`).
        unsafe { *value += pages };
    } else {
        let _ = FILES.insert(&key, &pages, 0);
    }
    Ok(())
}

/// Whose limit a reclaiming task evicted `owner`'s page under.
#[inline(always)]
fn reclaim_reason(context: &ReclaimContext, owner: u64) -> (CacheReason, u64) {
    let reason = if context.kind == ReclaimKind::Direct as u32 {
        CacheReason::DirectGlobal
    } else if context.target == 0 {
        CacheReason::MemcgLimit
    } else if context.target == owner {
        CacheReason::OwnLimit
    } else {
        // Memcg reclaim only scans the target's subtree, so a page owned by
        // another memcg is owned by one of the target's descendants.
        CacheReason::AncestorLimit
    };
    (reason, context.actor)
}

/// The folio's memcg (`memcg_data` without its flag bits) and its size in
/// pages (`1 << order`; the order of a large folio is in `_flags_1`).
#[inline(always)]
fn folio_owner_and_pages(o: &Offsets, folio: u64) -> Result<(u64, u64), ReadError> {
    let memcg_data: u64 = if direct_offset!(memcg_pointer) == 0 {
        load(folio, direct_offset!(folio_memcg_data))?
    } else {
        read(folio, direct_offset!(folio_memcg_data))?
    };
    let mut owner = memcg_data & !u64::from(o.memcg_data_flags_mask);
    // An object cgroup (kernels that reparent LRU folios): its memcg is
    // the owner as of now, the parent once the first owner has died.
    if direct_offset!(objcg_memcg) != ABSENT && owner != 0 {
        owner = read(owner, direct_offset!(objcg_memcg))?;
    }
    let flags: u64 = load(folio, direct_offset!(folio_flags))?;
    let order = if o.pg_head < 64 && flags & (1 << o.pg_head) != 0 {
        load::<u64>(folio, direct_offset!(folio_flags_1))? & 0xff
    } else {
        0
    };
    Ok((owner, 1 << (order & 31)))
}

#[inline(always)]
fn add(o: &Offsets, owner: u64, actor: u64, reason: CacheReason, pages: u64) {
    let key = CacheKey {
        owner,
        actor,
        reason: reason as u32,
        padding: 0,
    };
    if let Some(value) = CACHE.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a per-CPU map value; only this CPU
        // writes it, and no other program runs on this CPU meanwhile.
        unsafe { *value += pages };
        return;
    }
    // First time this key is seen on this CPU: make sure both pointers can
    // be named. This is the only place the id chain is read.
    remember(o, owner);
    remember(o, actor);
    let _ = CACHE.insert(&key, &pages, 0);
}

/// Records memcg pointer → cgroup unless already known (for other modules).
#[inline(always)]
pub fn remember_memcg(memcg: u64) {
    remember(offsets(), memcg);
}

/// Records memcg pointer → cgroup unless already known.
#[inline(always)]
fn remember(o: &Offsets, memcg: u64) {
    if memcg == 0 || MEMCG_REFS.get_ptr(memcg).is_some() {
        return;
    }
    match memcg_ref(o, memcg) {
        Ok(cgroup) => {
            let _ = MEMCG_REFS.insert(memcg, cgroup, 0);
        }
        Err(_) => count_read(ReadChain::MemcgIdentity),
    }
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin(ctx: BtfTracePointContext) -> u32 {
    finish(
        &ctx,
        "memcg_reclaim_begin",
        reclaim_begin(&ctx, ReclaimKind::Memcg),
    )
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin(ctx: BtfTracePointContext) -> u32 {
    finish(
        &ctx,
        "direct_reclaim_begin",
        reclaim_begin(&ctx, ReclaimKind::Direct),
    )
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "memcg_reclaim_end", reclaim_end())
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn direct_reclaim_end(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "direct_reclaim_end", reclaim_end())
}

#[inline(always)]
fn reclaim_begin(ctx: &BtfTracePointContext, kind: ReclaimKind) -> Result<(), Failure> {
    let o = offsets();
    let actor = current_memcg(ctx, "reclaim_begin", current_task());
    // Memcg reclaim is for the memcg whose charge failed or that is over
    // memory.high: the lowest one at a limit above the task. None at a
    // limit means memory.reclaim or another proactive request.
    let target = if kind == ReclaimKind::Memcg {
        limit_walk(o, actor, true).map_or(0, |hit| hit.memcg)
    } else {
        0
    };
    let context = ReclaimContext {
        // SAFETY: a helper call with no arguments.
        start_ns: unsafe { bpf_ktime_get_ns() },
        target,
        actor,
        kind: kind as u32,
        padding: 0,
    };
    remember(o, target);
    remember(o, actor);
    RECLAIMING
        .insert(bpf_get_current_pid_tgid(), context, 0)
        .map_err(|_| Failure::MAP_FULL)
}

#[inline(always)]
fn reclaim_end() -> Result<(), Failure> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(context) = RECLAIMING.get_ptr(pid_tgid) else {
        // Began before cgtrace attached.
        return Ok(());
    };
    // SAFETY: the pointer comes from a successful hash map lookup.
    let context = unsafe { *context };
    let _ = RECLAIMING.remove(pid_tgid);
    // SAFETY: a helper call with no arguments.
    let took = unsafe { bpf_ktime_get_ns() }.saturating_sub(context.start_ns);
    let key = stall_key(&context);
    if !memcg_allowed(offsets(), key.memcg) {
        return Ok(());
    }
    let stats = stall_stats(&key)?;
    // SAFETY: this CPU's slot of a per-CPU map value (see `add`).
    let stats = unsafe { &mut *stats };
    stats.count += 1;
    stats.total_ns += took;
    if took > stats.max_ns {
        stats.max_ns = took;
    }
    // LLVM can prove stall_bucket() < STALL_BUCKETS and would drop the check
    // below; the verifier cannot, so hide the value from LLVM first.
    // SAFETY: a volatile read of a local.
    let bucket = unsafe { core::ptr::read_volatile(&stall_bucket(took)) };
    if bucket < STALL_BUCKETS {
        stats.buckets[bucket] += 1;
    }
    Ok(())
}

/// Stalls are charged to the memcg whose limit forced the reclaim, or for
/// global direct reclaim to the stalled task's own memcg.
#[inline(always)]
fn stall_key(context: &ReclaimContext) -> StallKey {
    StallKey {
        memcg: if context.target != 0 {
            context.target
        } else {
            context.actor
        },
        kind: context.kind,
        padding: 0,
    }
}

/// This CPU's stats for `key`, created zeroed if new.
#[inline(always)]
fn stall_stats(key: &StallKey) -> Result<*mut StallStats, Failure> {
    if let Some(stats) = STALLS.get_ptr_mut(key) {
        return Ok(stats);
    }
    let zero = STALLS_ZERO.get_ptr(0).ok_or(Failure::MAP_FULL)?;
    // SAFETY: the pointer comes from a successful array lookup; the map
    // value is never written, so it stays zero.
    if STALLS.insert(key, unsafe { &*zero }, 0).is_err() {
        return Err(Failure::MAP_FULL);
    }
    STALLS.get_ptr_mut(key).ok_or(Failure::MAP_FULL)
}

/// `mm_vmscan_lru_shrink_inactive(nid, nr_scanned, nr_reclaimed, stat,
/// priority, file)`: what one pass over an inactive list did.
#[btf_tracepoint(function = "mm_vmscan_lru_shrink_inactive")]
pub fn shrink_inactive(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "shrink_inactive", try_shrink_inactive(&ctx))
}

#[inline(always)]
fn try_shrink_inactive(ctx: &BtfTracePointContext) -> Result<(), Failure> {
    let o = offsets();
    let scanned: u64 = ctx.arg(1);
    let reclaimed: u64 = ctx.arg(2);
    let stat: u64 = ctx.arg(3);
    let key = match RECLAIMING.get_ptr(bpf_get_current_pid_tgid()) {
        // SAFETY: the pointer comes from a successful hash map lookup.
        Some(context) => stall_key(unsafe { &*context }),
        // kswapd and proactive reclaim have no begin/end pair: charge them
        // to the reclaiming task's memcg under their own kind.
        None => StallKey {
            memcg: current_memcg(ctx, "shrink_inactive", current_task()),
            kind: ReclaimKind::Background as u32,
            padding: 0,
        },
    };
    if !memcg_allowed(o, key.memcg) {
        return Ok(());
    }
    let stats = stall_stats(&key)?;
    // SAFETY: this CPU's slot of a per-CPU map value (see `add`).
    let stats = unsafe { &mut *stats };
    stats.scanned += scanned;
    stats.reclaimed += reclaimed;
    let dirty: u32 = read(stat, o.reclaim_stat_nr_dirty).chain(ReadChain::ReclaimStat)?;
    let writeback: u32 = read(stat, o.reclaim_stat_nr_writeback).chain(ReadChain::ReclaimStat)?;
    stats.dirty += u64::from(dirty);
    stats.writeback += u64::from(writeback);
    Ok(())
}

/// Maps a new memcg's pointer to its cgroup, replacing whatever memcg had
/// that address before (`cgroup_mkdir`).
#[inline(always)]
pub fn map_memcg(memcg: u64, cgroup: CgroupRef) {
    let _ = MEMCG_REFS.insert(memcg, cgroup, 0);
}
