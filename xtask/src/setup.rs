//! `cargo xtask setup`: the build's prerequisites, installed if missing.
//!
//! * the nightly toolchain's `rust-src` (the eBPF crate builds `core` itself);
//! * bpf-linker 0.13 linked against the nightly toolchain's own LLVM (the
//!   linker's LLVM must be the compiler's; Debian has no matching LLVM);
//! * tracefs mounted (classic tracepoints need it; BTF tracepoints do not);
//! * for the tests, the Debian packages they drive: chromium (the HTML
//!   report is rendered and screenshotted in a real headless browser),
//!   Docker, QEMU and others (see `TEST_PACKAGES`), and kubernetes-validate
//!   from PyPI for the manifests.
//!
//! Each step checks first, so a second run takes well under a second.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run as run_command;

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What later cargo invocations need: a PATH on which bpf-linker is found.
pub struct BuildEnv {
    pub path: OsString,
}

pub fn run() -> anyhow::Result<BuildEnv> {
    check_nightly()?;
    ensure_rust_src()?;
    let tools = tools_dir()?;
    ensure_bpf_linker(&tools)?;
    ensure_tracefs();
    let mut paths = vec![tools.join("bin")];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(paths).context("PATH has an entry with a ':'")?;
    Ok(BuildEnv { path })
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_nightly() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed: cgtrace's eBPF programs build with the nightly toolchain")?;
    if !toolchains.lines().any(|l| l.starts_with(NIGHTLY)) {
        bail!(
            "the nightly Rust toolchain is not installed, and the eBPF programs need it \
             (`-Z build-std=core` for the bpf target). Install it with \
             `rustup toolchain install nightly --component rust-src`; where no nightly can be \
             fetched, a stable toolchain with RUSTC_BOOTSTRAP=1 and bpf-linker built against \
             that toolchain's LLVM is the untested alternative"
        );
    }
    Ok(())
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    run_command(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        NIGHTLY,
    ]))
}

/// Where bpf-linker and its LLVM symlinks live: `$CGTRACE_TOOLS`, else
/// `~/.cache/cgtrace/tools`. The linker's RUNPATH points into it, so it
/// must persist.
pub fn tools_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CGTRACE_TOOLS") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/cgtrace/tools"))
}

/// The nightly toolchain's LLVM shared library, e.g.
/// `<sysroot>/lib/libLLVM.so.22.1-rust-1.97.0-nightly`, and its major version.
fn nightly_llvm() -> anyhow::Result<(PathBuf, String)> {
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let library = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "the nightly toolchain has no libLLVM.so.* in {}",
                lib.display()
            )
        })?;
    let version = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV does not say its LLVM version")?
        .to_owned();
    Ok((library, major))
}

fn ensure_bpf_linker(tools: &Path) -> anyhow::Result<()> {
    let (llvm, major) = nightly_llvm()?;
    let lib_dir = tools.join("lib");
    let linker = tools.join("bin/bpf-linker");
    let file_name = llvm.file_name().context("LLVM library has no file name")?;
    let versioned = lib_dir.join(file_name);
    let current = std::fs::read_link(&versioned).ok() == Some(llvm.clone())
        && Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if current {
        link_into_cargo_bin(&linker);
        return Ok(());
    }
    std::fs::create_dir_all(&lib_dir)
        .with_context(|| format!("cannot create {}", lib_dir.display()))?;
    for link in [versioned, lib_dir.join("libLLVM.so")] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), llvm.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        llvm.display()
    );
    run_command(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--force",
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
                "--root",
            ])
            .arg(tools)
            .env("LLVM_PREFIX", tools),
    )?;
    link_into_cargo_bin(&linker);
    Ok(())
}

/// Makes a plain `cargo build` find bpf-linker too, when `~/.cargo/bin`
/// has none of its own.
fn link_into_cargo_bin(linker: &Path) {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    else {
        return;
    };
    let link = home.join("bin/bpf-linker");
    match std::fs::symlink_metadata(&link) {
        Ok(meta) if !meta.file_type().is_symlink() => {}
        _ => {
            let _ = std::fs::remove_file(&link);
            let _ = std::os::unix::fs::symlink(linker, &link);
        }
    }
}

/// Programs the tests need, and the Debian packages that have them: a
/// browser for the HTML report, promtool to check `serve`'s metrics, QEMU,
/// busybox and xz for the kernel matrix, Docker (and the containerd it
/// drives) for the container image, man for the man pages, tmux for
/// `top` in a real terminal.
pub const TEST_PACKAGES: [(&str, &str); 9] = [
    ("chromium", "chromium"),
    ("promtool", "prometheus"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("xz", "xz-utils"),
    ("dockerd", "docker.io"),
    ("man", "man-db"),
    ("dpkg-deb", "dpkg"),
    ("tmux", "tmux"),
];

/// `kubernetes-validate` (PyPI; it bundles the Kubernetes API schemas, so
/// validation is offline), in a virtual environment under the tools
/// directory, pinned.
pub fn kubernetes_validate(root: bool) -> anyhow::Result<PathBuf> {
    const PACKAGE: &str = "kubernetes-validate==1.37.0";
    let venv = tools_dir()?.join("venv");
    let validator = venv.join("bin/kubernetes-validate");
    if validator.is_file() {
        return Ok(validator);
    }
    let create = |python: &str| {
        Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !create("python3") {
        // Debian's python3 has no venv module without this package.
        if !root {
            bail!("cannot create a Python virtual environment: install python3-venv");
        }
        apt_install(&["python3-venv"])?;
        if !create("/usr/bin/python3") {
            bail!(
                "cannot create a Python virtual environment in {}",
                venv.display()
            );
        }
    }
    run_command(Command::new(venv.join("bin/pip")).args(["install", "--quiet", PACKAGE]))?;
    Ok(validator)
}

/// Installs Debian packages: first from the package lists as they are,
/// then after `apt-get update` (a fresh image's lists are often stale or
/// empty).
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return Ok(());
    }
    run_command(Command::new("apt-get").args(["update"]))?;
    if !install() {
        bail!("apt-get could not install {}", packages.join(", "));
    }
    Ok(())
}

/// The benchmark's peer, bpftrace doing the same aggregation; tmux, the
/// terminal `top` is measured in.
pub const BENCH_PACKAGES: [(&str, &str); 2] = [("bpftrace", "bpftrace"), ("tmux", "tmux")];

fn on_path(program: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(program).is_file())
}

/// Installs the Debian packages that provide `programs` when missing
/// (`needed_by` says for what).
pub fn ensure_packages(
    root: bool,
    needed_by: &str,
    programs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !root {
        eprintln!(
            "xtask: not root: cannot install {} (what needs it needs root too)",
            missing.join(", ")
        );
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "{needed_by} need {} and this is not a Debian-like system: install them by hand",
            missing.join(", ")
        );
    }
    eprintln!(
        "xtask: installing {} (needed by {needed_by})",
        missing.join(", ")
    );
    apt_install(&missing)
}

fn ensure_tracefs() {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return;
    }
    let mounted = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "xtask: tracefs is not mounted and could not be (not root?); BTF tracepoints do not need it"
        );
    }
}
