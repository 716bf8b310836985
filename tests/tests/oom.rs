//! OOM kills against the real kernel: cgtrace's records checked against the
//! kernel's own counters (`memory.oom_control` on v1, `memory.events` on v2).

use std::time::Instant;

use cgtrace::{
    cgroup::{Hierarchies, Resolver},
    event::{Constraint, Event, OomKill},
    model::oom::OomCorrelator,
    probe::{FeatureSet, Probe},
    session::live::resolve_paths,
    system::Clock,
};
use cgtrace_tests::{DEADLINE, memhog, probe_options, require_root, scratch, wait_until};

const MIB: u64 = 1 << 20;

/// Collects OOM records through the same model the CLI uses (without the
/// kernel log) until `done` says enough, or the deadline.
fn collect(probe: &mut Probe, mut done: impl FnMut(&[OomKill]) -> bool) -> Vec<OomKill> {
    let mut kills = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let mut resolver = Resolver::new(Hierarchies::discover().expect("cgroup mounts"));
    let mut model = OomCorrelator::new(Some(Clock::monotonic_now_ns()), 0);
    loop {
        let mut fresh = Vec::new();
        probe.drain(|event| {
            if let Event::OomKill(kill) = event {
                fresh.push(kill);
            }
        });
        for mut kill in fresh {
            resolve_paths(&mut kill, &mut resolver);
            model.probe(*kill, Clock::monotonic_now_ns());
        }
        kills.extend(model.expire(Clock::monotonic_now_ns()));
        if done(&kills) || Instant::now() > deadline {
            return kills;
        }
        probe
            .wait(std::time::Duration::from_millis(50))
            .expect("poll");
    }
}

fn in_cgroup(kills: &[OomKill], id: u64) -> Vec<&OomKill> {
    kills
        .iter()
        .filter(|k| k.victim.cgroup_ref.is_some_and(|c| c.id == id))
        .collect()
}

#[test]
fn one_oom_gives_exactly_one_event_with_pid_path_and_limit() {
    if !require_root("one_oom_gives_exactly_one_event_with_pid_path_and_limit") {
        return;
    }
    let mut probe = Probe::load(&probe_options(FeatureSet::OOM)).expect("load probe");
    let cgroup = scratch("one-oom", Some(100 * MIB));
    let id = cgroup.id().unwrap();
    let mut hog = memhog(&cgroup, 200);
    let status = hog.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the OOM killer should have killed the workload: {status}"
    );
    wait_until("the kernel's oom_kill counter", || {
        cgroup.oom_kill_count().unwrap() >= 1
    });
    let kernel = cgroup.oom_kill_count().unwrap();
    let kills = collect(&mut probe, |k| in_cgroup(k, id).len() as u64 >= kernel);
    let ours = in_cgroup(&kills, id);

    assert_eq!(kernel, 1, "one allocation, one kill");
    assert_eq!(ours.len(), 1, "exactly one event for the cgroup: {ours:#?}");
    let kill = ours[0];
    assert_eq!(kill.victim.pid, hog.pid());
    assert_eq!(kill.victim.comm, "cgtrace");
    assert_eq!(kill.victim.uid, Some(0));
    assert_eq!(kill.victim.cgroup.as_deref(), Some(cgroup.path()));
    assert_eq!(kill.constraint, Constraint::Memcg);
    let memcg = kill.oom_memcg.as_ref().expect("constraining memcg");
    assert_eq!(memcg.path.as_deref(), Some(cgroup.path()));
    assert_eq!(memcg.limit_bytes, Some(100 * MIB));
    let usage = memcg.usage_bytes.unwrap();
    assert!(
        usage > 98 * MIB && usage <= 100 * MIB,
        "usage at the kill: {usage}"
    );
    let anon = kill.memory.anon_rss_bytes.unwrap();
    assert!(
        anon > 90 * MIB && anon <= 100 * MIB,
        "victim anon rss {anon}"
    );
    assert_eq!(kill.counted_as_kill, Some(true));
    assert_eq!(kill.group_kill, Some(false));
    assert!(!kill.incomplete);
    let trigger = kill.trigger.as_ref().unwrap();
    assert_eq!(trigger.pid, hog.pid(), "the hog's own allocation failed");
    let probe_stats = probe.stats();
    assert_eq!(probe_stats.ring_buffer_drops, 0);
    assert_eq!(probe_stats.decode_errors, 0);
}

#[test]
fn two_ooms_in_two_groups_at_once_are_each_attributed_right() {
    if !require_root("two_ooms_in_two_groups_at_once_are_each_attributed_right") {
        return;
    }
    let mut probe = Probe::load(&probe_options(FeatureSet::OOM)).expect("load probe");
    let a = scratch("two-a", Some(100 * MIB));
    let b = scratch("two-b", Some(64 * MIB));
    let (id_a, id_b) = (a.id().unwrap(), b.id().unwrap());
    let mut hog_a = memhog(&a, 300);
    let mut hog_b = memhog(&b, 300);
    hog_a.wait();
    hog_b.wait();
    wait_until("both kernel counters", || {
        a.oom_kill_count().unwrap() >= 1 && b.oom_kill_count().unwrap() >= 1
    });
    let (kernel_a, kernel_b) = (a.oom_kill_count().unwrap(), b.oom_kill_count().unwrap());
    let kills = collect(&mut probe, |k| {
        in_cgroup(k, id_a).len() as u64 >= kernel_a && in_cgroup(k, id_b).len() as u64 >= kernel_b
    });
    for (cgroup, id, hog, limit, kernel) in [
        (&a, id_a, &hog_a, 100 * MIB, kernel_a),
        (&b, id_b, &hog_b, 64 * MIB, kernel_b),
    ] {
        let ours = in_cgroup(&kills, id);
        let counted = ours
            .iter()
            .filter(|k| k.counted_as_kill != Some(false))
            .count() as u64;
        assert_eq!(
            counted,
            kernel,
            "cgtrace's count equals the kernel's for {}",
            cgroup.path()
        );
        assert!(ours.iter().any(|k| k.victim.pid == hog.pid()), "{ours:#?}");
        for kill in ours {
            assert_eq!(kill.victim.cgroup.as_deref(), Some(cgroup.path()));
            let memcg = kill.oom_memcg.as_ref().unwrap();
            assert_eq!(memcg.path.as_deref(), Some(cgroup.path()));
            assert_eq!(memcg.limit_bytes, Some(limit));
        }
    }
}

#[test]
fn a_limit_on_the_parent_is_attributed_to_the_parent() {
    if !require_root("a_limit_on_the_parent_is_attributed_to_the_parent") {
        return;
    }
    let mut probe = Probe::load(&probe_options(FeatureSet::OOM)).expect("load probe");
    let mut parent = scratch("nested", Some(80 * MIB));
    let parent_path = parent.path().to_owned();
    let child = parent.child("workload").expect("child cgroup");
    let (child_path, child_id) = (child.path().to_owned(), child.id().unwrap());
    let mut hog = memhog(child, 200);
    hog.wait();
    // v1 counts the kill in the victim's group only; v2 also in its ancestors.
    wait_until("the child's oom_kill counter", || {
        child.oom_kill_count().unwrap() >= 1
    });
    let kills = collect(&mut probe, |k| !in_cgroup(k, child_id).is_empty());
    let ours = in_cgroup(&kills, child_id);
    assert_eq!(ours.len(), 1, "{ours:#?}");
    let kill = ours[0];
    assert_eq!(kill.victim.cgroup.as_deref(), Some(child_path.as_str()));
    let memcg = kill.oom_memcg.as_ref().unwrap();
    assert_eq!(
        memcg.path.as_deref(),
        Some(parent_path.as_str()),
        "the parent's limit was hit"
    );
    assert_eq!(memcg.limit_bytes, Some(80 * MIB));
}

/// The OOM kills the whole machine has seen (`oom_kill` in /proc/vmstat).
fn vmstat_oom_kills() -> u64 {
    let text = std::fs::read_to_string("/proc/vmstat").expect("/proc/vmstat");
    cgtrace::cgroup::scratch::keyed_value(&text, "oom_kill").unwrap_or(0)
}

/// Other processes that would compete with our victim for the global OOM
/// killer's choice (an `oom_score_adj` near the maximum).
fn rivals(victim: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != victim)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
                .ok()
                .and_then(|v| v.trim().parse::<i32>().ok())
                .is_some_and(|adj| adj >= 900)
        })
        .map(|pid| pid.to_string())
        .collect()
}

#[test]
fn a_global_oom_is_reported_as_global() {
    if !require_root("a_global_oom_is_reported_as_global") {
        return;
    }
    if !std::path::Path::new("/proc/sysrq-trigger").exists() {
        // Without SysRq the only way to a global OOM is exhausting all of the
        // host's memory, which would evict every cache and stall every other
        // test; the VM matrix runs this on kernels that have SysRq.
        eprintln!(
            "skipped a_global_oom_is_reported_as_global: kernel {} has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ off)",
            cgtrace::system::kernel_release()
        );
        return;
    }
    let mut probe = Probe::load(&probe_options(FeatureSet::OOM)).expect("load probe");
    let cgroup = scratch("global", None);
    let id = cgroup.id().unwrap();
    let mut command = std::process::Command::new("sleep");
    command.arg("600");
    let mut victim = cgtrace_tests::ChildGuard(cgroup.spawn_into(&mut command).unwrap());
    let others = rivals(victim.pid());
    if !others.is_empty() {
        eprintln!(
            "skipped a_global_oom_is_reported_as_global: processes {others:?} have oom_score_adj >= 900 and could be chosen instead"
        );
        return;
    }
    // The highest possible badness: the global OOM killer must pick it.
    std::fs::write(format!("/proc/{}/oom_score_adj", victim.pid()), "1000").unwrap();
    let before = vmstat_oom_kills();
    // SysRq-f runs the global OOM killer once (out_of_memory() with no memcg),
    // as a real machine-wide shortage would.
    std::fs::write("/proc/sysrq-trigger", "f").expect("write /proc/sysrq-trigger");
    let status = victim.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the global OOM killer should have picked the sleeper: {status}"
    );
    let kills = collect(&mut probe, |k| !in_cgroup(k, id).is_empty());
    let ours = in_cgroup(&kills, id);
    assert_eq!(ours.len(), 1, "{ours:#?}");
    let kill = ours[0];
    assert_eq!(kill.victim.pid, victim.pid());
    assert_eq!(kill.victim.comm, "sleep");
    assert_eq!(kill.victim.cgroup.as_deref(), Some(cgroup.path()));
    assert_eq!(kill.oom_score_adj, Some(1000));
    assert_eq!(kill.constraint, Constraint::Global, "{kill:#?}");
    assert!(
        kill.oom_memcg.is_none(),
        "no memcg limit was involved: {kill:#?}"
    );
    assert_eq!(kill.counted_as_kill, Some(true));
    let after = vmstat_oom_kills();
    assert_eq!(
        after - before,
        1,
        "the kernel counted exactly one OOM kill machine-wide"
    );
}

/// `memory.oom.group` (cgroup v2 only): the kernel kills every task of the
/// group; each process killed is one event, flagged as part of a group kill.
#[test]
fn a_group_kill_is_flagged_on_every_member() {
    if !require_root("a_group_kill_is_flagged_on_every_member") {
        return;
    }
    let cgroup = scratch("group-kill", Some(64 * MIB));
    if cgroup.version() != cgtrace::cgroup::Version::V2 {
        eprintln!(
            "skipped a_group_kill_is_flagged_on_every_member: memory.oom.group is cgroup v2 only (`cargo xtask vm-test` runs it)"
        );
        return;
    }
    cgroup.set_oom_group(true).expect("set memory.oom.group");
    let mut probe = Probe::load(&probe_options(FeatureSet::OOM)).expect("load probe");
    let id = cgroup.id().unwrap();
    let mut sleep = std::process::Command::new("sleep");
    sleep.arg("600");
    let mut sleeper = cgtrace_tests::ChildGuard(cgroup.spawn_into(&mut sleep).expect("sleep"));
    let mut hog = memhog(&cgroup, 200);
    hog.wait();
    let status = sleeper.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the group kill took the bystander too: {status}"
    );
    wait_until("the kernel's oom_kill counter", || {
        cgroup.oom_kill_count().unwrap() >= 2
    });
    // The kernel's counter can exceed the processes killed: sweeping the
    // group kills the first victim again and counts it again (6.x). The
    // probe fires once per process marked as a victim.
    let kills = collect(&mut probe, |k| in_cgroup(k, id).len() >= 2);
    let ours = in_cgroup(&kills, id);
    let mut pids: Vec<u32> = ours.iter().map(|k| k.victim.pid).collect();
    pids.sort_unstable();
    let mut expected = vec![hog.pid(), sleeper.pid()];
    expected.sort_unstable();
    assert_eq!(pids, expected, "one event per process killed: {ours:#?}");
    assert!(ours.iter().all(|k| k.group_kill == Some(true)), "{ours:#?}");
    assert!(
        cgroup.oom_kill_count().unwrap() >= 2,
        "the kernel counted both kills"
    );
}
