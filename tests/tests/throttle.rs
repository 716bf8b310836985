//! CFS bandwidth throttling against the real kernel: cgtrace's spans
//! checked against the group's own `cpu.stat`.

use std::{process::Command, time::Instant};

use cgtrace::{
    cgroup::{Hierarchies, scratch::ScratchCgroup, stat::CpuStat},
    event::{Event, ThrottleSpan},
    model::throttle::periods_in,
    probe::{FeatureSet, Probe},
};
use cgtrace_tests::{ChildGuard, cgtrace_bin, probe_options, require_root};

/// The tests here run one at a time: each measures a busy workload against
/// the kernel's counters, and their busy threads would compete for the CPUs
/// (a span ends at the next switch on its CPU, which contention delays).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `threads` busy threads for `seconds` in a fresh cpu cgroup with the
/// given quota (per 100 ms period, or none); returns the spans seen for the
/// group and the kernel's counters over the run.
fn spin(
    test: &str,
    quota_us: Option<u64>,
    threads: usize,
    seconds: f64,
) -> (Vec<ThrottleSpan>, CpuStat) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut probe = Probe::load(&probe_options(FeatureSet::THROTTLE)).expect("load throttle probe");
    let hierarchies = Hierarchies::discover().unwrap();
    let name = format!("cgtrace-test-{test}-{}", std::process::id());
    let group = ScratchCgroup::create_for(&hierarchies, "cpu", &name).expect("cpu cgroup");
    if let Some(quota) = quota_us {
        group.set_cpu_quota(quota, 100_000).unwrap();
    }
    let id = group.id().unwrap();
    let before = group.cpu_stat().unwrap();
    let mut command = Command::new(cgtrace_bin());
    command.args(["__spin", &seconds.to_string(), &threads.to_string()]);
    let mut child = ChildGuard(group.spawn_into(&mut command).unwrap());
    let mut spans = Vec::new();
    let started = Instant::now();
    let collect = |probe: &mut Probe, spans: &mut Vec<ThrottleSpan>| {
        probe.drain(|event| {
            if let Event::ThrottleSpan(span) = event
                && span.cgroup_ref.is_some_and(|c| c.id == id)
            {
                spans.push(span);
            }
        });
    };
    while child.0.try_wait().unwrap().is_none() {
        collect(&mut probe, &mut spans);
        probe.wait(std::time::Duration::from_millis(100)).unwrap();
        assert!(
            started.elapsed().as_secs_f64() < seconds + 30.0,
            "workload overran"
        );
    }
    // The last span ends at the switch after the last unthrottle; and a
    // kernel may count a throttled period after the workload exits (6.16
    // does), so cpu.stat is read once that has passed too.
    probe.wait(std::time::Duration::from_millis(300)).unwrap();
    collect(&mut probe, &mut spans);
    let after = group.cpu_stat().unwrap();
    let stats = probe.stats();
    assert_eq!(stats.ring_buffer_drops, 0);
    assert_eq!(stats.recursion_misses, 0);
    (spans, after.since(&before))
}

/// How late a span's end may be seen where another task holds the CPU at
/// the unthrottle: EEVDF's base slice on a 2-CPU machine is 1.5 ms
/// (`sysctl_sched_base_slice` scaled by 1 + log2(CPUs)); a tick more
/// covers the preemption check.
const SWITCH_LATENCY_NS: u64 = 4_000_000;

/// The CFS period the tests set (the kernel's and Kubernetes' default).
const PERIOD_NS: u64 = 100_000_000;

/// The spans as `CPU: start–end` milliseconds into their period: where a
/// count went wrong, they show the period timer's phase (where most end)
/// and how late each end was seen.
fn within_periods(spans: &[ThrottleSpan]) -> String {
    #[expect(clippy::cast_precision_loss, reason = "milliseconds to print")]
    let within = |ns: u64| (ns % PERIOD_NS) as f64 / 1e6;
    spans
        .iter()
        .map(|s| {
            format!(
                "{}: {:.2}–{:.2}",
                s.cpu,
                within(s.start_ns),
                within(s.end_ns)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn compare(spans: &[ThrottleSpan], kernel: &CpuStat) {
    let counted = periods_in(spans, Some(PERIOD_NS));
    let time: u64 = spans.iter().map(ThrottleSpan::duration_ns).sum();
    eprintln!(
        "spans {}, throttled periods: cgtrace {counted} / cpu.stat {}; throttled time: cgtrace {} ms / cpu.stat {} ms",
        spans.len(),
        kernel.nr_throttled,
        time / 1_000_000,
        kernel.throttled_ns / 1_000_000
    );
    let periods_off = counted.abs_diff(kernel.nr_throttled);
    assert!(
        periods_off <= 2 || periods_off * 50 <= kernel.nr_throttled,
        "throttled periods within 2% (or ±2): cgtrace {counted}, kernel {}; the spans, CPU: start–end within their period (ms): {}",
        kernel.nr_throttled,
        within_periods(spans)
    );
    // A span ends at the first switch on its CPU after the unthrottle
    // (the variant every kernel allows): at once on a CPU the group's
    // throttled tasks left idle, but up to a scheduler slice later where
    // another task holds the CPU (any other load on the machine). So the
    // time is never short of the kernel's, and at most a slice per span
    // over it.
    let slack = kernel.throttled_ns / 20;
    assert!(
        time + slack >= kernel.throttled_ns,
        "throttled time at least the kernel's, less 5%: cgtrace {time} ns, kernel {} ns",
        kernel.throttled_ns
    );
    let late = spans.len() as u64 * SWITCH_LATENCY_NS;
    assert!(
        time <= kernel.throttled_ns + slack + late,
        "throttled time at most the kernel's, 5% and a slice per span over: cgtrace {time} ns, kernel {} ns, {} spans",
        kernel.throttled_ns,
        spans.len()
    );
}

#[test]
fn a_busy_loop_under_a_20_percent_quota() {
    if !require_root("a_busy_loop_under_a_20_percent_quota") {
        return;
    }
    let (spans, kernel) = spin("throttle-20", Some(20_000), 1, 10.0);
    assert!(
        kernel.nr_throttled > 50,
        "the kernel throttled it: {kernel:?}"
    );
    compare(&spans, &kernel);
    // The span names the task current when the kernel throttled the
    // group: the spinner, except when the throttle happens as it is
    // enqueued again (check_enqueue_throttle), in the waker's context.
    let spinner = spans.iter().filter(|s| s.comm == "cgtrace").count();
    let comms: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.comm.as_str()).collect();
    assert!(
        spinner * 10 >= spans.len() * 9,
        "the spinning task ran the quota out: {spinner} of {} spans name it; names seen: {comms:?}",
        spans.len()
    );
}

/// Half a core, so that it is throttled on a machine (or a guest) of one
/// CPU too: with a whole core the group could not run past its quota there.
#[test]
fn four_threads_under_half_a_core() {
    if !require_root("four_threads_under_half_a_core") {
        return;
    }
    let (spans, kernel) = spin("throttle-4x0.5", Some(50_000), 4, 10.0);
    assert!(
        kernel.nr_throttled > 50,
        "the kernel throttled it: {kernel:?}"
    );
    let cpus: std::collections::HashSet<u32> = spans.iter().map(|s| s.cpu).collect();
    eprintln!("spans on CPUs {cpus:?}");
    compare(&spans, &kernel);
}

#[test]
fn an_unlimited_group_is_never_throttled() {
    if !require_root("an_unlimited_group_is_never_throttled") {
        return;
    }
    let (spans, kernel) = spin("throttle-none", None, 1, 3.0);
    assert_eq!(kernel.nr_throttled, 0);
    assert!(spans.is_empty(), "{spans:?}");
}
