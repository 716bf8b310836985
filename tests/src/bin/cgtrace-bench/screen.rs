//! What `cgtrace top` costs live: its CPU with a 1 s refresh beside 1,000
//! containers' cgroups (a quota and a memory limit each, as the node
//! agent's run has them), drawn into a real terminal (a tmux pane).

use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    Options,
    agent::{container_cgroups, usage},
    footprint::mb,
};

/// One run's figures.
pub struct ScreenRun {
    pub cgroups: usize,
    /// CPU time over the window, as a share of one core.
    pub cpu_share: f64,
    pub peak_rss_kib: u64,
    /// Lines on the screen at the end (the cgroups it listed).
    pub lines_shown: usize,
    /// What this machine charges for a page first touched after a second
    /// idle, in microseconds (see [`idle_touch_us`]).
    pub idle_touch_us: f64,
}

/// Microseconds per page to read 16 MiB of resident memory again after a
/// second's sleep, the median of five rounds. A process that wakes once a
/// second pays this for every page it touches; on bare metal it is a cache
/// and TLB miss (well under a microsecond), while a virtual machine whose
/// host has let the guest's memory go cold pays far more, and a live view's
/// CPU share scales with it. Measured in the same run so that figure can be
/// read against the machine.
fn idle_touch_us() -> f64 {
    const BYTES: usize = 16 << 20;
    const PAGE: usize = 4096;
    let mut memory = vec![1_u8; BYTES];
    let mut rounds = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let mut sum = 0_u64;
        for offset in (0..BYTES).step_by(PAGE) {
            sum = sum.wrapping_add(u64::from(std::hint::black_box(&memory)[offset]));
        }
        std::hint::black_box(sum);
        #[expect(clippy::cast_precision_loss, reason = "a page count")]
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / (BYTES / PAGE) as f64);
        memory[0] = memory[0].wrapping_add(1);
    }
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// A tmux server of the bench's own, killed on drop.
pub struct Tmux(pub String);

impl Tmux {
    /// A server named `name` running `command` in a 200×50 pane, and the
    /// pane's process.
    pub fn start(name: String, command: &str) -> (Self, u32) {
        let tmux = Self(name);
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            command,
        ]);
        let pid: u32 = tmux
            .run(&["display-message", "-p", "#{pane_pid}"])
            .trim()
            .parse()
            .expect("the pane's process");
        (tmux, pid)
    }

    pub fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux (apt-get install tmux)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
        // tmux leaves its socket file behind (`-L NAME` puts it here).
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let _ = std::fs::remove_file(format!("/tmp/tmux-{uid}/{}", self.0));
    }
}

fn run(options: &Options, cgroups: usize, window: Duration) -> ScreenRun {
    let made = container_cgroups(cgroups);
    let (tmux, pid) = Tmux::start(
        format!("cgtrace-bench-top-{}", std::process::id()),
        &format!("{} top --interval 1s", options.cgtrace.display()),
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    while !tmux.run(&["capture-pane", "-p"]).contains("live, every 1s") {
        assert!(Instant::now() < deadline, "top did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The first sweep reads every memory cgroup; what follows is steady.
    std::thread::sleep(Duration::from_secs(8));
    let (before, _) = usage(pid);
    let started = Instant::now();
    std::thread::sleep(window);
    let (after, peak_rss_kib) = usage(pid);
    let seconds = started.elapsed().as_secs_f64();
    let screen = tmux.run(&["capture-pane", "-p"]);
    let lines_shown = screen
        .split_once(" lines ")
        .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    tmux.run(&["send-keys", "q"]);
    std::thread::sleep(Duration::from_millis(500));
    drop(tmux);
    drop(made);
    let idle_touch_us = idle_touch_us();
    ScreenRun {
        idle_touch_us,
        cgroups,
        cpu_share: after.saturating_sub(before).as_secs_f64() / seconds,
        peak_rss_kib,
        lines_shown,
    }
}

/// The section, and the run for the targets.
pub fn screen(options: &Options) -> (String, ScreenRun) {
    let window = Duration::from_secs(if options.quick { 10 } else { 60 });
    let result = run(options, 1_000, window);
    let mut section = String::from("\n## The live screen\n\n");
    let _ = writeln!(
        section,
        "`cgtrace top --interval 1s` (every probe family) in a 200×50 tmux pane beside {} \
         containers' scratch cgroups (each with a CFS quota of half a core and a 64 MiB memory \
         limit): its CPU time over {} s after the first sweep, and its peak RSS (`VmHWM`). It \
         reads the files of the cgroups with activity and of the throttled ones \
         each second, and every other memory cgroup's usage and limit and quota'd cgroup's `cpu.stat` every 30 s (as `serve` sweeps).\n",
        result.cgroups,
        window.as_secs()
    );
    let _ = writeln!(
        section,
        "A process that wakes each second pays for every page it touches again. On this machine, \
         in this run, reading one byte per page of 16 MiB after a second's sleep cost **{:.2} µs \
         per page** (median of 5; a cache and TLB miss on bare metal is well under 0.5 µs). \
         top's share scales with that figure.\n",
        result.idle_touch_us
    );
    section.push_str(
        "| cgroups | lines listed | CPU (share of a core) | peak RSS |\n|---|---|---|---|\n",
    );
    let _ = writeln!(
        section,
        "| {} | {} | {:.2} % | {:.1} MB |",
        result.cgroups,
        result.lines_shown,
        100.0 * result.cpu_share,
        mb(result.peak_rss_kib)
    );
    (section, result)
}
