//! `memory.stat` of a cgroup: the kernel's own page-cache figure, used as
//! the starting point for groups that existed before cgtrace, and to check
//! cgtrace's event-derived figures against.

use std::{collections::HashMap, hash::BuildHasher, path::Path};

use super::Version;

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
    Ok(parse(&std::fs::read_to_string(dir.join("memory.stat"))?))
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
