//! The floor: an empty program of the same kind (tp_btf) on each tracepoint
//! cgtrace's hot paths use. Attached alone on a workload, the kernel's
//! run-time statistics give the least any program costs per event there,
//! so a benchmark can state cgtrace's cost as a multiple of it
//! (`cgtrace __floor`).

use aya::{Ebpf, programs::BtfTracePoint};

use super::{
    EBPF_OBJECT, FeatureSet, KernelBtf, LOG_MAP, ProbeError, ProbeOptions, attach_error, program,
    shrink_unused_maps,
};

/// One empty program: its name (as the kernel keeps it), its tracepoint,
/// and the cgtrace program that runs there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloorProgram {
    pub name: &'static str,
    pub tracepoint: &'static str,
    pub measures: &'static str,
}

const fn floor(
    name: &'static str,
    tracepoint: &'static str,
    measures: &'static str,
) -> FloorProgram {
    FloorProgram {
        name,
        tracepoint,
        measures,
    }
}

/// Every floor program, beside the program it is the floor of.
pub const FLOOR_PROGRAMS: [FloorProgram; 10] = [
    floor("f_cache_add", "mm_filemap_add_to_page_cache", "cache_add"),
    floor(
        "f_cache_delete",
        "mm_filemap_delete_from_page_cache",
        "cache_delete",
    ),
    floor(
        "f_lruvec_state",
        "mod_memcg_lruvec_state",
        "memcg_lruvec_state",
    ),
    floor("f_memcg_state", "mod_memcg_state", "memcg_state"),
    floor(
        "f_shrink",
        "mm_vmscan_lru_shrink_inactive",
        "shrink_inactive",
    ),
    floor(
        "f_mreclaim_beg",
        "mm_vmscan_memcg_reclaim_begin",
        "memcg_reclaim_begin",
    ),
    floor(
        "f_mreclaim_end",
        "mm_vmscan_memcg_reclaim_end",
        "memcg_reclaim_end",
    ),
    floor(
        "f_dreclaim_beg",
        "mm_vmscan_direct_reclaim_begin",
        "direct_reclaim_begin",
    ),
    floor(
        "f_dreclaim_end",
        "mm_vmscan_direct_reclaim_end",
        "direct_reclaim_end",
    ),
    floor("f_switch", "sched_switch", "throttle_switch"),
];

/// The floor programs, attached while this lives.
pub struct Floor {
    _ebpf: Ebpf,
    /// The tracepoints this kernel has, in [`FLOOR_PROGRAMS`] order.
    pub attached: Vec<&'static str>,
}

impl Floor {
    /// Loads the object and attaches each floor program whose tracepoint
    /// this kernel has; cgtrace's own programs are left unloaded.
    pub fn attach() -> Result<Self, ProbeError> {
        let KernelBtf {
            hooks,
            aya_btf,
            mut loader,
            ..
        } = KernelBtf::open()?;
        // No feature is on: every map of cgtrace's own programs is made
        // with one entry.
        shrink_unused_maps(
            &mut loader,
            &ProbeOptions {
                features: FeatureSet::NONE,
                ..ProbeOptions::default()
            },
        );
        let mut ebpf = loader
            .btf(Some(&aya_btf))
            .map_max_entries(LOG_MAP, 4096)
            .load(EBPF_OBJECT)
            .map_err(ProbeError::Load)?;
        let mut attached = Vec::new();
        for floor in FLOOR_PROGRAMS {
            if !hooks.has_btf_tracepoint(floor.tracepoint) {
                continue;
            }
            let program: &mut BtfTracePoint = program(&mut ebpf, floor.name)?;
            program
                .load(floor.tracepoint, &aya_btf)
                .and_then(|()| program.attach().map(drop))
                .map_err(|e| attach_error(floor.name, floor.tracepoint, e))?;
            attached.push(floor.tracepoint);
        }
        Ok(Self {
            _ebpf: ebpf,
            attached,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::FLOOR_PROGRAMS;

    #[test]
    fn floor_names_fit_the_kernels_fifteen_characters() {
        for floor in FLOOR_PROGRAMS {
            assert!(floor.name.len() <= 15, "{}", floor.name);
        }
    }
}
