//! Per-interval deltas of a cgroup's own counter files: memory events
//! (which no tracepoint reports), and charges and refaults from memory.stat
//! where the memcg stat tracepoints are missing.

use std::collections::HashMap;

use cgtrace_common::{cgroup::CgroupRef, pagecache::CHARGE_KINDS};

use super::{
    Resolver,
    stat::{self, MemoryEvents},
};

/// `(charged, uncharged)` pages per `ChargeKind`.
pub type Charges = [(u64, u64); CHARGE_KINDS];

/// A cgroup by what identifies it: its hierarchy and id.
type Key = (u32, u64);

/// Remembers each cgroup's last counter values. Cgroups that existed when
/// [`CgroupPoller::prime`] ran are counted from that moment; cgroups created
/// later from zero, since all their events happened while cgtrace watched.
#[derive(Debug, Default)]
pub struct CgroupPoller {
    events: HashMap<Key, MemoryEvents>,
    gauges: HashMap<Key, [Option<u64>; CHARGE_KINDS]>,
}

impl CgroupPoller {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the current counters of every cgroup in `hierarchy`.
    pub fn prime(&mut self, resolver: &mut Resolver, hierarchy: u32) {
        let Some(h) = resolver.hierarchies().by_id(hierarchy).cloned() else {
            return;
        };
        for (id, path) in resolver.cgroups(hierarchy) {
            if let Ok(events) = stat::read_events(&h.mount, &path, h.version) {
                self.events.insert((hierarchy, id), events);
            }
            if let Ok(stat) = stat::read(&h.mount, &path) {
                self.gauges
                    .insert((hierarchy, id), stat::charge_gauges(&stat, h.version));
            }
        }
    }

    /// Memory events since the last call for this cgroup, and the file they
    /// were read from. `None` if the cgroup is gone.
    pub fn events(
        &mut self,
        cgroup: CgroupRef,
        resolver: &mut Resolver,
    ) -> Option<(MemoryEvents, &'static str)> {
        let path = resolver.path(cgroup)?;
        let hierarchy = resolver.hierarchies().by_id(cgroup.hierarchy)?;
        let now = stat::read_events(&hierarchy.mount, &path, hierarchy.version).ok()?;
        let before = self
            .events
            .insert((cgroup.hierarchy, cgroup.id), now)
            .unwrap_or_default();
        Some((now.since(&before), MemoryEvents::source(hierarchy.version)))
    }

    /// Charges and refaults since the last call, from memory.stat: the
    /// positive part of each gauge's change counts as charged, the negative
    /// part as uncharged (net changes only: a page charged and uncharged
    /// within one interval is not seen).
    pub fn charges(
        &mut self,
        cgroup: CgroupRef,
        resolver: &mut Resolver,
        page_size: u64,
    ) -> Option<Charges> {
        let path = resolver.path(cgroup)?;
        let hierarchy = resolver.hierarchies().by_id(cgroup.hierarchy)?;
        let stat = stat::read(&hierarchy.mount, &path).ok()?;
        let now = stat::charge_gauges(&stat, hierarchy.version);
        let before = self
            .gauges
            .insert((cgroup.hierarchy, cgroup.id), now)
            .unwrap_or([Some(0); CHARGE_KINDS]);
        let mut charges = [(0, 0); CHARGE_KINDS];
        for (index, slot) in charges.iter_mut().enumerate() {
            let (Some(now), Some(then)) = (now[index], before[index]) else {
                continue;
            };
            // Refault counters are counts; the memory gauges are bytes.
            let unit = if index >= cgtrace_common::pagecache::ChargeKind::RefaultAnon as usize {
                1
            } else {
                page_size.max(1)
            };
            *slot = if now >= then {
                ((now - then) / unit, 0)
            } else {
                (0, (then - now) / unit)
            };
        }
        Some(charges)
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

    use cgtrace_common::{cgroup::CgroupRef, pagecache::ChargeKind};

    use super::CgroupPoller;
    use crate::cgroup::{Hierarchies, Hierarchy, Resolver, Version};

    /// A fake memory hierarchy with one cgroup `app` whose files we write.
    fn fake(version: Version) -> (tempfile::TempDir, Resolver, CgroupRef) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let id = std::fs::metadata(dir.path().join("app")).unwrap().ino();
        let resolver = Resolver::new(Hierarchies {
            list: vec![Hierarchy {
                id: Some(7),
                version,
                mount: PathBuf::from(dir.path()),
                controllers: vec!["memory".into()],
            }],
        });
        (
            dir,
            resolver,
            CgroupRef {
                id,
                hierarchy: 7,
                level: 1,
            },
        )
    }

    fn write(dir: &tempfile::TempDir, file: &str, text: &str) {
        std::fs::write(dir.path().join("app").join(file), text).unwrap();
    }

    #[test]
    fn v2_events_and_charges_from_files() {
        let (dir, mut resolver, app) = fake(Version::V2);
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        write(
            &dir,
            "memory.stat",
            "anon 8192\nfile 40960\nkernel 4096\nsock 0\nshmem 0\nworkingset_refault_anon 0\nworkingset_refault_file 3\n",
        );
        let mut poller = CgroupPoller::new();
        poller.prime(&mut resolver, 7);
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 2\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n",
        );
        write(
            &dir,
            "memory.stat",
            "anon 4096\nfile 49152\nkernel 4096\nsock 0\nshmem 0\nworkingset_refault_anon 0\nworkingset_refault_file 10\n",
        );
        let (events, source) = poller.events(app, &mut resolver).unwrap();
        assert_eq!(source, "memory.events");
        assert_eq!(
            (events.high, events.max, events.oom, events.oom_kill),
            (Some(0), Some(4), Some(1), Some(1))
        );
        let charges = poller.charges(app, &mut resolver, 4096).unwrap();
        assert_eq!(
            charges[ChargeKind::Anon as usize],
            (0, 1),
            "one anon page uncharged"
        );
        assert_eq!(
            charges[ChargeKind::File as usize],
            (2, 0),
            "two file pages charged"
        );
        assert_eq!(
            charges[ChargeKind::RefaultFile as usize],
            (7, 0),
            "refaults are counts"
        );
    }

    #[test]
    fn v1_files_and_cgroups_created_after_start() {
        let (dir, mut resolver, app) = fake(Version::V1);
        let mut poller = CgroupPoller::new();
        // No counters readable at prime time, as for a cgroup created later:
        // everything it counts happened while watched.
        poller.prime(&mut resolver, 7);
        write(&dir, "memory.failcnt", "12\n");
        write(
            &dir,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write(&dir, "memory.stat", "cache 8192\nrss 0\nshmem 0\n");
        let (events, source) = poller.events(app, &mut resolver).unwrap();
        assert_eq!(source, "memory.failcnt+memory.oom_control");
        assert_eq!(
            (events.max, events.oom_kill, events.high),
            (Some(12), Some(1), None)
        );
        let charges = poller.charges(app, &mut resolver, 4096).unwrap();
        assert_eq!(charges[ChargeKind::File as usize], (2, 0));
        assert_eq!(
            charges[ChargeKind::Kernel as usize],
            (0, 0),
            "v1 memory.stat has no kernel figure"
        );
        let gone = CgroupRef {
            id: u64::MAX,
            hierarchy: 7,
            level: 1,
        };
        assert!(poller.events(gone, &mut resolver).is_none());
    }
}
