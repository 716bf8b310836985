//! `cgtrace export`'s two forms of a trace: JSON lines, one object per
//! event in the live views' schema, and Chrome trace-event JSON, which
//! Perfetto UI and chrome://tracing open (throttle spans as slices per
//! cgroup and CPU, OOM kills as instants, page-cache evictions and memory
//! usage as counters).
//!
//! Both are written as the events stream by, so an export of a recording of
//! any length holds one event at a time, not the whole text.

use std::{collections::HashMap, io::Write};

use anyhow::Context as _;

use cgtrace_common::{cgroup::CgroupRef, pagecache::ChargeKind};
use serde_json::{Value, json};

use crate::{
    cgroup::stat::MemoryEvents,
    event::{Event, ProbeCounters, Stall},
    model::memory::{MemoryFacts, MemoryModel},
    session::{Context, End, Flow, Sink},
    trace::record::ChargesFrom,
    view::{
        cache::{StallRow, cgroup_name, stall_json},
        format::rfc3339,
        oom, throttle,
    },
};

/// The export sink: each event as the lines (or trace events) it makes.
/// The page cache a cgroup owns and its counters' changes come from the
/// same model the views use.
pub struct Export {
    /// Chrome trace-event JSON rather than JSON lines.
    chrome_trace: bool,
    out: Box<dyn Write>,
    /// Where `out` goes, for errors.
    destination: String,
    memory: MemoryModel,
    /// Where the open interval's charges come from.
    charges_from: Option<ChargesFrom>,
    chrome: ChromeTrace,
}

impl Export {
    /// An export to `out` (`destination` names it) of JSON lines, or with
    /// `chrome_trace` of trace events.
    #[must_use]
    pub fn new(
        chrome_trace: bool,
        page_size: u64,
        out: Box<dyn Write>,
        destination: String,
    ) -> Self {
        Self {
            chrome_trace,
            out,
            destination,
            memory: MemoryModel::new(page_size),
            charges_from: None,
            chrome: ChromeTrace::default(),
        }
    }
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
        let written = if self.chrome_trace {
            self.chrome.add(&mut self.out, event, facts.as_ref(), cx)
        } else if let Some(value) = jsonl(event, facts.as_ref(), self.charges_from, cx) {
            serde_json::to_writer(&mut self.out, &value)
                .map_err(std::io::Error::from)
                .and_then(|()| self.out.write_all(b"\n"))
        } else {
            Ok(())
        };
        written.with_context(|| format!("cannot write the export to {}", self.destination))?;
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        let mut finish = || {
            if self.chrome_trace {
                self.chrome.finish(&mut self.out)?;
            }
            self.out.flush()
        };
        finish().with_context(|| format!("cannot write the export to {}", self.destination))
    }
}

/// A recorded stall, as the reclaim view's JSON shows it.
fn stall_json_named(stall: &Stall, cx: &mut Context) -> Value {
    let path = cgroup_name(stall.cgroup.and_then(|c| cx.names.path(c)), stall.cgroup);
    stall_json(
        &StallRow {
            workload: cx.selection.identify(&path),
            name: path,
            stall,
        },
        cx.page_size,
    )
}

/// Charges as `{kind: {charged_pages, uncharged_pages}}`, kinds with none
/// left out (refaults are counts of pages; the memory kinds page charges).
fn charges_json(charges: impl Iterator<Item = (ChargeKind, (u64, u64))>) -> Value {
    let mut map = serde_json::Map::new();
    for (kind, (charged, uncharged)) in charges.filter(|(_, (c, u))| c + u > 0) {
        map.insert(
            kind.name().to_owned(),
            json!({"charged_pages": charged, "uncharged_pages": uncharged}),
        );
    }
    Value::Object(map)
}

/// An interval's counters: flows, stalls and (from the tracepoints) charges.
fn counters_json(counters: &ProbeCounters, cx: &mut Context) -> Value {
    let name = |cx: &Context, cgroup: Option<CgroupRef>| cgroup.map(|c| cx.names.name(c));
    let flows: Vec<Value> = counters
        .flows
        .iter()
        .map(|flow| {
            json!({
                "owner": name(cx, flow.owner),
                "actor": name(cx, flow.actor),
                "reason": flow.reason.name(),
                "bytes": flow.pages * cx.page_size,
            })
        })
        .collect();
    let stalls: Vec<Value> = counters
        .stalls
        .iter()
        .map(|stall| stall_json_named(stall, cx))
        .collect();
    let charges = counters.charges.as_ref().map(|charges| {
        charges
            .iter()
            .map(|c| {
                json!({
                    "cgroup": name(cx, c.cgroup),
                    "kind": c.kind.name(),
                    "charged_pages": c.charged,
                    "uncharged_pages": c.uncharged,
                })
            })
            .collect::<Vec<Value>>()
    });
    json!({
        "type": "counters",
        "start": rfc3339(cx.clock.wall_time(counters.start_ns)),
        "time": rfc3339(cx.clock.wall_time(counters.end_ns)),
        "flows": flows,
        "stalls": stalls,
        "charges": charges,
    })
}

/// The JSON line of one event (one line per event, as the trace holds them).
fn jsonl(
    event: &Event,
    facts: Option<&MemoryFacts>,
    charges_from: Option<ChargesFrom>,
    cx: &mut Context,
) -> Option<Value> {
    let name = |cx: &Context, cgroup: Option<CgroupRef>| cgroup.map(|c| cx.names.name(c));
    let time = |cx: &Context, ns: u64| rfc3339(cx.clock.wall_time(ns));
    Some(match event {
        Event::CgroupCreated(named) | Event::CgroupNamed(named) => {
            json!({"type": "cgroup", "hierarchy": named.cgroup.hierarchy, "id": named.cgroup.id, "path": named.path, "created": matches!(event, Event::CgroupCreated(_))})
        }
        Event::WorkloadNamed(w) => {
            json!({"type": "workload", "path": w.path, "namespace": w.namespace, "pod": w.pod, "container": w.container})
        }
        Event::CgroupRemoved(removed) => {
            json!({"type": "cgroup_removed", "time": time(cx, removed.at_ns), "hierarchy": removed.cgroup.hierarchy, "id": removed.cgroup.id, "path": name(cx, Some(removed.cgroup))})
        }
        Event::OomKill(kill) => oom::json(kill, &cx.clock, &mut |p| cx.selection.identify(p)),
        Event::ThrottleSpan(span) => {
            let mut span = span.clone();
            span.cgroup = name(cx, span.cgroup_ref);
            let workload = cx
                .selection
                .identify(span.cgroup.as_deref().unwrap_or_default());
            throttle::span_json(&span, &cx.clock, &workload)
        }
        Event::Counters(counters) => counters_json(counters, cx),
        Event::Memory(sample) => {
            let facts = facts?;
            let events = facts.events.map(|(e, version)| {
                json!({"source": MemoryEvents::source(version), "high": e.high, "max": e.max, "oom": e.oom, "oom_kill": e.oom_kill})
            });
            let stat_charges = facts
                .stat_charges
                .map(|charges| charges_json(ChargeKind::ALL.into_iter().zip(charges)));
            json!({
                "type": "memory",
                "time": time(cx, sample.at_ns),
                "cgroup": name(cx, Some(sample.cgroup)),
                "usage_bytes": facts.usage_bytes,
                "limit_bytes": facts.limit_bytes,
                "peak_bytes": facts.peak_bytes,
                "page_cache_bytes": facts.owned_bytes,
                "memory_events": events,
                "memory_stat_charges": stat_charges,
            })
        }
        Event::Health(health) => {
            json!({"type": "stats", "time": time(cx, health.at_ns), "final": health.is_final, "probe": health.stats})
        }
        Event::Tick(tick) => json!({
            "type": "interval",
            "start": time(cx, tick.start_ns),
            "time": time(cx, tick.end_ns),
            "charges_source": charges_from.and_then(ChargesFrom::name),
        }),
        Event::Cpu(sample) => json!({
            "type": "cpu",
            "time": time(cx, sample.at_ns),
            "cgroup": name(cx, Some(sample.cgroup)),
            "cpu_stat": sample.stat,
            "bandwidth": sample.bandwidth,
            "usage_ns": sample.usage_ns,
        }),
        Event::Pressure(sample) => json!({
            "type": "pressure",
            "time": time(cx, sample.at_ns),
            "cgroup": name(cx, Some(sample.cgroup)),
            "memory": sample.memory,
            "cpu": sample.cpu,
            "io": sample.io,
        }),
    })
}

/// Chrome trace-event JSON: one "process" per cgroup, one "thread" per CPU,
/// written as `{"traceEvents":[…],"displayTimeUnit":"ms"}` one event at a
/// time.
#[derive(Default)]
struct ChromeTrace {
    pids: HashMap<String, u64>,
    /// Events written so far (the first needs no comma before it).
    written: u64,
    /// Events of the one record being added, in order.
    pending: Vec<Value>,
}

impl ChromeTrace {
    fn pid_of(&mut self, cgroup: &str) -> u64 {
        let next = self.pids.len() as u64 + 1;
        let pending = &mut self.pending;
        *self.pids.entry(cgroup.to_owned()).or_insert_with(|| {
            pending.push(
                json!({"ph": "M", "name": "process_name", "pid": next, "args": {"name": cgroup}}),
            );
            next
        })
    }

    fn add(
        &mut self,
        out: &mut dyn Write,
        event: &Event,
        facts: Option<&MemoryFacts>,
        cx: &Context,
    ) -> std::io::Result<()> {
        self.events(event, facts, cx);
        for value in self.pending.drain(..) {
            out.write_all(if self.written == 0 {
                b"{\"traceEvents\":["
            } else {
                b","
            })?;
            serde_json::to_writer(&mut *out, &value)?;
            self.written += 1;
        }
        Ok(())
    }

    fn events(&mut self, event: &Event, facts: Option<&MemoryFacts>, cx: &Context) {
        let micros = |ns: u64| ns / 1000;
        let name =
            |cgroup: Option<cgtrace_common::cgroup::CgroupRef>| cgroup.map(|c| cx.names.name(c));
        match event {
            Event::ThrottleSpan(span) => {
                let pid = self.pid_of(&name(span.cgroup_ref).unwrap_or_else(|| "?".into()));
                self.pending.push(json!({
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
                self.pending.push(json!({
                    "ph": "i", "s": "p", "name": format!("OOM kill {}[{}]", kill.victim.comm, kill.victim.pid),
                    "cat": "memory", "pid": pid, "tid": 0, "ts": micros(kill.monotonic_ns),
                    "args": {"limit_bytes": kill.oom_memcg.as_ref().and_then(|m| m.limit_bytes)},
                }));
            }
            Event::Counters(counters) => {
                for flow in counters.flows.iter().filter(|f| f.reason.is_reclaim()) {
                    let pid =
                        self.pid_of(&name(flow.owner).unwrap_or_else(|| "(uncharged)".into()));
                    self.pending.push(json!({
                        "ph": "C", "name": "page cache evicted (bytes)", "pid": pid, "ts": micros(counters.end_ns),
                        "args": {flow.reason.name(): flow.pages * cx.page_size},
                    }));
                }
            }
            Event::Memory(sample) => {
                let Some(facts) = facts else {
                    return;
                };
                let pid = self.pid_of(&name(Some(sample.cgroup)).unwrap_or_else(|| "?".into()));
                self.pending.push(json!({
                    "ph": "C", "name": "memory (bytes)", "pid": pid, "ts": micros(sample.at_ns),
                    "args": {"usage": facts.usage_bytes, "page cache": facts.owned_bytes},
                }));
            }
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(if self.written == 0 {
            b"{\"traceEvents\":[],\"displayTimeUnit\":\"ms\"}"
        } else {
            b"],\"displayTimeUnit\":\"ms\"}"
        })
    }
}
