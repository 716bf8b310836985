//! The collector's side of the kernel allowlist (see the eBPF `filter`
//! module): cgroups are added, never removed (a removed cgroup's id is not
//! reused), and each change bumps the generation so the programs' cached
//! per-memcg verdicts are recomputed.

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use cgtrace_common::cgroup::{CgroupKey, CgroupRef};

use super::{ProbeError, take_map};

pub struct KernelAllowlist {
    allowed: HashMap<MapData, CgroupKey, u32>,
    generation: Array<MapData, u32>,
    next_generation: u32,
}

impl KernelAllowlist {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let allowed =
            HashMap::try_from(take_map(ebpf, "ALLOWED")?).map_err(|source| ProbeError::Map {
                name: "ALLOWED",
                source,
            })?;
        let generation =
            Array::try_from(take_map(ebpf, "FILTER_GENERATION")?).map_err(|source| {
                ProbeError::Map {
                    name: "FILTER_GENERATION",
                    source,
                }
            })?;
        Ok(Self {
            allowed,
            generation,
            next_generation: 1,
        })
    }

    /// Adds cgroups; returns how many were not there yet.
    pub fn add(&mut self, cgroups: &[CgroupRef]) -> Result<usize, ProbeError> {
        let mut added = 0;
        for cgroup in cgroups {
            let key = CgroupKey::of(cgroup);
            if self.allowed.get(&key, 0).is_ok() {
                continue;
            }
            self.allowed
                .insert(key, 1, 0)
                .map_err(|source| ProbeError::Map {
                    name: "ALLOWED",
                    source,
                })?;
            added += 1;
        }
        if added > 0 {
            self.generation
                .set(0, self.next_generation, 0)
                .map_err(|source| ProbeError::Map {
                    name: "FILTER_GENERATION",
                    source,
                })?;
            self.next_generation = self.next_generation.wrapping_add(1);
        }
        Ok(added)
    }
}
