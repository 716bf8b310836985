//! The CPU throttling scenario: four busy threads in a group limited to one
//! core, throttled in nearly every period, next to the kernel's own
//! `cpu.stat` delta.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    cgroup::{Hierarchies, scratch::ScratchCgroup},
    event::{Event, ThrottleSpan},
    model::throttle::periods_in,
    probe::Probe,
    view::cache::duration,
};

const SECONDS: f64 = 5.0;
const THREADS: usize = 4;
/// The CFS period (the kernel's default): one core is 100 ms of it.
const PERIOD_US: u64 = 100_000;

pub fn run(probe: &mut Probe, hierarchies: &Hierarchies) -> anyhow::Result<bool> {
    crate::say!(
        "\n== throttle: {THREADS} busy threads for {SECONDS} s in a group limited to one core (100 ms periods) =="
    );
    let name = format!("cgtrace-demo-{}-throttle", std::process::id());
    let group = ScratchCgroup::create_for(hierarchies, "cpu", &name)
        .context("cannot create the cpu cgroup")?;
    group.set_cpu_quota(100_000, PERIOD_US)?;
    let id = group.id()?;
    probe.drain(|_| {});
    let before = group.cpu_stat()?;
    let exe = std::env::current_exe().context("cannot find the cgtrace binary")?;
    let mut command = Command::new(exe);
    command.args(["__spin", &SECONDS.to_string(), &THREADS.to_string()]);
    let mut child = group.spawn_into(&mut command)?;
    let mut spans: Vec<ThrottleSpan> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(SECONDS + 20.0);
    let mut collect = |probe: &mut Probe| {
        probe.drain(|event| {
            if let Event::ThrottleSpan(span) = event
                && span.cgroup_ref.is_some_and(|c| c.id == id)
            {
                spans.push(span);
            }
        });
    };
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        collect(probe);
        probe.wait(Duration::from_millis(100))?;
    }
    let _ = child.kill();
    let _ = child.wait();
    let kernel = group.cpu_stat()?.since(&before);
    // The last span ends at the first switch after the last unthrottle.
    probe.wait(Duration::from_millis(200))?;
    collect(probe);

    let counted = periods_in(&spans, Some(PERIOD_US * 1000));
    let time: u64 = spans.iter().map(ThrottleSpan::duration_ns).sum();
    let cpus: std::collections::BTreeSet<u32> = spans.iter().map(|s| s.cpu).collect();
    crate::say!(
        "cgtrace: {} spans on CPUs {cpus:?}, {counted} throttled periods, {} throttled in total",
        spans.len(),
        duration(time)
    );
    crate::say!(
        "kernel (cpu.stat delta): {} periods, {} throttled ({:.0}%), {} throttled in total",
        kernel.nr_periods,
        kernel.nr_throttled,
        percent(kernel.nr_throttled, kernel.nr_periods),
        duration(kernel.throttled_ns)
    );
    let periods_agree = counted.abs_diff(kernel.nr_throttled) <= 2.max(kernel.nr_throttled / 50);
    let time_agrees = time.abs_diff(kernel.throttled_ns) * 20 <= kernel.throttled_ns;
    let agree = kernel.nr_throttled > 0 && periods_agree && time_agrees;
    if agree {
        crate::say!(
            "verdict: cgtrace's throttled periods and time agree with cpu.stat (within 2% and 5%)"
        );
    } else {
        crate::say!("verdict: MISMATCH between cgtrace and cpu.stat");
    }
    Ok(agree)
}

fn percent(part: u64, whole: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a display figure")]
    let ratio = part as f64 / whole.max(1) as f64;
    ratio * 100.0
}
