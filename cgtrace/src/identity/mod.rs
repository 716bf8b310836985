//! Who a cgroup belongs to: the workload its path says (a Kubernetes pod
//! and container, a Docker container, a systemd unit), named from the
//! node's own files (`namespace/pod/container`), and the selectors users
//! narrow views with (`--pod`, `--namespace`, `--container`, `--cgroup`).

pub mod bounded;
pub mod names;
pub mod path;
pub mod selection;
pub mod selector;

use serde_json::{Value, json};

use self::{
    bounded::BoundedMap,
    names::{NameCache, NameSources, PodName},
    path::{Runtime, UnitKind, Workload},
};

/// Identities kept per path, so a cgroup's name outlives the cgroup: far
/// more than a node's live cgroups, and under churn (the oldest go first)
/// a bounded few MB.
const CAPACITY: usize = 16_384;

/// Characters of a container id shown where its name is unknown.
const SHORT_ID: usize = 12;

/// A cgroup's workload with whatever names the node's files gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub workload: Workload,
    /// Pod namespace (Kubernetes only).
    pub namespace: Option<String>,
    /// Pod name (Kubernetes only).
    pub pod: Option<String>,
    /// Container name (Kubernetes or Docker).
    pub container: Option<String>,
}

impl Identity {
    /// The identity a path gives before any names are known.
    #[must_use]
    pub fn unnamed(path: &str) -> Self {
        Self {
            workload: path::parse(path),
            namespace: None,
            pod: None,
            container: None,
        }
    }

    /// The container id, for a pod's container or a Docker container.
    #[must_use]
    pub fn container_id(&self) -> Option<&str> {
        match &self.workload {
            Workload::Pod {
                container: Some(container),
                ..
            } => Some(&container.id),
            Workload::Docker { id } => Some(id),
            _ => None,
        }
    }

    /// How the views print the cgroup: `namespace/pod/container` when the
    /// pod is named, `docker:name` for a named Docker container, otherwise
    /// the path itself.
    #[must_use]
    pub fn label(&self, path: &str) -> String {
        match (&self.workload, &self.namespace, &self.pod) {
            (Workload::Pod { container, .. }, Some(namespace), Some(pod)) => {
                match (container, &self.container) {
                    (_, Some(name)) => format!("{namespace}/{pod}/{name}"),
                    (Some(container), None) => {
                        let short = container.id.get(..SHORT_ID).unwrap_or(&container.id);
                        format!("{namespace}/{pod}/{short}")
                    }
                    (None, None) => format!("{namespace}/{pod}"),
                }
            }
            (Workload::Docker { .. }, _, _) if self.container.is_some() => {
                format!("docker:{}", self.container.as_deref().unwrap_or_default())
            }
            _ => path.to_owned(),
        }
    }

    /// Every identity field, `null` where unknown or not applicable, so a
    /// JSON consumer sees one shape for every cgroup.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let (kind, qos, uid, runtime, unit) = match &self.workload {
            Workload::Pod {
                qos,
                uid,
                container,
            } => (
                if container.is_some() {
                    "pod_container"
                } else {
                    "pod"
                },
                Some(qos.name()),
                Some(uid.as_str()),
                container.as_ref().map(|c| runtime_name(c.runtime)),
                None,
            ),
            Workload::Docker { .. } => ("docker", None, None, Some("docker"), None),
            Workload::Unit { name, kind } => (unit_kind_name(*kind), None, None, None, Some(name)),
            Workload::Path => ("cgroup", None, None, None, None),
        };
        json!({
            "kind": kind,
            "namespace": self.namespace,
            "pod": self.pod,
            "pod_uid": uid,
            "qos": qos,
            "container": self.container,
            "container_id": self.container_id(),
            "runtime": runtime,
            "unit": unit,
        })
    }
}

fn runtime_name(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Containerd => "containerd",
        Runtime::CriO => "cri-o",
        Runtime::Docker => "docker",
        Runtime::Unknown => "unknown",
    }
}

fn unit_kind_name(kind: UnitKind) -> &'static str {
    match kind {
        UnitKind::Service => "systemd_service",
        UnitKind::Scope => "systemd_scope",
        UnitKind::Slice => "systemd_slice",
    }
}

/// Path → identity, named from the node's files and remembered (bounded)
/// after the cgroup and its files are gone.
#[derive(Debug)]
pub struct Identities {
    names: NameCache,
    /// Identities with every name they can have, by path.
    complete: BoundedMap<String, Identity>,
}

impl Identities {
    #[must_use]
    pub fn new(sources: NameSources) -> Self {
        Self {
            names: NameCache::new(sources),
            complete: BoundedMap::presized(CAPACITY),
        }
    }

    /// How many identities are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.complete.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.complete.is_empty()
    }

    /// Forgets a removed cgroup's identity (the session keeps the latest
    /// removed ones; see `session::REMOVED_NAMES_KEPT`).
    pub fn forget(&mut self, path: &str) {
        self.complete.remove(path);
    }

    /// The identity of the cgroup at `path`. Names not found yet are looked
    /// for again (cheaply) on the next call: the kubelet may write a pod's
    /// log directory after creating its cgroup.
    pub fn identify(&mut self, path: &str) -> Identity {
        if let Some(known) = self.complete.get(path) {
            return known.clone();
        }
        let mut identity = Identity::unnamed(path);
        let complete = match &identity.workload {
            Workload::Pod { uid, container, .. } => {
                if let Some(PodName { namespace, name }) = self.names.pod(uid) {
                    identity.namespace = Some(namespace);
                    identity.pod = Some(name);
                }
                identity.container = container
                    .as_ref()
                    .and_then(|c| self.names.kubernetes_container(&c.id));
                identity.pod.is_some() && (container.is_none() || identity.container.is_some())
            }
            Workload::Docker { id } => {
                identity.container = self.names.docker_container(id);
                identity.container.is_some()
            }
            Workload::Unit { .. } | Workload::Path => true,
        };
        if complete {
            self.complete.insert(path.to_owned(), identity.clone());
        }
        identity
    }

    /// Names learnt elsewhere (a trace file records the names it saw).
    pub fn learn(&mut self, path: &str, identity: &Identity) {
        if let Workload::Pod { uid, .. } = &identity.workload
            && let (Some(namespace), Some(name)) = (&identity.namespace, &identity.pod)
        {
            self.names.learn_pod(
                uid,
                PodName {
                    namespace: namespace.clone(),
                    name: name.clone(),
                },
            );
        }
        if let (Some(id), Some(name)) = (identity.container_id(), &identity.container) {
            self.names.learn_container(id, name);
        }
        if identity.workload == path::parse(path) {
            self.complete.insert(path.to_owned(), identity.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::{Identities, Identity, names::NameSources};

    const UID: &str = "1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b";
    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn pod_path(container: bool) -> String {
        let pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        );
        if container {
            format!("{pod}/cri-containerd-{ID}.scope")
        } else {
            pod
        }
    }

    #[test]
    fn labels_and_json_of_a_named_container() {
        let root = tempfile::tempdir().unwrap();
        let sources = NameSources {
            pod_logs: root.path().join("pods"),
            container_logs: root.path().join("containers"),
            docker_root: root.path().join("docker"),
        };
        let pod_dir = sources.pod_logs.join(format!("shop_web-0_{UID}/app"));
        std::fs::create_dir_all(&pod_dir).unwrap();
        std::fs::create_dir_all(&sources.container_logs).unwrap();
        symlink(
            pod_dir.join("0.log"),
            sources
                .container_logs
                .join(format!("web-0_shop_app-{ID}.log")),
        )
        .unwrap();
        let mut identities = Identities::new(sources);
        let container = identities.identify(&pod_path(true));
        assert_eq!(container.label(&pod_path(true)), "shop/web-0/app");
        let json = container.to_json();
        assert_eq!(json["kind"], "pod_container");
        assert_eq!(json["namespace"], "shop");
        assert_eq!(json["pod"], "web-0");
        assert_eq!(json["pod_uid"], UID);
        assert_eq!(json["qos"], "burstable");
        assert_eq!(json["container"], "app");
        assert_eq!(json["container_id"], ID);
        assert_eq!(json["runtime"], "containerd");
        let pod = identities.identify(&pod_path(false));
        assert_eq!(pod.label(&pod_path(false)), "shop/web-0");
        assert_eq!(pod.to_json()["container"], serde_json::Value::Null);

        // A learnt identity survives the files.
        std::fs::remove_dir_all(root.path()).unwrap();
        assert_eq!(identities.identify(&pod_path(true)), container);
        let mut fresh = Identities::new(NameSources::default());
        fresh.learn(&pod_path(true), &container);
        assert_eq!(fresh.identify(&pod_path(true)), container);
        assert_eq!(
            fresh.identify(&pod_path(false)).pod.as_deref(),
            Some("web-0")
        );
    }

    #[test]
    fn unnamed_workloads_keep_their_path() {
        let path = pod_path(true);
        assert_eq!(Identity::unnamed(&path).label(&path), path);
        let unit = "/system.slice/nginx.service";
        let identity = Identity::unnamed(unit);
        assert_eq!(identity.label(unit), unit);
        assert_eq!(identity.to_json()["kind"], "systemd_service");
        assert_eq!(identity.to_json()["unit"], "nginx.service");
        assert_eq!(Identity::unnamed("/").to_json()["kind"], "cgroup");
    }
}
