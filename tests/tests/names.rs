//! Workload names and filters against the real kernel: a kubepods-shaped
//! hierarchy built in the real cgroupfs under a scratch root, with a fixture
//! pod-logs tree beside it. OOM kills and page cache in the "containers"
//! must be named `namespace/pod/container`, also once the cgroups are gone,
//! and `--namespace` must keep one pod and hide its sibling — in the kernel.

use std::{
    os::unix::fs::{MetadataExt as _, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use cgtrace::{
    cgroup::Version,
    model::cache::CacheModel,
    probe::{FeatureSet, Probe, ProbeOptions},
};
use cgtrace_common::cgroup::CgroupRef;
use cgtrace_tests::{
    Follower, View, cgtrace_bin, json_lines, report_json, require_root, scratch, trace_path,
    uncached_file, wait_until,
};
use serde_json::Value;

/// One fixture pod: its names, uid and (only) container.
struct Pod {
    namespace: &'static str,
    name: &'static str,
    uid: &'static str,
    container: &'static str,
    id: &'static str,
}

const SHOP: Pod = Pod {
    namespace: "shop",
    name: "web-0",
    uid: "1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b",
    container: "app",
    id: "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
};

const OTHER: Pod = Pod {
    namespace: "other",
    name: "api-0",
    uid: "9f8e7d6c-1111-4a5b-9c8d-7e6f5a4b3c2d",
    container: "app",
    id: "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
};

/// The kubelet's log trees for some pods (`/var/log/pods` and
/// `/var/log/containers` as kubelet lays them out), removed on drop.
struct PodLogs {
    root: tempfile::TempDir,
}

impl PodLogs {
    fn new(pods: &[&Pod]) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let logs = Self { root };
        std::fs::create_dir_all(logs.containers()).unwrap();
        for pod in pods {
            let dir = logs
                .pods()
                .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
                .join(pod.container);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("0.log"), "").unwrap();
            symlink(
                dir.join("0.log"),
                logs.containers().join(format!(
                    "{}_{}_{}-{}.log",
                    pod.name, pod.namespace, pod.container, pod.id
                )),
            )
            .unwrap();
        }
        logs
    }

    fn pods(&self) -> PathBuf {
        self.root.path().join("pods")
    }

    fn containers(&self) -> PathBuf {
        self.root.path().join("containers")
    }

    /// `--pod-logs DIR --container-logs DIR`.
    fn args(&self) -> Vec<String> {
        vec![
            "--pod-logs".into(),
            self.pods().display().to_string(),
            "--container-logs".into(),
            self.containers().display().to_string(),
        ]
    }
}

/// `<scratch>/kubepods/burstable/pod<uid>/<container id>` for each pod in
/// the memory hierarchy, with a memory limit on each container; removed
/// (deepest first, after killing what runs there) on drop.
struct KubeTree {
    root: cgtrace_tests::ScratchCgroup,
    dirs: Vec<PathBuf>,
}

impl KubeTree {
    fn new(test: &str, pods: &[&Pod], limit: u64) -> Self {
        let root = scratch(test, None);
        let mut tree = Self {
            root,
            dirs: Vec::new(),
        };
        for pod in pods {
            let container = tree.container_dir(pod);
            let mut new: Vec<PathBuf> = container
                .ancestors()
                .take_while(|d| *d != tree.root.dir())
                .filter(|d| !tree.dirs.iter().any(|known| known == d))
                .map(Path::to_path_buf)
                .collect();
            new.reverse();
            for dir in &new {
                // On v2 a child has a memory controller only where its
                // parent delegates one.
                if tree.root.version() == Version::V2 {
                    let parent = dir.parent().expect("a parent");
                    std::fs::write(parent.join("cgroup.subtree_control"), "+memory")
                        .expect("enable the memory controller");
                }
                std::fs::create_dir(dir).expect("create a pod cgroup");
            }
            tree.dirs.extend(new);
            let (file, value) = match tree.root.version() {
                Version::V1 => ("memory.limit_in_bytes", limit.to_string()),
                Version::V2 => ("memory.max", limit.to_string()),
            };
            std::fs::write(container.join(file), value).expect("set the container's limit");
        }
        tree
    }

    fn container_dir(&self, pod: &Pod) -> PathBuf {
        self.root
            .dir()
            .join(format!("kubepods/burstable/pod{}/{}", pod.uid, pod.id))
    }

    /// The container's path below the hierarchy's mount.
    fn container_path(&self, pod: &Pod) -> String {
        format!(
            "{}/kubepods/burstable/pod{}/{}",
            self.root.path(),
            pod.uid,
            pod.id
        )
    }

    fn container_ref(&self, pod: &Pod) -> CgroupRef {
        CgroupRef {
            id: std::fs::metadata(self.container_dir(pod)).unwrap().ino(),
            hierarchy: self.root.hierarchy(),
            level: 0,
        }
    }

    /// Runs the shell command `command` inside the pod's container cgroup
    /// to the end.
    fn run_in(&self, pod: &Pod, command: &str) -> std::process::ExitStatus {
        let procs = self.container_dir(pod).join("cgroup.procs");
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {} && exec {command}", procs.display()))
            .stdout(Stdio::null())
            .status()
            .expect("run in the container cgroup")
    }

    /// The kernel's OOM kill count of the pod's container.
    fn oom_kills(&self, pod: &Pod) -> u64 {
        let dir = self.container_dir(pod);
        let (file, key) = match self.root.version() {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        cgtrace::cgroup::scratch::keyed_value(&text, key).unwrap_or(0)
    }

    /// Removes the pods' cgroups now (the scratch root goes on drop).
    fn remove(&mut self) {
        // Deepest first: a cgroup with children cannot be removed.
        self.dirs
            .sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in std::mem::take(&mut self.dirs) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            wait_until("the cgroup to empty", || {
                std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
            });
            std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
        }
    }
}

impl Drop for KubeTree {
    fn drop(&mut self) {
        self.remove();
    }
}

/// OOM-kills a 100 MiB allocation in the pod's 48 MiB container.
fn oom_in(tree: &KubeTree, pod: &Pod) {
    let status = tree.run_in(pod, &format!("{} __memhog 100", cgtrace_bin().display()));
    assert!(
        !status.success(),
        "the OOM killer should have killed it: {status}"
    );
    wait_until("the kernel's oom_kill counter", || tree.oom_kills(pod) >= 1);
}

fn assert_named(workload: &Value, pod: &Pod) {
    assert_eq!(workload["kind"], "pod_container", "{workload}");
    assert_eq!(workload["namespace"], pod.namespace, "{workload}");
    assert_eq!(workload["pod"], pod.name, "{workload}");
    assert_eq!(workload["container"], pod.container, "{workload}");
    assert_eq!(workload["pod_uid"], pod.uid, "{workload}");
    assert_eq!(workload["container_id"], pod.id, "{workload}");
    assert_eq!(workload["qos"], "burstable", "{workload}");
}

fn kills_of(lines: &[Value], path: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "oom_kill" && l["victim"]["cgroup"] == path)
        .cloned()
        .collect()
}

const MIB: u64 = 1 << 20;

#[test]
fn oom_kills_are_named_live_and_after_removal_and_filtered_by_namespace() {
    if !require_root("oom_kills_are_named_live_and_after_removal_and_filtered_by_namespace") {
        return;
    }
    let logs = PodLogs::new(&[&SHOP, &OTHER]);
    let mut args = vec!["--namespace".to_owned(), "shop".to_owned()];
    args.extend(logs.args());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // Started before the pods exist: it learns them as they are created.
    let mut follower = Follower::start(&arg_refs);
    let mut tree = KubeTree::new("names-oom", &[&SHOP, &OTHER], 48 * MIB);
    let (shop, other) = (tree.container_path(&SHOP), tree.container_path(&OTHER));
    oom_in(&tree, &SHOP);
    oom_in(&tree, &OTHER);
    let live = follower.wait_for("the shop pod's kill", |l| {
        l["type"] == "oom_kill" && l["victim"]["cgroup"] == shop.as_str()
    });
    assert_named(&live["victim"]["workload"], &SHOP);
    assert_named(&live["oom_memcg"]["workload"], &SHOP);
    assert_eq!((tree.oom_kills(&SHOP), tree.oom_kills(&OTHER)), (1, 1));
    // The sibling's kill reaches neither the probe nor the kernel-log path.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, lines, _) = follower.interrupt();
    assert!(status.success(), "{status}");
    assert_eq!(kills_of(&lines, &shop).len(), 1, "{lines:?}");
    assert!(
        kills_of(&lines, &other).is_empty(),
        "the other namespace leaked: {lines:?}"
    );

    // The cgroups are gone; the kernel log still names the paths, and the
    // names come from the pod logs.
    tree.remove();
    let history = |extra: &[&str]| {
        let mut all: Vec<String> = vec!["oom".into(), "--json".into()];
        all.extend(logs.args());
        all.extend(extra.iter().map(|a| (*a).to_owned()));
        let all: Vec<&std::ffi::OsStr> = all.iter().map(std::ffi::OsStr::new).collect();
        json_lines(&all)
    };
    let everything = history(&[]);
    assert_named(
        &kills_of(&everything, &shop)[0]["victim"]["workload"],
        &SHOP,
    );
    assert_named(
        &kills_of(&everything, &other)[0]["victim"]["workload"],
        &OTHER,
    );
    let filtered = history(&["--namespace", "shop"]);
    assert_eq!(kills_of(&filtered, &shop).len(), 1);
    assert!(kills_of(&filtered, &other).is_empty());
    let by_container = history(&["--pod", "api-0", "--container", "app"]);
    assert!(kills_of(&by_container, &shop).is_empty());
    assert_eq!(kills_of(&by_container, &other).len(), 1);
}

#[test]
fn a_recording_names_pods_after_their_cgroups_and_logs_are_gone() {
    if !require_root("a_recording_names_pods_after_their_cgroups_and_logs_are_gone") {
        return;
    }
    let trace = trace_path("names-record");
    let logs = PodLogs::new(&[&SHOP, &OTHER]);
    let mut args = vec![
        "record".to_owned(),
        "-o".to_owned(),
        AsRef::<std::path::Path>::as_ref(&trace)
            .display()
            .to_string(),
        "--interval".to_owned(),
        "250ms".to_owned(),
        "--namespace".to_owned(),
        "shop".to_owned(),
    ];
    args.extend(logs.args());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let recorder = View::start(&arg_refs, "cgtrace: keeping --namespace shop");
    let mut tree = KubeTree::new("names-record", &[&SHOP, &OTHER], 48 * MIB);
    let (shop, other) = (tree.container_path(&SHOP), tree.container_path(&OTHER));
    oom_in(&tree, &SHOP);
    oom_in(&tree, &OTHER);
    std::thread::sleep(std::time::Duration::from_millis(600));
    // Pods deleted: cgroups and log directories gone before the recording ends.
    tree.remove();
    drop(logs);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, _) = recorder.interrupt();
    assert!(status.success(), "{status}");

    let kills = json_lines(&[
        "oom".as_ref(),
        "--json".as_ref(),
        "--input".as_ref(),
        trace.as_ref(),
    ]);
    let shop_kills = kills_of(&kills, &shop);
    assert_eq!(shop_kills.len(), 1, "{kills:?}");
    assert_named(&shop_kills[0]["victim"]["workload"], &SHOP);
    assert!(
        kills_of(&kills, &other).is_empty(),
        "not recorded: {kills:?}"
    );

    let report = report_json(trace.as_ref());
    let row = report["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cgroup"] == shop.as_str())
        .unwrap_or_else(|| panic!("no row for the shop container: {report}"));
    assert_named(&row["workload"], &SHOP);
    assert_eq!(row["oom_kills"], 1);
    assert!(
        report["cgroups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["cgroup"] != other.as_str()),
        "the other namespace was recorded"
    );
    let text = Command::new(cgtrace_bin())
        .arg("report")
        .arg(&trace)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("shop/web-0/app"), "{text}");
}

/// The kernel's side of the filter: with only the shop pod allowed, page
/// cache read in the other pod is never counted, while the shop
/// container's — a cgroup created after the allowlist was filled, so
/// followed by the kernel alone — is.
#[test]
fn the_kernel_allowlist_follows_new_children_and_drops_the_rest() {
    if !require_root("the_kernel_allowlist_follows_new_children_and_drops_the_rest") {
        return;
    }
    let logs = PodLogs::new(&[&SHOP, &OTHER]);
    let mut probe = Probe::load(&ProbeOptions {
        features: FeatureSet::CACHE_AND_RECLAIM,
        filter: true,
        ..ProbeOptions::default()
    })
    .expect("load probe");
    let mut tree = KubeTree::new("names-kernel", &[&SHOP, &OTHER], 512 * MIB);
    // Allow the shop pod's cgroup only: its container below must follow.
    let pod_dir = tree.container_dir(&SHOP).parent().unwrap().to_path_buf();
    let pod = CgroupRef {
        id: std::fs::metadata(&pod_dir).unwrap().ino(),
        hierarchy: tree.root.hierarchy(),
        level: 0,
    };
    // Recreate the container so it is born after the allowlist is filled.
    let container_dir = tree.container_dir(&SHOP);
    std::fs::remove_dir(&container_dir).unwrap();
    assert_eq!(probe.allow(&[pod]).unwrap(), 1);
    std::fs::create_dir(&container_dir).unwrap();

    let mut model = CacheModel::new();
    model.add(&probe.sample_counters().unwrap());
    let shop_file = uncached_file("names-kernel-shop", 16);
    let other_file = uncached_file("names-kernel-other", 16);
    for (pod, file) in [(&SHOP, &shop_file), (&OTHER, &other_file)] {
        let status = tree.run_in(pod, &format!("cat {} > /dev/null", file.path.display()));
        assert!(status.success(), "{status}");
    }
    let interval = probe.sample_counters().unwrap();
    model.add(&interval);
    let added = |cgroup: CgroupRef| -> u64 {
        interval
            .flows
            .iter()
            .filter(|f| {
                f.owner
                    .is_some_and(|o| o.id == cgroup.id && o.hierarchy == cgroup.hierarchy)
            })
            .filter(|f| f.reason == cgtrace_common::pagecache::CacheReason::Added)
            .map(|f| f.pages)
            .sum()
    };
    let page = 4096;
    let shop_bytes = added(tree.container_ref(&SHOP)) * page;
    let other_bytes = added(tree.container_ref(&OTHER)) * page;
    assert!(
        shop_bytes >= 16 * MIB,
        "the shop container's reads: {shop_bytes} bytes"
    );
    assert_eq!(other_bytes, 0, "the other pod is outside the allowlist");
    assert!(
        interval.flows.iter().all(|f| {
            [f.owner, f.actor]
                .iter()
                .flatten()
                .any(|c| c.id == tree.container_ref(&SHOP).id || c.id == pod.id)
        }),
        "every counted flow involves the allowed pod: {:?}",
        interval.flows
    );
    drop(logs);
    tree.remove();
}
