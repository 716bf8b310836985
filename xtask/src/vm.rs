//! `cargo xtask vm-test [--kernel NAME|all]`: the integration tests on
//! other kernels, with pure cgroup v2 or pure v1, under QEMU.
//!
//! For each kernel of [`KERNELS`]: its Debian cloud kernel is fetched
//! (see [`kernels`](crate::kernels)); cgtrace and the integration tests are
//! built as static binaries; a busybox initramfs is packed with them and the
//! kernel's `brd` module (a RAM disk with ext2 on it, so the page-cache
//! tests read a real block filesystem, not tmpfs); `qemu-system-x86_64`
//! boots it with TCG (no KVM here), a few guests at once. The guest mounts
//! its cgroups (cgroup2 with `+memory +cpu`, or the v1 `memory` and
//! `cpu,cpuacct` hierarchies) and tracefs, prints `cgtrace check --json`,
//! runs every test binary and powers off; its serial console is parsed for
//! the results.
//!
//! To add a kernel, add one line to [`KERNELS`].

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub use crate::kernels::KERNELS;
use crate::{
    background::{IdleCpu, on_cpu},
    cargo,
    kernels::{self, Cgroups, Kernel, KernelFiles},
    phases::Phases,
    root, run,
    setup::BuildEnv,
    test_count,
};

/// The whole guest run, tests included, must end within this (a guest
/// takes 5 to 8 minutes here).
const GUEST_DEADLINE: Duration = Duration::from_mins(15);

/// The target the static binaries are built for.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// What one guest run found.
#[derive(Default)]
pub struct Outcome {
    pub kernel: String,
    /// The kernel's Debian package (none for the host).
    pub package: Option<String>,
    /// `cgtrace check --json` in the guest.
    pub check: Option<serde_json::Value>,
    pub passed: u64,
    pub failed: u64,
    /// Failed tests, by name.
    pub failures: Vec<String>,
    pub finished: bool,
    pub seconds: f64,
    /// Why the guest was booted a second time: its first boot stopped
    /// before the tests finished (the first boot's log is kept beside).
    pub retried: Option<String>,
    /// Lines still to echo after a `panicked at` line: the panic's message,
    /// which an `assert!` with a message prints on the lines that follow.
    pub(crate) message_lines_due: u8,
}

/// Suites the matrix leaves to the host unless named.
const HOST_ONLY: [&str; 1] = ["soak"];

/// Guests booted at once, unless `CGTRACE_VM_PARALLEL` says otherwise.
/// Two, of [`GUEST_CPUS`] each, on a 2-CPU machine: the CPUs are emulated
/// (no KVM here), so each guest's virtual CPU keeps a host CPU busy, and
/// two guests of one CPU took 891 s for the five kernels against 1,484 s
/// for one guest of two CPUs at a time. A machine with more CPUs can run
/// more.
const PARALLEL_GUESTS: usize = 2;

/// Virtual CPUs per guest, unless `CGTRACE_VM_CPUS` says otherwise. One: a
/// second virtual CPU mostly waits for a host CPU that the other guest
/// holds. A virtual CPU waiting so sees context switches late, which the
/// throttle model allows for (it counts the period timer's expiries a
/// throttle covers, not its length).
const GUEST_CPUS: usize = 1;

/// `name` from the environment as a number, or `default`.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Runs the matrix for `which` (`all` or a kernel name), with every test
/// suite or only those named in `suites`; `Ok` holds every kernel's
/// outcome, failing or not, in the matrix's order.
pub fn run_matrix(
    env: &BuildEnv,
    which: &str,
    suites: &[String],
    phases: &mut Phases,
) -> anyhow::Result<Vec<Outcome>> {
    let guests = phases.time("guests' build and kernels", || {
        prepare_matrix(env, which, suites, None)
    })?;
    phases.time("guests", || boot_matrix(&guests))
}

/// The guests of a matrix, ready to boot: each kernel fetched, with its
/// initramfs packed.
pub struct Guests {
    guests: Vec<(&'static Kernel, KernelFiles, PathBuf)>,
}

/// Builds the static binaries, fetches the kernels of `which` and packs
/// their initramfs images; the builds on idle CPU when `idle` is given
/// (the packing runs on the calling thread, at its priority).
pub fn prepare_matrix(
    env: &BuildEnv,
    which: &str,
    suites: &[String],
    idle: Option<&IdleCpu>,
) -> anyhow::Result<Guests> {
    let kernels: Vec<&'static Kernel> = KERNELS
        .iter()
        .filter(|k| which == "all" || k.name == which)
        .collect();
    if kernels.is_empty() {
        let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        bail!(
            "no kernel {which} in the matrix (have: {}, all)",
            names.join(", ")
        );
    }
    let mut binaries = build(env, idle)?;
    if suites.is_empty() {
        // The soak is endurance, not a kernel's features: the host runs it
        // (`--suite soak` runs it in a guest too).
        binaries
            .tests
            .retain(|test| !HOST_ONLY.contains(&suite_name(test).as_str()));
    } else {
        binaries
            .tests
            .retain(|test| suites.contains(&suite_name(test)));
        if binaries.tests.is_empty() {
            bail!("no test suite named {}", suites.join(", "));
        }
    }
    // Fetched one after another (one apt).
    let mut guests = Vec::new();
    for kernel in kernels {
        let files = kernels::fetch(kernel)?;
        let initramfs = pack(kernel, &files, &binaries)?;
        guests.push((kernel, files, initramfs));
    }
    Ok(Guests { guests })
}

/// Boots the guests, [`PARALLEL_GUESTS`] at a time; every kernel's
/// outcome, failing or not, in the matrix's order.
pub fn boot_matrix(guests: &Guests) -> anyhow::Result<Vec<Outcome>> {
    let guests = &guests.guests;
    let parallel = setting("CGTRACE_VM_PARALLEL", PARALLEL_GUESTS).clamp(1, guests.len());
    let next = AtomicUsize::new(0);
    let mut outcomes: Vec<Option<anyhow::Result<Outcome>>> = Vec::new();
    outcomes.resize_with(guests.len(), || None);
    let outcomes = Mutex::new(outcomes);
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| {
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some((kernel, files, initramfs)) = guests.get(at) else {
                        return;
                    };
                    let outcome = run_guest(kernel, files, initramfs);
                    outcomes.lock().unwrap_or_else(PoisonError::into_inner)[at] = Some(outcome);
                }
            });
        }
    });
    outcomes
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|outcome| outcome.context("a guest was never run")?)
        .collect()
}

/// Boots one guest, and once more if its first boot stopped early.
fn run_guest(kernel: &Kernel, files: &KernelFiles, initramfs: &Path) -> anyhow::Result<Outcome> {
    let mut outcome = boot(kernel, files, initramfs)?;
    if !outcome.finished {
        // Under emulation on a busy host a guest CPU can stall (QEMU's
        // TCG has no KVM to keep it scheduled). Boot once more; the
        // first boot stays on record, as the log and in the table.
        let why = first_boot_stop(&log_path(kernel));
        let kept = log_path(kernel).with_extension("first-boot.log");
        std::fs::rename(log_path(kernel), &kept)?;
        eprintln!(
            "xtask: Linux {}: booting again ({why}; the first boot's log is {})",
            kernel.name,
            kept.display()
        );
        outcome = boot(kernel, files, initramfs)?;
        outcome.retried = Some(why);
    }
    Ok(outcome)
}

/// A guest's console log.
fn log_path(kernel: &Kernel) -> PathBuf {
    root()
        .join("target/vm")
        .join(format!("{}.log", kernel.name))
}

/// Why a boot stopped early, from its log: the kernel's panic or stall
/// line, else the test binary it was in.
fn first_boot_stop(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let binary = text
        .lines()
        .rev()
        .find_map(|line| line.split_once("== binary ").map(|(_, name)| name))
        .unwrap_or("boot");
    let kernel = text.lines().find_map(|line| {
        [
            "Kernel panic",
            "self-detected stall",
            "soft lockup",
            "== stuck",
        ]
        .iter()
        .any(|mark| line.contains(mark))
        .then(|| line.split_once("] ").map_or(line, |(_, rest)| rest).trim())
    });
    match kernel {
        Some(what) => format!("the first boot stopped in {binary}: {what}"),
        None => format!("the first boot stopped in {binary}"),
    }
}

/// The static cgtrace and integration-test binaries.
struct Binaries {
    cgtrace: PathBuf,
    tests: Vec<PathBuf>,
}

/// Static binaries, built apart from the host's (`target/vm`), without
/// debug info (the initramfs is held in the guest's memory).
const STATIC_ARGS: [&str; 4] = ["--target", TARGET, "--target-dir", "target/vm"];
const STATIC_RUSTFLAGS: (&str, &str) = (
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    "-C target-feature=+crt-static -C debuginfo=0",
);

/// The static release cgtrace (the guests' and `cargo xtask dist`'s).
pub fn static_cgtrace(env: &BuildEnv) -> anyhow::Result<PathBuf> {
    static_cgtrace_on(env, None)
}

fn static_cgtrace_on(env: &BuildEnv, idle: Option<&IdleCpu>) -> anyhow::Result<PathBuf> {
    let mut command = cargo(env);
    command
        .args([
            "build",
            "--release",
            "--package",
            "cgtrace",
            "--bin",
            "cgtrace",
        ])
        .args(STATIC_ARGS)
        .env(STATIC_RUSTFLAGS.0, STATIC_RUSTFLAGS.1);
    run(&mut on_cpu(command, idle))?;
    Ok(static_cgtrace_path())
}

/// Where [`static_cgtrace`] puts the binary.
pub fn static_cgtrace_path() -> PathBuf {
    root()
        .join("target/vm")
        .join(TARGET)
        .join("release/cgtrace")
}

fn build(env: &BuildEnv, idle: Option<&IdleCpu>) -> anyhow::Result<Binaries> {
    let cgtrace = static_cgtrace_on(env, idle)?;
    let mut tests = cargo(env);
    tests
        .args([
            "test",
            "--no-run",
            "--message-format=json",
            "--package",
            "cgtrace-tests",
        ])
        .args(STATIC_ARGS)
        .env(STATIC_RUSTFLAGS.0, STATIC_RUSTFLAGS.1);
    let mut tests = on_cpu(tests, idle);
    eprintln!("xtask: running {tests:?}");
    let output = tests.stderr(Stdio::inherit()).output()?;
    if !output.status.success() {
        bail!("building the integration tests for the guest failed");
    }
    let mut test_binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        if let (true, Some(executable)) = (is_test, message["executable"].as_str()) {
            test_binaries.push(PathBuf::from(executable));
        }
    }
    if test_binaries.is_empty() {
        bail!("cargo built no integration test binaries");
    }
    Ok(Binaries {
        cgtrace,
        tests: test_binaries,
    })
}

/// The guest's `/init`: mounts, a RAM-disk filesystem for the page-cache
/// tests, the cgroups ([`CGROUP_V2`] or [`CGROUP_V1`] before this), then
/// the tests; every line the host parses starts with `== `.
const INIT_HEAD: &str = r"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs nodev /sys/kernel/tracing
mount -t tmpfs tmp /tmp
ip link set lo up
[ -f /lib/brd.ko ] && insmod /lib/brd.ko rd_nr=1 rd_size=1048576
mke2fs -q /dev/ram0 >/dev/null 2>&1 && mount -t ext2 /dev/ram0 /var/tmp
";

/// cgroup2 alone, with the memory and cpu controllers delegated.
const CGROUP_V2: &str = r#"mount -t cgroup2 none /sys/fs/cgroup
echo "+memory +cpu" > /sys/fs/cgroup/cgroup.subtree_control
"#;

/// The v1 hierarchies as systemd mounts them on a legacy node, and no
/// cgroup2 at all. systemd also turns on hierarchical memory accounting
/// (off by default before 5.16: a parent's limit would not cover its
/// children).
const CGROUP_V1: &str = r"mount -t tmpfs cgroup /sys/fs/cgroup
mkdir /sys/fs/cgroup/memory /sys/fs/cgroup/cpu,cpuacct
mount -t cgroup -o memory memory /sys/fs/cgroup/memory
mount -t cgroup -o cpu,cpuacct cpu,cpuacct /sys/fs/cgroup/cpu,cpuacct
ln -s cpu,cpuacct /sys/fs/cgroup/cpu
ln -s cpu,cpuacct /sys/fs/cgroup/cpuacct
echo 1 > /sys/fs/cgroup/memory/memory.use_hierarchy
";

/// The tests, after the mounts.
const INIT: &str = r#"echo "== guest $(uname -r)"
echo "== check $(cgtrace check --json | tr -d '\n')"
export CGTRACE_BIN=/bin/cgtrace CGTRACE_SKIP_BROWSER=1
echo 1 > /proc/sys/kernel/sysrq
failed=0
# Runs one test binary (NAME, then the command). One that is still running
# after 300 s is stuck: the kernel's blocked tasks and every CPU's stack go
# to the console, and it is killed, so the others still run.
run() {
  name=$1; shift
  echo "== binary $name"
  "$@" &
  pid=$!
  ( i=0
    while kill -0 $pid 2>/dev/null; do
      i=$((i+1))
      if [ $i -ge 300 ]; then
        echo "== stuck $name: blocked tasks and CPU stacks follow"
        echo w > /proc/sysrq-trigger; echo l > /proc/sysrq-trigger
        kill -9 $pid
      fi
      sleep 1
    done ) &
  wait $pid || failed=$((failed+1))
}
for t in /tests/*; do
  run "${t##*/}" $t --test-threads=1
done
# The suites above ran the best variant (fentry here); these again with tp_btf.
for t in oom throttle; do
  [ -x /tests/$t ] || continue
  run "$t (tp_btf variants)" env CGTRACE_TEST_VARIANT=tp-btf /tests/$t --test-threads=1
done
echo "== exit $failed"
poweroff -f
"#;

/// A test binary's suite: `cache-50e6…` → `cache` (the guest prints it).
fn suite_name(test: &Path) -> String {
    let name = test
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    name.split('-').next().unwrap_or(&name).to_owned()
}

/// Packs the initramfs (an uncompressed newc cpio archive, which every
/// kernel unpacks) for `kernel`.
fn pack(kernel: &Kernel, files: &KernelFiles, binaries: &Binaries) -> anyhow::Result<PathBuf> {
    let cgroups = match kernel.cgroups {
        Cgroups::V2 => CGROUP_V2,
        Cgroups::V1 => CGROUP_V1,
    };
    let init = format!("{INIT_HEAD}{cgroups}{INIT}");
    let mut archive = Cpio::default();
    for dir in [
        "bin", "lib", "proc", "sys", "dev", "tmp", "var", "var/tmp", "tests",
    ] {
        archive.dir(dir);
    }
    archive.file("init", 0o755, init.as_bytes());
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox is not installed (apt-get install busybox-static)")?;
    archive.file("bin/busybox", 0o755, &std::fs::read(busybox)?);
    let applets = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" {
            archive.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    archive.file("bin/cgtrace", 0o755, &std::fs::read(&binaries.cgtrace)?);
    for test in &binaries.tests {
        let suite = suite_name(test);
        archive.file(&format!("tests/{suite}"), 0o755, &std::fs::read(test)?);
    }
    if let Some(brd) = &files.brd {
        archive.file("lib/brd.ko", 0o644, &module(brd)?);
    }
    let path = root()
        .join("target/vm")
        .join(format!("initramfs-{}.cpio", kernel.name));
    std::fs::write(&path, archive.finish())?;
    Ok(path)
}

/// A kernel module's bytes, decompressed (Debian ships `.ko.xz`, newer
/// kernels may ship `.ko.zst`).
fn module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let decompressor = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        _ => return Ok(std::fs::read(path)?),
    };
    let output = Command::new(decompressor).arg("-dc").arg(path).output()?;
    if !output.status.success() {
        bail!("cannot decompress {}", path.display());
    }
    Ok(output.stdout)
}

/// A newc-format cpio archive, built in memory.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | permissions, data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, target.as_bytes());
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            let _ = write!(self.bytes, "{field:08x}");
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

/// Boots the guest and follows its console; the log is kept in
/// `target/vm/<kernel>.log`.
fn boot(kernel: &Kernel, files: &KernelFiles, initramfs: &Path) -> anyhow::Result<Outcome> {
    let log_path = log_path(kernel);
    let mut log = std::fs::File::create(&log_path)?;
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-accel", "tcg", "-m", "4G", "-nographic", "-no-reboot"])
        .args([
            "-smp",
            &setting("CGTRACE_VM_CPUS", GUEST_CPUS).max(1).to_string(),
        ])
        .arg("-kernel")
        .arg(&files.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        // A CPU stalled or locked up panics the guest at once (the stall
        // report is on the console), rather than leaving it wedged until
        // the deadline.
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 softlockup_panic=1 sysctl.kernel.panic_on_rcu_stall=1 \
             brd.rd_nr=1 brd.rd_size=1048576",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!(
        "xtask: booting Linux {} ({}, {}) under QEMU",
        kernel.name,
        files.package,
        kernel.cgroups.describe()
    );
    let started = Instant::now();
    let mut child = command
        .spawn()
        .context("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let pid = child.id();
    // The deadline: a hung guest is killed rather than waited for.
    let watchdog = std::thread::spawn(move || {
        let until = Instant::now() + GUEST_DEADLINE;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_secs(1));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let mut outcome = Outcome {
        kernel: kernel.name.to_owned(),
        package: Some(files.package.clone()),
        ..Outcome::default()
    };
    let stdout = child.stdout.take().context("qemu's console")?;
    for line in BufReader::new(stdout).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).trim_end().to_owned();
        writeln!(log, "{line}")?;
        read_console_line(&line, kernel.name, &mut outcome);
    }
    child.wait()?;
    let _ = watchdog.join();
    outcome.seconds = started.elapsed().as_secs_f64();
    if !outcome.finished {
        eprintln!(
            "xtask: Linux {}: the guest stopped before the tests finished; see {}",
            kernel.name,
            log_path.display()
        );
    }
    Ok(outcome)
}

/// Takes in one console line: echoes the interesting ones and adds up results.
fn read_console_line(line: &str, kernel: &str, outcome: &mut Outcome) {
    // The console mixes in terminal escapes; the markers follow them.
    let plain = strip_escapes(line);
    let text = plain.trim();
    if let Some(json) = text.strip_prefix("== check ") {
        outcome.check = serde_json::from_str(json).ok();
    } else if let Some(marker) = text.strip_prefix("== ") {
        eprintln!("[{kernel}] {marker}");
    } else if let Some(result) = text.strip_prefix("test result: ") {
        outcome.passed += test_count(result, " passed");
        outcome.failed += test_count(result, " failed");
        eprintln!("[{kernel}] test result: {result}");
    } else if let Some(name) = text
        .strip_prefix("test ")
        .and_then(|rest| rest.split_once(" ... FAILED"))
        .map(|(name, _)| name)
    {
        outcome.failures.push(name.to_owned());
        eprintln!("[{kernel}] FAILED {name}");
    } else if is_failure_detail(text) {
        // Why a test failed, so that a CI log alone can tell.
        eprintln!("[{kernel}]   {text}");
        if text.contains("panicked at") {
            outcome.message_lines_due = PANIC_MESSAGE_LINES;
        }
    } else if outcome.message_lines_due > 0 {
        if text.is_empty() || text.starts_with("note:") {
            outcome.message_lines_due = 0;
        } else {
            outcome.message_lines_due -= 1;
            eprintln!("[{kernel}]   {text}");
        }
    }
    if text.starts_with("== exit ") {
        outcome.finished = true;
    }
}

/// How many lines of a panic's message are echoed at most.
const PANIC_MESSAGE_LINES: u8 = 4;

/// A line of a failing test's panic report: where, what, and the values.
fn is_failure_detail(text: &str) -> bool {
    text.contains("panicked at")
        || text.starts_with("assertion")
        || text.starts_with("left:")
        || text.starts_with("right:")
}

/// `line` without ANSI escape sequences (CSI `ESC [ … final`) and carriage
/// returns.
fn strip_escapes(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => plain.push(c),
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_markers_are_read_through_escapes() {
        let mut outcome = Outcome::default();
        read_console_line("\u{1b}[0m\u{1b}[1;32m== exit 0\r", "6.1", &mut outcome);
        assert!(outcome.finished);
        read_console_line(
            "test result: ok. 3 passed; 1 failed; 0 ignored",
            "6.1",
            &mut outcome,
        );
        assert_eq!((outcome.passed, outcome.failed), (3, 1));
    }

    #[test]
    fn an_assertion_message_is_not_a_marker() {
        let mut outcome = Outcome::default();
        read_console_line(
            "assertion `left == right` failed: peak",
            "6.1",
            &mut outcome,
        );
        assert!(!outcome.finished);
        assert!(is_failure_detail("assertion `left == right` failed: peak"));
        assert!(is_failure_detail("left: Some(1)"));
    }

    #[test]
    fn a_panic_message_after_its_location_is_echoed() {
        let mut outcome = Outcome::default();
        read_console_line(
            "thread 't' panicked at tests/tests/record.rs:113:5:",
            "6.12",
            &mut outcome,
        );
        assert_eq!(outcome.message_lines_due, PANIC_MESSAGE_LINES);
        read_console_line("replayed 90, reported 86", "6.12", &mut outcome);
        assert_eq!(outcome.message_lines_due, PANIC_MESSAGE_LINES - 1);
        read_console_line("note: run with `RUST_BACKTRACE=1`", "6.12", &mut outcome);
        assert_eq!(outcome.message_lines_due, 0);
    }
}
