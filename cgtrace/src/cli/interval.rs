//! The interval loop shared by `cache` and `reclaim`, live or replayed: live,
//! attach the page-cache and reclaim probes, then every interval fold a
//! sample into the model and hand the interval to a renderer, until Ctrl-C
//! or `--count`; replayed, hand it each interval a trace recorded. What the
//! renderer learns about cgroups beyond the probe's counters comes through
//! [`CgroupFacts`], read from cgroupfs live and from the trace in a replay.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use cgtrace_common::cgroup::CgroupRef;
use clap::Args;

use crate::{
    cgroup::{
        Hierarchies, Resolver,
        poller::{CgroupPoller, Charges},
        stat::{self, MemoryEvents, MemorySample},
    },
    event::Event,
    identity::selection::{SelectArgs, Selection},
    model::cache::CacheModel,
    probe::{FeatureSet, Probe, ProbeOptions},
    runtime::{Shutdown, wait_readable},
    session::{self, Context, TraceSource},
    system::Clock,
    view::interval::{CgroupFacts, IntervalContext, IntervalView, report_stats, retain},
};

/// Live views report this often unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Options shared by the interval views.
#[derive(Debug, Clone, Args)]
pub struct IntervalArgs {
    /// Time between reports: `1s`, `500ms`, `2m`, or plain seconds (default
    /// 1s; a replay keeps the recorded intervals unless given one).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Stop after this many reports (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// One JSON object per interval (schema: docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
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

/// Runs a view: live (attach the probes, then every interval fold a sample
/// into the model and render it, until Ctrl-C or `--count`), or from a
/// trace's recorded intervals. `files` adds per-file counts (live only).
pub fn run(
    args: &IntervalArgs,
    files: bool,
    input: Option<&Path>,
    mut render: impl FnMut(&mut IntervalContext<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut selection = Selection::new(&args.select)?;
    match input {
        Some(path) => replay(args, path, selection, &mut render),
        None => watch(args, files, &mut selection, &mut render),
    }
}

/// A trace's intervals, rendered as they were live (or merged into
/// `--interval` long ones).
fn replay(
    args: &IntervalArgs,
    path: &Path,
    selection: Selection,
    render: &mut dyn FnMut(&mut IntervalContext<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut source = TraceSource::open(path)?;
    let header = source.header().clone();
    let mut cx = Context::new(
        selection,
        Clock::from_boot_time(header.boot_time_ns),
        header.page_size,
    );
    source.learn_names(&mut cx)?;
    let mut view = IntervalView::new(
        header.page_size,
        render,
        args.interval,
        args.count,
        args.json,
    );
    session::run(&mut source, &mut cx, &mut [&mut view])?;
    Ok(())
}

fn watch(
    args: &IntervalArgs,
    files: bool,
    selection: &mut Selection,
    render: &mut dyn FnMut(&mut IntervalContext<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let mut probe = Probe::load(&ProbeOptions {
        features: FeatureSet::CACHE_AND_RECLAIM,
        files,
        filter: !selection.is_everything(),
        ..ProbeOptions::default()
    })?;
    for feature in probe.features() {
        crate::note!("cgtrace: {feature}");
    }
    let mut state =
        LiveState::new(Hierarchies::discover().context("cannot read the cgroup mounts")?);
    let allowed = selection.install(&mut probe, &mut state.resolver)?;
    super::oom::filter_note(allowed, selection);
    let mut model = CacheModel::new();
    let clock = Clock::now();
    // The first sample starts the clock; counts before it are attach noise.
    if let Some(counters) = probe.sample_counters() {
        model.add(&counters);
    }
    let mut reports = 0;
    let every = args.interval.unwrap_or(DEFAULT_INTERVAL);
    let mut next = Instant::now() + every;
    loop {
        let stop = shutdown.requested();
        // New cgroups' names, so one gone before the interval ends is named.
        let mut created = Vec::new();
        probe.drain(|event| {
            if let Event::CgroupCreated(named) = event {
                created.push((named.cgroup, named.path));
            }
        });
        selection.cgroups_created(&mut probe, &mut state.resolver, &created)?;
        if stop || Instant::now() >= next {
            let Some(mut interval) = probe.sample_counters() else {
                break;
            };
            model.add(&interval);
            let page_size = state.page_size;
            let mut facts = state.facts(&model);
            retain(&mut interval, &mut facts, selection);
            let mut context =
                IntervalContext::new(&interval, page_size, &clock, &mut facts, selection);
            match render(&mut context) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                other => other?,
            }
            reports += 1;
            next += every;
            if stop || args.count.is_some_and(|count| reports >= count) {
                break;
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        wait_readable(
            &[probe.events_fd(), std::os::fd::AsFd::as_fd(&shutdown)],
            wait.max(Duration::from_millis(1)),
        )?;
    }
    report_stats(&probe.stats(), args.json)?;
    Ok(())
}

/// Page cache a cgroup had when cgtrace first saw it, less what cgtrace had
/// counted by then: adding the running net gives what it owns now.
///
/// The kernel figure (`memory.stat`) is read a moment after the probe's
/// counters are sampled, so pages added or evicted in between are in one
/// and not the other. Under heavy churn that skews the anchor by the churn
/// of that moment, so the anchor is taken again whenever the cgroup is
/// quiet (no page added, removed or evicted since the last interval — at its
/// limit, adds and evictions can balance, so the net count alone cannot
/// tell). On v1 the figure is then exact; v2 folds per-CPU deltas into
/// `memory.stat` lazily, so there it is as exact as the kernel's own file.
#[derive(Default)]
struct Baselines {
    anchors: HashMap<CgroupRef, Anchor>,
}

struct Anchor {
    /// Kernel figure minus cgtrace's net count, bytes.
    base: i64,
    /// Pages moved at the last call, to tell a quiet interval.
    last_moved: u64,
}

impl Baselines {
    fn owned(
        &mut self,
        cgroup: CgroupRef,
        (net_bytes, moved): (i64, u64),
        resolver: &mut Resolver,
    ) -> Option<u64> {
        let kernel_now = |resolver: &mut Resolver| -> Option<i64> {
            let path = resolver.path(cgroup)?;
            let hierarchy = resolver.hierarchies().by_id(cgroup.hierarchy)?.clone();
            let stat = stat::read(&hierarchy.mount, &path).ok()?;
            i64::try_from(stat::page_cache_bytes(&stat, hierarchy.version)?).ok()
        };
        match self.anchors.entry(cgroup) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                let anchor = entry.get_mut();
                if anchor.last_moved == moved
                    && let Some(now) = kernel_now(resolver)
                {
                    anchor.base = now - net_bytes;
                }
                anchor.last_moved = moved;
                // Below zero only when the anchor was read from a lagging
                // v2 memory.stat; the cgroup cannot own less than nothing.
                Some(u64::try_from(anchor.base + net_bytes).unwrap_or(0))
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                let now = kernel_now(resolver)?;
                entry.insert(Anchor {
                    base: now - net_bytes,
                    last_moved: moved,
                });
                u64::try_from(now).ok()
            }
        }
    }
}

/// What a live view (or the recorder) keeps from one interval to the next
/// about each cgroup: names, page-cache baselines, last counter values.
pub struct LiveState {
    pub resolver: Resolver,
    pub page_size: u64,
    baselines: Baselines,
    poller: CgroupPoller,
}

impl LiveState {
    /// Counts from now: the counters of the memory cgroups that exist now
    /// are the starting point.
    #[must_use]
    pub fn new(hierarchies: Hierarchies) -> Self {
        let mut resolver = Resolver::new(hierarchies);
        let mut poller = CgroupPoller::default();
        if let Some(memory) = resolver
            .hierarchies()
            .with_controller("memory")
            .and_then(|h| h.id)
        {
            poller.prime(&mut resolver, memory);
        }
        Self {
            resolver,
            page_size: 1u64 << page_shift(),
            baselines: Baselines::default(),
            poller,
        }
    }

    /// The facts of this moment, with `model`'s running page-cache counts.
    pub fn facts<'a>(&'a mut self, model: &'a CacheModel) -> LiveFacts<'a> {
        LiveFacts { state: self, model }
    }
}

/// A cgroup's facts read from its files now.
pub struct LiveFacts<'a> {
    state: &'a mut LiveState,
    model: &'a CacheModel,
}

impl LiveFacts<'_> {
    /// What the recorder keeps of a cgroup's files at the end of an
    /// interval (reading its memory events, so call once per interval).
    pub fn memory_sample(&mut self, cgroup: CgroupRef) -> MemorySample {
        let events = self.state.poller.events(cgroup, &mut self.state.resolver);
        let version = self
            .state
            .resolver
            .hierarchies()
            .by_id(cgroup.hierarchy)
            .map(|h| (h.version, h.mount.clone()));
        let ((usage_bytes, limit_bytes), peak_bytes) =
            match (&version, self.state.resolver.path(cgroup)) {
                (Some((version, mount)), Some(path)) => (
                    stat::usage_and_limit(mount, &path, *version),
                    stat::peak_usage(mount, &path, *version),
                ),
                _ => ((None, None), None),
            };
        MemorySample {
            usage_bytes,
            limit_bytes,
            peak_bytes,
            page_cache_bytes: self.page_cache_bytes(cgroup),
            events: events.zip(version).map(|((e, _), (v, _))| (e, v)),
        }
    }
}

impl CgroupFacts for LiveFacts<'_> {
    fn path(&mut self, cgroup: CgroupRef) -> Option<String> {
        self.state.resolver.path(cgroup)
    }

    fn page_cache_bytes(&mut self, cgroup: CgroupRef) -> Option<u64> {
        let page = i64::try_from(self.state.page_size).unwrap_or(4096);
        self.state.baselines.owned(
            cgroup,
            (
                self.model.net_pages(cgroup) * page,
                self.model.moved_pages(cgroup),
            ),
            &mut self.state.resolver,
        )
    }

    fn file_charges(&mut self, cgroup: CgroupRef) -> Option<Charges> {
        self.state
            .poller
            .charges(cgroup, &mut self.state.resolver, self.state.page_size)
    }

    fn events(&mut self, cgroup: CgroupRef) -> Option<(MemoryEvents, &'static str)> {
        self.state.poller.events(cgroup, &mut self.state.resolver)
    }

    fn directory(&mut self, cgroup: CgroupRef) -> Option<PathBuf> {
        let path = self.state.resolver.path(cgroup)?;
        let mount = &self
            .state
            .resolver
            .hierarchies()
            .by_id(cgroup.hierarchy)?
            .mount;
        Some(mount.join(path.trim_start_matches('/')))
    }
}

fn page_shift() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).map_or(12, u64::trailing_zeros)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cgtrace_common::cgroup::CgroupRef;

    use super::{Baselines, parse_duration};

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

    #[test]
    fn the_page_cache_anchor_is_taken_again_whenever_the_cgroup_is_quiet() {
        use std::os::unix::fs::MetadataExt as _;

        use crate::cgroup::{Hierarchies, Hierarchy, Resolver, Version};

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let write_stat = |cache: u64| {
            std::fs::write(
                dir.path().join("app/memory.stat"),
                format!("cache {cache}\n"),
            )
            .unwrap();
        };
        let mut resolver = Resolver::new(Hierarchies {
            list: vec![Hierarchy {
                id: Some(4),
                version: Version::V1,
                mount: dir.path().to_path_buf(),
                controllers: vec!["memory".into()],
            }],
        });
        let app = CgroupRef {
            id: std::fs::metadata(dir.path().join("app")).unwrap().ino(),
            hierarchy: 4,
            level: 1,
        };
        let mut baselines = Baselines::default();
        // First sight mid-churn: the file was read a moment after pages
        // cgtrace has not counted yet were evicted, so it is 8 KiB low.
        write_stat(32_768);
        assert_eq!(baselines.owned(app, (0, 0), &mut resolver), Some(32_768));
        assert_eq!(baselines.owned(app, (4096, 1), &mut resolver), Some(36_864));
        // At the limit: one page added and one evicted leave the net count
        // as it was, but that is churn, not quiet.
        write_stat(999);
        assert_eq!(baselines.owned(app, (4096, 3), &mut resolver), Some(36_864));
        // Quiet (nothing moved since the last interval): anchored again on
        // the kernel's figure, which from now on the counts follow exactly.
        write_stat(45_056);
        assert_eq!(baselines.owned(app, (4096, 3), &mut resolver), Some(45_056));
        assert_eq!(baselines.owned(app, (-40_960, 13), &mut resolver), Some(0));
        // Quiet again: the kernel's figure, whatever it says now.
        write_stat(8192);
        assert_eq!(
            baselines.owned(app, (-40_960, 13), &mut resolver),
            Some(8192)
        );
        // An anchor from a lagging file cannot make the figure negative.
        assert_eq!(baselines.owned(app, (-61_440, 18), &mut resolver), Some(0));
    }
}
