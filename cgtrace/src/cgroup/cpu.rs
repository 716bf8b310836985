//! A cgroup's CFS bandwidth settings and CPU usage, from its files:
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us` and `cpuacct.usage` on v1,
//! `cpu.max` and `cpu.stat usage_usec` on v2.

use std::path::Path;

use super::{Hierarchies, Version, stat::CpuStat};
pub use crate::event::Bandwidth;

impl Bandwidth {
    /// Parses v2 `cpu.max` (`max 100000` or `20000 100000`).
    #[must_use]
    pub fn parse_v2(text: &str) -> Option<Self> {
        let mut fields = text.split_whitespace();
        let quota = fields.next()?;
        let period_us = fields.next()?.parse().ok()?;
        let quota_us = if quota == "max" {
            None
        } else {
            Some(quota.parse().ok()?)
        };
        Some(Self {
            quota_us,
            period_us,
        })
    }

    /// Parses v1 `cpu.cfs_quota_us` (`-1` for none) and `cpu.cfs_period_us`.
    #[must_use]
    pub fn parse_v1(quota: &str, period: &str) -> Option<Self> {
        let quota: i64 = quota.trim().parse().ok()?;
        Some(Self {
            quota_us: u64::try_from(quota).ok(),
            period_us: period.trim().parse().ok()?,
        })
    }
}

/// Reads the bandwidth limit of the cgroup at `path` below `mount`.
#[must_use]
pub fn bandwidth(mount: &Path, path: &str, version: Version) -> Option<Bandwidth> {
    let dir = mount.join(path.trim_start_matches('/'));
    match version {
        Version::V2 => Bandwidth::parse_v2(&super::read_file(dir.join("cpu.max")).ok()?),
        Version::V1 => Bandwidth::parse_v1(
            &super::read_file(dir.join("cpu.cfs_quota_us")).ok()?,
            &super::read_file(dir.join("cpu.cfs_period_us")).ok()?,
        ),
    }
}

/// The cgroup's `cpu.stat`.
#[must_use]
pub fn cpu_stat(mount: &Path, path: &str, version: Version) -> Option<CpuStat> {
    let dir = mount.join(path.trim_start_matches('/'));
    Some(CpuStat::parse(
        &super::read_file(dir.join("cpu.stat")).ok()?,
        version,
    ))
}

/// CPU time used by the cgroup, nanoseconds: v2 `cpu.stat usage_usec`, v1
/// `cpuacct.usage` of the same path in the cpuacct hierarchy.
#[must_use]
pub fn usage_ns(
    hierarchies: &Hierarchies,
    cpu_mount: &Path,
    path: &str,
    version: Version,
) -> Option<u64> {
    match version {
        Version::V2 => cpu_stat(cpu_mount, path, version)?.usage_ns,
        Version::V1 => {
            let cpuacct = hierarchies.with_controller("cpuacct")?;
            let file = cpuacct
                .mount
                .join(path.trim_start_matches('/'))
                .join("cpuacct.usage");
            super::read_file(file).ok()?.trim().parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bandwidth;

    #[test]
    fn parses_limits_both_ways() {
        let k8s = Bandwidth::parse_v2("50000 100000\n").unwrap();
        assert_eq!(k8s.millicores(), Some(500));
        assert_eq!(k8s.cores(), Some(0.5));
        assert_eq!(Bandwidth::parse_v2("max 100000").unwrap().quota_us, None);
        assert_eq!(
            Bandwidth::parse_v1("-1\n", "100000\n").unwrap().quota_us,
            None
        );
        assert_eq!(
            Bandwidth::parse_v1("250000", "100000")
                .unwrap()
                .millicores(),
            Some(2500)
        );
        assert!(Bandwidth::parse_v2("junk").is_none());
    }
}
