//! `cgtrace oom [--follow] [--json]`: OOM kills since boot (from the kernel
//! log), then, with `--follow`, live kills from the probe until Ctrl-C.
//!
//! Cost: the probe runs only when the OOM killer marks a victim (a few
//! microseconds per kill); between kills cgtrace sleeps in poll(2).

use crate::privilege;
use std::{io, path::Path, time::Duration};

use clap::Args;

use super::Outcome;
use crate::{
    identity::selection::{SelectArgs, Selection},
    probe::{DEFAULT_RING_BUFFER_BYTES, OomVariant, ProbeOptions},
    session::{self, Context, KernelLog, KernelLogSource, LiveOptions, TraceSource},
    system::Clock,
    view::oom::{OomFollow, OomPrinter},
};

#[derive(Debug, Args)]
pub struct OomArgs {
    /// After the kills since boot, keep reporting live kills until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per line (schema: docs/json-schema.md), ending with a
    /// `stats` record.
    #[arg(long)]
    pub json: bool,
    /// Seconds between `stats` records in `--follow --json` mode (0: only at exit).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub stats_interval: u64,
    /// Probe variant for finding the memcg whose limit was hit.
    #[arg(long, value_enum, default_value_t = OomVariant::Auto)]
    pub probe_variant: OomVariant,
    /// Replay the OOM kills recorded in a trace file instead of watching
    /// this machine.
    #[arg(long, value_name = "FILE", conflicts_with = "follow")]
    pub input: Option<std::path::PathBuf>,
    /// Ring-buffer size in bytes (a power of two, at least a page).
    #[arg(long, default_value_t = DEFAULT_RING_BUFFER_BYTES, value_name = "BYTES", value_parser = crate::units::parse_ring_buffer_bytes)]
    pub ring_buffer_bytes: u32,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run(args: &OomArgs) -> anyhow::Result<Outcome> {
    let selection = Selection::new(&args.select)?;
    let printer = OomPrinter::new(args.json);
    let result = if let Some(path) = &args.input {
        replay(path, selection, printer)
    } else if args.follow {
        follow(args, selection, printer)
    } else {
        history(selection, printer)
    };
    match result {
        // stdout closed (`cgtrace oom | head`): not an error.
        Err(e) if is_broken_pipe(&e) => Ok(Outcome::Success),
        other => other,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// The kills recorded in a trace, as they were reported live.
fn replay(path: &Path, selection: Selection, mut printer: OomPrinter) -> anyhow::Result<Outcome> {
    let mut source = TraceSource::open(path)?;
    let clock = Clock::from_boot_time(source.header().boot_time_ns);
    let mut cx = Context::new(selection, clock, source.header().page_size);
    source.learn_names(&mut cx)?;
    session::run(&mut source, &mut cx, &mut [&mut printer])?;
    Ok(Outcome::Success)
}

/// Kills since boot, from the kernel log only.
fn history(selection: Selection, mut printer: OomPrinter) -> anyhow::Result<Outcome> {
    let mut source = KernelLogSource::new(KernelLog::open()?);
    let mut cx = Context::new(
        selection,
        Clock::now(),
        1 << crate::probe::offsets::page_shift(),
    );
    session::run(&mut source, &mut cx, &mut [&mut printer])?;
    printer.history_summary(
        source.log().oldest_us(),
        source.log().lost(),
        &cx.clock,
        &cx.selection,
    )?;
    Ok(Outcome::Success)
}

/// The kills since boot, then live kills until SIGINT/SIGTERM.
fn follow(args: &OomArgs, selection: Selection, printer: OomPrinter) -> anyhow::Result<Outcome> {
    let attach_ns = Clock::monotonic_now_ns();
    let (mut source, mut cx) = super::live::start(
        selection,
        &ProbeOptions {
            ring_buffer_bytes: args.ring_buffer_bytes,
            oom_variant: args.probe_variant,
            ..ProbeOptions::default()
        },
        |_, _| {
            let kernel_log = match KernelLog::open() {
                Ok(log) => Some(log),
                Err(e) => {
                    crate::note!(
                        "cgtrace: {e:#}; continuing without kills from before now and without the kernel's confirmation"
                    );
                    None
                }
            };
            Ok(LiveOptions {
                // Often enough that a kill held for its kernel-log twin is
                // reported within a fraction of a second.
                interval: FOLLOW_TICK,
                kernel_log,
                ..LiveOptions::default()
            })
        },
    )?;
    super::live::give_up_privileges(privilege::kept_by("oom --follow"))?;
    let stats_every_ns = (args.json && args.stats_interval > 0)
        .then(|| args.stats_interval.saturating_mul(1_000_000_000));
    let mut view = OomFollow::new(printer, attach_ns, stats_every_ns);
    session::run(&mut source, &mut cx, &mut [&mut view])?;
    Ok(Outcome::Success)
}

/// How often `--follow` wakes up when nothing happens.
const FOLLOW_TICK: Duration = Duration::from_millis(250);
