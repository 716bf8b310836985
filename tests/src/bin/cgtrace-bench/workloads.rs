//! The measured workloads. Each runs in a fresh scratch cgroup and returns
//! its wall time; the reads and the busy loop run as children of this
//! binary (`__read-random`, `__busy`), so they are real processes in the
//! cgroup like any workload.

use std::{
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cgtrace::cgroup::{Hierarchies, scratch::ScratchCgroup};
use cgtrace::workload::UncachedFile;
use cgtrace_tests::{ChildGuard, scratch};

/// Evicts the file from the page cache, so a run starts from disk. Done
/// before a tracer starts: evicting the previous run's pages is not part
/// of the measured run.
pub fn uncache(file: &UncachedFile) {
    file.drop_cache().expect("drop the file's cache");
}

/// W: the file read twice with `cat` in a memory cgroup smaller than the
/// file, so every read inserts into and evicts from the page cache (the
/// kernel's readahead brings large folios: few events per byte).
pub fn cat_twice(file: &UncachedFile, limit: u64, label: &str) -> Duration {
    let group = scratch(&format!("bench-{label}"), Some(limit));
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("cat \"$0\" > /dev/null && cat \"$0\" > /dev/null")
        .arg(&file.path)
        .stdout(Stdio::null());
    timed(&group, &mut command)
}

/// W0: the same two reads with readahead off (`POSIX_FADV_RANDOM`, 1 MiB
/// `read`s): the cache fills with 4 KiB pages, about a million page-cache
/// events per second, the stress case for per-event cost.
pub fn random_reads_twice(file: &UncachedFile, limit: u64, label: &str) -> Duration {
    let group = scratch(&format!("bench-{label}"), Some(limit));
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command
        .arg("__read-random")
        .arg(&file.path)
        .arg("2")
        .stdout(Stdio::null());
    timed(&group, &mut command)
}

/// The `__read-random PATH PASSES` child: reads the file `PASSES` times in
/// 1 MiB `read`s with readahead disabled.
pub fn read_random_main(path: &Path, passes: u32) {
    let mut buffer = vec![0u8; 1 << 20];
    for _ in 0..passes {
        let mut file = std::fs::File::open(path).expect("open the file");
        // SAFETY: a valid open descriptor; advice has no memory effects.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        assert_eq!(rc, 0, "posix_fadvise(POSIX_FADV_RANDOM)");
        while file.read(&mut buffer).expect("read") > 0 {}
    }
}

/// The OOM storm: `kills` allocations of `hog_mib` MiB, one after another,
/// each OOM-killed in a memory cgroup limited to `limit`.
pub fn oom_storm(cgtrace: &Path, kills: u32, hog_mib: u32, limit: u64, label: &str) -> Duration {
    let group = scratch(&format!("bench-{label}"), Some(limit));
    let started = Instant::now();
    for _ in 0..kills {
        let mut command = Command::new(cgtrace);
        command
            .args(["__memhog", &hog_mib.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard(group.spawn_into(&mut command).expect("start memhog"));
        let status = child.wait();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "the allocation was OOM-killed: {status}"
        );
    }
    started.elapsed()
}

/// A CPU cgroup with a CFS quota of `quota_us` per `period_us`.
pub fn quota_group(label: &str, quota_us: u64, period_us: u64) -> ScratchCgroup {
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    let name = format!("cgtrace-bench-{label}-{}", std::process::id());
    let group = ScratchCgroup::create_for(&hierarchies, "cpu", &name).expect("cpu cgroup");
    group.set_cpu_quota(quota_us, period_us).expect("set quota");
    group
}

/// Busy threads under a quota: `threads` threads each doing `iterations`
/// of a fixed loop in `group`; the wall time is set by the quota, and what
/// tracing adds shows up as time beyond it.
pub fn busy_under_quota(group: &ScratchCgroup, iterations: u64, threads: u32) -> Duration {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command
        .args(["__busy", &iterations.to_string(), &threads.to_string()])
        .stdout(Stdio::null());
    timed(group, &mut command)
}

/// The `__busy ITERATIONS THREADS` child.
pub fn busy_main(iterations: u64, threads: u32) {
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| std::thread::spawn(move || spin(iterations)))
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

fn spin(iterations: u64) -> u64 {
    let mut n = 0u64;
    for i in 0..iterations {
        n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(i));
    }
    n
}

/// Loop iterations one thread runs in about `target` on this machine.
pub fn calibrate_spin(target: Duration) -> u64 {
    let probe: u64 = 10_000_000;
    let started = Instant::now();
    spin(probe);
    let took = started.elapsed().as_secs_f64().max(1e-6);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a loop count"
    )]
    let iterations = (probe as f64 * target.as_secs_f64() / took) as u64;
    iterations
}

fn timed(group: &ScratchCgroup, command: &mut Command) -> Duration {
    let started = Instant::now();
    let mut child = ChildGuard(group.spawn_into(command).expect("start workload"));
    let status = child.wait();
    assert!(status.success(), "workload failed: {status}");
    started.elapsed()
}

/// S: two threads pinned to one CPU pass a byte back and forth over pipes,
/// so every message is a context switch. Returns the time per round trip
/// (two switches).
pub fn ping_pong(round_trips: u32) -> Duration {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    fn pipe() -> (std::fs::File, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the array with two fresh descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: each descriptor is owned exactly once.
        unsafe {
            (
                std::fs::File::from(OwnedFd::from_raw_fd(fds[0])),
                std::fs::File::from(OwnedFd::from_raw_fd(fds[1])),
            )
        }
    }
    fn pin_to_cpu0() {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
        }
    }
    let (mut to_peer_read, mut to_peer_write) = pipe();
    let (mut back_read, mut back_write) = pipe();
    let peer = std::thread::spawn(move || {
        pin_to_cpu0();
        let mut byte = [0u8; 1];
        while to_peer_read.read_exact(&mut byte).is_ok() {
            if back_write.write_all(&byte).is_err() {
                break;
            }
        }
    });
    pin_to_cpu0();
    let mut byte = [1u8; 1];
    let started = Instant::now();
    for _ in 0..round_trips {
        to_peer_write.write_all(&byte).expect("ping");
        back_read.read_exact(&mut byte).expect("pong");
    }
    let took = started.elapsed();
    drop(to_peer_write);
    let _ = peer.join();
    // Children inherit affinity: later workloads must not start pinned.
    unpin();
    took / round_trips
}

/// Lets this thread run on every CPU again.
fn unpin() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
    }
}
