//! cgroup id → path, for v1 (ids per hierarchy) and v2.
//!
//! A cgroup's id is the inode number of its directory (`kernfs_node->id`),
//! so a walk of the hierarchy's mount maps ids to paths. Unknown ids trigger
//! one rescan each, which picks up cgroups created after cgtrace started; paths
//! already learnt stay in the cache after the cgroup is removed, so an event
//! about a cgroup that has just gone still carries its name.

use std::{
    collections::{HashMap, HashSet},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::Path,
};

use cgtrace_common::cgroup::CgroupRef;

use super::Hierarchies;

/// The root cgroup's id in every hierarchy.
const ROOT_ID: u64 = 1;

/// Cap on cached paths per hierarchy: a node churning containers must not
/// grow the cache without bound.
const MAX_CACHED: usize = 65_536;

/// Cap on the ids remembered as not found. Every removed cgroup whose
/// leftover page cache is evicted after its path was dropped ends here, so
/// on a churning node it fills steadily; cleared when full (each id then
/// costs one more walk at most), and made at its final size so that it
/// never grows.
const MAX_MISSES: usize = 4_096;

/// Maps `(hierarchy, id)` to the cgroup's path below its hierarchy's mount
/// (`/` for the root).
#[derive(Debug)]
pub struct Resolver {
    hierarchies: Hierarchies,
    paths: HashMap<(u32, u64), String>,
    /// Walks done per hierarchy.
    scans: HashMap<u32, u64>,
    /// Ids not found: each unknown id costs at most one walk, so events
    /// about a cgroup that vanished before it was seen do not walk the tree
    /// again and again (a later walk for another id still finds it).
    misses: HashSet<(u32, u64)>,
}

impl Resolver {
    #[must_use]
    pub fn new(hierarchies: Hierarchies) -> Self {
        Self {
            hierarchies,
            // Room for the removed cgroups kept from the start (see
            // `identity::bounded`).
            paths: HashMap::with_capacity(crate::identity::bounded::table_size(
                crate::session::REMOVED_NAMES_KEPT,
            )),
            scans: HashMap::new(),
            misses: HashSet::with_capacity(crate::identity::bounded::table_size(MAX_MISSES)),
        }
    }

    #[must_use]
    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// Records a path learnt elsewhere (the kernel's own log, a tracepoint).
    pub fn learn(&mut self, hierarchy: u32, id: u64, path: &str) {
        self.insert(hierarchy, id, path.to_owned());
    }

    /// The path of a cgroup, rescanning its hierarchy if the id is new.
    /// `None` when the cgroup is gone and was never seen, or its hierarchy
    /// is not mounted.
    pub fn path(&mut self, cgroup: CgroupRef) -> Option<String> {
        if !cgroup.is_some() {
            return None;
        }
        if cgroup.id == ROOT_ID {
            return Some("/".to_owned());
        }
        let key = (cgroup.hierarchy, cgroup.id);
        if let Some(path) = self.paths.get(&key) {
            return Some(path.clone());
        }
        // An id looked for before was not there at a walk since (its own,
        // or a later one that would have found it): no walk for it again.
        // Comparing walk counts instead would let two unknown ids make
        // each other walk the tree on every lookup.
        if !self.misses.contains(&key) {
            self.scan(cgroup.hierarchy);
        }
        let found = self.paths.get(&key).cloned();
        if found.is_none() {
            if self.misses.len() >= MAX_MISSES {
                self.misses.clear();
            }
            self.misses.insert(key);
        }
        found
    }

    /// Walks one hierarchy's mount and records every cgroup's path.
    pub fn scan(&mut self, hierarchy: u32) {
        *self.scans.entry(hierarchy).or_default() += 1;
        let Some(mount) = self.hierarchies.by_id(hierarchy).map(|h| h.mount.clone()) else {
            return;
        };
        let mut found = Vec::new();
        walk(&mount, "", &mut found);
        for (id, path) in found {
            self.insert(hierarchy, id, path);
        }
    }

    /// Every cgroup of a hierarchy as of now: `(id, path)`.
    pub fn cgroups(&mut self, hierarchy: u32) -> Vec<(u64, String)> {
        self.scan(hierarchy);
        let mut all: Vec<(u64, String)> = self
            .paths
            .iter()
            .filter(|((h, _), _)| *h == hierarchy)
            .map(|((_, id), path)| (*id, path.clone()))
            .collect();
        all.push((ROOT_ID, "/".to_owned()));
        all
    }

    /// Every cgroup of a hierarchy as of now, as references, with paths.
    pub fn refs(&mut self, hierarchy: u32) -> Vec<(CgroupRef, String)> {
        self.cgroups(hierarchy)
            .into_iter()
            .map(|(id, path)| {
                let level = path.split('/').filter(|p| !p.is_empty()).count();
                let cgroup = CgroupRef {
                    id,
                    hierarchy,
                    level: u32::try_from(level).unwrap_or(0),
                };
                (cgroup, path)
            })
            .collect()
    }

    /// Forgets a removed cgroup's path (the session keeps the latest
    /// removed ones' names; see `session::REMOVED_NAMES_KEPT`).
    pub fn forget(&mut self, cgroup: CgroupRef) {
        self.paths.remove(&(cgroup.hierarchy, cgroup.id));
        self.misses.remove(&(cgroup.hierarchy, cgroup.id));
    }

    fn insert(&mut self, hierarchy: u32, id: u64, path: String) {
        if self.paths.len() >= MAX_CACHED && !self.paths.contains_key(&(hierarchy, id)) {
            // Forget everything rather than track recency: a rescan rebuilds
            // what still exists, and this only happens on huge churn.
            self.paths.clear();
        }
        self.paths.insert((hierarchy, id), path);
    }
}

/// Depth-first walk recording `(inode, path)` of every directory below `dir`.
fn walk(dir: &Path, relative: &str, found: &mut Vec<(u64, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if !file_type.is_dir() {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let name = entry.file_name();
        let path = format!("{relative}/{}", crate::text::from_bytes(name.as_bytes()));
        found.push((metadata.ino(), path.clone()));
        walk(&entry.path(), &path, found);
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

    use cgtrace_common::cgroup::CgroupRef;

    use super::Resolver;
    use crate::cgroup::{Hierarchies, Hierarchy, Version};

    /// A fake cgroupfs: directories whose inode numbers stand in for ids.
    fn fake_tree() -> (tempfile::TempDir, Resolver) {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice",
            "system.slice/docker-abc.scope",
        ] {
            std::fs::create_dir_all(dir.path().join(path)).unwrap();
        }
        let hierarchies = Hierarchies {
            list: vec![Hierarchy {
                id: Some(4),
                version: Version::V1,
                mount: PathBuf::from(dir.path()),
                controllers: vec!["memory".into()],
            }],
        };
        (dir, Resolver::new(hierarchies))
    }

    fn id_of(dir: &tempfile::TempDir, path: &str) -> u64 {
        std::fs::metadata(dir.path().join(path)).unwrap().ino()
    }

    #[test]
    fn resolves_nested_paths_and_the_root() {
        let (dir, mut resolver) = fake_tree();
        let pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice";
        let cgroup = CgroupRef {
            id: id_of(&dir, pod),
            hierarchy: 4,
            level: 3,
        };
        assert_eq!(resolver.path(cgroup).as_deref(), Some(&*format!("/{pod}")));
        let root = CgroupRef {
            id: 1,
            hierarchy: 4,
            level: 0,
        };
        assert_eq!(resolver.path(root).as_deref(), Some("/"));
        assert_eq!(resolver.path(CgroupRef::default()), None);
    }

    #[test]
    fn finds_cgroups_created_later_and_remembers_removed_ones() {
        let (dir, mut resolver) = fake_tree();
        resolver.scan(4);
        std::fs::create_dir(dir.path().join("late")).unwrap();
        let late = CgroupRef {
            id: id_of(&dir, "late"),
            hierarchy: 4,
            level: 1,
        };
        assert_eq!(resolver.path(late).as_deref(), Some("/late"));
        std::fs::remove_dir(dir.path().join("late")).unwrap();
        assert_eq!(resolver.path(late).as_deref(), Some("/late"));
    }

    #[test]
    fn unknown_ids_cost_one_walk_each_however_often_they_are_asked_for() {
        let (_dir, mut resolver) = fake_tree();
        let unknown = |id| CgroupRef {
            id,
            hierarchy: 4,
            level: 1,
        };
        for _ in 0..10 {
            assert_eq!(resolver.path(unknown(900_001)), None);
            assert_eq!(resolver.path(unknown(900_002)), None);
        }
        assert_eq!(resolver.scans[&4], 2);
    }

    #[test]
    fn other_hierarchies_and_unknown_ids_resolve_to_none() {
        let (dir, mut resolver) = fake_tree();
        let docker = id_of(&dir, "system.slice/docker-abc.scope");
        let wrong_hierarchy = CgroupRef {
            id: docker,
            hierarchy: 1,
            level: 2,
        };
        assert_eq!(resolver.path(wrong_hierarchy), None);
        let unknown = CgroupRef {
            id: u64::MAX,
            hierarchy: 4,
            level: 2,
        };
        assert_eq!(resolver.path(unknown), None);
        resolver.learn(4, u64::MAX, "/gone");
        assert_eq!(resolver.path(unknown).as_deref(), Some("/gone"));
    }
}
