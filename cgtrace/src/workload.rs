//! Workloads for the built-in scenarios, the tests and the benchmarks: files
//! that start outside the page cache, and reads of them inside a cgroup.

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::cgroup::scratch::{ScratchCgroup, ScratchError};

/// A file on disk whose pages are not in the page cache when created
/// (written, synced, then dropped with `POSIX_FADV_DONTNEED`), so the first
/// cgroup that reads it owns its cache. Removed on drop.
#[derive(Debug)]
pub struct UncachedFile {
    pub path: PathBuf,
}

impl UncachedFile {
    /// Writes `mebibytes` under /var/tmp, which, unlike /tmp, is never tmpfs
    /// (tmpfs pages are shmem and bypass the filemap tracepoints).
    pub fn create(name: &str, mebibytes: usize) -> io::Result<Self> {
        let path = PathBuf::from(format!("/var/tmp/{name}-{}", std::process::id()));
        let file = Self { path };
        let mut out = std::fs::File::create(&file.path)?;
        // Distinct bytes per MiB, so no filesystem can share blocks.
        let mut chunk = vec![0u8; 1 << 20];
        for i in 0..mebibytes {
            chunk.fill(u8::try_from(i % 251).unwrap_or(0) + 1);
            out.write_all(&chunk)?;
        }
        out.sync_all()?;
        file.drop_cache()?;
        Ok(file)
    }

    /// Evicts the file's clean pages from the page cache.
    pub fn drop_cache(&self) -> io::Result<()> {
        let file = std::fs::File::open(&self.path)?;
        // The advice only drops clean pages.
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
        Ok(())
    }
}

impl Drop for UncachedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `cat FILE... > /dev/null` inside `cgroup` to completion; returns
/// its exit status and how long it took.
pub fn read_in(
    cgroup: &ScratchCgroup,
    files: &[&Path],
) -> Result<(ExitStatus, Duration), ScratchError> {
    let mut command = Command::new("cat");
    command.args(files).stdout(Stdio::null());
    let started = Instant::now();
    let mut child = cgroup.spawn_into(&mut command)?;
    let status = child.wait().map_err(|source| ScratchError::Io {
        action: "wait for cat in",
        path: cgroup.dir().to_owned(),
        source,
    })?;
    Ok((status, started.elapsed()))
}
