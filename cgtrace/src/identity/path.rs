//! What workload a cgroup path belongs to, from the path alone: a
//! Kubernetes pod (either cgroup driver, any QoS class) and its container,
//! a Docker container, a systemd unit, or just the path.
//!
//! Kubelet names pod cgroups `pod<uid>`; with the systemd driver the uid's
//! dashes become underscores (`kubepods-burstable-pod1a2b_3c4d.slice`),
//! because systemd reserves `-` for slice nesting. Container cgroups carry
//! the runtime in their name with the systemd driver (`cri-containerd-`,
//! `crio-`, `docker-` + id + `.scope`) and are the bare id with cgroupfs.

/// Kubernetes quality-of-service class, from the pod's parent cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }
}

/// The container runtime, where the cgroup name says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// cgroupfs driver: the cgroup is the bare container id.
    Unknown,
}

/// A container's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub runtime: Runtime,
    /// The full container id (64 hex digits for the common runtimes).
    pub id: String,
}

/// The kind of a systemd unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitKind {
    Service,
    Scope,
    Slice,
}

/// What a cgroup path belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A pod's cgroup, or (with `container`) one of its containers'.
    Pod {
        qos: QosClass,
        /// The pod uid with dashes (`1a2b3c4d-…`), whatever the driver.
        uid: String,
        container: Option<Container>,
    },
    /// A Docker container outside Kubernetes.
    Docker { id: String },
    /// A systemd unit (the innermost unit in the path).
    Unit { name: String, kind: UnitKind },
    /// Nothing more specific: the path itself.
    Path,
}

/// Parses a cgroup path (below its hierarchy's mount) into a workload.
#[must_use]
pub fn parse(path: &str) -> Workload {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(pod) = kubernetes(&parts) {
        return pod;
    }
    if let Some(docker) = docker(&parts) {
        return docker;
    }
    parts
        .iter()
        .rev()
        .find_map(|part| unit(part))
        .unwrap_or(Workload::Path)
}

/// A Kubernetes pod or container, wherever the `kubepods` tree is mounted
/// (kind and some distributions nest it under `kubelet.slice`).
fn kubernetes(parts: &[&str]) -> Option<Workload> {
    let root = parts.iter().position(|p| {
        *p == "kubepods" || *p == "kubepods.slice" || p.ends_with("-kubepods.slice")
    })?;
    let mut rest = parts[root + 1..].iter();
    let mut next = rest.next()?;
    let qos = match qos_of(next) {
        Some(qos) => {
            next = rest.next()?;
            qos
        }
        // Guaranteed pods sit directly under kubepods.
        None => QosClass::Guaranteed,
    };
    let uid = pod_uid(next)?;
    let container = rest.next().map(|part| container(part));
    Some(Workload::Pod {
        qos,
        uid,
        container,
    })
}

fn qos_of(part: &str) -> Option<QosClass> {
    let name = part.trim_end_matches(".slice");
    if name == "burstable" || name.ends_with("-burstable") {
        Some(QosClass::Burstable)
    } else if name == "besteffort" || name.ends_with("-besteffort") {
        Some(QosClass::BestEffort)
    } else {
        None
    }
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    // The last "pod": "kubepods" itself contains one, a hex uid cannot.
    let at = name.rfind("pod")?;
    let before = &name[..at];
    if !(before.is_empty() || before.ends_with('-')) {
        return None;
    }
    let uid = &name[at + 3..];
    (!uid.is_empty()
        && uid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_'))
    .then(|| uid.replace('_', "-"))
}

/// A container cgroup name: `<runtime>-<id>.scope` or the bare id.
fn container(part: &str) -> Container {
    let name = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-conmon-", Runtime::CriO),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
    ] {
        if let Some(id) = name.strip_prefix(prefix) {
            return Container {
                runtime,
                id: id.to_owned(),
            };
        }
    }
    Container {
        runtime: Runtime::Unknown,
        id: name.to_owned(),
    }
}

/// `/docker/<id>` (cgroupfs) or `…/docker-<id>.scope` (systemd).
fn docker(parts: &[&str]) -> Option<Workload> {
    let is_id = |id: &str| id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(at) = parts.iter().position(|p| *p == "docker")
        && let Some(id) = parts.get(at + 1)
        && is_id(id)
    {
        return Some(Workload::Docker {
            id: (*id).to_owned(),
        });
    }
    parts.iter().rev().find_map(|part| {
        let id = part.strip_prefix("docker-")?.strip_suffix(".scope")?;
        is_id(id).then(|| Workload::Docker { id: id.to_owned() })
    })
}

/// A systemd unit name: its suffix (exact: systemd's are lower case) says
/// the kind.
fn unit(part: &str) -> Option<Workload> {
    let (_, suffix) = part.rsplit_once('.')?;
    let kind = match suffix {
        "service" => UnitKind::Service,
        "scope" => UnitKind::Scope,
        "slice" => UnitKind::Slice,
        _ => return None,
    };
    Some(Workload::Unit {
        name: part.to_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::{Container, QosClass, Runtime, UnitKind, Workload, parse};

    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn pod(qos: QosClass, uid: &str, container: Option<(Runtime, &str)>) -> Workload {
        Workload::Pod {
            qos,
            uid: uid.to_owned(),
            container: container.map(|(runtime, id)| Container {
                runtime,
                id: id.to_owned(),
            }),
        }
    }

    #[test]
    fn kubernetes_with_the_systemd_driver() {
        let uid = "1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_0000_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope"
            )),
            pod(QosClass::Burstable, uid, Some((Runtime::Containerd, ID)))
        );
        assert_eq!(
            parse(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_0000_4e5f_8a9b_0c1d2e3f4a5b.slice"
            ),
            pod(QosClass::BestEffort, uid, None)
        );
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-pod1a2b3c4d_0000_4e5f_8a9b_0c1d2e3f4a5b.slice/crio-{ID}.scope"
            )),
            pod(QosClass::Guaranteed, uid, Some((Runtime::CriO, ID)))
        );
        // kind and others nest the tree under kubelet.slice.
        assert_eq!(
            parse(&format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1a2b3c4d_0000_4e5f_8a9b_0c1d2e3f4a5b.slice/docker-{ID}.scope"
            )),
            pod(QosClass::BestEffort, uid, Some((Runtime::Docker, ID)))
        );
    }

    #[test]
    fn kubernetes_with_the_cgroupfs_driver() {
        let uid = "1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{uid}/{ID}")),
            pod(QosClass::Burstable, uid, Some((Runtime::Unknown, ID)))
        );
        assert_eq!(
            parse(&format!("/kubepods/pod{uid}")),
            pod(QosClass::Guaranteed, uid, None)
        );
        assert_eq!(
            parse(&format!("/kubepods/besteffort/pod{uid}/{ID}")),
            pod(QosClass::BestEffort, uid, Some((Runtime::Unknown, ID)))
        );
        assert_eq!(parse("/kubepods/burstable"), Workload::Path, "no pod yet");
    }

    #[test]
    fn docker_and_systemd_and_the_rest() {
        assert_eq!(
            parse(&format!("/docker/{ID}")),
            Workload::Docker { id: ID.to_owned() }
        );
        assert_eq!(
            parse(&format!("/system.slice/docker-{ID}.scope")),
            Workload::Docker { id: ID.to_owned() }
        );
        assert_eq!(
            parse("/system.slice/nginx.service"),
            Workload::Unit {
                name: "nginx.service".into(),
                kind: UnitKind::Service
            }
        );
        assert_eq!(
            parse("/user.slice/user-1000.slice/session-3.scope"),
            Workload::Unit {
                name: "session-3.scope".into(),
                kind: UnitKind::Scope
            }
        );
        assert_eq!(
            parse("/system.slice"),
            Workload::Unit {
                name: "system.slice".into(),
                kind: UnitKind::Slice
            }
        );
        assert_eq!(parse("/process_api/87d7ba09"), Workload::Path);
        assert_eq!(parse("/"), Workload::Path);
        assert_eq!(parse("/docker/not-an-id"), Workload::Path);
    }

    #[test]
    fn systemd_escapes_and_other_runtimes() {
        // systemd writes `-` inside a unit name component as `\x2d`.
        assert_eq!(
            parse("/system.slice/system-serial\\x2dgetty.slice/serial-getty@ttyS0.service"),
            Workload::Unit {
                name: "serial-getty@ttyS0.service".into(),
                kind: UnitKind::Service
            }
        );
        assert_eq!(
            parse("/system.slice/system-my\\x2dapp.slice"),
            Workload::Unit {
                name: "system-my\\x2dapp.slice".into(),
                kind: UnitKind::Slice
            }
        );
        // An unknown unit type (`.swap`) falls back to the enclosing slice.
        assert_eq!(
            parse("/system.slice/dev-disk-by\\x2duuid-0a1b.swap"),
            Workload::Unit {
                name: "system.slice".into(),
                kind: UnitKind::Slice
            }
        );
        let uid = "1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b";
        // CRI-O with the cgroupfs driver names container cgroups crio-<id>.
        assert_eq!(
            parse(&format!("/kubepods/besteffort/pod{uid}/crio-{ID}")),
            pod(QosClass::BestEffort, uid, Some((Runtime::CriO, ID)))
        );
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{uid}/crio-conmon-{ID}")),
            pod(QosClass::Burstable, uid, Some((Runtime::CriO, ID)))
        );
        // Docker-shim era: the container cgroup under the pod is docker-<id>.scope.
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-pod1a2b3c4d_0000_4e5f_8a9b_0c1d2e3f4a5b.slice/docker-{ID}.scope"
            )),
            pod(QosClass::Guaranteed, uid, Some((Runtime::Docker, ID)))
        );
        // A process's own sub-cgroup below a container still belongs to it.
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{uid}/{ID}/init")),
            pod(QosClass::Burstable, uid, Some((Runtime::Unknown, ID)))
        );
    }

    #[test]
    fn malformed_paths_are_never_pods_and_never_panic() {
        for path in [
            "",
            "/",
            "////",
            "/kubepods/pod",
            "/kubepods.slice/kubepods-pod.slice",
            "/kubepods/burstable/pod",
            "/kubepods/burstable/podXYZ/abc",
            "/kubepods/burstable/mypod1234",
            "/docker/",
            "/docker/xyz",
            "/system.slice/docker-.scope",
            "/\u{fc}/\u{20ac}",
        ] {
            let parsed = parse(path);
            assert!(
                !matches!(parsed, Workload::Pod { .. } | Workload::Docker { .. }),
                "{path:?} gave {parsed:?}"
            );
        }
        // Every combination of awkward fragments, three deep.
        let fragments = [
            "",
            "kubepods",
            "kubepods.slice",
            "burstable",
            "besteffort",
            "pod",
            "pod-",
            "pod_",
            "podé",
            "kubepods-pod_.slice",
            ".scope",
            ".slice",
            "docker",
            "docker-",
            "crio-",
            "cri-containerd-.scope",
            "\\x2d",
            "a.service",
            "é.scope",
            "-",
        ];
        for a in fragments {
            for b in fragments {
                for c in fragments {
                    let _ = parse(&format!("/{a}/{b}/{c}"));
                    let _ = parse(&format!("{a}{b}/{c}"));
                }
            }
        }
    }
}
