//! A container runtime of the test's own: Debian's `dockerd`, started with
//! its own data root, socket and containerd, no network bridge and no
//! firewall rules, and stopped (its containers with it) on drop. `docker`
//! and `ctr` (containerd's client, on the containerd dockerd runs) talk to
//! it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
const CTR: &str = "/usr/bin/ctr";

/// The containerd namespace the tests' own containers run in (Docker's
/// are in `moby`).
pub const NAMESPACE: &str = "cgtrace-test";

pub struct Dockerd {
    dir: PathBuf,
    daemon: Child,
    /// The top-level cgroups the runtime creates (`docker`, and one per
    /// containerd namespace), in every hierarchy, that did not exist
    /// before it started: removed with it.
    new_cgroups: Vec<PathBuf>,
}

/// The top-level cgroups Docker and containerd make for their containers.
const RUNTIME_CGROUPS: [&str; 2] = ["docker", NAMESPACE];

/// Those of the runtime's top-level cgroups that do not exist yet.
fn absent_runtime_cgroups() -> Vec<PathBuf> {
    let hierarchies = cgtrace::cgroup::Hierarchies::discover().expect("cgroup mounts");
    hierarchies
        .list
        .iter()
        .flat_map(|h| RUNTIME_CGROUPS.iter().map(|name| h.mount.join(name)))
        .filter(|dir| !dir.exists())
        .collect()
}

impl Dockerd {
    /// Starts a daemon; `None` (having said why) where Docker is not
    /// installed.
    #[must_use]
    pub fn start(test: &str) -> Option<Self> {
        if let Some(missing) = [DOCKERD, DOCKER, CTR]
            .into_iter()
            .find(|p| !Path::new(p).exists())
        {
            eprintln!(
                "skipped {test}: {missing} is not installed (`cargo xtask test` installs docker.io)"
            );
            return None;
        }
        let new_cgroups = absent_runtime_cgroups();
        let dir = PathBuf::from(format!("/tmp/cgtrace-test-docker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the daemon's directory");
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("the daemon's log");
        let daemon = Command::new(DOCKERD)
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!("--pidfile={}", dir.join("dockerd.pid").display()))
            .arg(format!(
                "--host=unix://{}",
                dir.join("docker.sock").display()
            ))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let dockerd = Self {
            dir,
            daemon,
            new_cgroups,
        };
        let deadline = Instant::now() + Duration::from_mins(1);
        while !dockerd.docker(&["info"]).0 || !dockerd.containerd_socket().exists() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(dockerd.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(dockerd)
    }

    /// Docker's data root (`/var/lib/docker` on a host).
    #[must_use]
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("exec/containerd/containerd.sock")
    }

    /// `docker ARGS`: whether it succeeded, and its stdout and stderr.
    #[must_use]
    pub fn docker(&self, args: &[&str]) -> (bool, String) {
        run(Command::new(DOCKER)
            .arg(format!(
                "--host=unix://{}",
                self.dir.join("docker.sock").display()
            ))
            .args(args))
    }

    /// `ctr` on the daemon's containerd, in the tests' namespace.
    #[must_use]
    pub fn ctr(&self) -> Command {
        let mut command = Command::new(CTR);
        command
            .arg(format!("--address={}", self.containerd_socket().display()))
            .arg(format!("--namespace={NAMESPACE}"));
        command
    }

    /// `docker ARGS`, which must succeed; its stdout.
    #[expect(
        clippy::must_use_candidate,
        reason = "called for its effect as often as for its output"
    )]
    pub fn must(&self, args: &[&str]) -> String {
        let (ok, output) = self.docker(args);
        assert!(ok, "docker {args:?}: {output}");
        output
    }

    /// The full id of a Docker container.
    #[must_use]
    pub fn container_id(&self, name: &str) -> String {
        self.must(&["inspect", "--format", "{{.Id}}", name])
            .trim()
            .to_owned()
    }
}

fn run(command: &mut Command) -> (bool, String) {
    match command.output() {
        Ok(output) => (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // The tests' own containers first, then Docker's.
        let (_, tasks) = run(self.ctr().args(["task", "list", "--quiet"]));
        for task in tasks.split_whitespace() {
            let _ = run(self
                .ctr()
                .args(["task", "kill", "--signal", "SIGKILL", task]));
            let _ = run(self.ctr().args(["task", "delete", "--force", task]));
        }
        let (_, containers) = run(self.ctr().args(["container", "list", "--quiet"]));
        for container in containers.split_whitespace() {
            let _ = run(self.ctr().args(["container", "delete", container]));
        }
        let (_, all) = self.docker(&["ps", "--all", "--quiet"]);
        for id in all.split_whitespace() {
            let _ = self.docker(&["rm", "--force", id]);
        }
        // SIGTERM: dockerd stops the containerd it started, and unmounts.
        if let Ok(pid) = libc::pid_t::try_from(self.daemon.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        // Empty by now: the runtime removed its containers' cgroups.
        for cgroup in &self.new_cgroups {
            let _ = std::fs::remove_dir(cgroup);
        }
    }
}

/// Unmounts whatever is still mounted under `dir` (deepest first), so it
/// can be removed.
fn unmount_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|mount| Path::new(mount).starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        let _ = Command::new("umount").args(["--lazy", mount]).status();
    }
}
