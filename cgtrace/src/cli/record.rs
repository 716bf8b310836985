//! `cgtrace record -o FILE [-- CMD ARGS...]`: every event family to a trace
//! file: OOM kills and throttle spans as they happen; each interval the
//! page-cache flows, reclaim stalls and charges, and the usage, limit, page
//! cache and memory events of every cgroup they mention; the name of every
//! cgroup, and the loss counters at the end. With a command, it runs in fresh cgroups (optionally limited, to
//! reproduce a container's limits) and recording stops when it exits, with
//! its exit code.
//!
//! Cost: all probes are attached, as for `oom`, `cache` and `throttle`
//! together; the file gets one chunk per interval (see BENCHMARKS.md).

use std::{
    collections::HashSet,
    io::{self, IsTerminal as _},
    os::{fd::AsFd as _, unix::process::ExitStatusExt as _},
    path::PathBuf,
    process::{Child, Command, ExitCode},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use cgtrace_common::{cgroup::CgroupRef, pagecache::ChargeKind};
use clap::Args;

use super::{
    interval::{LiveState, parse_duration},
    oom::{filter_note, resolve_paths},
};
use crate::{
    cgroup::{
        Hierarchies,
        scratch::{ScratchCgroup, spawn_into_all},
    },
    event::Event,
    identity::selection::{SelectArgs, Selection},
    model::cache::CacheModel,
    probe::{FeatureSet, Probe, ProbeOptions},
    runtime::{Shutdown, wait_readable},
    system::{self, Clock},
    trace::{
        file::{TraceHeader, TraceWriter},
        record::{ChargesFrom, TraceRecord},
    },
    view::interval::CgroupFacts as _,
};

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The trace file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this long (default: when the command exits, or Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often page-cache flows are sampled and the file is flushed.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Memory limit for the command's cgroup: bytes, or with K, M, G.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub memory_limit: Option<u64>,
    /// CPU limit for the command's cgroup, in cores (0.5 = half a core).
    #[arg(long, value_name = "CORES")]
    pub cpu_limit: Option<f64>,
    /// What to record (a page-cache flow is kept when its owner or its
    /// actor is selected); the command's own cgroups are always recorded.
    #[command(flatten)]
    pub select: SelectArgs,
    /// The command to run and record.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `512M`, `2G`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => (&text[..at], &text[at..]),
        None => (text, ""),
    };
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("`{text}`: unknown unit (use K, M, G or T)")),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 512M)"))?;
    value
        .checked_mul(scale)
        .filter(|bytes| *bytes >= 4096)
        .ok_or_else(|| format!("`{text}` is not a usable memory limit"))
}

/// The CFS period `--cpu-limit` uses (the kernel's and Kubernetes' default).
const CPU_PERIOD_US: u64 = 100_000;
const CPU_PERIOD_SECONDS: f64 = 0.1;

/// The trace being written, which cgroups it has named, and what is kept
/// about them between intervals (one resolver for names and files alike).
struct Recording {
    writer: TraceWriter<std::fs::File>,
    state: LiveState,
    named: HashSet<(u32, u64)>,
    /// Paths of pods and containers whose names are not written yet.
    unnamed: HashSet<String>,
    path: PathBuf,
    selection: Selection,
}

impl Recording {
    /// Creates the trace file and writes its header.
    fn create(args: &RecordArgs, hierarchies: &Hierarchies) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))?;
        let writer = TraceWriter::new(file, &header())
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        Ok(Self {
            writer,
            state: LiveState::new(hierarchies.clone()),
            named: HashSet::new(),
            unnamed: HashSet::new(),
            path: args.output.clone(),
            selection: Selection::new(&args.select)?,
        })
    }

    /// Whether any of `cgroups` is one the user asked about.
    fn wanted(&mut self, cgroups: &[Option<CgroupRef>]) -> bool {
        self.selection.is_everything()
            || cgroups.iter().flatten().any(|cgroup| {
                self.state
                    .resolver
                    .path(*cgroup)
                    .is_some_and(|path| self.selection.keeps(&path))
            })
    }

    /// Writes the workload names of the cgroup at `path` once they are
    /// known; a pod or container not named yet is looked at again at the
    /// end of each interval.
    fn workload_names(&mut self, path: &str) -> anyhow::Result<()> {
        let identity = self.selection.identify(path);
        let named = identity.pod.is_some() || identity.container.is_some();
        let nameable = !matches!(
            identity.workload,
            crate::identity::path::Workload::Unit { .. } | crate::identity::path::Workload::Path
        );
        if named {
            self.unnamed.remove(path);
            self.write(&TraceRecord::WorkloadNames {
                path: path.to_owned(),
                namespace: identity.namespace,
                pod: identity.pod,
                container: identity.container,
            })?;
        } else if nameable {
            self.unnamed.insert(path.to_owned());
        }
        Ok(())
    }

    /// Looks again for the names of pods and containers written unnamed.
    fn name_workloads(&mut self) -> anyhow::Result<()> {
        let unnamed: Vec<String> = self.unnamed.iter().cloned().collect();
        for path in unnamed {
            self.workload_names(&path)?;
        }
        Ok(())
    }

    fn write(&mut self, record: &TraceRecord) -> anyhow::Result<()> {
        self.writer
            .record(record)
            .with_context(|| self.write_failed())
    }

    fn write_failed(&self) -> String {
        format!(
            "cannot write {} (what was written up to the last complete chunk stays readable)",
            self.path.display()
        )
    }

    /// Writes the cgroup's name the first time the trace mentions it.
    fn name(&mut self, cgroup: Option<CgroupRef>) -> anyhow::Result<()> {
        let Some(cgroup) = cgroup else {
            return Ok(());
        };
        if !self.named.insert((cgroup.hierarchy, cgroup.id)) {
            return Ok(());
        }
        if let Some(path) = self.state.resolver.path(cgroup) {
            self.write(&TraceRecord::CgroupName {
                cgroup,
                path: path.clone(),
            })?;
            self.workload_names(&path)?;
        }
        Ok(())
    }

    fn event(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::OomKill(mut kill) => {
                resolve_paths(&mut kill, &mut self.state.resolver);
                let involved = [
                    kill.victim.cgroup.as_deref(),
                    kill.trigger.as_ref().and_then(|t| t.cgroup.as_deref()),
                    kill.oom_memcg.as_ref().and_then(|m| m.path.as_deref()),
                ];
                if !self.selection.keeps_any(&involved) {
                    return Ok(());
                }
                self.name(kill.victim.cgroup_ref)?;
                self.name(kill.trigger.as_ref().and_then(|t| t.cgroup_ref))?;
                self.name(kill.oom_memcg.as_ref().and_then(|m| m.cgroup_ref))?;
                self.write(&TraceRecord::OomKill(kill))
            }
            Event::ThrottleSpan(span) => {
                if !self.wanted(&[span.cgroup_ref]) {
                    return Ok(());
                }
                self.name(span.cgroup_ref)?;
                self.write(&TraceRecord::Throttle(span))
            }
            _ => Ok(()),
        }
    }
}

/// The command's cgroups: one per hierarchy holding memory and cpu (one on v2).
fn command_cgroups(
    args: &RecordArgs,
    hierarchies: &Hierarchies,
) -> anyhow::Result<Vec<ScratchCgroup>> {
    let name = format!("cgtrace-record-{}", std::process::id());
    let mut cgroups = Vec::new();
    let memory = ScratchCgroup::create_for(hierarchies, "memory", &name)
        .context("cannot create the memory cgroup")?;
    if let Some(limit) = args.memory_limit {
        memory.set_memory_limit(limit)?;
    }
    let cpu_in_memory = hierarchies
        .with_controller("cpu")
        .zip(hierarchies.with_controller("memory"))
        .is_some_and(|(c, m)| c.id == m.id);
    let cpu = if cpu_in_memory {
        None
    } else {
        Some(
            ScratchCgroup::create_for(hierarchies, "cpu", &name)
                .context("cannot create the cpu cgroup")?,
        )
    };
    if let Some(cores) = args.cpu_limit {
        if !(cores > 0.0 && cores.is_finite()) {
            bail!("--cpu-limit must be a positive number of cores");
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked positive"
        )]
        let quota = ((cores * CPU_PERIOD_SECONDS * 1e6) as u64).max(1000);
        cpu.as_ref()
            .unwrap_or(&memory)
            .set_cpu_quota(quota, CPU_PERIOD_US)?;
    }
    cgroups.push(memory);
    cgroups.extend(cpu);
    Ok(cgroups)
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(1)
}

/// The facts about this machine and moment that open a trace.
fn header() -> TraceHeader {
    let now_monotonic = Clock::monotonic_now_ns();
    let now_wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    TraceHeader {
        kernel_release: system::kernel_release(),
        hostname: system::hostname(),
        boot_time_ns: now_wall.saturating_sub(now_monotonic),
        start_monotonic_ns: now_monotonic,
        start_wall_ns: now_wall,
        page_size: 1 << crate::probe::offsets::page_shift(),
        writer: format!("cgtrace {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Samples the page-cache and reclaim counters and writes the interval:
/// its flows, stalls and charges, what the files of every cgroup it
/// mentions (and of the command's cgroups) say, and the `Interval` record
/// that closes it.
fn write_interval(
    probe: &mut Probe,
    model: &mut CacheModel,
    recording: &mut Recording,
    watched: &[CgroupRef],
) -> anyhow::Result<()> {
    let Some(interval) = probe.sample_counters() else {
        return Ok(());
    };
    model.add(&interval);
    let end_ns = interval.end_ns;
    let mut cgroups: Vec<CgroupRef> = watched.to_vec();
    for flow in &interval.flows {
        if !recording.wanted(&[flow.owner, flow.actor]) {
            continue;
        }
        recording.name(flow.owner)?;
        recording.name(flow.actor)?;
        cgroups.extend(flow.owner);
        recording.write(&TraceRecord::CacheFlow {
            end_ns,
            owner: flow.owner,
            actor: flow.actor,
            reason: flow.reason,
            pages: flow.pages,
        })?;
    }
    for stall in &interval.stalls {
        if !recording.wanted(&[stall.cgroup]) {
            continue;
        }
        recording.name(stall.cgroup)?;
        cgroups.extend(stall.cgroup);
        recording.write(&TraceRecord::Stall {
            end_ns,
            cgroup: stall.cgroup,
            kind: stall.kind,
            stats: stall.stats.clone(),
        })?;
    }
    for charge in interval.charges.iter().flatten() {
        if !recording.wanted(&[charge.cgroup]) {
            continue;
        }
        recording.name(charge.cgroup)?;
        cgroups.extend(charge.cgroup);
        recording.write(&TraceRecord::Charge {
            end_ns,
            cgroup: charge.cgroup,
            kind: charge.kind,
            charged: charge.charged,
            uncharged: charge.uncharged,
        })?;
    }
    cgroups.sort_by_key(|c| (c.hierarchy, c.id));
    cgroups.dedup_by_key(|c| (c.hierarchy, c.id));
    let charges_from = if interval.charges.is_some() {
        ChargesFrom::Tracepoints
    } else {
        ChargesFrom::MemoryStat
    };
    // Read every cgroup's files first, then write: both need the state.
    let mut facts = recording.state.facts(model);
    let read: Vec<_> = cgroups
        .into_iter()
        .map(|cgroup| {
            let sample = facts.memory_sample(cgroup);
            let charges = (charges_from == ChargesFrom::MemoryStat)
                .then(|| facts.file_charges(cgroup))
                .flatten();
            (cgroup, sample, charges)
        })
        .collect();
    for (cgroup, sample, charges) in read {
        recording.name(Some(cgroup))?;
        recording.write(&TraceRecord::Memory {
            end_ns,
            cgroup,
            sample,
        })?;
        if let Some(charges) = charges {
            for kind in ChargeKind::ALL {
                let (charged, uncharged) = charges[kind as usize];
                if charged + uncharged > 0 {
                    recording.write(&TraceRecord::Charge {
                        end_ns,
                        cgroup: Some(cgroup),
                        kind,
                        charged,
                        uncharged,
                    })?;
                }
            }
        }
    }
    recording.name_workloads()?;
    recording.write(&TraceRecord::Interval {
        start_ns: interval.start_ns,
        end_ns,
        charges_from,
    })
}

/// The command's memory cgroups as they start, empty: the kernel's usage
/// watermark read now is where the report measures the run's peak from.
fn write_initial_memory(
    model: &CacheModel,
    recording: &mut Recording,
    watched: &[CgroupRef],
) -> anyhow::Result<()> {
    let now = Clock::monotonic_now_ns();
    for cgroup in watched {
        let sample = recording.state.facts(model).memory_sample(*cgroup);
        recording.name(Some(*cgroup))?;
        recording.write(&TraceRecord::Memory {
            end_ns: now,
            cgroup: *cgroup,
            sample,
        })?;
    }
    Ok(())
}

/// The command's memory cgroups, whose usage is sampled every interval
/// even when no page-cache event names them.
fn memory_refs(cgroups: &[ScratchCgroup], hierarchies: &Hierarchies) -> Vec<CgroupRef> {
    let memory = hierarchies.with_controller("memory").and_then(|h| h.id);
    cgroups
        .iter()
        .filter(|c| Some(c.hierarchy()) == memory)
        .filter_map(|c| {
            Some(CgroupRef {
                id: c.id().ok()?,
                hierarchy: c.hierarchy(),
                level: u32::try_from(c.path().split('/').filter(|p| !p.is_empty()).count()).ok()?,
            })
        })
        .collect()
}

/// Starts the command, if any, in its fresh cgroups.
fn start_command(args: &RecordArgs, cgroups: &[ScratchCgroup]) -> anyhow::Result<Option<Child>> {
    let Some((program, rest)) = args.command.split_first() else {
        return Ok(None);
    };
    let mut command = Command::new(program);
    command.args(rest);
    // If the recorder is killed (SIGKILL cannot be caught), the command must
    // not run on unrecorded in its limited cgroups.
    // SAFETY: prctl(2) is async-signal-safe and touches no memory here.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let refs: Vec<&ScratchCgroup> = cgroups.iter().collect();
    let child =
        spawn_into_all(&refs, &mut command).with_context(|| format!("cannot run {program}"))?;
    Ok(Some(child))
}

/// Writes what the ring buffer holds, learning new cgroups' names first.
fn record_events(probe: &mut Probe, recording: &mut Recording) -> anyhow::Result<()> {
    let mut events = Vec::new();
    probe.drain(|event| events.push(event));
    // Names first, so a cgroup gone before the interval ends is still
    // named in the trace.
    let created: Vec<(CgroupRef, String)> = events
        .iter()
        .filter_map(|event| match event {
            Event::CgroupCreated(named) => Some((named.cgroup, named.path.clone())),
            _ => None,
        })
        .collect();
    recording
        .selection
        .cgroups_created(probe, &mut recording.state.resolver, &created)?;
    for event in events {
        recording.event(event)?;
    }
    Ok(())
}

pub fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    let mut shutdown = Shutdown::install().context("cannot install signal handlers")?;
    // Checked before anything is loaded or created, so bad options cost nothing.
    let filtered = !Selection::new(&args.select)?.is_everything();
    let mut probe = Probe::load(&ProbeOptions {
        features: FeatureSet::ALL,
        filter: filtered,
        ..ProbeOptions::default()
    })?;
    for feature in probe.features() {
        crate::note!("cgtrace: {feature}");
    }
    let hierarchies = Hierarchies::discover().context("cannot read the cgroup mounts")?;
    let mut recording = Recording::create(args, &hierarchies)?;
    let mut model = CacheModel::new();
    if let Some(counters) = probe.sample_counters() {
        model.add(&counters);
    }

    // The command's cgroups are kept whatever the filter says, and are in
    // the kernel's allowlist before the command starts.
    let cgroups = if args.command.is_empty() {
        Vec::new()
    } else {
        command_cgroups(args, &hierarchies)?
    };
    for cgroup in &cgroups {
        recording.selection.also_keep(cgroup.path());
    }
    let allowed = recording
        .selection
        .install(&mut probe, &mut recording.state.resolver)?;
    filter_note(allowed, &recording.selection);
    let watched = memory_refs(&cgroups, &hierarchies);
    write_initial_memory(&model, &mut recording, &watched)?;
    let mut child = start_command(args, &cgroups)?;

    let started = Instant::now();
    let progress = io::stderr().is_terminal();
    let mut next = started + args.interval;
    let mut exit_status = None;
    loop {
        let stop = shutdown.requested();
        record_events(&mut probe, &mut recording)?;
        if let Some(process) = &mut child
            && let Some(exit) = process.try_wait()?
        {
            exit_status = Some(exit);
        }
        let timed_out = args.duration.is_some_and(|d| started.elapsed() >= d);
        let finishing = stop || timed_out || exit_status.is_some();
        if finishing || Instant::now() >= next {
            write_interval(&mut probe, &mut model, &mut recording, &watched)?;
            recording
                .writer
                .flush()
                .with_context(|| recording.write_failed())?;
            next += args.interval;
            if progress {
                crate::note!(
                    "\rcgtrace: recording {:.0} s, {} records, {} written, {} lost   ",
                    started.elapsed().as_secs_f64(),
                    recording.writer.records(),
                    crate::view::format::bytes(recording.writer.bytes_written()),
                    probe.stats().lost()
                );
            }
        }
        if finishing {
            break;
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        wait_readable(
            &[probe.events_fd(), shutdown.as_fd()],
            wait.max(Duration::from_millis(1)),
        )?;
    }
    if let Some(mut process) = child.take()
        && exit_status.is_none()
    {
        // Stopped by Ctrl-C or --duration: the command goes with its cgroups.
        let _ = process.kill();
        exit_status = process.wait().ok();
    }
    let losses = probe.stats();
    recording.write(&TraceRecord::Stats {
        monotonic_ns: Clock::monotonic_now_ns(),
        stats: losses,
    })?;
    recording
        .writer
        .flush()
        .with_context(|| recording.write_failed())?;
    crate::note!(
        "{}cgtrace: wrote {} records, {}, to {} in {:.1} s; {} ring-buffer drops, {} recursion misses",
        if progress { "\n" } else { "" },
        recording.writer.records(),
        crate::view::format::bytes(recording.writer.bytes_written()),
        args.output.display(),
        started.elapsed().as_secs_f64(),
        losses.ring_buffer_drops,
        losses.recursion_misses
    );
    drop(cgroups);
    Ok(ExitCode::from(exit_status.map_or(0, exit_code)))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("12").is_err(), "below a page");
        assert!(parse_size("5X").is_err());
        assert!(parse_size("lots").is_err());
    }
}
