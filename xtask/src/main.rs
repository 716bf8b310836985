//! Developer tasks: `cargo xtask setup | test | vm-test | demo | bench | soak | fuzz | dist |
//! image`.
//!
//! Every task that builds runs `setup` first, so a fresh machine needs no
//! other step. Nothing here is needed by cgtrace at run time.

mod background;
mod dist;
mod fuzz;
mod kernel_table;
mod kernels;
mod phases;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build needs (idempotent; quick when already done).
    Setup,
    /// Run every check: format, clippy, unit and integration tests (as
    /// root), then the integration tests on every kernel of the matrix.
    Test,
    /// Run the integration tests on other kernels (pure cgroup v2, and v1
    /// on 5.10) under QEMU, and write docs/kernels.md.
    VmTest {
        /// `5.10`, `6.1`, `6.12`, `6.16`, `newest` or `all`.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Run only these test suites (`report`, `oom`, …); the kernel
        /// table is written only when every suite runs.
        #[arg(long)]
        suite: Vec<String>,
    },
    /// Build cgtrace and run its built-in scenarios.
    Demo,
    /// Measure what tracing costs (traced/untraced ratios) and write BENCHMARKS.md.
    Bench {
        /// Fewer, smaller runs: a smoke test of the benchmark, not a measurement.
        #[arg(long)]
        quick: bool,
    },
    /// Run `serve` and `record` side by side through hours of cgroup churn,
    /// OOM storms, page-cache thrash and throttling (tests/tests/soak.rs),
    /// and write docs/soak.md with its plots.
    Soak {
        /// How long (`5m`, `1h`).
        #[arg(long, value_parser = fuzz::parse_duration, default_value = "1h")]
        duration: u64,
    },
    /// Fuzz the parsers of what cgtrace reads from outside (trace files,
    /// the kernel log, cgroup paths), each target for a while.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 600, conflicts_with = "duration")]
        seconds: u64,
        /// The whole run's length (`90s`, `20m`, `1h`), shared out among
        /// the targets, which run one after another.
        #[arg(long, value_parser = fuzz::parse_duration)]
        duration: Option<u64>,
    },
    /// Write the release artifacts into target/dist/: the static binary,
    /// a tarball with its SHA-256 sum, and a Debian package, with man pages
    /// and shell completions.
    Dist,
    /// Write the container image (target/dist/cgtrace-image.tar, for
    /// `docker load`): the static binary alone, running `cgtrace serve`.
    Image,
}

/// Seconds per fuzz target within `cargo xtask test`.
const TEST_FUZZ_SECONDS: u64 = 60;

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run().map(drop),
        Task::Test => test(),
        Task::VmTest { kernel, suite } => vm_test(&kernel, &suite),
        Task::Demo => demo(),
        Task::Bench { quick } => bench(quick),
        Task::Soak { duration } => soak(duration),
        Task::Fuzz { seconds, duration } => setup::run().and_then(|env| {
            let per_target = duration.map_or(seconds, |total| total / fuzz::target_count());
            fuzz::run_all(&env, per_target)
        }),
        Task::Dist => setup::run().and_then(|env| dist::dist(&env)).map(drop),
        Task::Image => setup::run().and_then(|env| dist::image(&env)).map(drop),
    };
    if let Err(error) = result {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}

/// The workspace root (the parent of this crate).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A `cargo` command in the workspace root whose PATH finds bpf-linker.
fn cargo(env: &setup::BuildEnv) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root()).env("PATH", &env.path);
    command
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn test() -> anyhow::Result<()> {
    let mut phases = phases::Phases::new("test");
    let env = phases.time("setup", || -> anyhow::Result<_> {
        let env = setup::run()?;
        setup::ensure_packages(is_root(), "the tests", &setup::TEST_PACKAGES)?;
        Ok(env)
    })?;
    phases.time("fmt and clippy", || -> anyhow::Result<()> {
        run(cargo(&env).args(["fmt", "--all", "--check"]))?;
        run(cargo(&env).args(["clippy", "--all-targets", "--", "-D", "warnings"]))
    })?;
    let binary = root().join("target/debug/cgtrace");
    if !is_root() {
        eprintln!(
            "xtask: not root: the integration tests will skip (run `sudo -E cargo xtask test` for all of them)"
        );
    }
    // What a user installs, for the tests that install and run it.
    let (artifacts, image, validator) =
        phases.time("build and artifacts", || -> anyhow::Result<_> {
            run(cargo(&env).args(["build", "--package", "cgtrace", "--bins"]))?;
            let artifacts = dist::dist(&env)?;
            let image = dist::image(&env)?;
            let validator = setup::kubernetes_validate(is_root())?;
            Ok((artifacts, image, validator))
        })?;
    // Beside the host's tests, on the CPU they leave idle: the fuzzers'
    // build and, as root, the guests' build and kernels.
    let idle = background::IdleCpu::new();
    let (totals, (fuzz_built, guests, beside), waited) = std::thread::scope(|scope| {
        let beside = scope.spawn(|| {
            // Packing the initramfs images runs on this thread.
            background::IdleCpu::lower_this_thread();
            let started = Instant::now();
            let fuzz_built = fuzz::build_all(&env, Some(&idle));
            let guests = is_root().then(|| vm::prepare_matrix(&env, "all", &[], Some(&idle)));
            (fuzz_built, guests, started.elapsed())
        });
        let totals = phases.time("host tests", || {
            run_tests(
                cargo(&env)
                    .args(["test", "--no-fail-fast"])
                    .env("CGTRACE_BIN", &binary)
                    .env("CGTRACE_TARBALL", &artifacts.tarball)
                    .env("CGTRACE_DEB", &artifacts.deb)
                    .env("CGTRACE_IMAGE", &image)
                    .env("CGTRACE_KUBERNETES_VALIDATE", &validator),
            )
        });
        let waiting = Instant::now();
        let beside = beside
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (totals, beside, waiting.elapsed())
    });
    drop(idle);
    phases.record(
        "(beside them: the fuzzers' and guests' builds, kernels)",
        beside,
    );
    phases.record("waiting for those", waited);
    let totals = totals?;
    // One closing line for the host, whatever suite cargo ran last.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    let host_ok = totals.failed == 0 && totals.status_ok;
    print_failures(&totals.failures);
    // The parsers of outside input, a minute each (`cargo xtask fuzz` for longer).
    let fuzz_ok = phases.time("fuzzing", || {
        match fuzz_built.and_then(|()| fuzz::run_all(&env, TEST_FUZZ_SECONDS)) {
            Ok(()) => true,
            Err(error) => {
                eprintln!("xtask: {error:#}");
                false
            }
        }
    });
    let Some(guests) = guests else {
        eprintln!(
            "xtask: not root: the kernel matrix is skipped (it installs QEMU and busybox; run as root)"
        );
        if !host_ok {
            bail!("{} tests failed", totals.failed);
        }
        if !fuzz_ok {
            bail!("fuzzing found a failure");
        }
        return Ok(());
    };
    let guests = guests?;
    let outcomes = phases.time("guests", || vm::boot_matrix(&guests))?;
    let host = kernel_table::host_outcome(totals.passed, totals.failed);
    kernel_table::write_table(Some(&host), &outcomes, &today())?;
    let matrix_ok = summarise(&outcomes);
    if !host_ok {
        print_failures(&totals.failures);
        bail!("{} tests failed on the host", totals.failed);
    }
    if !matrix_ok {
        bail!("the kernel matrix failed");
    }
    if !fuzz_ok {
        bail!("fuzzing found a failure");
    }
    Ok(())
}

/// `cargo xtask vm-test`: the matrix alone.
fn vm_test(kernel: &str, suites: &[String]) -> anyhow::Result<()> {
    let env = setup::run()?;
    setup::ensure_packages(is_root(), "the tests", &setup::TEST_PACKAGES)?;
    let mut phases = phases::Phases::new("vm-test");
    let outcomes = vm::run_matrix(&env, kernel, suites, &mut phases)?;
    if kernel == "all" && suites.is_empty() {
        kernel_table::write_table(None, &outcomes, &today())?;
    }
    if !summarise(&outcomes) {
        bail!("the kernel matrix failed");
    }
    Ok(())
}

/// The host's failed tests, each with the start of what it printed.
fn print_failures(failures: &[String]) {
    for failure in failures {
        println!("FAILED on the host: {failure}");
    }
}

/// One line per kernel; whether all of them passed.
fn summarise(outcomes: &[vm::Outcome]) -> bool {
    let mut ok = true;
    for outcome in outcomes {
        let passed = outcome.finished && outcome.failed == 0 && outcome.passed > 0;
        ok &= passed;
        println!(
            "tests on Linux {}: {} passed, {} failed{} in {:.0} s{}",
            outcome.kernel,
            outcome.passed,
            outcome.failed,
            if outcome.finished { "" } else { ", UNFINISHED" },
            outcome.seconds,
            outcome
                .retried
                .as_ref()
                .map_or_else(String::new, |why| format!(" (booted twice: {why})"))
        );
    }
    ok
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    status_ok: bool,
    /// Each failed test with the first lines it printed, so
    /// the end of a long log (all a CI page may keep) says what failed.
    failures: Vec<String>,
}

/// Lines of a failed test's output kept for the closing summary.
const FAILURE_LINES: usize = 12;

/// Collects the failures `cargo test` reports on stdout: each
/// "---- name stdout ----" block's first lines.
#[derive(Default)]
struct FailureCollector {
    current: Option<(String, Vec<String>)>,
    done: Vec<String>,
}

impl FailureCollector {
    fn line(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            self.finish();
            self.current = Some((name.to_owned(), Vec::new()));
        } else if line.starts_with("failures:") || line.starts_with("test result: ") {
            self.finish();
        } else if let Some((_, lines)) = &mut self.current
            && lines.len() < FAILURE_LINES
            && !line.trim().is_empty()
        {
            lines.push(line.to_owned());
        }
    }

    fn finish(&mut self) {
        if let Some((name, lines)) = self.current.take() {
            let mut text = name;
            for line in lines {
                text.push_str("\n    ");
                text.push_str(&line);
            }
            self.done.push(text);
        }
    }
}

/// Runs `cargo test`, passing its output through and adding up every
/// suite's "test result:" line.
fn run_tests(command: &mut Command) -> anyhow::Result<Totals> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: running {command:?}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut totals = Totals::default();
    let mut failures = FailureCollector::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        failures.line(&line);
        if let Some(result) = line.strip_prefix("test result: ") {
            totals.passed += test_count(result, " passed");
            totals.failed += test_count(result, " failed");
            totals.ignored += test_count(result, " ignored");
        }
    }
    totals.status_ok = child.wait()?.success();
    failures.finish();
    totals.failures = failures.done;
    Ok(totals)
}

/// `cargo xtask soak`: the soak test for `seconds`, its summary and plots
/// written into docs/.
fn soak(seconds: u64) -> anyhow::Result<()> {
    let env = setup::run()?;
    setup::ensure_packages(is_root(), "the soak", &setup::TEST_PACKAGES)?;
    if !is_root() {
        bail!("the soak runs as root: `sudo -E cargo xtask soak`");
    }
    // The release binary: what the soak measures is what users run.
    run(cargo(&env).args(["build", "--release", "--package", "cgtrace", "--bins"]))?;
    run(cargo(&env)
        .args([
            "test",
            "--package",
            "cgtrace-tests",
            "--test",
            "soak",
            "--",
            "--nocapture",
        ])
        .env("CGTRACE_BIN", root().join("target/release/cgtrace"))
        .env("CGTRACE_SOAK_SECONDS", seconds.to_string())
        .env("CGTRACE_SOAK_OUT", root().join("docs")))
}

fn demo() -> anyhow::Result<()> {
    let env = setup::run()?;
    run(cargo(&env).args(["build", "--release", "--package", "cgtrace", "--bins"]))?;
    let binary = root().join("target/release/cgtrace");
    let mut command = if is_root() {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(&binary);
        sudo
    };
    let trace = root().join("target/demo/cgtrace-demo.cgt");
    std::fs::create_dir_all(trace.parent().unwrap_or(&root()))?;
    run(command.arg("demo").arg("--record").arg(&trace))
}

fn bench(quick: bool) -> anyhow::Result<()> {
    let env = setup::run()?;
    setup::ensure_packages(is_root(), "the benchmarks", &setup::BENCH_PACKAGES)?;
    run(cargo(&env).args([
        "build",
        "--release",
        "--package",
        "cgtrace",
        "--package",
        "cgtrace-tests",
        "--bins",
    ]))?;
    let root = root();
    let measured = root.join("target/bench.md");
    let mut command = if is_root() {
        Command::new(root.join("target/release/cgtrace-bench"))
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(root.join("target/release/cgtrace-bench"));
        sudo
    };
    command
        .arg("--cgtrace")
        .arg(root.join("target/release/cgtrace"))
        .arg("--markdown")
        .arg(&measured);
    if quick {
        command.arg("--quick");
    }
    run(&mut command)?;
    if quick {
        eprintln!("xtask: --quick runs are a smoke test; BENCHMARKS.md is left as it is");
        return Ok(());
    }
    let body = std::fs::read_to_string(&measured).context("reading the benchmark's report")?;
    let text = format!(
        "# Benchmarks\n\nGenerated by `cargo xtask bench` (do not edit by hand) on {}: \
         Linux {}, {} CPUs ({}), {} of memory, cgroup {}; bpftrace {}.\n\n{body}",
        today(),
        read_trimmed("/proc/sys/kernel/osrelease"),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cpu_model(),
        memory_total(),
        cgroup_layout(),
        bpftrace_version(),
    );
    std::fs::write(root.join("BENCHMARKS.md"), text).context("writing BENCHMARKS.md")?;
    eprintln!("xtask: wrote BENCHMARKS.md");
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// `v1/v2 hybrid` when a cgroup2 mount sits beside v1 hierarchies.
fn cgroup_layout() -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let v1 = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup"));
    let v2 = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"));
    match (v1, v2) {
        (true, true) => "v1/v2 hybrid",
        (true, false) => "v1",
        (false, true) => "v2",
        (false, false) => "not mounted",
    }
    .to_owned()
}

fn bpftrace_version() -> String {
    Command::new("bpftrace")
        .arg("--version")
        .output()
        .map_or_else(
            |_| "?".to_owned(),
            |o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .trim_start_matches("bpftrace ")
                    .to_owned()
            },
        )
}

/// The number before `word` (" passed", " failed", ...) in the rest of a
/// libtest `test result: ` line; 0 when absent.
fn test_count(result: &str, word: &str) -> u64 {
    result
        .split(['.', ';'])
        .find_map(|part| part.trim().strip_suffix(word))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
}

fn memory_total() -> String {
    let kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!("{} GiB", (kb + (1 << 19)) >> 20)
}

fn today() -> String {
    let output = Command::new("date").args(["-u", "+%Y-%m-%d"]).output();
    output.map_or_else(
        |_| "?".to_owned(),
        |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::FailureCollector;

    #[test]
    fn failures_keep_the_test_name_and_its_first_lines() {
        let output = "\
running 2 tests
test oom::kill_reported ... FAILED
test oom::other ... ok

failures:

---- oom::kill_reported stdout ----

thread 'oom::kill_reported' panicked at tests/tests/oom.rs:10:5:
expected 1 kill, saw 0

failures:
    oom::kill_reported

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out
";
        let mut collector = FailureCollector::default();
        for line in output.lines() {
            collector.line(line);
        }
        collector.finish();
        assert_eq!(
            collector.done,
            [
                "oom::kill_reported\n    thread 'oom::kill_reported' panicked at tests/tests/oom.rs:10:5:\n    expected 1 kill, saw 0"
            ]
        );
    }
}
