//! A reference to a cgroup as the kernel names it.

/// A cgroup identified the way the kernel does: cgroup ids are unique only
/// within one hierarchy (on a v1/v2 hybrid the memory and cpu hierarchies
/// both number their cgroups from 1), so the hierarchy travels with the id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupRef {
    /// `cgroup->kn->id`: the inode number of the cgroup's directory. Zero
    /// means "no cgroup" (for example: no memcg because the OOM was global).
    pub id: u64,
    /// `cgroup->root->hierarchy_id`: 0 is the cgroup v2 hierarchy.
    pub hierarchy: u32,
    /// `cgroup->level`: depth below the hierarchy's root (the root is 0).
    pub level: u32,
}
const _: () = assert!(core::mem::size_of::<CgroupRef>() == 16);

impl CgroupRef {
    #[must_use]
    pub const fn is_some(&self) -> bool {
        self.id != 0
    }
}

/// Bytes of a cgroup path a [`CgroupCreatedRecord`] carries (longer paths
/// are cut, and the collector falls back to its own lookup).
pub const CGROUP_PATH_MAX: usize = 256;

/// A cgroup was created (`cgroup_mkdir`): its id and path, so a cgroup that
/// lives for less than a sampling interval is still named.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupCreatedRecord {
    pub header: crate::RecordHeader,
    pub cgroup: CgroupRef,
    /// NUL-terminated path below the hierarchy's root, as the tracepoint
    /// gives it (`/kubepods/burstable/pod…`).
    pub path: [u8; CGROUP_PATH_MAX],
}
const _: () = assert!(core::mem::size_of::<CgroupCreatedRecord>() == 288);

/// A cgroup was removed (`cgroup_rmdir`): its series and names may go.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupRemovedRecord {
    pub header: crate::RecordHeader,
    pub cgroup: CgroupRef,
}
const _: () = assert!(core::mem::size_of::<CgroupRemovedRecord>() == 32);

/// Key of the allowlist of cgroups a filtered view keeps (`ALLOWED`): the
/// id and the hierarchy, without the level, which the key already fixes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupKey {
    pub id: u64,
    pub hierarchy: u32,
    /// Explicit padding; always zero.
    pub padding: u32,
}
const _: () = assert!(core::mem::size_of::<CgroupKey>() == 16);

impl CgroupKey {
    #[must_use]
    pub const fn of(cgroup: &CgroupRef) -> Self {
        Self {
            id: cgroup.id,
            hierarchy: cgroup.hierarchy,
            padding: 0,
        }
    }
}

/// A memcg's cached filter verdict (`MEMCG_VERDICTS`): the allowlist is
/// keyed by cgroup, but the hot page-cache path has only a memcg pointer,
/// and turning that into a cgroup costs five kernel reads. The verdict is
/// valid while the allowlist's generation is unchanged.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterVerdict {
    pub generation: u32,
    /// 1 when the memcg's cgroup is in the allowlist.
    pub allowed: u32,
}
const _: () = assert!(core::mem::size_of::<FilterVerdict>() == 8);
