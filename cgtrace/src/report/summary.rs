//! What a recorded run did, per cgroup, built from a trace's records: the
//! totals the text and JSON reports print, and the time series the HTML
//! report plots.
//!
//! Cgroups are keyed by path, so on a v1 host the memory and cpu cgroups of
//! one workload (same path, two hierarchies) make one row.

use std::collections::BTreeMap;

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CHARGE_KINDS, CacheReason, ReclaimKind, StallStats},
};

use crate::{
    cgroup::{poller::Charges, stat::MemoryEvents},
    event::{OomKill, ThrottleSpan},
    probe::ProbeStats,
    trace::{
        file::{CgroupNames, Trace},
        record::{ChargesFrom, TraceRecord},
    },
    view::cache::reason_name,
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
    /// Memory events over the trace (each field summed where known).
    pub events: Option<MemoryEvents>,
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
            events: None,
        }
    }
}

impl CgroupSummary {
    #[must_use]
    pub fn evicted_total(&self) -> u64 {
        self.evicted.values().sum()
    }

    /// The highest usage during the trace: the kernel's own watermark where
    /// it rose while recording (it sees the moments between samples, such
    /// as an OOM victim charging past the limit as it exits), else the
    /// highest sample (a watermark that never rose may predate the trace).
    #[must_use]
    pub fn peak_usage(&self) -> Option<u64> {
        let sampled = self.memory.iter().filter_map(|p| p.usage_bytes).max();
        let watermark = self
            .peak_watermark_bytes
            .and_then(|(first, highest)| (highest > first).then_some(highest));
        watermark.max(sampled)
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
}

fn add_events(total: &mut Option<MemoryEvents>, more: &MemoryEvents) {
    let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    let t = total.get_or_insert_default();
    *t = MemoryEvents {
        high: sum(t.high, more.high),
        max: sum(t.max, more.max),
        oom: sum(t.oom, more.oom),
        oom_kill: sum(t.oom_kill, more.oom_kill),
    };
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

    #[must_use]
    pub fn build(trace: &Trace) -> Self {
        let mut summary = Self {
            names: trace.cgroup_names(),
            cgroups: BTreeMap::new(),
            kills: Vec::new(),
            stats: None,
            start_ns: trace.header.start_monotonic_ns,
            last_ns: trace.header.start_monotonic_ns,
            intervals: Vec::new(),
            charges_from: None,
        };
        for record in &trace.records {
            summary.add(record);
        }
        summary
    }

    fn add(&mut self, record: &TraceRecord) {
        match record {
            TraceRecord::CgroupName { .. } | TraceRecord::WorkloadNames { .. } => {}
            TraceRecord::OomKill(kill) => {
                let name = kill
                    .victim
                    .cgroup
                    .clone()
                    .unwrap_or_else(|| self.name(kill.victim.cgroup_ref));
                self.cgroups.entry(name).or_default().oom_kills += 1;
                self.last_ns = self.last_ns.max(kill.monotonic_ns);
                self.kills.push((**kill).clone());
            }
            TraceRecord::Throttle(span) => {
                self.last_ns = self.last_ns.max(span.end_ns);
                self.entry(span.cgroup_ref).spans.push(span.clone());
            }
            TraceRecord::CacheFlow {
                end_ns,
                owner,
                actor,
                reason,
                pages,
            } => {
                let actor_name = self.name(*actor);
                self.last_ns = self.last_ns.max(*end_ns);
                let totals = self.entry(*owner);
                match reason {
                    CacheReason::Added => totals.added += pages,
                    CacheReason::Removed => totals.removed += pages,
                    reason => {
                        *totals.evicted.entry(reason_name(*reason)).or_default() += pages;
                        *totals.evicted_by.entry(actor_name).or_default() += pages;
                        match totals.evicted_series.last_mut() {
                            Some((end, sum)) if end == end_ns => *sum += pages,
                            _ => totals.evicted_series.push((*end_ns, *pages)),
                        }
                    }
                }
            }
            TraceRecord::Stall {
                cgroup,
                kind,
                stats,
                ..
            } => {
                self.entry(*cgroup)
                    .stalls
                    .entry(*kind)
                    .or_default()
                    .merge(stats);
            }
            TraceRecord::Charge {
                cgroup,
                kind,
                charged,
                uncharged,
                ..
            } => {
                let slot = &mut self.entry(*cgroup).charges[*kind as usize];
                slot.0 += charged;
                slot.1 += uncharged;
            }
            TraceRecord::Memory {
                end_ns,
                cgroup,
                sample,
            } => {
                let totals = self.entry(Some(*cgroup));
                totals.memory.push(MemoryPoint {
                    end_ns: *end_ns,
                    usage_bytes: sample.usage_bytes,
                    page_cache_bytes: sample.page_cache_bytes,
                });
                totals.limit_bytes = sample.limit_bytes.or(totals.limit_bytes);
                if let Some(peak) = sample.peak_bytes {
                    let (first, highest) = totals.peak_watermark_bytes.get_or_insert((peak, peak));
                    *highest = (*highest).max(peak).max(*first);
                }
                if let Some((events, _)) = &sample.events {
                    add_events(&mut totals.events, events);
                }
            }
            TraceRecord::Interval {
                start_ns,
                end_ns,
                charges_from,
            } => {
                self.last_ns = self.last_ns.max(*end_ns);
                self.intervals.push((*start_ns, *end_ns));
                self.charges_from = Some(*charges_from);
            }
            TraceRecord::Stats {
                monotonic_ns,
                stats,
            } => {
                self.stats = Some(*stats);
                self.last_ns = self.last_ns.max(*monotonic_ns);
            }
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
    use cgtrace_common::pagecache::{CacheReason, ChargeKind, ReclaimKind, StallStats};

    use super::Summary;
    use crate::trace::{file::Trace, record::TraceRecord};

    fn trace(records: Vec<TraceRecord>) -> Trace {
        Trace {
            header: crate::trace::file::tests::header(),
            records,
            ending: crate::trace::file::Ending::Complete,
            skipped: 0,
        }
    }

    #[test]
    fn sums_every_family_per_cgroup_path() {
        let records = crate::trace::record::tests::samples();
        let summary = Summary::build(&trace(records));
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

    #[test]
    fn merges_stalls_and_evictions_across_intervals() {
        let cgroup = cgtrace_common::cgroup::CgroupRef {
            id: 9,
            hierarchy: 4,
            level: 1,
        };
        let stall = |count, max_ns| TraceRecord::Stall {
            end_ns: 1,
            cgroup: Some(cgroup),
            kind: ReclaimKind::Memcg,
            stats: Box::new(StallStats {
                count,
                max_ns,
                ..StallStats::default()
            }),
        };
        let flow = |end_ns, pages| TraceRecord::CacheFlow {
            end_ns,
            owner: Some(cgroup),
            actor: Some(cgroup),
            reason: CacheReason::OwnLimit,
            pages,
        };
        let summary = Summary::build(&trace(vec![
            stall(2, 50),
            stall(3, 40),
            flow(10, 5),
            flow(10, 6),
            flow(20, 1),
        ]));
        let row = &summary.cgroups["id:9"];
        let all = row.all_stalls().unwrap();
        assert_eq!((all.count, all.max_ns), (5, 50));
        assert_eq!(row.evicted_series, vec![(10, 11), (20, 1)]);
        assert_eq!(row.evicted_by["id:9"], 12);
    }

    #[test]
    fn the_peak_is_the_kernels_watermark_where_it_rose_while_recording() {
        use crate::cgroup::stat::MemorySample;
        let cgroup = cgtrace_common::cgroup::CgroupRef {
            id: 9,
            hierarchy: 4,
            level: 1,
        };
        let memory = |usage: u64, peak: u64| TraceRecord::Memory {
            end_ns: 1,
            cgroup,
            sample: MemorySample {
                usage_bytes: Some(usage),
                limit_bytes: Some(64 << 20),
                peak_bytes: Some(peak),
                ..MemorySample::default()
            },
        };
        // An OOM victim charged past the limit between two samples.
        let summary = Summary::build(&trace(vec![
            memory(1 << 20, 2 << 20),
            memory(60 << 20, 60 << 20),
            memory(0, 67 << 20),
        ]));
        assert_eq!(summary.cgroups["id:9"].peak_usage(), Some(67 << 20));
    }
}
