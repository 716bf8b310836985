//! `cgtrace cache`: page cache per cgroup — how much it owns, how fast it
//! adds, who evicts it and why.
//!
//! Cost: two BTF tracepoints on every page-cache insertion and deletion,
//! counted per CPU in the kernel (a hash update per event, no event
//! streamed); see BENCHMARKS.md for the measured overhead.

use std::{
    collections::HashMap,
    io::{self, Write as _},
};

use cgtrace_common::cgroup::CgroupRef;
use clap::Args;
use serde_json::json;

use super::{
    Outcome,
    interval::{self, IntervalArgs, IntervalContext},
};
use crate::{
    cgroup::{Resolver, stat},
    model::cache::by_owner,
    output::{
        cache::{CacheRow, cache_header, cache_json, cache_line, cgroup_name},
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

/// Page cache a cgroup had when cgtrace first saw it, less what cgtrace had
/// counted by then: adding the running net gives what it owns now.
#[derive(Default)]
struct Baselines {
    bytes: HashMap<CgroupRef, i64>,
}

impl Baselines {
    fn owned(&mut self, cgroup: CgroupRef, net_bytes: i64, resolver: &mut Resolver) -> Option<u64> {
        let base = if let Some(base) = self.bytes.get(&cgroup) {
            *base
        } else {
            let path = resolver.path(cgroup)?;
            let hierarchy = resolver.hierarchies().by_id(cgroup.hierarchy)?.clone();
            let stat = stat::read(&hierarchy.mount, &path).ok()?;
            let now = i64::try_from(stat::page_cache_bytes(&stat, hierarchy.version)?).ok()?;
            let base = now - net_bytes;
            self.bytes.insert(cgroup, base);
            base
        };
        u64::try_from(base + net_bytes).ok()
    }
}

pub fn run(args: &CacheArgs) -> anyhow::Result<Outcome> {
    let clock = Clock::now();
    let mut baselines = Baselines::default();
    let mut header_printed = false;
    interval::run(&args.interval, |context| {
        let rows = rows(context, &mut baselines, args.top);
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

fn rows(context: &mut IntervalContext<'_>, baselines: &mut Baselines, top: usize) -> Vec<CacheRow> {
    let page = i64::try_from(context.page_size).unwrap_or(4096);
    by_owner(context.interval)
        .into_iter()
        .take(top)
        .map(|activity| {
            let path = activity.owner.and_then(|c| context.resolver.path(c));
            let owned = activity.owner.and_then(|c| {
                baselines.owned(c, context.model.net_pages(c) * page, context.resolver)
            });
            let reclaimer_names = activity
                .reclaimers
                .iter()
                .map(|(actor, _, _)| {
                    let path = actor.and_then(|c| context.resolver.path(c));
                    cgroup_name(path.as_deref(), *actor)
                })
                .collect();
            CacheRow {
                name: cgroup_name(path.as_deref(), activity.owner),
                id: activity.owner.map(|c| c.id),
                owned_bytes: owned,
                activity,
                reclaimer_names,
            }
        })
        .collect()
}
