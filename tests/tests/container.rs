//! The container image in a real container runtime, with the DaemonSet's
//! capabilities, user and mounts (its Docker variant: the victims are
//! Docker containers), not privileged: another container is OOM-killed at
//! `--memory 64m` and the agent's metrics and JSON log name it, with the
//! limit it hit; a container under `--cpus 0.5` shows throttling, as many
//! periods as the kernel counted; the agent runs as nobody with only the
//! capabilities it keeps, and its flight recorder writes to the host.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use cgtrace_tests::{
    agent::Agent,
    http::{free_port, get, sample, scrape},
    manifests::{agent, deploy_dir, docker_daemonset},
    process_status, require_root,
    runtime::Dockerd,
};

const MIB: u64 = 1 << 20;

/// Waits for a line from `lines` that `wanted` accepts.
fn wait_for_line(lines: &Receiver<String>, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no {what} ({e}); saw {seen:#?}"),
        }
    }
}

/// Scrapes until `wanted` finds what it needs in a scrape.
fn wait_for_scrape<T>(port: u16, what: &str, wanted: impl Fn(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let text = scrape(port);
        if let Some(found) = wanted(&text) {
            return found;
        }
        assert!(Instant::now() < deadline, "no {what} in:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Directories standing in for the node's, removed on drop.
struct Node(PathBuf);

impl Node {
    fn new() -> Self {
        Self(PathBuf::from(format!(
            "/tmp/cgtrace-test-node-{}",
            std::process::id()
        )))
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_image_with_the_daemonsets_privileges_names_docker_containers_it_sees_killed_and_throttled() {
    let test = "the_image_with_the_daemonsets_privileges_names_docker_containers_it_sees_killed_and_throttled";
    if !require_root(test) {
        return;
    }
    let Some(image) = std::env::var_os("CGTRACE_IMAGE").map(PathBuf::from) else {
        eprintln!(
            "skipped {test}: $CGTRACE_IMAGE is not set (`cargo xtask test` builds the image)"
        );
        return;
    };
    let Some(deploy) = deploy_dir() else {
        eprintln!("skipped {test}: no deploy/ beside this build");
        return;
    };
    let Some(dockerd) = Dockerd::start(test) else {
        return;
    };
    let daemonset = docker_daemonset(&deploy);
    let node = Node::new();
    let flight = node.dir("flight-recorder");
    let host = HashMap::from([
        (
            "/var/lib/docker/containers",
            dockerd.data_root().join("containers"),
        ),
        ("/var/log/pods", node.dir("pods")),
        ("/var/log/containers", node.dir("containers")),
        ("/var/lib/cgtrace", flight.clone()),
    ]);
    // The DaemonSet's arguments, on a loopback port of the host's network
    // (the pod network is not reproduced here) and a shorter interval.
    let port = free_port();
    let mut args: Vec<String> = agent(&daemonset)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| !a.starts_with("--listen"))
        .collect();
    args.push(format!("--listen=127.0.0.1:{port}"));
    args.push("--interval=2s".to_owned());
    let agent = Agent::start(&dockerd, &image, &daemonset, &host, &args);
    // The init container gave the flight recorder's directory away.
    assert_eq!(std::fs::metadata(&flight).unwrap().uid(), 65534);
    runs_as_nobody_with_what_it_keeps(&dockerd, &agent, port);
    an_oom_kill_is_named(&dockerd, &agent, port);
    throttling_is_counted(&dockerd, port);
    assert_eq!(
        agent.stop(&dockerd),
        Some(0),
        "SIGTERM ends the agent cleanly"
    );
    // The flight recorder wrote on the host, as the agent's user.
    let written: Vec<_> = walk(&flight);
    assert!(!written.is_empty(), "the flight recorder wrote nothing");
    assert!(written.iter().all(|(_, uid)| *uid == 65534), "{written:?}");
}

/// Once attached and serving: nobody, with CAP_BPF, CAP_PERFMON and (the
/// Docker variant) CAP_DAC_READ_SEARCH, bits 39, 38 and 2; CAP_SYSLOG went
/// once /dev/kmsg was open.
fn runs_as_nobody_with_what_it_keeps(dockerd: &Dockerd, agent: &Agent, port: u16) {
    let said = wait_for_line(&agent.stderr, "the capability line", |l| {
        l.starts_with("cgtrace: capabilities:")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, "/healthz", "").is_none_or(|(status, _)| status != 200) {
        assert!(Instant::now() < deadline, "the agent never became ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = agent.pid(dockerd).expect("the agent's process");
    assert!(
        process_status(pid, "Uid").starts_with("65534"),
        "runs as nobody"
    );
    assert_eq!(process_status(pid, "CapEff"), "000000c000000004", "{said}");
    assert_eq!(process_status(pid, "NoNewPrivs"), "1");
}

/// A container OOM-killed at its own 64 MiB limit: named in the JSON log
/// and the metrics.
fn an_oom_kill_is_named(dockerd: &Dockerd, agent: &Agent, port: u16) {
    let name = format!("cgtrace-test-oom-{}", std::process::id());
    let (ok, output) = dockerd.docker(&[
        "run",
        "--name",
        &name,
        "--network=none",
        "--memory=64m",
        "--memory-swap=64m",
        "--entrypoint=/cgtrace",
        "cgtrace:0.1.0",
        "__memhog",
        "200",
    ]);
    assert!(!ok, "the memory hog was killed: {output}");
    let id = dockerd.container_id(&name);
    let line = wait_for_line(&agent.stdout, "the kill's JSON line", |l| l.contains(&id));
    let kill: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(kill["type"], "oom_kill");
    assert_eq!(kill["victim"]["workload"]["kind"], "docker");
    assert_eq!(kill["victim"]["workload"]["container"], name.as_str());
    assert_eq!(kill["oom_memcg"]["workload"]["container"], name.as_str());
    assert_eq!(kill["oom_memcg"]["limit_bytes"], 64 * MIB);
    assert_eq!(kill["constraint"], "memcg");
    let series = format!(
        "cgtrace_oom_events_total{{cgroup=\"/docker/{id}\",container=\"{name}\",limit=\"own\"}}"
    );
    let kills = wait_for_scrape(port, &series, |scraped| sample(scraped, &series));
    assert_eq!(kills, 1);
}

/// A container under half a core: throttled periods served under its
/// name, no more than the kernel counted, and its quota.
fn throttling_is_counted(dockerd: &Dockerd, port: u16) {
    let name = format!("cgtrace-test-cpu-{}", std::process::id());
    dockerd.must(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network=none",
        "--cpus=0.5",
        "--entrypoint=/cgtrace",
        "cgtrace:0.1.0",
        "__spin",
        "10",
        "2",
    ]);
    let id = dockerd.container_id(&name);
    let labels = format!("{{cgroup=\"/docker/{id}\",container=\"{name}\"}}");
    let throttled = format!("cgtrace_cpu_cfs_throttled_periods_total{labels}");
    let periods = wait_for_scrape(port, &throttled, |scraped| {
        sample(scraped, &throttled).filter(|n| *n >= 10)
    });
    // Read while the container still runs (its cgroup goes with it).
    let hierarchies = cgtrace::cgroup::Hierarchies::discover().unwrap();
    let cpu = hierarchies.with_controller("cpu").expect("a cpu hierarchy");
    let stat = std::fs::read_to_string(cpu.mount.join("docker").join(&id).join("cpu.stat"))
        .expect("the container's cpu.stat");
    let kernel = cgtrace::cgroup::scratch::keyed_value(&stat, "nr_throttled").unwrap();
    eprintln!("throttled periods: cgtrace {periods}, the kernel {kernel}");
    assert!(periods <= kernel, "cgtrace {periods}, the kernel {kernel}");
    let quota = format!("cgtrace_cpu_quota_cores{labels} 0.5");
    let served = scrape(port);
    assert!(
        served.lines().any(|l| l == quota),
        "no {quota} in: {served}"
    );
    assert_eq!(
        dockerd.must(&["wait", &name]).trim(),
        "0",
        "the spinner ended by itself"
    );
}

/// Every file under `dir`, with its owner.
fn walk(dir: &std::path::Path) -> Vec<(PathBuf, u32)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if let Ok(meta) = entry.metadata() {
            files.push((path, meta.uid()));
        }
    }
    files
}
