//! cgroup hierarchies on this host, cgroup id → path resolution, and scratch
//! cgroups for scenarios and tests.

pub mod cpu;
pub mod files;
pub mod hierarchy;
pub mod resolve;
pub mod sampler;
pub mod scratch;
pub mod stat;

pub use hierarchy::{CgroupMode, Hierarchies, Hierarchy, Version};
pub use resolve::Resolver;
