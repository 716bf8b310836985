//! `cgtrace __memhog SIZE`: allocates SIZE mebibytes and touches every page,
//! so they are charged to the caller's memory cgroup. The built-in OOM
//! scenario runs it under a smaller limit.

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
