//! Reads of kernel structures at offsets taken from BTF (see
//! `cgtrace_common::offsets`). Each read is one `bpf_probe_read_kernel`; an
//! absent offset, a null base or a fault gives a [`ReadError`] saying which,
//! so callers can degrade and count the chain that failed.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel};
use cgtrace_common::{
    cgroup::CgroupRef,
    offsets::{ABSENT, DirectOffsets, Offsets},
};

/// How far up a cgroup tree the programs walk. Kubernetes nests memcgs five
/// deep (kubepods / QoS / pod / container under the root); 12 leaves room.
pub const MAX_CGROUP_DEPTH: usize = 12;

/// `a + b`, or [`ABSENT`] when either is: for members of embedded structs.
#[inline(always)]
pub fn at(a: u32, b: u32) -> u32 {
    if a == ABSENT || b == ABSENT {
        ABSENT
    } else {
        a + b
    }
}

/// Why a read of a kernel field failed: [`ReadError::ABSENT`],
/// [`ReadError::NULL`], or the negative error of `bpf_probe_read_kernel`.
///
/// One integer rather than an enum with a payload: LLVM copies an enum's
/// undefined payload along paths that never set it, and the verifier
/// rejects a program that reads a register nothing wrote.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReadError(pub i64);

impl ReadError {
    /// BTF did not give the offset (a kernel that lacks the member).
    pub const ABSENT: Self = Self(1);
    /// The pointer to read through was null.
    pub const NULL: Self = Self(2);
}

/// Reads a `T` at `base + offset`.
#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u32) -> Result<T, ReadError> {
    if offset == ABSENT {
        return Err(ReadError::ABSENT);
    }
    if base == 0 {
        return Err(ReadError::NULL);
    }
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-safe
    // accessor and never dereferences the address in the program itself.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }
        .map_err(|errno| ReadError(errno.into()))
}

/// The offsets loaded straight from BTF-typed pointers. Read-only
/// (.rodata), set by the collector at load time, so the verifier knows each
/// value; read field by field in place (see [`direct_offset`]).
#[unsafe(no_mangle)]
pub(crate) static DIRECT: DirectOffsets = DirectOffsets::ABSENT;

/// One of `DIRECT`'s offsets. A volatile read, so LLVM cannot fold in the
/// initialiser; the verifier then sees the loaded value as a constant.
macro_rules! direct_offset {
    ($field:ident) => {
        // SAFETY: a read of a field of a static, which nothing writes.
        unsafe { core::ptr::read_volatile(&raw const crate::kernel::DIRECT.$field) }
    };
}
pub(crate) use direct_offset;

/// Loads a `T` at `base + offset` straight from a BTF-typed pointer (a
/// tp_btf argument, or the current task), with no helper call. `offset`
/// must come from [`direct_offset`]: the verifier checks the load against
/// the kernel's BTF at that constant offset, refuses the program if no
/// member of that size is there, and makes the load fault-safe.
#[inline(always)]
pub fn load<T: Copy>(base: u64, offset: u32) -> Result<T, ReadError> {
    if offset == ABSENT {
        return Err(ReadError::ABSENT);
    }
    // SAFETY: see above: the verifier turns this into a checked,
    // fault-safe load from the kernel object `base` points at.
    Ok(unsafe { core::ptr::read_volatile((base as *const u8).add(offset as usize).cast::<T>()) })
}

/// The current task: a BTF-typed pointer [`load`] may read from, or before
/// 5.11 (no `bpf_get_current_task_btf`; the verifier refuses a program that
/// calls it, even on a path never taken, unless the constant prunes it) a
/// plain address; read its fields with [`load_task`].
#[inline(always)]
pub fn current_task() -> u64 {
    if direct_offset!(current_task_btf) != 0 {
        // SAFETY: a helper call with no arguments.
        unsafe { bpf_get_current_task_btf() as u64 }
    } else {
        // SAFETY: a helper call with no arguments.
        unsafe { bpf_get_current_task() }
    }
}

/// A field of the task [`current_task`] gave: loaded directly, or read by
/// helper where that task is a plain address.
#[inline(always)]
pub fn load_task<T: Copy>(task: u64, offset: u32) -> Result<T, ReadError> {
    if direct_offset!(current_task_btf) != 0 {
        load(task, offset)
    } else {
        read(task, offset)
    }
}

/// The current task's memcg: `task->cgroups` by a direct load, then
/// `subsys[memory_cgrp_id]` by one helper read (at a constant offset).
#[inline(always)]
pub fn current_task_memcg(o: &Offsets, task: u64) -> Result<u64, ReadError> {
    let css_set: u64 = load_task(task, direct_offset!(task_cgroups))?;
    let css: u64 = read(css_set, direct_offset!(css_set_memcg))?;
    css_to_memcg(o, css)
}

/// `task->cgroups->subsys[memory_cgrp_id]` as a `struct mem_cgroup *`.
#[inline(always)]
pub fn task_memcg(o: &Offsets, task: u64) -> Result<u64, ReadError> {
    if o.memory_cgrp_id == ABSENT || o.css_set_subsys == ABSENT || o.memcg_css == ABSENT {
        return Err(ReadError::ABSENT);
    }
    let css_set: u64 = read(task, o.task_cgroups)?;
    let css: u64 = read(css_set, o.css_set_subsys + 8 * o.memory_cgrp_id)?;
    css_to_memcg(o, css)
}

/// The `struct mem_cgroup` embedding a `struct cgroup_subsys_state`.
#[inline(always)]
fn css_to_memcg(o: &Offsets, css: u64) -> Result<u64, ReadError> {
    if css == 0 {
        return Err(ReadError::NULL);
    }
    Ok(css - u64::from(o.memcg_css))
}

/// `memcg->css.parent` as a `struct mem_cgroup *`; 0 at the root.
#[inline(always)]
pub fn parent_memcg(o: &Offsets, memcg: u64) -> u64 {
    let Ok(parent) = read::<u64>(memcg, at(o.memcg_css, o.css_parent)) else {
        return 0;
    };
    css_to_memcg(o, parent).unwrap_or(0)
}

/// The cgroup behind a memcg.
#[inline(always)]
pub fn memcg_ref(o: &Offsets, memcg: u64) -> Result<CgroupRef, ReadError> {
    if o.memcg_css == ABSENT {
        return Err(ReadError::ABSENT);
    }
    css_ref(o, memcg + u64::from(o.memcg_css))
}

/// The cgroup behind a `struct cgroup_subsys_state *`: `css->cgroup`, then
/// its kernfs id, hierarchy and level.
#[inline(always)]
pub fn css_ref(o: &Offsets, css: u64) -> Result<CgroupRef, ReadError> {
    cgroup_ref(o, read(css, o.css_cgroup)?)
}

/// A `struct cgroup *`'s kernfs id, hierarchy and level.
#[inline(always)]
pub fn cgroup_ref(o: &Offsets, cgroup: u64) -> Result<CgroupRef, ReadError> {
    let kn: u64 = read(cgroup, o.cgroup_kn)?;
    let id: u64 = read(kn, o.kernfs_node_id)?;
    let level: i32 = read(cgroup, o.cgroup_level)?;
    let root: u64 = read(cgroup, o.cgroup_root)?;
    let hierarchy: i32 = read(root, o.cgroup_root_hierarchy_id)?;
    Ok(CgroupRef {
        id,
        hierarchy: hierarchy as u32,
        level: level as u32,
    })
}

/// A memcg's `memory` page counter (or `memsw` when `memsw` is set): `(max, usage)` in pages.
#[inline(always)]
pub fn page_counter(o: &Offsets, memcg: u64, counter_offset: u32) -> Result<(u64, u64), ReadError> {
    let max: u64 = read(memcg, at(counter_offset, o.page_counter_max))?;
    let usage: u64 = read(memcg, at(counter_offset, o.page_counter_usage))?;
    Ok((max, usage))
}

/// The largest single memcg charge: a PMD-sized THP, 2 MiB of 4 KiB pages.
/// A counter the kernel failed to charge is within this of its max.
const MAX_CHARGE_PAGES: u64 = 512;
/// `PAGE_COUNTER_MAX` is `LONG_MAX / PAGE_SIZE`; anything this large is "no limit".
const UNLIMITED_PAGES: u64 = 1 << 50;

/// A memcg found at its limit, with that counter's values in pages.
pub struct LimitHit {
    pub memcg: u64,
    pub max: u64,
    pub usage: u64,
    /// The v1 memory+swap counter, not the memory counter, is the full one.
    pub memsw: bool,
}

/// The lowest memcg from `memcg` upwards whose `memory` (or v1 `memsw`)
/// counter is within one maximal charge of its max: where the kernel's
/// `page_counter_try_charge()` stopped. With `include_high`, a memcg above
/// its `memory.high` also counts (that is what `reclaim_high()` reclaims).
/// `None` when no memcg is at a limit.
#[inline(always)]
pub fn limit_walk(o: &Offsets, mut memcg: u64, include_high: bool) -> Option<LimitHit> {
    for _ in 0..MAX_CGROUP_DEPTH {
        if memcg == 0 {
            return None;
        }
        if let Ok((max, usage)) = page_counter(o, memcg, o.memcg_memory) {
            if at_limit(max, usage) {
                return Some(LimitHit {
                    memcg,
                    max,
                    usage,
                    memsw: false,
                });
            }
            if include_high
                && let Ok(high) = read::<u64>(memcg, at(o.memcg_memory, o.page_counter_high))
                && high < UNLIMITED_PAGES
                && usage > high
            {
                return Some(LimitHit {
                    memcg,
                    max: high,
                    usage,
                    memsw: false,
                });
            }
        }
        if let Ok((max, usage)) = page_counter(o, memcg, o.memcg_memsw)
            && at_limit(max, usage)
        {
            return Some(LimitHit {
                memcg,
                max,
                usage,
                memsw: true,
            });
        }
        memcg = parent_memcg(o, memcg);
    }
    None
}

#[inline(always)]
fn at_limit(max: u64, usage: u64) -> bool {
    max < UNLIMITED_PAGES && usage + MAX_CHARGE_PAGES >= max
}
