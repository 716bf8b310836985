//! `cgtrace serve`: every probe family at once, in one process, until
//! SIGTERM, with a Prometheus endpoint on the session's runtime and each
//! OOM kill as a JSON line on stdout. The metrics and the kill lines are
//! sinks on the same live source every view uses.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::Args;

use super::{Outcome, interval::DEFAULT_INTERVAL};
use crate::{
    endpoint::{self, Endpoint},
    identity::selection::{SelectArgs, Selection},
    probe::{FeatureSet, ProbeOptions},
    session::{self, FileSamples, LiveOptions},
    system::Clock,
    view::{
        metrics::{DEFAULT_MAX_SERIES, DEFAULT_SERIES_TTL, Metrics, ProgramRuns},
        oom::{OomFollow, OomPrinter},
    },
};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the endpoint listens: loopback unless told otherwise
    /// (`0.0.0.0:9417` takes scrapes from other hosts).
    #[arg(long, default_value = "127.0.0.1:9417", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// How often the probe's counters and the cgroups' files are sampled.
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub interval: Option<Duration>,
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
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run(args: &ServeArgs) -> anyhow::Result<Outcome> {
    let selection = Selection::new(&args.select)?;
    let runtime = session::runtime()?;
    // Bound before the probes load: a port in use fails at once.
    let listener = runtime.block_on(endpoint::bind(args.listen))?;
    let interval = args.interval.unwrap_or(DEFAULT_INTERVAL);
    let (mut source, mut cx) = super::live::start(
        selection,
        &ProbeOptions {
            features: FeatureSet::ALL,
            ..ProbeOptions::default()
        },
        |_, _| {
            Ok(LiveOptions {
                interval,
                files: FileSamples {
                    memory: true,
                    cpu: true,
                    pressure: true,
                },
                gate_throttle: true,
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
    let mut metrics = Metrics::new(
        args.series_ttl.unwrap_or(DEFAULT_SERIES_TTL),
        args.max_series.unwrap_or(DEFAULT_MAX_SERIES),
        programs,
    );
    let endpoint = Endpoint {
        registry: metrics.registry(),
        ready: Arc::new(AtomicBool::new(true)),
    };
    let ready = Arc::clone(&endpoint.ready);
    let server = runtime.spawn(endpoint::serve(listener, endpoint));
    crate::note!(
        "cgtrace: serving /metrics and /healthz on http://{}",
        args.listen
    );
    // Each kill also as one JSON line on stdout (the `oom --json` schema),
    // for a node's log shipper.
    let mut kill_lines = OomFollow::new(OomPrinter::new(true), Clock::monotonic_now_ns(), None);
    let result = session::run(&mut source, &mut cx, &mut [&mut metrics, &mut kill_lines]);
    ready.store(false, Ordering::Relaxed);
    server.abort();
    result?;
    Ok(Outcome::Success)
}
