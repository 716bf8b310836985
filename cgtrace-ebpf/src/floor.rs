//! Empty programs, one per tracepoint the hot paths use: the least any
//! program of the same kind costs there. The benchmark attaches them
//! (`cgtrace __floor`) on the same workload as the real programs, and
//! reports each real program's cost as a multiple of its floor.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

macro_rules! floor {
    ($($name:ident => $tracepoint:literal),+ $(,)?) => {
        $(
            #[btf_tracepoint(function = $tracepoint)]
            pub fn $name(_ctx: BtfTracePointContext) -> u32 {
                0
            }
        )+
    };
}

// Names of at most 15 characters: the kernel keeps no more, and the
// benchmark finds them by the kernel's name.
floor! {
    f_cache_add => "mm_filemap_add_to_page_cache",
    f_cache_delete => "mm_filemap_delete_from_page_cache",
    f_lruvec_state => "mod_memcg_lruvec_state",
    f_memcg_state => "mod_memcg_state",
    f_shrink => "mm_vmscan_lru_shrink_inactive",
    f_mreclaim_beg => "mm_vmscan_memcg_reclaim_begin",
    f_mreclaim_end => "mm_vmscan_memcg_reclaim_end",
    f_dreclaim_beg => "mm_vmscan_direct_reclaim_begin",
    f_dreclaim_end => "mm_vmscan_direct_reclaim_end",
    f_switch => "sched_switch",
}
