//! Kernels before 5.11 count BPF maps against the loading user's
//! `RLIMIT_MEMLOCK` (since 5.11 they are charged to its memory cgroup). The
//! usual limit, 64 KiB to 8 MiB, is far below cgtrace's maps, so on those
//! kernels the limit is raised before loading, as libbpf does; a process
//! that may not raise it (no `CAP_SYS_RESOURCE`) is told what to do when a
//! map cannot be created.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Whether this kernel counts BPF memory against `RLIMIT_MEMLOCK`.
#[must_use]
pub fn kernel_counts_bpf_memory(release: &str) -> bool {
    crate::system::kernel_version(release) < (5, 11)
}

/// What raising the limit came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memlock {
    /// The kernel charges BPF memory to the memcg: the limit does not matter.
    NotCounted,
    /// Raised to unlimited (or it already was).
    Unlimited,
    /// This process may not raise it: its limit, in bytes.
    Limited(u64),
}

impl Memlock {
    /// Raises the limit where the running kernel counts BPF memory.
    #[must_use]
    pub fn prepare() -> Self {
        if !kernel_counts_bpf_memory(&crate::system::kernel_release()) {
            return Self::NotCounted;
        }
        let unlimited = Rlimit {
            current: None,
            maximum: None,
        };
        if setrlimit(Resource::Memlock, unlimited).is_ok() {
            return Self::Unlimited;
        }
        match getrlimit(Resource::Memlock).current {
            None => Self::Unlimited,
            Some(bytes) => Self::Limited(bytes),
        }
    }

    /// Why a map could not be created, where the limit is the likely cause.
    #[must_use]
    pub fn hint(self) -> Option<String> {
        match self {
            Self::Limited(bytes) => Some(format!(
                "this kernel (before 5.11) counts BPF maps against RLIMIT_MEMLOCK, \
                 {} KiB for this process, and it may not raise it: grant CAP_SYS_RESOURCE, \
                 or raise the limit (ulimit -l unlimited; LimitMEMLOCK=infinity in a systemd unit)",
                bytes / 1024
            )),
            Self::NotCounted | Self::Unlimited => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kernel_counts_bpf_memory;

    #[test]
    fn kernels_before_5_11_count_bpf_memory() {
        assert!(kernel_counts_bpf_memory("5.10.0-43-cloud-amd64"));
        assert!(kernel_counts_bpf_memory("4.19.0"));
        assert!(!kernel_counts_bpf_memory("5.11.0"));
        assert!(!kernel_counts_bpf_memory("6.18.44-fc-v857"));
        assert!(!kernel_counts_bpf_memory("7.3.4+deb13-cloud-amd64"));
    }
}
