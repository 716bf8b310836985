//! Recording a real workload and reporting on it: the trace holds what the
//! live views show, survives the recorder being killed, and bad files get
//! clear errors.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cgtrace_tests::{
    KilledLeftovers, cgtrace_bin, json_lines, report_json, require_root, trace_path,
};

#[test]
fn a_recorded_run_reports_its_oom_kill_and_throttling() {
    if !require_root("a_recorded_run_reports_its_oom_kill_and_throttling") {
        return;
    }
    let path = trace_path("round-trip");
    let bin = cgtrace_bin();
    let script = format!("{0} __spin 2 1; exec {0} __memhog 200", bin.display());
    let status = Command::new(&bin)
        .args(["record", "-o"])
        .arg(&path)
        .args([
            "--memory-limit",
            "100M",
            "--cpu-limit",
            "0.2",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(137),
        "the memory hog was OOM-killed and that is cgtrace's exit code"
    );
    let report = report_json(&path);
    assert_eq!(report["ending"]["complete"], true);
    assert_eq!(report["losses"]["ring_buffer_drops"], 0);
    let kills = report["oom_kills"].as_array().unwrap();
    assert_eq!(kills.len(), 1, "{report}");
    let kill = &kills[0];
    assert_eq!(kill["victim"]["comm"], "cgtrace");
    assert_eq!(kill["oom_memcg"]["limit_bytes"], 100 << 20);
    let group = kill["victim"]["cgroup"].as_str().unwrap().to_owned();
    assert!(group.starts_with("/cgtrace-record-"), "{group}");
    let row = report["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cgroup"] == group.as_str())
        .unwrap_or_else(|| panic!("no row for {group}: {report}"));
    assert_eq!(row["oom_kills"], 1);
    // 2 s of spinning at 20% of a core, then the memory hog: throttled in
    // (nearly) every 100 ms period, for about 80% of each; never in more
    // periods than the recording lasted (an emulated guest runs the memory
    // hog for longer, under the same quota).
    let throttled = row["throttled_periods"].as_u64().unwrap();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "seconds"
    )]
    let periods = (report["duration_s"].as_f64().unwrap() * 10.0).ceil() as u64 + 1;
    assert!(
        (18..=periods).contains(&throttled),
        "{periods} periods: {row}"
    );
    assert!(
        row["throttled_ns"].as_u64().unwrap() > 1_200_000_000,
        "{row}"
    );
    replays_agree(&path, kill, &group, throttled);
    exports_agree(&path, &report);
}

/// `oom --input` prints the kill as the live view did; `throttle --input`
/// shows the same periods, interval by interval (an episode that goes on
/// into the next interval counts there only the periods it grew by; a
/// span that arrives out of order may still count one more).
fn replays_agree(path: &std::path::Path, kill: &serde_json::Value, group: &str, throttled: u64) {
    let input = |view: &str| {
        json_lines(&[
            view.as_ref(),
            "--input".as_ref(),
            path.as_ref(),
            "--json".as_ref(),
        ])
    };
    let replayed: Vec<_> = input("oom")
        .into_iter()
        .filter(|v| v["type"] == "oom_kill")
        .collect();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0]["victim"], kill["victim"]);
    assert_eq!(replayed[0]["oom_memcg"], kill["oom_memcg"]);
    assert_eq!(replayed[0]["time"], kill["time"]);
    let rows: Vec<serde_json::Value> = input("throttle")
        .iter()
        .flat_map(|v| v["cgroups"].as_array().cloned().unwrap_or_default())
        // Other tests' groups throttle meanwhile, and the recorder sees them too.
        .filter(|row| row["cgroup"] == group)
        .collect();
    let periods: u64 = rows
        .iter()
        .map(|row| row["throttled_periods"].as_u64().unwrap())
        .sum();
    assert!(
        (throttled..=throttled + 2).contains(&periods),
        "replayed {periods}, reported {throttled}"
    );
    // The kernel's own count, from the recorded cpu.stat samples, replayed
    // interval by interval: the same periods, the last interval's (where
    // the group is removed) included.
    let kernel: u64 = rows
        .iter()
        .filter_map(|row| row["kernel_throttled_periods"].as_u64())
        .sum();
    assert!(
        kernel.abs_diff(throttled) <= 2,
        "the kernel's throttled periods, replayed: {kernel}; cgtrace's: {throttled}; the spans, start and end within their 100 ms period: {}",
        spans_within_periods(path, group)
    );
}

/// The group's throttle spans as `start–end` milliseconds into their
/// 100 ms period: where a count went wrong, they show the period timer's
/// phase (where most end) and how late each end was seen.
fn spans_within_periods(path: &std::path::Path, group: &str) -> String {
    let lines = json_lines(&[
        "export".as_ref(),
        path.as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
    ]);
    let within = |ns: &serde_json::Value| {
        #[expect(clippy::cast_precision_loss, reason = "milliseconds to print")]
        let ms = (ns.as_u64().unwrap_or(0) % 100_000_000) as f64 / 1e6;
        format!("{ms:.2}")
    };
    lines
        .iter()
        .filter(|l| l["type"] == "throttle_span" && l["cgroup"] == group)
        .map(|l| format!("{}–{}", within(&l["start_ns"]), within(&l["end_ns"])))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every record is one JSON line; Perfetto's format has the throttle spans
/// as slices and the kill as an instant.
fn exports_agree(path: &std::path::Path, report: &serde_json::Value) {
    let export = |format: &str| {
        json_lines(&[
            "export".as_ref(),
            path.as_ref(),
            "--format".as_ref(),
            format.as_ref(),
        ])
    };
    let lines = export("jsonl");
    assert_eq!(lines.len() as u64, report["records"].as_u64().unwrap());
    assert_eq!(lines.iter().filter(|l| l["type"] == "oom_kill").count(), 1);
    let chrome = &export("chrome-trace")[0];
    let events = chrome["traceEvents"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "X" && e["name"] == "throttled")
    );
    assert!(events.iter().any(|e| e["ph"] == "i"));
}

#[test]
fn a_killed_recorder_leaves_a_readable_trace_that_says_so() {
    if !require_root("a_killed_recorder_leaves_a_readable_trace_that_says_so") {
        return;
    }
    let path = trace_path("sigkill");
    let bin = cgtrace_bin();
    let mut recorder = Command::new(&bin)
        .args(["record", "-o"])
        .arg(&path)
        .args(["--interval", "100ms", "--cpu-limit", "0.2", "--"])
        .arg(&bin)
        .args(["__spin", "30", "1"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _leftovers = KilledLeftovers::new(&format!("cgtrace-record-{}", recorder.id()));
    // Wait until at least a few chunks are on disk, then kill it hard.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 2000 {
        assert!(Instant::now() < deadline, "the recorder wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    recorder.kill().unwrap();
    recorder.wait().unwrap();
    // Cut the file mid-chunk, as a kill during a write would.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let report = report_json(&path);
    let text = Command::new(&bin)
        .arg("report")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(report["ending"]["complete"], false, "{report}");
    assert!(report["records"].as_u64().unwrap() > 0);
    assert!(
        report["losses"].is_null(),
        "the final counters never made it"
    );
    assert!(String::from_utf8_lossy(&text.stdout).contains("CUT SHORT at byte"));
}

#[test]
fn bad_trace_files_get_a_clear_error_and_exit_1() {
    let dir = std::env::temp_dir();
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty", b"", "empty"),
        ("text", b"this is not a trace file at all", "wrong magic"),
        ("short", b"CGTRACE\0\x01", "shorter than a trace header"),
        (
            "newer",
            b"CGTRACE\0\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            "newer cgtrace",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.join(format!(
            "cgtrace-test-bad-{name}-{}.cgt",
            std::process::id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let output = Command::new(cgtrace_bin())
            .arg("report")
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    let missing = Command::new(cgtrace_bin())
        .args(["report", "/nonexistent/run.cgt"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/run.cgt"));
}

/// A tmpfs mounted for a test, unmounted and removed on drop.
struct SmallTmpfs(std::path::PathBuf);

impl SmallTmpfs {
    fn mount(bytes: u64) -> Self {
        let dir = std::env::temp_dir().join(format!("cgtrace-test-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "cgtrace-test",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        Self(dir)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_stops_recording_with_a_clear_error_and_keeps_what_was_written() {
    if !require_root("a_full_disk_stops_recording_with_a_clear_error_and_keeps_what_was_written") {
        return;
    }
    let disk = SmallTmpfs::mount(4096);
    let path = disk.0.join("run.cgt");
    let bin = cgtrace_bin();
    let output = Command::new(&bin)
        .args(["record", "-o"])
        .arg(&path)
        .args([
            "--interval",
            "20ms",
            "--duration",
            "60s",
            "--cpu-limit",
            "0.1",
            "--",
        ])
        .arg(&bin)
        .args(["__spin", "60", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("stays readable"), "{stderr}");
    let report = report_json(&path);
    assert!(report["records"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn a_cgroup_filter_records_only_what_involves_those_cgroups() {
    if !require_root("a_cgroup_filter_records_only_what_involves_those_cgroups") {
        return;
    }
    let path = trace_path("filter");
    let outside = cgtrace_tests::scratch("filter-outside", None);
    let outside_file = cgtrace_tests::uncached_file("filter-outside", 32);
    let inside_file = cgtrace_tests::uncached_file("filter-inside", 32);
    // The command reads its file while a cgroup outside the filter reads
    // another: only the command's cgroup may show up.
    let script = format!(
        "sleep 0.3; cat {} > /dev/null; sleep 0.5",
        inside_file.path.display()
    );
    let mut recorder = Command::new(cgtrace_bin())
        .args([
            "record",
            "--interval",
            "100ms",
            "--cgroup",
            "/no-such-subtree",
            "-o",
        ])
        .arg(&path)
        .args(["--", "sh", "-c", &script])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    cgtrace_tests::read_in(&outside, &[&outside_file.path]);
    assert!(recorder.wait().unwrap().success());
    let report = report_json(&path);
    let names: Vec<&str> = report["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["cgroup"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("/cgtrace-record-")),
        "the command's cgroup is kept: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("filter-outside")),
        "a cgroup outside the filter was recorded: {names:?}"
    );
    let inside = names
        .iter()
        .find(|n| n.starts_with("/cgtrace-record-"))
        .unwrap();
    assert!(
        cgtrace_tests::row_for(&report, inside)["added_bytes"]
            .as_u64()
            .unwrap()
            >= 30 << 20
    );
}

#[test]
fn a_cgroup_gone_before_its_interval_ends_is_still_named() {
    if !require_root("a_cgroup_gone_before_its_interval_ends_is_still_named") {
        return;
    }
    let path = trace_path("short-lived");
    let file = cgtrace_tests::uncached_file("short-lived", 16);
    // One long interval: the cgroup is created, used and removed inside it,
    // so only its creation event can name it.
    let mut recorder = Command::new(cgtrace_bin())
        .args(["record", "--interval", "10s", "--duration", "3s", "-o"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::metadata(&*path).map_or(0, |m| m.len()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "recorder did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let name = {
        let cgroup = cgtrace_tests::scratch("short-lived", None);
        cgtrace_tests::read_in(&cgroup, &[&file.path]);
        cgroup.path().to_owned()
    };
    assert!(recorder.wait().unwrap().success());
    let report = report_json(&path);
    let row = cgtrace_tests::row_for(&report, &name);
    assert!(row["added_bytes"].as_u64().unwrap() >= 15 << 20, "{row}");
}
