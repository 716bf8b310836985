//! `cgtrace serve`'s Prometheus families, kept up to date from the
//! session's events by [`Metrics`] (a sink); the endpoint encodes the
//! registry on each scrape.
//!
//! A cgroup's series are labelled `namespace`, `pod`, `container` when it
//! belongs to a Kubernetes pod, and `cgroup` (its path) otherwise.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicU64},
};

use cgtrace_common::{cgroup::CgroupRef, pagecache::CacheReason};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    event::{
        Constraint, CpuSample, CpuStat, Event, MemorySample, OomKill, ProbeCounters, ProbeStats,
        ThrottleSpan,
    },
    identity::Identity,
    model::cache::by_owner,
    session::{Context, End, Flow, Sink},
};

type BytesGauge = Family<Labels, Gauge>;
type SecondsCounter = Family<Labels, Counter<f64, AtomicU64>>;
type FloatGauge = Family<Labels, Gauge<f64, AtomicU64>>;

/// A series' labels, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// The families, and the registry that encodes them.
pub struct Metrics {
    registry: Arc<Registry>,
    oom_kills: Family<Labels, Counter>,
    memory: MemoryFamilies,
    cache: CacheFamilies,
    cpu: CpuFamilies,
    probe: ProbeFamilies,
    /// The probe's counters as last reported, to add only what moved.
    last_stats: ProbeStats,
    /// Each cgroup's `cpu.stat` as last sampled, likewise.
    last_cpu: HashMap<CgroupRef, CpuStat>,
}

/// A cgroup's memory as its files say, each interval.
struct MemoryFamilies {
    usage: BytesGauge,
    limit: BytesGauge,
    page_cache: BytesGauge,
}

/// Page cache as the probes count it.
struct CacheFamilies {
    added: Family<Labels, Counter>,
    removed: Family<Labels, Counter>,
    /// Labelled with why: own limit, an ancestor's, kswapd, direct, proactive.
    evicted: Family<Labels, Counter>,
    /// Labelled with the evicting cgroup.
    evicted_by: Family<Labels, Counter>,
}

/// CFS bandwidth: the kernel's counters and cgtrace's spans.
struct CpuFamilies {
    periods: Family<Labels, Counter>,
    throttled_periods: Family<Labels, Counter>,
    throttled_seconds: SecondsCounter,
    quota_cores: FloatGauge,
    spans: Family<Labels, Counter>,
    span_seconds: SecondsCounter,
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
    fn register(registry: &mut Registry) -> Self {
        let memory = MemoryFamilies {
            usage: BytesGauge::default(),
            limit: BytesGauge::default(),
            page_cache: BytesGauge::default(),
        };
        registry.register(
            "memory_usage_bytes",
            "Memory charged to the cgroup",
            memory.usage.clone(),
        );
        registry.register(
            "memory_limit_bytes",
            "The cgroup's memory limit",
            memory.limit.clone(),
        );
        registry.register(
            "memory_page_cache_bytes",
            "Page cache charged to the cgroup (memory.stat)",
            memory.page_cache.clone(),
        );
        memory
    }
}

impl CacheFamilies {
    fn register(registry: &mut Registry) -> Self {
        let cache = CacheFamilies {
            added: Family::default(),
            removed: Family::default(),
            evicted: Family::default(),
            evicted_by: Family::default(),
        };
        registry.register(
            "page_cache_added_bytes",
            "Page cache added, charged to the cgroup",
            cache.added.clone(),
        );
        registry.register(
            "page_cache_removed_bytes",
            "The cgroup's page cache removed outside reclaim (truncated, deleted)",
            cache.removed.clone(),
        );
        registry.register(
            "page_cache_evicted_bytes",
            "The cgroup's page cache evicted by reclaim, by why",
            cache.evicted.clone(),
        );
        registry.register(
            "page_cache_evicted_by_bytes",
            "The cgroup's page cache evicted by reclaim, by the cgroup whose task reclaimed it",
            cache.evicted_by.clone(),
        );
        cache
    }
}

impl CpuFamilies {
    fn register(registry: &mut Registry) -> Self {
        let cpu = CpuFamilies {
            periods: Family::default(),
            throttled_periods: Family::default(),
            throttled_seconds: SecondsCounter::default(),
            quota_cores: FloatGauge::default(),
            spans: Family::default(),
            span_seconds: SecondsCounter::default(),
        };
        registry.register(
            "cpu_periods",
            "CFS periods with runnable tasks (cpu.stat)",
            cpu.periods.clone(),
        );
        registry.register(
            "cpu_throttled_periods",
            "CFS periods in which the cgroup was throttled (cpu.stat)",
            cpu.throttled_periods.clone(),
        );
        registry.register(
            "cpu_throttled_seconds",
            "Time the cgroup's run queues spent throttled, summed over CPUs (cpu.stat)",
            cpu.throttled_seconds.clone(),
        );
        registry.register(
            "cpu_quota_cores",
            "The cgroup's CFS quota in cores (quota / period)",
            cpu.quota_cores.clone(),
        );
        registry.register(
            "throttle_spans",
            "Throttle spans cgtrace saw: a run queue throttled until its quota came back",
            cpu.spans.clone(),
        );
        registry.register(
            "throttle_span_seconds",
            "The length of the throttle spans cgtrace saw, summed",
            cpu.span_seconds.clone(),
        );
        cpu
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cgtrace");
        let oom_kills = Family::<Labels, Counter>::default();
        registry.register(
            "oom_kills",
            "OOM kills, by the victim's workload and whose limit was hit: \
             its own cgroup's (own), an ancestor's (ancestor), or the machine's (global)",
            oom_kills.clone(),
        );
        let memory = MemoryFamilies::register(&mut registry);
        let cache = CacheFamilies::register(&mut registry);
        let cpu = CpuFamilies::register(&mut registry);
        let probe = ProbeFamilies::register(&mut registry);
        Self {
            registry: Arc::new(registry),
            oom_kills,
            memory,
            cache,
            cpu,
            probe,
            last_stats: ProbeStats::default(),
            last_cpu: HashMap::new(),
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
        self.oom_kills.get_or_create(&labels).inc();
    }

    /// The labels of a cgroup the session has named; `None` for one it
    /// never named (its series would say nothing useful).
    fn labels(cgroup: Option<CgroupRef>, cx: &mut Context) -> Option<Labels> {
        let path = cx.names.path(cgroup?)?.to_owned();
        Some(workload_labels(&path, &cx.selection.identify(&path)))
    }

    fn memory(&self, sample: &MemorySample, cx: &mut Context) {
        let Some(labels) = Self::labels(Some(sample.cgroup), cx) else {
            return;
        };
        for (family, value) in [
            (&self.memory.usage, sample.usage_bytes),
            (&self.memory.limit, sample.limit_bytes),
            (&self.memory.page_cache, sample.page_cache_bytes),
        ] {
            if let Some(bytes) = value.and_then(|b| i64::try_from(b).ok()) {
                family.get_or_create(&labels).set(bytes);
            }
        }
    }

    fn counters(&self, counters: &ProbeCounters, cx: &mut Context) {
        for activity in by_owner(counters) {
            let Some(labels) = Self::labels(activity.owner, cx) else {
                continue;
            };
            let bytes = |pages: u64| pages.saturating_mul(cx.page_size);
            if activity.added > 0 {
                self.cache
                    .added
                    .get_or_create(&labels)
                    .inc_by(bytes(activity.added));
            }
            if activity.removed > 0 {
                self.cache
                    .removed
                    .get_or_create(&labels)
                    .inc_by(bytes(activity.removed));
            }
            for reason in CacheReason::ALL {
                let pages = activity.evicted[reason as usize];
                if pages > 0 {
                    let mut with_reason = labels.clone();
                    with_reason.push(("reason", reason.name().to_owned()));
                    self.cache
                        .evicted
                        .get_or_create(&with_reason)
                        .inc_by(bytes(pages));
                }
            }
            for (actor, _, pages) in &activity.reclaimers {
                let mut with_evictor = labels.clone();
                with_evictor.push(("evictor", cx.name(*actor)));
                self.cache
                    .evicted_by
                    .get_or_create(&with_evictor)
                    .inc_by(bytes(*pages));
            }
        }
    }

    fn cpu(&mut self, sample: &CpuSample, cx: &mut Context) {
        let Some(labels) = Self::labels(Some(sample.cgroup), cx) else {
            return;
        };
        if let Some(cores) = sample.bandwidth.and_then(|b| b.cores()) {
            self.cpu.quota_cores.get_or_create(&labels).set(cores);
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
            .get_or_create(&labels)
            .inc_by(moved(stat.nr_periods, last.nr_periods));
        self.cpu
            .throttled_periods
            .get_or_create(&labels)
            .inc_by(moved(stat.nr_throttled, last.nr_throttled));
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        let seconds = moved(stat.throttled_ns, last.throttled_ns) as f64 / 1e9;
        self.cpu
            .throttled_seconds
            .get_or_create(&labels)
            .inc_by(seconds);
    }

    fn span(&self, span: &ThrottleSpan, cx: &mut Context) {
        let Some(labels) = Self::labels(span.cgroup_ref, cx) else {
            return;
        };
        self.cpu.spans.get_or_create(&labels).inc();
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        let seconds = span.duration_ns() as f64 / 1e9;
        self.cpu.span_seconds.get_or_create(&labels).inc_by(seconds);
    }

    fn health(&mut self, stats: &ProbeStats) {
        let moved = |now: u64, before: u64| now.saturating_sub(before);
        let last = self.last_stats;
        self.probe
            .ring_buffer_drops
            .inc_by(moved(stats.ring_buffer_drops, last.ring_buffer_drops));
        self.probe
            .recursion_misses
            .inc_by(moved(stats.recursion_misses, last.recursion_misses));
        self.probe
            .read_failures
            .inc_by(moved(stats.read_failures, last.read_failures));
        self.probe
            .map_full
            .inc_by(moved(stats.map_full, last.map_full));
        self.probe
            .records
            .inc_by(moved(stats.records, last.records));
        self.last_stats = *stats;
    }
}

impl Sink for Metrics {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        match event {
            Event::OomKill(kill) => self.oom_kill(kill, cx),
            Event::Memory(sample) => self.memory(sample, cx),
            Event::Counters(counters) => self.counters(counters, cx),
            Event::Cpu(sample) => self.cpu(sample, cx),
            Event::ThrottleSpan(span) => self.span(span, cx),
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
    match (&identity.namespace, &identity.pod) {
        (Some(namespace), Some(pod)) => vec![
            ("namespace", namespace.clone()),
            ("pod", pod.clone()),
            ("container", identity.container.clone().unwrap_or_default()),
        ],
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
        let mut metrics = Metrics::new();
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
    fn a_plain_cgroup_is_labelled_by_its_path() {
        let identity = Identity::unnamed("/system.slice/nginx.service");
        assert_eq!(
            workload_labels("/system.slice/nginx.service", &identity),
            vec![("cgroup", "/system.slice/nginx.service".to_owned())]
        );
    }
}
