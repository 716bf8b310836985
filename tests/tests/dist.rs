//! What `cargo xtask dist` ships, installed and run as a user would: the
//! tarball against its SHA-256 sum, the Debian package installed with
//! `dpkg -i` into a scratch root, its `cgtrace check`, man pages and
//! completions. The artifacts' paths come from `cargo xtask test`; run
//! alone, the tests say they were skipped.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use cgtrace_tests::{cgtrace_bin, require_root};

fn artifact(variable: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable).map(PathBuf::from);
    if path.is_none() {
        eprintln!("skipped {test}: ${variable} is not set (`cargo xtask test` sets it)");
    }
    path
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The subcommands a user sees, from `cgtrace --help`.
fn subcommands() -> Vec<String> {
    let help = run(Command::new(cgtrace_bin()).arg("--help"));
    help.split("Commands:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_tarball_matches_its_sum_and_holds_the_binary_and_its_docs() {
    let test = "the_tarball_matches_its_sum_and_holds_the_binary_and_its_docs";
    let Some(tarball) = artifact("CGTRACE_TARBALL", test) else {
        return;
    };
    let dir = tarball.parent().unwrap();
    let name = tarball.file_name().unwrap().to_str().unwrap();
    let sums = run(Command::new("sha256sum")
        .arg("--check")
        .arg(format!("{name}.sha256"))
        .current_dir(dir));
    assert_eq!(sums.trim(), format!("{name}: OK"));

    let unpacked = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(unpacked.path()));
    let top = unpacked.path().join(name.trim_end_matches(".tar.gz"));
    let version = run(Command::new(top.join("bin/cgtrace")).arg("--version"));
    // The same release and commit as the tree under test.
    let expected = run(Command::new(cgtrace_bin()).arg("--version"));
    assert_eq!(version, expected);
    assert!(
        version.starts_with("cgtrace 0.") && version.contains(" ("),
        "{version}"
    );
    let commit = run(Command::new("git").args(["log", "-1", "--format=%h"]));
    assert!(version.contains(commit.trim()), "{version} names {commit}");
    assert!(has_interpreter(Path::new("/bin/sh")), "a dynamic one does");
    assert!(
        !has_interpreter(&top.join("bin/cgtrace")),
        "the binary is static: no dynamic loader named"
    );
    for sub in subcommands() {
        let page = top.join(format!("share/man/man1/cgtrace-{sub}.1.gz"));
        assert!(page.is_file(), "no man page for {sub}");
    }
    for completion in [
        "share/bash-completion/completions/cgtrace",
        "share/zsh/vendor-completions/_cgtrace",
        "share/fish/vendor_completions.d/cgtrace.fish",
    ] {
        assert!(top.join(completion).is_file(), "{completion}");
    }
}

/// A scratch root with an empty dpkg database.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("cgtrace-test-dpkg")
        .tempdir()
        .unwrap();
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::write(root.path().join("var/lib/dpkg/status"), "").unwrap();
    root
}

#[test]
fn the_package_installs_and_its_binary_man_pages_and_completions_work() {
    let test = "the_package_installs_and_its_binary_man_pages_and_completions_work";
    let Some(deb) = artifact("CGTRACE_DEB", test) else {
        return;
    };
    if !require_root(test) {
        return;
    }
    let root = scratch_root();
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .args(["--force-script-chrootless", "--install"])
        .arg(&deb));
    let status = run(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .args(["--status", "cgtrace"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    let binary = root.path().join("usr/bin/cgtrace");
    let check = run(Command::new(&binary).args(["check", "--json"]));
    let check: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(check["can_run"], true, "{check}");

    // Every page renders, with its name and options.
    let man_dir = root.path().join("usr/share/man/man1");
    for sub in subcommands() {
        let page = man_dir.join(format!("cgtrace-{sub}.1.gz"));
        let rendered = man(&page);
        assert!(rendered.contains("NAME"), "{sub}: {rendered}");
        assert!(
            rendered.contains(&format!("cgtrace-{sub}")),
            "{sub}: {rendered}"
        );
    }
    let oom = man(&man_dir.join("cgtrace-oom.1.gz"));
    assert!(oom.contains("--follow"), "{oom}");
    let top = man(&man_dir.join("cgtrace.1.gz"));
    assert!(top.contains("serve"), "{top}");

    // bash loads the completion and completes the subcommands.
    let completion = root
        .path()
        .join("usr/share/bash-completion/completions/cgtrace");
    let completed = run(Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(cgtrace se); COMP_CWORD=1; _cgtrace cgtrace se cgtrace; echo \"${{COMPREPLY[@]}}\"",
        completion.display()
    )));
    assert!(
        completed.split_whitespace().any(|w| w == "serve"),
        "{completed}"
    );
}

/// `man -l PAGE`, plain text.
fn man(page: &Path) -> String {
    run(Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0"))
}

/// Whether an ELF64 executable names a dynamic loader (a `PT_INTERP`
/// program header): a static binary does not.
fn has_interpreter(binary: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let elf = std::fs::read(binary).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let phoff = usize::try_from(u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap())).unwrap();
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}
