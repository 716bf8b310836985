//! A memory cgroup's own counter files: `memory.stat` (the kernel's own
//! page-cache figure, used as the starting point for groups that existed
//! before cgtrace, and to check cgtrace's event-derived figures against),
//! memory events, usage and limit.

use std::{collections::HashMap, hash::BuildHasher, path::Path};

use super::Version;
pub use crate::event::{CpuStat, MemoryEvents};

/// Parses `key value` lines.
#[must_use]
pub fn parse(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Reads `memory.stat` of the cgroup at `path` below `mount`.
pub fn read(mount: &Path, path: &str) -> std::io::Result<HashMap<String, u64>> {
    let dir = mount.join(path.trim_start_matches('/'));
    Ok(parse(&super::read_file(dir.join("memory.stat"))?))
}

/// Page-cache bytes charged to this cgroup itself (not its children),
/// without shmem/tmpfs, which does not go through the filemap tracepoints:
/// v1 `cache - shmem`, v2 `file - shmem`. (v2's counters are hierarchical,
/// so for a v2 group with children this includes theirs.)
#[must_use]
pub fn page_cache_bytes<S: BuildHasher>(
    stat: &HashMap<String, u64, S>,
    version: Version,
) -> Option<u64> {
    let file = match version {
        Version::V1 => stat.get("cache")?,
        Version::V2 => stat.get("file")?,
    };
    Some(file.saturating_sub(stat.get("shmem").copied().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::{page_cache_bytes, parse};
    use crate::cgroup::Version;

    #[test]
    fn reads_v1_and_v2_figures() {
        let v1 = parse("cache 1052672\nrss 0\nshmem 4096\nmapped_file 0\ntotal_cache 9\n");
        assert_eq!(page_cache_bytes(&v1, Version::V1), Some(1_048_576));
        let v2 = parse("anon 0\nfile 8192\nkernel 4096\nshmem 0\n");
        assert_eq!(page_cache_bytes(&v2, Version::V2), Some(8192));
        assert_eq!(page_cache_bytes(&parse("junk\n"), Version::V2), None);
    }
}

/// Reads the memory event counters of the cgroup at `path` below `mount`.
pub fn read_events(mount: &Path, path: &str, version: Version) -> std::io::Result<MemoryEvents> {
    let dir = mount.join(path.trim_start_matches('/'));
    Ok(match version {
        Version::V2 => {
            let events = parse(&super::read_file(dir.join("memory.events"))?);
            MemoryEvents {
                high: events.get("high").copied(),
                max: events.get("max").copied(),
                oom: events.get("oom").copied(),
                oom_kill: events.get("oom_kill").copied(),
            }
        }
        Version::V1 => {
            let failcnt = super::read_file(dir.join("memory.failcnt"))?;
            let oom = parse(&super::read_file(dir.join("memory.oom_control"))?);
            MemoryEvents {
                high: None,
                max: failcnt.trim().parse().ok(),
                oom: None,
                oom_kill: oom.get("oom_kill").copied(),
            }
        }
    })
}

/// What a cgroup's own files said at the end of an interval: the memory
/// it uses against its limit, its page cache, and its memory events in the
/// interval. Recorded so a replay shows what the live view showed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySample {
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    pub usage_bytes: Option<u64>,
    /// `memory.limit_in_bytes` or `memory.max`; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// The kernel's own high-water mark of usage since the cgroup was
    /// created: `memory.max_usage_in_bytes` (v1) or `memory.peak` (v2,
    /// since 5.19). It sees what sampling misses: an OOM victim may charge
    /// past the limit while it exits, for a moment no sample catches.
    pub peak_bytes: Option<u64>,
    /// Page cache charged to the cgroup (see [`page_cache_bytes`]).
    pub page_cache_bytes: Option<u64>,
    /// Memory events in the interval, and which version's files they are from.
    pub events: Option<(MemoryEvents, Version)>,
}

/// Limits at or above this are "unlimited" (v1 writes `PAGE_COUNTER_MAX`
/// pages as bytes, rounded down to a page).
const UNLIMITED: u64 = 1 << 62;

/// Reads the kernel's usage high-water mark of the cgroup at `path` below
/// `mount` (see [`MemorySample::peak_bytes`]); `None` where the kernel has
/// no such file.
#[must_use]
pub fn peak_usage(mount: &Path, path: &str, version: Version) -> Option<u64> {
    let dir = mount.join(path.trim_start_matches('/'));
    let name = match version {
        Version::V1 => "memory.max_usage_in_bytes",
        Version::V2 => "memory.peak",
    };
    super::read_file(dir.join(name)).ok()?.trim().parse().ok()
}

/// Reads usage and limit of the cgroup at `path` below `mount`.
#[must_use]
pub fn usage_and_limit(mount: &Path, path: &str, version: Version) -> (Option<u64>, Option<u64>) {
    let dir = mount.join(path.trim_start_matches('/'));
    let read = |name: &str| {
        super::read_file(dir.join(name))
            .ok()
            .map(|text| text.trim().to_owned())
    };
    let (usage, limit) = match version {
        Version::V1 => (read("memory.usage_in_bytes"), read("memory.limit_in_bytes")),
        Version::V2 => (read("memory.current"), read("memory.max")),
    };
    let usage = usage.and_then(|u| u.parse().ok());
    // v2 writes `max` for no limit.
    let limit = limit
        .and_then(|l| l.parse::<u64>().ok())
        .filter(|l| *l < UNLIMITED);
    (usage, limit)
}

/// The memory.stat figures behind each `ChargeKind`, in bytes (refaults:
/// counts): gauges for the memory types, counters for refaults.
#[must_use]
pub fn charge_gauges<S: BuildHasher>(
    stat: &HashMap<String, u64, S>,
    version: Version,
) -> [Option<u64>; cgtrace_common::pagecache::CHARGE_KINDS] {
    let get = |name: &str| stat.get(name).copied();
    match version {
        Version::V2 => [
            get("anon"),
            get("file"),
            get("shmem"),
            get("kernel"),
            get("sock"),
            get("workingset_refault_anon"),
            get("workingset_refault_file"),
        ],
        Version::V1 => [
            get("rss"),
            get("cache"),
            get("shmem"),
            None,
            None,
            get("workingset_refault_anon"),
            get("workingset_refault_file"),
        ],
    }
}

#[cfg(test)]
mod usage_tests {
    use super::usage_and_limit;
    use crate::cgroup::Version;

    #[test]
    fn reads_usage_and_limit_with_no_limit_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("memory.current"), "1048576\n").unwrap();
        std::fs::write(app.join("memory.max"), "max\n").unwrap();
        assert_eq!(
            usage_and_limit(dir.path(), "/app", Version::V2),
            (Some(1 << 20), None)
        );
        std::fs::write(app.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(app.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(
            usage_and_limit(dir.path(), "/app", Version::V1),
            (Some(4096), None)
        );
        std::fs::write(app.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        assert_eq!(
            usage_and_limit(dir.path(), "/app", Version::V1),
            (Some(4096), Some(64 << 20))
        );
        assert_eq!(
            usage_and_limit(dir.path(), "/gone", Version::V1),
            (None, None)
        );
    }

    #[test]
    fn reads_the_kernels_high_water_mark() {
        use super::peak_usage;
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        assert_eq!(peak_usage(dir.path(), "/app", Version::V2), None);
        std::fs::write(app.join("memory.peak"), "70254592\n").unwrap();
        std::fs::write(app.join("memory.max_usage_in_bytes"), "4096\n").unwrap();
        assert_eq!(
            peak_usage(dir.path(), "/app", Version::V2),
            Some(70_254_592)
        );
        assert_eq!(peak_usage(dir.path(), "/app", Version::V1), Some(4096));
    }
}

#[cfg(test)]
mod event_tests {
    use super::{MemoryEvents, charge_gauges, parse};
    use crate::cgroup::Version;

    #[test]
    fn event_deltas_and_gauges() {
        let before = MemoryEvents {
            high: None,
            max: Some(3),
            oom: None,
            oom_kill: Some(1),
        };
        let after = MemoryEvents {
            high: None,
            max: Some(10),
            oom: None,
            oom_kill: Some(2),
        };
        let delta = after.since(&before);
        assert_eq!(
            (delta.max, delta.oom_kill, delta.high),
            (Some(7), Some(1), None)
        );
        let v2 =
            parse("anon 4096\nfile 8192\nkernel 12\nsock 0\nshmem 0\nworkingset_refault_file 5\n");
        let gauges = charge_gauges(&v2, Version::V2);
        assert_eq!(gauges[0], Some(4096));
        assert_eq!(gauges[6], Some(5));
        assert_eq!(gauges[5], None);
    }
}

impl CpuStat {
    #[must_use]
    pub fn parse(text: &str, version: Version) -> Self {
        let values = parse(text);
        let get = |key: &str| values.get(key).copied().unwrap_or(0);
        match version {
            Version::V1 => Self {
                nr_periods: get("nr_periods"),
                nr_throttled: get("nr_throttled"),
                throttled_ns: get("throttled_time"),
                usage_ns: None,
            },
            Version::V2 => Self {
                nr_periods: get("nr_periods"),
                nr_throttled: get("nr_throttled"),
                throttled_ns: get("throttled_usec") * 1000,
                usage_ns: values.get("usage_usec").map(|us| us * 1000),
            },
        }
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::CpuStat;
    use crate::cgroup::Version;

    #[test]
    fn reads_v1_and_v2_cpu_stat() {
        let v1 = CpuStat::parse(
            "nr_periods 100\nnr_throttled 80\nthrottled_time 7000000000\n",
            Version::V1,
        );
        assert_eq!(
            (v1.nr_periods, v1.nr_throttled, v1.throttled_ns),
            (100, 80, 7_000_000_000)
        );
        let v2 = CpuStat::parse(
            "usage_usec 500\nuser_usec 400\nsystem_usec 100\nnr_periods 10\nnr_throttled 9\nthrottled_usec 800\n",
            Version::V2,
        );
        assert_eq!(
            (v2.nr_throttled, v2.throttled_ns, v2.usage_ns),
            (9, 800_000, Some(500_000))
        );
        let delta = v2.since(&CpuStat {
            nr_periods: 4,
            nr_throttled: 4,
            throttled_ns: 0,
            usage_ns: Some(100_000),
        });
        assert_eq!((delta.nr_periods, delta.usage_ns), (6, Some(400_000)));
    }
}
