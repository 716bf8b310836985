//! Helpers for cgtrace's integration tests: root checks, the cgtrace binary,
//! workloads in scratch cgroups, and a `cgtrace oom --follow --json` runner.
//! Every helper that starts something stops it on drop, so a failing test
//! leaves no process or cgroup behind.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

pub mod agent;
pub mod http;
pub mod manifests;
pub mod runtime;

pub use cgtrace::{
    cgroup::{Hierarchies, scratch::ScratchCgroup},
    workload::UncachedFile,
};

/// Generous upper bound for anything the kernel should do in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Whether the test can run; prints why it is skipped when it cannot.
#[must_use]
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped {test}: needs root (real eBPF programs and cgroups)");
    }
    root
}

/// The cgtrace binary: `$CGTRACE_BIN` (set by `cargo xtask test`), else the
/// one cargo built next to this test executable.
#[must_use]
pub fn cgtrace_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CGTRACE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/cgtrace
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("cgtrace"))
        .expect("target directory layout")
}

/// The top-level cgroups whose names start with `prefix`, in every
/// hierarchy, left behind by a cgtrace process killed with SIGKILL (it
/// cannot remove them itself): their processes killed and the cgroups
/// removed on drop.
pub struct KilledLeftovers {
    prefix: String,
}

impl KilledLeftovers {
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
}

impl Drop for KilledLeftovers {
    fn drop(&mut self) {
        let Ok(hierarchies) = Hierarchies::discover() else {
            return;
        };
        for hierarchy in &hierarchies.list {
            let Ok(entries) = std::fs::read_dir(&hierarchy.mount) else {
                continue;
            };
            let dirs: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&self.prefix))
                .map(|e| e.path())
                .collect();
            for dir in dirs {
                let deadline = Instant::now() + Duration::from_secs(10);
                while dir.exists() && Instant::now() < deadline {
                    let procs =
                        std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    if std::fs::remove_dir(&dir).is_err() {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}

/// A scratch memory cgroup named for the test, limited to `limit` bytes.
#[must_use]
pub fn scratch(test: &str, limit: Option<u64>) -> ScratchCgroup {
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    let name = format!("cgtrace-test-{test}-{}", std::process::id());
    let cgroup = ScratchCgroup::create(&hierarchies, &name).expect("create scratch cgroup");
    if let Some(limit) = limit {
        cgroup.set_memory_limit(limit).expect("set memory limit");
    }
    cgroup
}

/// A child process killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.0.wait().expect("wait for child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cgtrace __memhog MIB` inside `cgroup`.
#[must_use]
pub fn memhog(cgroup: &ScratchCgroup, mebibytes: u32) -> ChildGuard {
    let mut command = Command::new(cgtrace_bin());
    command
        .args(["__memhog", &mebibytes.to_string()])
        .stdout(Stdio::null());
    ChildGuard(cgroup.spawn_into(&mut command).expect("start memhog"))
}

/// Polls `condition` until it holds or the deadline passes.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `probe` gives `want`; on timeout, says what it gave last.
pub fn wait_for<T: PartialEq + std::fmt::Debug>(
    what: &str,
    want: &T,
    mut probe: impl FnMut() -> Option<T>,
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let seen = probe();
        if seen.as_ref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: want {want:?}, last seen {seen:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `cgtrace oom --follow --json` in the background, its stdout lines
/// parsed as they come.
pub struct Follower {
    child: ChildGuard,
    lines: Receiver<serde_json::Value>,
    /// Every JSON line received so far.
    pub seen: Vec<serde_json::Value>,
    stderr: Receiver<String>,
}

impl Follower {
    /// Starts the follower and waits until its probe is attached.
    #[must_use]
    pub fn start(extra: &[&str]) -> Self {
        let mut command = Command::new(cgtrace_bin());
        command.args(["oom", "--follow", "--json"]).args(extra);
        Self::spawn(&mut command, None)
    }

    /// Starts `command` (a `cgtrace oom --follow --json`, perhaps behind
    /// `setpriv` or `unshare`), in `cgroup` if given, and waits until its
    /// probe is attached.
    #[must_use]
    pub fn spawn(command: &mut Command, cgroup: Option<&ScratchCgroup>) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match cgroup {
            Some(cgroup) => cgroup
                .spawn_into(command)
                .expect("start cgtrace oom --follow"),
            None => command.spawn().expect("start cgtrace oom --follow"),
        };
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (line_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("cgtrace printed a non-JSON line {line:?}: {e}"));
                if line_tx.send(value).is_err() {
                    break;
                }
            }
        });
        let (err_tx, stderr_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let follower = Self {
            child: ChildGuard(child),
            lines,
            seen: Vec::new(),
            stderr: stderr_lines,
        };
        // The feature line on stderr is printed once the probe is attached.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match follower.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with("cgtrace: oom:") => break,
                Ok(line) => eprintln!("cgtrace stderr: {line}"),
                Err(e) => panic!("cgtrace oom --follow did not attach: {e}"),
            }
        }
        follower
    }

    /// The process id (of cgtrace itself, when a wrapper exec'd it).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Waits for a stderr line starting with `prefix`; returns it.
    pub fn stderr_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line starting {prefix:?}: {e}"),
            }
        }
    }

    /// Waits for a JSON line matching `predicate`; returns it.
    pub fn wait_for(
        &mut self,
        what: &str,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(found) = self.seen.iter().find(|v| predicate(v)) {
            return found.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) => {
                    self.seen.push(value.clone());
                    if predicate(&value) {
                        return value;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("timed out waiting for {what}; saw {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "cgtrace exited while waiting for {what}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Sends SIGINT, collects the remaining lines and the exit status.
    #[must_use]
    pub fn interrupt(mut self) -> (ExitStatus, Vec<serde_json::Value>, Vec<String>) {
        let pid = libc::pid_t::try_from(self.child.pid()).expect("pid fits");
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = self.child.wait();
        // The reader threads end at EOF, which closes the channels.
        self.seen.extend(self.lines.iter());
        let stderr = self.stderr.iter().collect();
        (status, std::mem::take(&mut self.seen), stderr)
    }
}

/// A test file outside the page cache (see [`cgtrace::workload::UncachedFile`]).
#[must_use]
pub fn uncached_file(test: &str, mebibytes: usize) -> UncachedFile {
    UncachedFile::create(&format!("cgtrace-test-{test}"), mebibytes).expect("create test file")
}

/// Whether the running kernel is older than `major.minor`.
#[must_use]
pub fn kernel_before(major: u32, minor: u32) -> bool {
    cgtrace::system::kernel_version(&cgtrace::system::kernel_release()) < (major, minor)
}

/// Bytes past its end that reading a file to its end adds to the page
/// cache: a page on 5.10, whose buffered read looked up (and so added) the
/// page at the end before checking the file's size; none on the later
/// kernels of the matrix (6.1 on), which check first. Taken as before 5.11.
/// cgtrace counts that page as the kernel adds and removes it.
#[must_use]
pub fn page_past_eof() -> u64 {
    if kernel_before(5, 11) {
        1 << cgtrace::probe::offsets::page_shift()
    } else {
        0
    }
}

/// Runs `cat FILE...` inside `cgroup` to completion.
pub fn read_in(cgroup: &ScratchCgroup, files: &[&std::path::Path]) {
    let (status, _) = cgtrace::workload::read_in(cgroup, files).expect("run cat");
    assert!(status.success(), "cat failed: {status}");
}

/// A `cgtrace VIEW --json ...` run in the background: started, waited for
/// until its stderr says it is attached, then interrupted with SIGINT and
/// its JSON lines parsed. Killed on drop if a failing test never got that
/// far, so no view outlives its test.
pub struct View {
    child: Option<Child>,
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl View {
    /// Starts `cgtrace ARGS` and waits for a stderr line starting with `ready`.
    #[must_use]
    pub fn start(args: &[&str], ready: &str) -> Self {
        let mut child = Command::new(cgtrace_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cgtrace");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        loop {
            line.clear();
            let read = stderr.read_line(&mut line).expect("read cgtrace's stderr");
            assert!(read > 0, "cgtrace {args:?} exited before saying {ready:?}");
            if line.starts_with(ready) {
                break;
            }
        }
        // Keep draining stderr so cgtrace never blocks on it.
        thread::spawn(move || stderr.lines().for_each(drop));
        Self { child: Some(child) }
    }

    /// Sends SIGINT; returns the exit status and stdout's bytes as written.
    #[must_use]
    pub fn interrupt_raw(self) -> (ExitStatus, Vec<u8>) {
        let output = self.interrupt_output();
        (output.status, output.stdout)
    }

    /// SIGINT, then everything it wrote on stdout and how it ended.
    fn interrupt_output(mut self) -> std::process::Output {
        let child = self.child.take().expect("a running view");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGINT) };
        child.wait_with_output().expect("wait for cgtrace")
    }

    /// Sends SIGINT; returns the exit status and the JSON lines printed.
    #[must_use]
    pub fn interrupt(self) -> (ExitStatus, Vec<serde_json::Value>) {
        let output = self.interrupt_output();
        let lines = String::from_utf8(output.stdout)
            .expect("UTF-8 output")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect();
        (output.status, lines)
    }
}

/// The row for `cgroup` in a report's `cgroups` array.
#[must_use]
pub fn row_for<'a>(report: &'a serde_json::Value, cgroup: &str) -> &'a serde_json::Value {
    report["cgroups"]
        .as_array()
        .and_then(|rows| rows.iter().find(|c| c["cgroup"] == cgroup))
        .unwrap_or_else(|| panic!("no row for {cgroup}: {report}"))
}

/// A trace file path for a test, removed on drop (even when the test fails).
pub struct TracePath(std::path::PathBuf);

impl std::ops::Deref for TracePath {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TracePath {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TracePath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TracePath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[must_use]
pub fn trace_path(test: &str) -> TracePath {
    TracePath(std::env::temp_dir().join(format!("cgtrace-test-{test}-{}.cgt", std::process::id())))
}

/// Runs `cgtrace ARGS`, which must succeed, and parses its JSON lines.
#[must_use]
pub fn json_lines(args: &[&std::ffi::OsStr]) -> Vec<serde_json::Value> {
    let output = Command::new(cgtrace_bin()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `cgtrace report FILE --json`, which must succeed.
#[must_use]
pub fn report_json(path: &std::path::Path) -> serde_json::Value {
    let output = Command::new(cgtrace_bin())
        .arg("report")
        .arg(path)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Probe options for a test, with the probe variants `CGTRACE_TEST_VARIANT`
/// asks for: `fentry` or `tp-btf` (unset: the best the kernel allows). The
/// kernel matrix runs the OOM and throttle suites once per variant, so both
/// are exercised where fentry works.
#[must_use]
pub fn probe_options(features: cgtrace::probe::FeatureSet) -> cgtrace::probe::ProbeOptions {
    use cgtrace::probe::{OomVariant, ProbeOptions, ThrottleVariant};
    let (oom_variant, throttle_variant) = match std::env::var("CGTRACE_TEST_VARIANT").as_deref() {
        Ok("fentry") => (OomVariant::Fentry, ThrottleVariant::Fentry),
        Ok("tp-btf") => (OomVariant::TpBtf, ThrottleVariant::SchedSwitch),
        Ok(other) if !other.is_empty() => {
            panic!("CGTRACE_TEST_VARIANT={other}: use fentry or tp-btf")
        }
        _ => (OomVariant::Auto, ThrottleVariant::Auto),
    };
    ProbeOptions {
        features,
        oom_variant,
        throttle_variant,
        ..ProbeOptions::default()
    }
}

/// Makes `command` run as `uid` (and group `uid`, no supplementary
/// groups) with only `capabilities` (their numbers), as ambient
/// capabilities: a non-root user given just those, as
/// `setpriv --reuid --ambient-caps` would.
pub fn as_user_with_capabilities(command: &mut Command, uid: u32, capabilities: &[u32]) {
    use std::os::unix::process::CommandExt as _;
    let mut wanted = [0_u32; 2];
    for cap in capabilities {
        wanted[(cap / 32) as usize] |= 1 << (cap % 32);
    }
    let capabilities = capabilities.to_vec();
    // SAFETY: the closure makes system calls only (no allocation, no
    // locks), as is required between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let check = |result: libc::c_long| {
                if result < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::syscall(
                libc::SYS_setgroups,
                0,
                std::ptr::null::<libc::gid_t>(),
            ))?;
            check(libc::syscall(libc::SYS_setresgid, uid, uid, uid))?;
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0).into())?;
            check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
            // struct __user_cap_header_struct and two __user_cap_data_struct.
            let header: [u32; 2] = [0x2008_0522, 0];
            let data: [u32; 6] = [
                wanted[0], wanted[0], wanted[0], wanted[1], wanted[1], wanted[1],
            ];
            check(libc::syscall(
                libc::SYS_capset,
                header.as_ptr(),
                data.as_ptr(),
            ))?;
            for cap in &capabilities {
                check(
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        libc::c_ulong::from(*cap),
                        0,
                        0,
                    )
                    .into(),
                )?;
            }
            Ok(())
        });
    }
}

/// A process's capability sets and ids, from `/proc/PID/status`.
#[must_use]
pub fn process_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim_start_matches(':').trim().to_owned())
        })
        .unwrap_or_default()
}

/// `promtool check metrics` (Debian's `prometheus`) finds nothing wrong
/// with a scrape in the Prometheus text format. Skipped where it is not
/// installed: the kernel-matrix guests.
pub fn promtool_accepts(text: &str) {
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CGTRACE_SKIP_BROWSER").is_some(),
            "promtool is not installed: `cargo xtask test` installs it (apt-get install prometheus)"
        );
        return;
    };
    promtool
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("run promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    #[must_use]
    pub fn mount(dir: &std::path::Path, size: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
