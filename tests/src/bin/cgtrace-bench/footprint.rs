//! What the collector itself costs: CPU time and peak RSS idle and under
//! W0, start-up time until every probe is attached, and the per-probe cost
//! of each tool's programs on W0 — each beside bpftrace doing the same
//! aggregation.

use std::{fmt::Write as _, time::Duration};

use cgtrace::workload::UncachedFile;

use crate::Options;
use crate::bpftrace::{CACHE_SCRIPT, CACHE_TRACEPOINTS};
use crate::costs;
use crate::stats::Summary;
use crate::tracer::{Finished, Tracer, TracerSpec};
use crate::workloads;

/// The tools compared: `cgtrace cache`, `cgtrace record` (every feature,
/// writing a trace) and bpftrace with the equivalent script.
fn tools(options: &Options, trace: &std::path::Path) -> Vec<TracerSpec> {
    // `record` writes a trace rather than JSON lines.
    let record = TracerSpec {
        args: vec![
            "record".to_owned(),
            "--output".to_owned(),
            trace.display().to_string(),
        ],
        ..TracerSpec::cgtrace(&options.cgtrace, "record", &[])
    };
    vec![
        TracerSpec::cgtrace(&options.cgtrace, "cache", &["--interval", "1s"]),
        record,
        TracerSpec::bpftrace(CACHE_SCRIPT),
    ]
}

/// Collector CPU time and peak RSS, idle and during one W0 run.
pub fn footprint(options: &Options, file: &UncachedFile) -> (String, u64) {
    let idle = Duration::from_secs(if options.quick { 2 } else { 10 });
    let trace = std::env::temp_dir().join(format!("cgtrace-bench-{}.cgt", std::process::id()));
    let mut section = String::from("\n## Collector footprint\n\n");
    let _ = writeln!(
        section,
        "Each tool started alone, then stopped with SIGINT. CPU time (user + system) is the \
         kernel's `wait4` figure for the whole process life, start-up included; peak RSS is the \
         process's `VmHWM` just before it is stopped (MB = 10^6 bytes). Idle: {} s with nothing \
         else running. Under W0: one W0 run.\n",
        idle.as_secs()
    );
    section.push_str(
        "| tool | idle: CPU | idle: peak RSS | W0: CPU | W0: peak RSS | W0: drops |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut worst_cgtrace_rss = 0;
    for spec in tools(options, &trace) {
        let quiet = run_alone(&spec, || std::thread::sleep(idle));
        workloads::uncache(file);
        let loaded = run_alone(&spec, || {
            workloads::random_reads_twice(file, options.limit_mib * (1 << 20), "footprint");
        });
        if spec.label.starts_with("cgtrace") {
            worst_cgtrace_rss = worst_cgtrace_rss
                .max(quiet.max_rss_kib)
                .max(loaded.max_rss_kib);
        }
        let drops = if spec.label.starts_with("cgtrace") {
            loaded.probe_counter("ring_buffer_drops").to_string()
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            section,
            "| {} | {:.2} s | {:.1} MB | {:.2} s | {:.1} MB | {drops} |",
            spec.label,
            quiet.cpu.as_secs_f64(),
            mb(quiet.max_rss_kib),
            loaded.cpu.as_secs_f64(),
            mb(loaded.max_rss_kib),
        );
    }
    let _ = std::fs::remove_file(&trace);
    (section, worst_cgtrace_rss)
}

fn run_alone(spec: &TracerSpec, during: impl FnOnce()) -> Finished {
    let tracer = Tracer::start(spec);
    during();
    tracer.stop()
}

#[expect(clippy::cast_precision_loss, reason = "a display figure")]
pub fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// Start-up: from launch until every probe is attached, `cgtrace cache
/// --charges` (the same tracepoints as the script, and two more) against
/// bpftrace with the equivalent script. Returns the section and both
/// medians in milliseconds.
pub fn startup(options: &Options) -> (String, f64, f64) {
    let runs = options.rounds.max(3);
    let specs = [
        TracerSpec::cgtrace(
            &options.cgtrace,
            "cache",
            &["--interval", "1s", "--charges"],
        ),
        TracerSpec::bpftrace(CACHE_SCRIPT),
    ];
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..runs {
        for arm in crate::stats::round_order(2, round) {
            let tracer = Tracer::start(&specs[arm]);
            times[arm].push(tracer.startup.as_secs_f64() * 1e3);
            drop(tracer.stop());
        }
    }
    let cgtrace = Summary::of(&times[0]).expect("runs");
    let bpftrace = Summary::of(&times[1]).expect("runs");
    let mut section = String::from("\n## Start-up\n\n");
    let _ = writeln!(
        section,
        "From launch until every probe is attached: for `cgtrace cache --charges`, its first \
         `cgtrace: FEATURE` line (printed once loading and attaching have returned; the same \
         {CACHE_TRACEPOINTS} tracepoints as the script, and `cgroup_rmdir`); for bpftrace, the line its `BEGIN` probe prints (bpftrace fires `BEGIN` \
         after attaching the rest; the same {CACHE_TRACEPOINTS} tracepoints plus an interval \
         timer). {runs} starts each, order alternated.\n"
    );
    let _ = writeln!(
        section,
        "| tool | start-up (ms) min / **median** / max |\n|---|---|\n| cgtrace cache --charges | {cgtrace:.0} |\n| bpftrace | {bpftrace:.0} |"
    );
    (section, cgtrace.median, bpftrace.median)
}

/// What one workload's per-probe costs came to.
pub struct ProbeCosts {
    pub section: String,
    /// cgtrace's probe time as a fraction of the median untraced run.
    pub share: f64,
    /// All probe time per page added, for cgtrace, bpftrace and the floor.
    pub per_page_ns: [Option<f64>; 3],
    /// `cache_add` and `cache_delete`: ns per run and × their floor.
    pub cache_add: (Option<f64>, Option<f64>),
    pub cache_delete: (Option<f64>, Option<f64>),
}

/// Per-probe cost of both tools and of the floor (empty programs on the
/// same tracepoints) over one run each of workload `name` (`run`), against
/// the median untraced run `untraced`.
pub fn probe_costs(
    options: &Options,
    name: &str,
    untraced: Duration,
    prepare: impl Fn() + Copy,
    run: impl Fn() + Copy,
) -> ProbeCosts {
    let cache = TracerSpec::cgtrace(&options.cgtrace, "cache", &["--interval", "1s"]);
    let ours = costs::measure(&cache, prepare, run);
    let with_charges = TracerSpec::cgtrace(
        &options.cgtrace,
        "cache",
        &["--interval", "1s", "--charges"],
    );
    let charged = costs::measure(&with_charges, prepare, run);
    let theirs = costs::measure(&TracerSpec::bpftrace(CACHE_SCRIPT), prepare, run);
    let floor = costs::measure(&costs::floor_spec(&options.cgtrace), prepare, run);
    let (ours_ms, theirs_ms, floor_ms) = (
        costs::total_ms(&ours),
        costs::total_ms(&theirs),
        costs::total_ms(&floor),
    );
    let untraced_ms = untraced.as_secs_f64() * 1e3;
    let charged_per_page = costs::ns_per_page(&charged, "cache_add");
    let per_page_ns = [
        costs::ns_per_page(&ours, "cache_add"),
        costs::ns_per_page(&theirs, "mm_filemap_add_"),
        costs::floor_ns_per_page(&ours, &floor, "cache_add"),
    ];
    let mut section = format!("\n## Per-probe cost on {name}\n\n");
    let _ = writeln!(
        section,
        "The kernel's BPF run-time statistics (`BPF_ENABLE_STATS`, on only for the measured run) \
         over one {name} run under each tool: every program of the tool that ran, busiest first. \
         The kernel keeps 15 characters of a program's name; the run counts match bpftrace's \
         programs to cgtrace's. This is the kernel-side cost, free of the run-to-run noise in \
         the ratios. The floor is an empty program of cgtrace's kind (tp_btf) on each of the \
         same tracepoints (`cgtrace __floor`), over one more run: what any program costs there \
         before it does anything, the statistics' own clock reads included.\n"
    );
    let page = |ns: Option<f64>| ns.map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0} ns"));
    let _ = writeln!(
        section,
        "**Probe time per {name} run: cgtrace cache {ours_ms:.1} ms ({:.1} % of the median \
         untraced run, {untraced_ms:.0} ms), bpftrace {theirs_ms:.1} ms ({:.1} %), the floor \
         {floor_ms:.1} ms ({:.1} %). Per page added: cgtrace {} ({} with `--charges`), bpftrace \
         {}; the floor on the tracepoints `cgtrace cache` uses, run as often, {}.**\n",
        100.0 * ours_ms / untraced_ms,
        100.0 * theirs_ms / untraced_ms,
        100.0 * floor_ms / untraced_ms,
        page(per_page_ns[0]),
        page(charged_per_page),
        page(per_page_ns[1]),
        page(per_page_ns[2]),
    );
    let _ = writeln!(
        section,
        "`cgtrace cache`:\n\n{}",
        costs::table_with_floor(&ours, &floor)
    );
    let _ = writeln!(
        section,
        "`cgtrace cache --charges` (the memcg stat tracepoints attached too):\n\n{}",
        costs::table_with_floor(&charged, &floor)
    );
    let _ = writeln!(
        section,
        "bpftrace (its programs are named after their tracepoints; the floor is given where the \
         15 characters tell the tracepoint):\n\n{}",
        costs::table_with_floor(&theirs, &floor)
    );
    let cost_of = |program: &str| {
        let ns = costs::ns_per_run(&ours, program);
        let multiple = ours
            .iter()
            .find(|c| c.name == program)
            .and_then(|c| costs::floor_multiple(c, &floor));
        (ns, multiple)
    };
    ProbeCosts {
        section,
        share: ours_ms / untraced_ms,
        per_page_ns,
        cache_add: cost_of("cache_add"),
        cache_delete: cost_of("cache_delete"),
    }
}
