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
        merge_by_key(
            &mut self.flows,
            &later.flows,
            |f| (key(f.owner), key(f.actor), f.reason),
            |total, more| total.pages += more.pages,
        );
        self.flows.sort_by_key(|f| {
            (
                std::cmp::Reverse(f.pages),
                key(f.owner),
                key(f.actor),
                f.reason as u32,
            )
        });
        merge_by_key(
            &mut self.stalls,
            &later.stalls,
            |s| (key(s.cgroup), s.kind),
            |total, more| total.stats.merge(&more.stats),
        );
        if let Some(more) = &later.charges {
            merge_by_key(
                self.charges.get_or_insert_with(Vec::new),
                more,
                |c| (key(c.cgroup), c.kind),
                |total, more| {
                    total.charged += more.charged;
                    total.uncharged += more.uncharged;
                },
            );
        }
        if let Some(more) = &later.files {
            merge_by_key(
                self.files.get_or_insert_with(Vec::new),
                more,
                |f| (key(f.owner), f.dev, f.ino, f.reason),
                |total, more| total.pages += more.pages,
            );
        }
    }

    #[must_use]
    pub fn seconds(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "durations well below 2^52 ns")]
        let ns = self.end_ns.saturating_sub(self.start_ns) as f64;
        ns / 1e9
    }
}

/// Adds `more` into `into`: an item whose key `into` has already is added
/// to it with `add`, any other is appended.
fn merge_by_key<T: Clone, K: Eq + std::hash::Hash>(
    into: &mut Vec<T>,
    more: &[T],
    key: impl Fn(&T) -> K,
    add: impl Fn(&mut T, &T),
) {
    let mut at: std::collections::HashMap<K, usize> = into
        .iter()
        .enumerate()
        .map(|(i, item)| (key(item), i))
        .collect();
    for item in more {
        let next = into.len();
        let i = *at.entry(key(item)).or_insert(next);
        if i == next {
            into.push(item.clone());
        } else {
            add(&mut into[i], item);
        }
    }
}
