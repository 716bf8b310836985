//! `cgtrace serve`: every probe family at once, in one process, until
//! SIGTERM, with a Prometheus endpoint on the session's runtime and each
//! OOM kill as a JSON line on stdout. The metrics and the kill lines are
//! sinks on the same live source every view uses.

use crate::privilege;
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use super::{Outcome, charges::ChargesArgs};
use crate::{
    endpoint::{self, Endpoint},
    event::Event,
    identity::selection::{SelectArgs, Selection},
    probe::{FeatureSet, ProbeOptions},
    session::{self, Context, End, FileSamples, Flow, LiveOptions, Sink},
    system::Clock,
    trace::flight::{
        DEFAULT_KEEP, DEFAULT_MAX_DISK, FlightOptions, FlightRecorder, RecorderStatus,
    },
    view::{
        metrics::{DEFAULT_MAX_SERIES, DEFAULT_SERIES_TTL, Metrics, ProgramRuns},
        oom::{OomFollow, OomPrinter},
    },
};

/// How often `serve` samples unless told otherwise. With a thousand
/// containers under CFS quotas, each interval reads a thousand `cpu.stat`
/// files: at 10 s that costs about 0.3 % of a core (BENCHMARKS.md).
pub const SERVE_INTERVAL: Duration = Duration::from_secs(10);

/// How often `serve` samples every memory cgroup's files, the quiet ones
/// included (the busy ones are sampled every interval).
pub const MEMORY_SWEEP: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the endpoint listens: loopback unless told otherwise
    /// (`0.0.0.0:9417` takes scrapes from other hosts).
    #[arg(long, default_value = "127.0.0.1:9417", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// How often the probe's counters and the cgroups' files are sampled
    /// (default 10s: scrapes come every 15 s or more, and kills and
    /// throttle spans are counted as they happen whatever the interval).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub interval: Option<Duration>,
    /// How often every memory cgroup's files are read, the quiet ones
    /// included (default 30s); cgroups with page-cache, reclaim or charge
    /// activity are read every interval.
    #[arg(long, value_parser = crate::units::parse_duration, value_name = "DURATION")]
    pub sweep: Option<Duration>,
    /// How long a removed cgroup's series are still served (default 5m):
    /// an OOM-killed container's kill is scraped after it is gone.
    #[arg(long, value_parser = crate::units::parse_duration, value_name = "DURATION")]
    pub series_ttl: Option<Duration>,
    /// The most series of cgroups served at once (default 100000); what
    /// the cap refuses is counted in `cgtrace_series_dropped_total`.
    #[arg(long, value_name = "N")]
    pub max_series: Option<usize>,
    /// Serve each eBPF program's runs and run time
    /// (`cgtrace_probe_program_run_seconds_total`). The kernel's run-time
    /// statistics cost every BPF program on the host two clock reads per
    /// run while on, so they are off unless asked for.
    #[arg(long)]
    pub program_stats: bool,
    /// Record continuously into DIR, in segments, and on every OOM kill and
    /// on SIGUSR1 keep the last --keep minutes as a snapshot under
    /// DIR/snapshots (`cgtrace report DIR/snapshots/…` reads one).
    #[arg(long, value_name = "DIR")]
    pub flight_recorder: Option<PathBuf>,
    /// The most the flight recorder's directory holds, snapshots included
    /// (default 1G); the oldest segments, then snapshots, make room.
    #[arg(long, value_parser = crate::units::parse_size, value_name = "SIZE", requires = "flight_recorder")]
    pub max_disk: Option<u64>,
    /// How far back a snapshot reaches (default 10m).
    #[arg(long, value_parser = crate::units::parse_duration, value_name = "DURATION", requires = "flight_recorder")]
    pub keep: Option<Duration>,
    #[command(flatten)]
    pub charges: ChargesArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run(args: &ServeArgs) -> anyhow::Result<Outcome> {
    let selection = Selection::new(&args.select)?;
    let flight = args
        .flight_recorder
        .as_ref()
        .map(|dir| {
            FlightOptions::new(
                dir.clone(),
                args.max_disk.unwrap_or(DEFAULT_MAX_DISK),
                args.keep.unwrap_or(DEFAULT_KEEP),
            )
        })
        .transpose()?;
    let runtime = session::runtime()?;
    // Bound before the probes load: a port in use fails at once.
    let listener = runtime.block_on(endpoint::bind(args.listen))?;
    let interval = args.interval.unwrap_or(SERVE_INTERVAL);
    let (mut source, mut cx) = super::live::start(
        selection,
        &ProbeOptions {
            features: args.charges.features(FeatureSet::ALL),
            ..ProbeOptions::default()
        },
        |_, _| {
            Ok(LiveOptions {
                interval,
                files: FileSamples {
                    memory: true,
                    cpu: true,
                    pressure: true,
                    // Not served: one file fewer per cpu cgroup per interval.
                    cpu_usage: false,
                },
                gate_throttle: true,
                // Every container's usage and limit, busy or not; the
                // busy ones every interval.
                sweep: Some(args.sweep.unwrap_or(MEMORY_SWEEP)),
                ..LiveOptions::default()
            })
        },
    )?;
    let programs = if args.program_stats {
        let runs = ProgramRuns::enable(source.probe().program_fds());
        if runs.is_none() {
            crate::note!(
                "cgtrace: serve: the kernel refused to count BPF run time (BPF_ENABLE_STATS needs 5.8+ and CAP_SYS_ADMIN): no per-program figures"
            );
        }
        runs
    } else {
        None
    };
    let status = RecorderStatus::default();
    let mut recorder = flight
        .map(|options| FlightRecorder::open(options, status.clone()))
        .transpose()?;
    let mut metrics = Metrics::new(
        args.series_ttl.unwrap_or(DEFAULT_SERIES_TTL),
        args.max_series.unwrap_or(DEFAULT_MAX_SERIES),
        |registry| {
            if let Some(programs) = programs {
                registry.register_collector(Box::new(programs));
            }
            if recorder.is_some() {
                status.register(registry);
            }
        },
    );
    let snapshot_trigger = recorder.as_ref().map(FlightRecorder::snapshot_trigger);
    runtime.block_on(async { snapshot_on_sigusr1(snapshot_trigger) })?;
    let endpoint = Endpoint {
        registry: metrics.registry(),
        ready: Arc::new(AtomicBool::new(true)),
    };
    let ready = Arc::clone(&endpoint.ready);
    super::live::give_up_privileges(privilege::kept_by("serve"))?;
    let server = runtime.spawn(endpoint::serve(listener, endpoint));
    crate::note!(
        "cgtrace: serving /metrics and /healthz on http://{}",
        args.listen
    );
    // Each kill also as one JSON line on stdout (the `oom --json` schema),
    // for a node's log shipper.
    let mut kill_lines = KillLines(Some(OomFollow::new(
        OomPrinter::new(true),
        Clock::monotonic_now_ns(),
        None,
    )));
    let mut sinks: Vec<&mut dyn Sink> = vec![&mut metrics, &mut kill_lines];
    if let Some(recorder) = &mut recorder {
        sinks.push(recorder);
    }
    let result = session::run(&mut source, &mut cx, &mut sinks);
    ready.store(false, Ordering::Relaxed);
    server.abort();
    result?;
    Ok(Outcome::Success)
}

/// On SIGUSR1, asks the flight recorder for a snapshot (at the end of the
/// interval); without one, says there is none rather than die of the
/// signal's default action.
fn snapshot_on_sigusr1(trigger: Option<Arc<AtomicBool>>) -> anyhow::Result<()> {
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("cannot handle SIGUSR1")?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            if let Some(trigger) = &trigger {
                trigger.store(true, Ordering::Relaxed);
            } else {
                crate::note!(
                    "cgtrace: SIGUSR1: no flight recorder to snapshot (serve --flight-recorder DIR)"
                );
            }
        }
    });
    Ok(())
}

/// The kill lines on stdout, for as long as stdout takes them: a log
/// shipper that goes away stops the lines, not the agent.
struct KillLines(Option<OomFollow>);

impl KillLines {
    fn failed(&mut self, error: &anyhow::Error) {
        crate::note!("cgtrace: serve: {error:#}: no more kill lines on stdout; the metrics go on");
        self.0 = None;
    }
}

impl Sink for KillLines {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        if let Some(lines) = &mut self.0
            && let Err(error) = lines.event(event, cx)
        {
            self.failed(&error);
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, cx: &mut Context, end: &End) -> anyhow::Result<()> {
        if let Some(lines) = &mut self.0
            && let Err(error) = lines.finish(cx, end)
        {
            self.failed(&error);
        }
        Ok(())
    }
}
