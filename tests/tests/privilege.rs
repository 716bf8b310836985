//! Least privilege against the real kernel: a non-root user with only
//! CAP_BPF, CAP_PERFMON and CAP_SYSLOG sees a kill, and cgtrace gives up
//! all but what it needs once attached; a missing capability is named; a
//! cgroup namespace other than the host's leaves the reported paths the
//! host's.

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::PathBuf,
    process::Command,
};

use cgtrace::cgroup::scratch::JoinOnExec;
use cgtrace_tests::{
    Follower, as_user_with_capabilities, cgtrace_bin, memhog, process_status, require_root, scratch,
};

const MIB: u64 = 1 << 20;
const NOBODY: u32 = 65534;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The binary copied where any user may run it (the build tree may sit
/// in a directory only root can enter).
struct RunnableCopy {
    dir: tempfile::TempDir,
}

impl RunnableCopy {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cgtrace-test-privilege")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Copied by another process: a descriptor open for writing here
        // would leak into the children other tests fork meanwhile, and
        // exec would fail with ETXTBSY while they hold it.
        let copied = Command::new("cp")
            .arg(cgtrace_bin())
            .arg(dir.path().join("cgtrace"))
            .status()
            .unwrap();
        assert!(copied.success());
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("cgtrace")
    }
}

#[test]
fn a_user_with_three_capabilities_sees_a_kill_and_keeps_one() {
    if !require_root("a_user_with_three_capabilities_sees_a_kill_and_keeps_one") {
        return;
    }
    let copy = RunnableCopy::new();
    let mut command = Command::new(copy.path());
    command.args(["oom", "--follow", "--json"]);
    let mut capabilities = vec![CAP_BPF, CAP_PERFMON, CAP_SYSLOG];
    if counts_bpf_memory() {
        // Before 5.11 the maps count against RLIMIT_MEMLOCK, which cgtrace
        // raises with this, and gives it up with the rest once attached.
        capabilities.push(CAP_SYS_RESOURCE);
    }
    as_user_with_capabilities(&mut command, NOBODY, &capabilities);
    let mut follower = Follower::spawn(&mut command, None);
    let said = follower.stderr_line("cgtrace: capabilities:");
    assert!(said.contains("kept CAP_BPF"), "{said}");
    let pid = follower.pid();
    assert!(process_status(pid, "Uid").starts_with("65534"));
    // Only CAP_BPF (bit 39) is left, in effect and permitted, and nothing
    // it runs could regain the others.
    assert_eq!(process_status(pid, "CapEff"), "0000008000000000");
    assert_eq!(process_status(pid, "CapPrm"), "0000008000000000");
    assert_eq!(process_status(pid, "CapAmb"), "0000000000000000");
    assert_eq!(process_status(pid, "NoNewPrivs"), "1");

    sees_a_kill_by_its_host_path(follower, "nonroot");
}

/// Whether this kernel counts BPF maps against RLIMIT_MEMLOCK (before 5.11).
fn counts_bpf_memory() -> bool {
    cgtrace::probe::memlock::kernel_counts_bpf_memory(&cgtrace::system::kernel_release())
}

#[test]
fn a_memlock_limit_too_low_for_the_maps_is_named_with_the_fix() {
    if !require_root("a_memlock_limit_too_low_for_the_maps_is_named_with_the_fix")
        || !counts_bpf_memory()
    {
        // Since 5.11 the maps are charged to the memcg: no limit to hit.
        return;
    }
    let copy = RunnableCopy::new();
    let mut command = Command::new(copy.path());
    command.args(["oom", "--follow", "--json"]);
    // SAFETY: one system call between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    as_user_with_capabilities(&mut command, NOBODY, &[CAP_BPF, CAP_PERFMON, CAP_SYSLOG]);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("RLIMIT_MEMLOCK, 64 KiB"), "{stderr}");
    assert!(stderr.contains("CAP_SYS_RESOURCE"), "{stderr}");
}

/// An OOM kill in a fresh scratch cgroup reaches `follower`, named by
/// the cgroup's path on the host; then the follower exits cleanly.
fn sees_a_kill_by_its_host_path(mut follower: Follower, test: &str) {
    let cgroup = scratch(test, Some(100 * MIB));
    memhog(&cgroup, 200).wait();
    let kill = follower.wait_for("the kill, named by its host path", |v| {
        v["type"] == "oom_kill" && v["victim"]["cgroup"] == cgroup.path()
    });
    assert_eq!(kill["oom_memcg"]["path"], cgroup.path());
    assert_eq!(kill["oom_memcg"]["limit_bytes"], 100 * MIB);
    let (status, _, stderr) = follower.interrupt();
    assert_eq!(status.code(), Some(0), "{stderr:?}");
}

#[test]
fn a_missing_capability_is_named() {
    if !require_root("a_missing_capability_is_named") {
        return;
    }
    let copy = RunnableCopy::new();
    let mut command = Command::new(copy.path());
    command.args(["oom", "--follow"]);
    as_user_with_capabilities(&mut command, NOBODY, &[CAP_BPF]);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lacks CAP_PERFMON"), "{stderr}");
    assert!(!stderr.contains("lacks CAP_BPF"), "{stderr}");
}

#[test]
fn another_cgroup_namespace_reports_the_hosts_paths() {
    if !require_root("another_cgroup_namespace_reports_the_hosts_paths") {
        return;
    }
    // cgtrace starts in a cgroup of its own, then in a new cgroup
    // namespace rooted there: /proc/self/cgroup says "/", and the host's
    // hierarchies show in mountinfo as "/..".
    let home = scratch("cgns-home", None);
    let mut command = Command::new(cgtrace_bin());
    command.args(["oom", "--follow", "--json"]);
    let joining = JoinOnExec::new(&[&home], &mut command).unwrap();
    // SAFETY: unshare(2) only, between fork and exec; registered after the
    // cgroup join, so it runs after it.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::unshare(libc::CLONE_NEWCGROUP) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let follower = Follower::spawn(&mut command, None);
    drop(joining);
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/cgroup")).unwrap();
    assert_ne!(
        namespace(&follower.pid().to_string()),
        namespace("self"),
        "cgtrace runs in a cgroup namespace of its own"
    );
    sees_a_kill_by_its_host_path(follower, "cgns-victim");
}
