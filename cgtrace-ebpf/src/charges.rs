//! Charge activity and refaults per memcg, from the memcg stat tracepoints
//! (`memcg/mod_memcg_state`, `memcg/mod_memcg_lruvec_state`: memcg, item,
//! value; Linux 6.14+). They fire on every stat update, over a hundred
//! thousand times a second under pressure, so each program first compares
//! the item against the seven it keeps and returns at once for the rest.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::PerCpuHashMap,
    programs::BtfTracePointContext,
};
use cgtrace_common::pagecache::{CHARGE_KINDS, ChargeKey, ChargeValue};

use crate::{
    failure::{Failure, finish},
    maps::offsets,
};

/// Pages charged and uncharged per (memcg, kind), per CPU. Preallocated:
/// a key allocated as it comes would charge kernel memory from inside
/// these programs, and that charge's own stat update would find the
/// program already running on this CPU (a recursion miss).
#[map]
static CHARGES: PerCpuHashMap<ChargeKey, ChargeValue> = PerCpuHashMap::with_max_entries(16_384, 0);

#[btf_tracepoint(function = "mod_memcg_state")]
pub fn memcg_state(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "memcg_state", record(&ctx))
}

#[btf_tracepoint(function = "mod_memcg_lruvec_state")]
pub fn memcg_lruvec_state(ctx: BtfTracePointContext) -> u32 {
    finish(&ctx, "memcg_lruvec_state", record(&ctx))
}

#[inline(always)]
fn record(ctx: &BtfTracePointContext) -> Result<(), Failure> {
    let memcg: u64 = ctx.arg(0);
    let item: i32 = ctx.arg(1);
    let value: i32 = ctx.arg(2);
    let items = &offsets().memcg_stat_items;
    let mut kind = CHARGE_KINDS;
    for (index, wanted) in items.iter().enumerate() {
        if *wanted == item as u32 {
            kind = index;
        }
    }
    if kind == CHARGE_KINDS || memcg == 0 || value == 0 {
        return Ok(());
    }
    let key = ChargeKey {
        memcg,
        kind: kind as u32,
        padding: 0,
    };
    let pages = u64::from(value.unsigned_abs());
    if let Some(slot) = CHARGES.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a per-CPU map value; only this CPU
        // writes it, and no other program runs on this CPU meanwhile.
        let slot = unsafe { &mut *slot };
        if value > 0 {
            slot.charged += pages;
        } else {
            slot.uncharged += pages;
        }
        return Ok(());
    }
    // Only new keys are checked: a key in the map was allowed when it was
    // made, and the allowlist only grows.
    if !crate::filter::memcg_allowed(offsets(), memcg) {
        return Ok(());
    }
    crate::pagecache::remember_memcg(memcg);
    let first = if value > 0 {
        ChargeValue {
            charged: pages,
            uncharged: 0,
        }
    } else {
        ChargeValue {
            charged: 0,
            uncharged: pages,
        }
    };
    CHARGES
        .insert(&key, &first, 0)
        .map_err(|_| Failure::MAP_FULL)
}
