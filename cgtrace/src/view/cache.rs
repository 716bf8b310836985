//! The page-cache view (`cgtrace cache`) and the rows it shares with the
//! reclaim view: aligned tables per interval, and JSON.

use std::io::{self, Write as _};

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CacheReason, ChargeKind, ReclaimKind},
};
use serde_json::{Map, Value, json};

use super::{
    format::{bytes, rfc3339, tail},
    interval::IntervalContext,
};
use crate::{
    cgroup::stat::MemoryEvents, event::Stall as StallDelta, identity::Identity,
    model::cache::OwnerActivity, model::pressure::Stalled,
};

const NAME_WIDTH: usize = 30;

/// The reasons a page leaves by reclaim, in column order.
pub const EVICTION_REASONS: [CacheReason; 6] = [
    CacheReason::OwnLimit,
    CacheReason::AncestorLimit,
    CacheReason::MemcgLimit,
    CacheReason::Kswapd,
    CacheReason::DirectGlobal,
    CacheReason::Proactive,
];

/// A cgroup as the views print it.
#[must_use]
pub fn cgroup_name(path: Option<&str>, cgroup: Option<CgroupRef>) -> String {
    match (path, cgroup) {
        (Some(path), _) => path.to_owned(),
        (None, Some(c)) => format!("id:{}", c.id),
        (None, None) => "(uncharged)".to_owned(),
    }
}

/// One owner's row, with everything already resolved to names and bytes.
#[derive(Clone, Debug)]
pub struct CacheRow {
    pub name: String,
    /// The owner's workload (`namespace/pod/container` when named).
    pub workload: Identity,
    pub id: Option<u64>,
    /// Page cache charged to it now (kernel figure at first sight plus
    /// what cgtrace counted since), bytes.
    pub owned_bytes: Option<u64>,
    pub activity: OwnerActivity,
    /// Reclaimer names, parallel to `activity.reclaimers`.
    pub reclaimer_names: Vec<String>,
    /// Reclaimer workloads, parallel to `activity.reclaimers`.
    pub reclaimer_workloads: Vec<Identity>,
    /// Where `activity.charges` came from: `memcg_stat_tracepoints` or `memory.stat`.
    pub charges_source: Option<&'static str>,
    /// Memory events in the interval, and the file they were read from.
    pub events: Option<(MemoryEvents, &'static str)>,
    /// Memory pressure in the interval, where the kernel has it for the
    /// cgroup (cgroup v2, or its unified twin on a hybrid host).
    pub pressure: Option<Stalled>,
}

/// A pressure average as the text views show it: `12.3%`, `-` unknown.
#[must_use]
pub fn pressure_cell(stalled: Option<&Stalled>) -> String {
    stalled.map_or_else(
        || "-".to_owned(),
        |s| {
            format!(
                "{}.{}%",
                s.some_avg10_centi / 100,
                s.some_avg10_centi % 100 / 10
            )
        },
    )
}

/// Pressure in an interval as JSON.
#[must_use]
pub fn pressure_json(stalled: &Stalled) -> Value {
    json!({
        "some_stalled_us": stalled.some_us,
        "full_stalled_us": stalled.full_us,
        "some_avg10_percent": f64::from(stalled.some_avg10_centi) / 100.0,
    })
}

#[must_use]
pub fn cache_header() -> String {
    format!(
        "{:<w$} {:>8} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:<14} TOP RECLAIMER",
        "CGROUP",
        "CACHE",
        "MEM.PSI",
        "ADDED/s",
        "EVICTED/s",
        "OWN-LIM",
        "ANCESTOR",
        "MEMCG",
        "KSWAPD",
        "DIRECT",
        "PROACT",
        "REMOVED/s",
        "BY-OTHER",
        "CHARGED/s",
        "UNCHRG/s",
        "REFAULT/s",
        "EVENTS",
        w = NAME_WIDTH
    )
}

/// Memory events as a short note: `max:3,oom_kill:1`; `-` when none.
#[must_use]
pub fn events_note(events: Option<&(MemoryEvents, &'static str)>) -> String {
    let Some((e, _)) = events else {
        return "?".to_owned();
    };
    let parts: Vec<String> = [
        ("high", e.high),
        ("max", e.max),
        ("oom", e.oom),
        ("oom_kill", e.oom_kill),
    ]
    .into_iter()
    .filter_map(|(name, count)| count.filter(|c| *c > 0).map(|c| format!("{name}:{c}")))
    .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

#[must_use]
pub fn cache_line(row: &CacheRow, seconds: f64, page_size: u64) -> String {
    let rate = |pages: u64| per_second(pages * page_size, seconds);
    let total = |pages: u64| bytes(pages * page_size);
    let a = &row.activity;
    let top = a
        .reclaimers
        .first()
        .map_or_else(String::new, |(_, reason, pages)| {
            format!(
                "{} ({}, {})",
                row.reclaimer_names
                    .first()
                    .zip(row.reclaimer_workloads.first())
                    .map_or_else(
                        || "?".to_owned(),
                        |(name, w)| crate::text::printable(&w.label(name)).into_owned()
                    ),
                reason.name(),
                total(*pages)
            )
        });
    let (charged, uncharged) = a.charge_totals().map_or_else(
        || ("?".to_owned(), "?".to_owned()),
        |(c, u)| (rate(c), rate(u)),
    );
    let refaults = a.charges.map_or_else(
        || "?".to_owned(),
        |c| {
            let pages =
                c[ChargeKind::RefaultAnon as usize].0 + c[ChargeKind::RefaultFile as usize].0;
            rate(pages)
        },
    );
    format!(
        "{:<w$} {:>8} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:<14} {}",
        tail(&row.workload.label(&row.name), NAME_WIDTH),
        row.owned_bytes.map_or_else(|| "?".to_owned(), bytes),
        pressure_cell(row.pressure.as_ref()),
        rate(a.added),
        rate(a.evicted_total()),
        total(a.evicted[CacheReason::OwnLimit as usize]),
        total(a.evicted[CacheReason::AncestorLimit as usize]),
        total(a.evicted[CacheReason::MemcgLimit as usize]),
        total(a.evicted[CacheReason::Kswapd as usize]),
        total(a.evicted[CacheReason::DirectGlobal as usize]),
        total(a.evicted[CacheReason::Proactive as usize]),
        rate(a.removed),
        total(a.evicted_by_others),
        charged,
        uncharged,
        refaults,
        events_note(row.events.as_ref()),
        top,
        w = NAME_WIDTH
    )
}

/// Charges by memory type, refaults and memory events of a row, as JSON.
#[must_use]
pub fn activity_json(row: &CacheRow, page_size: u64) -> (Value, Value, Value) {
    let charges = row.activity.charges.map_or(Value::Null, |c| {
        let mut map = Map::new();
        map.insert("source".into(), json!(row.charges_source));
        for kind in [ChargeKind::Anon, ChargeKind::File, ChargeKind::Shmem, ChargeKind::Kernel, ChargeKind::Sock] {
            let (charged, uncharged) = c[kind as usize];
            map.insert(
                kind.name().into(),
                json!({"charged_bytes": charged * page_size, "uncharged_bytes": uncharged * page_size}),
            );
        }
        Value::Object(map)
    });
    let refaults = row.activity.charges.map_or(Value::Null, |c| {
        json!({
            "source": row.charges_source,
            "anon_pages": c[ChargeKind::RefaultAnon as usize].0,
            "file_pages": c[ChargeKind::RefaultFile as usize].0,
        })
    });
    let events = row.events.as_ref().map_or(Value::Null, |(e, source)| {
        json!({"source": source, "high": e.high, "max": e.max, "oom": e.oom, "oom_kill": e.oom_kill})
    });
    (charges, refaults, events)
}

fn per_second(value: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".to_owned();
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "display rounding"
    )]
    let rate = (value as f64 / seconds).round() as u64;
    bytes(rate)
}

/// The JSON object of one owner's row.
#[must_use]
pub fn cache_json(row: &CacheRow, page_size: u64) -> Value {
    let a = &row.activity;
    let mut evicted = Map::new();
    for reason in EVICTION_REASONS {
        evicted.insert(
            reason.name().into(),
            json!(a.evicted[reason as usize] * page_size),
        );
    }
    let reclaimers: Vec<Value> = a
        .reclaimers
        .iter()
        .zip(row.reclaimer_names.iter().zip(&row.reclaimer_workloads))
        .map(|((_, reason, pages), (name, workload))| {
            json!({"cgroup": name, "workload": workload.to_json(), "reason": reason.name(), "bytes": pages * page_size})
        })
        .collect();
    let (charges, refaults, events) = activity_json(row, page_size);
    let mut value = json!({
        "cgroup": row.name,
        "workload": row.workload.to_json(),
        "id": row.id,
        "owned_bytes": row.owned_bytes,
        "charges": charges,
        "refaults": refaults,
        "memory_events": events,
        "added_bytes": a.added * page_size,
        "removed_bytes": a.removed * page_size,
        "evicted_bytes": evicted,
        "evicted_total_bytes": a.evicted_total() * page_size,
        "evicted_by_others_bytes": a.evicted_by_others * page_size,
        "reclaimers": reclaimers,
    });
    if let Some(pressure) = &row.pressure {
        value["memory_pressure"] = pressure_json(pressure);
    }
    value
}

/// One file's page-cache activity in an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRow {
    pub dev: u32,
    pub ino: u64,
    pub path: Option<String>,
    pub added: u64,
    pub evicted: u64,
    pub removed: u64,
}

#[must_use]
pub fn file_line(file: &FileRow, page_size: u64) -> String {
    format!(
        "    file {}:{} {}  added {}, evicted {}, removed {}",
        crate::cgroup::files::device_name(file.dev),
        file.ino,
        file.path.as_deref().unwrap_or("(not open in the cgroup)"),
        bytes(file.added * page_size),
        bytes(file.evicted * page_size),
        bytes(file.removed * page_size)
    )
}

#[must_use]
pub fn file_json(file: &FileRow, page_size: u64) -> Value {
    json!({
        "dev": crate::cgroup::files::device_name(file.dev),
        "ino": file.ino,
        "path": file.path,
        "added_bytes": file.added * page_size,
        "evicted_bytes": file.evicted * page_size,
        "removed_bytes": file.removed * page_size,
    })
}

/// A stall row with its name resolved.
pub struct StallRow<'a> {
    pub name: String,
    pub workload: Identity,
    pub stall: &'a StallDelta,
}

#[must_use]
pub fn stall_header() -> String {
    format!(
        "{:<w$} {:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "CGROUP",
        "KIND",
        "STALLS",
        "TOTAL",
        "P50",
        "P99",
        "MAX",
        "SCANNED",
        "RECLAIMED",
        "DIRTY",
        "WRITEBACK",
        w = NAME_WIDTH
    )
}

/// Nanoseconds for people: `850ns`, `12.5µs`, `3.2ms`, `1.25s`.
#[must_use]
pub fn duration(ns: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display rounding")]
    let value = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", value / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", value / 1e6)
    } else {
        format!("{:.2}s", value / 1e9)
    }
}

#[must_use]
pub fn stall_line(row: &StallRow<'_>, page_size: u64) -> String {
    let timed = row.stall.kind != ReclaimKind::Background;
    let kind = row.stall.kind;
    let s = &row.stall.stats;
    let show = |ns: Option<u64>| {
        ns.filter(|_| timed)
            .map_or_else(|| "-".to_owned(), duration)
    };
    format!(
        "{:<w$} {:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
        tail(&row.workload.label(&row.name), NAME_WIDTH),
        kind.name(),
        if timed {
            s.count.to_string()
        } else {
            "-".to_owned()
        },
        show(Some(s.total_ns)),
        show(s.quantile_ns(0.5)),
        show(s.quantile_ns(0.99)),
        show(Some(s.max_ns)),
        bytes(s.scanned * page_size),
        bytes(s.reclaimed * page_size),
        bytes(s.dirty * page_size),
        bytes(s.writeback * page_size),
        w = NAME_WIDTH
    )
}

#[must_use]
pub fn stall_json(row: &StallRow<'_>, page_size: u64) -> Value {
    let s = &row.stall.stats;
    json!({
        "cgroup": row.name,
        "workload": row.workload.to_json(),
        "kind": row.stall.kind.name(),
        "count": s.count,
        "total_ns": s.total_ns,
        "p50_ns": s.quantile_ns(0.5),
        "p99_ns": s.quantile_ns(0.99),
        "max_ns": s.max_ns,
        "scanned_bytes": s.scanned * page_size,
        "reclaimed_bytes": s.reclaimed * page_size,
        "dirty_bytes": s.dirty * page_size,
        "writeback_bytes": s.writeback * page_size,
    })
}

/// Files listed per cgroup with `--files`.
const FILES_PER_CGROUP: usize = 3;

/// The `cache` view: each interval's busiest cgroups as a table or a JSON
/// object, with `--files` their busiest files.
pub struct CacheTable {
    top: usize,
    files: bool,
    json: bool,
    header_printed: bool,
}

impl CacheTable {
    #[must_use]
    pub fn new(top: usize, files: bool, json: bool) -> Self {
        Self {
            top,
            files,
            json,
            header_printed: false,
        }
    }

    /// Prints one interval.
    pub fn render(&mut self, context: &mut IntervalContext<'_>) -> io::Result<()> {
        let rows = context.rows(self.top);
        let files: Vec<Vec<FileRow>> = if self.files {
            rows.iter().map(|row| file_rows(context, row)).collect()
        } else {
            Vec::new()
        };
        let mut out = crate::text::stdout();
        let time = rfc3339(context.clock.wall_time(context.interval.end_ns));
        if self.json {
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
            if !self.header_printed {
                writeln!(out, "{}", cache_header())?;
                self.header_printed = true;
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
    }
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

#[cfg(test)]
mod tests {
    use cgtrace_common::pagecache::{CACHE_REASONS, CacheReason};

    use super::{CacheRow, cache_header, cache_json, cache_line, duration};
    use crate::{identity::Identity, model::cache::OwnerActivity};

    #[test]
    fn renders_rows() {
        let mut evicted = [0; CACHE_REASONS];
        evicted[CacheReason::AncestorLimit as usize] = 256;
        let row = CacheRow {
            name: "/noisy/a".into(),
            workload: Identity::unnamed("/noisy/a"),
            id: Some(7),
            owned_bytes: Some(64 << 20),
            activity: OwnerActivity {
                owner: None,
                added: 512,
                removed: 0,
                evicted,
                evicted_by_others: 256,
                reclaimers: vec![(None, CacheReason::AncestorLimit, 256)],
                charges: None,
            },
            reclaimer_names: vec!["/noisy/b".into()],
            reclaimer_workloads: vec![Identity::unnamed("/noisy/b")],
            charges_source: None,
            events: None,
            pressure: None,
        };
        let line = cache_line(&row, 2.0, 4096);
        // Right-aligned: the value ends where its header ends.
        assert_eq!(
            line.find("64M").unwrap() + "64M".len(),
            cache_header().find("CACHE").unwrap() + "CACHE".len()
        );
        assert!(line.contains("/noisy/b (ancestor_limit, 1M)"), "{line}");
        let value = cache_json(&row, 4096);
        assert_eq!(value["evicted_bytes"]["ancestor_limit"], 1 << 20);
        assert_eq!(value["evicted_by_others_bytes"], 1 << 20);
        assert_eq!(value["reclaimers"][0]["cgroup"], "/noisy/b");
        assert_eq!(value["reclaimers"][0]["workload"]["kind"], "cgroup");
        assert_eq!(value["workload"]["kind"], "cgroup");
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(12_500), "12.5µs");
        assert_eq!(duration(1_250_000_000), "1.25s");
    }
}
