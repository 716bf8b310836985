//! What a recorded run did, per cgroup, built from a trace's events: the
//! totals the text and JSON reports print, and the time series the HTML
//! report plots.
//!
//! Cgroups are keyed by path, so on a v1 host the memory and cpu cgroups of
//! one workload (same path, two hierarchies) make one row.

use std::collections::{BTreeMap, HashSet};

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CHARGE_KINDS, CacheReason, ReclaimKind, StallStats},
};

use crate::{
    event::{Charges, Event, MemoryEvents, MemorySample, OomKill, ProbeCounters, ThrottleSpan},
    model::{
        cache::by_owner,
        memory::MemoryModel,
        pressure::{PressureFacts, PressureModel},
    },
    probe::ProbeStats,
    session::{CgroupNames, Context, End, Flow, Sink},
    trace::record::ChargesFrom,
};

/// A cgroup's memory at the end of one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPoint {
    pub end_ns: u64,
    pub usage_bytes: Option<u64>,
    pub page_cache_bytes: Option<u64>,
}

/// One cgroup's totals over the whole trace, and its series.
#[derive(Clone, Debug)]
pub struct CgroupSummary {
    pub oom_kills: u64,
    pub spans: Vec<ThrottleSpan>,
    /// Page-cache pages added and removed (deleted, truncated: not reclaim).
    pub added: u64,
    pub removed: u64,
    /// Evicted pages by reason name.
    pub evicted: BTreeMap<&'static str, u64>,
    /// Evicted pages by reclaimer name.
    pub evicted_by: BTreeMap<String, u64>,
    /// Evicted pages per interval end, for the plot.
    pub evicted_series: Vec<(u64, u64)>,
    pub stalls: BTreeMap<ReclaimKind, StallStats>,
    /// `(charged, uncharged)` pages per `ChargeKind` (refaults: counts).
    pub charges: Charges,
    pub memory: Vec<MemoryPoint>,
    pub limit_bytes: Option<u64>,
    /// The kernel's own usage watermarks (since the cgroup was created),
    /// first and highest recorded.
    pub peak_watermark_bytes: Option<(u64, u64)>,
    /// The cgroup was created while recording: its watermark is all the
    /// trace's, even where no sample saw it rise.
    pub created_in_trace: bool,
    /// Memory events over the trace (each field summed where known).
    pub events: Option<MemoryEvents>,
    /// The CFS period, where the trace's samples say (format 2).
    pub period_ns: Option<u64>,
    /// Pressure stalls over the trace, where the kernel has them.
    pub pressure: Option<PressureFacts>,
    /// Memory pressure (`some`) stalled per sample, `(time, µs)`, for the plot.
    pub memory_pressure_series: Vec<(u64, u64)>,
}

impl Default for CgroupSummary {
    fn default() -> Self {
        Self {
            oom_kills: 0,
            spans: Vec::new(),
            added: 0,
            removed: 0,
            evicted: BTreeMap::new(),
            evicted_by: BTreeMap::new(),
            evicted_series: Vec::new(),
            stalls: BTreeMap::new(),
            charges: [(0, 0); CHARGE_KINDS],
            memory: Vec::new(),
            limit_bytes: None,
            peak_watermark_bytes: None,
            created_in_trace: false,
            events: None,
            period_ns: None,
            pressure: None,
            memory_pressure_series: Vec::new(),
        }
    }
}

impl CgroupSummary {
    #[must_use]
    pub fn evicted_total(&self) -> u64 {
        self.evicted.values().sum()
    }

    /// The highest usage during the trace: the kernel's own watermark where
    /// it rose while recording or the cgroup was created while recording,
    /// else the highest sample (a watermark that never rose may predate the
    /// trace).
    ///
    /// Where the watermark rose it alone counts. It sees the moments
    /// between samples (an OOM victim charging past the limit as it
    /// exits), and a sample can see what it rightly leaves out: a charge
    /// that would pass the limit is added to the usage and backed out
    /// again (`page_counter_try_charge`), so `memory.current` read in that
    /// instant shows up to a charge batch more than the group ever held.
    #[must_use]
    pub fn peak_usage(&self) -> Option<u64> {
        let watermark = self.peak_watermark_bytes.and_then(|(first, highest)| {
            (highest > first || self.created_in_trace).then_some(highest)
        });
        watermark.or_else(|| self.memory.iter().filter_map(|p| p.usage_bytes).max())
    }

    #[must_use]
    pub fn throttled_ns(&self) -> u64 {
        self.spans.iter().map(ThrottleSpan::duration_ns).sum()
    }

    /// All reclaim stalls of the cgroup, whatever their kind.
    #[must_use]
    pub fn all_stalls(&self) -> Option<StallStats> {
        let mut stalls = self.stalls.values();
        let mut all = *stalls.next()?;
        for more in stalls {
            all.merge(more);
        }
        Some(all)
    }

    /// Whether the memory part of the report has anything to say.
    #[must_use]
    pub fn has_memory_activity(&self) -> bool {
        self.oom_kills > 0
            || self.added + self.removed + self.evicted_total() > 0
            || self.stalls.values().any(|s| s.count > 0)
            || self
                .memory
                .iter()
                .any(|p| p.usage_bytes.is_some_and(|u| u > 0))
    }
}

/// Everything the reports say, built from the records.
#[derive(Debug)]
pub struct Summary {
    pub names: CgroupNames,
    pub cgroups: BTreeMap<String, CgroupSummary>,
    pub kills: Vec<OomKill>,
    pub stats: Option<ProbeStats>,
    pub start_ns: u64,
    pub last_ns: u64,
    /// The recorded sampling intervals, `(start, end)`.
    pub intervals: Vec<(u64, u64)>,
    /// Where charges came from, as the last interval said.
    pub charges_from: Option<ChargesFrom>,
    memory_model: MemoryModel,
    pressure_model: PressureModel,
    /// Where the open interval's charges come from.
    interval_charges: Option<ChargesFrom>,
    /// Cgroups created while recording.
    created: HashSet<(u32, u64)>,
}

/// The summary of a replay, built as the events stream by.
impl Sink for Summary {
    fn event(&mut self, event: &Event, _cx: &mut Context) -> anyhow::Result<Flow> {
        self.add(event);
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        Ok(())
    }
}

fn add_charges(total: &mut Charges, more: &Charges) {
    for (slot, more) in total.iter_mut().zip(more) {
        *slot = (slot.0 + more.0, slot.1 + more.1);
    }
}

impl Summary {
    /// Keeps only the cgroups `keep` accepts (by path), and the kills whose
    /// victim is in one of them.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.cgroups.retain(|path, _| keep(path));
        self.kills
            .retain(|kill| kill.victim.cgroup.as_deref().is_some_and(&mut keep));
    }

    /// A cgroup's display name: its path, `id:N`, or `(uncharged)`.
    #[must_use]
    pub fn name(&self, cgroup: Option<CgroupRef>) -> String {
        cgroup.map_or_else(|| "(uncharged)".to_owned(), |c| self.names.name(c))
    }

    fn entry(&mut self, cgroup: Option<CgroupRef>) -> &mut CgroupSummary {
        let name = self.name(cgroup);
        self.cgroups.entry(name).or_default()
    }

    /// An empty summary of a recording that started at `start_ns`, with
    /// pages of `page_size` bytes.
    #[must_use]
    pub fn new(start_ns: u64, page_size: u64) -> Self {
        Self {
            names: CgroupNames::default(),
            cgroups: BTreeMap::new(),
            kills: Vec::new(),
            stats: None,
            start_ns,
            last_ns: start_ns,
            intervals: Vec::new(),
            charges_from: None,
            memory_model: MemoryModel::new(page_size),
            pressure_model: PressureModel::new(),
            interval_charges: None,
            created: HashSet::new(),
        }
    }

    /// Folds in one event.
    pub fn add(&mut self, event: &Event) {
        match event {
            Event::CgroupCreated(named) => {
                self.names.learn(named);
                self.created
                    .insert((named.cgroup.hierarchy, named.cgroup.id));
            }
            Event::CgroupNamed(named) => self.names.learn(named),
            Event::OomKill(kill) => {
                let name = kill
                    .victim
                    .cgroup
                    .clone()
                    .unwrap_or_else(|| self.name(kill.victim.cgroup_ref));
                self.cgroups.entry(name).or_default().oom_kills += 1;
                self.last_ns = self.last_ns.max(kill.monotonic_ns);
                self.kills.push((**kill).clone());
            }
            Event::ThrottleSpan(span) => {
                self.last_ns = self.last_ns.max(span.end_ns);
                self.entry(span.cgroup_ref).spans.push(span.clone());
            }
            Event::Counters(counters) => self.counters(counters),
            Event::Memory(sample) => self.memory(sample),
            Event::Tick(tick) => {
                self.last_ns = self.last_ns.max(tick.end_ns);
                self.intervals.push((tick.start_ns, tick.end_ns));
                self.charges_from = self.interval_charges.take();
            }
            Event::Health(health) => {
                if health.is_final {
                    self.stats = Some(health.stats);
                }
                self.last_ns = self.last_ns.max(health.at_ns);
            }
            Event::Pressure(sample) => {
                let (cgroup, facts) = self.pressure_model.sample(sample);
                let totals = self.entry(Some(cgroup));
                totals.pressure.get_or_insert_default().add(&facts);
                if let Some(memory) = facts.memory {
                    totals
                        .memory_pressure_series
                        .push((sample.at_ns, memory.some_us));
                }
            }
            Event::Cpu(sample) => {
                if let Some(bandwidth) = sample.bandwidth {
                    self.entry(Some(sample.cgroup)).period_ns =
                        Some(bandwidth.period_us.saturating_mul(1000));
                }
            }
            Event::WorkloadNamed(_) | Event::CgroupRemoved(_) => {}
        }
    }

    /// An interval's page cache, stalls and charges, bucketed by owner the
    /// one way every view does ([`by_owner`]).
    fn counters(&mut self, counters: &ProbeCounters) {
        self.memory_model.counters(counters);
        self.last_ns = self.last_ns.max(counters.end_ns);
        self.interval_charges = Some(if counters.charges.is_some() {
            ChargesFrom::Tracepoints
        } else {
            ChargesFrom::MemoryStat
        });
        for activity in by_owner(counters) {
            let actors: Vec<(String, u64)> = activity
                .reclaimers
                .iter()
                .map(|(actor, _, pages)| (self.name(*actor), *pages))
                .collect();
            let totals = self.entry(activity.owner);
            totals.added += activity.added;
            totals.removed += activity.removed;
            for reason in CacheReason::ALL {
                let pages = activity.evicted[reason as usize];
                if pages > 0 {
                    *totals.evicted.entry(reason.name()).or_default() += pages;
                }
            }
            for (actor, pages) in actors {
                *totals.evicted_by.entry(actor).or_default() += pages;
            }
            let evicted = activity.evicted_total();
            if evicted > 0 {
                totals.evicted_series.push((counters.end_ns, evicted));
            }
            if let Some(charges) = activity.charges {
                add_charges(&mut totals.charges, &charges);
            }
        }
        for stall in &counters.stalls {
            self.entry(stall.cgroup)
                .stalls
                .entry(stall.kind)
                .and_modify(|s| s.merge(&stall.stats))
                .or_insert(*stall.stats);
        }
    }

    /// A cgroup's samples: its memory series, limit, watermark, events and
    /// `memory.stat` charges.
    fn memory(&mut self, sample: &MemorySample) {
        let facts = self.memory_model.sample(sample);
        let created = self
            .created
            .contains(&(sample.cgroup.hierarchy, sample.cgroup.id));
        let totals = self.entry(Some(sample.cgroup));
        totals.created_in_trace |= created;
        totals.memory.push(MemoryPoint {
            end_ns: sample.at_ns,
            usage_bytes: facts.usage_bytes,
            page_cache_bytes: facts.owned_bytes,
        });
        totals.limit_bytes = facts.limit_bytes.or(totals.limit_bytes);
        if let Some(peak) = facts.peak_bytes {
            let (first, highest) = totals.peak_watermark_bytes.get_or_insert((peak, peak));
            *highest = (*highest).max(peak).max(*first);
        }
        if let Some((events, _)) = &facts.events {
            totals.events = Some(totals.events.unwrap_or_default().plus(events));
        }
        if let Some(charges) = &facts.stat_charges {
            add_charges(&mut totals.charges, charges);
        }
    }

    /// Seconds from the start of the recording to its last record.
    #[must_use]
    pub fn seconds(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "durations well below 2^52 ns")]
        let ns = self.last_ns.saturating_sub(self.start_ns) as f64;
        ns / 1e9
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use cgtrace_common::{
        cgroup::CgroupRef,
        pagecache::{CacheReason, ChargeKind, ReclaimKind, StallStats},
    };

    use super::Summary;
    use crate::{
        cgroup::Version,
        event::{Event, Flow, MemorySample, ProbeCounters, Stall, Tick},
        trace::{record::TraceRecord, v1::V1Adapter},
    };

    const GROUP: CgroupRef = CgroupRef {
        id: 9,
        hierarchy: 4,
        level: 1,
    };

    fn summarize(events: &[Event]) -> Summary {
        let mut summary = Summary::new(0, 4096);
        for event in events {
            summary.add(event);
        }
        summary
    }

    /// Format 1's sample records, read as a replay reads them.
    fn sample_events() -> Vec<Event> {
        let mut adapter = V1Adapter::new();
        let mut out = VecDeque::new();
        for mut record in crate::trace::record::tests::samples() {
            // Refaults of uncharged pages come from the tracepoints.
            if let TraceRecord::Interval { charges_from, .. } = &mut record {
                *charges_from = crate::trace::record::ChargesFrom::Tracepoints;
            }
            adapter.push(record, &mut out);
        }
        out.into()
    }

    #[test]
    fn sums_every_family_per_cgroup_path() {
        let summary = summarize(&sample_events());
        let app = &summary.cgroups["/kubepods/pod1/app"];
        assert_eq!(app.oom_kills, 2);
        assert_eq!(app.spans.len(), 1);
        assert_eq!(app.evicted_total(), 32_760);
        assert_eq!(app.evicted["ancestor_limit"], 32_760);
        assert_eq!(app.evicted_by["(uncharged)"], 32_760);
        assert_eq!(app.stalls[&ReclaimKind::Memcg].count, 3);
        assert_eq!(
            app.peak_usage(),
            Some(100 << 20),
            "a watermark that never rose while recording may predate the trace"
        );
        assert_eq!(app.events.unwrap().max, Some(7));
        let uncharged = &summary.cgroups["(uncharged)"];
        assert_eq!(uncharged.charges[ChargeKind::RefaultFile as usize], (12, 0));
        assert_eq!(summary.intervals, vec![(5_000_000_000, 6_000_000_000)]);
        assert!(summary.stats.is_some());
    }

    fn interval(end_ns: u64, flows: &[u64], stalls: &[(u64, u64)]) -> Vec<Event> {
        let counters = ProbeCounters {
            start_ns: end_ns - 10,
            end_ns,
            flows: flows
                .iter()
                .map(|pages| Flow {
                    owner: Some(GROUP),
                    actor: Some(GROUP),
                    reason: CacheReason::OwnLimit,
                    pages: *pages,
                })
                .collect(),
            stalls: stalls
                .iter()
                .map(|(count, max_ns)| Stall {
                    cgroup: Some(GROUP),
                    kind: ReclaimKind::Memcg,
                    stats: Box::new(StallStats {
                        count: *count,
                        max_ns: *max_ns,
                        ..StallStats::default()
                    }),
                })
                .collect(),
            charges: None,
            files: None,
        };
        vec![
            Event::Counters(Box::new(counters)),
            Event::Tick(Tick {
                start_ns: end_ns - 10,
                end_ns,
            }),
        ]
    }

    #[test]
    fn merges_stalls_and_evictions_across_intervals() {
        let mut events = interval(10, &[5, 6], &[(2, 50)]);
        events.extend(interval(20, &[1], &[(3, 40)]));
        let summary = summarize(&events);
        let row = &summary.cgroups["id:9"];
        let all = row.all_stalls().unwrap();
        assert_eq!((all.count, all.max_ns), (5, 50));
        assert_eq!(row.evicted_series, vec![(10, 11), (20, 1)]);
        assert_eq!(row.evicted_by["id:9"], 12);
    }

    #[test]
    fn the_peak_is_the_kernels_watermark_where_it_rose_while_recording() {
        let memory = |usage: u64, peak: u64| {
            Event::Memory(Box::new(MemorySample {
                at_ns: 1,
                cgroup: GROUP,
                version: Version::V2,
                usage_bytes: Some(usage),
                limit_bytes: Some(64 << 20),
                peak_bytes: Some(peak),
                page_cache_bytes: None,
                events: None,
                stat_charges: None,
            }))
        };
        // An OOM victim charged past the limit between two samples.
        let summary = summarize(&[
            memory(1 << 20, 2 << 20),
            memory(60 << 20, 60 << 20),
            memory(0, 67 << 20),
        ]);
        assert_eq!(summary.cgroups["id:9"].peak_usage(), Some(67 << 20));
        // A sample read while a failing charge was briefly added to the
        // usage (the kernel backs it out): above what the group held.
        let summary = summarize(&[
            memory(1 << 20, 2 << 20),
            memory((64 << 20) + (256 << 10), 64 << 20),
            memory(0, 64 << 20),
        ]);
        assert_eq!(summary.cgroups["id:9"].peak_usage(), Some(64 << 20));
        // Created while recording, first sampled after its peak (a flight
        // recorder sees a group once the probe names it): the watermark is
        // still all the trace's.
        let created = Event::CgroupCreated(crate::event::CgroupNamed {
            cgroup: GROUP,
            path: "/job".to_owned(),
        });
        let summary = summarize(&[created, memory(1 << 20, 64 << 20), memory(0, 64 << 20)]);
        assert_eq!(summary.cgroups["/job"].peak_usage(), Some(64 << 20));
    }
}
