//! `cgtrace-bench`: what tracing costs, as traced/untraced ratios measured
//! in one run with interleaved pairs (order alternated, so drift and cache
//! state do not favour one side). Run by `cargo xtask bench`, which writes
//! BENCHMARKS.md from its output.
//!
//! Workload W: a file read twice with `cat` in a memory cgroup smaller than
//! the file, so every read goes through page-cache insertion and eviction.
//! Traced, `cgtrace cache` runs for the whole workload.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cgtrace::probe::{BpfStatsEnabled, FeatureSet, Probe, ProbeOptions};
use cgtrace::workload::UncachedFile;
use cgtrace_tests::{ChildGuard, scratch, uncached_file};

const MIB: u64 = 1 << 20;

struct Options {
    cgtrace: PathBuf,
    pairs: usize,
    file_mib: usize,
    limit_mib: u64,
    markdown: Option<PathBuf>,
}

fn parse_args() -> Options {
    let mut options = Options {
        cgtrace: PathBuf::from("target/release/cgtrace"),
        pairs: 20,
        file_mib: 1024,
        limit_mib: 256,
        markdown: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--cgtrace" => options.cgtrace = PathBuf::from(value()),
            "--pairs" => options.pairs = value().parse().unwrap_or_else(|_| usage("--pairs N")),
            "--file-mib" => {
                options.file_mib = value().parse().unwrap_or_else(|_| usage("--file-mib N"));
            }
            "--limit-mib" => {
                options.limit_mib = value().parse().unwrap_or_else(|_| usage("--limit-mib N"));
            }
            "--markdown" => options.markdown = Some(PathBuf::from(value())),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    options
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "cgtrace-bench: {problem}\nusage: cgtrace-bench [--cgtrace PATH] [--pairs N] [--file-mib N] [--limit-mib N] [--markdown FILE]"
    );
    std::process::exit(2)
}

/// One run of W in a fresh cgroup; returns its wall time.
fn run_workload(file: &UncachedFile, limit: u64, label: &str) -> Duration {
    // Every run starts from disk.
    file.drop_cache().expect("drop the file's cache");
    let group = scratch(&format!("bench-{label}"), Some(limit));
    let started = Instant::now();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("cat \"$0\" > /dev/null && cat \"$0\" > /dev/null")
        .arg(&file.path)
        .stdout(Stdio::null());
    let mut child = ChildGuard(group.spawn_into(&mut command).expect("start workload"));
    let status = child.wait();
    assert!(status.success(), "workload failed: {status}");
    started.elapsed()
}

/// Workload S: two threads pinned to one CPU pass a byte back and forth
/// over pipes, so every message is a context switch. Returns the time per
/// round trip (two switches).
fn ping_pong(round_trips: u32) -> Duration {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    fn pipe() -> (std::fs::File, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the array with two fresh descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: each descriptor is owned exactly once.
        unsafe {
            (
                std::fs::File::from(OwnedFd::from_raw_fd(fds[0])),
                std::fs::File::from(OwnedFd::from_raw_fd(fds[1])),
            )
        }
    }
    fn pin_to_cpu0() {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
        }
    }
    use std::io::{Read as _, Write as _};
    let (mut to_peer_read, mut to_peer_write) = pipe();
    let (mut back_read, mut back_write) = pipe();
    let peer = std::thread::spawn(move || {
        pin_to_cpu0();
        let mut byte = [0u8; 1];
        while to_peer_read.read_exact(&mut byte).is_ok() {
            if back_write.write_all(&byte).is_err() {
                break;
            }
        }
    });
    pin_to_cpu0();
    let mut byte = [1u8; 1];
    let started = Instant::now();
    for _ in 0..round_trips {
        to_peer_write.write_all(&byte).expect("ping");
        back_read.read_exact(&mut byte).expect("pong");
    }
    let took = started.elapsed();
    drop(to_peer_write);
    let _ = peer.join();
    took / round_trips
}

/// `cgtrace cache` in the background until dropped: started, attached,
/// then stopped with SIGINT and its final stats read.
struct Tracer {
    child: ChildGuard,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Tracer {
    fn start(cgtrace: &Path) -> Self {
        Self::start_view(cgtrace, "cache", "cgtrace: memcg stat tracepoints:")
    }

    /// Starts `cgtrace VIEW --json` and waits for the stderr line that
    /// follows its last attach.
    fn start_view(cgtrace: &Path, view: &str, attached: &str) -> Self {
        let mut child = Command::new(cgtrace)
            .args([view, "--json", "--interval", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cgtrace cache");
        let stderr = child.stderr.take().expect("stderr");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = BufReader::new(stderr).lines();
        // The memcg stat line is the last one printed once everything is attached.
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with(attached) => break,
                Some(Ok(_)) => {}
                _ => panic!("cgtrace cache did not start"),
            }
        }
        // Keep reading what it says on stderr until it exits.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child: ChildGuard(child),
            stdout,
        }
    }

    /// Stops the tracer; returns (ring-buffer drops, recursion misses, read failures).
    fn stop(mut self) -> (u64, u64, u64) {
        let pid = libc::pid_t::try_from(self.child.pid()).expect("pid");
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let mut last = serde_json::Value::Null;
        let mut line = String::new();
        while self.stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                && value["type"] == "stats"
            {
                last = value;
            }
            line.clear();
        }
        let status = self.child.wait();
        assert!(status.success(), "cgtrace cache exited with {status}");
        let probe = &last["probe"];
        let get = |field: &str| probe[field].as_u64().unwrap_or(u64::MAX);
        (
            get("ring_buffer_drops"),
            get("recursion_misses"),
            get("read_failures"),
        )
    }
}

struct Summary {
    min: f64,
    median: f64,
    max: f64,
}

fn summarize(mut values: Vec<f64>) -> Summary {
    values.sort_by(f64::total_cmp);
    let median = if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        f64::midpoint(values[values.len() / 2 - 1], values[values.len() / 2])
    };
    Summary {
        min: values[0],
        median,
        max: values[values.len() - 1],
    }
}

/// Per-event cost of each program from the kernel's BPF statistics, over
/// one traced run of W (statistics on only for that run).
fn per_event_cost(file: &UncachedFile, limit: u64) -> Vec<(String, u64, f64)> {
    let probe = Probe::load(&ProbeOptions {
        features: FeatureSet::CACHE_AND_RECLAIM,
        ..ProbeOptions::default()
    })
    .expect("load probes");
    let stats = BpfStatsEnabled::enable();
    let before = probe.program_counters();
    run_workload(file, limit, "cost");
    let after = probe.program_counters();
    drop(stats);
    after
        .into_iter()
        .filter_map(|(name, end)| {
            let start = before
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            let runs = end.run_count - start.run_count;
            #[expect(clippy::cast_precision_loss, reason = "a display figure")]
            let ns = (end.run_time_ns - start.run_time_ns) as f64 / runs.max(1) as f64;
            (runs > 0).then_some((name, runs, ns))
        })
        .collect()
}

/// Workload S, untraced vs. `cgtrace throttle`, in interleaved pairs;
/// `background` runs a throttled group meanwhile. Returns the report section.
fn switch_cost(options: &Options, background: bool) -> String {
    const ROUND_TRIPS: u32 = 100_000;
    let _throttled = background.then(|| {
        let hierarchies = cgtrace::cgroup::Hierarchies::discover().expect("cgroup mounts");
        let name = format!("cgtrace-bench-throttled-{}", std::process::id());
        let group = cgtrace::cgroup::scratch::ScratchCgroup::create_for(&hierarchies, "cpu", &name)
            .expect("cpu cgroup");
        group.set_cpu_quota(20_000, 100_000).expect("quota");
        let mut command = Command::new(&options.cgtrace);
        command.args(["__spin", "3600", "1"]);
        let child = ChildGuard(group.spawn_into(&mut command).expect("spin"));
        (child, group)
    });
    let mut ratios = Vec::new();
    let mut untraced_ns = Vec::new();
    let (mut drops, mut misses) = (0, 0);
    for pair in 0..options.pairs {
        let traced_first = pair % 2 == 1;
        let (mut untraced, mut traced) = (Duration::ZERO, Duration::ZERO);
        for traced_run in [traced_first, !traced_first] {
            if traced_run {
                let cgtrace_throttle =
                    Tracer::start_view(&options.cgtrace, "throttle", "cgtrace: throttle:");
                traced = ping_pong(ROUND_TRIPS);
                let (d, m, _) = cgtrace_throttle.stop();
                drops += d;
                misses += m;
            } else {
                untraced = ping_pong(ROUND_TRIPS);
            }
        }
        #[expect(clippy::cast_precision_loss, reason = "nanoseconds per round trip")]
        untraced_ns.push(untraced.as_nanos() as f64);
        ratios.push(traced.as_secs_f64() / untraced.as_secs_f64());
        eprintln!(
            "switch pair {:>2}{}: untraced {} ns, traced {} ns per round trip",
            pair + 1,
            if background {
                " (throttled group running)"
            } else {
                ""
            },
            untraced.as_nanos(),
            traced.as_nanos()
        );
    }
    let summary = summarize(ratios);
    let untraced = summarize(untraced_ns).median;
    let attached = attached_switch_cost(ROUND_TRIPS);
    // Two context switches per round trip.
    let per_switch = (summary.median - 1.0) * untraced / 2.0;
    let label = if background {
        ", with a throttled group running"
    } else {
        ", no quota anywhere"
    };
    let mut section = format!("\n## S: context switches under `cgtrace throttle`{label}\n\n");
    let _ = writeln!(
        section,
        "Two threads pinned to one CPU pass a byte back and forth over pipes ({ROUND_TRIPS} round \
         trips, two context switches each), untraced vs. traced by `cgtrace throttle --json`; {} \
         pairs, order alternated.\n",
        options.pairs
    );
    let _ = writeln!(
        section,
        "**traced/untraced: min {:.3}, median {:.3}, max {:.3}**; untraced {untraced:.0} ns per \
         round trip, so the probe adds about {per_switch:.0} ns per context switch; ring-buffer \
         drops {drops}, recursion misses {misses}.",
        summary.min, summary.median, summary.max
    );
    if background {
        let _ = writeln!(
            section,
            "\nThe view keeps its per-switch program detached while no cgroup has a CFS quota, so \
             with no quota anywhere it costs nothing. Attached, the kernel's BPF run-time statistics \
             put it at {:.0} ns per context switch over {} switches of workload S (statistics on only \
             for that run).",
            attached.1, attached.0
        );
    }
    section
}

/// The attached throttle program's cost per context switch, from the
/// kernel's BPF statistics, over one run of workload S: `(runs, ns per run)`.
fn attached_switch_cost(round_trips: u32) -> (u64, f64) {
    let probe = Probe::load(&ProbeOptions {
        features: FeatureSet::THROTTLE,
        throttle_variant: cgtrace::probe::ThrottleVariant::SchedSwitch,
        ..ProbeOptions::default()
    })
    .expect("load the throttle probe");
    let stats = BpfStatsEnabled::enable();
    let before = probe.program_counters();
    ping_pong(round_trips);
    let after = probe.program_counters();
    drop(stats);
    let find = |counters: &[(String, cgtrace::probe::prog_info::ProgramCounters)]| {
        counters
            .iter()
            .find(|(name, _)| name == "throttle_switch")
            .map(|(_, c)| *c)
            .unwrap_or_default()
    };
    let (start, end) = (find(&before), find(&after));
    let runs = end.run_count - start.run_count;
    #[expect(clippy::cast_precision_loss, reason = "a display figure")]
    let ns = (end.run_time_ns - start.run_time_ns) as f64 / runs.max(1) as f64;
    (runs, ns)
}

/// The trace writer alone: a million records (throttle spans and page-cache
/// flows, the two frequent kinds) encoded, chunked, CRC-checked and written
/// to a file, on one core. Returns the report section.
fn writer_throughput() -> String {
    use cgtrace::trace::{
        file::{TraceHeader, TraceWriter},
        record::TraceRecord,
    };
    use cgtrace_common::{cgroup::CgroupRef, pagecache::CacheReason};
    const RECORDS: u64 = 1_000_000;
    let path =
        std::env::temp_dir().join(format!("cgtrace-bench-writer-{}.cgt", std::process::id()));
    let file = std::fs::File::create(&path).expect("create bench trace");
    let mut writer = TraceWriter::new(file, &TraceHeader::default()).expect("write header");
    let cgroup = |id| {
        Some(CgroupRef {
            id,
            hierarchy: 4,
            level: 3,
        })
    };
    let started = Instant::now();
    for n in 0..RECORDS {
        let record = if n % 2 == 0 {
            TraceRecord::Throttle(cgtrace::event::ThrottleSpan {
                cgroup: None,
                cgroup_ref: cgroup(1000 + n % 64),
                cpu: u32::try_from(n % 2).unwrap_or(0),
                pid: 4242,
                comm: "worker".into(),
                start_ns: 1_000_000_000 + n * 100_000,
                end_ns: 1_000_000_000 + n * 100_000 + 80_000_000,
            })
        } else {
            TraceRecord::CacheFlow {
                end_ns: 1_000_000_000 + n * 1000,
                owner: cgroup(1000 + n % 64),
                actor: cgroup(2000 + n % 8),
                reason: CacheReason::OwnLimit,
                pages: n % 512,
            }
        };
        writer.record(&record).expect("write record");
    }
    writer.flush().expect("flush");
    let took = started.elapsed();
    let bytes = writer.bytes_written();
    drop(writer);
    let read_started = Instant::now();
    let trace =
        cgtrace::trace::file::read(&std::fs::read(&path).expect("read back")).expect("parse back");
    let read_took = read_started.elapsed();
    let _ = std::fs::remove_file(&path);
    assert_eq!(trace.records.len() as u64, RECORDS);
    #[expect(clippy::cast_precision_loss, reason = "display figures")]
    let (rate, per_record, read_rate) = (
        RECORDS as f64 / took.as_secs_f64(),
        bytes as f64 / RECORDS as f64,
        RECORDS as f64 / read_took.as_secs_f64(),
    );
    eprintln!("writer: {rate:.0} records/s, {per_record:.1} bytes each");
    format!(
        "\n## T: the trace writer\n\n{RECORDS} records (throttle spans and page-cache flows, alternating) \
         encoded, chunked, CRC-checked and written to a file on one core: \
         **{:.2} million records/s, {per_record:.1} bytes per record**; read back and checked at \
         {:.2} million records/s.\n",
        rate / 1e6,
        read_rate / 1e6
    )
}

fn main() {
    let options = parse_args();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        usage("needs root (it creates memory cgroups and loads eBPF programs)");
    }
    let limit = options.limit_mib * MIB;
    eprintln!("cgtrace-bench: writing a {} MiB file", options.file_mib);
    let file = uncached_file("bench-w", options.file_mib);
    // One untimed run to warm the binaries and the disk's own cache.
    run_workload(&file, limit, "warmup");

    let mut ratios = Vec::new();
    let mut untraced_times = Vec::new();
    let mut rows = String::new();
    let (mut drops, mut misses, mut failures) = (0, 0, 0);
    for pair in 0..options.pairs {
        let traced_first = pair % 2 == 1;
        let mut untraced = Duration::ZERO;
        let mut traced = Duration::ZERO;
        for traced_run in [traced_first, !traced_first] {
            if traced_run {
                let cgtrace_cache = Tracer::start(&options.cgtrace);
                traced = run_workload(&file, limit, "traced");
                let (d, m, f) = cgtrace_cache.stop();
                drops += d;
                misses += m;
                failures += f;
            } else {
                untraced = run_workload(&file, limit, "untraced");
            }
        }
        let ratio = traced.as_secs_f64() / untraced.as_secs_f64();
        untraced_times.push(untraced.as_secs_f64());
        eprintln!(
            "pair {:>2}: untraced {:.3} s, traced {:.3} s, ratio {ratio:.3}",
            pair + 1,
            untraced.as_secs_f64(),
            traced.as_secs_f64()
        );
        let _ = writeln!(
            rows,
            "| {} | {} | {:.3} | {:.3} | {ratio:.3} |",
            pair + 1,
            if traced_first { "traced" } else { "untraced" },
            untraced.as_secs_f64(),
            traced.as_secs_f64()
        );
        ratios.push(ratio);
    }
    let summary = summarize(ratios);
    let untraced_median = summarize(untraced_times).median;
    let costs = per_event_cost(&file, limit);
    #[expect(clippy::cast_precision_loss, reason = "a display figure")]
    let probe_ms: f64 = costs
        .iter()
        .map(|(_, runs, ns)| *runs as f64 * ns)
        .sum::<f64>()
        / 1e6;

    let mut report = String::new();
    let _ = writeln!(
        report,
        "## W: page-cache churn under `cgtrace cache`\n\n\
         A {} MiB file read twice with `cat` in a memory cgroup limited to {} MiB \
         (every read inserts into and evicts from the page cache), untraced vs. \
         traced by `cgtrace cache --json --interval 1s` for the whole run; \
         {} pairs, order alternated.\n",
        options.file_mib, options.limit_mib, options.pairs
    );
    let _ = writeln!(
        report,
        "**traced/untraced: min {:.3}, median {:.3}, max {:.3}**; \
         ring-buffer drops {drops}, recursion misses {misses}, read failures {failures}.\n",
        summary.min, summary.median, summary.max
    );
    let _ = writeln!(
        report,
        "| pair | first | untraced (s) | traced (s) | ratio |\n|---|---|---|---|---|"
    );
    report.push_str(&rows);
    let _ = writeln!(
        report,
        "\nPer-event cost over one traced run (kernel BPF run-time statistics, enabled for that run only):\n\n\
         | program | runs | ns per run |\n|---|---|---|"
    );
    for (name, runs, ns) in &costs {
        let _ = writeln!(report, "| {name} | {runs} | {ns:.0} |");
    }
    let _ = writeln!(
        report,
        "\nProbe time in that run: {probe_ms:.2} ms, {:.2}% of the median untraced run ({untraced_median:.3} s): \
         the kernel-side cost, free of the run-to-run noise in the ratios above.",
        probe_ms / 10.0 / untraced_median
    );
    report.push_str(&writer_throughput());
    report.push_str(&switch_cost(&options, false));
    report.push_str(&switch_cost(&options, true));
    print!("{report}");
    if let Some(path) = &options.markdown {
        std::fs::write(path, &report).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("cgtrace-bench: wrote {}", path.display());
    }
}
