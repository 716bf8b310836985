//! `cgtrace report FILE [--json]`: what a recorded run did, per cgroup: OOM
//! kills, throttled periods and time, page cache added and evicted by reason
//! and by whom; the trace's losses, and whether it was cut short.
//!
//! Reads the file only: no root, no eBPF, any machine.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    path::PathBuf,
    time::{Duration, UNIX_EPOCH},
};

use cgtrace_common::{cgroup::CgroupRef, pagecache::CacheReason};
use clap::Args;
use serde_json::{Value, json};

use super::Outcome;
use crate::{
    event::{OomKill, ThrottleSpan},
    model::throttle::periods,
    output::{
        cache::{EVICTION_REASONS, duration, reason_name},
        format::{bytes, rfc3339},
        oom,
    },
    probe::ProbeStats,
    system::Clock,
    trace::{
        file::{CgroupNames, Ending, Trace},
        record::TraceRecord,
    },
};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The trace file (written by `cgtrace record`).
    pub file: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One cgroup's totals over the whole trace.
#[derive(Default)]
struct CgroupTotals {
    oom_kills: u64,
    spans: Vec<ThrottleSpan>,
    added: u64,
    removed: u64,
    evicted: BTreeMap<&'static str, u64>,
    /// Evicted pages by reclaimer name.
    evicted_by: BTreeMap<String, u64>,
}

/// Everything the report says, built from the records.
struct Summary {
    names: CgroupNames,
    cgroups: BTreeMap<String, CgroupTotals>,
    kills: Vec<OomKill>,
    stats: Option<ProbeStats>,
    last_ns: u64,
}

impl Summary {
    fn name(&self, cgroup: Option<CgroupRef>) -> String {
        cgroup.map_or_else(|| "(uncharged)".to_owned(), |c| self.names.name(c))
    }

    fn build(trace: &Trace) -> Self {
        let mut summary = Self {
            names: trace.cgroup_names(),
            cgroups: BTreeMap::new(),
            kills: Vec::new(),
            stats: None,
            last_ns: trace.header.start_monotonic_ns,
        };
        for record in &trace.records {
            match record {
                TraceRecord::CgroupName { .. } => {}
                TraceRecord::OomKill(kill) => {
                    let name = kill
                        .victim
                        .cgroup
                        .clone()
                        .unwrap_or_else(|| summary.name(kill.victim.cgroup_ref));
                    summary.cgroups.entry(name).or_default().oom_kills += 1;
                    summary.last_ns = summary.last_ns.max(kill.monotonic_ns);
                    summary.kills.push((**kill).clone());
                }
                TraceRecord::Throttle(span) => {
                    let name = summary.name(span.cgroup_ref);
                    summary.last_ns = summary.last_ns.max(span.end_ns);
                    summary
                        .cgroups
                        .entry(name)
                        .or_default()
                        .spans
                        .push(span.clone());
                }
                TraceRecord::CacheFlow {
                    end_ns,
                    owner,
                    actor,
                    reason,
                    pages,
                } => {
                    let owner_name = summary.name(*owner);
                    let actor_name = summary.name(*actor);
                    summary.last_ns = summary.last_ns.max(*end_ns);
                    let totals = summary.cgroups.entry(owner_name).or_default();
                    match reason {
                        CacheReason::Added => totals.added += pages,
                        CacheReason::Removed => totals.removed += pages,
                        reason => {
                            *totals.evicted.entry(reason_name(*reason)).or_default() += pages;
                            *totals.evicted_by.entry(actor_name).or_default() += pages;
                        }
                    }
                }
                TraceRecord::Stats {
                    monotonic_ns,
                    stats,
                } => {
                    summary.stats = Some(*stats);
                    summary.last_ns = summary.last_ns.max(*monotonic_ns);
                }
            }
        }
        summary
    }
}

pub fn run(args: &ReportArgs) -> anyhow::Result<Outcome> {
    let trace = super::open_trace(&args.file)?;
    let summary = Summary::build(&trace);
    let page = trace.header.page_size.max(1);
    // The recorder's clock: monotonic times in records become wall-clock times.
    let clock = Clock::from_boot_time(trace.header.boot_time_ns);
    let started = UNIX_EPOCH + Duration::from_nanos(trace.header.start_wall_ns);
    let seconds = Duration::from_nanos(
        summary
            .last_ns
            .saturating_sub(trace.header.start_monotonic_ns),
    )
    .as_secs_f64();
    let mut out = io::stdout().lock();
    let result = if args.json {
        writeln!(
            out,
            "{}",
            json_report(&trace, &summary, page, &clock, started, seconds)
        )
    } else {
        text_report(&mut out, &trace, &summary, page, &clock, started, seconds)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Outcome::Success),
        other => other.map(|()| Outcome::Success).map_err(Into::into),
    }
}

fn ending_text(ending: Ending) -> String {
    match ending {
        Ending::Complete => "complete".to_owned(),
        Ending::CutShort { offset, lost_bytes } => format!(
            "CUT SHORT at byte {offset} ({lost_bytes} bytes of an unfinished chunk lost): the recorder was killed or the disk filled"
        ),
    }
}

fn text_report(
    out: &mut impl io::Write,
    trace: &Trace,
    summary: &Summary,
    page: u64,
    clock: &Clock,
    started: std::time::SystemTime,
    seconds: f64,
) -> io::Result<()> {
    let h = &trace.header;
    writeln!(
        out,
        "trace: {} on {} (Linux {}), from {} for {seconds:.1} s, {} records; {}",
        h.writer,
        h.hostname,
        h.kernel_release,
        rfc3339(started),
        trace.records.len(),
        ending_text(trace.ending)
    )?;
    if let Some(s) = &summary.stats {
        writeln!(
            out,
            "losses: {} ring-buffer drops, {} recursion misses, {} read failures, {} map-full",
            s.ring_buffer_drops, s.recursion_misses, s.read_failures, s.map_full
        )?;
    } else {
        writeln!(
            out,
            "losses: unknown (the trace ends before the recorder's final counters)"
        )?;
    }
    writeln!(
        out,
        "\n{:<36} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}  EVICTED BY",
        "CGROUP", "OOM", "THROTTLED", "THR.TIME", "ADDED", "EVICTED", "REMOVED"
    )?;
    for (name, t) in &summary.cgroups {
        let evicted: u64 = t.evicted.values().sum();
        let by: Vec<String> = t
            .evicted_by
            .iter()
            .map(|(who, pages)| format!("{who} {}", bytes(pages * page)))
            .collect();
        writeln!(
            out,
            "{:<36} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
            crate::output::format::tail(name, 36),
            t.oom_kills,
            periods(&t.spans),
            duration(t.spans.iter().map(ThrottleSpan::duration_ns).sum()),
            bytes(t.added * page),
            bytes(evicted * page),
            bytes(t.removed * page),
            by.join(", ")
        )?;
    }
    if !summary.kills.is_empty() {
        writeln!(out, "\nOOM kills:\n{}", oom::header())?;
        for kill in &summary.kills {
            writeln!(out, "{}", oom::line(kill, clock))?;
        }
    }
    Ok(())
}

fn json_report(
    trace: &Trace,
    summary: &Summary,
    page: u64,
    clock: &Clock,
    started: std::time::SystemTime,
    seconds: f64,
) -> Value {
    let h = &trace.header;
    let cgroups: Vec<Value> = summary
        .cgroups
        .iter()
        .map(|(name, t)| {
            let evicted: serde_json::Map<String, Value> = EVICTION_REASONS
                .iter()
                .map(|r| {
                    let pages = t.evicted.get(reason_name(*r)).copied().unwrap_or(0);
                    (reason_name(*r).to_owned(), json!(pages * page))
                })
                .collect();
            let by: Vec<Value> = t
                .evicted_by
                .iter()
                .map(|(who, pages)| json!({"cgroup": who, "bytes": pages * page}))
                .collect();
            json!({
                "cgroup": name,
                "oom_kills": t.oom_kills,
                "throttle_spans": t.spans.len(),
                "throttled_periods": periods(&t.spans),
                "throttled_ns": t.spans.iter().map(ThrottleSpan::duration_ns).sum::<u64>(),
                "added_bytes": t.added * page,
                "removed_bytes": t.removed * page,
                "evicted_bytes": evicted,
                "evicted_by": by,
            })
        })
        .collect();
    let kills: Vec<Value> = summary.kills.iter().map(|k| oom::json(k, clock)).collect();
    let ending = match trace.ending {
        Ending::Complete => json!({"complete": true}),
        Ending::CutShort { offset, lost_bytes } => {
            json!({"complete": false, "cut_at_offset": offset, "lost_bytes": lost_bytes})
        }
    };
    json!({
        "type": "report",
        "writer": h.writer,
        "hostname": h.hostname,
        "kernel_release": h.kernel_release,
        "start": rfc3339(started),
        "duration_s": seconds,
        "records": trace.records.len(),
        "skipped_records": trace.skipped,
        "ending": ending,
        "losses": summary.stats,
        "cgroups": cgroups,
        "oom_kills": kills,
    })
}
