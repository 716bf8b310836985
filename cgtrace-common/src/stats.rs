//! Loss counters kept by the eBPF programs in a per-CPU array.
//!
//! The programs count what they could not deliver; the collector sums the
//! per-CPU values and reports them, so no event is lost without saying so.

/// Index into the `LOSS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossCounter {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full.
    RingBufFull = 0,
    /// A `bpf_probe_read_kernel` of a kernel structure failed, so a record
    /// went out with some fields unknown.
    ReadFailed = 1,
    /// Records successfully submitted to the ring buffer.
    Submitted = 2,
    /// A map was full: a reclaim context or a stall histogram was not kept.
    MapFull = 3,
}

/// Number of slots in the `LOSS` array.
pub const LOSS_COUNTERS: u32 = 4;
