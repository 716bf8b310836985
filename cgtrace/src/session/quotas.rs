//! Which cpu cgroups have a CFS quota, without reading every cgroup's
//! bandwidth file each interval: on a node with a thousand containers that
//! alone is thousands of file reads a second.
//!
//! The whole tree is read every [`RESCAN`]; in between, a cgroup created
//! since is read each interval until it is [`RESCAN`] old (a runtime sets a
//! container's quota just after making its cgroup). A quota set later on
//! an older cgroup is seen at the next rescan, or at once when the cgroup
//! is throttled (its spans name it).

use std::time::{Duration, Instant};

use cgtrace_common::cgroup::CgroupRef;

use crate::{
    cgroup::{Hierarchy, Resolver},
    event::Bandwidth,
};

/// How often every cpu cgroup's bandwidth is read.
pub const RESCAN: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct QuotaWatch {
    /// Limited as of the last full read, or found limited since, with the
    /// bandwidth read then.
    limited: Vec<(CgroupRef, Bandwidth)>,
    last_scan: Option<Instant>,
    /// Created since, with their paths and when they were made.
    fresh: Vec<(CgroupRef, String, Instant)>,
}

impl QuotaWatch {
    /// A cgroup was made (in any hierarchy; only the cpu one's are kept).
    pub fn created(&mut self, cgroup: CgroupRef, path: &str, resolver: &Resolver) {
        if cpu_hierarchy(resolver).is_some_and(|h| h.id == Some(cgroup.hierarchy)) {
            self.fresh.push((cgroup, path.to_owned(), Instant::now()));
        }
    }

    /// A cgroup was removed: it is limited no more. (Kept, its bandwidth
    /// as last read would be sampled on until the next rescan, and a
    /// removed group's quota series would come back after they expired.)
    pub fn removed(&mut self, cgroup: CgroupRef) {
        self.limited.retain(|(known, _)| *known != cgroup);
        self.fresh.retain(|(known, _, _)| *known != cgroup);
    }

    /// The cpu cgroups with a quota now, as far as this watch knows, and
    /// their bandwidth as last read.
    pub fn limited(&mut self, resolver: &mut Resolver) -> Vec<(CgroupRef, Bandwidth)> {
        let Some(hierarchy) = cpu_hierarchy(resolver) else {
            return Vec::new();
        };
        let Some(id) = hierarchy.id else {
            return Vec::new();
        };
        if self.last_scan.is_none_or(|at| at.elapsed() >= RESCAN) {
            self.last_scan = Some(Instant::now());
            self.fresh.clear();
            self.limited = resolver
                .refs(id)
                .into_iter()
                .filter_map(|(cgroup, path)| Some((cgroup, quota(&hierarchy, &path)?)))
                .collect();
        } else {
            self.fresh.retain(|(_, _, made)| made.elapsed() < RESCAN);
            for (cgroup, path, _) in &self.fresh {
                if self.limited.iter().any(|(known, _)| known == cgroup) {
                    continue;
                }
                if let Some(bandwidth) = quota(&hierarchy, path) {
                    self.limited.push((*cgroup, bandwidth));
                }
            }
        }
        self.limited.clone()
    }
}

fn cpu_hierarchy(resolver: &Resolver) -> Option<Hierarchy> {
    resolver.hierarchies().with_controller("cpu").cloned()
}

/// The cgroup's bandwidth, when it has a quota.
fn quota(hierarchy: &Hierarchy, path: &str) -> Option<Bandwidth> {
    crate::cgroup::cpu::bandwidth(&hierarchy.mount, path, hierarchy.version)
        .filter(|b| b.quota_us.is_some())
}
