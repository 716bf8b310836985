//! `cgtrace throttle`: CFS bandwidth throttling per cgroup as it happens —
//! periods, throttled periods, throttled time (total, p99, max), the quota
//! as cores and millicores, and usage against it; `--spans` streams each
//! span (CPU, duration, the task that ran the quota out).
//!
//! Cost: the sched_switch variant runs on every context switch; for a task
//! of an unlimited group it is a few reads (see BENCHMARKS.md).

use crate::privilege;
use clap::Args;

use super::{
    Outcome,
    interval::{DEFAULT_INTERVAL, IntervalArgs},
};
use crate::{
    identity::selection::Selection,
    probe::{FeatureSet, ProbeOptions, ThrottleVariant},
    session::{self, Context, FileSamples, LiveOptions, TraceSource},
    system::Clock,
    view::throttle as view,
};

#[derive(Debug, Args)]
pub struct ThrottleArgs {
    #[command(flatten)]
    pub interval: IntervalArgs,
    /// Also print every throttle span as it ends.
    #[arg(long)]
    pub spans: bool,
    /// Show the N most throttled cgroups per interval.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Probe variant.
    #[arg(long, value_enum, default_value_t = ThrottleVariant::Auto)]
    pub probe_variant: ThrottleVariant,
    /// Replay the throttle spans recorded in a trace file instead of
    /// watching this machine (the kernel's own counters are not in a trace).
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
}

pub fn run(args: &ThrottleArgs) -> anyhow::Result<Outcome> {
    let result = match &args.input {
        Some(path) => replay(args, path),
        None => watch(args),
    };
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(Outcome::Success)
        }
        other => other,
    }
}

/// The live view: spans from the probe, counters from each group's files.
fn watch(args: &ThrottleArgs) -> anyhow::Result<Outcome> {
    let selection = Selection::new(&args.interval.select)?;
    let interval = args.interval.interval.unwrap_or(DEFAULT_INTERVAL);
    let (mut source, mut cx) = super::live::start(
        selection,
        &ProbeOptions {
            features: FeatureSet::THROTTLE,
            throttle_variant: args.probe_variant,
            ..ProbeOptions::default()
        },
        |hierarchies, _| {
            if hierarchies.with_controller("cpu").is_none() {
                anyhow::bail!("no cpu controller is mounted: there is no CFS bandwidth to watch");
            }
            Ok(LiveOptions {
                interval,
                files: FileSamples {
                    memory: false,
                    cpu: true,
                    pressure: true,
                    cpu_usage: true,
                },
                gate_throttle: true,
                ..LiveOptions::default()
            })
        },
    )?;
    source.gate_throttle_now()?;
    super::live::give_up_privileges(privilege::kept_by("throttle"))?;
    let mut view = view::ThrottleView::new(
        view::ReplayOptions {
            spans: args.spans,
            json: args.interval.json,
            top: args.top,
            interval,
        },
        args.interval.count,
    );
    session::run(&mut source, &mut cx, &mut [&mut view])?;
    Ok(Outcome::Success)
}

/// The spans of a trace, in `--interval` buckets from the start of the
/// recording, shown as the live view would have.
fn replay(args: &ThrottleArgs, path: &std::path::Path) -> anyhow::Result<Outcome> {
    let mut source = TraceSource::open(path)?;
    let header = source.header().clone();
    let selection = Selection::new(&args.interval.select)?;
    let mut cx = Context::new(
        selection,
        Clock::from_boot_time(header.boot_time_ns),
        header.page_size,
    );
    source.learn_names(&mut cx)?;
    let mut replay = view::ThrottleReplay::new(
        view::ReplayOptions {
            spans: args.spans,
            json: args.interval.json,
            top: args.top,
            interval: args.interval.interval.unwrap_or(DEFAULT_INTERVAL),
        },
        header.start_monotonic_ns,
    );
    session::run(&mut source, &mut cx, &mut [&mut replay])?;
    Ok(Outcome::Success)
}
