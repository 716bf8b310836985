//! Records, map keys and kernel layout values shared by the eBPF programs
//! (`cgtrace-ebpf`) and the userspace collector (`cgtrace`).
//!
//! One source of truth for every layout: `#[repr(C)]`, explicit padding, no
//! `bool`, and a compile-time size check per type. With the `user` feature the
//! types implement `aya::Pod` so they can be read from maps and written as
//! globals, and the user side gets what only userspace needs: display
//! names of the enums and arithmetic on the statistics (with `std`).
#![cfg_attr(not(feature = "user"), no_std)]

pub mod cgroup;
pub mod codes;
pub mod offsets;
pub mod oom;
pub mod pagecache;
pub mod stats;
pub mod throttle;

code_enum! {
    /// Tag in the first four bytes of every ring-buffer record, so the
    /// reader can dispatch before it knows the record's full size.
    pub enum RecordKind: u32 {
        OomKill = 1 => "oom_kill",
        ThrottleSpan = 2 => "throttle_span",
        CgroupCreated = 3 => "cgroup_created",
        CgroupRemoved = 4 => "cgroup_removed",
    }
}

/// Header at the start of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// A [`RecordKind`] value.
    pub kind: u32,
    /// Size of the whole record in bytes, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) when the record was made.
    pub monotonic_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, made only of integers and
    // arrays of integers, with explicit padding fields, so every bit pattern
    // is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::offsets::Offsets {}
    unsafe impl aya::Pod for super::offsets::DirectOffsets {}
    unsafe impl aya::Pod for super::oom::OomRecord {}
    unsafe impl aya::Pod for super::cgroup::CgroupRef {}
    unsafe impl aya::Pod for super::cgroup::CgroupCreatedRecord {}
    unsafe impl aya::Pod for super::cgroup::CgroupRemovedRecord {}
    unsafe impl aya::Pod for super::cgroup::CgroupKey {}
    unsafe impl aya::Pod for super::cgroup::FilterVerdict {}
    unsafe impl aya::Pod for super::pagecache::CacheKey {}
    unsafe impl aya::Pod for super::pagecache::ReclaimContext {}
    unsafe impl aya::Pod for super::pagecache::StallKey {}
    unsafe impl aya::Pod for super::pagecache::StallStats {}
    unsafe impl aya::Pod for super::pagecache::ChargeKey {}
    unsafe impl aya::Pod for super::pagecache::FileKey {}
    unsafe impl aya::Pod for super::throttle::ThrottleRecord {}
    unsafe impl aya::Pod for super::throttle::ThrottleStart {}
    unsafe impl aya::Pod for super::throttle::OpenRunQueues {}
    unsafe impl aya::Pod for super::pagecache::ChargeValue {}
}
