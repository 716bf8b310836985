//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/` (libFuzzer, with
//! the nightly toolchain and AddressSanitizer), each for a bounded time,
//! seeded with the project's own fixtures. cargo-fuzz is installed into the
//! tools directory when missing.
//!
//! | target | input |
//! |---|---|
//! | `trace_reader` | any bytes as a trace file (format 1 or 2) |
//! | `kmsg_oom` | any text as `/dev/kmsg` records, through the OOM parser |
//! | `cgroup_path` | any text as a cgroup path, through the workload parser |

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{
    background::{IdleCpu, on_cpu},
    root, run, setup,
};

/// cargo-fuzz, pinned: the newest release that builds with the toolchains here.
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// Each target and the fixture folders that seed it.
const TARGETS: [(&str, &[&str]); 3] = [
    (
        "trace_reader",
        &[
            "fuzz/seeds/trace_reader",
            "cgtrace/tests/fixtures/trace-v1-demo",
        ],
    ),
    ("kmsg_oom", &["cgtrace/tests/fixtures"]),
    ("cgroup_path", &["fuzz/seeds/cgroup_path"]),
];

/// How many targets there are.
#[must_use]
pub fn target_count() -> u64 {
    TARGETS.len() as u64
}

/// `90s`, `20m`, `1h` or plain seconds, as seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: give a number with s, m or h (90s, 20m, 1h)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?}: the unit is s, m or h")),
    };
    Ok(number * scale)
}

/// Files in a corpus directory (what libFuzzer kept as interesting).
fn corpus_size(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.flatten().count())
}

/// Installs cargo-fuzz if missing and builds every target, on idle CPU
/// when `idle` is given, so that [`run_all`] starts fuzzing at once.
pub fn build_all(env: &setup::BuildEnv, idle: Option<&IdleCpu>) -> anyhow::Result<()> {
    let cargo_fuzz = ensure_cargo_fuzz(env, idle)?;
    let mut command = Command::new(&cargo_fuzz);
    command
        .current_dir(root().join("fuzz"))
        .env("PATH", &env.path)
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .args(["fuzz", "build"]);
    run(&mut on_cpu(command, idle))
}

/// Runs every target for `seconds`, each to its end; fails when any found
/// a crash (libFuzzer leaves the input in `fuzz/artifacts/<target>/`).
pub fn run_all(env: &setup::BuildEnv, seconds: u64) -> anyhow::Result<()> {
    let cargo_fuzz = ensure_cargo_fuzz(env, None)?;
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for (target, seeds) in TARGETS {
        // A fresh corpus of its own: what libFuzzer finds stays out of git.
        let corpus = root().join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        let mut command = Command::new(&cargo_fuzz);
        command
            .current_dir(root().join("fuzz"))
            .env("PATH", &env.path)
            .env("RUSTUP_TOOLCHAIN", "nightly")
            .args(["fuzz", "run", target])
            .arg(&corpus);
        for seed in seeds {
            command.arg(root().join(seed));
        }
        command.args([
            "--",
            &format!("-max_total_time={seconds}"),
            // The fixtures include large files; inputs stay small.
            "-max_len=65536",
            "-print_final_stats=1",
        ]);
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let outcome = run(&mut command);
        let found = if let Err(error) = outcome {
            eprintln!("xtask: fuzz target {target}: {error:#}");
            failed.push(target);
            "a failure (inputs in fuzz/artifacts/)"
        } else {
            "nothing"
        };
        summary.push(format!(
            "{target}: {seconds} s, corpus {} inputs, found {found}",
            corpus_size(&corpus)
        ));
    }
    for line in &summary {
        eprintln!("xtask: fuzz: {line}");
    }
    if !failed.is_empty() {
        bail!(
            "fuzzing found failures in {} (inputs in fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// `cargo-fuzz` in the tools directory, installed when missing.
fn ensure_cargo_fuzz(env: &setup::BuildEnv, idle: Option<&IdleCpu>) -> anyhow::Result<PathBuf> {
    let tools = setup::tools_dir()?;
    let binary = tools.join("bin/cargo-fuzz");
    let current = Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if !current {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about two minutes, once)");
        let mut install = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        install
            .args([
                "install",
                &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
                "--locked",
                "--root",
            ])
            .arg(&tools)
            .env("PATH", &env.path);
        let status = on_cpu(install, idle)
            .status()
            .context("cannot run cargo install")?;
        if !status.success() {
            bail!("installing cargo-fuzz failed: {status}");
        }
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("20m"), Ok(1200));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("h").is_err());
    }
}
