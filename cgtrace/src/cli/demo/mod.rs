//! `cgtrace demo`: the built-in scenarios. Each runs a real workload in
//! scratch cgroups, traced, shows what cgtrace saw next to the kernel's own
//! counters, and removes everything it made. A `cgtrace record` runs beside
//! them, and the demo ends with the report of that recording (text, and an
//! HTML page with plots).

mod cache;
mod oom;
mod recording;
mod session;
mod throttle;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::Outcome;
use crate::{
    cgroup::Hierarchies,
    probe::{BpfStatsEnabled, FeatureSet, Probe, ProbeOptions},
};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Where to record the scenarios; the HTML report goes beside it
    /// (same name, `.html`).
    #[arg(long, value_name = "FILE", default_value = "cgtrace-demo.cgt")]
    pub record: PathBuf,
    /// Do not record the scenarios.
    #[arg(long, conflicts_with = "record")]
    pub no_record: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// A process allocating 200 MiB in a cgroup limited to 100 MiB.
    Oom,
    /// A 512 MiB file read twice under a 128 MiB limit, against a limit that fits.
    CacheThrash,
    /// Two children of a limited parent: one's reads evict the other's cache.
    NoisyNeighbour,
    /// Four busy threads in a group limited to one core.
    Throttle,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<Outcome> {
    let scenarios = if args.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenarios.clone()
    };
    // Caught from now: a Ctrl-C ends the scenario's session cleanly.
    let signals = crate::session::Signals::install()?;
    let probe = Probe::load(&ProbeOptions {
        features: FeatureSet::ALL,
        ..ProbeOptions::default()
    })?;
    for feature in probe.features() {
        crate::say!("probe {feature}");
    }
    let hierarchies = Hierarchies::discover().context("cannot read the cgroup mounts")?;
    let mut demo = session::DemoProbe::new(signals, probe, hierarchies);
    let recording = if args.no_record {
        None
    } else {
        crate::say!("recording to {}", args.record.display());
        Some(recording::DemoRecording::start(&args.record)?)
    };
    // The kernel's per-program run-time accounting: what each probe costs.
    let stats_enabled = BpfStatsEnabled::enable();
    let mut all_agree = true;
    for scenario in scenarios {
        let agrees = match scenario {
            Scenario::Oom => oom::run(&mut demo)?,
            Scenario::CacheThrash => cache::thrash(&mut demo)?,
            Scenario::NoisyNeighbour => cache::noisy_neighbour(&mut demo)?,
            Scenario::Throttle => throttle::run(&mut demo)?,
        };
        all_agree &= agrees;
    }
    let probe = demo.probe()?;
    let stats = probe.stats();
    crate::say!(
        "\nprobe totals: {} records, {} ring-buffer drops, {} recursion misses, {} read failures, {} map-full",
        stats.records,
        stats.ring_buffer_drops,
        stats.recursion_misses,
        stats.read_failures,
        stats.map_full
    );
    for (chain, failures) in probe.read_failures_by_chain() {
        crate::say!(
            "probe read failures: {failures} of {} (cgtrace check --probe-log says why)",
            chain.name()
        );
    }
    for (name, counters) in probe.program_counters() {
        if counters.run_count > 0 {
            crate::say!(
                "probe cost: {name:<20} {:>8} runs, {:>7.2} µs per run (kernel BPF run-time statistics)",
                counters.run_count,
                micros_per_run(counters.run_time_ns, counters.run_count)
            );
        }
    }
    drop(stats_enabled);
    if let Some(recording) = recording {
        let file = recording.finish()?;
        let html = file.with_extension("html");
        crate::say!("\n== the recording: cgtrace report {} ==", file.display());
        super::report::run(&super::report::ReportArgs {
            file,
            json: false,
            html: Some(html),
            select: crate::identity::selection::SelectArgs::default(),
        })?;
    }
    Ok(if all_agree {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn micros_per_run(total_ns: u64, runs: u64) -> f64 {
    total_ns as f64 / runs as f64 / 1000.0
}
