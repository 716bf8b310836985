//! Builds the eBPF object (`cgtrace-ebpf`) for the bpf target with the
//! nightly toolchain and bpf-linker (`cargo xtask setup` installs both),
//! and names the commit being built for `cgtrace --version`.
use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("cgtrace has no parent directory"))?;
    name_the_commit(workspace);
    let ebpf_dir = workspace.join("cgtrace-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to cgtrace-ebpf")?;
    let package = Package {
        name: "cgtrace-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}

/// `CGTRACE_COMMIT`: the commit's short hash and date, from `git` in a
/// checkout, from the environment for a build outside one (a source
/// tarball), else "unknown commit".
fn name_the_commit(workspace: &Path) {
    println!("cargo:rerun-if-env-changed=CGTRACE_COMMIT");
    let git = workspace.join(".git");
    // A new commit moves HEAD or the branch it names; both are watched so
    // the version follows without rebuilding on every other change.
    for watched in ["HEAD", "packed-refs"] {
        println!("cargo:rerun-if-changed={}", git.join(watched).display());
    }
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed={}", git.join(branch).display());
    }
    let commit = std::env::var("CGTRACE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let output = Command::new("git")
                .args(["log", "-1", "--format=%h %cs"])
                .current_dir(workspace)
                .output()
                .ok()?;
            let text = String::from_utf8(output.stdout).ok()?;
            (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!("cargo:rustc-env=CGTRACE_COMMIT={commit}");
}
