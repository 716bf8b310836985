//! The `cgtrace` command as a user runs it: live OOM reporting, history from
//! the kernel log, `check`, clean exits and clear errors.

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::Instant,
};

use cgtrace_tests::{
    Follower, KilledLeftovers, View, cgtrace_bin, memhog, page_past_eof, require_root, row_for,
    scratch, wait_until,
};

const MIB: u64 = 1 << 20;

#[test]
fn follow_reports_a_kill_live_and_detaches_cleanly_on_sigint() {
    if !require_root("follow_reports_a_kill_live_and_detaches_cleanly_on_sigint") {
        return;
    }
    let mut follower = Follower::start(&[]);
    let cgroup = scratch("follow", Some(100 * MIB));
    let mut hog = memhog(&cgroup, 200);
    let pid = u64::from(hog.pid());
    hog.wait();
    let killed_at = Instant::now();
    let kill = follower.wait_for("the live OOM record", |v| {
        v["type"] == "oom_kill" && v["victim"]["pid"] == pid
    });
    eprintln!(
        "live record {:?} after the workload died",
        killed_at.elapsed()
    );
    assert_eq!(kill["source"], "probe");
    assert_eq!(kill["victim"]["cgroup"], cgroup.path());
    assert_eq!(kill["constraint"], "memcg");
    assert_eq!(kill["oom_memcg"]["path"], cgroup.path());
    assert_eq!(kill["oom_memcg"]["limit_bytes"], 100 * MIB);
    assert_eq!(kill["oom_memcg"]["values_from"], "kernel");
    assert!(kill["time"].as_str().unwrap().ends_with('Z'));

    let (status, lines, stderr) = follower.interrupt();
    assert_eq!(status.code(), Some(0), "SIGINT exits 0; stderr: {stderr:?}");
    let kills_of_pid = lines
        .iter()
        .filter(|v| v["type"] == "oom_kill" && v["victim"]["pid"] == pid)
        .count();
    assert_eq!(
        kills_of_pid, 1,
        "reported once, though both probe and kernel log saw it"
    );
    let last = lines.last().expect("a final record");
    assert_eq!(last["type"], "stats");
    assert_eq!(last["final"], true);
    assert_eq!(last["probe"]["ring_buffer_drops"], 0);
    assert_eq!(last["probe"]["recursion_misses"], 0);
    assert!(last["probe"]["records"].as_u64().unwrap() >= 1);
}

#[test]
fn history_lists_kills_from_before_cgtrace_started() {
    if !require_root("history_lists_kills_from_before_cgtrace_started") {
        return;
    }
    let cgroup = scratch("history", Some(64 * MIB));
    let mut hog = memhog(&cgroup, 200);
    let pid = u64::from(hog.pid());
    hog.wait();
    wait_until("the kernel's oom_kill counter", || {
        cgroup.oom_kill_count().unwrap() >= 1
    });
    let mut found = None;
    wait_until("the kill in the kernel log", || {
        let output = Command::new(cgtrace_bin())
            .args(["oom", "--json"])
            .output()
            .unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        found = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["type"] == "oom_kill" && v["victim"]["pid"] == pid);
        found.is_some()
    });
    let kill = found.unwrap();
    assert_eq!(kill["source"], "kernel_log");
    assert_eq!(kill["victim"]["cgroup"], cgroup.path());
    assert_eq!(kill["oom_memcg"]["path"], cgroup.path());
    assert_eq!(kill["oom_memcg"]["limit_bytes"], 64 * MIB);
    assert_eq!(kill["constraint_found_by"], "kernel_log");
}

#[test]
fn check_describes_this_kernel_and_exits_zero() {
    if !require_root("check_describes_this_kernel_and_exits_zero") {
        return;
    }
    let output = Command::new(cgtrace_bin())
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(report["kernel"], release.trim());
    assert_eq!(report["can_run"], true);
    let feature = |name: &str| {
        report["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["feature"] == name)
            .unwrap()
            .clone()
    };
    let oom = feature("oom");
    assert_eq!(oom["status"], "ready");
    // Every kernel cgtrace supports has the cgroup_mkdir tracepoint: its
    // program must pass this kernel's verifier.
    let names = feature("cgroup names");
    assert_eq!(names["status"], "ready", "{names}");
    let variant = oom["variant"].as_str().unwrap();
    // Which variant depends on whether the kernel allows fentry; either way
    // it must name the tp_btf hook it attached.
    assert!(variant.contains("tp_btf mark_victim"), "{variant}");
    let memory_v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    if memory_v1 {
        assert!(
            report["cgroup_mode"]
                .as_str()
                .unwrap()
                .starts_with("hybrid")
                || report["cgroup_mode"] == "v1"
        );
    }
    // A kernel member the probes read that this kernel lacks has a declared
    // cost, and check says it; none is read at a guessed offset.
    for absent in report["absent_members"].as_array().unwrap() {
        assert_ne!(absent["loses"], "undeclared", "{absent}");
    }
    let table = Command::new(cgtrace_bin()).arg("check").output().unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("oom") && l.contains("ready")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("layout ")), "{text}");
}

/// `check --probe-log --json` with these extra arguments: what the probes
/// did on check's own workload.
fn probe_log(extra: &[&str]) -> serde_json::Value {
    let output = Command::new(cgtrace_bin())
        .args(["check", "--probe-log", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    report["probe_log"]["Ok"].clone()
}

#[test]
fn the_probe_log_names_the_chain_that_failed_and_why() {
    if !require_root("the_probe_log_names_the_chain_that_failed_and_why") {
        return;
    }
    // On the kernel as it is, the workload reaches the page-cache, reclaim
    // and throttle programs, and every field they read is read.
    let clean = probe_log(&[]);
    let ran: Vec<&str> = clean["programs"]
        .as_array()
        .unwrap_or_else(|| panic!("no probe log: {clean}"))
        .iter()
        .filter_map(|p| p["program"].as_str())
        .collect();
    for program in [
        "cache_add",
        "cache_delete",
        "cgroup_mkdir",
        "memcg_reclaim_begin",
    ] {
        assert!(ran.contains(&program), "{program} did not run: {clean}");
    }
    assert_eq!(clean["read_failures"], serde_json::json!([]), "{clean}");
    assert_eq!(clean["log"], serde_json::json!([]), "{clean}");

    // A kernel without `folio.memcg_data`, shown on this one: every page-cache
    // event fails on that chain, is counted under it, and the programs say so.
    let absent = probe_log(&["--pretend-absent", "folio.memcg_data"]);
    let failures = absent["read_failures"].as_array().unwrap();
    let folio_owner = failures
        .iter()
        .find(|f| f["chain"] == "folio_owner")
        .unwrap_or_else(|| panic!("no folio_owner failures: {absent}"));
    assert!(folio_owner["failures"].as_u64().unwrap() > 0);
    assert_eq!(failures.len(), 1, "only that chain fails: {absent}");
    let log: Vec<&str> = absent["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        log.iter().any(|line| line
            .starts_with("cache_add: folio->memcg_data / flags: an offset BTF did not give")),
        "{log:?}"
    );
}

#[test]
fn without_root_the_error_says_what_is_missing() {
    if !require_root("without_root_the_error_says_what_is_missing") {
        return;
    }
    let output = Command::new(cgtrace_bin())
        .args(["oom", "--follow"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lacks CAP_BPF and CAP_PERFMON") && stderr.contains("sudo"),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_bad_recorder_options_before_loading_anything() {
    let run = |args: &[&str]| {
        let output = Command::new(cgtrace_bin()).args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    // A disk cap without a recorder is a usage error.
    let (code, stderr) = run(&["serve", "--max-disk", "1G"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--flight-recorder"), "{stderr}");
    // A cap too small to hold segments says what would do.
    let dir = tempfile::tempdir().unwrap();
    let recorder = dir.path().join("flight");
    let (code, stderr) = run(&[
        "serve",
        "--flight-recorder",
        recorder.to_str().unwrap(),
        "--max-disk",
        "100K",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("at least 1M"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_directory_without_segments_is_not_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(cgtrace_bin())
        .arg("report")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no trace segments"), "{stderr}");
}

#[test]
fn unknown_flags_are_usage_errors() {
    let output = Command::new(cgtrace_bin())
        .args(["oom", "--frobnicate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--frobnicate"), "{stderr}");
}

#[test]
fn a_forced_fentry_variant_works_or_says_why_not() {
    if !require_root("a_forced_fentry_variant_works_or_says_why_not") {
        return;
    }
    let output = Command::new(cgtrace_bin())
        .args(["oom", "--follow", "--probe-variant", "fentry", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            // Either it attaches (stderr names the variant) or it fails at once.
            let stderr = child.stderr.take().unwrap();
            // The first line about the OOM feature (the always-attached
            // cgroup_mkdir program reports itself before it).
            let first = std::io::BufRead::lines(std::io::BufReader::new(stderr))
                .map_while(Result::ok)
                .find(|line| !line.starts_with("cgtrace: cgroup names:"))
                .unwrap_or_default();
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(libc::pid_t::try_from(child.id()).unwrap(), libc::SIGTERM) };
            child.wait().map(|status| (status, first))
        })
        .unwrap();
    let (status, first) = output;
    if first.starts_with("cgtrace: oom: fentry") {
        assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    } else {
        assert_eq!(status.code(), Some(1), "{first}");
        assert!(
            first.contains("fentry out_of_memory"),
            "names the refused hook: {first}"
        );
    }
}

#[test]
fn history_without_privileges_is_a_clear_error_or_works() {
    if !require_root("history_without_privileges_is_a_clear_error_or_works") {
        return;
    }
    let output = Command::new(cgtrace_bin())
        .arg("oom")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let restricted =
        std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict").is_ok_and(|v| v.trim() == "1");
    if restricted {
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("/dev/kmsg") && stderr.contains("sudo"),
            "{stderr}"
        );
    } else {
        assert!(output.status.success(), "{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cache_json_names_the_group_its_files_and_its_evictions() {
    if !require_root("cache_json_names_the_group_its_files_and_its_evictions") {
        return;
    }
    let file = cgtrace_tests::uncached_file("cli-cache", 128);
    let view = View::start(
        &["cache", "--json", "--files", "--interval", "60s"],
        "cgtrace: memcg stat tracepoints:",
    );
    let group = scratch("cli-cache", Some(48 * MIB));
    cgtrace_tests::read_in(&group, &[&file.path]);
    // SIGINT ends the interval early: the report covers the read, then stats.
    let (status, lines) = view.interrupt();
    assert!(status.success(), "{status}");
    let report = lines
        .iter()
        .find(|v| v["type"] == "cache")
        .expect("a cache report");
    let row = row_for(report, group.path());
    // The file, and possibly a few pages of `cat` itself read in the group.
    let added = row["added_bytes"].as_u64().unwrap();
    assert!((128 * MIB..129 * MIB).contains(&added), "{row}");
    assert!(
        row["evicted_bytes"]["own_limit"].as_u64().unwrap() >= 64 * MIB,
        "{row}"
    );
    assert_eq!(row["reclaimers"][0]["cgroup"], group.path());
    let top_file = &row["files"][0];
    assert_eq!(
        top_file["added_bytes"],
        128 * MIB + page_past_eof(),
        "{row}"
    );
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file.path).unwrap());
    assert_eq!(top_file["ino"], ino);
    assert!(
        row["memory_events"]["max"].as_u64().unwrap() > 0,
        "hit its limit: {row}"
    );
    let final_record = lines.last().unwrap();
    assert_eq!(final_record["type"], "stats");
    // Counted, not assumed away: a memcg stat update from softirq (slab
    // freed by RCU) landing on a CPU where the same program is running is
    // skipped by the kernel and shows here; it is rare, never a flood.
    let misses = final_record["probe"]["recursion_misses"].as_u64().unwrap();
    assert!(misses < 100, "{final_record}");
}

/// Runs cgtrace with stdout and stderr going to pipes whose read ends are
/// already closed; returns the exit status.
fn run_with_closed_pipes(args: &[&str]) -> std::process::ExitStatus {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let mut out = [0; 2];
    let mut err = [0; 2];
    // SAFETY: pipe(2) fills the arrays with two fresh descriptors each.
    unsafe {
        assert_eq!(libc::pipe(out.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(err.as_mut_ptr()), 0);
    }
    // SAFETY: each descriptor is owned exactly once from here on.
    let (out_read, out_write, err_read, err_write) = unsafe {
        (
            OwnedFd::from_raw_fd(out[0]),
            OwnedFd::from_raw_fd(out[1]),
            OwnedFd::from_raw_fd(err[0]),
            OwnedFd::from_raw_fd(err[1]),
        )
    };
    drop((out_read, err_read));
    Command::new(cgtrace_bin())
        .args(args)
        .stdout(Stdio::from(out_write))
        .stderr(Stdio::from(err_write))
        .status()
        .unwrap()
}

#[test]
fn a_reader_that_goes_away_does_not_crash_cgtrace() {
    if !require_root("a_reader_that_goes_away_does_not_crash_cgtrace") {
        return;
    }
    // 101 is Rust's exit code for a panic.
    for args in [
        &["check"][..],
        &["oom"],
        &["cache", "--count", "1", "--interval", "100ms"],
    ] {
        let status = run_with_closed_pipes(args);
        assert_ne!(status.code(), Some(101), "cgtrace {args:?} panicked");
        assert!(
            status.code().is_some(),
            "cgtrace {args:?} was killed: {status}"
        );
    }
}

#[test]
fn throttle_json_reports_a_throttled_group_and_its_spans() {
    if !require_root("throttle_json_reports_a_throttled_group_and_its_spans") {
        return;
    }
    let hierarchies = cgtrace_tests::Hierarchies::discover().unwrap();
    let name = format!("cgtrace-test-cli-throttle-{}", std::process::id());
    let group = cgtrace_tests::ScratchCgroup::create_for(&hierarchies, "cpu", &name).unwrap();
    group.set_cpu_quota(20_000, 100_000).unwrap();
    // With a quota in place the per-switch probe is attached from the start.
    let view = View::start(
        &["throttle", "--json", "--spans", "--interval", "60s"],
        "cgtrace: throttle:",
    );
    let before = group.cpu_stat().unwrap();
    let mut spin = Command::new(cgtrace_bin());
    spin.args(["__spin", "2", "1"]);
    let mut child = cgtrace_tests::ChildGuard(group.spawn_into(&mut spin).unwrap());
    child.wait();
    let (status, lines) = view.interrupt();
    assert!(status.success(), "{status}");
    let kernel = group.cpu_stat().unwrap().since(&before);
    let spans = lines
        .iter()
        .filter(|v| v["type"] == "throttle_span" && v["cgroup"] == group.path())
        .count() as u64;
    let report = lines
        .iter()
        .find(|v| v["type"] == "throttle")
        .expect("a report");
    let row = row_for(report, group.path());
    assert_eq!(row["quota_millicores"], 200);
    assert_eq!(
        row["spans"].as_u64().unwrap(),
        spans,
        "every span was streamed"
    );
    let counted = row["throttled_periods"].as_u64().unwrap();
    assert!(kernel.nr_throttled > 5, "{kernel:?}");
    assert!(
        counted.abs_diff(kernel.nr_throttled) <= 2,
        "cgtrace {counted}, kernel {kernel:?}"
    );
    assert_eq!(lines.last().unwrap()["type"], "stats");
}

/// The kernel's BPF run-time statistics cost every BPF program on the host
/// a little while they are on. The demo turns them on to show what each
/// probe costs; killed with SIGKILL mid-scenario, it must not leave them on.
#[test]
fn a_killed_demo_leaves_bpf_statistics_as_they_were() {
    const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
    if !require_root("a_killed_demo_leaves_bpf_statistics_as_they_were") {
        return;
    }
    let before = std::fs::read_to_string(SYSCTL).expect("read the sysctl");
    let mut demo = Command::new(cgtrace_bin())
        .args(["demo", "--no-record", "--scenario", "throttle"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let _leftovers = KilledLeftovers::new(&format!("cgtrace-demo-{}-", demo.id()));
    // The statistics are on from before the first scenario's heading.
    let stdout = std::io::BufReader::new(demo.stdout.take().unwrap());
    let started = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .any(|line| line.starts_with("== throttle"));
    assert!(started, "the demo never reached its throttle scenario");
    demo.kill().unwrap();
    demo.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(SYSCTL).unwrap(),
        before,
        "kernel.bpf_stats_enabled after the demo was killed"
    );
}
