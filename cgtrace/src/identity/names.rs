//! Human names for pods and containers, read from files the node already
//! has, without asking any API server or container runtime:
//!
//! * the kubelet's pod log directories, `/var/log/pods/<namespace>_<pod>_<uid>/`,
//!   give each pod uid its namespace and name (neither may contain `_`);
//! * the kubelet's links `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`
//!   give each container id its container name (and, through the link's
//!   target, its pod);
//! * Docker's `<root>/containers/<id>/config.v2.json` gives a Docker
//!   container's name (`"Name":"/web"`).
//!
//! Directories are rescanned only when their mtime says they changed, so a
//! lookup that misses costs one `stat`. Everything learnt is kept (bounded)
//! after the files go, so a pod deleted after an OOM kill is still named.

use std::{
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use super::bounded::BoundedMap;

/// Names kept per kind; far more than any node runs at once.
const CAPACITY: usize = 65_536;

/// A directory mtime this close to the last scan may hide a change made in
/// the same clock tick (file times are only as fine as the kernel's coarse
/// clock), so such a scan is not trusted to be complete.
const MTIME_SLACK: Duration = Duration::from_secs(1);

/// Where the names come from; each root can be moved (`--pod-logs`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameSources {
    /// The kubelet's pod log directories.
    pub pod_logs: PathBuf,
    /// The kubelet's container log links.
    pub container_logs: PathBuf,
    /// Docker's state directory.
    pub docker_root: PathBuf,
}

impl Default for NameSources {
    fn default() -> Self {
        Self {
            pod_logs: PathBuf::from("/var/log/pods"),
            container_logs: PathBuf::from("/var/log/containers"),
            docker_root: PathBuf::from("/var/lib/docker"),
        }
    }
}

/// A pod's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

/// When a directory was last scanned, and its mtime then.
#[derive(Clone, Copy, Debug, Default)]
struct Scan {
    mtime: Option<SystemTime>,
    at: Option<SystemTime>,
}

impl Scan {
    /// Whether `dir` may hold entries the last scan did not see.
    fn stale(&self, dir: &Path) -> bool {
        let mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        match (self.at, mtime) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(at), Some(mtime)) => Some(mtime) != self.mtime || at <= mtime + MTIME_SLACK,
        }
    }

    fn done(dir: &Path) -> Self {
        Self {
            mtime: std::fs::metadata(dir).and_then(|m| m.modified()).ok(),
            at: Some(SystemTime::now()),
        }
    }
}

/// Pod and container names learnt so far, and where to learn more.
#[derive(Debug)]
pub struct NameCache {
    sources: NameSources,
    /// Pod uid → namespace and name.
    pods: BoundedMap<String, PodName>,
    /// Container id → container name (Kubernetes or Docker).
    containers: BoundedMap<String, String>,
    pod_logs_scan: Scan,
    container_logs_scan: Scan,
    docker_scan: Scan,
    /// The log directories that could not be read, said once each.
    unreadable_said: Vec<PathBuf>,
}

impl NameCache {
    #[must_use]
    pub fn new(sources: NameSources) -> Self {
        Self {
            sources,
            pods: BoundedMap::new(CAPACITY),
            containers: BoundedMap::new(CAPACITY),
            pod_logs_scan: Scan::default(),
            container_logs_scan: Scan::default(),
            docker_scan: Scan::default(),
            unreadable_said: Vec::new(),
        }
    }

    /// The entries of a kubelet log directory; one that cannot be read is
    /// said once (pods are then shown by their uid), and its names are
    /// looked for again on the next scan.
    fn log_entries(&mut self, dir: &Path) -> Vec<std::fs::DirEntry> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries.flatten().collect(),
            Err(error) => {
                if !self.unreadable_said.iter().any(|said| said == dir) {
                    self.unreadable_said.push(dir.to_path_buf());
                    crate::note!(
                        "cgtrace: pod names: cannot read {} ({error}); pods are shown by uid",
                        dir.display()
                    );
                }
                Vec::new()
            }
        }
    }

    /// The namespace and name of the pod with this uid (dashed form).
    pub fn pod(&mut self, uid: &str) -> Option<PodName> {
        if self.pods.get(uid).is_none() {
            if self.pod_logs_scan.stale(&self.sources.pod_logs) {
                self.scan_pod_logs();
            }
            // The container links name pods too (through their targets).
            if self.pods.get(uid).is_none()
                && self.container_logs_scan.stale(&self.sources.container_logs)
            {
                self.scan_container_logs();
            }
        }
        self.pods.get(uid).cloned()
    }

    /// The name of the Kubernetes container with this id.
    pub fn kubernetes_container(&mut self, id: &str) -> Option<String> {
        if self.containers.get(id).is_none()
            && self.container_logs_scan.stale(&self.sources.container_logs)
        {
            self.scan_container_logs();
        }
        self.containers.get(id).cloned()
    }

    /// The name of the Docker container with this id.
    pub fn docker_container(&mut self, id: &str) -> Option<String> {
        let dir = self.sources.docker_root.join("containers");
        if self.containers.get(id).is_none() && self.docker_scan.stale(&dir) {
            self.docker_scan = Scan::done(&dir);
            if let Some(name) = docker_name(&dir.join(id).join("config.v2.json")) {
                self.containers.insert(id.to_owned(), name);
            }
        }
        self.containers.get(id).cloned()
    }

    /// Records names learnt elsewhere (a trace file).
    pub fn learn_pod(&mut self, uid: &str, pod: PodName) {
        self.pods.insert(uid.to_owned(), pod);
    }

    /// Records a container name learnt elsewhere (a trace file).
    pub fn learn_container(&mut self, id: &str, name: &str) {
        self.containers.insert(id.to_owned(), name.to_owned());
    }

    fn scan_pod_logs(&mut self) {
        self.pod_logs_scan = Scan::done(&self.sources.pod_logs);
        for entry in self.log_entries(&self.sources.pod_logs.clone()) {
            if let Some((uid, pod)) =
                parse_pod_dir(&crate::text::from_bytes(entry.file_name().as_bytes()))
            {
                self.pods.insert(uid, pod);
            }
        }
    }

    fn scan_container_logs(&mut self) {
        self.container_logs_scan = Scan::done(&self.sources.container_logs);
        for entry in self.log_entries(&self.sources.container_logs.clone()) {
            let Some(link) =
                parse_container_link(&crate::text::from_bytes(entry.file_name().as_bytes()))
            else {
                continue;
            };
            // The link's target is in the pod's log directory, which names
            // the pod's uid.
            if let Ok(target) = std::fs::read_link(entry.path())
                && let Some((uid, pod)) = target
                    .components()
                    .find_map(|c| parse_pod_dir(&crate::text::from_bytes(c.as_os_str().as_bytes())))
                && pod.namespace == link.namespace
                && pod.name == link.pod
            {
                self.pods.insert(uid, pod);
            }
            self.containers.insert(link.id, link.container);
        }
    }
}

/// `<namespace>_<pod>_<uid>` → (uid, pod).
fn parse_pod_dir(name: &str) -> Option<(String, PodName)> {
    let mut parts = name.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if namespace.is_empty() || pod.is_empty() || uid.len() < 8 || uid.contains('_') {
        return None;
    }
    Some((
        uid.to_owned(),
        PodName {
            namespace: namespace.to_owned(),
            name: pod.to_owned(),
        },
    ))
}

/// What a container log link's name says.
#[derive(Debug, PartialEq, Eq)]
struct ContainerLink {
    pod: String,
    namespace: String,
    container: String,
    id: String,
}

/// `<pod>_<namespace>_<container>-<id>.log`. Container names may contain
/// dashes; the id (hex) follows the last one.
fn parse_container_link(name: &str) -> Option<ContainerLink> {
    let stem = name.strip_suffix(".log")?;
    let (front, id) = stem.rsplit_once('-')?;
    if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut parts = front.splitn(3, '_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if pod.is_empty() || namespace.is_empty() || container.is_empty() {
        return None;
    }
    Some(ContainerLink {
        pod: pod.to_owned(),
        namespace: namespace.to_owned(),
        container: container.to_owned(),
        id: id.to_owned(),
    })
}

/// The `Name` of a Docker `config.v2.json`, without Docker's leading `/`.
fn docker_name(config: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let name = value.get("Name")?.as_str()?.trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::symlink, path::Path};

    use super::{
        ContainerLink, NameCache, NameSources, PodName, parse_container_link, parse_pod_dir,
    };

    const UID: &str = "1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b";
    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn sources(root: &Path) -> NameSources {
        NameSources {
            pod_logs: root.join("pods"),
            container_logs: root.join("containers"),
            docker_root: root.join("docker"),
        }
    }

    #[test]
    fn parses_pod_directories_and_container_links() {
        assert_eq!(
            parse_pod_dir(&format!("kube-system_coredns-5d78c9869d-x2x7q_{UID}")),
            Some((
                UID.to_owned(),
                PodName {
                    namespace: "kube-system".into(),
                    name: "coredns-5d78c9869d-x2x7q".into()
                }
            ))
        );
        assert_eq!(parse_pod_dir("no-underscores"), None);
        assert_eq!(parse_pod_dir("a_b_"), None);
        assert_eq!(
            parse_container_link(&format!("web-0_shop_nginx-sidecar-{ID}.log")),
            Some(ContainerLink {
                pod: "web-0".into(),
                namespace: "shop".into(),
                container: "nginx-sidecar".into(),
                id: ID.into()
            })
        );
        assert_eq!(parse_container_link("web-0_shop_nginx-notanid.log"), None);
        assert_eq!(parse_container_link(&format!("web-0_nginx-{ID}.log")), None);
        assert_eq!(parse_container_link("_.log"), None);
    }

    #[test]
    fn names_pods_and_containers_from_a_log_tree_and_keeps_them() {
        let root = tempfile::tempdir().unwrap();
        let sources = sources(root.path());
        let pod_dir = sources.pod_logs.join(format!("shop_web-0_{UID}"));
        std::fs::create_dir_all(pod_dir.join("nginx")).unwrap();
        std::fs::write(pod_dir.join("nginx/0.log"), "").unwrap();
        std::fs::create_dir_all(&sources.container_logs).unwrap();
        let mut names = NameCache::new(sources.clone());
        assert_eq!(names.kubernetes_container(ID), None, "no link yet");
        symlink(
            pod_dir.join("nginx/0.log"),
            sources
                .container_logs
                .join(format!("web-0_shop_nginx-{ID}.log")),
        )
        .unwrap();
        assert_eq!(names.kubernetes_container(ID).as_deref(), Some("nginx"));
        assert_eq!(names.pod(UID).unwrap().name, "web-0");
        std::fs::remove_dir_all(root.path()).unwrap();
        assert_eq!(
            names.pod(UID).unwrap().namespace,
            "shop",
            "kept after removal"
        );
        assert_eq!(names.kubernetes_container(ID).as_deref(), Some("nginx"));
        assert_eq!(names.pod("ffffffff-0000"), None);
    }

    #[test]
    fn a_link_alone_names_the_pod_through_its_target() {
        let root = tempfile::tempdir().unwrap();
        let sources = sources(root.path());
        std::fs::create_dir_all(&sources.container_logs).unwrap();
        symlink(
            format!("/var/log/pods/shop_web-0_{UID}/nginx/0.log"),
            sources
                .container_logs
                .join(format!("web-0_shop_nginx-{ID}.log")),
        )
        .unwrap();
        let mut names = NameCache::new(sources);
        assert_eq!(names.pod(UID).unwrap().name, "web-0");
    }

    #[test]
    fn names_docker_containers_from_their_config() {
        let root = tempfile::tempdir().unwrap();
        let sources = sources(root.path());
        let dir = sources.docker_root.join("containers").join(ID);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.v2.json"),
            r#"{"ID":"0f1e","Name":"/redis-cache","State":{"Running":true}}"#,
        )
        .unwrap();
        let mut names = NameCache::new(sources);
        assert_eq!(names.docker_container(ID).as_deref(), Some("redis-cache"));
        assert_eq!(names.docker_container("abcdef012345"), None);
    }
}
