//! `cgtrace cache`: page cache per cgroup — how much it owns, how fast it
//! adds, who evicts it and why.
//!
//! Cost: two BTF tracepoints on every page-cache insertion and deletion,
//! counted per CPU in the kernel (a hash update per event, no event
//! streamed); see BENCHMARKS.md for the measured overhead.

use std::io::{self, Write as _};

use clap::Args;
use serde_json::json;

use super::{
    Outcome,
    interval::{self, IntervalArgs},
};
use crate::{
    output::{
        cache::{cache_header, cache_json, cache_line},
        format::rfc3339,
    },
    system::Clock,
};

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(flatten)]
    pub interval: IntervalArgs,
    /// Show the N busiest cgroups per interval.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

pub fn run(args: &CacheArgs) -> anyhow::Result<Outcome> {
    let clock = Clock::now();
    let mut header_printed = false;
    interval::run(&args.interval, |context| {
        let rows = context.rows(args.top);
        let mut out = io::stdout().lock();
        let time = rfc3339(clock.wall_time(context.interval.end_ns));
        if args.interval.json {
            let cgroups: Vec<_> = rows
                .iter()
                .map(|r| cache_json(r, context.page_size))
                .collect();
            let record = json!({
                "type": "cache",
                "time": time,
                "interval_s": context.interval.seconds(),
                "cgroups": cgroups,
            });
            writeln!(out, "{record}")?;
        } else {
            if !header_printed {
                writeln!(out, "{}", cache_header())?;
                header_printed = true;
            }
            writeln!(out, "-- {time} ({:.2} s)", context.interval.seconds())?;
            for row in &rows {
                writeln!(
                    out,
                    "{}",
                    cache_line(row, context.interval.seconds(), context.page_size)
                )?;
            }
        }
        out.flush()
    })?;
    Ok(Outcome::Success)
}
