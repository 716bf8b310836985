//! The reclaim view (`cgtrace reclaim`): who reclaims whom (victim,
//! reclaimer, reason, bytes), reclaim stalls per cgroup, and the refaults,
//! charges, memory events and memory pressure of the busiest cgroups, as
//! aligned tables or one JSON object per interval.

use std::io::{self, Write as _};

use cgtrace_common::pagecache::{CacheReason, ChargeKind};
use serde_json::json;

use super::{
    cache::{
        CacheRow, StallRow, activity_json, events_note, pressure_json, stall_header, stall_json,
        stall_line,
    },
    format::{bytes, rfc3339, tail},
    interval::{IntervalContext, Named},
};

/// Prints one interval: the `top` largest victim ← reclaimer pairs.
pub fn render(context: &mut IntervalContext<'_>, top: usize, json: bool) -> io::Result<()> {
    let page = context.page_size;
    // Refaults, charges and memory events of the busiest cgroups.
    let cgroups = context.rows(top);
    let interval = context.interval;
    let mut pairs = Vec::new();
    for flow in interval
        .flows
        .iter()
        .filter(|f| f.reason.is_reclaim())
        .take(top)
    {
        pairs.push((
            context.named(flow.owner),
            context.named(flow.actor),
            flow.reason,
            flow.pages * page,
        ));
    }
    let stalls: Vec<StallRow<'_>> = interval
        .stalls
        .iter()
        .map(|stall| {
            let named = context.named(stall.cgroup);
            StallRow {
                name: named.path,
                workload: named.workload,
                stall,
            }
        })
        .collect();
    let report = Report {
        time: rfc3339(context.clock.wall_time(interval.end_ns)),
        seconds: interval.seconds(),
        pairs,
        stalls,
        cgroups,
        page,
    };
    let mut out = crate::text::stdout();
    if json {
        report.json(&mut out)?;
    } else {
        report.text(&mut out)?;
    }
    out.flush()
}

/// One interval of the reclaim view, resolved to names.
struct Report<'a> {
    time: String,
    seconds: f64,
    /// (victim, reclaimer, reason, bytes), largest first.
    pairs: Vec<(Named, Named, CacheReason, u64)>,
    stalls: Vec<StallRow<'a>>,
    cgroups: Vec<CacheRow>,
    page: u64,
}

impl Report<'_> {
    fn json(&self, out: &mut impl io::Write) -> io::Result<()> {
        let matrix: Vec<_> = self
            .pairs
            .iter()
            .map(|(victim, reclaimer, reason, b)| {
                json!({
                    "victim": victim.path,
                    "victim_workload": victim.workload.to_json(),
                    "reclaimer": reclaimer.path,
                    "reclaimer_workload": reclaimer.workload.to_json(),
                    "reason": reason.name(),
                    "bytes": b,
                })
            })
            .collect();
        let stalls: Vec<_> = self
            .stalls
            .iter()
            .map(|s| stall_json(s, self.page))
            .collect();
        let cgroups: Vec<_> = self.cgroups
            .iter()
            .map(|row| {
                let (charges, refaults, events) = activity_json(row, self.page);
                let mut value = json!({"cgroup": row.name, "workload": row.workload.to_json(), "refaults": refaults, "charges": charges, "memory_events": events});
                if let Some(pressure) = &row.pressure {
                    value["memory_pressure"] = pressure_json(pressure);
                }
                value
            })
            .collect();
        let record = json!({
            "type": "reclaim",
            "time": self.time,
            "interval_s": self.seconds,
            "matrix": matrix,
            "stalls": stalls,
            "cgroups": cgroups,
        });
        writeln!(out, "{record}")?;
        Ok(())
    }

    fn text(&self, out: &mut impl io::Write) -> io::Result<()> {
        writeln!(out, "-- {} ({:.2} s)", self.time, self.seconds)?;
        if !self.pairs.is_empty() {
            writeln!(
                out,
                "{:<30} {:<30} {:<15} {:>9}",
                "VICTIM", "RECLAIMER", "REASON", "EVICTED"
            )?;
            for (victim, reclaimer, reason, b) in &self.pairs {
                writeln!(
                    out,
                    "{:<30} {:<30} {:<15} {:>9}",
                    tail(&victim.label(), 30),
                    tail(&reclaimer.label(), 30),
                    reason.name(),
                    bytes(*b)
                )?;
            }
        }
        if !self.stalls.is_empty() {
            writeln!(out, "{}", stall_header())?;
            for stall in &self.stalls {
                writeln!(out, "{}", stall_line(stall, self.page))?;
            }
        }
        let refaulting: Vec<_> = self
            .cgroups
            .iter()
            .filter_map(|row| {
                let c = row.activity.charges?;
                let (anon, file) = (
                    c[ChargeKind::RefaultAnon as usize].0,
                    c[ChargeKind::RefaultFile as usize].0,
                );
                (anon + file > 0).then_some((row, anon, file))
            })
            .collect();
        if !refaulting.is_empty() {
            writeln!(
                out,
                "{:<30} {:>12} {:>12}  EVENTS",
                "REFAULTS IN", "ANON", "FILE"
            )?;
            for (row, anon, file) in refaulting {
                writeln!(
                    out,
                    "{:<30} {:>12} {:>12}  {}",
                    tail(&row.workload.label(&row.name), 30),
                    bytes(anon * self.page),
                    bytes(file * self.page),
                    events_note(row.events.as_ref())
                )?;
            }
        }
        Ok(())
    }
}
