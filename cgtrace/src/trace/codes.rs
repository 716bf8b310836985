//! The byte codes of the enums a trace stores, listed once so encoding and
//! decoding agree, in every format: a value's code is its index here, and
//! new values go at the end.

use crate::{
    cgroup::Version,
    event::{Constraint, ConstraintFoundBy, LimitKind, OomSource},
};

pub const SOURCES: [OomSource; 2] = [OomSource::Probe, OomSource::KernelLog];
pub const CONSTRAINTS: [Constraint; 5] = [
    Constraint::Memcg,
    Constraint::Global,
    Constraint::Cpuset,
    Constraint::Mempolicy,
    Constraint::Unknown,
];
pub const FOUND_BY: [ConstraintFoundBy; 4] = [
    ConstraintFoundBy::OomControl,
    ConstraintFoundBy::LimitWalk,
    ConstraintFoundBy::KernelLog,
    ConstraintFoundBy::Unknown,
];
pub const LIMIT_KINDS: [LimitKind; 2] = [LimitKind::Memory, LimitKind::MemorySwap];
pub const VALUES_FROM: [&str; 2] = ["kernel", "kernel_log"];
/// Format 1 wrote 1 and 2 for the versions; format 2 writes these indices.
pub const VERSIONS: [Version; 2] = [Version::V1, Version::V2];

/// The code of `value`: its index in `all`.
pub fn code_of<T: PartialEq>(all: &[T], value: &T) -> u8 {
    u8::try_from(all.iter().position(|v| v == value).unwrap_or(0)).unwrap_or(0)
}

/// The value of `code`, if `all` has one.
pub fn from_code<T: Copy>(all: &[T], code: u8) -> Option<T> {
    all.get(usize::from(code)).copied()
}
