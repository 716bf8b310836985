//! Page-cache and reclaim aggregation: map keys and values the programs
//! update in the kernel and the collector reads each interval.
//!
//! Hot events (page-cache insertions and deletions: up to a million a
//! second) are never streamed; they are counted per CPU under a
//! [`CacheKey`] of memcg *pointers* (one read per event, no id chain), and
//! `MEMCG_REFS` maps each pointer to its cgroup once per memcg.

crate::code_enum! {
    /// Why a page-cache page came or went.
    pub enum CacheReason: u32 {
        /// Inserted (`mm_filemap_add_to_page_cache`).
        Added = 0 => "added",
        /// Removed outside reclaim: truncate, unlink, invalidation, drop_caches.
        Removed = 1 => "removed",
        /// Reclaimed while the owner's own memcg was over its limit.
        OwnLimit = 2 => "own_limit",
        /// Reclaimed under the limit of one of the owner's ancestors.
        AncestorLimit = 3 => "ancestor_limit",
        /// Reclaimed by memcg limit reclaim whose target memcg was not found.
        MemcgLimit = 4 => "memcg_limit",
        /// Reclaimed by kswapd (node free memory below its watermark).
        Kswapd = 5 => "kswapd",
        /// Reclaimed by a task in direct global reclaim (allocation stalled).
        DirectGlobal = 6 => "direct_global",
        /// Reclaimed with no limit involved: proactive reclaim (DAMON's
        /// kdamond, `memory.reclaim`).
        Proactive = 7 => "proactive",
    }
}

/// Number of [`CacheReason`] values.
pub const CACHE_REASONS: usize = CacheReason::COUNT;

impl CacheReason {
    /// Whether this is an eviction by reclaim (not an insertion, not a removal).
    #[must_use]
    pub const fn is_reclaim(self) -> bool {
        !matches!(self, Self::Added | Self::Removed)
    }
}

/// Key of the per-CPU page-cache counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// `struct mem_cgroup *` the folio is charged to (0: uncharged).
    pub owner: u64,
    /// `struct mem_cgroup *` of the task that added or evicted it.
    pub actor: u64,
    /// A [`CacheReason`].
    pub reason: u32,
    /// Explicit padding; always zero.
    pub padding: u32,
}
const _: () = assert!(core::mem::size_of::<CacheKey>() == 24);

/// Key of the per-CPU per-file counters (only kept with `cgtrace cache --files`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// `struct mem_cgroup *` the folio is charged to.
    pub owner: u64,
    /// The file's inode number.
    pub ino: u64,
    /// `super_block.s_dev`: the kernel's `dev_t` (major << 20 | minor).
    pub dev: u32,
    /// A [`CacheReason`].
    pub reason: u32,
}
const _: () = assert!(core::mem::size_of::<FileKey>() == 24);

crate::code_enum! {
    /// Kinds of reclaim a task can be in, between begin and end tracepoints.
    pub enum ReclaimKind: u32 {
        /// `mm_vmscan_memcg_reclaim_begin/end`: a memcg over its limit (or
        /// `memory.high`, or `memory.reclaim`).
        Memcg = 0 => "memcg",
        /// `mm_vmscan_direct_reclaim_begin/end`: global direct reclaim.
        Direct = 1 => "direct",
        /// Reclaim without a begin/end pair (kswapd, kdamond): shrink
        /// counters only, no stall times.
        Background = 2 => "background",
    }
}

/// What a task is doing between reclaim begin and end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimContext {
    pub start_ns: u64,
    /// For memcg reclaim, the memcg whose limit was exceeded (0: not found).
    pub target: u64,
    /// The task's own memcg.
    pub actor: u64,
    /// A [`ReclaimKind`].
    pub kind: u32,
    /// Explicit padding; always zero.
    pub padding: u32,
}
const _: () = assert!(core::mem::size_of::<ReclaimContext>() == 32);

/// Key of the per-CPU reclaim stall histograms and shrink counters: the
/// memcg the stall is charged to (the target for memcg reclaim, the
/// stalled task's memcg for direct reclaim).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StallKey {
    pub memcg: u64,
    /// A [`ReclaimKind`].
    pub kind: u32,
    /// Explicit padding; always zero.
    pub padding: u32,
}
const _: () = assert!(core::mem::size_of::<StallKey>() == 16);

/// Sub-buckets per power of two in [`StallStats::buckets`].
pub const STALL_SUB_BUCKETS: u32 = 4;
/// Histogram buckets: powers of two from 1 ns to 2^40 ns (18 minutes),
/// four sub-buckets each, so a percentile read from it is within 19 %.
pub const STALL_BUCKETS: usize = 41 * STALL_SUB_BUCKETS as usize;

/// Reclaim stall statistics of one memcg on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallStats {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Pages scanned, reclaimed, found dirty and under writeback by
    /// `mm_vmscan_lru_shrink_inactive` during these reclaims.
    pub scanned: u64,
    pub reclaimed: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub buckets: [u64; STALL_BUCKETS],
}
const _: () = assert!(core::mem::size_of::<StallStats>() == 56 + 8 * STALL_BUCKETS);

impl StallStats {
    pub const ZERO: Self = Self {
        count: 0,
        total_ns: 0,
        max_ns: 0,
        scanned: 0,
        reclaimed: 0,
        dirty: 0,
        writeback: 0,
        buckets: [0; STALL_BUCKETS],
    };
}

impl Default for StallStats {
    fn default() -> Self {
        Self::ZERO
    }
}

#[cfg(feature = "user")]
impl StallStats {
    /// Adds `other` (counts summed, the larger max kept): two CPUs, two
    /// intervals or two kinds of reclaim as one.
    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
        self.scanned += other.scanned;
        self.reclaimed += other.reclaimed;
        self.dirty += other.dirty;
        self.writeback += other.writeback;
        for (total, more) in self.buckets.iter_mut().zip(&other.buckets) {
            *total += more;
        }
    }

    /// What was counted since `before`; the max stays the running max,
    /// since the kernel keeps no per-interval max.
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        let mut buckets = [0; STALL_BUCKETS];
        for ((delta, now), then) in buckets.iter_mut().zip(&self.buckets).zip(&before.buckets) {
            *delta = now.saturating_sub(*then);
        }
        Self {
            count: self.count.saturating_sub(before.count),
            total_ns: self.total_ns.saturating_sub(before.total_ns),
            max_ns: self.max_ns,
            scanned: self.scanned.saturating_sub(before.scanned),
            reclaimed: self.reclaimed.saturating_sub(before.reclaimed),
            dirty: self.dirty.saturating_sub(before.dirty),
            writeback: self.writeback.saturating_sub(before.writeback),
            buckets,
        }
    }

    /// The `q` quantile (0..=1) from the histogram: the top of the bucket it
    /// falls in, never above the observed max. `None` without stalls.
    #[must_use]
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within a histogram of u64 counts"
        )]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let top = if bucket + 1 < STALL_BUCKETS {
                    stall_bucket_floor(bucket + 1)
                } else {
                    u64::MAX
                };
                return Some(top.min(self.max_ns));
            }
        }
        Some(self.max_ns)
    }
}

/// The histogram bucket of a duration: `4 * floor(log2(ns))` plus the next
/// two bits below the leading one.
#[must_use]
pub const fn stall_bucket(ns: u64) -> usize {
    if ns < 2 {
        return 0;
    }
    let log2 = ns.ilog2();
    // Below 4 ns there is nothing to split (and no reclaim is that quick).
    let sub = if log2 >= 2 { (ns >> (log2 - 2)) & 3 } else { 0 };
    // `sub` is two bits: the cast cannot truncate.
    #[expect(clippy::cast_possible_truncation, reason = "sub < 4")]
    let bucket = log2 as usize * STALL_SUB_BUCKETS as usize + sub as usize;
    if bucket < STALL_BUCKETS {
        bucket
    } else {
        STALL_BUCKETS - 1
    }
}

/// The smallest duration that falls in `bucket` (the inverse of [`stall_bucket`]).
#[must_use]
pub const fn stall_bucket_floor(bucket: usize) -> u64 {
    let log2 = bucket / STALL_SUB_BUCKETS as usize;
    let sub = (bucket % STALL_SUB_BUCKETS as usize) as u64;
    if log2 >= 2 {
        (1u64 << log2) + (sub << (log2 - 2))
    } else {
        1u64 << log2
    }
}

crate::code_enum! {
    /// Memory types whose charges the memcg stat tracepoints report, and
    /// the refault counters (index into `Offsets::memcg_stat_items`).
    pub enum ChargeKind: u32 {
        /// `NR_ANON_MAPPED`.
        Anon = 0 => "anon",
        /// `NR_FILE_PAGES` (page cache, shmem included).
        File = 1 => "file",
        /// `NR_SHMEM`.
        Shmem = 2 => "shmem",
        /// `MEMCG_KMEM`: kernel memory (slab, page tables, stacks...).
        Kernel = 3 => "kernel",
        /// `MEMCG_SOCK`: network socket buffers.
        Sock = 4 => "sock",
        /// `WORKINGSET_REFAULT_ANON`: evicted anon pages faulted back in.
        RefaultAnon = 5 => "refault_anon",
        /// `WORKINGSET_REFAULT_FILE`: evicted page-cache pages read again.
        RefaultFile = 6 => "refault_file",
    }
}

/// Number of [`ChargeKind`] values.
pub const CHARGE_KINDS: usize = ChargeKind::COUNT;

impl ChargeKind {
    /// The kernel enum value each kind stands for (read from BTF).
    pub const KERNEL_NAMES: [&'static str; CHARGE_KINDS] = [
        "NR_ANON_MAPPED",
        "NR_FILE_PAGES",
        "NR_SHMEM",
        "MEMCG_KMEM",
        "MEMCG_SOCK",
        "WORKINGSET_REFAULT_ANON",
        "WORKINGSET_REFAULT_FILE",
    ];
}

/// Key of the per-CPU charge counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChargeKey {
    pub memcg: u64,
    /// A [`ChargeKind`].
    pub kind: u32,
    /// Explicit padding; always zero.
    pub padding: u32,
}
const _: () = assert!(core::mem::size_of::<ChargeKey>() == 16);

/// Pages charged (positive updates) and uncharged (negative updates).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChargeValue {
    pub charged: u64,
    pub uncharged: u64,
}
const _: () = assert!(core::mem::size_of::<ChargeValue>() == 16);

/// `MEMCG_REFS` value: the cgroup behind a memcg pointer.
pub type MemcgRef = crate::cgroup::CgroupRef;

#[cfg(test)]
mod tests {
    use super::{STALL_BUCKETS, stall_bucket, stall_bucket_floor};

    #[test]
    fn buckets_are_monotonic_and_invertible() {
        let mut previous = 0;
        for ns in [
            1u64,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            10,
            12,
            14,
            16,
            1000,
            1_000_000,
            1 << 39,
            u64::MAX,
        ] {
            let b = stall_bucket(ns);
            assert!(b >= previous, "{ns}");
            assert!(b < STALL_BUCKETS);
            previous = b;
            if ns < 1 << 40 {
                assert!(stall_bucket_floor(b) <= ns, "{ns} in bucket {b}");
                assert!(stall_bucket(stall_bucket_floor(b)) == b, "{ns}");
            }
        }
        assert_eq!(stall_bucket(1024), 40);
        assert_eq!(stall_bucket(1024 + 256), 41);
        assert_eq!(stall_bucket_floor(41), 1280);
    }
}
