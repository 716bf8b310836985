//! Capabilities: taking up the ones a non-root user was given, and giving
//! up, once every probe is attached, all but those later work needs.
//!
//! Loading and attaching the probes needs `CAP_BPF` and `CAP_PERFMON`
//! (Linux 5.8+; `CAP_SYS_ADMIN` on older kernels); opening `/dev/kmsg`
//! needs `CAP_SYSLOG` when `kernel.dmesg_restrict` is 1. A user other than
//! root gets them as file capabilities (the container image's binary is
//! permitted all three) or ambient ones (`setpriv --ambient-caps`); file
//! capabilities are only permitted, so cgtrace raises them itself and can
//! name the one that is missing. After attaching, a live view keeps what
//! its later work needs (each with its reason) and sets no_new_privs, so
//! nothing it could still run regains the rest.

use caps::{CapSet, Capability, CapsHashSet};

/// What loading and attaching the probes takes, and opening the kernel log.
/// CAP_DAC_READ_SEARCH is raised too where a user was given it: on a
/// Docker host, the names of containers are in files only root may read.
const AT_START: [Capability; 5] = [
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_SYSLOG,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_DAC_READ_SEARCH,
];

/// Raises the start-up capabilities this process is permitted but does
/// not have in effect (a file's capabilities are permitted only). Root
/// has them in effect already; a user without them is told later, by the
/// check that needs them.
pub fn raise_permitted() {
    let Ok(permitted) = caps::read(None, CapSet::Permitted) else {
        return;
    };
    for cap in AT_START {
        if permitted.contains(&cap) {
            // Cannot fail for a permitted capability.
            let _ = caps::raise(None, CapSet::Effective, cap);
        }
    }
}

/// A capability a view keeps after attaching, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Map reads through the bpf() syscall: kernels before 5.19 refuse
    /// them without CAP_BPF when unprivileged BPF is off (the default).
    MapReads,
    /// Attaching the throttle program when a CPU quota is set later.
    LateAttach,
    /// Naming the files a cgroup's processes hold open: their
    /// `/proc/PID/fd` when they have capabilities cgtrace gave up.
    OpenFiles,
    /// Naming Docker containers as they start, from
    /// `/var/lib/docker/containers/*/config.v2.json` (root-only): kept by
    /// a user other than root that was given it. Root reads them as their
    /// owner, with no capability.
    DockerNames,
}

impl Keep {
    #[must_use]
    pub fn capabilities(self) -> &'static [Capability] {
        match self {
            Self::MapReads => &[Capability::CAP_BPF],
            Self::LateAttach => &[Capability::CAP_BPF, Capability::CAP_PERFMON],
            Self::OpenFiles => &[Capability::CAP_SYS_PTRACE],
            Self::DockerNames => &[Capability::CAP_DAC_READ_SEARCH],
        }
    }

    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::MapReads => "reading the probes' maps (kernels before 5.19)",
            Self::LateAttach => "attaching the throttle program when a quota appears",
            Self::OpenFiles => "naming the files a cgroup's processes hold open",
            Self::DockerNames => "naming Docker containers (a user other than root, if given it)",
        }
    }
}

/// What each live view keeps once attached (`check` shows this table).
pub const KEPT_BY_VIEW: &[(&str, &[Keep])] = &[
    (
        "serve",
        &[Keep::MapReads, Keep::LateAttach, Keep::DockerNames],
    ),
    (
        "throttle",
        &[Keep::MapReads, Keep::LateAttach, Keep::DockerNames],
    ),
    ("oom --follow", &[Keep::MapReads, Keep::DockerNames]),
    (
        "top",
        &[Keep::MapReads, Keep::LateAttach, Keep::DockerNames],
    ),
    ("cache, reclaim", &[Keep::MapReads, Keep::DockerNames]),
    (
        "cache --files",
        &[Keep::MapReads, Keep::OpenFiles, Keep::DockerNames],
    ),
];

/// What a view named in [`KEPT_BY_VIEW`] keeps.
#[must_use]
pub fn kept_by(view: &str) -> &'static [Keep] {
    KEPT_BY_VIEW
        .iter()
        .find(|(name, _)| *name == view)
        .map_or(&[], |(_, keep)| keep)
}

/// The capabilities `keep` retains, by name, without repeats.
#[must_use]
pub fn names(keep: &[Keep]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for cap in keep.iter().flat_map(|k| k.capabilities()) {
        let name = cap.to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// What [`drop_all_but`] left in effect.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Capabilities kept, each with the first reason that kept it.
    pub kept: Vec<(Capability, &'static str)>,
    /// How many it had in effect before.
    pub before: usize,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kept.is_empty() {
            return write!(f, "dropped all {} capabilities", self.before);
        }
        let kept: Vec<String> = self
            .kept
            .iter()
            .map(|(cap, why)| format!("{cap} ({why})"))
            .collect();
        write!(
            f,
            "kept {}; dropped the other {}",
            kept.join(", "),
            self.before.saturating_sub(self.kept.len())
        )
    }
}

/// Gives up every capability but those `keep` needs (and only those this
/// process had), in the effective, permitted, inheritable and ambient
/// sets, then sets no_new_privs. Call it once everything is attached.
pub fn drop_all_but(keep: &[Keep]) -> anyhow::Result<Dropped> {
    let effective = caps::read(None, CapSet::Effective)?;
    let root = rustix::process::geteuid().is_root();
    let mut kept = Vec::new();
    let mut retained = CapsHashSet::new();
    for reason in keep {
        if root && *reason == Keep::DockerNames {
            continue;
        }
        for cap in reason.capabilities() {
            if effective.contains(cap) && retained.insert(*cap) {
                kept.push((*cap, reason.reason()));
            }
        }
    }
    // The ambient set must shrink first: the kernel keeps it a subset of
    // the permitted and inheritable sets.
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Effective, &retained)?;
    caps::set(None, CapSet::Permitted, &retained)?;
    rustix::thread::set_no_new_privs(true)?;
    Ok(Dropped {
        kept,
        before: effective.len(),
    })
}

/// The capabilities in effect now, by name, sorted (for `check`).
#[must_use]
pub fn effective_names() -> Vec<String> {
    let mut names: Vec<String> = caps::read(None, CapSet::Effective)
        .map(|set| set.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::{Dropped, Keep};
    use caps::Capability;

    #[test]
    fn says_what_it_kept_and_why() {
        let dropped = Dropped {
            kept: vec![(Capability::CAP_BPF, Keep::MapReads.reason())],
            before: 41,
        };
        assert_eq!(
            dropped.to_string(),
            "kept CAP_BPF (reading the probes' maps (kernels before 5.19)); dropped the other 40"
        );
        assert_eq!(
            Dropped {
                kept: vec![],
                before: 3
            }
            .to_string(),
            "dropped all 3 capabilities"
        );
        assert!(
            Keep::LateAttach
                .capabilities()
                .contains(&Capability::CAP_PERFMON)
        );
    }
}
