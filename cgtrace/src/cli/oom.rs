//! `cgtrace oom [--follow] [--json]`: OOM kills since boot (from the kernel
//! log), then, with `--follow`, live kills from the probe until Ctrl-C.
//!
//! Cost: the probe runs only when the OOM killer marks a victim (a few
//! microseconds per kill); between kills cgtrace sleeps in poll(2).

use std::{
    io::{self, Write as _},
    os::fd::{AsFd as _, BorrowedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::{
    Outcome,
    select::{SelectArgs, Selection},
};
use crate::{
    cgroup::{Hierarchies, Resolver},
    event::{Event, OomKill},
    kmsg::{DEV_KMSG, KmsgReader, OomLogParser},
    model::oom::{DEFAULT_HOLD_NS, OomCorrelator},
    output::{self, format::rfc3339},
    probe::{DEFAULT_RING_BUFFER_BYTES, OomVariant, Probe, ProbeOptions, ProbeStats},
    runtime::{Shutdown, wait_readable},
    system::Clock,
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

/// Writes the kills the selection keeps to stdout in the chosen format.
struct Printer {
    json: bool,
    clock: Clock,
    header_printed: bool,
    reported: u64,
    /// Kills seen, kept by the selection or not.
    seen: u64,
    selection: Selection,
}

impl Printer {
    fn kill(&mut self, kill: &OomKill) -> io::Result<()> {
        self.seen += 1;
        // The victim's cgroup decides, as in the kernel's filter; a kill
        // whose victim cgroup is unknown is judged by the limit's memcg.
        let judged_by = kill
            .victim
            .cgroup
            .as_deref()
            .or_else(|| kill.oom_memcg.as_ref().and_then(|m| m.path.as_deref()));
        if !self.selection.keeps_any(&[judged_by]) {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        let identify = &mut |path: &str| self.selection.identify(path);
        if self.json {
            writeln!(out, "{}", output::oom::json(kill, &self.clock, identify))?;
        } else {
            if !self.header_printed {
                writeln!(out, "{}", output::oom::header())?;
                self.header_printed = true;
            }
            writeln!(out, "{}", output::oom::line(kill, &self.clock, identify))?;
        }
        self.reported += 1;
        out.flush()
    }

    fn stats(&self, stats: Option<&ProbeStats>, kmsg_lost: u64, last: bool) -> io::Result<()> {
        if self.json {
            let record = json!({
                "type": "stats",
                "time": rfc3339(std::time::SystemTime::now()),
                "final": last,
                "oom_kills_reported": self.reported,
                "probe": stats,
                "kernel_log_records_lost": kmsg_lost,
            });
            let mut out = io::stdout().lock();
            writeln!(out, "{record}")?;
            return out.flush();
        }
        if last {
            let probe = stats.map_or_else(
                || "no probe (kernel log only)".to_owned(),
                |s| {
                    format!(
                        "probe: {} records, {} ring-buffer drops, {} recursion misses, {} read failures, {} undecodable",
                        s.records, s.ring_buffer_drops, s.recursion_misses, s.read_failures, s.decode_errors
                    )
                },
            );
            crate::note!(
                "cgtrace: {} OOM kills reported; {probe}; kernel log: {kmsg_lost} records lost",
                self.reported
            );
        }
        Ok(())
    }
}

pub fn run(args: &OomArgs) -> anyhow::Result<Outcome> {
    let mut printer = Printer {
        json: args.json,
        clock: Clock::now(),
        header_printed: false,
        reported: 0,
        seen: 0,
        selection: Selection::new(&args.select)?,
    };
    let result = if let Some(path) = &args.input {
        replay(path, &mut printer)
    } else if args.follow {
        follow(args, &mut printer)
    } else {
        history(&mut printer)
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
fn replay(path: &Path, printer: &mut Printer) -> anyhow::Result<Outcome> {
    let trace = super::open_trace(path)?;
    printer.clock = Clock::from_boot_time(trace.header.boot_time_ns);
    printer.selection.learn_from(&trace.records);
    for record in &trace.records {
        if let crate::trace::record::TraceRecord::OomKill(kill) = record {
            printer.kill(kill)?;
        }
    }
    if let crate::trace::file::Ending::CutShort { offset, .. } = trace.ending {
        crate::note!(
            "cgtrace: the trace was cut short at byte {offset}: kills after that were not recorded"
        );
    }
    Ok(Outcome::Success)
}

/// Kills since boot, from the kernel log only.
fn history(printer: &mut Printer) -> anyhow::Result<Outcome> {
    let mut kmsg = open_kmsg()?;
    let mut parser = OomLogParser::new();
    let mut oldest = None;
    while let Some(record) = kmsg.next_record()? {
        oldest.get_or_insert(record.timestamp_us);
        if let Some(kill) = parser.feed(&record) {
            printer.kill(&kill)?;
        }
    }
    if printer.json {
        printer.stats(None, kmsg.lost, true)?;
    } else {
        let since = oldest.map_or_else(
            || "nothing".to_owned(),
            |us| rfc3339(printer.clock.wall_time(us.saturating_mul(1000))),
        );
        let kept = if printer.selection.is_everything() {
            String::new()
        } else {
            format!(
                " keeping {} (of {} in all)",
                printer.selection.describe(),
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
fn follow(args: &OomArgs, printer: &mut Printer) -> anyhow::Result<Outcome> {
    let mut shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let mut probe = Probe::load(&ProbeOptions {
        ring_buffer_bytes: args.ring_buffer_bytes,
        oom_variant: args.probe_variant,
        filter: !printer.selection.is_everything(),
        ..ProbeOptions::default()
    })?;
    let attach_ns = Clock::monotonic_now_ns();
    for feature in probe.features() {
        crate::note!("cgtrace: {feature}");
    }
    let hierarchies = Hierarchies::discover().context("cannot read the cgroup mounts")?;
    let mut resolver = Resolver::new(hierarchies);
    filter_note(
        printer.selection.install(&mut probe, &mut resolver)?,
        &printer.selection,
    );
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
        printer
            .selection
            .cgroups_created(&mut probe, &mut resolver, &created)?;
        let now = Clock::monotonic_now_ns();
        for mut kill in probe_kills.drain(..) {
            resolve_paths(&mut kill, &mut resolver);
            for ready in correlator.probe(*kill, now) {
                printer.kill(&ready)?;
            }
        }
        if let Some(reader) = &mut kmsg {
            while let Some(record) = reader.next_record()? {
                if let Some(kill) = parser.feed(&record) {
                    for ready in correlator.log(kill, now) {
                        printer.kill(&ready)?;
                    }
                }
            }
        }
        for ready in correlator.expire(now) {
            printer.kill(&ready)?;
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
        printer.kill(&ready)?;
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

/// Fills in cgroup paths for the ids the probe recorded.
pub fn resolve_paths(kill: &mut OomKill, resolver: &mut Resolver) {
    if let Some(cgroup) = kill.victim.cgroup_ref {
        kill.victim.cgroup = resolver.path(cgroup);
    }
    if let Some(trigger) = &mut kill.trigger
        && let Some(cgroup) = trigger.cgroup_ref
    {
        trigger.cgroup = resolver.path(cgroup);
    }
    if let Some(memcg) = &mut kill.oom_memcg
        && let Some(cgroup) = memcg.cgroup_ref
    {
        memcg.path = resolver.path(cgroup);
    }
}
