//! Scratch memory cgroups for the built-in scenarios and the tests.
//!
//! A [`ScratchCgroup`] is created under the memory hierarchy (v1 or v2,
//! whichever holds the controller), and on drop kills every process left in
//! it and removes it, even when the scenario or test failed half-way.

use std::{
    io,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::{Hierarchies, Version};

/// How long drop waits for killed processes to leave before removing.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error(
        "no {controller} cgroup controller is mounted (neither a v1 {controller} hierarchy nor cgroup2 with +{controller})"
    )]
    NoController { controller: &'static str },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A cgroup this process created and will remove.
#[derive(Debug)]
pub struct ScratchCgroup {
    dir: PathBuf,
    /// Path below the hierarchy's mount, as the kernel reports it.
    path: String,
    version: Version,
    hierarchy: u32,
    /// The controller it was made for (`memory`, `cpu`).
    controller: &'static str,
    children: Vec<ScratchCgroup>,
}

/// Removes the cgroups named `PREFIX<pid>` at the top of every hierarchy
/// whose process is gone and which hold no process: what a cgtrace killed
/// with SIGKILL (which it cannot catch) left behind. The kernel refuses to
/// remove a cgroup that is still in use, so a live one is never touched.
/// Returns the paths removed.
#[must_use]
pub fn remove_stale(hierarchies: &Hierarchies, prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for hierarchy in &hierarchies.list {
        let Ok(entries) = std::fs::read_dir(&hierarchy.mount) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let alive = Path::new(&format!("/proc/{pid}")).exists();
            if !alive && std::fs::remove_dir(entry.path()).is_ok() {
                removed.push(entry.path());
            }
        }
    }
    removed
}

impl ScratchCgroup {
    /// Creates `name` at the top of the memory hierarchy. An existing
    /// directory of that name (left by a killed run) is reused.
    pub fn create(hierarchies: &Hierarchies, name: &str) -> Result<Self, ScratchError> {
        Self::create_for(hierarchies, "memory", name)
    }

    /// Creates `name` at the top of the hierarchy holding `controller`.
    pub fn create_for(
        hierarchies: &Hierarchies,
        controller: &'static str,
        name: &str,
    ) -> Result<Self, ScratchError> {
        let missing = || ScratchError::NoController { controller };
        let found = hierarchies
            .with_controller(controller)
            .ok_or_else(missing)?;
        let hierarchy = found.id.ok_or_else(missing)?;
        if found.version == Version::V2 {
            enable_controller(&found.mount, controller)?;
        }
        Self::make(
            &found.mount.join(name),
            format!("/{name}"),
            found.version,
            hierarchy,
            controller,
        )
    }

    /// On a hybrid host, creates `name` at the top of the unified (v2)
    /// hierarchy, where the kernel keeps pressure stall information; `None`
    /// where the memory controller is on v2 already (its cgroup has PSI) or
    /// no unified hierarchy is mounted.
    pub fn create_unified(
        hierarchies: &Hierarchies,
        name: &str,
    ) -> Result<Option<Self>, ScratchError> {
        let memory_on_v2 = hierarchies
            .with_controller("memory")
            .is_some_and(|h| h.version == Version::V2);
        let Some(unified) = hierarchies
            .list
            .iter()
            .find(|h| h.version == Version::V2)
            .filter(|_| !memory_on_v2)
        else {
            return Ok(None);
        };
        Self::make(
            &unified.mount.join(name),
            format!("/{name}"),
            Version::V2,
            unified.id.unwrap_or(super::hierarchy::V2_HIERARCHY_ID),
            "unified",
        )
        .map(Some)
    }

    fn make(
        dir: &Path,
        path: String,
        version: Version,
        hierarchy: u32,
        controller: &'static str,
    ) -> Result<Self, ScratchError> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(ScratchError::Io {
                    action: "create cgroup",
                    path: dir.to_owned(),
                    source,
                });
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            path,
            version,
            hierarchy,
            controller,
            children: Vec::new(),
        })
    }

    /// The children made so far, in order.
    #[must_use]
    pub fn children(&self) -> &[ScratchCgroup] {
        &self.children
    }

    /// Creates a child cgroup, removed together with this one.
    pub fn child(&mut self, name: &str) -> Result<&ScratchCgroup, ScratchError> {
        if self.version == Version::V2 {
            enable_controller(&self.dir, self.controller)?;
        }
        let child = Self::make(
            &self.dir.join(name),
            format!("{}/{name}", self.path),
            self.version,
            self.hierarchy,
            self.controller,
        )?;
        let index = self.children.len();
        self.children.push(child);
        Ok(&self.children[index])
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path below the hierarchy's mount (`/cgtrace-demo-1234`).
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    #[must_use]
    pub fn hierarchy(&self) -> u32 {
        self.hierarchy
    }

    /// The cgroup id (the directory's inode number).
    pub fn id(&self) -> Result<u64, ScratchError> {
        std::fs::metadata(&self.dir)
            .map(|m| m.ino())
            .map_err(|source| self.io_error("stat", &self.dir, source))
    }

    /// Sets the memory limit (`memory.limit_in_bytes` on v1, `memory.max`
    /// on v2) and turns swap off for the group so the limit is hard.
    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), ScratchError> {
        match self.version {
            Version::V1 => {
                self.write("memory.limit_in_bytes", &bytes.to_string())?;
                // Swappiness 0 keeps anonymous memory in RAM even if the
                // host has swap, so the limit triggers the OOM killer.
                let _ = self.write("memory.swappiness", "0");
            }
            Version::V2 => {
                self.write("memory.max", &bytes.to_string())?;
                let _ = self.write("memory.swap.max", "0");
            }
        }
        Ok(())
    }

    /// Sets the CFS bandwidth limit: `quota_us` of CPU time per `period_us`
    /// (`cpu.cfs_quota_us`/`cpu.cfs_period_us` on v1, `cpu.max` on v2).
    pub fn set_cpu_quota(&self, quota_us: u64, period_us: u64) -> Result<(), ScratchError> {
        match self.version {
            Version::V1 => {
                self.write("cpu.cfs_period_us", &period_us.to_string())?;
                self.write("cpu.cfs_quota_us", &quota_us.to_string())
            }
            Version::V2 => self.write("cpu.max", &format!("{quota_us} {period_us}")),
        }
    }

    /// The kernel's CFS bandwidth counters (`cpu.stat`).
    pub fn cpu_stat(&self) -> Result<super::stat::CpuStat, ScratchError> {
        let text = self.read("cpu.stat")?;
        Ok(super::stat::CpuStat::parse(&text, self.version))
    }

    /// Sets v2 `memory.oom.group` (kill the whole group on OOM).
    pub fn set_oom_group(&self, enabled: bool) -> Result<(), ScratchError> {
        self.write("memory.oom.group", if enabled { "1" } else { "0" })
    }

    /// The kernel's count of OOM kills in this group: `oom_kill` from
    /// `memory.oom_control` (v1) or `memory.events` (v2).
    pub fn oom_kill_count(&self) -> Result<u64, ScratchError> {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let text = self.read(file)?;
        Ok(keyed_value(&text, "oom_kill").unwrap_or(0))
    }

    /// Makes `command` start inside this cgroup: the child writes `0` (itself)
    /// to `cgroup.procs` between fork and exec, so not one page it touches
    /// is charged elsewhere.
    pub fn spawn_into(&self, command: &mut Command) -> Result<std::process::Child, ScratchError> {
        spawn_into_all(&[self], command)
    }

    /// Process ids in this cgroup (not its children).
    #[must_use]
    pub fn pids(&self) -> Vec<i32> {
        read_pids(&self.dir)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), ScratchError> {
        let path = self.dir.join(file);
        std::fs::write(&path, value).map_err(|source| self.io_error("write", &path, source))
    }

    fn read(&self, file: &str) -> Result<String, ScratchError> {
        let path = self.dir.join(file);
        std::fs::read_to_string(&path).map_err(|source| self.io_error("read", &path, source))
    }

    #[expect(clippy::unused_self, reason = "keeps call sites uniform")]
    fn io_error(&self, action: &'static str, path: &Path, source: io::Error) -> ScratchError {
        ScratchError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        // Children first: a cgroup with children cannot be removed.
        self.children.clear();
        let deadline = Instant::now() + TEARDOWN_DEADLINE;
        loop {
            let pids = read_pids(&self.dir);
            if pids.is_empty() {
                break;
            }
            for pid in pids.into_iter().filter_map(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // rmdir can fail with EBUSY briefly while the last task exits.
        while std::fs::remove_dir(&self.dir).is_err() && self.dir.exists() {
            if Instant::now() > deadline {
                crate::note!(
                    "cgtrace: could not remove scratch cgroup {}",
                    self.dir.display()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Starts `command` inside every one of `cgroups` (one per hierarchy, as
/// on a v1 host where memory and cpu are separate): between fork and exec
/// the child writes `0` (itself) to each `cgroup.procs`, so nothing it does
/// is charged elsewhere.
pub fn spawn_into_all(
    cgroups: &[&ScratchCgroup],
    command: &mut Command,
) -> Result<std::process::Child, ScratchError> {
    let joining = JoinOnExec::new(cgroups, command)?;
    let child = command
        .spawn()
        .map_err(|source| joining.spawn_error(source))?;
    drop(joining);
    Ok(child)
}

/// `command` made to join cgroups between fork and exec, with the
/// `cgroup.procs` files it writes held open until it has been spawned
/// (by [`Command::spawn`], or by an async runtime's spawn of the same
/// command).
pub struct JoinOnExec {
    /// The `cgroup.procs` files the child writes: open until this drops.
    _procs: Vec<std::fs::File>,
    dir: PathBuf,
}

impl JoinOnExec {
    pub fn new(cgroups: &[&ScratchCgroup], command: &mut Command) -> Result<Self, ScratchError> {
        let mut files = Vec::new();
        for cgroup in cgroups {
            let procs = cgroup.dir.join("cgroup.procs");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|source| cgroup.io_error("open", &procs, source))?;
            files.push(file);
        }
        let fds: Vec<i32> = files.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        // SAFETY: the closure only calls write(2), which is async-signal-safe,
        // on descriptors that stay open until spawn returns; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                for fd in &fds {
                    // SAFETY: `files` keeps each descriptor open until spawn returns.
                    let fd = std::os::fd::BorrowedFd::borrow_raw(*fd);
                    if rustix::io::write(fd, b"0")? != 1 {
                        return Err(io::Error::from(io::ErrorKind::WriteZero));
                    }
                }
                Ok(())
            });
        }
        let dir = cgroups.first().map(|c| c.dir.clone()).unwrap_or_default();
        Ok(Self { _procs: files, dir })
    }

    /// The error for a spawn that failed.
    #[must_use]
    pub fn spawn_error(&self, source: io::Error) -> ScratchError {
        ScratchError::Io {
            action: "start a process in",
            path: self.dir.clone(),
            source,
        }
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// On v2, a child gets a controller only if its parent lists it in
/// `cgroup.subtree_control`.
fn enable_controller(dir: &Path, controller: &str) -> Result<(), ScratchError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    std::fs::write(&control, format!("+{controller}")).map_err(|source| ScratchError::Io {
        action: "enable a controller in",
        path: control,
        source,
    })
}

/// The value of `key` in a `key value` per line file (`memory.events`).
#[must_use]
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::keyed_value;

    #[test]
    fn reads_keyed_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed_value(v2, "oom_kill"), Some(2));
        assert_eq!(keyed_value(v2, "oom"), Some(2));
        assert_eq!(keyed_value("", "oom_kill"), None);
    }
}
