//! `cgtrace reclaim`: who reclaims whom, and how long reclaim stalls each
//! cgroup.
//!
//! Cost: as `cgtrace cache`, plus a hash update per reclaim begin/end pair
//! and per shrink pass.

use clap::Args;

use super::{
    Outcome,
    charges::ChargesArgs,
    interval::{self, IntervalArgs, LiveExtras},
};
use crate::view::reclaim;

#[derive(Debug, Args)]
pub struct ReclaimArgs {
    #[command(flatten)]
    pub interval: IntervalArgs,
    #[command(flatten)]
    pub charges: ChargesArgs,
    /// Show the N largest victim ← reclaimer pairs per interval.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Replay the intervals recorded in a trace file (`cgtrace record`)
    /// instead of watching this machine.
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
}

pub fn run(args: &ReclaimArgs) -> anyhow::Result<Outcome> {
    let (top, json) = (args.top, args.interval.json);
    let extras = LiveExtras {
        files: false,
        charges: args.charges.charges,
    };
    interval::run(&args.interval, extras, args.input.as_deref(), |context| {
        reclaim::render(context, top, json)
    })?;
    Ok(Outcome::Success)
}
