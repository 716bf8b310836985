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

use crate::{
    cgroup::{Hierarchies, Resolver},
    model::cache::{CacheInterval, CacheModel},
    output::format::rfc3339,
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
}

/// Runs the loop; `render` prints one interval.
pub fn run(
    args: &IntervalArgs,
    mut render: impl FnMut(&mut IntervalContext<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let probe = Probe::load(&ProbeOptions {
        features: FeatureSet::CACHE_AND_RECLAIM,
        ..ProbeOptions::default()
    })?;
    for feature in probe.features() {
        eprintln!("cgtrace: {feature}");
    }
    let mut resolver =
        Resolver::new(Hierarchies::discover().context("cannot read the cgroup mounts")?);
    let mut model = CacheModel::new();
    let page_size = 1u64 << page_shift();
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
    eprintln!(
        "cgtrace: probe: {} ring-buffer drops, {} recursion misses, {} read failures, {} map-full",
        stats.ring_buffer_drops, stats.recursion_misses, stats.read_failures, stats.map_full
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
