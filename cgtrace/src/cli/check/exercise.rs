//! `cgtrace check --probe-log`: the loaded probes meet real kernel objects
//! on a small workload of check's own, and check reports how often each
//! program ran and every kernel field a program failed to read, counted by
//! chain and in the programs' own words.
//!
//! The workload: a memory cgroup limited to 32 MiB in which a file of
//! 96 MiB is written, read back and removed (a new cgroup, page cache
//! added, reclaimed at the limit and removed, charges), and a cpu cgroup
//! limited to a tenth of a core in which a thread spins for half a second
//! (throttling). OOM kills are not provoked: the OOM program is only
//! checked by the verifier.

use std::{process::Command, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cgroup::{Hierarchies, scratch::ScratchCgroup},
    probe::{BpfStatsEnabled, Probe},
};

/// What the workload exercised and what failed.
#[derive(Debug, Serialize)]
pub struct Exercised {
    /// Each program that ran, with its number of runs.
    pub programs: Vec<ProgramRuns>,
    /// Loaded programs the workload did not reach.
    pub not_run: Vec<String>,
    /// Failed reads, by the chain of kernel fields that failed.
    pub read_failures: Vec<ChainFailures>,
    /// What the programs logged.
    pub log: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ProgramRuns {
    pub program: String,
    pub runs: u64,
}

#[derive(Debug, Serialize)]
pub struct ChainFailures {
    pub chain: &'static str,
    pub failures: u64,
}

/// Mebibytes written and read under a 32 MiB limit: three times the limit,
/// so reclaim runs. Not less: the writer's own binary counts against the
/// limit, and where it is not on a disk (a guest's initramfs) its pages are
/// shmem, which reclaim cannot drop.
const FILE_MIB: &str = "96";
const MEMORY_LIMIT: u64 = 32 << 20;

/// Runs the workload under `probe` (loaded with its log on).
pub fn exercise(probe: &mut Probe) -> anyhow::Result<Exercised> {
    let hierarchies = Hierarchies::discover().context("cannot read the cgroup mounts")?;
    let stats = BpfStatsEnabled::enable();
    let before = probe.program_counters();
    run_workload(&hierarchies, || probe.flush_log())?;
    // The last throttle span ends at a later switch; its program runs then.
    std::thread::sleep(Duration::from_millis(300));
    let after = probe.program_counters();
    drop(stats);

    let mut programs = Vec::new();
    let mut not_run = Vec::new();
    for (name, counters) in after {
        let earlier = before
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| c.run_count);
        let runs = counters.run_count.saturating_sub(earlier);
        if runs > 0 {
            programs.push(ProgramRuns {
                program: name,
                runs,
            });
        } else {
            not_run.push(name);
        }
    }
    programs.sort_by(|a, b| a.program.cmp(&b.program));
    not_run.sort();
    Ok(Exercised {
        programs,
        not_run,
        read_failures: probe
            .read_failures_by_chain()
            .into_iter()
            .map(|(chain, failures)| ChainFailures {
                chain: chain.name(),
                failures,
            })
            .collect(),
        log: probe.take_log_lines(),
    })
}

/// The page-cache writer and the throttled spinner, side by side, in
/// scratch cgroups removed afterwards; `meanwhile` runs every few
/// milliseconds until both have ended.
fn run_workload(hierarchies: &Hierarchies, mut meanwhile: impl FnMut()) -> anyhow::Result<()> {
    let pid = std::process::id();
    let exe = std::env::current_exe().context("cannot find the cgtrace binary")?;
    let memory = ScratchCgroup::create(hierarchies, &format!("cgtrace-check-{pid}"))
        .context("cannot create the memory cgroup")?;
    memory.set_memory_limit(MEMORY_LIMIT)?;
    let cpu = ScratchCgroup::create_for(hierarchies, "cpu", &format!("cgtrace-check-{pid}-cpu"))
        .context("cannot create the cpu cgroup")?;
    cpu.set_cpu_quota(10_000, 100_000)?;
    // On a disk, not tmpfs: shmem pages do not pass the filemap tracepoints.
    let file = std::path::Path::new("/var/tmp").join(format!("cgtrace-check-{pid}.tmp"));
    let mut writer = memory.spawn_into(
        Command::new(&exe)
            .arg("__pagecache")
            .arg(&file)
            .arg(FILE_MIB),
    )?;
    let mut spinner = cpu.spawn_into(Command::new(&exe).args(["__spin", "0.5", "1"]))?;
    let mut wait = |child: &mut std::process::Child| loop {
        meanwhile();
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e),
        }
    };
    let written = wait(&mut writer);
    let spun = wait(&mut spinner);
    let _ = std::fs::remove_file(&file);
    anyhow::ensure!(
        written?.success(),
        "the page-cache workload failed (writing {})",
        file.display()
    );
    anyhow::ensure!(spun?.success(), "the spinning workload failed");
    Ok(())
}
