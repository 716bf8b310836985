//! The container image run as the DaemonSet runs it, in a real container
//! runtime: its capabilities, user, read-only root, seccomp profile and
//! host mounts all read from the manifests in `deploy/`.
//!
//! The agent runs through `ctr` on the containerd that `dockerd` runs,
//! as Kubernetes' CRI runs it on containerd: Docker 20.10 (Debian 12's)
//! refuses CAP_BPF and CAP_PERFMON ("unknown capability": its list
//! predates Linux 5.8). Its init container, which needs only CAP_CHOWN,
//! runs through `docker`.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    sync::mpsc::{self, Receiver},
};

use serde_json::Value;

use crate::{
    ChildGuard,
    manifests::{added_capabilities, agent, host_mounts},
    runtime::Dockerd,
};

/// The image's name in containerd (what `docker load` calls `cgtrace:V`).
fn image_ref(tag: &str) -> String {
    format!("docker.io/library/{tag}")
}

/// The capabilities containerd gives a container unless told otherwise
/// (Docker's default set): dropped, as `drop: [ALL]` drops them.
const RUNTIME_DEFAULTS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A running agent: its stdout lines, its stderr lines, and the
/// container's name in containerd.
pub struct Agent {
    pub id: String,
    pub stdout: Receiver<String>,
    pub stderr: Receiver<String>,
    client: ChildGuard,
}

impl Agent {
    /// Loads `image` into the runtime and runs the DaemonSet's init
    /// container, then its agent with `args` (the DaemonSet's, adjusted
    /// by the caller). `host` maps a DaemonSet host path to the directory
    /// standing in for it here.
    #[must_use]
    pub fn start(
        dockerd: &Dockerd,
        image: &Path,
        daemonset: &Value,
        host: &HashMap<&str, PathBuf>,
        args: &[String],
    ) -> Self {
        let loaded = dockerd.must(&["load", "--input", image.to_str().expect("a UTF-8 path")]);
        let tag = loaded
            .trim()
            .strip_prefix("Loaded image: ")
            .unwrap_or_else(|| panic!("docker load said {loaded}"))
            .to_owned();
        let imported = dockerd
            .ctr()
            .args(["images", "import"])
            .arg(image)
            .status()
            .expect("ctr images import");
        assert!(imported.success());
        let pod = &daemonset["spec"]["template"]["spec"];
        let host_path = |path: &str| -> PathBuf {
            host.get(path)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(path))
        };
        run_init_containers(dockerd, daemonset, &tag, &host_path);

        let container = agent(daemonset);
        let security = &container["securityContext"];
        let id = format!("cgtrace-agent-{}", std::process::id());
        let mut command = dockerd.ctr();
        command.args(["run", "--rm", "--net-host"]);
        for cap in RUNTIME_DEFAULTS {
            command.arg(format!("--cap-drop=CAP_{cap}"));
        }
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        for cap in added_capabilities(container) {
            command.arg(format!("--cap-add=CAP_{cap}"));
        }
        assert_eq!(security["privileged"], false);
        if security["readOnlyRootFilesystem"] == true {
            command.arg("--read-only");
        }
        if pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault" {
            command.arg("--seccomp");
        }
        for (path, inside, read_only, kind) in host_mounts(daemonset, container) {
            let source = host_path(&path);
            if kind == "CharDevice" {
                // A device node: what a runtime's device allowlist admits.
                command.arg(format!("--device={}", source.display()));
            } else {
                command.arg(format!(
                    "--mount=type=bind,src={},dst={inside},options=rbind:{}",
                    source.display(),
                    if read_only { "ro" } else { "rw" }
                ));
            }
        }
        command
            .arg(image_ref(&tag))
            .arg(&id)
            .arg("/cgtrace")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        eprintln!("agent: {command:?}");
        let mut client = ChildGuard(command.spawn().expect("ctr run"));
        let stdout = lines(client.0.stdout.take().expect("stdout"));
        let stderr = lines(client.0.stderr.take().expect("stderr"));
        Self {
            id,
            stdout,
            stderr,
            client,
        }
    }

    /// The agent's process id on the host.
    #[must_use]
    pub fn pid(&self, dockerd: &Dockerd) -> Option<u32> {
        let output = dockerd.ctr().args(["task", "list"]).output().ok()?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next()? == self.id).then(|| fields.next()?.parse().ok())?
            })
    }

    /// SIGTERM, as the kubelet stops a pod; the client's exit code.
    #[must_use]
    pub fn stop(mut self, dockerd: &Dockerd) -> Option<i32> {
        let _ = dockerd
            .ctr()
            .args(["task", "kill", "--signal", "SIGTERM", &self.id])
            .status();
        self.client.wait().code()
    }
}

/// The DaemonSet's init containers, run by Docker with their own
/// capabilities, user and mounts.
fn run_init_containers(
    dockerd: &Dockerd,
    daemonset: &Value,
    tag: &str,
    host_path: &dyn Fn(&str) -> PathBuf,
) {
    let pod = &daemonset["spec"]["template"]["spec"];
    for init in pod["initContainers"].as_array().into_iter().flatten() {
        let security = &init["securityContext"];
        let mut args = vec![
            "run".to_owned(),
            "--rm".to_owned(),
            "--network=none".to_owned(),
            "--cap-drop=ALL".to_owned(),
        ];
        for cap in added_capabilities(init) {
            args.push(format!("--cap-add={cap}"));
        }
        if let Some(uid) = security["runAsUser"].as_u64() {
            args.push(format!("--user={uid}"));
        }
        if security["readOnlyRootFilesystem"] == true {
            args.push("--read-only".to_owned());
        }
        if security["allowPrivilegeEscalation"] == false {
            args.push("--security-opt=no-new-privileges".to_owned());
        }
        for (path, inside, read_only, _) in host_mounts(daemonset, init) {
            args.push(format!(
                "--volume={}:{inside}:{}",
                host_path(&path).display(),
                if read_only { "ro" } else { "rw" }
            ));
        }
        args.push(tag.to_owned());
        for arg in init["args"].as_array().into_iter().flatten() {
            args.push(arg.as_str().expect("a string argument").to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dockerd.must(&args);
    }
}

fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
