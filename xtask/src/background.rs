//! Work run beside the host's integration tests on the CPU they leave
//! idle: the fuzzers' and the guests' builds, and the kernels' initramfs
//! images. The tests spend much of their time waiting on workloads and
//! kernel counters, and on two CPUs those builds would otherwise add their
//! whole length to `cargo xtask test`.
//!
//! The tests must not feel it: a build that took CPU from a test's cgroup
//! could change what the test measures (a spinner under a quota, the
//! tracer keeping up with its ring buffer). So its processes run under
//! `SCHED_IDLE`, in a CPU cgroup of their own with the lowest weight
//! (`cgtrace-test-background`). The policy alone is not enough: it orders
//! tasks within one cgroup, and between cgroups a busy one competes at its
//! cgroup's weight whatever its tasks' policy.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

/// The scratch cgroup's name, under the CPU controller's root.
const CGROUP: &str = "cgtrace-test-background";

/// Runs commands on idle CPU only.
pub struct IdleCpu {
    /// The cgroup made for them; `None` where none could be (not root, no
    /// CPU controller), and the policy alone applies.
    cgroup: Option<PathBuf>,
}

impl IdleCpu {
    /// Makes the cgroup, or says why the policy alone applies.
    pub fn new() -> Self {
        Self::named(CGROUP)
    }

    fn named(name: &str) -> Self {
        let cgroup = match make_cgroup(name) {
            Ok(dir) => Some(dir),
            Err(why) => {
                eprintln!(
                    "xtask: the background builds run under SCHED_IDLE alone (no CPU cgroup of their own: {why})"
                );
                None
            }
        };
        Self { cgroup }
    }

    /// `command` (program, arguments, environment and directory) run on
    /// idle CPU: a shell moves itself into the cgroup, then `chrt` starts
    /// the program under `SCHED_IDLE`, which its children inherit.
    /// Standard streams are set on what this returns.
    pub fn command(&self, command: &Command) -> Command {
        let mut idle = Command::new("sh");
        idle.arg("-c")
            .arg(r#"[ -n "$1" ] && echo $$ > "$1"; shift; exec chrt --idle 0 "$@""#)
            .arg("sh")
            .arg(
                self.cgroup
                    .as_ref()
                    .map_or_else(OsString::new, |dir| dir.join("cgroup.procs").into()),
            )
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => idle.env(key, value),
                None => idle.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            idle.current_dir(dir);
        }
        idle
    }

    /// Puts the calling thread (not its process) under `SCHED_IDLE`, for
    /// work done in this process, such as packing an initramfs.
    pub fn lower_this_thread() {
        let Ok(me) = std::fs::read_link("/proc/thread-self") else {
            return;
        };
        let Some(tid) = me.file_name().map(|t| t.to_string_lossy().into_owned()) else {
            return;
        };
        let _ = Command::new("chrt")
            .args(["--idle", "--pid", "0", &tid])
            .status();
    }
}

/// `command` as given, or run on idle CPU when `idle` is given.
pub fn on_cpu(command: Command, idle: Option<&IdleCpu>) -> Command {
    match idle {
        Some(idle) => idle.command(&command),
        None => command,
    }
}

impl Drop for IdleCpu {
    /// Removes the cgroup: its processes have ended by now (each command
    /// was waited for).
    fn drop(&mut self) {
        if let Some(dir) = &self.cgroup
            && let Err(error) = std::fs::remove_dir(dir)
        {
            eprintln!("xtask: cannot remove {}: {error}", dir.display());
        }
    }
}

/// The cgroup, with the lowest CPU weight, under the CPU controller's
/// root: cgroup v1's `cpu` hierarchy, else cgroup2 with `cpu` enabled.
fn make_cgroup(name: &str) -> Result<PathBuf, String> {
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    let v2 = Path::new("/sys/fs/cgroup");
    let (dir, weights): (PathBuf, &[(&str, &str)]) = if v1.join("cpu.shares").is_file() {
        (v1.join(name), &[("cpu.shares", "2"), ("cpu.idle", "1")])
    } else if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
        .is_ok_and(|enabled| enabled.split_whitespace().any(|c| c == "cpu"))
    {
        (v2.join(name), &[("cpu.weight", "1"), ("cpu.idle", "1")])
    } else {
        return Err("no cpu controller at /sys/fs/cgroup/cpu or in cgroup2's root".into());
    };
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        // Left by a run that was killed: empty, or its processes are ours.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(format!("cannot create {}: {error}", dir.display())),
    }
    let (weight, value) = weights[0];
    std::fs::write(dir.join(weight), value)
        .map_err(|error| format!("cannot set {weight} in {}: {error}", dir.display()))?;
    // The cgroup-level SCHED_IDLE (5.15 on); the weight covers older kernels.
    for (file, value) in &weights[1..] {
        let _ = std::fs::write(dir.join(file), value);
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_runs_under_sched_idle_with_its_environment_and_directory() {
        let idle = IdleCpu { cgroup: None };
        let mut probe = Command::new("sh");
        probe
            .args(["-c", r#"chrt -p $$; echo "$WHO in $(pwd)""#])
            .env("WHO", "the build")
            .current_dir("/tmp");
        let output = idle
            .command(&probe)
            .output()
            .expect("sh and chrt are installed");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        assert!(text.contains("SCHED_IDLE"), "{text}");
        assert!(text.contains("the build in /tmp"), "{text}");
    }

    #[test]
    fn as_root_the_command_runs_in_a_cgroup_of_the_lowest_weight_removed_after() {
        if !crate::is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let idle = IdleCpu::named("cgtrace-test-background-unit");
        let dir = idle.cgroup.clone().expect("a CPU cgroup as root");
        let output = idle
            .command(Command::new("cat").arg("/proc/self/cgroup"))
            .output()
            .expect("cat runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("/cgtrace-test-background-unit"), "{text}");
        let weight = ["cpu.shares", "cpu.weight"]
            .iter()
            .find_map(|file| std::fs::read_to_string(dir.join(file)).ok())
            .expect("a weight file");
        // 2 or 1 as written, 3 once cpu.idle is set (the idle weight).
        let weight: u64 = weight.trim().parse().expect("a number");
        assert!(weight <= 3, "{weight}");
        drop(idle);
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
