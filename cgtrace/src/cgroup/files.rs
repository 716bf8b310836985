//! Names for files the kernel identifies by device and inode: the open
//! descriptors of a cgroup's own processes are searched, which is cheap and
//! finds the files a workload is reading now. A file no process of the
//! cgroup holds open keeps its `major:minor:inode` name.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// A file as the kernel names it: `dev_t` (major << 20 | minor) and inode.
pub type FileId = (u32, u64);

/// The kernel's `dev_t` split as `major:minor`.
#[must_use]
pub fn device_name(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xf_ffff)
}

/// Paths of the files the processes in `cgroup_dir` have open, by id.
#[must_use]
pub fn open_files(cgroup_dir: &Path) -> HashMap<FileId, PathBuf> {
    let mut found = HashMap::new();
    let procs = std::fs::read_to_string(cgroup_dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let (Ok(meta), Ok(target)) =
                (std::fs::metadata(fd.path()), std::fs::read_link(fd.path()))
            else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let dev = meta.dev();
            let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
            found.insert(((major << 20) | (minor & 0xf_ffff), meta.ino()), target);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::{device_name, open_files};

    #[test]
    fn names_devices_like_the_kernel() {
        assert_eq!(device_name((253 << 20) | 1), "253:1");
        assert_eq!(device_name(8 << 20), "8:0");
    }

    #[test]
    fn finds_files_this_process_holds_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        // A fake cgroup directory whose cgroup.procs lists this process.
        std::fs::write(
            dir.path().join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let found = open_files(dir.path());
        let (major, minor) = (rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev()));
        let id = ((major << 20) | minor, meta.ino());
        assert_eq!(found.get(&id), Some(&path));
    }
}
