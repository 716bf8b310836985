//! What the probe log costs when it is off, and when it is on but nothing
//! fails: `cgtrace cache` on W0 with and without `--probe-log`, rounds
//! alternated, by the kernel's own per-program statistics. Off, the
//! verifier removes the log code (the programs' size after the verifier
//! shows it); on, the code is there but never runs on a kernel where every
//! read succeeds.

use std::fmt::Write as _;

use crate::{
    Options,
    costs::{self, ProgramCost},
    tracer::TracerSpec,
};

/// The programs on the page-cache path.
const HOT: [&str; 2] = ["cache_add", "cache_delete"];
const ROUNDS: usize = 2;

pub fn log_switch(options: &Options, prepare: impl Fn() + Copy, run: impl Fn() + Copy) -> String {
    let off = TracerSpec::cgtrace(&options.cgtrace, "cache", &["--interval", "1s"]);
    let on = TracerSpec::cgtrace(
        &options.cgtrace,
        "cache",
        &["--interval", "1s", "--probe-log"],
    );
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 {
            [("off", &off), ("on", &on)]
        } else {
            [("on", &on), ("off", &off)]
        };
        for (label, spec) in order {
            let costs = costs::measure(spec, prepare, run);
            for name in HOT {
                if let Some(cost) = costs.iter().find(|c| c.name == name) {
                    rows.push((round + 1, label, row(cost)));
                }
            }
        }
    }
    let mut section = String::from("\n## The probe log switch on W0\n\n");
    let _ = writeln!(
        section,
        "`cgtrace cache` with the probe log off (the default) and on (`--probe-log`), \
         {ROUNDS} rounds alternated, over one W0 run each. The log's level is a read-only \
         global: off, the verifier removes the log code, so the programs are smaller after \
         the verifier; on, the code is there but runs only when a read fails (never here).\n"
    );
    section.push_str("| round | log | program | runs | ns per run | bytes after the verifier |\n");
    section.push_str("|---|---|---|---|---|---|\n");
    for (round, label, row) in rows {
        let _ = writeln!(section, "| {round} | {label} | {row} |");
    }
    section
}

fn row(cost: &ProgramCost) -> String {
    format!(
        "{} | {} | {:.0} | {}",
        cost.name,
        cost.runs,
        cost.ns_per_run(),
        cost.xlated_bytes
    )
}
