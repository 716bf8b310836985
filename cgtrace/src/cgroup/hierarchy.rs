//! Which cgroup hierarchies are mounted where, and which one holds the
//! memory controller.
//!
//! cgroup ids are unique only within a hierarchy, and the kernel names a
//! hierarchy by `cgroup_root->hierarchy_id`: 0 is the cgroup v2 hierarchy,
//! v1 hierarchies are numbered from 1 (the second column of /proc/cgroups).

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// The v2 hierarchy's id (`cgrp_dfl_root`).
pub const V2_HIERARCHY_ID: u32 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One mounted hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// `cgroup_root->hierarchy_id`; `None` for a v1 hierarchy with no
    /// controller (such as `name=systemd`), which /proc/cgroups does not list.
    pub id: Option<u32>,
    pub version: Version,
    pub mount: PathBuf,
    /// Controllers bound to it (`memory`, `cpu`, ...; for v2, those listed in
    /// the root's `cgroup.controllers`).
    pub controllers: Vec<String>,
}

impl Hierarchy {
    #[must_use]
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// How this host mounts cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 only.
    V1,
    /// v1 controllers plus a cgroup2 mount (systemd's "hybrid" layout).
    Hybrid,
    /// cgroup v2 only ("unified").
    V2,
    None,
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::Hybrid => "hybrid (v1 controllers + cgroup2)",
            Self::V2 => "v2 (unified)",
            Self::None => "none mounted",
        })
    }
}

/// Every hierarchy mounted on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hierarchies {
    pub list: Vec<Hierarchy>,
}

impl Hierarchies {
    /// Reads /proc/self/mountinfo and /proc/cgroups.
    pub fn discover() -> std::io::Result<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let proc_cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
        let mut hierarchies = Self::parse_with(&mountinfo, &proc_cgroups, |root, mount| {
            is_hierarchy_root(root, mount)
        });
        for h in &mut hierarchies.list {
            if h.version == Version::V2 {
                h.controllers = read_v2_controllers(&h.mount);
            }
        }
        Ok(hierarchies)
    }

    /// Parses mountinfo and /proc/cgroups text; v2 controllers are left
    /// empty (they live in a file under the mount).
    #[must_use]
    pub fn parse(mountinfo: &str, proc_cgroups: &str) -> Self {
        Self::parse_with(mountinfo, proc_cgroups, |root, _| root == "/")
    }

    /// [`Self::parse`], with `whole(root, mount)` deciding whether a mount
    /// (its mountinfo root field and mount point) shows a whole hierarchy.
    fn parse_with(
        mountinfo: &str,
        proc_cgroups: &str,
        whole: impl Fn(&str, &Path) -> bool,
    ) -> Self {
        let ids: Vec<(&str, u32)> = proc_cgroups
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?;
                let id = fields.next()?.parse().ok()?;
                Some((name, id))
            })
            .collect();
        let mut list: Vec<Hierarchy> = Vec::new();
        for line in mountinfo.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = before.split_whitespace().collect();
            let after: Vec<&str> = after.split_whitespace().collect();
            let (Some(root), Some(mount), Some(fstype)) =
                (fields.get(3), fields.get(4), after.first())
            else {
                continue;
            };
            let mount = PathBuf::from(unescape_mount_path(mount));
            // A bind mount of a sub-cgroup would give paths relative to that
            // cgroup; only whole hierarchies are used.
            if !whole(root, &mount) {
                continue;
            }
            let hierarchy = match *fstype {
                "cgroup2" => Hierarchy {
                    id: Some(V2_HIERARCHY_ID),
                    version: Version::V2,
                    mount,
                    controllers: Vec::new(),
                },
                "cgroup" => {
                    let options = after.get(2).copied().unwrap_or_default();
                    let controllers: Vec<String> = options
                        .split(',')
                        .filter(|opt| ids.iter().any(|(name, _)| name == opt))
                        .map(str::to_owned)
                        .collect();
                    let id = controllers
                        .first()
                        .and_then(|c| ids.iter().find(|(name, _)| name == c).map(|(_, id)| *id));
                    Hierarchy {
                        id,
                        version: Version::V1,
                        mount,
                        controllers,
                    }
                }
                _ => continue,
            };
            if !list.iter().any(|h| h.id.is_some() && h.id == hierarchy.id) {
                list.push(hierarchy);
            }
        }
        Self { list }
    }

    #[must_use]
    pub fn mode(&self) -> CgroupMode {
        let v1 = self.list.iter().any(|h| h.version == Version::V1);
        let v2 = self.list.iter().any(|h| h.version == Version::V2);
        match (v1, v2) {
            (true, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::V1,
            (false, true) => CgroupMode::V2,
            (false, false) => CgroupMode::None,
        }
    }

    /// The hierarchy holding `controller`: a v1 hierarchy that has it bound,
    /// else the v2 hierarchy if its root lists it.
    #[must_use]
    pub fn with_controller(&self, controller: &str) -> Option<&Hierarchy> {
        self.list
            .iter()
            .find(|h| h.version == Version::V1 && h.has(controller))
            .or_else(|| {
                self.list
                    .iter()
                    .find(|h| h.version == Version::V2 && h.has(controller))
            })
    }

    #[must_use]
    pub fn by_id(&self, id: u32) -> Option<&Hierarchy> {
        self.list.iter().find(|h| h.id == Some(id))
    }
}

/// Whether a cgroup mount shows its whole hierarchy. In the host's cgroup
/// namespace mountinfo says so (root `/`); in another one (a container's)
/// the root field is relative to that namespace: the container's own
/// cgroup mount reads `/` though it holds only the container's subtree,
/// and the host's tree, bind-mounted in, reads `/..` or deeper. The
/// directory itself says: a hierarchy's root cgroup is kernfs node 1,
/// the inode number of its directory.
fn is_hierarchy_root(root: &str, mount: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata(mount) {
        Ok(meta) => meta.ino() == KERNFS_ROOT_INO,
        // Unreadable: trust mountinfo, as in the host's namespace.
        Err(_) => root == "/",
    }
}

/// The inode number of a kernfs root directory (`kernfs_create_root`
/// gives the root node the first id).
const KERNFS_ROOT_INO: u64 = 1;

fn read_v2_controllers(mount: &Path) -> Vec<String> {
    std::fs::read_to_string(mount.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    crate::text::from_bytes(&out)
}

#[cfg(test)]
mod tests {
    use super::{CgroupMode, Hierarchies, Version, unescape_mount_path};

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_PROC_CGROUPS: &str = "\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
cpuacct\t2\t1\t1
memory\t4\t9\t1
net_cls\t0\t1\t1
";
    const V2_MOUNTINFO: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const V1_COMBINED: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory
99 25 0:27 /docker/abc /mnt/sub rw - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_host() {
        let h = Hierarchies::parse(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUPS);
        assert_eq!(h.mode(), CgroupMode::Hybrid);
        let memory = h.with_controller("memory").unwrap();
        assert_eq!(memory.id, Some(4));
        assert_eq!(memory.version, Version::V1);
        assert_eq!(memory.mount.to_str(), Some("/sys/fs/cgroup/memory"));
        assert_eq!(
            h.by_id(1).unwrap().mount.to_str(),
            Some("/sys/fs/cgroup/cpu")
        );
        assert_eq!(
            h.by_id(0).unwrap().mount.to_str(),
            Some("/sys/fs/cgroup/unified")
        );
        let systemd = h
            .list
            .iter()
            .find(|x| x.mount.ends_with("systemd"))
            .unwrap();
        assert_eq!(systemd.id, None);
    }

    #[test]
    fn pure_v2_host() {
        let mut h = Hierarchies::parse(V2_MOUNTINFO, "");
        assert_eq!(h.mode(), CgroupMode::V2);
        assert!(
            h.with_controller("memory").is_none(),
            "controllers not read yet"
        );
        h.list[0].controllers = vec!["cpu".into(), "memory".into()];
        let memory = h.with_controller("memory").unwrap();
        assert_eq!(memory.id, Some(0));
        assert_eq!(memory.mount.to_str(), Some("/sys/fs/cgroup"));
    }

    #[test]
    fn combined_v1_controllers_and_bind_mounts() {
        let ids = "cpu\t2\t1\t1\ncpuacct\t2\t1\t1\nmemory\t5\t1\t1\n";
        let h = Hierarchies::parse(V1_COMBINED, ids);
        assert_eq!(h.mode(), CgroupMode::V1);
        assert_eq!(h.list.len(), 2, "the bind mount of a sub-cgroup is ignored");
        assert_eq!(h.with_controller("cpuacct").unwrap().id, Some(2));
        assert_eq!(
            h.with_controller("cpu").unwrap().mount.to_str(),
            Some("/sys/fs/cgroup/cpu,cpuacct")
        );
    }

    #[test]
    fn garbage_is_ignored() {
        let h = Hierarchies::parse("nonsense\n - \n1 2 3\n", "memory x\n");
        assert_eq!(h.mode(), CgroupMode::None);
        assert_eq!(unescape_mount_path(r"/a\040b\\"), r"/a b\\");
    }
}
