//! L: long recordings. A node's day written by the trace writer (200
//! cgroups, a one-second interval: page-cache flows, reclaim stalls, memory,
//! CPU and pressure samples, throttle spans, a sweep of every cgroup each
//! 30 s, an OOM kill each 10 minutes, cgroups coming and going), at a
//! quarter, a half and all of the size asked for; then `report` (text,
//! JSON, HTML), `export` (both forms) and each `--input` view over each
//! (`top`'s in a tmux pane, stepped to the last interval), with their peak
//! RSS and time, to show both stay bounded and grow linearly.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cgtrace::{
    cgroup::Version,
    event::{
        Bandwidth, CgroupNamed, CgroupRemoved, Constraint, ConstraintFoundBy, CpuSample, CpuStat,
        Event, Flow, Health, LimitKind, MemorySample, OomKill, OomMemcg, OomSource, Pressure,
        PressureLine, PressureSample, ProbeCounters, ProbeStats, Stall, Task, ThrottleSpan, Tick,
        VictimMemory,
    },
    trace::file::{TraceHeader, TraceWriter},
};
use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CacheReason, ReclaimKind, StallStats},
};

use crate::{Options, agent::usage, footprint::mb, screen::Tmux};

const CGROUPS: u64 = 200;
const SECOND: u64 = 1_000_000_000;

fn memory_ref(n: u64) -> CgroupRef {
    CgroupRef {
        id: 10_000 + n,
        hierarchy: 4,
        level: 2,
    }
}

fn cpu_ref(n: u64) -> CgroupRef {
    CgroupRef {
        id: 20_000 + n,
        hierarchy: 3,
        level: 2,
    }
}

fn pod_path(n: u64, generation: u64) -> String {
    format!("/kubepods/burstable/pod{n:08x}-0000-4000-8000-{generation:012x}/app")
}

/// The cgroups active in second `s`: twenty of them, moving on.
fn active(s: u64, k: u64) -> u64 {
    (s * 7 + k * 13) % CGROUPS
}

/// One interval's events for second `s` of the synthetic day.
fn interval(s: u64, generation: &mut [u64], events: &mut Vec<Event>) {
    let (start, end) = (s * SECOND, (s + 1) * SECOND);
    churn(s, generation, events);
    events.push(counters(s));
    samples(s, events);
    throttling(s, events);
    if s % 600 == 599 {
        events.push(kill(end, active(s, 0)));
    }
    events.push(Event::Health(Health {
        at_ns: end,
        stats: ProbeStats::default(),
        is_final: false,
    }));
    events.push(Event::Tick(Tick {
        start_ns: start,
        end_ns: end,
    }));
}

/// Every ten seconds one cgroup goes and comes back as another pod.
fn churn(s: u64, generation: &mut [u64], events: &mut Vec<Event>) {
    let start = s * SECOND;
    if s.is_multiple_of(10) {
        let n = (s / 10) % CGROUPS;
        events.push(Event::CgroupRemoved(CgroupRemoved {
            at_ns: start,
            cgroup: memory_ref(n),
        }));
        generation[usize::try_from(n).unwrap_or(0)] += 1;
        let named = pod_path(n, generation[usize::try_from(n).unwrap_or(0)]);
        for cgroup in [memory_ref(n), cpu_ref(n)] {
            events.push(Event::CgroupCreated(CgroupNamed {
                cgroup,
                path: named.clone(),
            }));
        }
    }
}

/// The interval's page-cache flows and reclaim stalls.
fn counters(s: u64) -> Event {
    let active = |k| active(s, k);
    let flows = (0..20)
        .map(|k| Flow {
            owner: Some(memory_ref(active(k))),
            actor: Some(memory_ref(active(k + 1))),
            reason: if k % 2 == 0 {
                CacheReason::Added
            } else {
                CacheReason::OwnLimit
            },
            pages: 100 + (s + k) % 900,
        })
        .collect();
    let stalls = (0..4)
        .map(|k| Stall {
            cgroup: Some(memory_ref(active(k))),
            kind: ReclaimKind::Memcg,
            stats: Box::new(StallStats {
                count: 3,
                total_ns: 300_000,
                max_ns: 200_000,
                ..StallStats::ZERO
            }),
        })
        .collect();
    Event::Counters(Box::new(ProbeCounters {
        start_ns: s * SECOND,
        end_ns: (s + 1) * SECOND,
        flows,
        stalls,
        ..ProbeCounters::default()
    }))
}

/// Memory and pressure samples: the active cgroups every second, every
/// cgroup every 30 s.
fn samples(s: u64, events: &mut Vec<Event>) {
    let end = (s + 1) * SECOND;
    let sampled: Vec<u64> = if s.is_multiple_of(30) {
        (0..CGROUPS).collect()
    } else {
        (0..20).map(|k| active(s, k)).collect()
    };
    for n in sampled {
        events.push(Event::Memory(Box::new(MemorySample {
            at_ns: end,
            cgroup: memory_ref(n),
            version: Version::V2,
            usage_bytes: Some((64 + (s + n) % 64) << 20),
            limit_bytes: Some(128 << 20),
            peak_bytes: Some(128 << 20),
            page_cache_bytes: Some((16 + (s * n) % 32) << 20),
            events: None,
            stat_charges: None,
        })));
        let line = |total_us| PressureLine {
            total_us,
            ..PressureLine::default()
        };
        events.push(Event::Pressure(Box::new(PressureSample {
            at_ns: end,
            cgroup: memory_ref(n),
            memory: Some(Pressure {
                some: line(s * 1000 + n),
                full: Some(line(s * 500 + n)),
            }),
            cpu: None,
            io: None,
        })));
    }
}

/// Ten throttled groups, five spans a second each, and their counters.
fn throttling(s: u64, events: &mut Vec<Event>) {
    let (start, end) = (s * SECOND, (s + 1) * SECOND);
    for n in 0..10 {
        for k in 0..5 {
            let at = start + k * (SECOND / 5);
            events.push(Event::ThrottleSpan(ThrottleSpan {
                cgroup: None,
                cgroup_ref: Some(cpu_ref(n)),
                cpu: u32::try_from(k % 2).unwrap_or(0),
                pid: 4000 + u32::try_from(n).unwrap_or(0),
                comm: "worker".into(),
                start_ns: at,
                end_ns: at + 80_000_000,
            }));
        }
        events.push(Event::Cpu(CpuSample {
            at_ns: end,
            cgroup: cpu_ref(n),
            stat: Some(CpuStat {
                nr_periods: s * 10,
                nr_throttled: s * 5,
                throttled_ns: s * 400_000_000,
                usage_ns: None,
            }),
            bandwidth: Some(Bandwidth {
                quota_us: Some(50_000),
                period_us: 100_000,
            }),
            usage_ns: None,
        }));
    }
}

/// An OOM kill in cgroup `n` at `end`.
fn kill(end: u64, n: u64) -> Event {
    let victim = Task {
        pid: 9000,
        tid: Some(9000),
        comm: "hog".into(),
        uid: Some(0),
        cgroup: None,
        cgroup_ref: Some(memory_ref(n)),
    };
    Event::OomKill(Box::new(OomKill {
        monotonic_ns: end,
        source: OomSource::Probe,
        trigger: Some(victim.clone()),
        victim,
        constraint: Constraint::Memcg,
        constraint_found_by: ConstraintFoundBy::LimitWalk,
        oom_memcg: Some(OomMemcg {
            path: None,
            id: Some(memory_ref(n).id),
            limit_bytes: Some(128 << 20),
            usage_bytes: Some(128 << 20),
            limit_kind: LimitKind::Memory,
            values_from: "probe",
            cgroup_ref: Some(memory_ref(n)),
        }),
        memory: VictimMemory::default(),
        oom_score_adj: Some(0),
        group_kill: Some(false),
        victim_memcg_oom_kills: Some(1),
        counted_as_kill: Some(true),
        incomplete: false,
    }))
}

/// A synthetic recording of about `bytes`: how many seconds it covers.
fn write_trace(path: &Path, bytes: u64) -> u64 {
    let file = std::fs::File::create(path).expect("create the long trace");
    let header = TraceHeader {
        page_size: 4096,
        writer: "cgtrace-bench".into(),
        ..TraceHeader::default()
    };
    let mut writer = TraceWriter::new(std::io::BufWriter::new(file), &header).expect("header");
    let mut generation = vec![0; usize::try_from(CGROUPS).unwrap_or(0)];
    for n in 0..CGROUPS {
        for cgroup in [memory_ref(n), cpu_ref(n)] {
            writer
                .event(&Event::CgroupNamed(CgroupNamed {
                    cgroup,
                    path: pod_path(n, 0),
                }))
                .expect("write");
        }
    }
    let mut events = Vec::new();
    let mut second = 0;
    while writer.bytes_written() < bytes {
        interval(second, &mut generation, &mut events);
        for event in events.drain(..) {
            writer.event(&event).expect("write");
        }
        second += 1;
    }
    writer
        .event(&Event::Health(Health {
            at_ns: second * SECOND,
            stats: ProbeStats::default(),
            is_final: true,
        }))
        .expect("write");
    writer.flush().expect("flush");
    second
}

/// Peak RSS (KiB) and wall time of `cgtrace ARGS`, run to its end.
fn measure(cgtrace: &Path, args: &[&std::ffi::OsStr]) -> (u64, Duration) {
    let started = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, for its rusage"
    )]
    let child = Command::new(cgtrace)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cgtrace");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: status and usage are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(reaped, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "cgtrace {args:?} failed: status {status}"
    );
    (
        u64::try_from(usage.ru_maxrss).unwrap_or(0),
        started.elapsed(),
    )
}

/// Peak RSS (KiB) and wall time of `cgtrace top --input TRACE` in a tmux
/// pane, from its start to showing the recording's last interval (`]`).
fn measure_top(cgtrace: &Path, trace: &Path) -> (u64, Duration) {
    let started = Instant::now();
    let (tmux, pid) = Tmux::start(
        format!("cgtrace-bench-long-top-{}", std::process::id()),
        &format!("{} top --input {}", cgtrace.display(), trace.display()),
    );
    let deadline = Instant::now() + Duration::from_mins(10);
    let mut asked = false;
    loop {
        let screen = tmux.run(&["capture-pane", "-p"]);
        let first = screen.lines().next().unwrap_or_default();
        // "replay N/N": the last interval of a recording read to its end.
        let at_end = first
            .split_once("replay ")
            .and_then(|(_, rest)| rest.split([',', ' ']).next())
            .and_then(|shown| shown.split_once('/'))
            .is_some_and(|(at, count)| at == count);
        if at_end {
            break;
        }
        if !asked && first.contains("replay 1/") {
            tmux.run(&["send-keys", "]"]);
            asked = true;
        }
        assert!(
            Instant::now() < deadline,
            "top --input did not reach the end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    let (_, peak_rss_kib) = usage(pid);
    tmux.run(&["send-keys", "q"]);
    std::thread::sleep(Duration::from_millis(300));
    (peak_rss_kib, took)
}

/// What each reader of a trace is run as (`top --input` in a pane).
const READERS: [(&str, &[&str]); 10] = [
    ("report", &["report"]),
    ("report --json", &["report", "--json"]),
    ("report --html", &["report", "--html", "/dev/null"]),
    ("export --format jsonl", &["export", "--format", "jsonl"]),
    (
        "export --format chrome-trace",
        &["export", "--format", "chrome-trace"],
    ),
    ("top --input, to its last interval", &["top", "--input"]),
    ("oom --input", &["oom", "--input"]),
    ("cache --input", &["cache", "--input"]),
    ("reclaim --input", &["reclaim", "--input"]),
    ("throttle --input", &["throttle", "--input"]),
];

/// One reader over each size: its peak RSS and time.
pub struct LongRun {
    pub reader: &'static str,
    pub by_size: Vec<(u64, u64, Duration)>,
}

/// The section, and the runs for the targets.
#[expect(clippy::cast_precision_loss, reason = "display figures")]
pub fn long(options: &Options) -> (String, Vec<LongRun>) {
    let full: u64 = if options.quick { 64 << 20 } else { 1 << 30 };
    let dir = std::env::temp_dir().join(format!("cgtrace-bench-long-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let mut traces: Vec<(PathBuf, u64, u64)> = Vec::new();
    for size in [full / 4, full / 2, full] {
        let trace = dir.join(format!("long-{}.cgt", size >> 20));
        eprintln!("cgtrace-bench: writing a {} MiB recording", size >> 20);
        let seconds = write_trace(&trace, size);
        let bytes = std::fs::metadata(&trace).map_or(0, |m| m.len());
        traces.push((trace, bytes, seconds));
    }
    let mut runs = Vec::new();
    for (reader, args) in READERS {
        let mut by_size = Vec::new();
        for (trace, bytes, _) in &traces {
            let mut full_args: Vec<&std::ffi::OsStr> =
                args.iter().map(std::ffi::OsStr::new).collect();
            // export takes the file last; the others after their flag.
            full_args.insert(
                if reader.starts_with("report") {
                    1
                } else {
                    args.len()
                },
                trace.as_os_str(),
            );
            let (rss_kib, took) = if reader.starts_with("top") {
                measure_top(&options.cgtrace, trace)
            } else {
                measure(&options.cgtrace, &full_args)
            };
            eprintln!(
                "cgtrace-bench: {reader} over {} MiB: {} MB, {took:.1?}",
                bytes >> 20,
                mb(rss_kib)
            );
            by_size.push((*bytes, rss_kib, took));
        }
        runs.push(LongRun { reader, by_size });
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut section = String::from("\n## Long recordings\n\n");
    let (full_bytes, full_seconds) = traces.last().map_or((0, 0), |(_, b, s)| (*b, *s));
    let _ = writeln!(
        section,
        "A synthetic day written by the trace writer: {CGROUPS} cgroups, a 1 s interval (20 \
         cgroups' page-cache flows and samples each second, every cgroup's each 30 s, 10 \
         throttled groups with 5 spans a second, 4 reclaim stalls, a cgroup replaced every \
         10 s, an OOM kill every 10 minutes). The largest is {} MiB and covers {:.1} hours. \
         Peak RSS is `wait4`'s `ru_maxrss` (`top`'s: its `VmHWM` at the last interval); \
         time is wall time, one run each. The report and the export read the file once \
         (`--html` twice: the second pass gathers the series of the cgroups its charts \
         draw); what they hold grows only with the cgroups the recording names (here one \
         more every 10 s).\n",
        full_bytes >> 20,
        full_seconds as f64 / 3600.0
    );
    section.push_str("| reader |");
    for (_, bytes, _) in &traces {
        let _ = write!(section, " {} MiB: RSS, time |", bytes >> 20);
    }
    section.push_str(" time per GiB, smallest → largest |\n|---|");
    for _ in &traces {
        section.push_str("---|");
    }
    section.push_str("---|\n");
    for run in &runs {
        let _ = write!(section, "| `{}` |", run.reader);
        for (_, rss, took) in &run.by_size {
            let _ = write!(
                section,
                " {:.1} MB, {:.1} s |",
                mb(*rss),
                took.as_secs_f64()
            );
        }
        let per_gib = |(bytes, _, took): &(u64, u64, Duration)| {
            took.as_secs_f64() / (*bytes as f64 / f64::from(1u32 << 30))
        };
        let _ = writeln!(
            section,
            " {:.1} s → {:.1} s |",
            run.by_size.first().map_or(0.0, per_gib),
            run.by_size.last().map_or(0.0, per_gib)
        );
    }
    (section, runs)
}
