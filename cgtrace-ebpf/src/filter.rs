//! The kernel side of `--cgroup`, `--pod`, `--namespace` and `--container`:
//! an allowlist of cgroups, written by the collector and extended here as
//! children of allowed cgroups are created, so a filtered-out workload
//! costs a map lookup per event instead of being counted and thrown away.
//!
//! The allowlist is keyed by cgroup (hierarchy and id), which is what the
//! collector can name. The page-cache and charge programs only have a memcg
//! pointer, so each memcg's verdict is cached; the collector bumps the
//! generation whenever it adds cgroups, which invalidates every verdict.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use cgtrace_common::{
    cgroup::{CgroupKey, CgroupRef, FilterVerdict},
    offsets::Offsets,
    stats::ReadChain,
};

use crate::{
    failure::{Chain as _, Failure, count_read},
    kernel::{at, cgroup_ref, memcg_ref, read},
};

/// Whether a filter is in use. Read-only (.rodata): without a filter the
/// verifier removes every check below, so unfiltered views pay nothing.
#[unsafe(no_mangle)]
static FILTER_ENABLED: Global<u32> = Global::new(0);

/// Cgroups whose events are kept.
#[map]
static ALLOWED: HashMap<CgroupKey, u32> = HashMap::with_max_entries(16_384, 0);

/// Bumped by the collector after each change to `ALLOWED`.
#[map]
static FILTER_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// memcg pointer → whether its cgroup is allowed, as of a generation.
#[map]
static MEMCG_VERDICTS: LruHashMap<u64, FilterVerdict> = LruHashMap::with_max_entries(16_384, 0);

#[inline(always)]
fn filtering() -> bool {
    FILTER_ENABLED.load() != 0
}

#[inline(always)]
fn listed(cgroup: &CgroupRef) -> bool {
    ALLOWED.get_ptr(&CgroupKey::of(cgroup)).is_some()
}

/// Whether events about this cgroup are kept.
#[inline(always)]
pub fn cgroup_allowed(cgroup: &CgroupRef) -> bool {
    !filtering() || listed(cgroup)
}

/// Whether events about this memcg are kept. A null memcg (the root on
/// some paths, or unknown) is kept only without a filter.
#[inline(always)]
pub fn memcg_allowed(o: &Offsets, memcg: u64) -> bool {
    if !filtering() {
        return true;
    }
    if memcg == 0 {
        return false;
    }
    let generation = FILTER_GENERATION.get(0).copied().unwrap_or(0);
    if let Some(verdict) = MEMCG_VERDICTS.get_ptr(memcg) {
        // SAFETY: the pointer comes from a successful hash map lookup.
        let verdict = unsafe { *verdict };
        if verdict.generation == generation {
            return verdict.allowed != 0;
        }
    }
    let allowed = match memcg_ref(o, memcg) {
        Ok(cgroup) => listed(&cgroup),
        Err(_) => {
            // Not kept, and said so: a filter must not let through what it
            // cannot name.
            count_read(ReadChain::MemcgIdentity);
            false
        }
    };
    let verdict = FilterVerdict {
        generation,
        allowed: u32::from(allowed),
    };
    let _ = MEMCG_VERDICTS.insert(memcg, verdict, 0);
    allowed
}

/// A new cgroup (`cgroup_mkdir`): allowed when its parent is, so a selected
/// pod's containers are kept from their first event. `memcg` is its memcg,
/// if it has one: whatever verdict an earlier memcg at that address left is
/// dropped.
#[inline(always)]
pub fn cgroup_created(
    o: &Offsets,
    cgroup: u64,
    created: &CgroupRef,
    memcg: u64,
) -> Result<(), Failure> {
    if !filtering() {
        return Ok(());
    }
    if memcg != 0 {
        let _ = MEMCG_VERDICTS.remove(memcg);
    }
    let parent_css: u64 =
        read(cgroup, at(o.cgroup_self, o.css_parent)).chain(ReadChain::CgroupParent)?;
    let parent: u64 = read(parent_css, o.css_cgroup).chain(ReadChain::CgroupParent)?;
    let parent = cgroup_ref(o, parent).chain(ReadChain::CgroupIdentity)?;
    if listed(&parent) && ALLOWED.insert(&CgroupKey::of(created), &1, 0).is_err() {
        return Err(Failure::MAP_FULL);
    }
    Ok(())
}
