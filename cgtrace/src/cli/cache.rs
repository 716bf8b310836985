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
use crate::view::{
    cache::{CacheRow, FileRow, cache_header, cache_json, cache_line, file_json, file_line},
    format::rfc3339,
    interval::IntervalContext,
};

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(flatten)]
    pub interval: IntervalArgs,
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

/// Files listed per cgroup with `--files`.
const FILES_PER_CGROUP: usize = 3;

pub fn run(args: &CacheArgs) -> anyhow::Result<Outcome> {
    let mut header_printed = false;
    interval::run(
        &args.interval,
        args.files,
        args.input.as_deref(),
        |context| {
            let rows = context.rows(args.top);
            let files: Vec<Vec<FileRow>> = if args.files {
                rows.iter().map(|row| file_rows(context, row)).collect()
            } else {
                Vec::new()
            };
            let mut out = io::stdout().lock();
            let time = rfc3339(context.clock.wall_time(context.interval.end_ns));
            if args.interval.json {
                let cgroups: Vec<_> = rows
                    .iter()
                    .enumerate()
                    .map(|(index, r)| {
                        let mut value = cache_json(r, context.page_size);
                        if let Some(files) = files.get(index) {
                            value["files"] = files
                                .iter()
                                .map(|f| file_json(f, context.page_size))
                                .collect();
                        }
                        value
                    })
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
                for (index, row) in rows.iter().enumerate() {
                    writeln!(
                        out,
                        "{}",
                        cache_line(row, context.interval.seconds(), context.page_size)
                    )?;
                    for file in files.get(index).into_iter().flatten() {
                        writeln!(out, "{}", file_line(file, context.page_size))?;
                    }
                }
            }
            out.flush()
        },
    )?;
    Ok(Outcome::Success)
}

/// A row's busiest files in the interval, named where a process of the
/// cgroup has them open.
fn file_rows(context: &mut IntervalContext<'_>, row: &CacheRow) -> Vec<FileRow> {
    use std::collections::HashMap;

    let Some(flows) = &context.interval.files else {
        return Vec::new();
    };
    let mut by_file: HashMap<(u32, u64), FileRow> = HashMap::new();
    for flow in flows.iter().filter(|f| f.owner == row.activity.owner) {
        let entry = by_file
            .entry((flow.dev, flow.ino))
            .or_insert_with(|| FileRow {
                dev: flow.dev,
                ino: flow.ino,
                path: None,
                added: 0,
                evicted: 0,
                removed: 0,
            });
        match flow.reason {
            cgtrace_common::pagecache::CacheReason::Added => entry.added += flow.pages,
            cgtrace_common::pagecache::CacheReason::Removed => entry.removed += flow.pages,
            _ => entry.evicted += flow.pages,
        }
    }
    let mut files: Vec<FileRow> = by_file.into_values().collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.added + f.evicted + f.removed));
    files.truncate(FILES_PER_CGROUP);
    let dir = row.activity.owner.and_then(|c| context.directory(c));
    if let Some(dir) = dir {
        let open = crate::cgroup::files::open_files(&dir);
        for file in &mut files {
            file.path = open
                .get(&(file.dev, file.ino))
                .map(|p| p.display().to_string());
        }
    }
    files
}
