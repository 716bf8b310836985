//! What the interval views (`cache`, `reclaim`) share: an interval's rows,
//! named and completed with what each cgroup's own files said, live or
//! replayed; and [`IntervalView`], the sink that turns the event stream
//! into those intervals for a renderer.

use std::{
    collections::HashMap,
    io::{self, Write as _},
    path::PathBuf,
    time::Duration,
};

use cgtrace_common::{cgroup::CgroupRef, pagecache::CHARGE_KINDS};
use serde_json::json;

use super::{
    cache::{CacheRow, cgroup_name},
    format::rfc3339,
};
use crate::{
    cgroup::stat::MemoryEvents,
    event::{Charges, Event, ProbeCounters, ProbeStats},
    identity::{Identity, selection::Selection},
    model::{
        cache::by_owner,
        memory::{MemoryFacts, MemoryModel},
        pressure::{PressureFacts, PressureModel, Stalled},
    },
    session::{Context, End, Flow, Sink},
    system::Clock,
    trace::{file::Ending, record::ChargesFrom},
};

/// What the views know about a cgroup beyond the probe's counters: its
/// name, and what its own files say. Live, the files are read at the end of
/// each interval; in a replay, they are what the recorder read then.
pub trait CgroupFacts {
    /// The cgroup's path in its hierarchy.
    fn path(&mut self, cgroup: CgroupRef) -> Option<String>;
    /// Page cache charged to the cgroup now, bytes.
    fn page_cache_bytes(&mut self, cgroup: CgroupRef) -> Option<u64>;
    /// Charges in the interval from `memory.stat`, where the memcg stat
    /// tracepoints are missing.
    fn file_charges(&mut self, cgroup: CgroupRef) -> Option<Charges>;
    /// Memory events in the interval, and the file they were read from.
    fn events(&mut self, cgroup: CgroupRef) -> Option<(MemoryEvents, &'static str)>;
    /// The cgroup's directory, to find the files its processes have open
    /// (only while it exists).
    fn directory(&mut self, cgroup: CgroupRef) -> Option<PathBuf>;
    /// Memory pressure in the interval, where the kernel has it.
    fn memory_pressure(&mut self, cgroup: CgroupRef) -> Option<Stalled>;
}

/// A cgroup as a view shows it: its path (or `id:N`) and its workload.
#[derive(Clone, Debug)]
pub struct Named {
    pub path: String,
    pub workload: Identity,
}

impl Named {
    /// `namespace/pod/container` where known, else the path.
    #[must_use]
    pub fn label(&self) -> String {
        self.workload.label(&self.path)
    }
}

/// What a view needs to render one interval.
pub struct IntervalContext<'a> {
    pub interval: &'a ProbeCounters,
    pub page_size: u64,
    /// Turns the interval's monotonic times into wall-clock times.
    pub clock: &'a Clock,
    facts: &'a mut dyn CgroupFacts,
    selection: &'a mut Selection,
}

impl<'a> IntervalContext<'a> {
    /// The interval `interval` (already filtered by [`retain`]), with what
    /// `facts` says of its cgroups.
    pub fn new(
        interval: &'a ProbeCounters,
        page_size: u64,
        clock: &'a Clock,
        facts: &'a mut dyn CgroupFacts,
        selection: &'a mut Selection,
    ) -> Self {
        Self {
            interval,
            page_size,
            clock,
            facts,
            selection,
        }
    }

    /// The `top` busiest cgroups of this interval (see [`cache_rows`]).
    pub fn rows(&mut self, top: usize) -> Vec<CacheRow> {
        cache_rows(self.interval, self.facts, self.selection, top)
    }

    /// A cgroup's path, or `id:N` / `(uncharged)`.
    pub fn name(&mut self, cgroup: Option<CgroupRef>) -> String {
        let path = cgroup.and_then(|c| self.facts.path(c));
        cgroup_name(path.as_deref(), cgroup)
    }

    /// A cgroup's path and workload.
    pub fn named(&mut self, cgroup: Option<CgroupRef>) -> Named {
        let path = self.name(cgroup);
        let workload = self.selection.identify(&path);
        Named { path, workload }
    }

    /// See [`CgroupFacts::directory`].
    pub fn directory(&mut self, cgroup: CgroupRef) -> Option<PathBuf> {
        self.facts.directory(cgroup)
    }
}

/// The `top` busiest cgroups of an interval, named and completed with what
/// only the cgroup's files say (memory events, and charges where the
/// tracepoints are missing).
pub fn cache_rows(
    interval: &ProbeCounters,
    facts: &mut dyn CgroupFacts,
    selection: &mut Selection,
    top: usize,
) -> Vec<CacheRow> {
    by_owner(interval)
        .into_iter()
        .take(top)
        .map(|mut activity| {
            let path = activity.owner.and_then(|c| facts.path(c));
            let owned = activity.owner.and_then(|c| facts.page_cache_bytes(c));
            let charges_source = if activity.charges.is_some() {
                ChargesFrom::Tracepoints.name()
            } else {
                activity.charges = activity.owner.and_then(|c| facts.file_charges(c));
                activity.charges.and(ChargesFrom::MemoryStat.name())
            };
            let events = activity.owner.and_then(|c| facts.events(c));
            let pressure = activity.owner.and_then(|c| facts.memory_pressure(c));
            let reclaimer_names: Vec<String> = activity
                .reclaimers
                .iter()
                .map(|(actor, _, _)| {
                    let path = actor.and_then(|c| facts.path(c));
                    cgroup_name(path.as_deref(), *actor)
                })
                .collect();
            let reclaimer_workloads = reclaimer_names
                .iter()
                .map(|name| selection.identify(name))
                .collect();
            let name = cgroup_name(path.as_deref(), activity.owner);
            CacheRow {
                workload: selection.identify(&name),
                name,
                reclaimer_workloads,
                id: activity.owner.map(|c| c.id),
                owned_bytes: owned,
                activity,
                reclaimer_names,
                charges_source,
                events,
                pressure,
            }
        })
        .collect()
}

/// The loss counters at exit: a `stats` JSON line, or one line on stderr.
pub fn report_stats(stats: &ProbeStats, json: bool) -> io::Result<()> {
    if json {
        let record = json!({
            "type": "stats",
            "time": rfc3339(std::time::SystemTime::now()),
            "final": true,
            "probe": stats,
        });
        let mut out = crate::text::stdout();
        writeln!(out, "{record}")?;
        return out.flush();
    }
    crate::note!(
        "cgtrace: probe: {} ring-buffer drops, {} recursion misses, {} read failures, {} map-full",
        stats.ring_buffer_drops,
        stats.recursion_misses,
        stats.read_failures,
        stats.map_full
    );
    Ok(())
}

/// Renders one interval; an error of kind `BrokenPipe` ends the view
/// quietly (its reader went away).
pub type Render<'r> = dyn FnMut(&mut IntervalContext<'_>) -> io::Result<()> + 'r;

/// The interval views' sink: the probe's counters and the cgroups' samples
/// go through the models, and each interval (each recorded one, or with
/// `rebucket` intervals of that length) goes to the renderer.
pub struct IntervalView<'r> {
    model: MemoryModel,
    pressure: PressureModel,
    render: &'r mut Render<'r>,
    /// Replays only: merge recorded intervals into ones this long.
    rebucket: Option<Duration>,
    /// Stop after this many intervals.
    count: Option<u64>,
    json: bool,
    bucket: Bucket,
    reports: u64,
}

/// The interval being gathered.
#[derive(Default)]
struct Bucket {
    counters: Option<ProbeCounters>,
    facts: HashMap<CgroupRef, BucketFacts>,
    start_ns: Option<u64>,
}

/// What a cgroup's samples in the bucket said.
#[derive(Clone, Copy, Debug, Default)]
struct BucketFacts {
    pressure: Option<PressureFacts>,
    owned_bytes: Option<u64>,
    events: Option<(MemoryEvents, &'static str)>,
    stat_charges: Option<Charges>,
}

impl BucketFacts {
    /// Adds a later sample of the same cgroup: figures are its latest,
    /// changes add up.
    fn add(&mut self, facts: &MemoryFacts) {
        self.owned_bytes = facts.owned_bytes;
        if let Some((more, version)) = facts.events {
            let source = MemoryEvents::source(version);
            self.events = Some(match self.events {
                Some((total, _)) => (total.plus(&more), source),
                None => (more, source),
            });
        }
        if let Some(more) = facts.stat_charges {
            let total = self.stat_charges.get_or_insert([(0, 0); CHARGE_KINDS]);
            for (slot, more) in total.iter_mut().zip(more) {
                *slot = (slot.0 + more.0, slot.1 + more.1);
            }
        }
    }
}

/// A bucket's facts, as the renderer asks for them.
struct Facts<'a> {
    cx: &'a Context,
    bucket: &'a HashMap<CgroupRef, BucketFacts>,
}

impl CgroupFacts for Facts<'_> {
    fn path(&mut self, cgroup: CgroupRef) -> Option<String> {
        self.cx.names.path(cgroup).map(str::to_owned)
    }

    fn page_cache_bytes(&mut self, cgroup: CgroupRef) -> Option<u64> {
        self.bucket.get(&cgroup)?.owned_bytes
    }

    fn file_charges(&mut self, cgroup: CgroupRef) -> Option<Charges> {
        self.bucket.get(&cgroup)?.stat_charges
    }

    fn events(&mut self, cgroup: CgroupRef) -> Option<(MemoryEvents, &'static str)> {
        self.bucket.get(&cgroup)?.events
    }

    fn directory(&mut self, cgroup: CgroupRef) -> Option<PathBuf> {
        self.cx.directory(cgroup)
    }

    fn memory_pressure(&mut self, cgroup: CgroupRef) -> Option<Stalled> {
        self.bucket.get(&cgroup)?.pressure?.memory
    }
}

impl<'r> IntervalView<'r> {
    #[must_use]
    pub fn new(
        page_size: u64,
        render: &'r mut Render<'r>,
        rebucket: Option<Duration>,
        count: Option<u64>,
        json: bool,
    ) -> Self {
        Self {
            model: MemoryModel::new(page_size),
            pressure: PressureModel::new(),
            render,
            rebucket,
            count,
            json,
            bucket: Bucket::default(),
            reports: 0,
        }
    }

    /// Renders the bucket and starts the next.
    fn close(&mut self, cx: &mut Context) -> io::Result<Flow> {
        let bucket = std::mem::take(&mut self.bucket);
        let Some(mut counters) = bucket.counters else {
            return Ok(Flow::Continue);
        };
        if let Some(start_ns) = bucket.start_ns {
            counters.start_ns = start_ns;
        }
        cx.retain_counters(&mut counters);
        let mut selection = std::mem::replace(&mut cx.selection, Selection::everything());
        let mut facts = Facts {
            cx,
            bucket: &bucket.facts,
        };
        let mut context = IntervalContext::new(
            &counters,
            cx.page_size,
            &cx.clock,
            &mut facts,
            &mut selection,
        );
        let rendered = (self.render)(&mut context);
        cx.selection = selection;
        match rendered {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Flow::Stop),
            other => other?,
        }
        self.reports += 1;
        Ok(if self.count.is_some_and(|count| self.reports >= count) {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}

impl Sink for IntervalView<'_> {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        match event {
            Event::Counters(counters) => {
                self.model.counters(counters);
                match &mut self.bucket.counters {
                    None => self.bucket.counters = Some((**counters).clone()),
                    Some(open) => {
                        self.bucket.start_ns.get_or_insert(open.start_ns);
                        open.merge(counters);
                    }
                }
            }
            Event::Memory(sample) => {
                let facts = self.model.sample(sample);
                self.bucket
                    .facts
                    .entry(sample.cgroup)
                    .or_default()
                    .add(&facts);
            }
            Event::Pressure(sample) => {
                let (cgroup, facts) = self.pressure.sample(sample);
                self.bucket
                    .facts
                    .entry(cgroup)
                    .or_default()
                    .pressure
                    .get_or_insert_default()
                    .add(&facts);
            }
            Event::Tick(tick) => {
                let due = self.rebucket.is_none_or(|length| {
                    let start = self
                        .bucket
                        .start_ns
                        .or(self.bucket.counters.as_ref().map(|c| c.start_ns))
                        .unwrap_or(tick.start_ns);
                    Duration::from_nanos(tick.end_ns.saturating_sub(start)) >= length
                });
                if due {
                    return Ok(self.close(cx)?);
                }
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, cx: &mut Context, end: &End) -> anyhow::Result<()> {
        // A replay stopped by --count or its reader says no more; a live
        // view still says what it lost.
        if end.stopped && end.ending.is_some() {
            return Ok(());
        }
        if !end.stopped && self.bucket.counters.is_some() && self.close(cx)? == Flow::Stop {
            return Ok(());
        }
        if let Some(ending) = end.ending {
            if self.reports == 0 {
                crate::note!(
                    "cgtrace: the trace holds no page-cache intervals (recorded by an older cgtrace, or cut short before the first one)"
                );
            }
            if let Ending::CutShort { offset, .. } = ending {
                crate::note!(
                    "cgtrace: the trace was cut short at byte {offset}: intervals after that were not recorded"
                );
            }
        }
        if let Some(stats) = &end.health {
            report_stats(stats, self.json)?;
        } else {
            crate::note!(
                "cgtrace: losses unknown: the trace ends before the recorder's final counters"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cgtrace_common::{cgroup::CgroupRef, pagecache::CacheReason};

    use super::IntervalView;
    use crate::{
        event::{Event, Flow as PageFlow, ProbeCounters, Tick},
        identity::selection::Selection,
        session::{Context, Flow, Sink},
        system::Clock,
    };

    const APP: CgroupRef = CgroupRef {
        id: 7,
        hierarchy: 4,
        level: 1,
    };

    /// One recorded interval of 250 ms ending `quarter` quarter-seconds in,
    /// in which `pages` were added to APP.
    fn interval(quarter: u64, pages: u64) -> [Event; 2] {
        let (start_ns, end_ns) = ((quarter - 1) * 250_000_000, quarter * 250_000_000);
        [
            Event::Counters(Box::new(ProbeCounters {
                start_ns,
                end_ns,
                flows: vec![PageFlow {
                    owner: Some(APP),
                    actor: Some(APP),
                    reason: CacheReason::Added,
                    pages,
                }],
                ..ProbeCounters::default()
            })),
            Event::Tick(Tick { start_ns, end_ns }),
        ]
    }

    /// What the view renders of eight 250 ms intervals: `(seconds, pages
    /// added)` per rendered interval.
    fn render(rebucket: Option<Duration>, count: Option<u64>) -> Vec<(f64, u64)> {
        let mut rendered = Vec::new();
        let mut render = |context: &mut super::IntervalContext<'_>| {
            let rows = context.rows(10);
            rendered.push((context.interval.seconds(), rows[0].activity.added));
            Ok(())
        };
        let mut cx = Context::new(Selection::everything(), Clock::from_boot_time(0), 4096);
        let mut view = IntervalView::new(4096, &mut render, rebucket, count, false);
        'events: for quarter in 1..=8 {
            for event in interval(quarter, quarter) {
                if view.event(&event, &mut cx).unwrap() == Flow::Stop {
                    break 'events;
                }
            }
        }
        drop(view);
        rendered
    }

    #[test]
    fn a_replay_shows_the_recorded_intervals_or_longer_ones() {
        let recorded = render(None, None);
        assert_eq!(recorded.len(), 8);
        assert_eq!(recorded[0], (0.25, 1));
        assert_eq!(recorded[7], (0.25, 8));
        let merged = render(Some(Duration::from_secs(1)), None);
        assert_eq!(merged, vec![(1.0, 1 + 2 + 3 + 4), (1.0, 5 + 6 + 7 + 8)]);
        assert_eq!(render(Some(Duration::from_millis(500)), Some(3)).len(), 3);
    }
}
