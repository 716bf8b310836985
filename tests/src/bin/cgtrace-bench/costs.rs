//! Per-probe cost from the kernel's own BPF run-time statistics: runs and
//! nanoseconds per run of each program a tool loaded, over one workload
//! run. Statistics are enabled only for that run (they cost a clock read
//! per program run themselves).

use std::fmt::Write as _;

use cgtrace::probe::BpfStatsEnabled;

use crate::bpftrace::{loaded_program_ids, programs_since};
use crate::tracer::{Tracer, TracerSpec};

/// One program's share of a run.
pub struct ProgramCost {
    pub name: String,
    pub runs: u64,
    pub total_ns: u64,
    /// Its size after the verifier, in bytes.
    pub xlated_bytes: u32,
}

impl ProgramCost {
    #[expect(clippy::cast_precision_loss, reason = "a display figure")]
    pub fn ns_per_run(&self) -> f64 {
        self.total_ns as f64 / self.runs.max(1) as f64
    }
}

/// Runs `prepare`, starts `spec`, runs `workload` with statistics on, and
/// returns the cost of each of the tool's programs that ran, busiest first.
pub fn measure(
    spec: &TracerSpec,
    prepare: impl FnOnce(),
    workload: impl FnOnce(),
) -> Vec<ProgramCost> {
    prepare();
    let before = loaded_program_ids();
    let tracer = Tracer::start(spec);
    let start = programs_since(&before);
    let stats = BpfStatsEnabled::enable();
    workload();
    let end = programs_since(&before);
    drop(stats);
    drop(tracer.stop());
    let mut costs: Vec<ProgramCost> = end
        .into_iter()
        .filter_map(|(id, name, counters)| {
            let (runs0, ns0) = start
                .iter()
                .find(|(i, _, _)| *i == id)
                .map_or((0, 0), |(_, _, c)| (c.run_count, c.run_time_ns));
            let runs = counters.run_count - runs0;
            (runs > 0).then(|| ProgramCost {
                name,
                runs,
                total_ns: counters.run_time_ns - ns0,
                xlated_bytes: counters.xlated_bytes,
            })
        })
        .collect();
    costs.sort_by_key(|c| std::cmp::Reverse(c.runs));
    costs
}

/// Total probe time in milliseconds.
#[expect(clippy::cast_precision_loss, reason = "a display figure")]
pub fn total_ms(costs: &[ProgramCost]) -> f64 {
    costs.iter().map(|c| c.total_ns).sum::<u64>() as f64 / 1e6
}

/// A markdown table of the costs.
pub fn table(costs: &[ProgramCost]) -> String {
    let mut out = String::from("| program | runs | ns per run |\n|---|---|---|\n");
    for cost in costs {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} |",
            cost.name,
            cost.runs,
            cost.ns_per_run()
        );
    }
    out
}
