//! cgtrace: trace Linux cgroups with eBPF.
//!
//! Layers, as in DESIGN.md §2: `probe` (load, attach, read the kernel side)
//! → `event` (decoded records) → `model` (pure state) → `output` (views);
//! `kmsg` and `cgroup` supply names and history; `cli` glues them per
//! subcommand.

pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod event;
pub mod kmsg;
pub mod model;
pub mod output;
pub mod probe;
pub mod runtime;
pub mod system;
pub mod workload;
