//! The CPU throttling scenario: four busy threads in a group limited to one
//! core, throttled in nearly every period, next to the kernel's own
//! `cpu.stat` delta.

use std::process::Command;

use anyhow::Context as _;

use super::session::DemoProbe;
use crate::{
    cgroup::scratch::ScratchCgroup,
    event::{Event, ThrottleSpan},
    model::throttle::periods_in,
    session::{Context, End, Flow, Sink},
    view::cache::duration,
};

const SECONDS: f64 = 5.0;
const THREADS: usize = 4;
/// The CFS period (the kernel's default): one core is 100 ms of it.
const PERIOD_US: u64 = 100_000;

/// The spans of one cgroup.
struct Spans {
    cgroup_id: u64,
    spans: Vec<ThrottleSpan>,
}

impl Sink for Spans {
    fn event(&mut self, event: &Event, _cx: &mut Context) -> anyhow::Result<Flow> {
        if let Event::ThrottleSpan(span) = event
            && span.cgroup_ref.is_some_and(|c| c.id == self.cgroup_id)
        {
            self.spans.push(span.clone());
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        Ok(())
    }
}

pub fn run(demo: &mut DemoProbe) -> anyhow::Result<bool> {
    crate::say!(
        "\n== throttle: {THREADS} busy threads for {SECONDS} s in a group limited to one core (100 ms periods) =="
    );
    let name = format!("cgtrace-demo-{}-throttle", std::process::id());
    let group = ScratchCgroup::create_for(demo.hierarchies(), "cpu", &name)
        .context("cannot create the cpu cgroup")?;
    group.set_cpu_quota(100_000, PERIOD_US)?;
    let mut collected = Spans {
        cgroup_id: group.id()?,
        spans: Vec::new(),
    };
    let before = group.cpu_stat()?;
    let exe = std::env::current_exe().context("cannot find the cgtrace binary")?;
    let mut command = Command::new(exe);
    command.args(["__spin", &SECONDS.to_string(), &THREADS.to_string()]);
    demo.run(&[&group], command, &mut [&mut collected])?;
    let kernel = group.cpu_stat()?.since(&before);
    let spans = collected.spans;

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
