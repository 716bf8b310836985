//! Per-probe cost from the kernel's own BPF run-time statistics: runs and
//! nanoseconds per run of each program a tool loaded, over one workload
//! run. Statistics are enabled only for that run (they cost a clock read
//! per program run themselves).

use std::fmt::Write as _;

use cgtrace::probe::{BpfStatsEnabled, floor::FLOOR_PROGRAMS};

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

/// The floor (`cgtrace __floor`): an empty program of the same kind on
/// each tracepoint cgtrace's hot paths use.
pub fn floor_spec(cgtrace: &std::path::Path) -> TracerSpec {
    TracerSpec {
        label: "floor".to_owned(),
        program: cgtrace.to_owned(),
        args: vec!["__floor".to_owned()],
        ready: (crate::tracer::Stream::Stderr, "cgtrace: floor:".to_owned()),
    }
}

/// The kernel's name for a program: its first 15 characters.
fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// The floor program on the tracepoint `program` (a kernel name) runs on:
/// cgtrace's programs by name, bpftrace's by their tracepoint's name where
/// the 15 characters tell it apart.
fn floor_of<'a>(program: &str, floor: &'a [ProgramCost]) -> Option<&'a ProgramCost> {
    let by_measured = FLOOR_PROGRAMS
        .iter()
        .find(|f| kernel_name(f.measures) == program);
    let by_tracepoint = || {
        let mut matching = FLOOR_PROGRAMS
            .iter()
            .filter(|f| kernel_name(f.tracepoint) == program);
        match (matching.next(), matching.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    };
    let entry = by_measured.or_else(by_tracepoint)?;
    floor.iter().find(|c| c.name == entry.name)
}

/// The cost of one program as a multiple of its floor.
pub fn floor_multiple(cost: &ProgramCost, floor: &[ProgramCost]) -> Option<f64> {
    floor_of(&cost.name, floor).map(|f| cost.ns_per_run() / f.ns_per_run())
}

/// All of a tool's probe time per page added to the cache: its total over
/// the runs of `added` (the program on `mm_filemap_add_to_page_cache`,
/// which runs once per 4 KiB page on W0).
#[expect(clippy::cast_precision_loss, reason = "a display figure")]
pub fn ns_per_page(costs: &[ProgramCost], added: &str) -> Option<f64> {
    let pages = costs.iter().find(|c| c.name == added)?.runs;
    Some(costs.iter().map(|c| c.total_ns).sum::<u64>() as f64 / pages.max(1) as f64)
}

/// What the floor's programs would have cost per page added, run as often
/// as `costs`' programs ran on the same tracepoints (those without a floor
/// program count nothing).
#[expect(clippy::cast_precision_loss, reason = "a display figure")]
pub fn floor_ns_per_page(costs: &[ProgramCost], floor: &[ProgramCost], added: &str) -> Option<f64> {
    let pages = costs.iter().find(|c| c.name == added)?.runs;
    let total: f64 = costs
        .iter()
        .filter_map(|c| floor_of(&c.name, floor).map(|f| c.runs as f64 * f.ns_per_run()))
        .sum();
    Some(total / pages.max(1) as f64)
}

/// A program's nanoseconds per run, by kernel name.
pub fn ns_per_run(costs: &[ProgramCost], name: &str) -> Option<f64> {
    costs
        .iter()
        .find(|c| c.name == kernel_name(name))
        .map(ProgramCost::ns_per_run)
}

/// A markdown table of the costs, each beside its floor.
pub fn table_with_floor(costs: &[ProgramCost], floor: &[ProgramCost]) -> String {
    let mut out = String::from(
        "| program | runs | ns per run | floor (ns per run) | × floor |\n|---|---|---|---|---|\n",
    );
    for cost in costs {
        let (floor_ns, multiple) = floor_of(&cost.name, floor).map_or_else(
            || ("-".to_owned(), "-".to_owned()),
            |f| {
                (
                    format!("{:.0}", f.ns_per_run()),
                    format!("{:.1}", cost.ns_per_run() / f.ns_per_run()),
                )
            },
        );
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {floor_ns} | {multiple} |",
            cost.name,
            cost.runs,
            cost.ns_per_run()
        );
    }
    out
}

/// Total probe time in milliseconds.
#[expect(clippy::cast_precision_loss, reason = "a display figure")]
pub fn total_ms(costs: &[ProgramCost]) -> f64 {
    costs.iter().map(|c| c.total_ns).sum::<u64>() as f64 / 1e6
}
