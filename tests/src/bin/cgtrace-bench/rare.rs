//! The rare-event families: the OOM storm, CPU throttling (busy threads
//! under a quota, and context-switch cost), and ring-buffer throughput.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use cgtrace::cgroup::{Hierarchies, Version};
use cgtrace::probe::{BpfStatsEnabled, FeatureSet, Probe, ProbeOptions, ThrottleVariant};

use crate::Options;
use crate::compare::Comparison;
use crate::tracer::{Tracer, TracerSpec};
use crate::workloads;

const MIB: u64 = 1 << 20;

/// Repeated OOM kills, untraced vs. `cgtrace oom --follow`; checks the
/// view reported every kill.
pub fn oom_storm(options: &Options) -> String {
    let kills = if options.quick { 3 } else { 10 };
    let oom = TracerSpec::cgtrace(
        &options.cgtrace,
        "oom",
        &["--follow", "--stats-interval", "0"],
    );
    let comparison = Comparison::run(
        "oom storm",
        options.rounds,
        &[oom],
        || {},
        |label| workloads::oom_storm(&options.cgtrace, kills, 64, 16 * MIB, label),
    );
    let reported: Vec<u64> = comparison.finished[0]
        .iter()
        .map(|f| f.live_oom_kills)
        .collect();
    let all_reported = reported.iter().all(|&r| r >= u64::from(kills));
    let mut section = String::from("\n## OOM storm\n\n");
    let _ = writeln!(
        section,
        "{kills} allocations of 64 MiB, one after another, each OOM-killed in a memory cgroup \
         limited to 16 MiB (median untraced {:.0} ms, {:.1} ms per kill); untraced vs. `cgtrace \
         oom --follow --json`; {} rounds, order alternated.\n",
        comparison.untraced_median().as_secs_f64() * 1e3,
        comparison.untraced_median().as_secs_f64() * 1e3 / f64::from(kills),
        options.rounds
    );
    section.push_str(&comparison.table());
    let _ = writeln!(
        section,
        "\nLive kills reported per traced run (the view prints the kernel log's earlier kills \
         first; those are not counted): {reported:?} ({}).",
        if all_reported {
            format!("every one of the {kills}")
        } else {
            "**some kills were not reported**".to_owned()
        }
    );
    section
}

/// The attached per-switch program's cost: ns per context switch, and the
/// floor's (an empty program on `sched_switch`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SwitchCost {
    pub ns: f64,
    pub floor_ns: Option<f64>,
}

/// Busy threads under a CFS quota, untraced vs. `cgtrace throttle`, and
/// the context-switch cost of its sched_switch program.
pub fn throttle(options: &Options) -> (String, SwitchCost) {
    let (quota_us, period_us) = (50_000, 100_000);
    let threads = 2;
    let work = if options.quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(250)
    };
    let iterations = workloads::calibrate_spin(work);
    let group = workloads::quota_group("busy", quota_us, period_us);
    let spec = TracerSpec::cgtrace(&options.cgtrace, "throttle", &["--interval", "1s"]);
    let comparison = Comparison::run(
        "throttle",
        options.rounds,
        &[spec],
        || {},
        |_| workloads::busy_under_quota(&group, iterations, threads),
    );
    let spans: Vec<u64> = comparison.finished[0]
        .iter()
        .map(|f| f.probe_counter("records"))
        .collect();
    let mut section = String::from("\n## CPU throttling\n\n");
    let _ = writeln!(
        section,
        "### Busy threads under a quota\n\n{threads} threads, each a fixed loop of about {} ms of \
         CPU, in a cgroup with a CFS quota of {} ms per {} ms period (median untraced {:.0} ms, \
         set by the quota); untraced vs. `cgtrace throttle --json`; {} rounds, order \
         alternated.\n",
        work.as_millis(),
        quota_us / 1000,
        period_us / 1000,
        comparison.untraced_median().as_secs_f64() * 1e3,
        options.rounds
    );
    section.push_str(&comparison.table());
    let _ = writeln!(
        section,
        "\nRing-buffer records per traced run (throttle spans and cgroup names): {spans:?}."
    );
    drop(group);
    section.push_str(&switch_cost(options, false).0);
    let (attached, cost) = switch_cost(options, true);
    section.push_str(&attached);
    (section, cost.unwrap_or_default())
}

/// Workload S, untraced vs. `cgtrace throttle`; `background` runs a
/// throttled group meanwhile, so the per-switch program is attached, and
/// its cost is measured beside the floor's.
fn switch_cost(options: &Options, background: bool) -> (String, Option<SwitchCost>) {
    let round_trips: u32 = if options.quick { 20_000 } else { 100_000 };
    let _throttled = background.then(|| {
        let group = workloads::quota_group("throttled", 20_000, 100_000);
        let mut command = std::process::Command::new(&options.cgtrace);
        command.args(["__spin", "3600", "1"]);
        let child = cgtrace_tests::ChildGuard(group.spawn_into(&mut command).expect("spin"));
        (child, group)
    });
    let spec = TracerSpec::cgtrace(&options.cgtrace, "throttle", &["--interval", "1s"]);
    let comparison = Comparison::run(
        "switches",
        options.rounds,
        &[spec],
        || {},
        |_| workloads::ping_pong(round_trips) * round_trips,
    );
    let untraced_ns = comparison.untraced_median().as_secs_f64() * 1e9 / f64::from(round_trips);
    let summary = comparison.summary("cgtrace throttle").expect("rounds");
    // Two context switches per round trip.
    let per_switch = (summary.median - 1.0) * untraced_ns / 2.0;
    let mut section = format!(
        "\n### Context switches{}\n\n",
        if background {
            ", with a throttled group running"
        } else {
            ", no quota anywhere"
        }
    );
    let _ = writeln!(
        section,
        "Two threads pinned to one CPU pass a byte back and forth over pipes ({round_trips} round \
         trips, two context switches each; untraced {untraced_ns:.0} ns per round trip), \
         untraced vs. `cgtrace throttle --json`; {} rounds, order alternated. The median \
         ratio puts the view's cost at about {per_switch:.0} ns per context switch.\n",
        options.rounds
    );
    section.push_str(&comparison.table());
    if !background {
        return (section, None);
    }
    let (runs, ns) = attached_switch_cost(round_trips);
    let floor = crate::costs::measure(
        &crate::costs::floor_spec(&options.cgtrace),
        || {},
        || {
            workloads::ping_pong(round_trips);
        },
    );
    let floor_ns = crate::costs::ns_per_run(&floor, "f_switch");
    let _ = writeln!(
        section,
        "\nThe view keeps its per-switch program detached while no cgroup has a CFS quota, so \
         with no quota anywhere it costs nothing. Attached, the kernel's BPF run-time \
         statistics put it at **{ns:.0} ns per context switch** over {runs} switches of this \
         workload; an empty program on `sched_switch` costs {} on the same workload.",
        floor_ns.map_or_else(
            || "?".to_owned(),
            |f| format!("{f:.0} ns ({:.1}× less)", ns / f)
        )
    );
    (section, Some(SwitchCost { ns, floor_ns }))
}

/// The attached throttle program's cost per context switch, from the
/// kernel's BPF statistics, over one ping-pong run: `(runs, ns per run)`.
fn attached_switch_cost(round_trips: u32) -> (u64, f64) {
    let probe = Probe::load(&ProbeOptions {
        features: FeatureSet::THROTTLE,
        throttle_variant: ThrottleVariant::SchedSwitch,
        ..ProbeOptions::default()
    })
    .expect("load the throttle probe");
    let find = |probe: &Probe| {
        probe
            .program_counters()
            .into_iter()
            .find(|(name, _)| name == "throttle_switch")
            .map(|(_, c)| c)
            .unwrap_or_default()
    };
    let stats = BpfStatsEnabled::enable();
    let start = find(&probe);
    workloads::ping_pong(round_trips);
    let end = find(&probe);
    drop(stats);
    let runs = end.run_count - start.run_count;
    #[expect(clippy::cast_precision_loss, reason = "a display figure")]
    let ns = (end.run_time_ns - start.run_time_ns) as f64 / runs.max(1) as f64;
    (runs, ns)
}

/// Ring-buffer throughput: cgroups created and removed at rising rates
/// (each creation is one 288-byte record, the largest kind) under `cgtrace
/// oom --follow`, with the default buffer and with a deliberately tiny
/// one, counting what arrived and what the kernel side dropped.
pub fn ring_buffer(options: &Options) -> String {
    let seconds = if options.quick { 0.5 } else { 2.0 };
    let parent = RingParent::create();
    let max_rate = parent.burst(2000).1;
    let mut rates: Vec<f64> = [1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0]
        .into_iter()
        .filter(|&r| r < max_rate * 0.9)
        .collect();
    rates.push(f64::INFINITY);
    let mut section = String::from("\n## Ring buffer\n\n");
    let _ = writeln!(
        section,
        "Cgroups created and removed in the v2 hierarchy at a paced rate for {seconds} s each, \
         while `cgtrace oom --follow` runs: each creation is one ring-buffer record of 288 bytes \
         (the largest kind; OOM kills and throttle spans are rarer). `unpaced` is as fast as \
         this kernel creates cgroups (about {max_rate:.0} per second here). Records and drops \
         are the probe's own counters at exit; other cgroups created on the machine meanwhile \
         are counted too.\n"
    );
    section.push_str(
        "| ring buffer | target rate (/s) | achieved (/s) | created | records | drops |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut clean_max: f64 = 0.0;
    for (buffer, label) in [(None, "default (256 KiB)"), (Some(16_384), "16 KiB")] {
        for &rate in &rates {
            let mut extra = vec!["--follow", "--stats-interval", "0"];
            let bytes;
            if let Some(b) = buffer {
                bytes = format!("{b}");
                extra.extend(["--ring-buffer-bytes", &bytes]);
            }
            let tracer = Tracer::start(&TracerSpec::cgtrace(&options.cgtrace, "oom", &extra));
            let (created, achieved) = parent.paced(rate, seconds);
            // Give the collector a moment to drain before stopping it.
            std::thread::sleep(Duration::from_millis(200));
            let finished = tracer.stop();
            let (records, drops) = (
                finished.probe_counter("records"),
                finished.probe_counter("ring_buffer_drops"),
            );
            eprintln!(
                "ring buffer {label}: target {rate} /s, achieved {achieved:.0} /s, created {created}, records {records}, drops {drops}"
            );
            if buffer.is_none() && drops == 0 {
                clean_max = clean_max.max(achieved);
            }
            let target = if rate.is_finite() {
                format!("{rate:.0}")
            } else {
                "unpaced".to_owned()
            };
            let _ = writeln!(
                section,
                "| {label} | {target} | {achieved:.0} | {created} | {records} | {drops} |"
            );
        }
    }
    let _ = writeln!(
        section,
        "\nHighest sustained rate delivered with zero drops (default buffer): **{clean_max:.0} \
         records per second**."
    );
    section
}

/// A parent directory in the v2 hierarchy for the ring-buffer stress.
struct RingParent {
    path: std::path::PathBuf,
}

impl RingParent {
    fn create() -> Self {
        let hierarchies = Hierarchies::discover().expect("cgroup mounts");
        let v2 = hierarchies
            .list
            .iter()
            .find(|h| h.version == Version::V2)
            .expect("a cgroup2 mount");
        let path = v2
            .mount
            .join(format!("cgtrace-bench-ring-{}", std::process::id()));
        std::fs::create_dir(&path).expect("create the stress parent");
        Self { path }
    }

    /// Creates and removes `count` children as fast as possible; returns
    /// (count, rate per second).
    fn burst(&self, count: u64) -> (u64, f64) {
        let started = Instant::now();
        for n in 0..count {
            self.cycle(n);
        }
        (count, rate(count, started.elapsed()))
    }

    /// Creates and removes children at `per_second` for `seconds`;
    /// returns (created, achieved rate).
    fn paced(&self, per_second: f64, seconds: f64) -> (u64, f64) {
        let started = Instant::now();
        let deadline = Duration::from_secs_f64(seconds);
        let mut created = 0;
        while started.elapsed() < deadline {
            self.cycle(created);
            created += 1;
            if per_second.is_finite() {
                #[expect(clippy::cast_precision_loss, reason = "pacing")]
                let due = Duration::from_secs_f64(created as f64 / per_second);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        (created, rate(created, started.elapsed()))
    }

    fn cycle(&self, n: u64) {
        let child = self.path.join(format!("c{n}"));
        std::fs::create_dir(&child).expect("create a cgroup");
        std::fs::remove_dir(&child).expect("remove a cgroup");
    }
}

impl Drop for RingParent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[expect(clippy::cast_precision_loss, reason = "a display figure")]
fn rate(count: u64, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(1e-9)
}
