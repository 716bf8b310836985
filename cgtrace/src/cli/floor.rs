//! `cgtrace __floor`: the benchmark's floor. Attaches an empty program to
//! each tracepoint cgtrace's hot paths use and holds them until SIGINT or
//! SIGTERM, so the kernel's run-time statistics show what a program there
//! costs before it does anything.

use anyhow::Context as _;

use super::Outcome;
use crate::probe::floor::Floor;

pub fn run() -> anyhow::Result<Outcome> {
    let runtime = crate::session::runtime().context("cannot start the signal handler")?;
    let _entered = runtime.enter();
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let floor = Floor::attach()?;
    // The benchmark waits for this line, as it does for a view's features.
    crate::note!(
        "cgtrace: floor: {} empty programs attached ({})",
        floor.attached.len(),
        floor.attached.join(", ")
    );
    runtime.block_on(async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    });
    drop(floor);
    Ok(Outcome::Success)
}
