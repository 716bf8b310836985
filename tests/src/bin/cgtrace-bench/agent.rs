//! What `cgtrace serve` costs on a node with many containers: its CPU while
//! nothing happens, the time one scrape takes, its peak RSS, and whether the
//! series cap holds, with 1,000 and 10,000 containers' scratch cgroups, each
//! under a CFS quota and a memory limit (a container runtime gives every
//! container both: serve reads each one's `cpu.stat` every interval and its
//! memory files every sweep).

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use cgtrace::cgroup::{Hierarchies, scratch::ScratchCgroup};

use crate::{Options, footprint::mb, stats::Summary};

/// One serve run's figures.
pub struct AgentRun {
    pub cgroups: usize,
    pub max_series: usize,
    /// CPU time over the idle window, as a share of one core.
    pub idle_cpu_share: f64,
    pub scrape_ms: Summary,
    pub scrape_bytes: usize,
    pub series: u64,
    pub series_dropped: u64,
    pub peak_rss_kib: u64,
}

/// `count` containers' cgroups: in the cpu hierarchy with a quota of half
/// a core each, and in the memory hierarchy with a limit of 64 MiB each
/// (on cgroup v2, one tree holds both sets), under parents removed (with
/// them) on drop.
pub fn container_cgroups(count: usize) -> [ScratchCgroup; 2] {
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    let parent = |controller| {
        let name = format!("cgtrace-bench-agent-{controller}-{}", std::process::id());
        ScratchCgroup::create_for(&hierarchies, controller, &name).expect("a scratch cgroup")
    };
    let (mut cpu, mut memory) = (parent("cpu"), parent("memory"));
    for i in 0..count {
        let child = cpu.child(&format!("c{i}")).expect("a child cgroup");
        child.set_cpu_quota(50_000, 100_000).expect("a quota");
        let child = memory.child(&format!("c{i}")).expect("a child cgroup");
        child.set_memory_limit(64 << 20).expect("a limit");
    }
    [cpu, memory]
}

/// `GET /metrics`: the response and how long it took.
fn scrape(port: u16) -> Option<(String, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some((response, started.elapsed()))
}

/// The value of the sample line `name` in a scrape.
fn sample(port: u16, name: &str) -> Option<u64> {
    scrape(port)?
        .0
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// User + system CPU time of `pid` so far, and its peak RSS.
pub fn usage(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (
        Duration::from_millis(ticks * 1000 / per_second.max(1)),
        peak,
    )
}

/// Runs `cgtrace serve` beside `cgroups` quota'd cgroups.
fn run(options: &Options, cgroups: usize, max_series: usize, idle: Duration) -> AgentRun {
    let cgroups_made = container_cgroups(cgroups);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut serve: Child = Command::new(&options.cgtrace)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--max-series", &max_series.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cgtrace serve");
    let deadline = Instant::now() + Duration::from_mins(1);
    while sample(port, "cgtrace_series").is_none() {
        assert!(Instant::now() < deadline, "serve did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The first interval reads every cgroup's quota; idle is what follows.
    std::thread::sleep(Duration::from_secs(12));
    let (before, _) = usage(serve.id());
    let started = Instant::now();
    std::thread::sleep(idle);
    let (after, _) = usage(serve.id());
    let idle_seconds = started.elapsed().as_secs_f64();
    let mut times = Vec::new();
    let mut scrape_bytes = 0;
    for _ in 0..if options.quick { 5 } else { 20 } {
        if let Some((response, took)) = scrape(port) {
            scrape_bytes = response.len();
            times.push(took.as_secs_f64() * 1e3);
        }
    }
    let series = sample(port, "cgtrace_series").unwrap_or(0);
    let series_dropped = sample(port, "cgtrace_series_dropped_total").unwrap_or(0);
    let (_, peak_rss_kib) = usage(serve.id());
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(i32::try_from(serve.id()).unwrap_or(0), libc::SIGTERM);
    }
    let _ = serve.wait();
    drop(cgroups_made);
    AgentRun {
        cgroups,
        max_series,
        idle_cpu_share: after.saturating_sub(before).as_secs_f64() / idle_seconds,
        scrape_ms: Summary::of(&times).expect("scrapes"),
        scrape_bytes,
        series,
        series_dropped,
        peak_rss_kib,
    }
}

/// The section, and the runs for the targets.
pub fn agent(options: &Options) -> (String, Vec<AgentRun>) {
    let idle = Duration::from_secs(if options.quick { 10 } else { 60 });
    let runs = vec![
        run(options, 1_000, 100_000, idle),
        run(options, 10_000, 20_000, idle),
    ];
    let mut section = String::from("\n## The node agent\n\n");
    let _ = writeln!(
        section,
        "`cgtrace serve` (every probe family, default 10 s interval) beside N containers' \
         scratch cgroups, each with a CFS quota of half a core and a 64 MiB memory limit (a \
         container runtime gives every container both, so serve reads each one's `cpu.stat` \
         every interval, and every one's quota and memory files every 30 s). Idle: its CPU time over {} s with nothing else happening, after \
         the first interval. Scrape: `GET /metrics` over loopback, start to last byte, {} \
         scrapes. Peak RSS: `VmHWM` after the scrapes. The 10,000-cgroup run caps the series \
         at 20,000 (`--max-series`).\n",
        idle.as_secs(),
        if options.quick { 5 } else { 20 }
    );
    section.push_str(
        "| cgroups | idle CPU (share of a core) | scrape (ms) min / **median** / max | scrape size | \
         series (cap) | series dropped | peak RSS |\n|---|---|---|---|---|---|---|\n",
    );
    for run in &runs {
        let _ = writeln!(
            section,
            "| {} | {:.2} % | {:.1} | {:.0} KB | {} ({}) | {} | {:.1} MB |",
            run.cgroups,
            100.0 * run.idle_cpu_share,
            run.scrape_ms,
            kb(run.scrape_bytes),
            run.series,
            run.max_series,
            run.series_dropped,
            mb(run.peak_rss_kib),
        );
    }
    section.push_str(
        "\nThe peers' published figures: cAdvisor took 5.7 s and 38 MB per scrape with 60 \
         containers (google/cadvisor#2608); Beyla grew to 739 MiB (grafana/beyla#617).\n",
    );
    (section, runs)
}

#[expect(clippy::cast_precision_loss, reason = "a display figure")]
fn kb(bytes: usize) -> f64 {
    bytes as f64 / 1e3
}
