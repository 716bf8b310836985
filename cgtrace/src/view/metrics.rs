//! `cgtrace serve`'s Prometheus families, kept up to date from the
//! session's events by [`Metrics`] (a sink); the endpoint encodes the
//! registry on each scrape.
//!
//! A cgroup's series are labelled `namespace`, `pod`, `container` when it
//! belongs to a Kubernetes pod, and `cgroup` (its path) otherwise.

use std::sync::Arc;

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    event::{Constraint, Event, OomKill, ProbeStats},
    identity::Identity,
    session::{Context, End, Flow, Sink},
};

/// A series' labels, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// The families, and the registry that encodes them.
pub struct Metrics {
    registry: Arc<Registry>,
    oom_kills: Family<Labels, Counter>,
    probe: ProbeFamilies,
    /// The probe's counters as last reported, to add only what moved.
    last_stats: ProbeStats,
}

/// cgtrace's own health: what it could not see.
struct ProbeFamilies {
    ring_buffer_drops: Counter,
    recursion_misses: Counter,
    read_failures: Counter,
    map_full: Counter,
    records: Counter,
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
        Self {
            registry: Arc::new(registry),
            oom_kills,
            probe,
            last_stats: ProbeStats::default(),
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
