//! A tracer running in the background for one measurement: a `cgtrace`
//! view or a bpftrace script. Started, timed until it says its probes are
//! attached, stopped with SIGINT as a user would, and reaped with `wait4`
//! for its CPU time and peak RSS as the kernel counted them.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

/// How long a tracer may take to attach before the benchmark gives up.
const START_TIMEOUT: Duration = Duration::from_mins(1);

/// Which output stream carries a tracer's "attached" line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How to start a tracer and recognise that it is attached.
#[derive(Clone, Debug)]
pub struct TracerSpec {
    pub label: String,
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    /// The stream and line prefix printed once every probe is attached.
    pub ready: (Stream, String),
}

impl TracerSpec {
    /// `cgtrace VIEW --json ARGS...`: every view prints one `cgtrace: FEATURE`
    /// line per feature on stderr after `Probe::load` has attached them all.
    pub fn cgtrace(cgtrace: &Path, view: &'static str, extra: &[&str]) -> Self {
        let mut args = vec![view.to_owned(), "--json".to_owned()];
        args.extend(extra.iter().map(|&a| a.to_owned()));
        Self {
            label: format!("cgtrace {view}"),
            program: cgtrace.to_owned(),
            args,
            ready: (Stream::Stderr, "cgtrace: cgroup names:".to_owned()),
        }
    }

    /// `bpftrace -e SCRIPT`; the script's `BEGIN` prints `ready`, which
    /// bpftrace runs after attaching every other probe.
    pub fn bpftrace(script: &str) -> Self {
        Self {
            label: "bpftrace".to_owned(),
            program: "bpftrace".into(),
            args: vec!["-e".to_owned(), script.to_owned()],
            ready: (Stream::Stdout, "ready".to_owned()),
        }
    }
}

/// What a stopped tracer used and said.
#[derive(Clone, Debug)]
pub struct Finished {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size of the tracer's own image (`VmHWM`, read
    /// just before stopping it). `wait4`'s `ru_maxrss` will not do: a child
    /// started with vfork counts its parent's memory until it execs.
    pub max_rss_kib: u64,
    /// The last `{"type":"stats",...}` record a cgtrace view printed.
    pub stats: Option<serde_json::Value>,
    /// `oom_kill` records it printed from the live probe (not the log).
    pub live_oom_kills: u64,
}

impl Finished {
    /// A probe counter from the final stats record (0 when absent).
    pub fn probe_counter(&self, name: &str) -> u64 {
        self.stats
            .as_ref()
            .and_then(|s| s["probe"][name].as_u64())
            .unwrap_or(0)
    }
}

pub struct Tracer {
    child: Child,
    reaped: bool,
    /// From spawning the process until its "attached" line.
    pub startup: Duration,
    last_stats: Arc<Mutex<Option<serde_json::Value>>>,
    live_oom_kills: Arc<std::sync::atomic::AtomicU64>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Tracer {
    pub fn start(spec: &TracerSpec) -> Self {
        let started = Instant::now();
        let mut child = Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", spec.program.display()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let last_stats = Arc::new(Mutex::new(None));
        let live_oom_kills = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut readers = Vec::new();
        let streams: [(Stream, Box<dyn Read + Send>); 2] = [
            (
                Stream::Stdout,
                Box::new(child.stdout.take().expect("stdout")),
            ),
            (
                Stream::Stderr,
                Box::new(child.stderr.take().expect("stderr")),
            ),
        ];
        for (stream, reader) in streams {
            let marker = (spec.ready.0 == stream).then(|| spec.ready.1.clone());
            let ready_tx = ready_tx.clone();
            let seen = Seen {
                last_stats: Arc::clone(&last_stats),
                live_oom_kills: Arc::clone(&live_oom_kills),
            };
            readers.push(std::thread::spawn(move || {
                drain(reader, marker.as_deref(), &ready_tx, &seen);
            }));
        }
        let mut tracer = Self {
            child,
            reaped: false,
            startup: Duration::ZERO,
            last_stats,
            live_oom_kills,
            readers,
        };
        if ready_rx.recv_timeout(START_TIMEOUT).is_err() {
            let (status, _) = tracer.reap();
            panic!(
                "{} did not attach within {START_TIMEOUT:?} (wait status {status:#x})",
                spec.label
            );
        }
        tracer.startup = started.elapsed();
        tracer
    }

    /// Stops the tracer with SIGINT and reaps it.
    pub fn stop(mut self) -> Finished {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        let max_rss_kib = peak_rss_kib(pid);
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let (status, usage) = self.reap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the tracer exited with wait status {status:#x}"
        );
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
        Finished {
            cpu,
            max_rss_kib,
            stats: self.last_stats.lock().expect("stats lock").take(),
            live_oom_kills: self
                .live_oom_kills
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn reap(&mut self) -> (libc::c_int, libc::rusage) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: status and usage are valid for writes.
            let rc = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
            if rc == pid
                || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break;
            }
        }
        self.reaped = true;
        (status, usage)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.reap();
        }
    }
}

/// `VmHWM` of a running process, in KiB (0 when unreadable).
fn peak_rss_kib(pid: libc::pid_t) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmHWM:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

/// What a reader thread keeps from the JSON lines it sees.
struct Seen {
    last_stats: Arc<Mutex<Option<serde_json::Value>>>,
    live_oom_kills: Arc<std::sync::atomic::AtomicU64>,
}

/// Reads a stream to its end, so the tracer never blocks on a full pipe;
/// signals the "attached" line, keeps the last stats record and counts
/// live OOM kills.
fn drain(
    reader: Box<dyn Read + Send>,
    marker: Option<&str>,
    ready: &mpsc::Sender<()>,
    seen: &Seen,
) {
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    let mut signalled = false;
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if !signalled && marker.is_some_and(|m| line.trim_start().starts_with(m)) {
            let _ = ready.send(());
            signalled = true;
        }
        if line.starts_with("{\"")
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
        {
            if value["type"] == "stats" {
                *seen.last_stats.lock().expect("stats lock") = Some(value);
            } else if value["type"] == "oom_kill" && value["source"] != "kernel_log" {
                seen.live_oom_kills
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        line.clear();
    }
}
