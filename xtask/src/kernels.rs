//! The kernel matrix, and where each kernel comes from: Debian cloud
//! kernels, fetched with `apt-get download` through an apt configuration of
//! cgtrace's own (its sources list, package lists and cache under
//! `~/.cache/cgtrace/apt`), so the host's apt sources stay as they are and a
//! package of another Debian release never lands in the host's upgrades.
//!
//! A kernel is pinned to a package, or is "the newest": the highest version
//! of a meta package, resolved each run and named in docs/kernels.md.
//! Newer packages split a kernel into an image, a binary and a modules
//! package; the `linux-binary-*` and `linux-modules-*` a package depends
//! on are fetched with it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::run;

/// How a guest mounts its cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cgroups {
    /// cgroup2 only, with `+memory +cpu` delegated (systemd's default since
    /// 2021).
    V2,
    /// The v1 `memory` and `cpu,cpuacct` hierarchies and no cgroup2
    /// controllers, as older nodes mount them.
    V1,
}

impl Cgroups {
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::V2 => "pure cgroup v2",
            Self::V1 => "pure cgroup v1",
        }
    }
}

/// Which package holds a kernel.
#[derive(Clone, Copy, Debug)]
pub enum Packages {
    /// This one.
    Pinned(&'static str),
    /// The highest version of this meta package the archive has, as of the
    /// run.
    Newest(&'static str),
}

/// A kernel of the matrix: what `--kernel` calls it, its package, and how
/// its guest mounts cgroups.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub name: &'static str,
    pub packages: Packages,
    pub cgroups: Cgroups,
}

/// The matrix: Debian's cloud kernels, from the oldest a production node
/// still runs to the newest the archive has. An old pinned package leaves
/// the archive once superseded (`apt-cache search cloud-amd64` lists what
/// is there).
pub const KERNELS: &[Kernel] = &[
    // Debian 11's kernel: before folios (`page->mem_cgroup`), before
    // `bpf_get_current_task_btf`; cgroup v1, as such nodes run.
    Kernel {
        name: "5.10",
        packages: Packages::Pinned("linux-image-5.10.0-43-cloud-amd64-unsigned"),
        cgroups: Cgroups::V1,
    },
    Kernel {
        name: "6.1",
        packages: Packages::Pinned("linux-image-6.1.0-56-cloud-amd64-unsigned"),
        cgroups: Cgroups::V2,
    },
    Kernel {
        name: "6.12",
        packages: Packages::Pinned("linux-image-6.12.115+deb12-cloud-amd64-unsigned"),
        cgroups: Cgroups::V2,
    },
    // The memcg stat tracepoints (6.14+) on pure cgroup v2.
    Kernel {
        name: "6.16",
        packages: Packages::Pinned("linux-image-6.16.12+deb13-cloud-amd64"),
        cgroups: Cgroups::V2,
    },
    Kernel {
        name: "newest",
        packages: Packages::Newest("linux-image-cloud-amd64"),
        cgroups: Cgroups::V2,
    },
];

/// The Debian suites the kernels come from, signed by the archive keyring
/// every Debian system has.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// Package lists older than this are fetched again before resolving the
/// newest kernel.
const LISTS_FRESH_FOR: Duration = Duration::from_hours(12);

/// A kernel's boot image and RAM-disk module, from its extracted packages.
pub struct KernelFiles {
    /// The package the kernel came from (the newest one, resolved).
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `None` where the kernel has the RAM disk built in.
    pub brd: Option<PathBuf>,
}

/// Where the kernels and their apt live: `$CGTRACE_TOOLS` (beside the
/// tools), else `~/.cache/cgtrace` (beside `tools/`, where
/// [`setup::tools_dir`](crate::setup::tools_dir) puts them).
fn cache_root() -> PathBuf {
    std::env::var_os("CGTRACE_TOOLS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/cgtrace")
        },
        PathBuf::from,
    )
}

/// The extracted kernels, one folder per package.
fn cache_dir() -> PathBuf {
    cache_root().join("kernels")
}

/// cgtrace's own apt: its sources, lists and cache.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new() -> anyhow::Result<Self> {
        let dir = cache_root().join("apt");
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let sources = dir.join("sources.list");
        if std::fs::read_to_string(&sources).ok().as_deref() != Some(SOURCES) {
            std::fs::write(&sources, SOURCES)?;
            // New suites: the lists must be fetched again.
            let _ = std::fs::remove_file(dir.join("lists/updated"));
        }
        Ok(Self { dir })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        for (option, path) in [
            ("Dir::Etc::SourceList", self.dir.join("sources.list")),
            ("Dir::Etc::SourceParts", PathBuf::from("/dev/null")),
            ("Dir::State::Lists", self.dir.join("lists")),
            ("Dir::Cache", self.dir.join("cache")),
            ("Dir::State::status", PathBuf::from("/dev/null")),
            // Its cache is root's; apt's own user could not write there.
            ("APT::Sandbox::User", PathBuf::from("root")),
        ] {
            command
                .arg("-o")
                .arg(format!("{option}={}", path.display()));
        }
        command
    }

    /// Fetches the package lists, unless fetched within `fresh_for`.
    fn update(&self, fresh_for: Duration) -> anyhow::Result<()> {
        let stamp = self.dir.join("lists/updated");
        let age = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok());
        if age.is_some_and(|age| age < fresh_for) {
            return Ok(());
        }
        run(self.command("apt-get").arg("-q").arg("update"))
            .context("apt-get update (of cgtrace's kernel sources) failed")?;
        std::fs::write(stamp, b"")?;
        Ok(())
    }

    /// Every version of `package` the lists have: (version, depends).
    fn versions(&self, package: &str) -> anyhow::Result<Vec<(String, String)>> {
        let output = self
            .command("apt-cache")
            .arg("show")
            .arg(package)
            .output()?;
        if !output.status.success() {
            bail!(
                "apt-cache knows no {package}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(stanzas(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Downloads `package` into `dir`.
    fn download(&self, package: &str, dir: &Path) -> bool {
        self.command("apt-get")
            .args(["-q", "download", package])
            .current_dir(dir)
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// The `Version` and `Depends` of each stanza of `apt-cache show`.
fn stanzas(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|value| value.trim().to_owned())
            };
            Some((field("Version:")?, field("Depends:").unwrap_or_default()))
        })
        .collect()
}

/// The packages named in a `Depends` field that start with one of
/// `prefixes` (the first alternative of each).
fn depends_on(depends: &str, prefixes: &[&str]) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|dependency| {
            let first = dependency.split('|').next()?.trim();
            let name = first.split_whitespace().next()?;
            prefixes
                .iter()
                .any(|p| name.starts_with(p))
                .then(|| name.to_owned())
        })
        .collect()
}

/// Whether Debian version `a` is higher than `b` (`dpkg --compare-versions`).
fn is_newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// The image package of the highest version of meta package `meta`.
fn newest(apt: &Apt, meta: &str) -> anyhow::Result<String> {
    apt.update(LISTS_FRESH_FOR)?;
    let versions = apt.versions(meta)?;
    let (_, depends) = versions
        .iter()
        .reduce(|best, next| {
            if is_newer(&next.0, &best.0) {
                next
            } else {
                best
            }
        })
        .with_context(|| format!("apt-cache lists no version of {meta}"))?;
    depends_on(depends, &["linux-image-"])
        .into_iter()
        .next()
        .with_context(|| format!("{meta} depends on no linux-image package: {depends}"))
}

/// The package `kernel` runs, resolved.
fn package(apt: &Apt, kernel: &Kernel) -> anyhow::Result<String> {
    match kernel.packages {
        Packages::Pinned(package) => Ok(package.to_owned()),
        Packages::Newest(meta) => newest(apt, meta),
    }
}

/// Downloads and extracts a kernel's packages once; later runs reuse them.
pub fn fetch(kernel: &Kernel) -> anyhow::Result<KernelFiles> {
    let apt = Apt::new()?;
    let package = package(&apt, kernel)?;
    let dir = cache_dir().join(&package);
    if vmlinuz(&dir).is_none() {
        std::fs::create_dir_all(&dir)?;
        if !apt.download(&package, &dir) {
            apt.update(Duration::ZERO)?;
            if !apt.download(&package, &dir) {
                bail!(
                    "apt-get cannot download {package} (is it still in the Debian archive? \
                     `apt-cache search cloud-amd64` lists what is; pin a newer one in KERNELS)"
                );
            }
        }
        // The parts of a split kernel: its binary and its modules.
        let (_, depends) = apt
            .versions(&package)?
            .into_iter()
            .next()
            .context("no stanza")?;
        for part in depends_on(&depends, &["linux-binary-", "linux-modules-"]) {
            if !apt.download(&part, &dir) {
                bail!("apt-get cannot download {part}, a part of {package}");
            }
        }
        for deb in debs(&dir)? {
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
            std::fs::remove_file(deb)?;
        }
    }
    let vmlinuz = vmlinuz(&dir).with_context(|| format!("no vmlinuz in {package}"))?;
    let brd = ["lib/modules", "usr/lib/modules"]
        .iter()
        .find_map(|modules| walk_find(&dir.join(modules), "brd.ko"));
    Ok(KernelFiles {
        package,
        vmlinuz,
        brd,
    })
}

/// The `.deb` files in `dir`.
fn debs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    if debs.is_empty() {
        bail!("apt-get downloaded no .deb into {}", dir.display());
    }
    Ok(debs)
}

/// The boot image: `boot/vmlinuz-*`, or `usr/lib/modules/*/vmlinuz` where
/// newer packages put it.
fn vmlinuz(dir: &Path) -> Option<PathBuf> {
    let in_boot = std::fs::read_dir(dir.join("boot"))
        .ok()
        .and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
        });
    in_boot.or_else(|| {
        std::fs::read_dir(dir.join("usr/lib/modules"))
            .ok()?
            .flatten()
            .map(|e| e.path().join("vmlinuz"))
            .find(|p| p.is_file())
    })
}

/// The first file below `dir` whose name starts with `prefix`.
fn walk_find(dir: &Path, prefix: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = walk_find(&path, prefix) {
                return Some(found);
            }
        } else if entry.file_name().to_string_lossy().starts_with(prefix) {
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "\
Package: linux-image-cloud-amd64
Version: 7.3.4-1~bpo13+1
Depends: linux-base-cloud-amd64 (= 7.3.4-1~bpo13+1), linux-image-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)
Description: meta

Package: linux-image-cloud-amd64
Version: 6.12.117-1
Depends: linux-image-6.12.117+deb13-cloud-amd64 (= 6.12.117-1)
";

    #[test]
    fn each_stanza_gives_its_version_and_depends() {
        let versions = stanzas(SHOW);
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].0, "7.3.4-1~bpo13+1");
        assert_eq!(
            depends_on(&versions[0].1, &["linux-image-"]),
            ["linux-image-7.3.4+deb13-cloud-amd64"]
        );
    }

    #[test]
    fn a_split_kernels_parts_are_its_binary_and_modules() {
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                       linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), \
                       linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), \
                       linux-modules-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)";
        assert_eq!(
            depends_on(depends, &["linux-binary-", "linux-modules-"]),
            [
                "linux-binary-7.3.4+deb13-cloud-amd64",
                "linux-modules-7.3.4+deb13-cloud-amd64"
            ]
        );
    }

    #[test]
    fn debian_versions_compare_as_dpkg_does() {
        assert!(is_newer("7.3.4-1~bpo13+1", "6.12.117-1"));
        assert!(!is_newer("6.12.117-1", "6.12.117-1"));
        assert!(is_newer("6.12.117-1", "6.12.117-1~bpo13+1"));
    }
}
