//! cgtrace: trace Linux cgroups with eBPF.
//!
//! Layers, as in DESIGN.md §2: `probe` (load, attach, read the kernel side)
//! → `event` (decoded records) → `model` (pure state) → `output` (views);
//! `kmsg` and `cgroup` supply names and history; `trace` reads and writes
//! recordings, `report` summarises and renders them; `cli` glues them per
//! subcommand.

/// Writes a line to stderr and ignores failure: `eprintln!` panics when
/// stderr is closed (`cgtrace ... 2>&1 | head`), and a tracer must not die
/// of a closed diagnostic stream.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            $crate::text::printable_lines(&format!($($arg)*))
        );
    }};
}

/// Writes a line to stdout and ignores failure, for reports that should
/// not die half-way when the reader goes away (`cgtrace demo | head`).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            $crate::text::printable_lines(&format!($($arg)*))
        );
    }};
}

/// `cgtrace --version`: the release and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CGTRACE_COMMIT"), ")");

pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod endpoint;
pub mod event;
pub mod identity;
pub mod kmsg;
pub mod model;
pub mod privilege;
pub mod probe;
pub mod session;
pub mod system;
pub mod text;
pub mod trace;
pub mod units;
pub mod view;
pub mod workload;
