//! Workload subcommands for the scenarios and tests: `__memhog SIZE`
//! allocates SIZE mebibytes and touches every page (charged to the caller's
//! memory cgroup); `__spin SECONDS THREADS` keeps threads busy on the CPU;
//! `__pagecache FILE SIZE` writes, reads back and removes a file of SIZE
//! mebibytes (page cache added, reclaimed under a limit, and removed).

use std::io::Write as _;

use clap::Args;

#[derive(Debug, Args)]
pub struct MemhogArgs {
    /// Mebibytes to allocate.
    pub mebibytes: usize,
}

pub fn run(args: &MemhogArgs) -> anyhow::Result<super::Outcome> {
    const MIB: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(args.mebibytes);
    for _ in 0..args.mebibytes {
        // Writing one byte per 4 KiB page faults it in: that is the charge.
        let mut chunk = vec![0u8; MIB];
        for page in chunk.iter_mut().step_by(4096) {
            *page = 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
    let _ = writeln!(std::io::stdout(), "allocated {} MiB", chunks.len());
    Ok(super::Outcome::Success)
}

/// `cgtrace __spin SECONDS THREADS`: keeps THREADS threads busy for SECONDS,
/// the CPU throttling scenario's workload.
#[derive(Debug, Args)]
pub struct SpinArgs {
    pub seconds: f64,
    pub threads: usize,
}

pub fn spin(args: &SpinArgs) -> anyhow::Result<super::Outcome> {
    let until =
        std::time::Instant::now() + std::time::Duration::from_secs_f64(args.seconds.max(0.0));
    let workers: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            std::thread::spawn(move || {
                let mut n = 0u64;
                while std::time::Instant::now() < until {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
                n
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(super::Outcome::Success)
}

/// `cgtrace __pagecache FILE MEBIBYTES`.
#[derive(Debug, Args)]
pub struct PageCacheArgs {
    pub file: std::path::PathBuf,
    pub mebibytes: usize,
}

pub fn page_cache(args: &PageCacheArgs) -> anyhow::Result<super::Outcome> {
    use std::io::Read as _;
    let chunk = vec![1u8; 1 << 20];
    let mut file = std::fs::File::create(&args.file)?;
    for _ in 0..args.mebibytes {
        file.write_all(&chunk)?;
    }
    drop(file);
    let mut buffer = vec![0u8; 1 << 20];
    let mut file = std::fs::File::open(&args.file)?;
    while file.read(&mut buffer)? > 0 {}
    std::fs::remove_file(&args.file)?;
    Ok(super::Outcome::Success)
}
