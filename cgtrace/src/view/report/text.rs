//! The text and JSON forms of `cgtrace report`: the trace's provenance and
//! losses, then per cgroup its memory (usage, OOM kills, page cache added,
//! evicted by reason and by whom, reclaim stalls, refaults) and its CPU
//! throttling, then every OOM kill.

use std::{collections::HashMap, io, time::SystemTime};

use cgtrace_common::pagecache::ChargeKind;
use serde_json::{Value, json};

use super::summary::{CgroupSummary, Summary};
use crate::{
    identity::Identity,
    model::pressure::{PressureFacts, Stalled},
    system::Clock,
    trace::{
        file::{Ending, TraceInfo},
        record::ChargesFrom,
    },
    view::{
        cache::{EVICTION_REASONS, duration},
        format::{bytes, rfc3339, tail},
        oom,
    },
};

/// What the report needs besides the summary.
pub struct Context<'a> {
    pub trace: &'a TraceInfo,
    pub summary: &'a Summary,
    pub page: u64,
    /// The recorder's clock: monotonic times in records become wall-clock times.
    pub clock: Clock,
    pub started: SystemTime,
    /// The workload of every cgroup the report names, by path.
    identities: HashMap<String, Identity>,
}

impl<'a> Context<'a> {
    /// `identify` names the cgroups (from the trace's recorded names).
    #[must_use]
    pub fn new(
        trace: &'a TraceInfo,
        summary: &'a Summary,
        identify: &mut dyn FnMut(&str) -> Identity,
    ) -> Self {
        let paths = summary
            .cgroups
            .iter()
            .flat_map(|(path, c)| {
                std::iter::once(path).chain(c.evicted_by.iter().map(|(who, _)| who))
            })
            .chain(summary.kills.iter().flat_map(|k| {
                [
                    k.victim.cgroup.as_ref(),
                    k.oom_memcg.as_ref().and_then(|m| m.path.as_ref()),
                    k.trigger.as_ref().and_then(|t| t.cgroup.as_ref()),
                ]
                .into_iter()
                .flatten()
            }));
        let identities = paths.map(|p| (p.clone(), identify(p))).collect();
        Self {
            trace,
            summary,
            page: trace.header.page_size.max(1),
            clock: Clock::from_boot_time(trace.header.boot_time_ns),
            started: std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos(trace.header.start_wall_ns),
            identities,
        }
    }

    /// The cgroup at `path` as the report prints it (`namespace/pod/container`
    /// where known).
    #[must_use]
    pub fn label(&self, path: &str) -> String {
        self.identity(path).label(path)
    }

    #[must_use]
    pub fn identity(&self, path: &str) -> Identity {
        self.identities
            .get(path)
            .cloned()
            .unwrap_or_else(|| Identity::unnamed(path))
    }
}

/// How the trace ended, in words.
#[must_use]
pub fn ending_text(ending: Ending) -> String {
    match ending {
        Ending::Complete => "complete".to_owned(),
        Ending::CutShort { offset, lost_bytes } => format!(
            "CUT SHORT at byte {offset} ({lost_bytes} bytes of an unfinished chunk lost): the recorder was killed or the disk filled"
        ),
    }
}

/// The losses line.
#[must_use]
pub fn losses_text(summary: &Summary) -> String {
    summary.stats.map_or_else(
        || "unknown (the trace ends before the recorder's final counters)".to_owned(),
        |s| {
            format!(
                "{} ring-buffer drops, {} recursion misses, {} read failures, {} map-full",
                s.ring_buffer_drops, s.recursion_misses, s.read_failures, s.map_full
            )
        },
    )
}

fn opt_bytes(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), bytes)
}

/// Memory rows: cgroups with usage, page-cache activity, stalls or kills.
pub fn memory_rows(summary: &Summary) -> impl Iterator<Item = (&String, &CgroupSummary)> {
    summary
        .cgroups
        .iter()
        .filter(|(_, c)| c.has_memory_activity())
}

/// The memory table's columns, shared by the text and HTML reports.
pub const MEMORY_COLUMNS: [&str; 11] = [
    "PEAK",
    "LIMIT",
    "OOM",
    "ADDED",
    "EVICTED",
    "REMOVED",
    "REFAULT",
    "STALLS",
    "STALL.P99",
    "STALL.MAX",
    "EVICTED BY",
];

/// One cgroup's cells of the memory table; `label` names the evicting cgroups.
#[must_use]
pub fn memory_cells(c: &CgroupSummary, page: u64, label: &dyn Fn(&str) -> String) -> [String; 11] {
    let stalls = c.all_stalls().filter(|s| s.count > 0);
    let by: Vec<String> = c
        .evicted_by
        .iter()
        .map(|(who, pages)| {
            let who = label(who);
            format!("{} {}", crate::text::printable(&who), bytes(pages * page))
        })
        .collect();
    [
        opt_bytes(c.peak_usage()),
        opt_bytes(c.limit_bytes),
        c.oom_kills.to_string(),
        bytes(c.added * page),
        bytes(c.evicted_total() * page),
        bytes(c.removed * page),
        bytes(c.charges[ChargeKind::RefaultFile as usize].0 * page),
        stalls.as_ref().map_or(0, |s| s.count).to_string(),
        stalls
            .as_ref()
            .and_then(|s| s.quantile_ns(0.99))
            .map_or_else(|| "-".to_owned(), duration),
        stalls
            .as_ref()
            .map_or_else(|| "-".to_owned(), |s| duration(s.max_ns)),
        by.join(", "),
    ]
}

/// The CPU table's columns.
pub const CPU_COLUMNS: [&str; 4] = ["THROTTLED", "SPANS", "THR.TIME", "MAX.SPAN"];

/// One cgroup's cells of the CPU table.
#[must_use]
pub fn cpu_cells(c: &CgroupSummary) -> [String; 4] {
    [
        c.throttled_periods().to_string(),
        c.throttle.spans.to_string(),
        duration(c.throttled_ns()),
        duration(c.throttle.max_ns),
    ]
}

/// Cgroups that were throttled.
pub fn cpu_rows(summary: &Summary) -> impl Iterator<Item = (&String, &CgroupSummary)> {
    summary.cgroups.iter().filter(|(_, c)| c.throttle.spans > 0)
}

pub fn text(out: &mut impl io::Write, cx: &Context<'_>) -> io::Result<()> {
    let (h, summary, page) = (&cx.trace.header, cx.summary, cx.page);
    writeln!(
        out,
        "trace: {} on {} (Linux {}), from {} for {:.1} s, {} records; {}",
        // A trace file is input like any other: its words are shown.
        crate::text::printable(&h.writer),
        crate::text::printable(&h.hostname),
        crate::text::printable(&h.kernel_release),
        rfc3339(cx.started),
        summary.seconds(),
        cx.trace.records,
        ending_text(cx.trace.ending)
    )?;
    writeln!(out, "losses: {}", losses_text(summary))?;
    let memory_line = |name: &str, cells: &[String]| {
        format!(
            "{:<36} {:>8} {:>8} {:>4} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9}  {}",
            tail(name, 36),
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9],
            cells[10]
        )
    };
    let header = MEMORY_COLUMNS.map(str::to_owned);
    writeln!(out, "\n{}", memory_line("MEMORY", &header))?;
    for (name, c) in memory_rows(summary) {
        let cells = memory_cells(c, page, &|who| cx.label(who));
        writeln!(out, "{}", memory_line(&cx.label(name), &cells))?;
    }
    let cpu_line = |name: &str, cells: &[String]| {
        format!(
            "{:<36} {:>9} {:>7} {:>9} {:>9}",
            tail(name, 36),
            cells[0],
            cells[1],
            cells[2],
            cells[3]
        )
    };
    if cpu_rows(summary).next().is_some() {
        writeln!(
            out,
            "\n{}",
            cpu_line("CPU", &CPU_COLUMNS.map(str::to_owned))
        )?;
        for (name, c) in cpu_rows(summary) {
            writeln!(out, "{}", cpu_line(&cx.label(name), &cpu_cells(c)))?;
        }
    }
    pressure_text(out, cx)?;
    if !summary.kills.is_empty() {
        writeln!(out, "\nOOM kills:\n{}", oom::header())?;
        for kill in &summary.kills {
            writeln!(
                out,
                "{}",
                oom::line(kill, &cx.clock, &mut |p| cx.identity(p))
            )?;
        }
    }
    Ok(())
}

/// Cgroups whose pressure files were recorded.
pub fn pressure_rows(
    summary: &Summary,
) -> impl Iterator<Item = (&String, &CgroupSummary, &PressureFacts)> {
    summary
        .cgroups
        .iter()
        .filter_map(|(name, c)| Some((name, c, c.pressure.as_ref()?)))
}

/// One resource's stalls as `some 1.2s / full 0.3s, avg10 max 12.3%`.
fn stalled_text(stalled: Option<&Stalled>) -> String {
    let Some(s) = stalled else {
        return "-".to_owned();
    };
    let full = s.full_us.map_or_else(String::new, |full| {
        format!(" / full {}", duration(full * 1000))
    });
    format!("some {}{full}", duration(s.some_us * 1000))
}

/// The pressure section: time stalled on memory, CPU and I/O per cgroup
/// (only where the trace has pressure samples: cgroup v2).
fn pressure_text(out: &mut impl io::Write, cx: &Context<'_>) -> io::Result<()> {
    if pressure_rows(cx.summary).next().is_none() {
        return Ok(());
    }
    let line = |name: &str, cells: [String; 3]| {
        format!(
            "{:<36} {:<28} {:<28} {:<28}",
            tail(name, 36),
            cells[0],
            cells[1],
            cells[2]
        )
    };
    writeln!(
        out,
        "\n{}",
        line(
            "PRESSURE (stalled)",
            ["MEMORY".into(), "CPU".into(), "IO".into()]
        )
    )?;
    for (name, _, p) in pressure_rows(cx.summary) {
        let cells = [
            stalled_text(p.memory.as_ref()),
            stalled_text(p.cpu.as_ref()),
            stalled_text(p.io.as_ref()),
        ];
        writeln!(out, "{}", line(&cx.label(name), cells))?;
    }
    Ok(())
}

/// A cgroup's pressure over the trace, as JSON.
fn pressure_json(p: &PressureFacts) -> Value {
    let resource = |s: Option<&Stalled>| {
        s.map(|s| json!({"some_stalled_us": s.some_us, "full_stalled_us": s.full_us}))
    };
    json!({
        "memory": resource(p.memory.as_ref()),
        "cpu": resource(p.cpu.as_ref()),
        "io": resource(p.io.as_ref()),
    })
}

fn cgroup_json(cx: &Context<'_>, name: &str, c: &CgroupSummary) -> Value {
    let page = cx.page;
    let evicted: serde_json::Map<String, Value> = EVICTION_REASONS
        .iter()
        .map(|r| {
            let pages = c.evicted[*r as usize];
            (r.name().to_owned(), json!(pages * page))
        })
        .collect();
    let by: Vec<Value> = c
        .evicted_by
        .iter()
        .map(|(who, pages)| {
            json!({"cgroup": who, "workload": cx.identity(who).to_json(), "bytes": pages * page})
        })
        .collect();
    let stalls: Vec<Value> = c
        .stalls
        .iter()
        .map(|(kind, s)| {
            let s = s.expand();
            json!({
                "kind": kind.name(),
                "count": s.count,
                "total_ns": s.total_ns,
                "p50_ns": s.quantile_ns(0.5),
                "p99_ns": s.quantile_ns(0.99),
                "max_ns": s.max_ns,
                "scanned_bytes": s.scanned * page,
                "reclaimed_bytes": s.reclaimed * page,
            })
        })
        .collect();
    let charges: serde_json::Map<String, Value> = ChargeKind::ALL
        .iter()
        .map(|kind| {
            let (charged, uncharged) = c.charges[*kind as usize];
            (
                kind.name().to_owned(),
                json!({"charged_pages": charged, "uncharged_pages": uncharged}),
            )
        })
        .collect();
    let mut value = json!({
        "cgroup": name,
        "workload": cx.identity(name).to_json(),
        "oom_kills": c.oom_kills,
        "throttle_spans": c.throttle.spans,
        "throttled_periods": c.throttled_periods(),
        "throttled_ns": c.throttled_ns(),
        "peak_usage_bytes": c.peak_usage(),
        "limit_bytes": c.limit_bytes,
        "memory_events": c.events,
        "added_bytes": c.added * page,
        "removed_bytes": c.removed * page,
        "evicted_bytes": evicted,
        "evicted_by": by,
        "stalls": stalls,
        "charges": charges,
    });
    // Only where the trace has pressure samples (cgroup v2).
    if let Some(pressure) = &c.pressure {
        value["pressure"] = pressure_json(pressure);
    }
    value
}

/// Writes the report as one JSON object, a cgroup at a time (the same
/// bytes as serialising it whole, without holding it whole).
pub fn write_json(out: &mut impl io::Write, cx: &Context<'_>) -> io::Result<()> {
    let (h, summary) = (&cx.trace.header, cx.summary);
    let ending = match cx.trace.ending {
        Ending::Complete => json!({"complete": true}),
        Ending::CutShort { offset, lost_bytes } => {
            json!({"complete": false, "cut_at_offset": offset, "lost_bytes": lost_bytes})
        }
    };
    let head = json!({
        "type": "report",
        "writer": h.writer,
        "hostname": h.hostname,
        "kernel_release": h.kernel_release,
        "start": rfc3339(cx.started),
        "duration_s": summary.seconds(),
        "records": cx.trace.records,
        "skipped_records": cx.trace.skipped,
        "intervals": summary.intervals,
        "charges_source": summary.charges_from.and_then(ChargesFrom::name),
        "ending": ending,
        "losses": summary.stats,
    })
    .to_string();
    // The object without its closing brace, then the two arrays.
    out.write_all(&head.as_bytes()[..head.len() - 1])?;
    out.write_all(b",\"cgroups\":[")?;
    for (index, (name, c)) in summary.cgroups.iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &cgroup_json(cx, name, c))?;
    }
    out.write_all(b"],\"oom_kills\":[")?;
    for (index, kill) in summary.kills.iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        let value = oom::json(kill, &cx.clock, &mut |p| cx.identity(p));
        serde_json::to_writer(&mut *out, &value)?;
    }
    out.write_all(b"]}\n")
}
