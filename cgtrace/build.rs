//! Builds the eBPF object (`cgtrace-ebpf`) for the bpf target with the
//! nightly toolchain and bpf-linker (`cargo xtask setup` installs both).
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("cgtrace has no parent directory"))?
        .join("cgtrace-ebpf");
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
