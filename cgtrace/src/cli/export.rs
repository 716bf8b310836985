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
use crate::{
    cgroup::stat::MemoryEvents,
    event::{Event, ProbeCounters, Stall},
    identity::selection::{SelectArgs, Selection},
    model::memory::{MemoryFacts, MemoryModel},
    session::{self, Context, End, Flow, Sink, TraceSource},
    system::Clock,
    trace::{file::Ending, record::ChargesFrom},
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
    let mut source = TraceSource::open(&args.file)?;
    let header = source.header().clone();
    let mut cx = Context::new(
        Selection::new(&SelectArgs::default())?,
        Clock::from_boot_time(header.boot_time_ns),
        header.page_size,
    );
    source.learn_names(&mut cx)?;
    let mut export = Export {
        format: args.format,
        out: String::new(),
        memory: MemoryModel::new(header.page_size),
        charges_from: None,
        chrome: ChromeTrace::default(),
    };
    let end = session::run(&mut source, &mut cx, &mut [&mut export])?;
    if let Some(Ending::CutShort { offset, lost_bytes }) = end.ending {
        crate::note!(
            "cgtrace: the trace was cut short at byte {offset} ({lost_bytes} bytes lost); exporting what was recorded"
        );
    }
    let text = match args.format {
        ExportFormat::Jsonl => export.out,
        ExportFormat::ChromeTrace => export.chrome.finish().to_string(),
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

/// The export sink: each event as the lines (or trace events) it makes.
/// The page cache a cgroup owns and its counters' changes come from the
/// same model the views use.
struct Export {
    format: ExportFormat,
    out: String,
    memory: MemoryModel,
    /// Where the open interval's charges come from.
    charges_from: Option<ChargesFrom>,
    chrome: ChromeTrace,
}

impl Sink for Export {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        let facts = match event {
            Event::Counters(counters) => {
                self.memory.counters(counters);
                self.charges_from = Some(if counters.charges.is_some() {
                    ChargesFrom::Tracepoints
                } else {
                    ChargesFrom::MemoryStat
                });
                None
            }
            Event::Memory(sample) => Some(self.memory.sample(sample)),
            _ => None,
        };
        match self.format {
            ExportFormat::Jsonl => {
                for value in jsonl(event, facts.as_ref(), self.charges_from, cx) {
                    self.out.push_str(&value.to_string());
                    self.out.push('\n');
                }
            }
            ExportFormat::ChromeTrace => self.chrome.add(event, facts.as_ref(), cx),
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A recorded stall, as the reclaim view's JSON shows it.
fn stall_record(stall: &Stall, end_ns: u64, cx: &mut Context) -> Value {
    let path = cgroup_name(stall.cgroup.and_then(|c| cx.names.path(c)), stall.cgroup);
    let mut value = stall_json(
        &StallRow {
            workload: cx.selection.identify(&path),
            name: path,
            stall,
        },
        cx.page_size,
    );
    value["type"] = json!("stall");
    value["time"] = json!(rfc3339(cx.clock.wall_time(end_ns)));
    value
}

/// The JSON lines of one event.
fn jsonl(
    event: &Event,
    facts: Option<&MemoryFacts>,
    charges_from: Option<ChargesFrom>,
    cx: &mut Context,
) -> Vec<Value> {
    let name = |cx: &Context, cgroup: Option<cgtrace_common::cgroup::CgroupRef>| {
        cgroup.map(|c| cx.names.name(c))
    };
    match event {
        Event::CgroupCreated(named) | Event::CgroupNamed(named) => vec![
            json!({"type": "cgroup", "hierarchy": named.cgroup.hierarchy, "id": named.cgroup.id, "path": named.path}),
        ],
        Event::WorkloadNamed(w) => vec![
            json!({"type": "workload", "path": w.path, "namespace": w.namespace, "pod": w.pod, "container": w.container}),
        ],
        Event::OomKill(kill) => {
            vec![oom::json(kill, &cx.clock, &mut |p| {
                cx.selection.identify(p)
            })]
        }
        Event::ThrottleSpan(span) => {
            let mut span = span.clone();
            span.cgroup = name(cx, span.cgroup_ref);
            let workload = cx
                .selection
                .identify(span.cgroup.as_deref().unwrap_or_default());
            vec![throttle::span_json(&span, &cx.clock, &workload)]
        }
        Event::Counters(counters) => counter_lines(counters, cx),
        Event::Memory(sample) => {
            let Some(facts) = facts else {
                return Vec::new();
            };
            let events = facts.events.map(|(e, version)| {
                json!({"source": MemoryEvents::source(version), "high": e.high, "max": e.max, "oom": e.oom, "oom_kill": e.oom_kill})
            });
            let time = rfc3339(cx.clock.wall_time(sample.at_ns));
            let cgroup = name(cx, Some(sample.cgroup));
            let mut lines = vec![json!({
                "type": "memory",
                "time": time,
                "cgroup": cgroup,
                "usage_bytes": facts.usage_bytes,
                "limit_bytes": facts.limit_bytes,
                "page_cache_bytes": facts.owned_bytes,
                "memory_events": events,
            })];
            for (kind, (charged, uncharged)) in facts
                .stat_charges
                .iter()
                .flat_map(|charges| {
                    cgtrace_common::pagecache::ChargeKind::ALL
                        .into_iter()
                        .zip(*charges)
                })
                .filter(|(_, (charged, uncharged))| charged + uncharged > 0)
            {
                lines.push(json!({
                    "type": "charge",
                    "time": time,
                    "cgroup": cgroup,
                    "kind": charge_name(kind),
                    "charged_pages": charged,
                    "uncharged_pages": uncharged,
                }));
            }
            lines
        }
        Event::Health(health) => vec![
            json!({"type": "stats", "time": rfc3339(cx.clock.wall_time(health.at_ns)), "final": true, "probe": health.stats}),
        ],
        Event::Tick(tick) => vec![json!({
            "type": "interval",
            "start": rfc3339(cx.clock.wall_time(tick.start_ns)),
            "time": rfc3339(cx.clock.wall_time(tick.end_ns)),
            "charges_source": charges_from.and_then(ChargesFrom::name),
        })],
        Event::Cpu(sample) => vec![json!({
            "type": "cpu",
            "time": rfc3339(cx.clock.wall_time(sample.at_ns)),
            "cgroup": name(cx, Some(sample.cgroup)),
            "cpu_stat": sample.stat,
            "bandwidth": sample.bandwidth,
            "usage_ns": sample.usage_ns,
        })],
        Event::Pressure(sample) => vec![json!({
            "type": "pressure",
            "time": rfc3339(cx.clock.wall_time(sample.at_ns)),
            "cgroup": name(cx, Some(sample.cgroup)),
            "memory": sample.memory,
            "cpu": sample.cpu,
            "io": sample.io,
        })],
    }
}

/// An interval's page-cache flows, stalls and tracepoint charges.
fn counter_lines(counters: &ProbeCounters, cx: &mut Context) -> Vec<Value> {
    let time = rfc3339(cx.clock.wall_time(counters.end_ns));
    let name = |cx: &Context, cgroup: Option<cgtrace_common::cgroup::CgroupRef>| {
        cgroup.map(|c| cx.names.name(c))
    };
    let mut lines: Vec<Value> = counters
        .flows
        .iter()
        .map(|flow| {
            json!({
                "type": "cache_flow",
                "time": time,
                "owner": name(cx, flow.owner),
                "actor": name(cx, flow.actor),
                "reason": reason_name(flow.reason),
                "bytes": flow.pages * cx.page_size,
            })
        })
        .collect();
    for stall in &counters.stalls {
        lines.push(stall_record(stall, counters.end_ns, cx));
    }
    for charge in counters.charges.iter().flatten() {
        // Refaults are counts of pages; the memory kinds are page charges.
        lines.push(json!({
            "type": "charge",
            "time": time,
            "cgroup": name(cx, charge.cgroup),
            "kind": charge_name(charge.kind),
            "charged_pages": charge.charged,
            "uncharged_pages": charge.uncharged,
        }));
    }
    lines
}

/// Chrome trace-event JSON: one "process" per cgroup, one "thread" per CPU.
#[derive(Default)]
struct ChromeTrace {
    pids: HashMap<String, u64>,
    events: Vec<Value>,
}

impl ChromeTrace {
    fn pid_of(&mut self, cgroup: &str) -> u64 {
        let next = self.pids.len() as u64 + 1;
        let events = &mut self.events;
        *self.pids.entry(cgroup.to_owned()).or_insert_with(|| {
            events.push(
                json!({"ph": "M", "name": "process_name", "pid": next, "args": {"name": cgroup}}),
            );
            next
        })
    }

    fn add(&mut self, event: &Event, facts: Option<&MemoryFacts>, cx: &Context) {
        let micros = |ns: u64| ns / 1000;
        let name =
            |cgroup: Option<cgtrace_common::cgroup::CgroupRef>| cgroup.map(|c| cx.names.name(c));
        match event {
            Event::ThrottleSpan(span) => {
                let pid = self.pid_of(&name(span.cgroup_ref).unwrap_or_else(|| "?".into()));
                self.events.push(json!({
                    "ph": "X", "name": "throttled", "cat": "cpu",
                    "pid": pid, "tid": span.cpu,
                    "ts": micros(span.start_ns), "dur": micros(span.duration_ns()),
                    "args": {"ran_out_by": format!("{}[{}]", span.comm, span.pid)},
                }));
            }
            Event::OomKill(kill) => {
                let cgroup = kill
                    .victim
                    .cgroup
                    .clone()
                    .or_else(|| name(kill.victim.cgroup_ref));
                let pid = self.pid_of(&cgroup.unwrap_or_else(|| "?".into()));
                self.events.push(json!({
                    "ph": "i", "s": "p", "name": format!("OOM kill {}[{}]", kill.victim.comm, kill.victim.pid),
                    "cat": "memory", "pid": pid, "tid": 0, "ts": micros(kill.monotonic_ns),
                    "args": {"limit_bytes": kill.oom_memcg.as_ref().and_then(|m| m.limit_bytes)},
                }));
            }
            Event::Counters(counters) => {
                for flow in counters.flows.iter().filter(|f| f.reason.is_reclaim()) {
                    let pid = self.pid_of(&name(flow.owner).unwrap_or_else(|| "(uncharged)".into()));
                    self.events.push(json!({
                        "ph": "C", "name": "page cache evicted (bytes)", "pid": pid, "ts": micros(counters.end_ns),
                        "args": {reason_name(flow.reason): flow.pages * cx.page_size},
                    }));
                }
            }
            Event::Memory(sample) => {
                let Some(facts) = facts else {
                    return;
                };
                let pid = self.pid_of(&name(Some(sample.cgroup)).unwrap_or_else(|| "?".into()));
                self.events.push(json!({
                    "ph": "C", "name": "memory (bytes)", "pid": pid, "ts": micros(sample.at_ns),
                    "args": {"usage": facts.usage_bytes, "page cache": facts.owned_bytes},
                }));
            }
            _ => {}
        }
    }

    fn finish(self) -> Value {
        json!({"traceEvents": self.events, "displayTimeUnit": "ms"})
    }
}
