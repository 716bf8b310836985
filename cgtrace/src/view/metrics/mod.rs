//! `cgtrace serve`'s Prometheus families, kept up to date from the
//! session's events by [`Metrics`] (a sink); the endpoint encodes the
//! registry on each scrape.
//!
//! A cgroup's series are labelled `namespace`, `pod`, `container` when it
//! belongs to a Kubernetes pod, and `cgroup` (its path) otherwise.

use std::{
    collections::{HashMap, HashSet},
    rc::Rc,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CacheReason, ChargeKind},
};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use crate::{
    event::{
        Constraint, CpuSample, CpuStat, Event, MemorySample, OomKill, PressureSample,
        ProbeCounters, ProbeStats, ThrottleSpan,
    },
    identity::{Identity, path::Workload},
    model::{cache::by_owner, memory::MemoryModel},
    session::{Context, End, Flow, Sink},
};

mod histogram;
mod programs;
mod tracked;

use histogram::Durations;
pub use programs::ProgramRuns;
use tracked::{Budget, Tracked};

type Count = Tracked<Counter>;
type Bytes = Tracked<Gauge>;
type Seconds = Tracked<Counter<f64, AtomicU64>>;
type Fraction = Tracked<Gauge<f64, AtomicU64>>;
type Histogram = Tracked<Durations>;

/// A series' labels, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// The families, and the registry that encodes them.
pub struct Metrics {
    registry: Arc<Registry>,
    oom_kills: Count,
    memory: MemoryFamilies,
    cache: CacheFamilies,
    cpu: CpuFamilies,
    probe: ProbeFamilies,
    /// The probe's counters as last reported, to add only what moved.
    last_stats: ProbeStats,
    /// Page cache owned and `memory.stat` charges, from the samples (made
    /// with the session's page size on the first event).
    memory_model: Option<MemoryModel>,
    /// Each cgroup's `cpu.stat` as last sampled, likewise.
    last_cpu: HashMap<CgroupRef, CpuStat>,
    /// Stall time, from the `*.pressure` files (some and full).
    stalled: Seconds,
    /// Each pressure line's stall total as last sampled.
    last_stalled: HashMap<(CgroupRef, &'static str, &'static str), u64>,
    /// How long a removed cgroup's series stay.
    series_ttl_ns: u64,
    /// Removed cgroups whose series are still served: path, removed at.
    removed: Vec<(String, u64)>,
    /// The latest interval's end.
    now_ns: u64,
    budget: Rc<Budget>,
    /// How many series the budget holds, as of the last tick.
    series: Gauge,
    /// Each victim's evictors with a series of their own; later ones are
    /// summed as `other`.
    evictors: HashMap<String, HashSet<String>>,
}

/// Evictors with a series of their own, per victim. Counters cannot move
/// between series, so the first ones seen keep theirs.
const EVICTORS_PER_VICTIM: usize = 8;

/// A cgroup's memory: usage and limit as its files say, the page cache it
/// owns, what was charged to it, and its reclaim stalls.
struct MemoryFamilies {
    usage: Bytes,
    limit: Bytes,
    page_cache: Bytes,
    /// By kind (anon, file, shmem, kernel, sock).
    charged: Count,
    uncharged: Count,
    /// Evicted pages faulted back in, by kind (anon, file).
    refaults: Count,
    /// By kind of reclaim (memcg, direct, background).
    reclaim_stalls: Histogram,
}

/// Page cache as the probes count it.
struct CacheFamilies {
    added: Count,
    removed: Count,
    /// Labelled with why: own limit, an ancestor's, kswapd, direct, proactive.
    evicted: Count,
    /// Labelled with the evicting cgroup.
    evicted_by: Count,
}

/// CFS bandwidth: the kernel's counters and cgtrace's spans.
struct CpuFamilies {
    periods: Count,
    throttled_periods: Count,
    throttled_seconds: Seconds,
    quota_cores: Fraction,
    spans: Histogram,
}

/// cgtrace's own health: what it could not see.
struct ProbeFamilies {
    ring_buffer_drops: Counter,
    recursion_misses: Counter,
    read_failures: Counter,
    map_full: Counter,
    records: Counter,
}

impl MemoryFamilies {
    fn register(registry: &mut Registry, budget: &Rc<Budget>) -> Self {
        Self {
            usage: Tracked::register(
                registry,
                budget,
                "memory_usage_bytes",
                "Memory charged to the cgroup",
            ),
            limit: Tracked::register(
                registry,
                budget,
                "spec_memory_limit_bytes",
                "The cgroup's memory limit",
            ),
            page_cache: Tracked::register(
                registry,
                budget,
                "memory_cache_bytes",
                "Page cache the cgroup owns: memory.stat's figure when first seen, \
                 then with the pages cgtrace saw added, removed and evicted",
            ),
            charged: Tracked::register(
                registry,
                budget,
                "memory_charged_bytes",
                "Memory charged to the cgroup, by kind (anon, file, shmem, kernel, sock)",
            ),
            uncharged: Tracked::register(
                registry,
                budget,
                "memory_uncharged_bytes",
                "Memory uncharged from the cgroup, by kind",
            ),
            refaults: Tracked::register(
                registry,
                budget,
                "memory_refaults",
                "Evicted pages of the cgroup faulted back in, by kind (anon, file)",
            ),
            reclaim_stalls: Tracked::register(
                registry,
                budget,
                "memory_reclaim_stall_seconds",
                "How long the cgroup's tasks stalled in reclaim, by kind: at a cgroup's \
                 limit (memcg), direct reclaim for the machine (direct), kswapd (background)",
            ),
        }
    }
}

impl CacheFamilies {
    fn register(registry: &mut Registry, budget: &Rc<Budget>) -> Self {
        Self {
            added: Tracked::register(
                registry,
                budget,
                "page_cache_added_bytes",
                "Page cache added, charged to the cgroup",
            ),
            removed: Tracked::register(
                registry,
                budget,
                "page_cache_removed_bytes",
                "The cgroup's page cache removed outside reclaim (truncated, deleted)",
            ),
            evicted: Tracked::register(
                registry,
                budget,
                "page_cache_evicted_bytes",
                "The cgroup's page cache evicted by reclaim, by why",
            ),
            evicted_by: Tracked::register(
                registry,
                budget,
                "page_cache_evicted_by_bytes",
                "The cgroup's page cache evicted by reclaim, by the cgroup whose task reclaimed it",
            ),
        }
    }
}

impl CpuFamilies {
    fn register(registry: &mut Registry, budget: &Rc<Budget>) -> Self {
        Self {
            periods: Tracked::register(
                registry,
                budget,
                "cpu_cfs_periods",
                "CFS periods with runnable tasks (cpu.stat)",
            ),
            throttled_periods: Tracked::register(
                registry,
                budget,
                "cpu_cfs_throttled_periods",
                "CFS periods in which the cgroup was throttled (cpu.stat)",
            ),
            throttled_seconds: Tracked::register(
                registry,
                budget,
                "cpu_cfs_throttled_seconds",
                "Time the cgroup's run queues spent throttled, summed over CPUs (cpu.stat)",
            ),
            quota_cores: Tracked::register(
                registry,
                budget,
                "cpu_quota_cores",
                "The cgroup's CFS quota in cores (quota / period)",
            ),
            spans: Tracked::register(
                registry,
                budget,
                "cpu_cfs_throttle_span_seconds",
                "Throttle spans cgtrace saw, by length: a run queue throttled until \
                 its quota came back",
            ),
        }
    }
}

impl ProbeFamilies {
    fn register(registry: &mut Registry) -> Self {
        let probe = ProbeFamilies {
            ring_buffer_drops: Counter::default(),
            recursion_misses: Counter::default(),
            read_failures: Counter::default(),
            map_full: Counter::default(),
            records: Counter::default(),
        };
        for (name, help, counter) in [
            (
                "probe_ring_buffer_drops",
                "Records the ring buffer had no room for",
                &probe.ring_buffer_drops,
            ),
            (
                "probe_recursion_misses",
                "Program runs the kernel skipped because another BPF program ran on the CPU",
                &probe.recursion_misses,
            ),
            (
                "probe_read_failures",
                "Kernel fields the programs failed to read",
                &probe.read_failures,
            ),
            (
                "probe_map_full",
                "Keys a full map could not take",
                &probe.map_full,
            ),
            (
                "probe_records",
                "Records the programs delivered",
                &probe.records,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        probe
    }
}

/// How long a removed cgroup's series are served, unless told otherwise:
/// long enough for a few scrapes to see an OOM-killed container's kill.
pub const DEFAULT_SERIES_TTL: Duration = Duration::from_mins(5);

/// How many series of cgroups are served at most, unless told otherwise.
pub const DEFAULT_MAX_SERIES: usize = 100_000;

impl Metrics {
    #[must_use]
    /// The families, with whatever `extra` registers beside them (the
    /// per-program collector, the flight recorder's status).
    pub fn new(series_ttl: Duration, max_series: usize, extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("cgtrace");
        let budget = Budget::new(max_series);
        let oom_kills = Tracked::register(
            &mut registry,
            &budget,
            "oom_events",
            "OOM kills, by the victim's workload and whose limit was hit: \
             its own cgroup's (own), an ancestor's (ancestor), or the machine's (global)",
        );
        let memory = MemoryFamilies::register(&mut registry, &budget);
        let cache = CacheFamilies::register(&mut registry, &budget);
        let cpu = CpuFamilies::register(&mut registry, &budget);
        let stalled = Tracked::register(
            &mut registry,
            &budget,
            "pressure_stalled_seconds",
            "Time some (or all, kind=full) of the cgroup's tasks stalled on a resource \
             (memory, cpu, io), from its pressure files",
        );
        let series = Gauge::default();
        registry.register(
            "series",
            "Series of cgroups served now (cgtrace's own families aside)",
            series.clone(),
        );
        registry.register(
            "series_dropped",
            "Updates of series not made because --max-series was reached (a refused series \
             is refused again each interval it has something to say)",
            budget.refused.clone(),
        );
        let probe = ProbeFamilies::register(&mut registry);
        extra(&mut registry);
        Self {
            registry: Arc::new(registry),
            oom_kills,
            memory,
            cache,
            cpu,
            probe,
            last_stats: ProbeStats::default(),
            memory_model: None,
            last_cpu: HashMap::new(),
            stalled,
            last_stalled: HashMap::new(),
            series_ttl_ns: u64::try_from(series_ttl.as_nanos()).unwrap_or(u64::MAX),
            removed: Vec::new(),
            now_ns: 0,
            budget,
            series,
            evictors: HashMap::new(),
        }
    }

    /// The registry, for the endpoint.
    #[must_use]
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    fn oom_kill(&self, kill: &OomKill, cx: &mut Context) {
        if kill.counted_as_kill == Some(false) {
            return;
        }
        let Some(path) = kill.victim.cgroup.as_deref() else {
            return;
        };
        let mut labels = workload_labels(path, &cx.selection.identify(path));
        labels.push(("limit", limit_scope(kill).to_owned()));
        self.oom_kills.get(path, &labels).inc();
    }

    /// The path and labels of a cgroup the session has named; `None` for
    /// one it never named (its series would say nothing useful).
    /// A named cgroup's path and labels. A cgroup removed already (its
    /// leftover page cache evicted after it went) has its series expire
    /// again a TTL from now, or they would stay for good.
    fn labels(&mut self, cgroup: Option<CgroupRef>, cx: &mut Context) -> Option<(String, Labels)> {
        let cgroup = cgroup?;
        let path = cx.names.path(cgroup)?.to_owned();
        if cx.is_removed(cgroup) && !self.removed.iter().any(|(removed, _)| *removed == path) {
            self.removed.push((path.clone(), self.now_ns));
        }
        let labels = workload_labels(&path, &cx.selection.identify(&path));
        Some((path, labels))
    }

    /// The memory model, made with the session's page size when first
    /// needed.
    fn memory_model(&mut self, page_size: u64) -> &mut MemoryModel {
        self.memory_model
            .get_or_insert_with(|| MemoryModel::new(page_size))
    }

    fn memory(&mut self, sample: &MemorySample, cx: &mut Context) {
        let facts = self.memory_model(cx.page_size).sample(sample);
        let Some((path, labels)) = self.labels(Some(sample.cgroup), cx) else {
            return;
        };
        for (family, value) in [
            (&self.memory.usage, facts.usage_bytes),
            (&self.memory.limit, facts.limit_bytes),
            (&self.memory.page_cache, facts.owned_bytes),
        ] {
            if let Some(bytes) = value.and_then(|b| i64::try_from(b).ok()) {
                family.get(&path, &labels).set(bytes);
            }
        }
        for (kind, (charged, uncharged)) in ChargeKind::ALL.into_iter().zip(
            facts
                .stat_charges
                .unwrap_or([(0, 0); cgtrace_common::pagecache::CHARGE_KINDS]),
        ) {
            self.charge(&path, &labels, kind, (charged, uncharged), cx.page_size);
        }
    }

    /// Pages of `kind` charged to and uncharged from `path` (for the
    /// refault kinds: pages faulted back in).
    fn charge(
        &self,
        path: &str,
        labels: &Labels,
        kind: ChargeKind,
        (charged, uncharged): (u64, u64),
        page_size: u64,
    ) {
        let with_kind = |kind: &str| {
            let mut labels = labels.clone();
            labels.push(("kind", kind.to_owned()));
            labels
        };
        match kind {
            ChargeKind::RefaultAnon | ChargeKind::RefaultFile => {
                let kind = if kind == ChargeKind::RefaultAnon {
                    "anon"
                } else {
                    "file"
                };
                if charged > 0 {
                    self.memory
                        .refaults
                        .get(path, &with_kind(kind))
                        .inc_by(charged);
                }
            }
            _ => {
                for (family, pages) in [
                    (&self.memory.charged, charged),
                    (&self.memory.uncharged, uncharged),
                ] {
                    if pages > 0 {
                        family
                            .get(path, &with_kind(kind.name()))
                            .inc_by(pages.saturating_mul(page_size));
                    }
                }
            }
        }
    }

    fn counters(&mut self, counters: &ProbeCounters, cx: &mut Context) {
        self.memory_model(cx.page_size).counters(counters);
        for stall in &counters.stalls {
            let Some((path, mut labels)) = self.labels(stall.cgroup, cx) else {
                continue;
            };
            labels.push(("kind", stall.kind.name().to_owned()));
            self.memory
                .reclaim_stalls
                .get(&path, &labels)
                .add_stalls(&stall.stats);
        }
        for charge in counters.charges.iter().flatten() {
            let Some((path, labels)) = self.labels(charge.cgroup, cx) else {
                continue;
            };
            self.charge(
                &path,
                &labels,
                charge.kind,
                (charge.charged, charge.uncharged),
                cx.page_size,
            );
        }
        for activity in by_owner(counters) {
            let Some((path, labels)) = self.labels(activity.owner, cx) else {
                continue;
            };
            let bytes = |pages: u64| pages.saturating_mul(cx.page_size);
            if activity.added > 0 {
                self.cache
                    .added
                    .get(&path, &labels)
                    .inc_by(bytes(activity.added));
            }
            if activity.removed > 0 {
                self.cache
                    .removed
                    .get(&path, &labels)
                    .inc_by(bytes(activity.removed));
            }
            for reason in CacheReason::ALL {
                let pages = activity.evicted[reason as usize];
                if pages > 0 {
                    let mut with_reason = labels.clone();
                    with_reason.push(("reason", reason.name().to_owned()));
                    self.cache
                        .evicted
                        .get(&path, &with_reason)
                        .inc_by(bytes(pages));
                }
            }
            for (actor, _, pages) in &activity.reclaimers {
                let evictor = self.evictor_label(&path, cx.name(*actor));
                let mut with_evictor = labels.clone();
                with_evictor.push(("evictor", evictor));
                self.cache
                    .evicted_by
                    .get(&path, &with_evictor)
                    .inc_by(bytes(*pages));
            }
        }
    }

    fn cpu(&mut self, sample: &CpuSample, cx: &mut Context) {
        let Some((path, labels)) = self.labels(Some(sample.cgroup), cx) else {
            return;
        };
        if let Some(cores) = sample.bandwidth.and_then(|b| b.cores()) {
            self.cpu.quota_cores.get(&path, &labels).set(cores);
        }
        let Some(stat) = sample.stat else {
            return;
        };
        let last = self
            .last_cpu
            .insert(sample.cgroup, stat)
            .unwrap_or_default();
        let moved = |now: u64, before: u64| now.saturating_sub(before);
        self.cpu
            .periods
            .get(&path, &labels)
            .inc_by(moved(stat.nr_periods, last.nr_periods));
        self.cpu
            .throttled_periods
            .get(&path, &labels)
            .inc_by(moved(stat.nr_throttled, last.nr_throttled));
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        let seconds = moved(stat.throttled_ns, last.throttled_ns) as f64 / 1e9;
        self.cpu
            .throttled_seconds
            .get(&path, &labels)
            .inc_by(seconds);
    }

    fn pressure(&mut self, sample: &PressureSample, cx: &mut Context) {
        let Some((path, labels)) = self.labels(Some(sample.cgroup), cx) else {
            return;
        };
        for (resource, pressure) in [
            ("memory", sample.memory),
            ("cpu", sample.cpu),
            ("io", sample.io),
        ] {
            let Some(pressure) = pressure else {
                continue;
            };
            for (kind, line) in [("some", Some(pressure.some)), ("full", pressure.full)] {
                let Some(line) = line else {
                    continue;
                };
                let before = self
                    .last_stalled
                    .insert((sample.cgroup, resource, kind), line.total_us)
                    .unwrap_or(0);
                let mut with_kind = labels.clone();
                with_kind.push(("resource", resource.to_owned()));
                with_kind.push(("kind", kind.to_owned()));
                #[expect(clippy::cast_precision_loss, reason = "seconds")]
                let seconds = line.total_us.saturating_sub(before) as f64 / 1e6;
                self.stalled.get(&path, &with_kind).inc_by(seconds);
            }
        }
    }

    fn span(&mut self, span: &ThrottleSpan, cx: &mut Context) {
        let Some((path, labels)) = self.labels(span.cgroup_ref, cx) else {
            return;
        };
        self.cpu
            .spans
            .get(&path, &labels)
            .observe_ns(span.duration_ns());
    }

    /// The `evictor` label for `evictor` of `victim`: its path while the
    /// victim has fewer than [`EVICTORS_PER_VICTIM`], else `other`.
    fn evictor_label(&mut self, victim: &str, evictor: String) -> String {
        let known = self.evictors.entry(victim.to_owned()).or_default();
        if known.contains(&evictor) {
            return evictor;
        }
        if known.len() < EVICTORS_PER_VICTIM {
            known.insert(evictor.clone());
            return evictor;
        }
        "other".to_owned()
    }

    /// A removed cgroup's series stay for the TTL, then go; a new cgroup
    /// at the same path keeps them.
    fn cgroup_removed(&mut self, cgroup: CgroupRef, at_ns: u64, cx: &Context) {
        self.last_cpu.remove(&cgroup);
        if let Some(model) = &mut self.memory_model {
            model.forget(cgroup);
        }
        self.last_stalled.retain(|(c, _, _), _| *c != cgroup);
        if let Some(path) = cx.names.path(cgroup) {
            self.removed.push((path.to_owned(), at_ns));
        }
    }

    fn cgroup_created(&mut self, path: &str) {
        self.removed.retain(|(removed, _)| removed != path);
    }

    /// Drops the series of cgroups removed more than the TTL before `now_ns`.
    fn expire(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
        let ttl = self.series_ttl_ns;
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.removed)
            .into_iter()
            .partition(|(_, at_ns)| now_ns.saturating_sub(*at_ns) >= ttl);
        self.removed = kept;
        for (path, _) in expired {
            self.forget(&path);
        }
        self.series
            .set(i64::try_from(self.budget.used()).unwrap_or(i64::MAX));
    }

    /// Every series of `path`, in every family.
    fn forget(&mut self, path: &str) {
        self.evictors.remove(path);
        self.oom_kills.forget(path);
        for family in [
            &self.memory.usage,
            &self.memory.limit,
            &self.memory.page_cache,
        ] {
            family.forget(path);
        }
        for family in [
            &self.memory.charged,
            &self.memory.uncharged,
            &self.memory.refaults,
            &self.cache.added,
            &self.cache.removed,
            &self.cache.evicted,
            &self.cache.evicted_by,
            &self.cpu.periods,
            &self.cpu.throttled_periods,
        ] {
            family.forget(path);
        }
        self.memory.reclaim_stalls.forget(path);
        self.cpu.spans.forget(path);
        self.cpu.throttled_seconds.forget(path);
        self.cpu.quota_cores.forget(path);
        self.stalled.forget(path);
    }

    fn health(&mut self, stats: &ProbeStats) {
        let last = self.last_stats;
        for (counter, now, before) in [
            (
                &self.probe.ring_buffer_drops,
                stats.ring_buffer_drops,
                last.ring_buffer_drops,
            ),
            (
                &self.probe.recursion_misses,
                stats.recursion_misses,
                last.recursion_misses,
            ),
            (
                &self.probe.read_failures,
                stats.read_failures,
                last.read_failures,
            ),
            (&self.probe.map_full, stats.map_full, last.map_full),
            (&self.probe.records, stats.records, last.records),
        ] {
            counter.inc_by(now.saturating_sub(before));
        }
        self.last_stats = *stats;
    }
}

impl Sink for Metrics {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        match event {
            Event::OomKill(kill) => self.oom_kill(kill, cx),
            Event::CgroupCreated(named) => self.cgroup_created(&named.path),
            Event::CgroupRemoved(removed) => self.cgroup_removed(removed.cgroup, removed.at_ns, cx),
            Event::Tick(tick) => self.expire(tick.end_ns),
            Event::Memory(sample) => self.memory(sample, cx),
            Event::Counters(counters) => self.counters(counters, cx),
            Event::Cpu(sample) => self.cpu(sample, cx),
            Event::ThrottleSpan(span) => self.span(span, cx),
            Event::Pressure(sample) => self.pressure(sample, cx),
            Event::Health(health) => self.health(&health.stats),
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        Ok(())
    }
}

/// `namespace`, `pod`, `container` for a pod's cgroup; `cgroup` otherwise.
#[must_use]
pub fn workload_labels(path: &str, identity: &Identity) -> Labels {
    match (&identity.namespace, &identity.pod, &identity.container) {
        (Some(namespace), Some(pod), container) => vec![
            ("namespace", namespace.clone()),
            ("pod", pod.clone()),
            ("container", container.clone().unwrap_or_default()),
        ],
        // A named Docker container: its name beside the path (cAdvisor's
        // `name`, under the label the pods' series use).
        (_, _, Some(name)) if matches!(identity.workload, Workload::Docker { .. }) => {
            vec![("cgroup", path.to_owned()), ("container", name.clone())]
        }
        _ => vec![("cgroup", path.to_owned())],
    }
}

/// Whose limit an OOM kill was at: the victim's own cgroup, an ancestor,
/// or the whole machine.
#[must_use]
pub fn limit_scope(kill: &OomKill) -> &'static str {
    match (kill.constraint, &kill.oom_memcg) {
        (Constraint::Memcg, Some(memcg))
            if memcg.path.is_some() && memcg.path == kill.victim.cgroup =>
        {
            "own"
        }
        (Constraint::Memcg, Some(_)) => "ancestor",
        (Constraint::Memcg, None) => "unknown",
        _ => "global",
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::{
        event::{Health, ProbeStats},
        identity::selection::Selection,
        system::Clock,
    };

    fn context() -> Context {
        Context::new(Selection::everything(), Clock::now(), 4096)
    }

    fn scrape(metrics: &Metrics) -> String {
        let mut text = String::new();
        encode(&mut text, &metrics.registry()).unwrap();
        text
    }

    #[test]
    fn probe_health_counts_what_moved_since_the_last_report() {
        let mut metrics = Metrics::new(DEFAULT_SERIES_TTL, DEFAULT_MAX_SERIES, |_| {});
        let mut cx = context();
        for drops in [3, 3, 10] {
            let health = Event::Health(Health {
                at_ns: 1,
                stats: ProbeStats {
                    ring_buffer_drops: drops,
                    ..ProbeStats::default()
                },
                is_final: false,
            });
            metrics.event(&health, &mut cx).unwrap();
        }
        let text = scrape(&metrics);
        assert!(
            text.contains("cgtrace_probe_ring_buffer_drops_total 10\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_removed_cgroups_series_stay_for_the_ttl_then_go() {
        use cgtrace_common::cgroup::CgroupRef;

        use crate::{
            cgroup::Version,
            event::{CgroupNamed, CgroupRemoved, MemorySample, Tick},
        };
        const SECOND: u64 = 1_000_000_000;
        let mut metrics = Metrics::new(Duration::from_mins(1), DEFAULT_MAX_SERIES, |_| {});
        let mut cx = context();
        let cgroup = CgroupRef {
            id: 7,
            hierarchy: 0,
            level: 1,
        };
        let tick = |end_ns| {
            Event::Tick(Tick {
                start_ns: end_ns - SECOND,
                end_ns,
            })
        };
        let mut feed = |metrics: &mut Metrics, event: Event| {
            cx.learn(&event);
            metrics.event(&event, &mut cx).unwrap();
        };
        feed(
            &mut metrics,
            Event::CgroupCreated(CgroupNamed {
                cgroup,
                path: "/job".to_owned(),
            }),
        );
        feed(
            &mut metrics,
            Event::Memory(Box::new(MemorySample {
                at_ns: SECOND,
                cgroup,
                version: Version::V2,
                usage_bytes: Some(4096),
                limit_bytes: None,
                peak_bytes: None,
                page_cache_bytes: None,
                events: None,
                stat_charges: None,
            })),
        );
        let series = "cgtrace_memory_usage_bytes{cgroup=\"/job\"} 4096";
        assert!(scrape(&metrics).contains(series));
        feed(
            &mut metrics,
            Event::CgroupRemoved(CgroupRemoved {
                at_ns: 10 * SECOND,
                cgroup,
            }),
        );
        feed(&mut metrics, tick(69 * SECOND));
        assert!(scrape(&metrics).contains(series), "kept for the TTL");
        feed(&mut metrics, tick(70 * SECOND));
        assert!(!scrape(&metrics).contains("/job"), "{}", scrape(&metrics));
        // Gone, yet named and sampled once more (its leftover page cache,
        // say): the series come back and go again a TTL later.
        feed(
            &mut metrics,
            Event::CgroupNamed(CgroupNamed {
                cgroup,
                path: "/job".to_owned(),
            }),
        );
        let late = Event::Memory(Box::new(MemorySample {
            at_ns: 75 * SECOND,
            cgroup,
            version: Version::V2,
            usage_bytes: Some(8192),
            limit_bytes: None,
            peak_bytes: None,
            page_cache_bytes: None,
            events: None,
            stat_charges: None,
        }));
        feed(&mut metrics, late);
        assert!(scrape(&metrics).contains("/job"));
        feed(&mut metrics, tick(129 * SECOND));
        assert!(scrape(&metrics).contains("/job"), "kept for the TTL again");
        feed(&mut metrics, tick(131 * SECOND));
        assert!(!scrape(&metrics).contains("/job"), "{}", scrape(&metrics));
    }

    #[test]
    fn past_the_cap_new_series_are_dropped_and_counted() {
        use cgtrace_common::cgroup::CgroupRef;

        use crate::{
            cgroup::Version,
            event::{CgroupNamed, MemorySample, Tick},
        };
        let mut metrics = Metrics::new(DEFAULT_SERIES_TTL, 2, |_| {});
        let mut cx = context();
        let cgroup = CgroupRef {
            id: 3,
            hierarchy: 0,
            level: 1,
        };
        for event in [
            Event::CgroupCreated(CgroupNamed {
                cgroup,
                path: "/big".to_owned(),
            }),
            // Usage, limit and page cache: three series against a cap of two.
            Event::Memory(Box::new(MemorySample {
                at_ns: 1,
                cgroup,
                version: Version::V2,
                usage_bytes: Some(1),
                limit_bytes: Some(2),
                peak_bytes: None,
                page_cache_bytes: Some(3),
                events: None,
                stat_charges: None,
            })),
            Event::Tick(Tick {
                start_ns: 0,
                end_ns: 2,
            }),
        ] {
            cx.learn(&event);
            metrics.event(&event, &mut cx).unwrap();
        }
        let text = scrape(&metrics);
        assert!(text.contains("cgtrace_series 2\n"), "{text}");
        assert!(text.contains("cgtrace_series_dropped_total 1\n"), "{text}");
        assert!(!text.contains("cgtrace_memory_page_cache_bytes{"), "{text}");
    }

    #[test]
    fn a_victims_evictors_past_the_first_eight_are_summed_as_other() {
        use cgtrace_common::cgroup::CgroupRef;

        use crate::event::{CgroupNamed, Flow as CacheFlow};
        let mut metrics = Metrics::new(DEFAULT_SERIES_TTL, DEFAULT_MAX_SERIES, |_| {});
        let mut cx = context();
        let cgroup = |id: u64| CgroupRef {
            id,
            hierarchy: 0,
            level: 1,
        };
        for id in 0..=10 {
            cx.learn(&Event::CgroupCreated(CgroupNamed {
                cgroup: cgroup(id),
                path: format!("/g{id}"),
            }));
        }
        // /g0 loses a page to each of ten others.
        let counters = ProbeCounters {
            start_ns: 0,
            end_ns: 1,
            flows: (1..=10)
                .map(|actor| CacheFlow {
                    owner: Some(cgroup(0)),
                    actor: Some(cgroup(actor)),
                    reason: CacheReason::AncestorLimit,
                    pages: 1,
                })
                .collect(),
            stalls: Vec::new(),
            charges: None,
            files: None,
        };
        metrics
            .event(&Event::Counters(Box::new(counters)), &mut cx)
            .unwrap();
        let text = scrape(&metrics);
        let evictors = text
            .lines()
            .filter(|line| line.starts_with("cgtrace_page_cache_evicted_by_bytes_total{"))
            .count();
        assert_eq!(evictors, EVICTORS_PER_VICTIM + 1, "{text}");
        assert!(
            text.contains(
                "cgtrace_page_cache_evicted_by_bytes_total{cgroup=\"/g0\",evictor=\"other\"} 8192\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn stall_time_adds_what_each_pressure_sample_moved() {
        use cgtrace_common::cgroup::CgroupRef;

        use crate::event::{CgroupNamed, Pressure, PressureLine, PressureSample};
        let mut metrics = Metrics::new(DEFAULT_SERIES_TTL, DEFAULT_MAX_SERIES, |_| {});
        let mut cx = context();
        let cgroup = CgroupRef {
            id: 5,
            hierarchy: 0,
            level: 1,
        };
        cx.learn(&Event::CgroupCreated(CgroupNamed {
            cgroup,
            path: "/db".to_owned(),
        }));
        for total_us in [1_000_000, 3_500_000] {
            let line = PressureLine {
                total_us,
                ..PressureLine::default()
            };
            let sample = Event::Pressure(Box::new(PressureSample {
                at_ns: 1,
                cgroup,
                memory: Some(Pressure {
                    some: line,
                    full: None,
                }),
                cpu: None,
                io: None,
            }));
            metrics.event(&sample, &mut cx).unwrap();
        }
        let text = scrape(&metrics);
        assert!(
            text.contains("cgtrace_pressure_stalled_seconds_total{cgroup=\"/db\",resource=\"memory\",kind=\"some\"} 3.5\n"),
            "{text}"
        );
    }

    #[test]
    fn a_plain_cgroup_is_labelled_by_its_path() {
        let identity = Identity::unnamed("/system.slice/nginx.service");
        assert_eq!(
            workload_labels("/system.slice/nginx.service", &identity),
            vec![("cgroup", "/system.slice/nginx.service".to_owned())]
        );
        let path = format!("/docker/{}", "ab".repeat(32));
        let mut docker = Identity::unnamed(&path);
        assert_eq!(
            workload_labels(&path, &docker),
            vec![("cgroup", path.clone())],
            "an unnamed Docker container keeps its path alone"
        );
        docker.container = Some("web".to_owned());
        assert_eq!(
            workload_labels(&path, &docker),
            vec![("cgroup", path.clone()), ("container", "web".to_owned())]
        );
    }
}

#[cfg(test)]
mod dashboard {
    //! The Grafana dashboard in `deploy/` names only families `serve`
    //! serves: a renamed family breaks this test, not a user's dashboard.

    use std::collections::{BTreeSet, VecDeque};

    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::{
        event::{Bandwidth, CgroupNamed, CpuStat, Pressure, PressureLine, PressureSample},
        identity::selection::Selection,
        system::Clock,
        trace::{flight::RecorderStatus, v1::V1Adapter},
    };

    const DASHBOARD: &str = include_str!("../../../../deploy/grafana-dashboard.json");

    /// The metric names in the dashboard's queries.
    fn queried() -> BTreeSet<String> {
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
        let mut names = BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let mut rest = expr;
                while let Some(at) = rest.find("cgtrace_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[at + name.len()..];
                    names.insert(name);
                }
            }
        }
        names
    }

    /// The sample names a family of `kind` is scraped as.
    fn sample_names(family: &str, kind: &str) -> Vec<String> {
        match kind {
            "counter" => vec![format!("{family}_total")],
            "histogram" => ["bucket", "count", "sum"]
                .iter()
                .map(|suffix| format!("{family}_{suffix}"))
                .collect(),
            _ => vec![family.to_owned()],
        }
    }

    /// Every family, fed the recorded fixtures and a sample of each kind.
    fn served() -> BTreeSet<String> {
        let status = RecorderStatus::default();
        let mut metrics = Metrics::new(DEFAULT_SERIES_TTL, DEFAULT_MAX_SERIES, |registry| {
            status.register(registry);
        });
        let mut cx = Context::new(Selection::everything(), Clock::now(), 4096);
        let mut events = VecDeque::new();
        let mut adapter = V1Adapter::new();
        for record in crate::trace::record::tests::samples() {
            adapter.push(record, &mut events);
        }
        let cgroup = CgroupRef {
            id: 77,
            hierarchy: 0,
            level: 1,
        };
        let line = PressureLine {
            total_us: 5,
            ..PressureLine::default()
        };
        events.extend([
            Event::CgroupCreated(CgroupNamed {
                cgroup,
                path: "/job".to_owned(),
            }),
            Event::Cpu(CpuSample {
                at_ns: 1,
                cgroup,
                stat: Some(CpuStat {
                    nr_periods: 10,
                    nr_throttled: 2,
                    throttled_ns: 5,
                    usage_ns: None,
                }),
                bandwidth: Some(Bandwidth {
                    quota_us: Some(50_000),
                    period_us: 100_000,
                }),
                usage_ns: None,
            }),
            Event::Pressure(Box::new(PressureSample {
                at_ns: 1,
                cgroup,
                memory: Some(Pressure {
                    some: line,
                    full: None,
                }),
                cpu: None,
                io: None,
            })),
            Event::Memory(Box::new(MemorySample {
                at_ns: 1,
                cgroup,
                version: crate::cgroup::Version::V2,
                usage_bytes: Some(1 << 20),
                limit_bytes: Some(2 << 20),
                peak_bytes: None,
                page_cache_bytes: Some(4096),
                events: None,
                stat_charges: Some([(3, 1); cgtrace_common::pagecache::CHARGE_KINDS]),
            })),
        ]);
        for event in &events {
            cx.learn(event);
            metrics.event(event, &mut cx).unwrap();
        }
        let mut text = String::new();
        encode(&mut text, &metrics.registry()).unwrap();
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split_once(' '))
            .flat_map(|(family, kind)| sample_names(family, kind))
            .collect()
    }

    #[test]
    fn the_dashboard_queries_only_served_families() {
        let served = served();
        let queried = queried();
        assert!(queried.len() >= 10, "{queried:?}");
        let missing: Vec<&String> = queried.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "not served: {missing:?}\nserved: {served:?}"
        );
    }
}
