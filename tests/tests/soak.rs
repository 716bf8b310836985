//! The soak: `cgtrace serve` (with its flight recorder) and `cgtrace
//! record` side by side through a long run of churn on the real kernel:
//! cgroups made and removed without pause (over 100,000 an hour, more than
//! the 65,536-entry name maps), OOM storms in nested groups, page cache
//! thrashed under a shared limit by a noisy neighbour, and throttled groups
//! that come and go.
//!
//! It checks that both processes' memory stays flat (the last quarter's
//! peak RSS at most 10 % over the first quarter's), that every OOM kill the
//! kernel counted was reported by both, exactly, that nothing was lost,
//! that the recording reads back whole, that the flight recorder never
//! passed its disk cap, and that the metric series stay under their cap and
//! removed cgroups' series expire.
//!
//! `CGTRACE_SOAK_SECONDS` sets the length (300 in `cargo xtask test`;
//! `cargo xtask soak --duration 1h` runs an hour). It writes a summary and
//! plots of RSS, CPU and series over time to `CGTRACE_SOAK_OUT` (a
//! directory; `target/soak` unless set; `cargo xtask soak` uses `docs/`).

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "counts and sizes shown and compared as f64, far below 2^52"
)]

use std::{
    fmt::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cgtrace::{
    cgroup::{
        Hierarchies,
        scratch::{ScratchCgroup, keyed_value},
    },
    view::report::svg::{self, Series, Unit},
};
use cgtrace_tests::{
    ChildGuard, cgtrace_bin,
    http::{free_port, get, sample, scrape},
    memhog, read_in, report_json, require_root, uncached_file, wait_until,
};

const PREFIX: &str = "cgtrace-test-soak";
/// Cgroups made (and removed) per second: 115,200 an hour.
const CHURN_PER_SECOND: u64 = 32;
/// How long a removed cgroup's series are served.
const SERIES_TTL_S: u64 = 20;
/// The series cap given to serve.
const MAX_SERIES: u64 = 50_000;
/// The flight recorder's disk cap: small, so the storms' snapshots reach it.
const MAX_DISK: u64 = 4 << 20;
const MIB: u64 = 1 << 20;
/// The recording's loss counters, each of which must stay zero. Its
/// recursion misses need not: they are the kernel's own count
/// (`bpf_prog_info.recursion_misses`, summed over cgtrace's programs) of
/// runs it skipped because the same program was already running on that
/// CPU: a memcg charge tracepoint (`record` attaches them; `serve` only
/// with `--charges`) firing in an interrupt over itself. Each is a charge
/// or uncharge not counted, and the recording's losses line says how many.
/// Nor need its read failures: a probe reading a cgroup the kernel is
/// tearing down at that moment (under churn, a few in thousands of
/// removals) fails the read, counts it and names the cgroup by id; at most
/// one per [`REMOVALS_PER_READ_FAILURE`] cgroups removed.
const LOSSES: [&str; 3] = ["ring_buffer_drops", "map_full", "decode_errors"];
const REMOVALS_PER_READ_FAILURE: u64 = 1000;

/// What the load did, as the kernel counted it.
#[derive(Default)]
struct Counts {
    cgroups_made: AtomicU64,
    oom_kills: AtomicU64,
    storms: AtomicU64,
    throttled_groups: AtomicU64,
    thrash_rounds: AtomicU64,
}

/// The load's threads, stopped together.
struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(hierarchies: &Arc<Hierarchies>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let jobs: [fn(&Hierarchies, &AtomicBool, &Counts); 4] = [churn, storms, thrash, throttle];
        let threads = jobs
            .into_iter()
            .map(|job| {
                let (stop, counts, hierarchies) =
                    (stop.clone(), counts.clone(), hierarchies.clone());
                std::thread::spawn(move || job(&hierarchies, &stop, &counts))
            })
            .collect();
        Self {
            stop,
            counts,
            threads,
        }
    }

    fn finish(self) -> Arc<Counts> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("a load thread panicked");
        }
        self.counts
    }
}

/// Sleeps up to `duration`, in steps, unless told to stop.
fn pause(stop: &AtomicBool, duration: Duration) {
    let until = Instant::now() + duration;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(duration));
    }
}

/// Cgroups made and removed at [`CHURN_PER_SECOND`], alternately in the
/// memory and the cpu hierarchy; every tenth runs a process first.
fn churn(hierarchies: &Hierarchies, stop: &AtomicBool, counts: &Counts) {
    let started = Instant::now();
    let mut made = 0_u64;
    while !stop.load(Ordering::SeqCst) {
        let controller = if made.is_multiple_of(2) {
            "memory"
        } else {
            "cpu"
        };
        let name = format!("{}-churn-{made}", prefix());
        let group =
            ScratchCgroup::create_for(hierarchies, controller, &name).expect("a churn cgroup");
        if made.is_multiple_of(10) {
            let mut command = Command::new("true");
            ChildGuard(group.spawn_into(&mut command).expect("run true")).wait();
        }
        drop(group);
        made += 1;
        counts.cgroups_made.store(made, Ordering::SeqCst);
        // Keep the rate, not a burst.
        let due = Duration::from_secs_f64(made as f64 / CHURN_PER_SECOND as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// Every 20 s an OOM storm: a parent with three children, each limited
/// to 32 MiB and running a 64 MiB hog. The kernel's count is each
/// child's `oom_kill`, read before the parent is removed.
fn storms(hierarchies: &Hierarchies, stop: &AtomicBool, counts: &Counts) {
    let mut storm = 0;
    pause(stop, Duration::from_secs(5));
    while !stop.load(Ordering::SeqCst) {
        let name = format!("{}-storm-{storm}", prefix());
        let mut parent = ScratchCgroup::create(hierarchies, &name).expect("a storm's parent");
        let mut hogs = Vec::new();
        let mut dirs = Vec::new();
        for child in 0..3 {
            let group = parent.child(&format!("hog{child}")).expect("a storm child");
            group.set_memory_limit(32 * MIB).expect("a child's limit");
            hogs.push(memhog(group, 64));
            dirs.push(group.dir().to_owned());
        }
        for mut hog in hogs {
            hog.wait();
        }
        let kills: u64 = dirs.iter().map(|dir| oom_kills_in(dir)).sum();
        counts.oom_kills.fetch_add(kills, Ordering::SeqCst);
        counts.storms.fetch_add(1, Ordering::SeqCst);
        drop(parent);
        storm += 1;
        pause(stop, Duration::from_secs(20));
    }
}

/// The kernel's `oom_kill` count of the memory cgroup at `dir`.
fn oom_kills_in(dir: &Path) -> u64 {
    ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|file| std::fs::read_to_string(dir.join(file)).ok())
        .and_then(|text| keyed_value(&text, "oom_kill"))
        .unwrap_or(0)
}

/// A victim's page cache evicted by a noisy neighbour under a shared
/// 96 MiB limit, a round every two seconds.
fn thrash(hierarchies: &Hierarchies, stop: &AtomicBool, counts: &Counts) {
    let quiet_file = uncached_file("soak-quiet", 48);
    let noisy_file = uncached_file("soak-noisy", 96);
    let name = format!("{}-thrash", prefix());
    let mut parent = ScratchCgroup::create(hierarchies, &name).expect("the thrash parent");
    parent.set_memory_limit(96 * MIB).expect("the shared limit");
    parent.child("quiet").expect("the victim");
    parent.child("noisy").expect("the neighbour");
    let [quiet, noisy] = parent.children() else {
        unreachable!("two children made")
    };
    while !stop.load(Ordering::SeqCst) {
        read_in(quiet, &[&quiet_file.path]);
        read_in(noisy, &[&noisy_file.path]);
        counts.thrash_rounds.fetch_add(1, Ordering::SeqCst);
        pause(stop, Duration::from_secs(2));
    }
}

/// Every 15 s a cpu group under a 20 % quota spins for 5 s, then goes.
fn throttle(hierarchies: &Hierarchies, stop: &AtomicBool, counts: &Counts) {
    let mut round = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("{}-cpu-{round}", prefix());
        let group = ScratchCgroup::create_for(hierarchies, "cpu", &name).expect("a cpu cgroup");
        group.set_cpu_quota(20_000, 100_000).expect("a quota");
        let mut spin = Command::new(cgtrace_bin());
        spin.args(["__spin", "5", "1"]);
        ChildGuard(group.spawn_into(&mut spin).expect("start the spinner")).wait();
        counts.throttled_groups.fetch_add(1, Ordering::SeqCst);
        drop(group);
        round += 1;
        pause(stop, Duration::from_secs(10));
    }
}

/// One sample of both processes and the endpoint.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    seconds: f64,
    serve_rss: u64,
    record_rss: u64,
    /// The anonymous part of each RSS (the heap, not the binary's pages).
    serve_anon: u64,
    record_anon: u64,
    /// CPU time so far, seconds.
    serve_cpu: f64,
    record_cpu: f64,
    series: u64,
    series_dropped: u64,
}

/// Resident set and its anonymous part (bytes), and CPU time (seconds) of
/// `pid`.
fn usage(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (rss_kib, anon_kib) = (kib("VmRSS:"), kib("RssAnon:"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are
    // the 12th and 13th.
    let ticks: f64 = stat.rsplit_once(')').map_or(0.0, |(_, rest)| {
        rest.split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|t| t.parse::<f64>().ok())
            .sum()
    });
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (rss_kib * 1024, anon_kib * 1024, ticks / hz.max(1.0))
}

/// Bytes of the files under `dir`, each file once however many links it
/// has (a snapshot is hard links to the ring's segments), as the
/// recorder's cap counts them.
fn disk_usage(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_dir() => walk(&entry.path(), seen),
                Ok(meta) if seen.insert((meta.dev(), meta.ino())) => meta.len(),
                _ => 0,
            })
            .sum()
    }
    walk(dir, &mut std::collections::HashSet::new())
}

/// When the run is warm: once the churn has removed as many cgroups as a
/// session keeps the names of (`REMOVED_NAMES_KEPT`), every cache of
/// removed cgroups is full and stays so. Before that they fill by design;
/// what must not grow is what comes after. (An hour's soak is warm in its
/// first two minutes; the five-minute one in `cargo xtask test` compares
/// the minutes after.)
fn warm_from() -> f64 {
    cgtrace::session::REMOVED_NAMES_KEPT as f64 / CHURN_PER_SECOND as f64
}

/// The highest of `value` over samples in `[from, to)` of the run.
fn peak(samples: &[Sample], from: f64, to: f64, value: impl Fn(&Sample) -> u64) -> u64 {
    samples
        .iter()
        .filter(|s| s.seconds >= from && s.seconds < to)
        .map(value)
        .max()
        .unwrap_or(0)
}

/// Series of the soak's cgroups on the endpoint.
fn soak_series(metrics: &str) -> usize {
    metrics.lines().filter(|line| is_soak_series(line)).count()
}

impl Drop for Agents {
    /// The work directory goes with the run, whatever its end (the
    /// writers stopped first).
    fn drop(&mut self) {
        for child in [&mut self.serve, &mut self.record] {
            let _ = child.0.kill();
            let _ = child.0.wait();
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// `serve` and `record`, started and attached, and where they write.
struct Agents {
    serve: ChildGuard,
    record: ChildGuard,
    port: u16,
    work: PathBuf,
    flight: PathBuf,
    trace: PathBuf,
    serve_out: PathBuf,
}

impl Agents {
    fn start() -> Self {
        let work = std::env::temp_dir().join(format!("{PREFIX}-{}", std::process::id()));
        std::fs::create_dir_all(&work).expect("a work directory");
        let (flight, trace, serve_out) = (
            work.join("flight"),
            work.join("soak.cgt"),
            work.join("serve.jsonl"),
        );
        let port = free_port();
        let serve = ChildGuard(
            Command::new(cgtrace_bin())
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--interval", "1s", "--sweep", "10s"])
                .args(["--series-ttl", &format!("{SERIES_TTL_S}s")])
                .args(["--max-series", &MAX_SERIES.to_string()])
                .arg("--flight-recorder")
                .arg(&flight)
                .args(["--max-disk", &MAX_DISK.to_string(), "--keep", "1m"])
                .stdout(std::fs::File::create(&serve_out).expect("serve's log"))
                .stderr(Stdio::null())
                .spawn()
                .expect("start cgtrace serve"),
        );
        wait_until("serve to be ready", || {
            get(port, "/healthz", "").is_some_and(|(status, _)| status == 200)
        });
        let record = ChildGuard(
            Command::new(cgtrace_bin())
                .args(["record", "--interval", "1s", "-o"])
                .arg(&trace)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start cgtrace record"),
        );
        // Both attached before the load starts.
        std::thread::sleep(Duration::from_secs(3));
        Self {
            serve,
            record,
            port,
            work,
            flight,
            trace,
            serve_out,
        }
    }

    /// Samples both every 5 s (the flight recorder's directory every
    /// second) for `seconds` of load; the samples and the directory's
    /// largest size.
    fn watch(&mut self, seconds: u64) -> (Vec<Sample>, u64) {
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut flight_max = 0;
        let mut last_sample: Option<Instant> = None;
        while started.elapsed() < Duration::from_secs(seconds) {
            flight_max = flight_max.max(disk_usage(&self.flight));
            if last_sample.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                last_sample = Some(Instant::now());
                let (serve_rss, serve_anon, serve_cpu) = usage(self.serve.pid());
                let (record_rss, record_anon, record_cpu) = usage(self.record.pid());
                let metrics = scrape(self.port);
                samples.push(Sample {
                    seconds: started.elapsed().as_secs_f64(),
                    serve_rss,
                    record_rss,
                    serve_anon,
                    record_anon,
                    serve_cpu,
                    record_cpu,
                    series: sample(&metrics, "cgtrace_series ").unwrap_or(0),
                    series_dropped: sample(&metrics, "cgtrace_series_dropped_total ").unwrap_or(0),
                });
                assert!(
                    self.serve.0.try_wait().unwrap().is_none()
                        && self.record.0.try_wait().unwrap().is_none(),
                    "serve and record keep running"
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (samples, flight_max)
    }
}

#[test]
fn soak() {
    if !require_root("soak") {
        return;
    }
    let seconds: u64 = std::env::var("CGTRACE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let out_dir = std::env::var_os("CGTRACE_SOAK_OUT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/soak"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&out_dir).expect("the output directory");
    let hierarchies = Arc::new(Hierarchies::discover().expect("cgroup mounts"));
    let mut agents = Agents::start();
    let started = Instant::now();
    let load = Load::start(&hierarchies);
    let (samples, flight_max) = agents.watch(seconds);
    let counts = load.finish();
    let ran = started.elapsed().as_secs_f64();

    // Removed cgroups' series go once their TTL has passed.
    // Waited for up to four TTLs; what is left is said, and fails the run
    // once the summary is written.
    let expired = Instant::now();
    let series_left = loop {
        let metrics = scrape(agents.port);
        let left = soak_series(&metrics);
        let waited = expired.elapsed();
        if left == 0 || waited >= Duration::from_secs(SERIES_TTL_S * 4) {
            break left;
        }
        eprintln!(
            "{left} series of removed cgroups still served {waited:?} after the load, e.g.\n{}",
            metrics
                .lines()
                .filter(|l| is_soak_series(l))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    let expired_after = expired.elapsed().as_secs_f64();
    let final_metrics = scrape(agents.port);
    let lost = |family: &str| sample(&final_metrics, family).unwrap_or(0);
    let serve_losses = [
        lost("cgtrace_probe_ring_buffer_drops_total "),
        lost("cgtrace_probe_recursion_misses_total "),
        lost("cgtrace_probe_map_full_total "),
        lost("cgtrace_probe_read_failures_total "),
    ];
    interrupt(&mut agents.record);
    interrupt(&mut agents.serve);
    let serve_kills = std::fs::read_to_string(&agents.serve_out)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["type"] == "oom_kill" && is_soak(&line["victim"]["cgroup"]))
        .count() as u64;
    let report = report_json(&agents.trace);
    let recorded_kills = report["oom_kills"]
        .as_array()
        .expect("the report's kills")
        .iter()
        .filter(|kill| is_soak(&kill["victim"]["cgroup"]))
        .count() as u64;
    let summary = Summary {
        seconds: ran,
        counts: &counts,
        samples: &samples,
        flight_max,
        serve_kills,
        recorded_kills,
        losses: report["losses"].clone(),
        serve_losses,
        expired_after,
        series_left,
        records: report["records"].as_u64().unwrap_or(0),
        trace_bytes: std::fs::metadata(&agents.trace).map_or(0, |m| m.len()),
    };
    summary.write(&out_dir);
    summary.check();
}

/// This run's cgroups' names start with this (another soak may run beside).
fn prefix() -> String {
    format!("{PREFIX}-{}", std::process::id())
}

fn is_soak(cgroup: &serde_json::Value) -> bool {
    cgroup
        .as_str()
        .is_some_and(|path| path.starts_with(&format!("/{}-", prefix())))
}

/// A metric line of one of this run's cgroups.
fn is_soak_series(line: &str) -> bool {
    !line.starts_with('#') && line.contains(&format!("cgroup=\"/{}-", prefix()))
}

/// SIGINT, then the exit, which must be clean.
fn interrupt(child: &mut ChildGuard) {
    let pid = libc::pid_t::try_from(child.pid()).expect("pid fits");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = child.wait();
    assert!(status.success(), "a clean exit on SIGINT: {status}");
}

/// What the run measured.
struct Summary<'a> {
    seconds: f64,
    counts: &'a Counts,
    samples: &'a [Sample],
    flight_max: u64,
    serve_kills: u64,
    recorded_kills: u64,
    losses: serde_json::Value,
    serve_losses: [u64; 4],
    expired_after: f64,
    /// Series of removed cgroups still served when the wait ended.
    series_left: usize,
    records: u64,
    trace_bytes: u64,
}

impl Summary<'_> {
    /// The peaks of the first and the last quarter of the run once warm
    /// (see [`warm_from`]).
    fn quarter_peaks(&self, value: impl Fn(&Sample) -> u64 + Copy) -> (u64, u64) {
        let warm = warm_from();
        let quarter = (self.seconds - warm) / 4.0;
        (
            peak(self.samples, warm, warm + quarter, value),
            peak(self.samples, warm + 3.0 * quarter, f64::MAX, value),
        )
    }

    /// Read failures at most one per [`REMOVALS_PER_READ_FAILURE`] removals.
    fn read_failures_explained(&self, failures: u64) -> bool {
        let removed = self.counts.cgroups_made.load(Ordering::SeqCst);
        failures.saturating_mul(REMOVALS_PER_READ_FAILURE) <= removed.max(REMOVALS_PER_READ_FAILURE)
    }

    /// The recording's read failures.
    fn record_read_failures(&self) -> u64 {
        self.losses["read_failures"].as_u64().unwrap_or(u64::MAX)
    }

    /// serve's drops, misses and map-full are none, and its read failures
    /// (the last of its losses) as few as the recording's may be.
    fn serve_lost_nothing(&self) -> bool {
        let [drops, misses, map_full, read_failures] = self.serve_losses;
        drops == 0 && misses == 0 && map_full == 0 && self.read_failures_explained(read_failures)
    }

    fn check(&self) {
        let kernel = self.counts.oom_kills.load(Ordering::SeqCst);
        assert!(kernel > 0, "the storms killed");
        assert_eq!(
            self.serve_kills, kernel,
            "serve reported every kill, exactly"
        );
        assert_eq!(
            self.recorded_kills, kernel,
            "the recording has every kill, exactly"
        );
        let flat = |who: &str, (first, last): (u64, u64)| {
            assert!(
                last * 10 <= first * 11,
                "{who}'s RSS is flat: first quarter's peak {first}, last quarter's {last}"
            );
        };
        flat("serve", self.quarter_peaks(|s| s.serve_rss));
        flat("record", self.quarter_peaks(|s| s.record_rss));
        for family in LOSSES {
            assert_eq!(
                self.losses[family], 0,
                "the recording lost nothing: {}",
                self.losses
            );
        }
        assert!(
            self.read_failures_explained(self.record_read_failures()),
            "read failures: {}",
            self.losses
        );
        assert!(
            self.serve_lost_nothing(),
            "serve lost nothing: {:?}",
            self.serve_losses
        );
        assert!(
            self.flight_max <= MAX_DISK,
            "the flight recorder's cap held"
        );
        assert!(
            self.samples
                .iter()
                .all(|s| s.series <= MAX_SERIES && s.series_dropped == 0)
        );
        assert!(self.records > 0);
        assert_eq!(self.series_left, 0, "removed cgroups' series expire");
        assert!(
            self.counts.cgroups_made.load(Ordering::SeqCst) as f64
                >= 0.9 * self.seconds * CHURN_PER_SECOND as f64,
            "the churn kept its rate"
        );
    }

    fn write(&self, dir: &Path) {
        let points = |value: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
            self.samples.iter().map(|s| (s.seconds, value(s))).collect()
        };
        let rate = |cpu: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
            self.samples
                .windows(2)
                .map(|w| {
                    let dt = (w[1].seconds - w[0].seconds).max(1e-3);
                    (w[1].seconds, (cpu(&w[1]) - cpu(&w[0])) / dt * 1000.0)
                })
                .collect()
        };
        let series = |name: &str, colour: usize, points: Vec<(f64, f64)>| Series {
            name: name.to_owned(),
            colour: svg::PALETTE[colour],
            points,
        };
        let charts = [
            (
                "soak-rss.svg",
                svg::line_chart(
                    "RSS",
                    Unit::Bytes,
                    &[
                        series("serve", 0, points(&|s| s.serve_rss as f64)),
                        series("record", 1, points(&|s| s.record_rss as f64)),
                    ],
                    &[],
                    self.seconds,
                ),
            ),
            (
                "soak-cpu.svg",
                svg::line_chart(
                    "CPU",
                    Unit::MillisPerSecond,
                    &[
                        series("serve", 0, rate(&|s| s.serve_cpu)),
                        series("record", 1, rate(&|s| s.record_cpu)),
                    ],
                    &[],
                    self.seconds,
                ),
            ),
            (
                "soak-series.svg",
                svg::line_chart(
                    "series",
                    Unit::Count,
                    &[series("series served", 2, points(&|s| s.series as f64))],
                    &[],
                    self.seconds,
                ),
            ),
        ];
        for (file, chart) in &charts {
            std::fs::write(dir.join(file), chart).expect("a chart");
        }
        std::fs::write(dir.join("soak.md"), self.markdown()).expect("the summary");
        let mut csv = String::from(
            "seconds,serve_rss,serve_anon,record_rss,record_anon,serve_cpu_s,record_cpu_s,series\n",
        );
        for s in self.samples {
            let _ = writeln!(
                csv,
                "{:.0},{},{},{},{},{:.2},{:.2},{}",
                s.seconds,
                s.serve_rss,
                s.serve_anon,
                s.record_rss,
                s.record_anon,
                s.serve_cpu,
                s.record_cpu,
                s.series
            );
        }
        std::fs::write(dir.join("soak.csv"), csv).expect("the samples");
    }

    fn markdown(&self) -> String {
        let counts = self.counts;
        let mb = |bytes: u64| bytes as f64 / 1e6;
        let (serve_first, serve_last) = self.quarter_peaks(|s| s.serve_rss);
        let (record_first, record_last) = self.quarter_peaks(|s| s.record_rss);
        let cpu = |value: fn(&Sample) -> f64| {
            self.samples
                .last()
                .map_or(0.0, |s| value(s) / self.seconds.max(1.0) * 100.0)
        };
        let series_max = self.samples.iter().map(|s| s.series).max().unwrap_or(0);
        format!(
            "# Soak\n\n\
             Written by `cargo xtask soak` (do not edit by hand): `cgtrace serve` (1 s interval, \
             flight recorder capped at {:.1} MB, series TTL {SERIES_TTL_S} s) and `cgtrace record` \
             side by side for {:.1} minutes of churn on Linux {}.\n\n\
             ## The load\n\n\
             - {} cgroups made and removed ({CHURN_PER_SECOND} a second, in the memory and cpu \
             hierarchies, every tenth running a process);\n\
             - {} OOM storms (a parent with three 32 MiB children, each running a 64 MiB hog): \
             {} kills, as the kernel counted them;\n\
             - {} rounds of a victim's page cache thrashed by a neighbour under a shared 96 MiB \
             limit;\n\
             - {} throttled groups (20 % quota, 5 s of spinning each) made and removed.\n\n\
             ## What held\n\n\
             | | measured | |\n|---|---|---|\n\
             | OOM kills reported | serve {}, record {}, kernel {} | {} |\n\
             | serve's peak RSS, first → last quarter once warm ({:.0} s: the removed cgroups' names kept) | {:.1} → {:.1} MB | {} |\n\
             | record's peak RSS, first → last quarter once warm | {:.1} → {:.1} MB | {} |\n\
             | CPU, mean | serve {:.2} %, record {:.2} % of a core | |\n\
             | losses (record; its recursion misses are the kernel's count of charge-tracepoint runs skipped in an interrupt over themselves, and its read failures probes reading a cgroup as it was torn down, at most 1 in 1,000 removals: both shown in the recording's losses line) | {} | {} |\n\
             | losses (serve: drops, misses, map-full, and read failures, as few as the recording's may be) | {:?} | {} |\n\
             | flight recorder's directory, largest | {:.1} MB (cap {:.1} MB) | {} |\n\
             | series served, most | {series_max} (cap {MAX_SERIES}, none dropped) | {} |\n\
             | removed cgroups' series gone after the load | {:.0} s (TTL {SERIES_TTL_S} s), {} left | {} |\n\
             | the recording | {:.1} MB, {} records, read back whole | met |\n\n\
             ![RSS](soak-rss.svg)\n\n![CPU](soak-cpu.svg)\n\n![series](soak-series.svg)\n",
            mb(MAX_DISK),
            self.seconds / 60.0,
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            counts.cgroups_made.load(Ordering::SeqCst),
            counts.storms.load(Ordering::SeqCst),
            counts.oom_kills.load(Ordering::SeqCst),
            counts.thrash_rounds.load(Ordering::SeqCst),
            counts.throttled_groups.load(Ordering::SeqCst),
            self.serve_kills,
            self.recorded_kills,
            counts.oom_kills.load(Ordering::SeqCst),
            verdict(
                self.serve_kills == counts.oom_kills.load(Ordering::SeqCst)
                    && self.recorded_kills == counts.oom_kills.load(Ordering::SeqCst)
            ),
            warm_from(),
            mb(serve_first),
            mb(serve_last),
            verdict(serve_last * 10 <= serve_first * 11),
            mb(record_first),
            mb(record_last),
            verdict(record_last * 10 <= record_first * 11),
            cpu(|s| s.serve_cpu),
            cpu(|s| s.record_cpu),
            self.losses,
            verdict(
                LOSSES.iter().all(|f| self.losses[*f] == 0)
                    && self.read_failures_explained(self.record_read_failures())
            ),
            self.serve_losses,
            verdict(self.serve_lost_nothing()),
            mb(self.flight_max),
            mb(MAX_DISK),
            verdict(self.flight_max <= MAX_DISK),
            verdict(series_max <= MAX_SERIES && self.samples.iter().all(|s| s.series_dropped == 0)),
            self.expired_after,
            self.series_left,
            verdict(self.series_left == 0),
            mb(self.trace_bytes),
            self.records,
        )
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}
