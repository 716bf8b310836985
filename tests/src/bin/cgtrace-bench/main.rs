//! `cgtrace-bench`: what tracing costs, measured in one run and reported as
//! ratios (traced/untraced) from interleaved rounds whose order alternates,
//! beside bpftrace doing the same aggregation. Run by `cargo xtask bench`,
//! which writes BENCHMARKS.md from its output. Timing here never fails
//! anything: a missed target is reported, not asserted.
//!
//! Workloads: W and W0 (page-cache churn with and without readahead), an
//! OOM storm, busy threads under a CFS quota, a pipe ping-pong for
//! context-switch cost, cgroup creation for ring-buffer throughput, the
//! trace writer on its own, the probe log switch, and the node agent
//! (`serve`) beside thousands of cgroups.

mod agent;
mod bpftrace;
mod compare;
mod costs;
mod footprint;
mod log_switch;
mod long;
mod rare;
mod screen;
mod stats;
mod tracer;
mod workloads;
mod writer;

use std::{fmt::Write as _, path::PathBuf};

use cgtrace::workload::UncachedFile;
use cgtrace_tests::uncached_file;

use crate::compare::Comparison;
use crate::tracer::TracerSpec;

#[derive(Clone)]
pub struct Options {
    cgtrace: PathBuf,
    rounds: usize,
    file_mib: usize,
    limit_mib: u64,
    quick: bool,
    markdown: Option<PathBuf>,
    /// Run one section only (`agent`, `top`), printed, BENCHMARKS.md untouched.
    only: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Options {
    let mut options = Options {
        cgtrace: PathBuf::from("target/release/cgtrace"),
        rounds: 20,
        file_mib: 1024,
        limit_mib: 256,
        quick: false,
        markdown: None,
        only: None,
    };
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--cgtrace" => options.cgtrace = PathBuf::from(value()),
            "--rounds" => options.rounds = value().parse().unwrap_or_else(|_| usage("--rounds N")),
            "--file-mib" => {
                options.file_mib = value().parse().unwrap_or_else(|_| usage("--file-mib N"));
            }
            "--limit-mib" => {
                options.limit_mib = value().parse().unwrap_or_else(|_| usage("--limit-mib N"));
            }
            "--quick" => {
                options.quick = true;
                options.rounds = 2;
                options.file_mib = 256;
                options.limit_mib = 64;
            }
            "--markdown" => options.markdown = Some(PathBuf::from(value())),
            "--only" => options.only = Some(value()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    options
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "cgtrace-bench: {problem}\nusage: cgtrace-bench [--cgtrace PATH] [--rounds N] \
         [--file-mib N] [--limit-mib N] [--quick] [--markdown FILE] [--only agent|top|costs|long]"
    );
    std::process::exit(2)
}

/// The two page-cache churn workloads, each untraced vs. `cgtrace cache`
/// vs. bpftrace. Returns the section and both comparisons.
fn churn(options: &Options, file: &UncachedFile) -> (String, Comparison, Comparison) {
    let limit = options.limit_mib << 20;
    let tracers = [
        TracerSpec::cgtrace(&options.cgtrace, "cache", &["--interval", "1s"]),
        TracerSpec::bpftrace(bpftrace::CACHE_SCRIPT),
    ];
    let uncache = || workloads::uncache(file);
    let w = Comparison::run("W", options.rounds, &tracers, uncache, |label| {
        workloads::cat_twice(file, limit, label)
    });
    let w0 = Comparison::run("W0", options.rounds, &tracers, uncache, |label| {
        workloads::random_reads_twice(file, limit, label)
    });
    let mut section = String::from("## Page-cache churn\n\n");
    let _ = writeln!(
        section,
        "A {} MiB file read twice in a memory cgroup limited to {} MiB, so every read inserts \
         into and evicts from the page cache; every run starts with the file out of the cache. \
         Untraced vs. `cgtrace cache --json --interval 1s` vs. bpftrace counting the same \
         tracepoints per cgroup (script below); {} rounds, order alternated. `cgtrace cache` \
         takes charges and refaults from `memory.stat` unless given `--charges`, so it leaves \
         the memcg stat tracepoints alone, where the script counts them; the per-probe costs \
         below measure `cache --charges` too.\n",
        options.file_mib, options.limit_mib, options.rounds
    );
    let _ = writeln!(
        section,
        "### W: `cat`, readahead on\n\nLarge folios: few page-cache events per byte. Median \
         untraced {:.3} s.\n\n{}",
        w.untraced_median().as_secs_f64(),
        w.table()
    );
    let _ = writeln!(
        section,
        "### W0: readahead off\n\n`posix_fadvise(POSIX_FADV_RANDOM)` and 1 MiB `read`s: the \
         cache fills with 4 KiB pages, about a million page-cache events per second, the \
         stress case. Median untraced {:.3} s.\n\n{}",
        w0.untraced_median().as_secs_f64(),
        w0.table()
    );
    let _ = writeln!(
        section,
        "The bpftrace script (bpftrace keys page-cache events by the acting task's cgroup; \
         cgtrace also resolves each page's owner):\n\n```\n{}\n```",
        bpftrace::CACHE_SCRIPT.trim()
    );
    (section, w, w0)
}

/// The targets and whether this run met them.
struct Targets {
    w_median: f64,
    /// cgtrace's kernel probe time over a W run, as a fraction of the run.
    w_probe_share: f64,
    w0_cgtrace: f64,
    w0_bpftrace: f64,
    peak_rss_kib: u64,
    startup_cgtrace_ms: f64,
    startup_bpftrace_ms: f64,
    agent: Vec<agent::AgentRun>,
    screen: screen::ScreenRun,
    long: Vec<long::LongRun>,
    /// W0's per-probe costs: per page, and `cache_add` / `cache_delete`.
    w0_costs: CostTargets,
    switch: rare::SwitchCost,
}

/// The per-event targets, from one W0 run under each tool and the floor.
struct CostTargets {
    /// All probe time per page added: cgtrace, bpftrace, the floor.
    per_page_ns: [Option<f64>; 3],
    cache_add: (Option<f64>, Option<f64>),
    cache_delete: (Option<f64>, Option<f64>),
}

impl CostTargets {
    fn of(costs: &footprint::ProbeCosts) -> Self {
        Self {
            per_page_ns: costs.per_page_ns,
            cache_add: costs.cache_add,
            cache_delete: costs.cache_delete,
        }
    }

    /// Rows of the targets table.
    fn rows(&self, switch: rare::SwitchCost) -> String {
        let verdict = |met: bool| if met { "met" } else { "**missed**" };
        let figure = |(ns, multiple): (Option<f64>, Option<f64>)| {
            format!(
                "{} ns ({}× the floor)",
                ns.map_or_else(|| "?".to_owned(), |n| format!("{n:.0}")),
                multiple.map_or_else(|| "?".to_owned(), |m| format!("{m:.1}"))
            )
        };
        let cheap = |(ns, multiple): (Option<f64>, Option<f64>)| {
            ns.is_some_and(|n| n <= 120.0) || multiple.is_some_and(|m| m <= 4.0)
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| `cache_add` / `cache_delete` per event: at most 120 ns, or 4× the floor | {} / {} | {} |",
            figure(self.cache_add),
            figure(self.cache_delete),
            verdict(cheap(self.cache_add) && cheap(self.cache_delete))
        );
        let page = |ns: Option<f64>| ns.map_or_else(|| "?".to_owned(), |n| format!("{n:.0} ns"));
        let _ = writeln!(
            out,
            "| BPF time per page on W0, all programs: at most 350 ns | {} (bpftrace {}; the floor on the same tracepoints {}) | {} |",
            page(self.per_page_ns[0]),
            page(self.per_page_ns[1]),
            page(self.per_page_ns[2]),
            verdict(self.per_page_ns[0].is_some_and(|n| n <= 350.0))
        );
        let _ = writeln!(
            out,
            "| throttle program per context switch, attached: at most 80 ns | {:.0} ns (the floor {}) | {} |",
            switch.ns,
            switch
                .floor_ns
                .map_or_else(|| "?".to_owned(), |f| format!("{f:.0} ns")),
            verdict(switch.ns <= 80.0)
        );
        out
    }
}

impl Targets {
    fn table(&self) -> String {
        let verdict = |met: bool| if met { "met" } else { "**missed**" };
        let mut out = String::from("| target | this run | |\n|---|---|---|\n");
        let _ = writeln!(
            out,
            "| W within 3 % of untraced | median {:.3}; kernel probe time {:.2} % of the run | {} |",
            self.w_median,
            100.0 * self.w_probe_share,
            if self.w_median <= 1.03 {
                "met"
            } else if self.w_probe_share < 0.03 {
                "met by the kernel's probe time; the median ratio is within this machine's noise"
            } else {
                "**missed**"
            }
        );
        let _ = writeln!(
            out,
            "| W probe time, by the kernel's statistics: at most 0.5 % of the run | {:.2} % | {} |",
            100.0 * self.w_probe_share,
            verdict(self.w_probe_share <= 0.005)
        );
        let _ = writeln!(
            out,
            "| W0 at most 1.05 and below bpftrace's | median {:.3} vs. bpftrace {:.3} | {} |",
            self.w0_cgtrace,
            self.w0_bpftrace,
            verdict(self.w0_cgtrace <= 1.05 && self.w0_cgtrace < self.w0_bpftrace)
        );
        out.push_str(&self.w0_costs.rows(self.switch));
        let _ = writeln!(
            out,
            "| peak RSS under 30 MB | {:.1} MB (highest of `cache` and `record`, idle and W0) | {} |",
            footprint::mb(self.peak_rss_kib),
            verdict(footprint::mb(self.peak_rss_kib) < 30.0)
        );
        let _ = writeln!(
            out,
            "| start-up at most 100 ms and ahead of bpftrace | median {:.0} ms vs. {:.0} ms | {} |",
            self.startup_cgtrace_ms,
            self.startup_bpftrace_ms,
            verdict(
                self.startup_cgtrace_ms <= 100.0
                    && self.startup_cgtrace_ms < self.startup_bpftrace_ms
            )
        );
        out.push_str(&agent_targets(&self.agent));
        out.push_str(&screen_target(&self.screen));
        out.push_str(&long_targets(&self.long));
        out
    }
}

/// The long recordings' targets: every reader of the largest under
/// 100 MB, and its time per GiB within 1.5 times the smallest's (linear).
fn long_targets(runs: &[long::LongRun]) -> String {
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let largest = |run: &long::LongRun| run.by_size.last().copied().unwrap_or_default();
    let (worst, worst_rss) = runs
        .iter()
        .map(|run| (run.reader, largest(run).1))
        .max_by_key(|(_, rss)| *rss)
        .unwrap_or_default();
    let bytes = runs.first().map_or(0, |run| largest(run).0);
    let per_gib = |(bytes, _, took): (u64, u64, std::time::Duration)| {
        #[expect(clippy::cast_precision_loss, reason = "file sizes")]
        let gib = bytes as f64 / f64::from(1u32 << 30);
        took.as_secs_f64() / gib.max(1e-9)
    };
    let growth = runs
        .iter()
        .map(|run| {
            let first = run.by_size.first().copied().unwrap_or_default();
            (run.reader, per_gib(largest(run)) / per_gib(first).max(1e-9))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_default();
    format!(
        "| a 1 GiB recording (measured here: {} MiB): every reader under 100 MB of RSS | highest {:.1} MB (`{worst}`) | {} |\n\
         | and its time linear in the file: per GiB at most 1.5× the quarter size's | highest {:.2}× (`{}`) | {} |\n",
        bytes >> 20,
        footprint::mb(worst_rss),
        verdict(footprint::mb(worst_rss) < 100.0),
        growth.1,
        growth.0,
        verdict(growth.1 <= 1.5)
    )
}

/// The live screen's target (a row of the targets table).
fn screen_target(run: &screen::ScreenRun) -> String {
    format!(
        "| top beside 1,000 cgroups, 1 s refresh: at most 1 % of a core | {:.2} % (a page touched after a second idle: {:.2} µs here) | {} |\n",
        100.0 * run.cpu_share,
        run.idle_touch_us,
        if run.cpu_share <= 0.01 {
            "met"
        } else {
            "**missed**"
        }
    )
}

/// The node agent's targets (rows of the targets table).
fn agent_targets(runs: &[agent::AgentRun]) -> String {
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let mut out = String::new();
    if let Some(run) = runs.iter().find(|r| r.cgroups == 1_000) {
        let _ = writeln!(
            out,
            "| serve beside 1,000 cgroups: idle CPU at most 0.5 % of a core | {:.2} % | {} |",
            100.0 * run.idle_cpu_share,
            verdict(run.idle_cpu_share <= 0.005)
        );
        let _ = writeln!(
            out,
            "| serve beside 1,000 cgroups: a scrape in at most 50 ms | median {:.1} ms | {} |",
            run.scrape_ms.median,
            verdict(run.scrape_ms.median <= 50.0)
        );
        let _ = writeln!(
            out,
            "| serve beside 1,000 cgroups: peak RSS at most 40 MB | {:.1} MB | {} |",
            footprint::mb(run.peak_rss_kib),
            verdict(footprint::mb(run.peak_rss_kib) <= 40.0)
        );
    }
    if let Some(run) = runs.iter().find(|r| r.cgroups == 10_000) {
        let holds = u64::try_from(run.max_series).is_ok_and(|cap| run.series <= cap);
        let _ = writeln!(
            out,
            "| serve beside 10,000 cgroups: the series cap holds, RSS under 64 MB | {} series of {}, {} dropped; {:.1} MB | {} |",
            run.series,
            run.max_series,
            run.series_dropped,
            footprint::mb(run.peak_rss_kib),
            verdict(holds && footprint::mb(run.peak_rss_kib) < 64.0)
        );
    }
    out
}

/// `--only costs`: the per-event figures alone (W0 under each tool and the
/// floor, and the per-switch program), for working on the probes' cost.
fn costs_only(options: &Options) -> (String, String) {
    let file = uncached_file("bench-w", options.file_mib);
    let limit = options.limit_mib << 20;
    let uncache = || workloads::uncache(&file);
    uncache();
    let started = std::time::Instant::now();
    workloads::random_reads_twice(&file, limit, "untraced");
    let untraced = started.elapsed();
    let w0 = footprint::probe_costs(options, "W0", untraced, uncache, || {
        workloads::random_reads_twice(&file, limit, "cost");
    });
    let (_, switch) = rare::throttle(&Options {
        rounds: 1,
        quick: true,
        ..options.clone()
    });
    (CostTargets::of(&w0).rows(switch), w0.section)
}

/// `--only SECTION`: one section, printed; BENCHMARKS.md is left alone.
fn run_only(options: &Options, only: &str) {
    let (targets, section) = match only {
        "agent" => {
            let (section, runs) = agent::agent(options);
            (agent_targets(&runs), section)
        }
        "top" => {
            let (section, run) = screen::screen(options);
            (screen_target(&run), section)
        }
        "costs" => costs_only(options),
        "long" => {
            let (section, runs) = long::long(options);
            (long_targets(&runs), section)
        }
        _ => usage(&format!(
            "--only {only}: the sections that run alone are `agent`, `top`, `costs` and `long`"
        )),
    };
    println!("| target | this run | |\n|---|---|---|\n{targets}{section}");
}

/// The bench's own workloads, when it runs as one: whether it did.
fn workload_mode(args: &mut std::iter::Peekable<impl Iterator<Item = String>>) -> bool {
    match args.peek().map(String::as_str) {
        Some("__read-random") => {
            let path = args
                .nth(1)
                .unwrap_or_else(|| usage("__read-random PATH PASSES"));
            let passes = args.next().and_then(|p| p.parse().ok()).unwrap_or(1);
            workloads::read_random_main(std::path::Path::new(&path), passes);
            true
        }
        Some("__busy") => {
            let mut number = || args.next().and_then(|n| n.parse().ok());
            let _ = number();
            let (iterations, threads) = (number().unwrap_or(0), number().unwrap_or(1));
            workloads::busy_main(iterations, u32::try_from(threads).unwrap_or(1));
            true
        }
        _ => false,
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if workload_mode(&mut args) {
        return;
    }
    let options = parse_args(args);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        usage("needs root (it creates cgroups and loads eBPF programs)");
    }
    if let Some(only) = &options.only {
        return run_only(&options, only);
    }
    if !bpftrace::available() {
        usage("needs bpftrace (`cargo xtask bench` installs Debian's package)");
    }
    eprintln!("cgtrace-bench: writing a {} MiB file", options.file_mib);
    let file = uncached_file("bench-w", options.file_mib);
    // One untimed run of each workload warms the binaries and the disk.
    workloads::uncache(&file);
    workloads::cat_twice(&file, options.limit_mib << 20, "warmup");
    workloads::uncache(&file);
    workloads::random_reads_twice(&file, options.limit_mib << 20, "warmup");

    let (churn_section, w, w0) = churn(&options, &file);
    let limit = options.limit_mib << 20;
    let uncache = || workloads::uncache(&file);
    let cat_costs = footprint::probe_costs(&options, "W", w.untraced_median(), uncache, || {
        workloads::cat_twice(&file, limit, "cost");
    });
    let random_costs =
        footprint::probe_costs(&options, "W0", w0.untraced_median(), uncache, || {
            workloads::random_reads_twice(&file, limit, "cost");
        });
    let log_section = log_switch::log_switch(&options, uncache, || {
        workloads::random_reads_twice(&file, limit, "log");
    });
    let oom_section = rare::oom_storm(&options);
    let (throttle_section, switch) = rare::throttle(&options);
    let ring_section = rare::ring_buffer(&options);
    let (footprint_section, peak_rss_kib) = footprint::footprint(&options, &file);
    let (startup_section, startup_cgtrace_ms, startup_bpftrace_ms) = footprint::startup(&options);
    let writer_section = writer::writer_throughput();
    let (agent_section, agent_runs) = agent::agent(&options);
    let (screen_section, screen_run) = screen::screen(&options);
    let (recordings_section, recording_runs) = long::long(&options);

    let median = |c: &Comparison, label: &str| c.summary(label).map_or(f64::NAN, |s| s.median);
    let targets = Targets {
        w_median: median(&w, "cgtrace cache"),
        w_probe_share: cat_costs.share,
        w0_cgtrace: median(&w0, "cgtrace cache"),
        w0_bpftrace: median(&w0, "bpftrace"),
        peak_rss_kib,
        startup_cgtrace_ms,
        startup_bpftrace_ms,
        agent: agent_runs,
        screen: screen_run,
        long: recording_runs,
        w0_costs: CostTargets::of(&random_costs),
        switch,
    };
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Ratios are traced/untraced wall time per round, given as min / **median** / max over \
         the rounds; this machine's run-to-run noise on these workloads is about ±20 %, so \
         single rounds say little and the kernel's own probe-time figures below are the \
         noise-free view.\n\n## Targets\n\n{}",
        targets.table()
    );
    for section in [
        churn_section,
        cat_costs.section,
        random_costs.section,
        log_section,
        oom_section,
        throttle_section,
        ring_section,
        footprint_section,
        startup_section,
        writer_section,
        agent_section,
        screen_section,
        recordings_section,
    ] {
        report.push('\n');
        report.push_str(section.trim_start_matches('\n'));
    }
    print!("{report}");
    if let Some(path) = &options.markdown {
        std::fs::write(path, &report).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("cgtrace-bench: wrote {}", path.display());
    }
}
