//! Faults around a running cgtrace, against the real kernel: SIGKILL at
//! any moment of start-up, attach and writing; the disk filling under a
//! recording; the kubelet's log directory unreadable. cgtrace keeps running
//! or ends with a clear word, loses nothing it could have kept, and leaves
//! nothing behind: no BPF program, no process, no cgroup (a cgroup that a
//! killed recorder could not remove goes at the next recording).

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use cgtrace::cgroup::{Hierarchies, scratch::ScratchCgroup};
use cgtrace_tests::{Follower, Tmpfs, cgtrace_bin, memhog, require_root, wait_until};

/// One test at a time: the first counts the kernel's BPF programs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What the recorded command runs, to find any left running.
const SLEEP_SECONDS: &str = "31.7";

/// How many BPF programs the kernel holds (`BPF_PROG_GET_NEXT_ID`).
fn bpf_programs() -> usize {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    // union bpf_attr's get-next-id form: start_id, then next_id.
    let mut attr = [0u32; 4];
    let mut count = 0;
    loop {
        // SAFETY: bpf(2) reads and writes the 16-byte attribute given.
        let result = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_NEXT_ID,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if result != 0 {
            return count;
        }
        count += 1;
        attr[0] = attr[1];
    }
}

/// Processes running `sleep SLEEP_SECONDS`.
fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .any(|a| a == SLEEP_SECONDS.as_bytes())
            })
        })
        .count()
}

/// Top-level cgroups named after a recorder `pid`, in any hierarchy.
fn record_cgroups(pid: u32) -> Vec<String> {
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    hierarchies
        .list
        .iter()
        .map(|h| h.mount.join(format!("cgtrace-record-{pid}")))
        .filter(|dir| dir.exists())
        .map(|dir| dir.display().to_string())
        .collect()
}

/// `cgtrace report FILE`: it may refuse the file, but says why and does
/// not panic. Returns whether it read it.
fn report_reads(path: &Path) -> bool {
    let output = Command::new(cgtrace_bin())
        .arg("report")
        .arg(path)
        .output()
        .expect("run cgtrace report");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(101) && !stderr.contains("panicked"),
        "report of a killed recording panicked: {stderr}"
    );
    if !output.status.success() {
        assert!(
            stderr.starts_with("cgtrace: "),
            "report refused without saying why: {stderr}"
        );
    }
    output.status.success()
}

#[test]
fn sigkill_at_any_moment_leaves_nothing_behind() {
    if !require_root("sigkill_at_any_moment_leaves_nothing_behind") {
        return;
    }
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let programs_before = bpf_programs();
    let dir = tempfile::tempdir().expect("a directory");
    let mut killed = Vec::new();
    let mut readable = 0;
    // From before the first probe loads to well into writing; the last one
    // once records are on disk, however long start-up takes (an emulated
    // guest's can pass any fixed delay).
    for delay_ms in [0, 15, 30, 50, 80, 120, 200, 350, 600, 1200, u64::MAX] {
        let trace = dir.path().join(format!("killed-{delay_ms}.cgt"));
        let mut recorder = Command::new(cgtrace_bin())
            .arg("record")
            .arg("-o")
            .arg(&trace)
            .args(["--interval", "100ms", "--", "sleep", SLEEP_SECONDS])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cgtrace record");
        if delay_ms == u64::MAX {
            wait_until("the recorder's first records on disk", || {
                trace.metadata().is_ok_and(|m| m.len() > 4096)
            });
        } else {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        recorder.kill().expect("SIGKILL");
        recorder.wait().expect("reap");
        killed.push(recorder.id());
        if trace.metadata().is_ok_and(|m| m.len() > 0) && report_reads(&trace) {
            readable += 1;
        }
    }
    assert!(readable > 0, "no killed recording could be read back");
    // The kernel drops a program once the last descriptor of it closes.
    wait_until("the killed recorders' programs to go", || {
        bpf_programs() <= programs_before
    });
    // The command dies with its recorder (parent-death signal).
    wait_until("the recorded commands to end", || sleepers() == 0);
    let left_by_kills: usize = killed.iter().map(|pid| record_cgroups(*pid).len()).sum();
    eprintln!(
        "{} recorders killed: {readable} recordings read back, {left_by_kills} cgroups left until the next recording",
        killed.len()
    );
    // The next recording removes what the killed ones left.
    let status = Command::new(cgtrace_bin())
        .arg("record")
        .arg("-o")
        .arg(dir.path().join("next.cgt"))
        .args(["--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run cgtrace record");
    assert!(status.success(), "{status}");
    let left: Vec<String> = killed.iter().flat_map(|pid| record_cgroups(*pid)).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

#[test]
fn a_full_disk_ends_a_recording_with_a_clear_word_and_what_was_written_reads_back() {
    if !require_root(
        "a_full_disk_ends_a_recording_with_a_clear_word_and_what_was_written_reads_back",
    ) {
        return;
    }
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("a directory");
    let _disk = Tmpfs::mount(dir.path(), "256k");
    // Something else has filled the disk but one page: the trace's header
    // and first chunks fit, and a quiet machine (a test guest) fills the
    // rest within seconds.
    let mut filler = std::fs::File::create(dir.path().join("filler")).expect("a filler file");
    let block = vec![0u8; 4096];
    while filler.write_all(&block).is_ok() {}
    let full = filler.metadata().map_or(0, |m| m.len());
    filler
        .set_len(full.saturating_sub(4096))
        .expect("free one page");
    drop(filler);
    let trace = dir.path().join("run.cgt");
    let started = Instant::now();
    let output = Command::new(cgtrace_bin())
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .args(["--interval", "100ms", "--duration", "20s"])
        .output()
        .expect("run cgtrace record");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a full disk is not success: {stderr}"
    );
    assert!(
        stderr.contains("No space left on device") && stderr.contains("stays readable"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "it stopped when the disk filled, not at the end"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(report_reads(&trace), "what was written reads back");
}

#[test]
fn unreadable_pod_logs_are_said_once_and_kills_are_still_reported() {
    if !require_root("unreadable_pod_logs_are_said_once_and_kills_are_still_reported") {
        return;
    }
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A file where the kubelet's log directory should be.
    let not_a_dir = tempfile::NamedTempFile::new().expect("a file");
    let path = not_a_dir.path().display().to_string();
    let mut follower = Follower::start(&["--pod-logs", &path, "--container-logs", &path]);
    // A kubepods-shaped cgroup (the systemd driver's names), so cgtrace
    // looks for the pod's name.
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    let name = format!("cgtrace-test-faults-{}-kubepods.slice", std::process::id());
    let mut parent = ScratchCgroup::create(&hierarchies, &name).expect("a scratch cgroup");
    let uid = "0badf00d-0000-4bad-8a9b-0c1d2e3f4a5b";
    let pod = parent
        .child(&format!("kubepods-pod{}.slice", uid.replace('-', "_")))
        .expect("a pod cgroup");
    pod.set_memory_limit(32 << 20).expect("a limit");
    let pod_path = pod.path().to_owned();
    let mut hog = memhog(pod, 64);
    hog.wait();
    let kill = follower.wait_for("the pod's kill", |v| {
        v["victim"]["cgroup"] == pod_path.as_str()
    });
    assert_eq!(kill["victim"]["workload"]["pod_uid"], uid, "{kill}");
    assert!(kill["victim"]["workload"]["pod"].is_null(), "{kill}");
    let said = follower.stderr_line("cgtrace: pod names: cannot read");
    assert!(
        said.contains(&path) && said.contains("pods are shown by uid"),
        "{said}"
    );
    let (status, _, stderr) = follower.interrupt();
    assert!(status.success(), "{status}");
    assert!(
        !stderr
            .iter()
            .any(|l| l.starts_with("cgtrace: pod names: cannot read")),
        "said once: {stderr:?}"
    );
}

/// Every map that can fill, capped at two entries (`CGTRACE_MAP_ENTRIES`):
/// reclaim in four groups at once, throttling in three, an OOM kill.
/// The recording goes on, counts what the maps could not keep as
/// map-full, says so, and still has the kill the kernel counted.
#[test]
fn full_maps_are_counted_and_said_and_the_rest_goes_on() {
    if !require_root("full_maps_are_counted_and_said_and_the_rest_goes_on") {
        return;
    }
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("a directory");
    let trace = dir.path().join("full.cgt");
    let recorder = Command::new(cgtrace_bin())
        .env("CGTRACE_MAP_ENTRIES", "2")
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .args(["--interval", "200ms", "--duration", "8s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cgtrace record");
    std::thread::sleep(Duration::from_secs(2));
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    // Busy loops under a tenth of a core each: throttled on both CPUs.
    let mut spinners = Vec::new();
    let mut cpu_groups = Vec::new();
    for n in 0..3 {
        let name = format!("cgtrace-test-full-spin{n}-{}", std::process::id());
        let group = ScratchCgroup::create_for(&hierarchies, "cpu", &name).expect("a cpu cgroup");
        group.set_cpu_quota(10_000, 100_000).expect("a quota");
        let mut command = Command::new("sh");
        command.args(["-c", "while :; do :; done"]);
        spinners.push(cgtrace_tests::ChildGuard(
            group.spawn_into(&mut command).expect("a spinner"),
        ));
        cpu_groups.push(group);
    }
    // Page cache read under tight limits in four groups at once.
    let file = cgtrace_tests::uncached_file("full-maps", 96);
    let readers: Vec<_> = (0..4)
        .map(|n| {
            let group = cgtrace_tests::scratch(&format!("full-read{n}"), Some(24 << 20));
            let path = file.path.clone();
            std::thread::spawn(move || {
                cgtrace_tests::read_in(&group, &[&path]);
                group
            })
        })
        .collect();
    let killed = cgtrace_tests::scratch("full-oom", Some(32 << 20));
    memhog(&killed, 64).wait();
    let groups: Vec<_> = readers
        .into_iter()
        .map(|r| r.join().expect("a reader"))
        .collect();
    drop(spinners);
    let output = recorder.wait_with_output().expect("the recording");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let map_full: u64 = stderr
        .lines()
        .find(|l| l.starts_with("cgtrace: wrote"))
        .and_then(|l| l.strip_suffix(" map-full"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no map-full figure: {stderr}"));
    assert!(map_full > 0, "the maps never filled: {stderr}");
    let report = cgtrace_tests::report_json(&trace);
    assert_eq!(report["losses"]["map_full"], map_full, "{report}");
    let kills = report["oom_kills"].as_array().expect("kills");
    let in_group = kills
        .iter()
        .filter(|k| k["victim"]["cgroup"] == killed.path())
        .count();
    assert_eq!(
        in_group as u64,
        killed.oom_kill_count().expect("the kernel's count"),
        "every kill the kernel counted"
    );
    eprintln!("full maps: {map_full} map-full, {in_group} kill(s) reported");
    drop(groups);
    drop(cpu_groups);
}
