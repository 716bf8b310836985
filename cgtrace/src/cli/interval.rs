//! The sampling loop shared by `cache` and `reclaim`: attach the
//! page-cache and reclaim probes, then every interval fold a sample into the
//! model and hand the interval to a renderer, until Ctrl-C or `--count`.

use std::{
    io::{self, Write as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use std::collections::HashMap;

use cgtrace_common::cgroup::CgroupRef;

use crate::{
    cgroup::{Hierarchies, Resolver, poller::CgroupPoller, stat},
    model::cache::{CacheInterval, CacheModel, by_owner},
    output::{
        cache::{CacheRow, cgroup_name},
        format::rfc3339,
    },
    probe::{FeatureSet, Probe, ProbeOptions, ProbeStats},
    runtime::{Shutdown, wait_readable},
};

/// Options shared by the interval views.
#[derive(Debug, Clone, Args)]
pub struct IntervalArgs {
    /// Time between reports: `1s`, `500ms`, `2m`, or plain seconds.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this many reports (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// One JSON object per interval (schema: docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
}

/// Parses `1s`, `250ms`, `2m`, `1.5` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let seconds: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 1s, 500ms, 2m)"))?;
    let seconds = seconds * scale;
    if !(0.01..=86_400.0).contains(&seconds) {
        return Err(format!("`{text}` is outside 10ms..24h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// What a view needs to render one interval.
pub struct IntervalContext<'a> {
    pub interval: &'a CacheInterval,
    pub model: &'a CacheModel,
    pub resolver: &'a mut Resolver,
    pub page_size: u64,
    cgroup_rows: &'a mut CgroupRows,
}

impl IntervalContext<'_> {
    /// The `top` busiest cgroups of this interval (see [`CgroupRows::rows`]).
    pub fn rows(&mut self, top: usize) -> Vec<CacheRow> {
        self.cgroup_rows.rows(
            self.interval,
            self.model,
            self.resolver,
            self.page_size,
            top,
        )
    }
}

/// Runs the loop; `render` prints one interval. `files` adds per-file counts.
pub fn run(
    args: &IntervalArgs,
    files: bool,
    mut render: impl FnMut(&mut IntervalContext<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let probe = Probe::load(&ProbeOptions {
        features: FeatureSet::CACHE_AND_RECLAIM,
        files,
        ..ProbeOptions::default()
    })?;
    for feature in probe.features() {
        crate::note!("cgtrace: {feature}");
    }
    let mut resolver =
        Resolver::new(Hierarchies::discover().context("cannot read the cgroup mounts")?);
    let mut model = CacheModel::new();
    let page_size = 1u64 << page_shift();
    // Counters of the cgroups that exist now are the starting point.
    let mut cgroup_rows = CgroupRows::default();
    if let Some(memory) = resolver
        .hierarchies()
        .with_controller("memory")
        .and_then(|h| h.id)
    {
        cgroup_rows.poller.prime(&mut resolver, memory);
    }
    // The first sample starts the clock; counts before it are attach noise.
    if let Some(sample) = probe.sample_cache() {
        model.update(&sample);
    }
    let mut reports = 0;
    let mut next = Instant::now() + args.interval;
    loop {
        let stop = shutdown.requested();
        if stop || Instant::now() >= next {
            let Some(sample) = probe.sample_cache() else {
                break;
            };
            let interval = model.update(&sample);
            let mut context = IntervalContext {
                interval: &interval,
                model: &model,
                resolver: &mut resolver,
                page_size,
                cgroup_rows: &mut cgroup_rows,
            };
            match render(&mut context) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                other => other?,
            }
            reports += 1;
            next += args.interval;
            if stop || args.count.is_some_and(|count| reports >= count) {
                break;
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        wait_readable(
            &[std::os::fd::AsFd::as_fd(&shutdown)],
            wait.max(Duration::from_millis(1)),
        )?;
    }
    report_stats(&probe.stats(), args.json)?;
    Ok(())
}

/// Page cache a cgroup had when cgtrace first saw it, less what cgtrace had
/// counted by then: adding the running net gives what it owns now.
#[derive(Default)]
struct Baselines {
    bytes: HashMap<CgroupRef, i64>,
}

impl Baselines {
    fn owned(&mut self, cgroup: CgroupRef, net_bytes: i64, resolver: &mut Resolver) -> Option<u64> {
        let base = if let Some(base) = self.bytes.get(&cgroup) {
            *base
        } else {
            let path = resolver.path(cgroup)?;
            let hierarchy = resolver.hierarchies().by_id(cgroup.hierarchy)?.clone();
            let stat = stat::read(&hierarchy.mount, &path).ok()?;
            let now = i64::try_from(stat::page_cache_bytes(&stat, hierarchy.version)?).ok()?;
            let base = now - net_bytes;
            self.bytes.insert(cgroup, base);
            base
        };
        u64::try_from(base + net_bytes).ok()
    }
}

/// What the views keep from one interval to the next about each cgroup.
#[derive(Default)]
pub struct CgroupRows {
    baselines: Baselines,
    poller: CgroupPoller,
}

impl CgroupRows {
    /// The `top` busiest cgroups of an interval, resolved and completed with
    /// what only the cgroup's files say (memory events, and charges where
    /// the tracepoints are missing).
    pub fn rows(
        &mut self,
        interval: &CacheInterval,
        model: &CacheModel,
        resolver: &mut Resolver,
        page_size: u64,
        top: usize,
    ) -> Vec<CacheRow> {
        let page = i64::try_from(page_size).unwrap_or(4096);
        by_owner(interval)
            .into_iter()
            .take(top)
            .map(|mut activity| {
                let path = activity.owner.and_then(|c| resolver.path(c));
                let owned = activity
                    .owner
                    .and_then(|c| self.baselines.owned(c, model.net_pages(c) * page, resolver));
                let charges_source = if activity.charges.is_some() {
                    Some("memcg_stat_tracepoints")
                } else {
                    activity.charges = activity
                        .owner
                        .and_then(|c| self.poller.charges(c, resolver, page_size));
                    activity.charges.map(|_| "memory.stat")
                };
                let events = activity.owner.and_then(|c| self.poller.events(c, resolver));
                let reclaimer_names = activity
                    .reclaimers
                    .iter()
                    .map(|(actor, _, _)| {
                        let path = actor.and_then(|c| resolver.path(c));
                        cgroup_name(path.as_deref(), *actor)
                    })
                    .collect();
                CacheRow {
                    name: cgroup_name(path.as_deref(), activity.owner),
                    id: activity.owner.map(|c| c.id),
                    owned_bytes: owned,
                    activity,
                    reclaimer_names,
                    charges_source,
                    events,
                }
            })
            .collect()
    }
}

fn page_shift() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).map_or(12, u64::trailing_zeros)
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
        let mut out = io::stdout().lock();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }
}
