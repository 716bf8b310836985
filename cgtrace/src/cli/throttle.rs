//! `cgtrace throttle`: CFS bandwidth throttling per cgroup as it happens —
//! periods, throttled periods, throttled time (total, p99, max), the quota
//! as cores and millicores, and usage against it; `--spans` streams each
//! span (CPU, duration, the task that ran the quota out).
//!
//! Cost: the sched_switch variant runs on every context switch; for a task
//! of an unlimited group it is a few reads (see BENCHMARKS.md).

use std::{
    collections::HashMap,
    io::{self, Write as _},
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;

use super::{
    Outcome,
    interval::{DEFAULT_INTERVAL, IntervalArgs},
};
use crate::{
    cgroup::{Hierarchies, Hierarchy, Resolver, cpu, stat::CpuStat},
    event::{Event, ThrottleSpan},
    identity::selection::Selection,
    model::throttle::span_stats,
    probe::{FeatureSet, Probe, ProbeOptions, ThrottleVariant},
    runtime::{Shutdown, wait_readable},
    session::{self, Context, TraceSource},
    system::Clock,
    view::interval::report_stats,
    view::throttle as view,
};

#[derive(Debug, Args)]
pub struct ThrottleArgs {
    #[command(flatten)]
    pub interval: IntervalArgs,
    /// Also print every throttle span as it ends.
    #[arg(long)]
    pub spans: bool,
    /// Show the N most throttled cgroups per interval.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Probe variant.
    #[arg(long, value_enum, default_value_t = ThrottleVariant::Auto)]
    pub probe_variant: ThrottleVariant,
    /// Replay the throttle spans recorded in a trace file instead of
    /// watching this machine (the kernel's own counters are not in a trace).
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
}

/// What the view remembers about each cpu cgroup between intervals.
struct Group {
    path: String,
    stat: Option<CpuStat>,
    usage_ns: Option<u64>,
}

/// The cpu hierarchy's cgroups and their last counters.
struct Groups {
    hierarchy: Hierarchy,
    hierarchies: Hierarchies,
    known: HashMap<u64, Group>,
}

impl Groups {
    /// Records every cgroup's counters now.
    fn refresh(&mut self, resolver: &mut Resolver) {
        let Some(id) = self.hierarchy.id else {
            return;
        };
        for (cgroup, path) in resolver.cgroups(id) {
            self.known.entry(cgroup).or_insert_with(|| {
                let stat = cpu::cpu_stat(&self.hierarchy.mount, &path, self.hierarchy.version);
                let usage_ns = cpu::usage_ns(
                    &self.hierarchies,
                    &self.hierarchy.mount,
                    &path,
                    self.hierarchy.version,
                );
                Group {
                    path,
                    stat,
                    usage_ns,
                }
            });
        }
    }

    /// Whether any cgroup has a CFS quota (re-read from its files).
    fn any_limited(&self) -> bool {
        self.known.values().any(|group| {
            cpu::bandwidth(&self.hierarchy.mount, &group.path, self.hierarchy.version)
                .is_some_and(|b| b.quota_us.is_some())
        })
    }

    /// The interval's rows: limited groups and groups with spans.
    fn rows(
        &mut self,
        spans: &HashMap<u64, Vec<ThrottleSpan>>,
        interval_ns: u64,
        selection: &mut Selection,
    ) -> Vec<view::ThrottleRow> {
        let mut rows = Vec::new();
        for (id, group) in &mut self.known {
            if !selection.keeps(&group.path) {
                continue;
            }
            let bandwidth =
                cpu::bandwidth(&self.hierarchy.mount, &group.path, self.hierarchy.version);
            let group_spans = spans.get(id).map_or(&[][..], Vec::as_slice);
            let limited = bandwidth.is_some_and(|b| b.quota_us.is_some());
            if !limited && group_spans.is_empty() {
                continue;
            }
            let now = cpu::cpu_stat(&self.hierarchy.mount, &group.path, self.hierarchy.version);
            let usage_now = cpu::usage_ns(
                &self.hierarchies,
                &self.hierarchy.mount,
                &group.path,
                self.hierarchy.version,
            );
            // A group first seen now was created during the interval: from zero.
            let kernel = now.map(|n| n.since(&group.stat.unwrap_or_default()));
            let usage_ns = usage_now.map(|n| n.saturating_sub(group.usage_ns.unwrap_or(0)));
            group.stat = now;
            group.usage_ns = usage_now;
            let mut row = view::ThrottleRow::new(
                group.path.clone(),
                span_stats(group_spans),
                interval_ns,
                bandwidth,
                kernel,
                usage_ns,
            );
            row.workload = selection.identify(&row.name);
            rows.push(row);
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.total_ns));
        rows
    }
}

pub fn run(args: &ThrottleArgs) -> anyhow::Result<Outcome> {
    let result = match &args.input {
        Some(path) => replay(args, path),
        None => watch(args),
    };
    match result {
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(Outcome::Success)
        }
        other => other,
    }
}

/// The live view: spans from the probe, counters from each group's files.
fn watch(args: &ThrottleArgs) -> anyhow::Result<Outcome> {
    let mut shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let mut selection = Selection::new(&args.interval.select)?;
    let mut probe = Probe::load(&ProbeOptions {
        features: FeatureSet::THROTTLE,
        throttle_variant: args.probe_variant,
        filter: !selection.is_everything(),
        ..ProbeOptions::default()
    })?;
    for feature in probe.features() {
        crate::note!("cgtrace: {feature}");
    }
    let hierarchies = Hierarchies::discover().context("cannot read the cgroup mounts")?;
    let hierarchy = hierarchies
        .with_controller("cpu")
        .cloned()
        .context("no cpu controller is mounted: there is no CFS bandwidth to watch")?;
    let mut resolver = Resolver::new(hierarchies.clone());
    let allowed = selection.install(&mut probe, &mut resolver)?;
    super::oom::filter_note(allowed, &selection);
    let mut groups = Groups {
        hierarchy,
        hierarchies,
        known: HashMap::new(),
    };
    groups.refresh(&mut resolver);
    gate(&mut probe, &groups)?;
    let clock = Clock::now();
    let mut interval_start = Clock::monotonic_now_ns();
    let interval = args.interval.interval.unwrap_or(DEFAULT_INTERVAL);
    let mut next = Instant::now() + interval;
    let mut spans: HashMap<u64, Vec<ThrottleSpan>> = HashMap::new();
    let mut reports = 0;
    let mut header_printed = false;
    let result: io::Result<()> = (|| {
        loop {
            let stop = shutdown.requested();
            let fresh = drain_spans(&mut probe, &mut resolver, &mut selection)?;
            let mut out = io::stdout().lock();
            for mut span in fresh {
                span.cgroup = span.cgroup_ref.and_then(|c| resolver.path(c));
                let path = span.cgroup.clone().unwrap_or_default();
                if !selection.keeps(&path) {
                    continue;
                }
                if args.spans {
                    let workload = selection.identify(&path);
                    if args.interval.json {
                        writeln!(out, "{}", view::span_json(&span, &clock, &workload))?;
                    } else {
                        writeln!(out, "{}", view::span_line(&span, &clock, &workload))?;
                    }
                }
                if let Some(cgroup) = span.cgroup_ref {
                    spans.entry(cgroup.id).or_default().push(span);
                }
            }
            if stop || Instant::now() >= next {
                groups.refresh(&mut resolver);
                gate(&mut probe, &groups).map_err(io::Error::other)?;
                let end = Clock::monotonic_now_ns();
                let mut rows =
                    groups.rows(&spans, end.saturating_sub(interval_start), &mut selection);
                rows.truncate(args.top);
                view::print_interval(
                    &mut out,
                    &rows,
                    &clock,
                    interval_start,
                    end,
                    args.interval.json,
                    &mut header_printed,
                )?;
                out.flush()?;
                spans.clear();
                interval_start = end;
                next += interval;
                reports += 1;
                if stop || args.interval.count.is_some_and(|c| reports >= c) {
                    return Ok(());
                }
            }
            out.flush()?;
            drop(out);
            let wait = next.saturating_duration_since(Instant::now());
            wait_readable(
                &[probe.events_fd(), shutdown.as_fd()],
                wait.max(Duration::from_millis(1)),
            )?;
        }
    })();
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Outcome::Success),
        other => other?,
    }
    report_stats(&probe.stats(), args.interval.json)?;
    Ok(Outcome::Success)
}

/// The spans in the ring buffer; new cgroups are named and, with a
/// filter, allowed on the way.
fn drain_spans(
    probe: &mut Probe,
    resolver: &mut Resolver,
    selection: &mut Selection,
) -> io::Result<Vec<ThrottleSpan>> {
    let mut spans = Vec::new();
    let mut created = Vec::new();
    probe.drain(|event| match event {
        Event::ThrottleSpan(span) => spans.push(span),
        Event::CgroupCreated(named) => created.push((named.cgroup, named.path)),
        _ => {}
    });
    selection
        .cgroups_created(probe, resolver, &created)
        .map_err(io::Error::other)?;
    Ok(spans)
}

/// Keeps the per-switch program attached only while some cgroup has a quota.
fn gate(probe: &mut Probe, groups: &Groups) -> Result<(), crate::probe::ProbeError> {
    match probe.gate_throttle(groups.any_limited())? {
        Some(true) => {
            crate::note!(
                "cgtrace: throttle: a cgroup has a CFS quota: sched_switch probe attached"
            );
        }
        Some(false) => {
            crate::note!(
                "cgtrace: throttle: no cgroup has a CFS quota: sched_switch probe detached (nothing can be throttled)"
            );
        }
        None => {}
    }
    Ok(())
}

/// The spans of a trace, in `--interval` buckets from the start of the
/// recording, shown as the live view would have.
fn replay(args: &ThrottleArgs, path: &std::path::Path) -> anyhow::Result<Outcome> {
    let mut source = TraceSource::open(path)?;
    let header = source.header().clone();
    let selection = Selection::new(&args.interval.select)?;
    let mut cx = Context::new(
        selection,
        Clock::from_boot_time(header.boot_time_ns),
        header.page_size,
    );
    source.learn_names(&mut cx)?;
    let mut replay = view::ThrottleReplay::new(
        view::ReplayOptions {
            spans: args.spans,
            json: args.interval.json,
            top: args.top,
            interval: args.interval.interval.unwrap_or(DEFAULT_INTERVAL),
        },
        header.start_monotonic_ns,
    );
    session::run(&mut source, &mut cx, &mut [&mut replay])?;
    Ok(Outcome::Success)
}
