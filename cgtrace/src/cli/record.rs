//! `cgtrace record -o FILE [-- CMD ARGS...]`: the live session's events to a
//! trace file: OOM kills and throttle spans as they happen; each interval
//! the probe's counters, the files of every cgroup they name (memory, CFS
//! bandwidth, pressure) and the loss counters; the name of every cgroup and
//! workload. With a command, it runs in fresh cgroups (optionally limited,
//! to reproduce a container's limits) and recording stops when it exits,
//! with its exit code.
//!
//! Cost: all probes are attached, as for `oom`, `cache` and `throttle`
//! together; the file gets one chunk per interval (see BENCHMARKS.md).

use std::{
    os::unix::process::ExitStatusExt as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use cgtrace_common::cgroup::CgroupRef;
use clap::Args;

use crate::{
    cgroup::{Hierarchies, scratch::ScratchCgroup},
    identity::selection::{SelectArgs, Selection},
    probe::{FeatureSet, ProbeOptions},
    session::{self, FileSamples, LiveOptions},
    trace::{
        file::TraceWriter,
        sink::{TraceSink, machine_header},
    },
};

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The trace file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this long (default: when the command exits, or Ctrl-C).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub duration: Option<Duration>,
    /// How often page-cache flows are sampled and the file is flushed.
    #[arg(long, default_value = "1s", value_parser = crate::units::parse_duration)]
    pub interval: Duration,
    /// Memory limit for the command's cgroup: bytes, or with K, M, G.
    #[arg(long, value_parser = crate::units::parse_size, value_name = "SIZE")]
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

/// The CFS period `--cpu-limit` uses (the kernel's and Kubernetes' default).
const CPU_PERIOD_US: u64 = 100_000;
const CPU_PERIOD_SECONDS: f64 = 0.1;

/// The command's cgroups are named this and the recorder's pid.
const RECORD_CGROUP_PREFIX: &str = "cgtrace-record-";

/// The command's cgroups: one per hierarchy holding memory and cpu (one on v2).
fn command_cgroups(
    args: &RecordArgs,
    hierarchies: &Hierarchies,
) -> anyhow::Result<Vec<ScratchCgroup>> {
    // Those of recorders killed before they could remove their own.
    for stale in crate::cgroup::scratch::remove_stale(hierarchies, RECORD_CGROUP_PREFIX) {
        crate::note!(
            "cgtrace: removed {}, left by a recorder that was killed",
            stale.display()
        );
    }
    let name = format!("{RECORD_CGROUP_PREFIX}{}", std::process::id());
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

/// Starts the command, if any, in its fresh cgroups, on the session's
/// runtime (which reaps it).
fn start_command(
    args: &RecordArgs,
    cgroups: &[ScratchCgroup],
) -> anyhow::Result<Option<tokio::process::Child>> {
    let Some((program, rest)) = args.command.split_first() else {
        return Ok(None);
    };
    let mut command = tokio::process::Command::new(program);
    command.args(rest);
    // If the recorder is killed (SIGKILL cannot be caught), the command must
    // not run on unrecorded in its limited cgroups.
    // SAFETY: prctl(2) is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            Ok(rustix::process::set_parent_process_death_signal(Some(
                rustix::process::Signal::KILL,
            ))?)
        });
    }
    let refs: Vec<&ScratchCgroup> = cgroups.iter().collect();
    let child = session::spawn_in(&refs, command)?;
    Ok(Some(child))
}

pub fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    // Checked before anything is loaded or created, so bad options cost nothing.
    let selection = Selection::new(&args.select)?;
    let mut cgroups = Vec::new();
    let (mut source, mut cx) = super::live::start(
        selection,
        &ProbeOptions {
            features: FeatureSet::ALL,
            ..ProbeOptions::default()
        },
        |hierarchies, selection| {
            // The command's cgroups are kept whatever the filter says, and
            // are in the kernel's allowlist before the command starts.
            if !args.command.is_empty() {
                cgroups = command_cgroups(args, hierarchies)?;
            }
            for cgroup in &cgroups {
                selection.also_keep(cgroup.path());
            }
            Ok(LiveOptions {
                interval: args.interval,
                files: FileSamples {
                    memory: true,
                    cpu: true,
                    pressure: true,
                    cpu_usage: true,
                },
                watched: memory_refs(&cgroups, hierarchies),
                duration: args.duration,
                ..LiveOptions::default()
            })
        },
    )?;
    let file = std::fs::File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let writer = TraceWriter::new(file, &machine_header())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let mut sink = TraceSink::new(writer, args.output.clone());
    source.sample_watched(&mut cx);
    if let Some(child) = start_command(args, &cgroups)? {
        source.set_command(child);
    }
    let started = Instant::now();
    let result = session::run(&mut source, &mut cx, &mut [&mut sink]);
    // Stopped by Ctrl-C or --duration: the command goes with its cgroups.
    source.stop_command();
    let end = result?;
    let losses = end.health.unwrap_or_default();
    crate::note!(
        "cgtrace: wrote {} records, {}, to {} in {:.1} s; {} ring-buffer drops, {} recursion misses, {} read failures, {} map-full",
        sink.records(),
        crate::view::format::bytes(sink.bytes_written()),
        args.output.display(),
        started.elapsed().as_secs_f64(),
        losses.ring_buffer_drops,
        losses.recursion_misses,
        losses.read_failures,
        losses.map_full
    );
    let status = source.exit_status();
    drop(source);
    drop(cgroups);
    Ok(ExitCode::from(status.map_or(0, exit_code)))
}
