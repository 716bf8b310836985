//! Maps and globals shared by all programs.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use cgtrace_common::{
    offsets::Offsets,
    stats::{LOSS_COUNTERS, LossCounter, READ_CHAINS},
};

/// Kernel layout values, overridden by the collector at load time.
///
/// `static mut` (so `.data`, not `.rodata`) on purpose: the programs read it
/// in place through a reference instead of copying 150 bytes onto the
/// 512-byte BPF stack, and LLVM may not fold loads from a mutable global into
/// the `ABSENT` initialiser the way it would for an immutable one.
#[unsafe(no_mangle)]
static mut OFFSETS: Offsets = Offsets::ABSENT;

/// The kernel layout values, read in place.
#[inline(always)]
pub fn offsets() -> &'static Offsets {
    // SAFETY: only the loader writes OFFSETS (before any program runs); the
    // programs never do, so a shared reference is never aliased by a write.
    unsafe { &*(&raw const OFFSETS) }
}

/// Rare events (OOM kills) for the collector. Its size is set at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Per-CPU loss and delivery counters, indexed by [`LossCounter`].
#[map]
pub static LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_COUNTERS, 0);

/// Per-CPU failed reads, indexed by [`cgtrace_common::stats::ReadChain`].
#[map]
pub static READ_FAILURES: PerCpuArray<u64> = PerCpuArray::with_max_entries(READ_CHAINS, 0);

/// `struct oom_control *` of each `out_of_memory()` call in progress, keyed
/// by the allocating task's pid_tgid (fentry variant). OOM kills are
/// serialised by the kernel's `oom_lock`, so a handful of slots is plenty.
#[map]
pub static OOM_IN_PROGRESS: HashMap<u64, u64> = HashMap::with_max_entries(64, 0);

#[inline(always)]
pub fn count(counter: LossCounter) {
    if let Some(slot) = LOSS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup,
        // so it points at this CPU's slot, which only this CPU writes.
        unsafe { *slot += 1 };
    }
}
