//! Loss counters kept by the eBPF programs in a per-CPU array.
//!
//! The programs count what they could not deliver; the collector sums the
//! per-CPU values and reports them, so no event is lost without saying so.

crate::code_enum! {
    /// Index into the `LOSS` per-CPU array.
    pub enum LossCounter: u32 {
        /// `bpf_ringbuf_reserve` failed: the ring buffer was full.
        RingBufFull = 0 => "ring_buffer_full",
        /// A `bpf_probe_read_kernel` of a kernel structure failed, so a
        /// record went out with some fields unknown.
        ReadFailed = 1 => "read_failed",
        /// Records successfully submitted to the ring buffer.
        Submitted = 2 => "submitted",
        /// A map was full: a reclaim context or a stall histogram was not kept.
        MapFull = 3 => "map_full",
    }
}

/// Number of slots in the `LOSS` array.
#[expect(clippy::cast_possible_truncation, reason = "a handful of slots")]
pub const LOSS_COUNTERS: u32 = LossCounter::COUNT as u32;
