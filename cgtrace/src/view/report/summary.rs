//! What a recorded run did, per cgroup, built from a trace's events: the
//! totals the text, JSON and HTML reports print. Each cgroup's state is of
//! constant size, so a recording of any length is summed in memory that
//! grows only with the cgroups it names; the HTML report's time series are
//! gathered in a second pass, for the cgroups its charts draw
//! ([`super::series`]).
//!
//! Cgroups are keyed by path, so on a v1 host the memory and cpu cgroups of
//! one workload (same path, two hierarchies) make one row.

use std::collections::{BTreeMap, HashSet};

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CACHE_REASONS, CHARGE_KINDS, ReclaimKind, StallStats},
};

use crate::{
    event::{Charges, Event, MemoryEvents, MemorySample, OomKill, ProbeCounters},
    model::{
        cache::by_owner,
        memory::MemoryModel,
        pressure::{PressureFacts, PressureModel},
        throttle::SpanTally,
    },
    probe::ProbeStats,
    session::{CgroupNames, Context, End, Flow, Sink},
    trace::record::ChargesFrom,
};

/// One cgroup's totals over the whole trace.
#[derive(Clone, Debug)]
pub struct CgroupSummary {
    pub oom_kills: u64,
    /// Its throttle spans, summed.
    pub throttle: SpanTally,
    /// Page-cache pages added and removed (deleted, truncated: not reclaim).
    pub added: u64,
    pub removed: u64,
    /// Evicted pages by reason (indexed by `CacheReason`).
    pub evicted: [u64; CACHE_REASONS],
    /// Evicted pages by reclaimer name, in name order (a sorted list: a
    /// map's node is larger than the few reclaimers a cgroup has).
    pub evicted_by: Vec<(String, u64)>,
    /// Reclaim stalls by kind, in kind order.
    pub stalls: Vec<(ReclaimKind, CompactStalls)>,
    /// `(charged, uncharged)` pages per `ChargeKind` (refaults: counts).
    pub charges: Charges,
    /// The highest usage and page cache any sample saw.
    pub sampled_usage_max: Option<u64>,
    pub sampled_page_cache_max: Option<u64>,
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
}

impl Default for CgroupSummary {
    fn default() -> Self {
        Self {
            oom_kills: 0,
            throttle: SpanTally::default(),
            added: 0,
            removed: 0,
            evicted: [0; CACHE_REASONS],
            evicted_by: Vec::new(),
            stalls: Vec::new(),
            charges: [(0, 0); CHARGE_KINDS],
            sampled_usage_max: None,
            sampled_page_cache_max: None,
            limit_bytes: None,
            peak_watermark_bytes: None,
            created_in_trace: false,
            events: None,
            period_ns: None,
            pressure: None,
        }
    }
}

impl CgroupSummary {
    #[must_use]
    pub fn evicted_total(&self) -> u64 {
        self.evicted.iter().sum()
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
        watermark.or(self.sampled_usage_max)
    }

    #[must_use]
    pub fn throttled_ns(&self) -> u64 {
        self.throttle.total_ns
    }

    /// The periods the kernel counted as throttled, from the spans (see
    /// [`crate::model::throttle::periods_in`]).
    #[must_use]
    pub fn throttled_periods(&self) -> u64 {
        self.throttle.periods(self.period_ns)
    }

    /// All reclaim stalls of the cgroup, whatever their kind.
    #[must_use]
    pub fn all_stalls(&self) -> Option<StallStats> {
        let mut stalls = self.stalls.iter().map(|(_, s)| s.expand());
        let mut all = stalls.next()?;
        for more in stalls {
            all.merge(&more);
        }
        Some(all)
    }

    /// Whether the memory part of the report has anything to say.
    #[must_use]
    pub fn has_memory_activity(&self) -> bool {
        self.oom_kills > 0
            || self.added + self.removed + self.evicted_total() > 0
            || self.stalls.iter().any(|(_, s)| s.count > 0)
            || self.sampled_usage_max.is_some_and(|u| u > 0)
    }
}

/// A cgroup's reclaim stalls of one kind over the trace, the histogram
/// kept sparse: few of its buckets are ever used, and whole it takes
/// 1.3 KB, for every cgroup a long recording names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactStalls {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub scanned: u64,
    pub reclaimed: u64,
    pub dirty: u64,
    pub writeback: u64,
    /// `(bucket, count)` of the buckets in use, in bucket order.
    buckets: Vec<(u16, u64)>,
}

impl CompactStalls {
    /// Adds an interval's stalls.
    pub fn add(&mut self, stats: &StallStats) {
        self.count += stats.count;
        self.total_ns += stats.total_ns;
        self.max_ns = self.max_ns.max(stats.max_ns);
        self.scanned += stats.scanned;
        self.reclaimed += stats.reclaimed;
        self.dirty += stats.dirty;
        self.writeback += stats.writeback;
        for (bucket, &count) in stats.buckets.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let bucket = u16::try_from(bucket).unwrap_or(u16::MAX);
            match self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
                Ok(at) => self.buckets[at].1 += count,
                Err(at) => self.buckets.insert(at, (bucket, count)),
            }
        }
    }

    /// The whole histogram, for its percentiles.
    #[must_use]
    pub fn expand(&self) -> StallStats {
        let mut stats = StallStats {
            count: self.count,
            total_ns: self.total_ns,
            max_ns: self.max_ns,
            scanned: self.scanned,
            reclaimed: self.reclaimed,
            dirty: self.dirty,
            writeback: self.writeback,
            ..StallStats::ZERO
        };
        for &(bucket, count) in &self.buckets {
            if let Some(slot) = stats.buckets.get_mut(usize::from(bucket)) {
                *slot += count;
            }
        }
        stats
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
    /// The recorded sampling intervals.
    pub intervals: u64,
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
            intervals: 0,
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
                let totals = self.entry(span.cgroup_ref);
                totals.throttle.add(span, totals.period_ns);
            }
            Event::Counters(counters) => self.counters(counters),
            Event::Memory(sample) => self.memory(sample),
            Event::Tick(tick) => {
                self.last_ns = self.last_ns.max(tick.end_ns);
                self.intervals += 1;
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
            for (total, pages) in totals.evicted.iter_mut().zip(activity.evicted) {
                *total += pages;
            }
            for (actor, pages) in actors {
                match totals
                    .evicted_by
                    .binary_search_by(|(name, _)| name.as_str().cmp(&actor))
                {
                    Ok(at) => totals.evicted_by[at].1 += pages,
                    Err(at) => totals.evicted_by.insert(at, (actor, pages)),
                }
            }
            if let Some(charges) = activity.charges {
                add_charges(&mut totals.charges, &charges);
            }
        }
        for stall in &counters.stalls {
            let stalls = &mut self.entry(stall.cgroup).stalls;
            let at = match stalls.binary_search_by_key(&stall.kind, |(kind, _)| *kind) {
                Ok(at) => at,
                Err(at) => {
                    stalls.insert(at, (stall.kind, CompactStalls::default()));
                    at
                }
            };
            stalls[at].1.add(&stall.stats);
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
        totals.sampled_usage_max = totals.sampled_usage_max.max(facts.usage_bytes);
        totals.sampled_page_cache_max = totals.sampled_page_cache_max.max(facts.owned_bytes);
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
        assert_eq!(app.throttle.spans, 1);
        assert_eq!(app.evicted_total(), 32_760);
        assert_eq!(app.evicted[CacheReason::AncestorLimit as usize], 32_760);
        assert_eq!(app.evicted_by, [("(uncharged)".to_owned(), 32_760)]);
        assert_eq!(app.stalls, [(ReclaimKind::Memcg, app.stalls[0].1.clone())]);
        assert_eq!(app.stalls[0].1.count, 3);
        assert_eq!(
            app.peak_usage(),
            Some(100 << 20),
            "a watermark that never rose while recording may predate the trace"
        );
        assert_eq!(app.events.unwrap().max, Some(7));
        let uncharged = &summary.cgroups["(uncharged)"];
        assert_eq!(uncharged.charges[ChargeKind::RefaultFile as usize], (12, 0));
        assert_eq!(summary.intervals, 1);
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
        assert_eq!(row.evicted_by, [("id:9".to_owned(), 12)]);
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
