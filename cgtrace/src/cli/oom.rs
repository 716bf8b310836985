//! `cgtrace oom [--follow] [--json]`: OOM kills since boot (from the kernel
//! log), then, with `--follow`, live kills from the probe until Ctrl-C.
//!
//! Cost: the probe runs only when the OOM killer marks a victim (a few
//! microseconds per kill); between kills cgtrace sleeps in poll(2).

use std::{
    io,
    os::fd::{AsFd as _, BorrowedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;

use super::Outcome;
use crate::{
    cgroup::{Hierarchies, Resolver},
    event::Event,
    identity::selection::{SelectArgs, Selection},
    kmsg::{DEV_KMSG, KmsgReader, OomLogParser},
    model::oom::{DEFAULT_HOLD_NS, OomCorrelator},
    probe::{DEFAULT_RING_BUFFER_BYTES, OomVariant, Probe, ProbeOptions},
    runtime::{Shutdown, wait_readable},
    session::{self, Context, TraceSource},
    system::Clock,
    view::format::rfc3339,
    view::oom::OomPrinter,
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
    #[arg(long, default_value_t = DEFAULT_RING_BUFFER_BYTES, value_name = "BYTES", value_parser = parse_ring_buffer_bytes)]
    pub ring_buffer_bytes: u32,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// The kernel wants a ring buffer of a power-of-two number of pages.
fn parse_ring_buffer_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if bytes >= 4096 && bytes.is_power_of_two() {
        Ok(bytes)
    } else {
        Err("must be a power of two of at least 4096".to_owned())
    }
}

pub fn run(args: &OomArgs) -> anyhow::Result<Outcome> {
    let selection = Selection::new(&args.select)?;
    let mut printer = OomPrinter::new(args.json);
    let result = if let Some(path) = &args.input {
        replay(path, selection, &mut printer)
    } else if args.follow {
        follow(args, selection, &mut printer)
    } else {
        history(selection, &mut printer)
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

fn open_kmsg() -> anyhow::Result<KmsgReader> {
    KmsgReader::open(Path::new(DEV_KMSG)).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::PermissionDenied {
            ": reading the kernel log needs root (or kernel.dmesg_restrict=0); run it with sudo"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("cannot read the kernel log {DEV_KMSG}{hint}"))
    })
}

/// The kills recorded in a trace, as they were reported live.
fn replay(path: &Path, selection: Selection, printer: &mut OomPrinter) -> anyhow::Result<Outcome> {
    let mut source = TraceSource::open(path)?;
    let clock = Clock::from_boot_time(source.header().boot_time_ns);
    let mut cx = Context::new(selection, clock, source.header().page_size);
    source.learn_names(&mut cx)?;
    session::run(&mut source, &mut cx, &mut [printer])?;
    Ok(Outcome::Success)
}

/// Kills since boot, from the kernel log only.
fn history(mut selection: Selection, printer: &mut OomPrinter) -> anyhow::Result<Outcome> {
    let clock = Clock::now();
    let mut kmsg = open_kmsg()?;
    let mut parser = OomLogParser::new();
    let mut oldest = None;
    while let Some(record) = kmsg.next_record()? {
        oldest.get_or_insert(record.timestamp_us);
        if let Some(kill) = parser.feed(&record) {
            printer.kill(&kill, &clock, &mut selection)?;
        }
    }
    if printer.json() {
        printer.stats(None, kmsg.lost, true)?;
    } else {
        let since = oldest.map_or_else(
            || "nothing".to_owned(),
            |us| rfc3339(clock.wall_time(us.saturating_mul(1000))),
        );
        let kept = if selection.is_everything() {
            String::new()
        } else {
            format!(
                " keeping {} (of {} in all)",
                selection.describe(),
                printer.seen
            )
        };
        crate::note!(
            "cgtrace: {} OOM kills in the kernel log{kept} (it holds records since {since}; older ones have rotated out)",
            printer.reported
        );
    }
    Ok(Outcome::Success)
}

/// The kills since boot, then live kills until SIGINT/SIGTERM.
fn follow(
    args: &OomArgs,
    mut selection: Selection,
    printer: &mut OomPrinter,
) -> anyhow::Result<Outcome> {
    let clock = Clock::now();
    let mut shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let mut probe = Probe::load(&ProbeOptions {
        ring_buffer_bytes: args.ring_buffer_bytes,
        oom_variant: args.probe_variant,
        filter: !selection.is_everything(),
        ..ProbeOptions::default()
    })?;
    let attach_ns = Clock::monotonic_now_ns();
    for feature in probe.features() {
        crate::note!("cgtrace: {feature}");
    }
    let hierarchies = Hierarchies::discover().context("cannot read the cgroup mounts")?;
    let mut resolver = Resolver::new(hierarchies);
    filter_note(selection.install(&mut probe, &mut resolver)?, &selection);
    let mut kmsg = match open_kmsg() {
        Ok(reader) => Some(reader),
        Err(e) => {
            crate::note!(
                "cgtrace: {e:#}; continuing without kills from before now and without the kernel's confirmation"
            );
            None
        }
    };
    let mut parser = OomLogParser::new();
    let mut correlator = OomCorrelator::new(Some(attach_ns), DEFAULT_HOLD_NS);
    let stats_every =
        (args.json && args.stats_interval > 0).then(|| Duration::from_secs(args.stats_interval));
    let mut last_stats = Instant::now();
    let mut probe_kills = Vec::new();

    loop {
        let stop = shutdown.requested();
        let mut created = Vec::new();
        probe.drain(|event| match event {
            Event::OomKill(kill) => probe_kills.push(kill),
            Event::CgroupCreated(named) => created.push((named.cgroup, named.path)),
            _ => {}
        });
        // Names first: a cgroup created and OOM-killed within one read is
        // still named, and its pod's names are read while its files exist.
        selection.cgroups_created(&mut probe, &mut resolver, &created)?;
        let now = Clock::monotonic_now_ns();
        for mut kill in probe_kills.drain(..) {
            crate::session::live::resolve_paths(&mut kill, &mut resolver);
            for ready in correlator.probe(*kill, now) {
                printer.kill(&ready, &clock, &mut selection)?;
            }
        }
        if let Some(reader) = &mut kmsg {
            while let Some(record) = reader.next_record()? {
                if let Some(kill) = parser.feed(&record) {
                    for ready in correlator.log(kill, now) {
                        printer.kill(&ready, &clock, &mut selection)?;
                    }
                }
            }
        }
        for ready in correlator.expire(now) {
            printer.kill(&ready, &clock, &mut selection)?;
        }
        if stop {
            break;
        }
        if let Some(every) = stats_every
            && last_stats.elapsed() >= every
        {
            printer.stats(
                Some(&probe.stats()),
                kmsg.as_ref().map_or(0, |k| k.lost),
                false,
            )?;
            last_stats = Instant::now();
        }
        let timeout = correlator
            .next_deadline()
            .map_or(Duration::from_secs(1), |deadline| {
                Duration::from_nanos(deadline.saturating_sub(now)).min(Duration::from_secs(1))
            });
        let mut fds: Vec<BorrowedFd<'_>> = vec![probe.events_fd(), shutdown.as_fd()];
        if let Some(reader) = &kmsg {
            fds.push(reader.as_fd());
        }
        wait_readable(&fds, timeout.max(Duration::from_millis(1)))?;
    }
    for ready in correlator.flush() {
        printer.kill(&ready, &clock, &mut selection)?;
    }
    printer.stats(
        Some(&probe.stats()),
        kmsg.as_ref().map_or(0, |k| k.lost),
        true,
    )?;
    Ok(Outcome::Success)
}

/// Says what a filter put in the kernel's allowlist.
pub fn filter_note(allowed: usize, selection: &Selection) {
    if !selection.is_everything() {
        crate::note!(
            "cgtrace: keeping {} ({allowed} cgroups now, and their descendants as they appear)",
            selection.describe()
        );
    }
}
