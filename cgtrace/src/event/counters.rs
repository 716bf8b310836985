//! What the probe's in-kernel counters moved between two samples: page
//! cache added, removed and evicted per (owner, actor, reason), reclaim
//! stalls per memcg, charges per memcg (where the memcg stat tracepoints
//! are attached), and per-file page-cache moves (where asked for).
//!
//! The kernel keeps the counters cumulative in per-CPU maps; the probe's
//! sampler sums the CPUs and subtracts the previous sample, so one event
//! holds one interval and a replay can merge intervals into longer ones.

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CacheReason, ChargeKind, ReclaimKind, StallStats},
};

/// The counters' moves over `start_ns..end_ns` (`CLOCK_MONOTONIC`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    pub start_ns: u64,
    pub end_ns: u64,
    pub flows: Vec<Flow>,
    pub stalls: Vec<Stall>,
    /// `None` when the memcg stat tracepoints are not attached.
    pub charges: Option<Vec<Charge>>,
    /// `None` without per-file counting.
    pub files: Option<Vec<FileFlow>>,
}

/// Pages of `owner`'s page cache added (or removed, or evicted for
/// `reason`) by a task in `actor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// `None`: uncharged pages, or a memcg that could not be named.
    pub owner: Option<CgroupRef>,
    pub actor: Option<CgroupRef>,
    pub reason: CacheReason,
    pub pages: u64,
}

/// Reclaim stalls of one memcg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub cgroup: Option<CgroupRef>,
    pub kind: ReclaimKind,
    /// Counted in the interval; `max_ns` is the longest stall since the
    /// probe was attached (the kernel keeps a running max).
    pub stats: Box<StallStats>,
}

/// Pages of one kind charged to and uncharged from one memcg (for the
/// refault kinds, `charged` counts refaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    pub cgroup: Option<CgroupRef>,
    pub kind: ChargeKind,
    pub charged: u64,
    pub uncharged: u64,
}

/// Pages of one file that moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFlow {
    pub owner: Option<CgroupRef>,
    /// Kernel `dev_t` (major << 20 | minor) and inode number.
    pub dev: u32,
    pub ino: u64,
    pub reason: CacheReason,
    pub pages: u64,
}

impl ProbeCounters {
    /// Every cgroup the counters name.
    pub fn cgroups(&self) -> impl Iterator<Item = CgroupRef> + '_ {
        let flows = self.flows.iter().flat_map(|f| [f.owner, f.actor]);
        let stalls = self.stalls.iter().map(|s| s.cgroup);
        let charges = self.charges.iter().flatten().map(|c| c.cgroup);
        let files = self.files.iter().flatten().map(|f| f.owner);
        flows.chain(stalls).chain(charges).chain(files).flatten()
    }

    /// Adds a later interval's counters: the two as one longer interval.
    pub fn merge(&mut self, later: &Self) {
        self.start_ns = self.start_ns.min(later.start_ns);
        self.end_ns = self.end_ns.max(later.end_ns);
        let key = |c: Option<CgroupRef>| c.map(|c| (c.hierarchy, c.id));
        for flow in &later.flows {
            match self.flows.iter_mut().find(|f| {
                key(f.owner) == key(flow.owner)
                    && key(f.actor) == key(flow.actor)
                    && f.reason == flow.reason
            }) {
                Some(same) => same.pages += flow.pages,
                None => self.flows.push(*flow),
            }
        }
        self.flows.sort_by_key(|f| {
            (
                std::cmp::Reverse(f.pages),
                key(f.owner),
                key(f.actor),
                f.reason as u32,
            )
        });
        for stall in &later.stalls {
            match self
                .stalls
                .iter_mut()
                .find(|s| key(s.cgroup) == key(stall.cgroup) && s.kind == stall.kind)
            {
                Some(same) => same.stats.merge(&stall.stats),
                None => self.stalls.push(stall.clone()),
            }
        }
        if let Some(more) = &later.charges {
            let charges = self.charges.get_or_insert_with(Vec::new);
            for charge in more {
                match charges
                    .iter_mut()
                    .find(|c| key(c.cgroup) == key(charge.cgroup) && c.kind == charge.kind)
                {
                    Some(same) => {
                        same.charged += charge.charged;
                        same.uncharged += charge.uncharged;
                    }
                    None => charges.push(*charge),
                }
            }
        }
        if let Some(more) = &later.files {
            let files = self.files.get_or_insert_with(Vec::new);
            for file in more {
                match files.iter_mut().find(|f| {
                    key(f.owner) == key(file.owner)
                        && (f.dev, f.ino) == (file.dev, file.ino)
                        && f.reason == file.reason
                }) {
                    Some(same) => same.pages += file.pages,
                    None => files.push(*file),
                }
            }
        }
    }

    #[must_use]
    pub fn seconds(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "durations well below 2^52 ns")]
        let ns = self.end_ns.saturating_sub(self.start_ns) as f64;
        ns / 1e9
    }
}
