//! What `cgtrace top` shows, one frame per interval: each cgroup's memory
//! against its limit, page cache owned and evicted (and by whom), refaults,
//! reclaim stall p99, memory pressure, OOM kills, throttling and quota.
//!
//! Rows are keyed by path, not by cgroup id: on a v1 or hybrid host a
//! container has a memory cgroup and a cpu cgroup with different ids and
//! the same path, and one row shows both. The model is fed the session's
//! events and closes a [`Snapshot`] at each tick; what persists between
//! frames (usage, limit, quota, kills, the throttle history) stays until
//! the cgroup is removed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{ChargeKind, StallStats},
};

use crate::{
    event::{CpuSample, CpuStat, Event, OomKill, PressureSample, ProbeCounters, ThrottleSpan},
    model::{cache::by_owner, memory::MemoryModel},
};

/// Intervals of throttle history a row keeps for its sparkline.
pub const SPARK_INTERVALS: usize = 60;
/// OOM kills a row keeps for its detail pane.
const KILLS_KEPT: usize = 5;
/// Evictors and victims a detail pane lists.
const PEERS_SHOWN: usize = 8;

/// One cgroup's row in one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub path: String,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub cache_bytes: Option<u64>,
    /// Page cache evicted in the interval, bytes per second.
    pub evicted_per_s: f64,
    /// Of that, the share other cgroups' reclaim evicted.
    pub evicted_by_others: Option<f64>,
    /// Pages faulted back in after eviction, per second.
    pub refaults_per_s: f64,
    /// Reclaim stalls of the interval, 99th percentile.
    pub stall_p99_ns: Option<u64>,
    /// `memory.pressure` some avg10, percent (cgroup v2).
    pub memory_pressure: Option<f64>,
    /// OOM kills of tasks in this cgroup since the screen started.
    pub oom_kills: u64,
    /// The latest of them (`CLOCK_MONOTONIC` ns).
    pub last_kill_ns: Option<u64>,
    /// Throttled periods over periods, in the interval.
    pub throttled_share: Option<f64>,
    /// Throttled time per second of the interval, milliseconds.
    pub throttled_ms_per_s: Option<f64>,
    pub quota_millicores: Option<u64>,
    /// The cgroup was removed (its row stays a minute).
    pub gone: bool,
}

/// What the detail pane shows of one cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detail {
    /// Who evicted this cgroup's page cache, bytes per second, most first.
    pub evicted_by: Vec<(String, f64)>,
    /// Whose page cache this cgroup evicted, bytes per second, most first.
    pub evicts: Vec<(String, f64)>,
    /// Its latest OOM kills, newest last.
    pub kills: Vec<Kill>,
    /// Throttled nanoseconds per interval, oldest first.
    pub throttled_ns: Vec<u64>,
}

/// An OOM kill as the detail pane lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kill {
    pub at_ns: u64,
    pub pid: u32,
    pub comm: String,
    /// The cgroup whose limit was hit (`None`: the machine's memory).
    pub limit_path: Option<String>,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
}

/// One interval: every row, and the detail of each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub start_ns: u64,
    pub end_ns: u64,
    pub rows: Vec<Row>,
    pub details: HashMap<String, Detail>,
}

/// What persists of a path between intervals.
#[derive(Debug, Default)]
struct Group {
    usage_bytes: Option<u64>,
    limit_bytes: Option<u64>,
    cache_bytes: Option<u64>,
    quota_millicores: Option<u64>,
    oom_kills: u64,
    kills: VecDeque<Kill>,
    throttle_history: VecDeque<u64>,
    // The interval's:
    evicted_pages: u64,
    evicted_by_others_pages: u64,
    refault_pages: u64,
    /// Boxed: most groups never stall, and an inline histogram would make
    /// every group several cache lines the interval's sweep must touch.
    stalls: Option<Box<StallStats>>,
    memory_pressure: Option<f64>,
    /// The CFS counters' change since the previous read, and over how
    /// many seconds.
    cpu_delta: Option<(CpuStat, f64)>,
    throttled_span_ns: u64,
    evicted_by: BTreeMap<String, u64>,
    evicts: BTreeMap<String, u64>,
    /// When the cgroup was removed: its row stays a while, so a kill that
    /// removed it is still seen.
    removed_at_ns: Option<u64>,
}

/// How long a removed cgroup's row stays.
pub const GONE_KEPT_NS: u64 = 60_000_000_000;

/// Events in, a [`Snapshot`] per tick out.
#[derive(Debug)]
pub struct TopModel {
    groups: HashMap<String, Group>,
    memory: MemoryModel,
    page_size: u64,
    /// The last `cpu.stat` of each cpu cgroup (cumulative counters), and
    /// when it was read.
    cpu_before: HashMap<(u32, u64), (CpuStat, u64)>,
}

impl TopModel {
    #[must_use]
    pub fn new(page_size: u64) -> Self {
        Self {
            groups: HashMap::new(),
            memory: MemoryModel::new(page_size),
            page_size,
            cpu_before: HashMap::new(),
        }
    }

    /// Takes in one event; `name` gives a cgroup's path where the session
    /// knows it. Returns the frame a tick closes.
    pub fn event(
        &mut self,
        event: &Event,
        name: &mut dyn FnMut(CgroupRef) -> Option<String>,
    ) -> Option<Snapshot> {
        match event {
            Event::Counters(counters) => self.counters(counters, name),
            Event::Memory(sample) => {
                let facts = self.memory.sample(sample);
                if let Some(group) = self.group(Some(sample.cgroup), name) {
                    group.usage_bytes = facts.usage_bytes.or(group.usage_bytes);
                    group.limit_bytes = facts.limit_bytes.or(group.limit_bytes);
                    group.cache_bytes = facts.owned_bytes.or(group.cache_bytes);
                    if let Some(charges) = facts.stat_charges {
                        // Where the memcg stat tracepoints are missing.
                        group.refault_pages = group.refault_pages.max(refaults(&charges));
                    }
                }
            }
            Event::Cpu(sample) => self.cpu(sample, name),
            Event::Pressure(sample) => self.pressure(sample, name),
            Event::OomKill(kill) => self.kill(kill),
            Event::ThrottleSpan(span) => self.span(span, name),
            Event::CgroupRemoved(removed) => {
                if let Some(group) = name(removed.cgroup).and_then(|p| self.groups.get_mut(&p)) {
                    group.removed_at_ns = Some(removed.at_ns);
                }
                self.cpu_before
                    .remove(&(removed.cgroup.hierarchy, removed.cgroup.id));
            }
            Event::Tick(tick) => return Some(self.close(tick.start_ns, tick.end_ns)),
            _ => {}
        }
        None
    }

    fn group(
        &mut self,
        cgroup: Option<CgroupRef>,
        name: &mut dyn FnMut(CgroupRef) -> Option<String>,
    ) -> Option<&mut Group> {
        let path = name(cgroup?)?;
        Some(self.groups.entry(path).or_default())
    }

    fn counters(
        &mut self,
        counters: &ProbeCounters,
        name: &mut dyn FnMut(CgroupRef) -> Option<String>,
    ) {
        self.memory.counters(counters);
        for activity in by_owner(counters) {
            // One lookup of the owner's path serves all its figures.
            let Some(owner) = activity.owner.and_then(&mut *name) else {
                continue;
            };
            let group = self.groups.entry(owner.clone()).or_default();
            if let Some(charges) = &activity.charges {
                group.refault_pages += refaults(charges);
            }
            group.evicted_pages += activity.evicted_total();
            group.evicted_by_others_pages += activity.evicted_by_others;
            for (actor, _, pages) in &activity.reclaimers {
                let actor_name = actor
                    .and_then(&mut *name)
                    .unwrap_or_else(|| "(the kernel: kswapd or global reclaim)".to_owned());
                if actor_name == owner {
                    continue;
                }
                *self
                    .groups
                    .entry(owner.clone())
                    .or_default()
                    .evicted_by
                    .entry(actor_name.clone())
                    .or_default() += pages;
                if actor.is_some() {
                    let evictor = self.groups.entry(actor_name).or_default();
                    *evictor.evicts.entry(owner.clone()).or_default() += pages;
                }
            }
        }
        for stall in &counters.stalls {
            if let Some(group) = self.group(stall.cgroup, name) {
                group
                    .stalls
                    .get_or_insert_with(|| Box::new(StallStats::ZERO))
                    .merge(&stall.stats);
            }
        }
    }

    fn cpu(&mut self, sample: &CpuSample, name: &mut dyn FnMut(CgroupRef) -> Option<String>) {
        let key = (sample.cgroup.hierarchy, sample.cgroup.id);
        // Since the cgroup's previous read, which a quiet cgroup's may be
        // several intervals back.
        let delta = sample.stat.and_then(|now| {
            let (before, at) = self.cpu_before.insert(key, (now, sample.at_ns))?;
            #[expect(clippy::cast_precision_loss, reason = "seconds")]
            let seconds = sample.at_ns.saturating_sub(at) as f64 / 1e9;
            (seconds > 0.0).then(|| (now.since(&before), seconds))
        });
        let Some(group) = self.group(Some(sample.cgroup), name) else {
            return;
        };
        if let Some(bandwidth) = sample.bandwidth {
            group.quota_millicores = bandwidth.millicores();
        }
        if delta.is_some() {
            group.cpu_delta = delta;
        }
    }

    fn pressure(
        &mut self,
        sample: &PressureSample,
        name: &mut dyn FnMut(CgroupRef) -> Option<String>,
    ) {
        let Some(memory) = sample.memory else {
            return;
        };
        if let Some(group) = self.group(Some(sample.cgroup), name) {
            group.memory_pressure = Some(f64::from(memory.some.avg10_centi) / 100.0);
        }
    }

    fn kill(&mut self, kill: &OomKill) {
        if kill.counted_as_kill == Some(false) {
            return;
        }
        let Some(path) = kill.victim.cgroup.clone() else {
            return;
        };
        let group = self.groups.entry(path).or_default();
        group.oom_kills += 1;
        let memcg = kill.oom_memcg.as_ref();
        group.kills.push_back(Kill {
            at_ns: kill.monotonic_ns,
            pid: kill.victim.pid,
            comm: kill.victim.comm.clone(),
            limit_path: memcg.and_then(|m| m.path.clone()),
            limit_bytes: memcg.and_then(|m| m.limit_bytes),
            usage_bytes: memcg.and_then(|m| m.usage_bytes),
        });
        if group.kills.len() > KILLS_KEPT {
            group.kills.pop_front();
        }
    }

    fn span(&mut self, span: &ThrottleSpan, name: &mut dyn FnMut(CgroupRef) -> Option<String>) {
        if let Some(group) = self.group(span.cgroup_ref, name) {
            group.throttled_span_ns += span.end_ns.saturating_sub(span.start_ns);
        }
    }

    /// The frame of the interval that ended at `end_ns`; the interval's
    /// figures start again from zero.
    fn close(&mut self, start_ns: u64, end_ns: u64) -> Snapshot {
        #[expect(clippy::cast_precision_loss, reason = "an interval in seconds")]
        let seconds = (end_ns.saturating_sub(start_ns) as f64 / 1e9).max(1e-3);
        let page_size = self.page_size;
        #[expect(clippy::cast_precision_loss, reason = "rates")]
        let per_second = |pages: u64| (pages.saturating_mul(page_size)) as f64 / seconds;
        let mut frame = Snapshot {
            start_ns,
            end_ns,
            ..Snapshot::default()
        };
        self.groups.retain(|_, group| {
            group
                .removed_at_ns
                .is_none_or(|at| end_ns.saturating_sub(at) < GONE_KEPT_NS)
        });
        for (path, group) in &mut self.groups {
            group.record_throttle_history();
            #[expect(clippy::cast_precision_loss, reason = "ratios")]
            let row = Row {
                path: path.clone(),
                usage_bytes: group.usage_bytes,
                limit_bytes: group.limit_bytes,
                cache_bytes: group.cache_bytes,
                evicted_per_s: per_second(group.evicted_pages),
                evicted_by_others: (group.evicted_pages > 0)
                    .then(|| group.evicted_by_others_pages as f64 / group.evicted_pages as f64),
                refaults_per_s: group.refault_pages as f64 / seconds,
                stall_p99_ns: group.stalls.as_ref().and_then(|s| s.quantile_ns(0.99)),
                memory_pressure: group.memory_pressure,
                oom_kills: group.oom_kills,
                last_kill_ns: group.kills.back().map(|k| k.at_ns),
                throttled_share: group.cpu_delta.and_then(|(d, _)| {
                    (d.nr_periods > 0).then(|| d.nr_throttled as f64 / d.nr_periods as f64)
                }),
                throttled_ms_per_s: group
                    .cpu_delta
                    .map(|(d, over)| d.throttled_ns as f64 / 1e6 / over),
                quota_millicores: group.quota_millicores,
                gone: group.removed_at_ns.is_some(),
            };
            let peers = |peers: &BTreeMap<String, u64>| {
                let mut list: Vec<(String, f64)> = peers
                    .iter()
                    .map(|(name, pages)| (name.clone(), per_second(*pages)))
                    .collect();
                list.sort_by(|a, b| b.1.total_cmp(&a.1));
                list.truncate(PEERS_SHOWN);
                list
            };
            // Most cgroups have nothing to detail: only the others' are kept
            // (a replay keeps every interval's).
            if !group.evicted_by.is_empty()
                || !group.evicts.is_empty()
                || !group.kills.is_empty()
                || !group.throttle_history.is_empty()
            {
                frame.details.insert(
                    path.clone(),
                    Detail {
                        evicted_by: peers(&group.evicted_by),
                        evicts: peers(&group.evicts),
                        kills: group.kills.iter().cloned().collect(),
                        throttled_ns: group.throttle_history.iter().copied().collect(),
                    },
                );
            }
            frame.rows.push(row);
            group.reset_interval();
        }
        frame.rows.sort_by(|a, b| a.path.cmp(&b.path));
        frame
    }
}

impl Group {
    /// The interval's throttled time joins the sparkline's history. The
    /// history starts at a group's first throttled interval and is let go
    /// once a whole window has none, so the many groups that are never
    /// throttled hold (and touch) nothing for it.
    fn record_throttle_history(&mut self) {
        if self.throttled_span_ns == 0 && self.throttle_history.is_empty() {
            return;
        }
        self.throttle_history.push_back(self.throttled_span_ns);
        if self.throttle_history.len() > SPARK_INTERVALS {
            self.throttle_history.pop_front();
        }
        if self.throttle_history.iter().all(|ns| *ns == 0) {
            self.throttle_history = VecDeque::new();
        }
    }

    fn reset_interval(&mut self) {
        self.evicted_pages = 0;
        self.evicted_by_others_pages = 0;
        self.refault_pages = 0;
        self.stalls = None;
        self.cpu_delta = None;
        self.throttled_span_ns = 0;
        self.evicted_by.clear();
        self.evicts.clear();
    }
}

/// Refaulted pages (anon and file) among charges indexed by `ChargeKind`.
fn refaults(charges: &[(u64, u64)]) -> u64 {
    [ChargeKind::RefaultAnon, ChargeKind::RefaultFile]
        .iter()
        .map(|kind| charges.get(*kind as usize).map_or(0, |c| c.0))
        .sum()
}

#[cfg(test)]
mod tests {
    use cgtrace_common::{cgroup::CgroupRef, pagecache::CacheReason};

    use super::{GONE_KEPT_NS, TopModel};
    use crate::{
        cgroup::Version,
        event::{
            Bandwidth, CgroupRemoved, CpuSample, CpuStat, Event, Flow, MemorySample, ProbeCounters,
            ThrottleSpan, Tick,
        },
    };

    const SECOND: u64 = 1_000_000_000;
    const VICTIM: CgroupRef = CgroupRef {
        id: 10,
        hierarchy: 4,
        level: 1,
    };
    const NOISY: CgroupRef = CgroupRef {
        id: 11,
        hierarchy: 4,
        level: 1,
    };
    /// The victim's cpu cgroup: another id, the same path (v1).
    const VICTIM_CPU: CgroupRef = CgroupRef {
        id: 20,
        hierarchy: 1,
        level: 1,
    };

    fn name(cgroup: CgroupRef) -> Option<String> {
        match cgroup.id {
            10 | 20 => Some("/victim".to_owned()),
            11 => Some("/noisy".to_owned()),
            _ => None,
        }
    }

    fn tick(model: &mut TopModel, second: u64) -> super::Snapshot {
        model
            .event(
                &Event::Tick(Tick {
                    start_ns: (second - 1) * SECOND,
                    end_ns: second * SECOND,
                }),
                &mut name,
            )
            .expect("a tick closes a snapshot")
    }

    fn cpu(throttled: u64, periods: u64, at_ns: u64) -> Event {
        Event::Cpu(CpuSample {
            at_ns,
            cgroup: VICTIM_CPU,
            stat: Some(CpuStat {
                nr_periods: periods,
                nr_throttled: throttled,
                throttled_ns: throttled * 50_000_000,
                usage_ns: None,
            }),
            bandwidth: Some(Bandwidth {
                quota_us: Some(20_000),
                period_us: 100_000,
            }),
            usage_ns: None,
        })
    }

    #[test]
    fn one_row_per_path_with_rates_peers_and_throttling() {
        let mut model = TopModel::new(4096);
        model.event(&cpu(0, 0, 0), &mut name);
        tick(&mut model, 1);
        for event in [
            Event::Counters(Box::new(ProbeCounters {
                flows: vec![
                    Flow {
                        owner: Some(VICTIM),
                        actor: Some(NOISY),
                        reason: CacheReason::AncestorLimit,
                        pages: 256,
                    },
                    Flow {
                        owner: Some(VICTIM),
                        actor: Some(VICTIM),
                        reason: CacheReason::OwnLimit,
                        pages: 256,
                    },
                ],
                ..ProbeCounters::default()
            })),
            Event::Memory(Box::new(MemorySample {
                at_ns: 0,
                cgroup: VICTIM,
                version: Version::V1,
                usage_bytes: Some(90 << 20),
                limit_bytes: Some(100 << 20),
                peak_bytes: None,
                page_cache_bytes: Some(40 << 20),
                events: None,
                stat_charges: None,
            })),
            cpu(8, 10, SECOND),
            Event::ThrottleSpan(ThrottleSpan {
                cgroup: None,
                cgroup_ref: Some(VICTIM_CPU),
                cpu: 0,
                pid: 1,
                comm: "spin".into(),
                start_ns: SECOND,
                end_ns: SECOND + 80_000_000,
            }),
        ] {
            assert!(model.event(&event, &mut name).is_none());
        }
        let snapshot = tick(&mut model, 2);
        let victim = snapshot.rows.iter().find(|r| r.path == "/victim").unwrap();
        assert_eq!(victim.usage_bytes, Some(90 << 20));
        assert_eq!(victim.limit_bytes, Some(100 << 20));
        assert_eq!(victim.cache_bytes, Some(40 << 20));
        assert!((victim.evicted_per_s - f64::from(2 << 20)).abs() < 1.0);
        assert_eq!(victim.evicted_by_others, Some(0.5));
        assert_eq!(victim.throttled_share, Some(0.8));
        assert_eq!(victim.throttled_ms_per_s, Some(400.0));
        assert_eq!(victim.quota_millicores, Some(200));
        let detail = &snapshot.details["/victim"];
        assert_eq!(
            detail.evicted_by,
            [("/noisy".to_owned(), f64::from(1 << 20))]
        );
        assert_eq!(detail.throttled_ns.last(), Some(&80_000_000));
        assert_eq!(
            snapshot.details["/noisy"].evicts,
            [("/victim".to_owned(), f64::from(1 << 20))]
        );

        // The next interval starts from zero; what persists stays.
        let quiet = tick(&mut model, 3);
        let victim = quiet.rows.iter().find(|r| r.path == "/victim").unwrap();
        assert!(victim.evicted_per_s.abs() < f64::EPSILON);
        assert_eq!(victim.usage_bytes, Some(90 << 20));
        assert_eq!(victim.throttled_share, None, "no sample this interval");

        // Removed: shown as gone for a while, then dropped.
        model.event(
            &Event::CgroupRemoved(CgroupRemoved {
                at_ns: 3 * SECOND,
                cgroup: VICTIM,
            }),
            &mut name,
        );
        assert!(
            tick(&mut model, 4)
                .rows
                .iter()
                .any(|r| r.path == "/victim" && r.gone)
        );
        let later = 4 + GONE_KEPT_NS / SECOND;
        assert!(
            !tick(&mut model, later)
                .rows
                .iter()
                .any(|r| r.path == "/victim")
        );
    }
}
