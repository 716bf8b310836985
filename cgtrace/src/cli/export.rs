//! `cgtrace export FILE --format jsonl|chrome-trace`: a trace as JSON lines
//! (one object per record, the live views' schema), or as Chrome trace-event
//! JSON, which Perfetto UI and chrome://tracing open: throttle spans as
//! slices per cgroup and CPU, OOM kills as instant events, page-cache
//! evictions and memory usage as counters.

use std::{
    collections::HashMap,
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::Outcome;
use crate::identity::selection::{SelectArgs, Selection};
use crate::{
    cgroup::stat::MemoryEvents,
    event::Stall as StallDelta,
    system::Clock,
    trace::{file::Ending, record::TraceRecord},
    view::{
        cache::{StallRow, cgroup_name, charge_name, reason_name, stall_json},
        format::rfc3339,
        oom, throttle,
    },
};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The trace file.
    pub file: PathBuf,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Where to write (default: standard output).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per record.
    Jsonl,
    /// Chrome trace-event JSON (Perfetto UI, chrome://tracing).
    ChromeTrace,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<Outcome> {
    let trace = super::open_trace(&args.file)?;
    if let Ending::CutShort { offset, lost_bytes } = trace.ending {
        crate::note!(
            "cgtrace: the trace was cut short at byte {offset} ({lost_bytes} bytes lost); exporting what was recorded"
        );
    }
    let clock = Clock::from_boot_time(trace.header.boot_time_ns);
    let names = trace.cgroup_names();
    let name = |cgroup: Option<cgtrace_common::cgroup::CgroupRef>| cgroup.map(|c| names.name(c));
    let mut selection = Selection::new(&SelectArgs::default())?;
    selection.learn_from(&trace.records);
    let text = match args.format {
        ExportFormat::Jsonl => {
            let mut out = String::new();
            for record in &trace.records {
                let value = jsonl(
                    record,
                    &clock,
                    trace.header.page_size,
                    &name,
                    &mut selection,
                );
                out.push_str(&value.to_string());
                out.push('\n');
            }
            out
        }
        ExportFormat::ChromeTrace => {
            chrome_trace(&trace.records, trace.header.page_size, &name).to_string()
        }
    };
    if let Some(path) = &args.output {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(Outcome::Success);
    }
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Outcome::Success),
        other => other.map(|()| Outcome::Success).map_err(Into::into),
    }
}

/// A recorded stall, as the reclaim view's JSON shows it.
fn stall_record(
    stall: &StallDelta,
    path: String,
    end_ns: u64,
    clock: &Clock,
    page: u64,
    selection: &mut Selection,
) -> Value {
    let mut value = stall_json(
        &StallRow {
            workload: selection.identify(&path),
            name: path,
            stall,
        },
        page,
    );
    value["type"] = json!("stall");
    value["time"] = json!(rfc3339(clock.wall_time(end_ns)));
    value
}

fn jsonl(
    record: &TraceRecord,
    clock: &Clock,
    page: u64,
    name: &impl Fn(Option<cgtrace_common::cgroup::CgroupRef>) -> Option<String>,
    selection: &mut Selection,
) -> Value {
    match record {
        TraceRecord::CgroupName { cgroup, path } => {
            json!({"type": "cgroup", "hierarchy": cgroup.hierarchy, "id": cgroup.id, "path": path})
        }
        TraceRecord::WorkloadNames {
            path,
            namespace,
            pod,
            container,
        } => {
            json!({"type": "workload", "path": path, "namespace": namespace, "pod": pod, "container": container})
        }
        TraceRecord::OomKill(kill) => oom::json(kill, clock, &mut |p| selection.identify(p)),
        TraceRecord::Throttle(span) => {
            let mut span = span.clone();
            span.cgroup = name(span.cgroup_ref);
            let workload = selection.identify(span.cgroup.as_deref().unwrap_or_default());
            throttle::span_json(&span, clock, &workload)
        }
        TraceRecord::CacheFlow {
            end_ns,
            owner,
            actor,
            reason,
            pages,
        } => json!({
            "type": "cache_flow",
            "time": rfc3339(clock.wall_time(*end_ns)),
            "owner": name(*owner),
            "actor": name(*actor),
            "reason": reason_name(*reason),
            "bytes": pages * page,
        }),
        TraceRecord::Stats {
            monotonic_ns,
            stats,
        } => {
            json!({"type": "stats", "time": rfc3339(clock.wall_time(*monotonic_ns)), "final": true, "probe": stats})
        }
        TraceRecord::Stall {
            end_ns,
            cgroup,
            kind,
            stats,
        } => {
            let stall = StallDelta {
                cgroup: *cgroup,
                kind: *kind,
                stats: stats.clone(),
            };
            let path = cgroup_name(name(*cgroup).as_deref(), *cgroup);
            stall_record(&stall, path, *end_ns, clock, page, selection)
        }
        TraceRecord::Charge {
            end_ns,
            cgroup,
            kind,
            charged,
            uncharged,
        } => {
            // Refaults are counts of pages; the memory kinds are page charges.
            json!({
                "type": "charge",
                "time": rfc3339(clock.wall_time(*end_ns)),
                "cgroup": name(*cgroup),
                "kind": charge_name(*kind),
                "charged_pages": charged,
                "uncharged_pages": uncharged,
            })
        }
        TraceRecord::Memory {
            end_ns,
            cgroup,
            sample,
        } => {
            let events = sample.events.map(|(e, version)| {
                json!({"source": MemoryEvents::source(version), "high": e.high, "max": e.max, "oom": e.oom, "oom_kill": e.oom_kill})
            });
            json!({
                "type": "memory",
                "time": rfc3339(clock.wall_time(*end_ns)),
                "cgroup": name(Some(*cgroup)),
                "usage_bytes": sample.usage_bytes,
                "limit_bytes": sample.limit_bytes,
                "page_cache_bytes": sample.page_cache_bytes,
                "memory_events": events,
            })
        }
        TraceRecord::Interval {
            start_ns,
            end_ns,
            charges_from,
        } => json!({
            "type": "interval",
            "start": rfc3339(clock.wall_time(*start_ns)),
            "time": rfc3339(clock.wall_time(*end_ns)),
            "charges_source": charges_from.name(),
        }),
    }
}

/// Chrome trace-event JSON: one "process" per cgroup, one "thread" per CPU.
fn chrome_trace(
    records: &[TraceRecord],
    page: u64,
    name: &impl Fn(Option<cgtrace_common::cgroup::CgroupRef>) -> Option<String>,
) -> Value {
    let mut pids: HashMap<String, u64> = HashMap::new();
    let mut events = Vec::new();
    let mut pid_of = |cgroup: String, events: &mut Vec<Value>| -> u64 {
        let next = pids.len() as u64 + 1;
        *pids.entry(cgroup.clone()).or_insert_with(|| {
            events.push(
                json!({"ph": "M", "name": "process_name", "pid": next, "args": {"name": cgroup}}),
            );
            next
        })
    };
    let micros = |ns: u64| ns / 1000;
    for record in records {
        match record {
            TraceRecord::Throttle(span) => {
                let pid = pid_of(
                    name(span.cgroup_ref).unwrap_or_else(|| "?".into()),
                    &mut events,
                );
                events.push(json!({
                    "ph": "X", "name": "throttled", "cat": "cpu",
                    "pid": pid, "tid": span.cpu,
                    "ts": micros(span.start_ns), "dur": micros(span.duration_ns()),
                    "args": {"ran_out_by": format!("{}[{}]", span.comm, span.pid)},
                }));
            }
            TraceRecord::OomKill(kill) => {
                let cgroup = kill
                    .victim
                    .cgroup
                    .clone()
                    .or_else(|| name(kill.victim.cgroup_ref));
                let pid = pid_of(cgroup.unwrap_or_else(|| "?".into()), &mut events);
                events.push(json!({
                    "ph": "i", "s": "p", "name": format!("OOM kill {}[{}]", kill.victim.comm, kill.victim.pid),
                    "cat": "memory", "pid": pid, "tid": 0, "ts": micros(kill.monotonic_ns),
                    "args": {"limit_bytes": kill.oom_memcg.as_ref().and_then(|m| m.limit_bytes)},
                }));
            }
            TraceRecord::CacheFlow {
                end_ns,
                owner,
                reason,
                pages,
                ..
            } if reason.is_reclaim() => {
                let pid = pid_of(
                    name(*owner).unwrap_or_else(|| "(uncharged)".into()),
                    &mut events,
                );
                events.push(json!({
                    "ph": "C", "name": "page cache evicted (bytes)", "pid": pid, "ts": micros(*end_ns),
                    "args": {reason_name(*reason): pages * page},
                }));
            }
            TraceRecord::Memory {
                end_ns,
                cgroup,
                sample,
            } => {
                let pid = pid_of(
                    name(Some(*cgroup)).unwrap_or_else(|| "?".into()),
                    &mut events,
                );
                events.push(json!({
                    "ph": "C", "name": "memory (bytes)", "pid": pid, "ts": micros(*end_ns),
                    "args": {"usage": sample.usage_bytes, "page cache": sample.page_cache_bytes},
                }));
            }
            _ => {}
        }
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}
