//! The OOM scenario: a process allocating 200 MiB in a cgroup limited to
//! 100 MiB, next to the kernel's own `oom_kill` counter.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::session::DemoProbe;
use crate::{
    cgroup::{Resolver, Version, scratch::ScratchCgroup},
    event::{Event, OomKill},
    model::oom::OomCorrelator,
    session::{Context, End, Flow, Sink, live::resolve_paths},
    system::Clock,
    view::{self, format::bytes},
};

/// The kills the probe reported, through the model every OOM view uses.
struct Kills {
    model: OomCorrelator,
    kills: Vec<OomKill>,
}

impl Sink for Kills {
    fn event(&mut self, event: &Event, _cx: &mut Context) -> anyhow::Result<Flow> {
        if let Event::OomKill(kill) = event {
            let now = Clock::monotonic_now_ns();
            self.kills.extend(self.model.probe((**kill).clone(), now));
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        self.kills.extend(self.model.flush());
        Ok(())
    }
}

pub fn run(demo: &mut DemoProbe) -> anyhow::Result<bool> {
    const LIMIT: u64 = 100 << 20;
    const ALLOCATE_MIB: u32 = 200;
    crate::say!(
        "\n== oom: a process allocating {ALLOCATE_MIB} MiB in a cgroup limited to {} ==",
        bytes(LIMIT)
    );
    let name = format!("cgtrace-demo-{}-oom", std::process::id());
    let cgroup = ScratchCgroup::create(demo.hierarchies(), &name)
        .context("cannot create the scratch cgroup")?;
    cgroup.set_memory_limit(LIMIT)?;
    let cgroup_id = cgroup.id()?;
    crate::say!(
        "cgroup {} (memory {}, id {cgroup_id}), limit {}",
        cgroup.path(),
        match cgroup.version() {
            Version::V1 => "v1",
            Version::V2 => "v2",
        },
        bytes(LIMIT)
    );

    let exe = std::env::current_exe().context("cannot find the cgtrace binary")?;
    let mut command = Command::new(exe);
    command
        .args(["__memhog", &ALLOCATE_MIB.to_string()])
        .stdout(Stdio::null());
    let mut collected = Kills {
        model: OomCorrelator::new(Some(Clock::monotonic_now_ns()), 0),
        kills: Vec::new(),
    };
    // The kernel counts the kill and the probe records it before the victim
    // dies: when the session sees the workload end, both have it.
    let ran = demo.run(&[&cgroup], command, &mut [&mut collected])?;
    crate::say!(
        "workload pid {} ended after {:.2} s: {}",
        ran.pid,
        ran.took.as_secs_f64(),
        ran.status
    );
    let kernel_count = cgroup.oom_kill_count()?;
    let clock = Clock::now();
    let mut resolver = Resolver::new(demo.hierarchies().clone());
    let mut kills = collected.kills;
    for kill in &mut kills {
        resolve_paths(kill, &mut resolver);
    }
    let ours: Vec<&OomKill> = in_cgroup(&kills, cgroup_id).collect();
    crate::say!("\ncgtrace saw:");
    crate::say!("  {}", view::oom::header());
    for kill in &ours {
        crate::say!(
            "  {}",
            view::oom::line(kill, &clock, &mut crate::identity::Identity::unnamed)
        );
    }
    let counted = u64::try_from(
        ours.iter()
            .filter(|k| k.counted_as_kill != Some(false))
            .count(),
    )
    .unwrap_or(u64::MAX);
    let counter_file = match cgroup.version() {
        Version::V1 => "memory.oom_control",
        Version::V2 => "memory.events",
    };
    crate::say!("\nkernel's own count ({counter_file} oom_kill): {kernel_count}");
    crate::say!("cgtrace's count of OOM kills in the cgroup:    {counted}");
    let problems = oom_problems(&ours, counted, kernel_count, ran.pid, LIMIT);
    drop(cgroup);
    if problems.is_empty() {
        crate::say!("verdict: cgtrace agrees with the kernel (victim, cgroup, limit and count)");
        return Ok(true);
    }
    crate::say!("verdict: MISMATCH: {}", problems.join("; "));
    if ours.is_empty() && kernel_count > 0 {
        bail!("the probe delivered no OOM record for a kill the kernel counted");
    }
    Ok(false)
}

/// What disagrees between cgtrace's records and the kernel's count.
fn oom_problems(
    ours: &[&OomKill],
    counted: u64,
    kernel_count: u64,
    child_pid: u32,
    limit: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    if counted != kernel_count {
        problems.push(format!("counts differ ({counted} vs {kernel_count})"));
    }
    if kernel_count == 0 {
        problems
            .push("the kernel reports no OOM kill; the workload was not constrained".to_owned());
    }
    if !ours.iter().any(|k| k.victim.pid == child_pid) {
        problems.push(format!(
            "no event names the workload (pid {child_pid}) as the victim"
        ));
    }
    for kill in ours {
        let reported = kill.oom_memcg.as_ref().and_then(|m| m.limit_bytes);
        if reported != Some(limit) {
            problems.push(format!("limit reported as {reported:?}, expected {limit}"));
        }
    }
    problems
}

fn in_cgroup(kills: &[OomKill], cgroup_id: u64) -> impl Iterator<Item = &OomKill> {
    kills
        .iter()
        .filter(move |k| k.victim.cgroup_ref.is_some_and(|c| c.id == cgroup_id))
}
