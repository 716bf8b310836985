//! `cgtrace cache`: page cache per cgroup — how much it owns, how fast it
//! adds, who evicts it and why.
//!
//! Cost: two BTF tracepoints on every page-cache insertion and deletion,
//! counted per CPU in the kernel (a hash update per event, no event
//! streamed); see BENCHMARKS.md for the measured overhead.

use clap::Args;

use super::{
    Outcome,
    charges::ChargesArgs,
    interval::{self, IntervalArgs, LiveExtras},
};
use crate::view::cache::CacheTable;

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(flatten)]
    pub interval: IntervalArgs,
    #[command(flatten)]
    pub charges: ChargesArgs,
    /// Show the N busiest cgroups per interval.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Also show each cgroup's busiest files (device:inode, and the path
    /// where one of its processes has the file open). Costs five more
    /// kernel reads per page-cache event.
    #[arg(long, conflicts_with = "input")]
    pub files: bool,
    /// Replay the intervals recorded in a trace file (`cgtrace record`)
    /// instead of watching this machine.
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
}

pub fn run(args: &CacheArgs) -> anyhow::Result<Outcome> {
    let mut view = CacheTable::new(args.top, args.files, args.interval.json);
    let extras = LiveExtras {
        files: args.files,
        charges: args.charges.charges,
    };
    interval::run(&args.interval, extras, args.input.as_deref(), |context| {
        view.render(context)
    })?;
    Ok(Outcome::Success)
}
