//! `cgtrace reclaim`: who reclaims whom, and how long reclaim stalls each
//! cgroup.
//!
//! Cost: as `cgtrace cache`, plus a hash update per reclaim begin/end pair
//! and per shrink pass.

use std::io::{self, Write as _};

use clap::Args;
use serde_json::json;

use super::{
    Outcome,
    interval::{self, IntervalArgs},
};
use crate::{
    output::{
        cache::{StallRow, cgroup_name, reason_name, stall_header, stall_json, stall_line},
        format::{bytes, rfc3339, tail},
    },
    system::Clock,
};

#[derive(Debug, Args)]
pub struct ReclaimArgs {
    #[command(flatten)]
    pub interval: IntervalArgs,
    /// Show the N largest victim ← reclaimer pairs per interval.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

pub fn run(args: &ReclaimArgs) -> anyhow::Result<Outcome> {
    let clock = Clock::now();
    interval::run(&args.interval, |context| {
        let page = context.page_size;
        let mut pairs = Vec::new();
        for flow in context
            .interval
            .flows
            .iter()
            .filter(|f| f.reason.is_reclaim())
            .take(args.top)
        {
            let victim = flow.owner.and_then(|c| context.resolver.path(c));
            let reclaimer = flow.actor.and_then(|c| context.resolver.path(c));
            pairs.push((
                cgroup_name(victim.as_deref(), flow.owner),
                cgroup_name(reclaimer.as_deref(), flow.actor),
                flow.reason,
                flow.pages * page,
            ));
        }
        let stalls: Vec<StallRow<'_>> = context
            .interval
            .stalls
            .iter()
            .map(|stall| {
                let path = stall.cgroup.and_then(|c| context.resolver.path(c));
                StallRow {
                    name: cgroup_name(path.as_deref(), stall.cgroup),
                    stall,
                }
            })
            .collect();
        let time = rfc3339(clock.wall_time(context.interval.end_ns));
        let mut out = io::stdout().lock();
        if args.interval.json {
            let matrix: Vec<_> = pairs
                .iter()
                .map(|(victim, reclaimer, reason, b)| {
                    json!({"victim": victim, "reclaimer": reclaimer, "reason": reason_name(*reason), "bytes": b})
                })
                .collect();
            let stalls: Vec<_> = stalls.iter().map(|s| stall_json(s, page)).collect();
            let record = json!({
                "type": "reclaim",
                "time": time,
                "interval_s": context.interval.seconds(),
                "matrix": matrix,
                "stalls": stalls,
            });
            writeln!(out, "{record}")?;
        } else {
            writeln!(out, "-- {time} ({:.2} s)", context.interval.seconds())?;
            if !pairs.is_empty() {
                writeln!(
                    out,
                    "{:<30} {:<30} {:<15} {:>9}",
                    "VICTIM", "RECLAIMER", "REASON", "EVICTED"
                )?;
                for (victim, reclaimer, reason, b) in &pairs {
                    writeln!(
                        out,
                        "{:<30} {:<30} {:<15} {:>9}",
                        tail(victim, 30),
                        tail(reclaimer, 30),
                        reason_name(*reason),
                        bytes(*b)
                    )?;
                }
            }
            if !stalls.is_empty() {
                writeln!(out, "{}", stall_header())?;
                for stall in &stalls {
                    writeln!(out, "{}", stall_line(stall, page))?;
                }
            }
        }
        out.flush()
    })?;
    Ok(Outcome::Success)
}
