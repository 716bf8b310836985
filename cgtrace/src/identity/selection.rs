//! The options every view shares for naming and narrowing cgroups
//! (`--cgroup`, `--pod`, `--namespace`, `--container`, and where names come
//! from), and [`Selection`], which applies them: it names cgroups, decides
//! which are kept, and keeps the kernel's allowlist in step as cgroups
//! appear and their pods get names.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use cgtrace_common::cgroup::CgroupRef;
use clap::Args;

use crate::{
    cgroup::Resolver,
    event::WorkloadNames,
    identity::{Identities, Identity, names::NameSources, path::Workload, selector::Selector},
    probe::{Probe, ProbeError},
};

/// Cgroups waiting for their pod's names, at most: beyond this the oldest
/// are given up on (a filter by name then misses them).
const MAX_PENDING: usize = 16_384;

/// How often pending cgroups are looked at again.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Only cgroups at or below PATH, or matching GLOB (`*`, `?`, `[a-z]`
    /// within one path component, `**` across any number; `\*` for a literal
    /// `*`); repeatable.
    #[arg(long = "cgroup", value_name = "PATH|GLOB")]
    pub cgroups: Vec<String>,
    /// Only this Kubernetes pod (name or uid); repeatable.
    #[arg(long = "pod", value_name = "NAME|UID")]
    pub pods: Vec<String>,
    /// Only pods of this Kubernetes namespace; repeatable.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Only this container (Kubernetes or Docker name, or an id prefix of 8+
    /// characters); repeatable.
    #[arg(long = "container", value_name = "NAME|ID")]
    pub containers: Vec<String>,
    /// Where the kubelet keeps pod logs: `<namespace>_<pod>_<uid>/` names pods.
    #[arg(long, value_name = "DIR", default_value = "/var/log/pods")]
    pub pod_logs: PathBuf,
    /// Where the kubelet links container logs: `<pod>_<ns>_<container>-<id>.log`
    /// names containers.
    #[arg(long, value_name = "DIR", default_value = "/var/log/containers")]
    pub container_logs: PathBuf,
    /// Docker's state directory: `containers/<id>/config.v2.json` names
    /// Docker containers.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/docker")]
    pub docker_root: PathBuf,
}

impl Default for SelectArgs {
    fn default() -> Self {
        let sources = NameSources::default();
        Self {
            cgroups: Vec::new(),
            pods: Vec::new(),
            namespaces: Vec::new(),
            containers: Vec::new(),
            pod_logs: sources.pod_logs,
            container_logs: sources.container_logs,
            docker_root: sources.docker_root,
        }
    }
}

/// Names cgroups and decides which a view keeps.
#[derive(Debug)]
pub struct Selection {
    identities: Identities,
    selector: Selector,
    /// Subtrees kept whatever the selector says (a recording's own command).
    also_paths: Vec<String>,
    also: Option<Selector>,
    /// Cgroups not kept only because their pod has no name yet.
    pending: HashMap<CgroupRef, String>,
    last_recheck: Option<Instant>,
}

impl Selection {
    pub fn new(args: &SelectArgs) -> anyhow::Result<Self> {
        let selector = Selector::new(
            &args.cgroups,
            &args.pods,
            &args.namespaces,
            &args.containers,
        )?;
        Ok(Self {
            identities: Identities::new(NameSources {
                pod_logs: args.pod_logs.clone(),
                container_logs: args.container_logs.clone(),
                docker_root: args.docker_root.clone(),
            }),
            selector,
            also_paths: Vec::new(),
            also: None,
            pending: HashMap::new(),
            last_recheck: None,
        })
    }

    /// Keeps everything, with names from the standard places.
    #[must_use]
    pub fn everything() -> Self {
        Self::new(&SelectArgs::default()).unwrap_or_else(|_| unreachable!("no filter to reject"))
    }

    /// Whether every cgroup is kept (no filter, nothing for the kernel to do).
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.selector.is_everything()
    }

    /// The filter as the user gave it.
    #[must_use]
    pub fn describe(&self) -> String {
        self.selector.describe()
    }

    /// Also keeps the subtree at `path`, whatever the filter says.
    pub fn also_keep(&mut self, path: &str) {
        self.also_paths.push(path.to_owned());
        self.also = Some(Selector::paths(&self.also_paths));
    }

    /// The identity of the cgroup at `path`.
    pub fn identify(&mut self, path: &str) -> Identity {
        self.identities.identify(path)
    }

    /// How many identities are remembered (bounded under churn).
    #[must_use]
    pub fn identities_kept(&self) -> usize {
        self.identities.len()
    }

    /// How views print the cgroup at `path`.
    pub fn label(&mut self, path: &str) -> String {
        self.identify(path).label(path)
    }

    /// Whether the cgroup at `path` is kept.
    pub fn keeps(&mut self, path: &str) -> bool {
        if self.selector.is_everything() {
            return true;
        }
        if let Some(also) = &self.also
            && also.keeps(path, &Identity::unnamed(path))
        {
            return true;
        }
        let identity = self.identities.identify(path);
        self.selector.keeps(path, &identity)
    }

    /// Whether an event involving these cgroups (unknown ones as `None`)
    /// is kept: any one of them kept is enough.
    pub fn keeps_any(&mut self, paths: &[Option<&str>]) -> bool {
        self.is_everything() || paths.iter().flatten().any(|path| self.keeps(path))
    }

    /// Names recorded in a trace (or learnt live) for the cgroup at a path.
    pub fn learn(&mut self, names: &WorkloadNames) {
        let identity = Identity {
            namespace: names.namespace.clone(),
            pod: names.pod.clone(),
            container: names.container.clone(),
            ..Identity::unnamed(&names.path)
        };
        self.identities.learn(&names.path, &identity);
    }

    /// Fills the kernel's allowlist with every cgroup kept now, in every
    /// hierarchy; the kernel adds their descendants as they are created.
    /// Returns how many cgroups were allowed.
    pub fn install(
        &mut self,
        probe: &mut Probe,
        resolver: &mut Resolver,
    ) -> Result<usize, ProbeError> {
        if self.is_everything() {
            return Ok(0);
        }
        let ids: Vec<u32> = resolver
            .hierarchies()
            .list
            .iter()
            .filter_map(|h| h.id)
            .collect();
        let mut allowed = Vec::new();
        for hierarchy in ids {
            for (id, path) in resolver.cgroups(hierarchy) {
                let cgroup = CgroupRef {
                    id,
                    hierarchy,
                    level: depth(&path),
                };
                self.consider(cgroup, &path, &mut allowed);
            }
        }
        probe.allow(&allowed)?;
        Ok(allowed.len())
    }

    /// Forgets what is known of a removed cgroup's path.
    pub fn forget(&mut self, path: &str) {
        self.identities.forget(path);
    }

    /// Cgroups created while the view runs (`cgroup_mkdir`): the resolver
    /// learns their paths (so one gone before it is used is still named),
    /// their pods' names are read while the files exist, and with a filter
    /// the kept ones are allowed (the kernel already allowed those whose
    /// parent was). Then pending cgroups are looked at again.
    pub fn cgroups_created(
        &mut self,
        probe: &mut Probe,
        resolver: &mut Resolver,
        created: &[(CgroupRef, String)],
    ) -> Result<(), ProbeError> {
        let mut allowed = Vec::new();
        for (cgroup, path) in created {
            resolver.learn(cgroup.hierarchy, cgroup.id, path);
            if self.is_everything() {
                let _ = self.identities.identify(path);
            } else {
                self.consider(*cgroup, path, &mut allowed);
            }
        }
        probe.allow(&allowed)?;
        self.recheck(probe)
    }

    /// Looks again at cgroups whose pods had no names: the kubelet writes a
    /// pod's log directory after creating its cgroup.
    fn recheck(&mut self, probe: &mut Probe) -> Result<(), ProbeError> {
        if self.pending.is_empty()
            || self
                .last_recheck
                .is_some_and(|at| at.elapsed() < RECHECK_EVERY)
        {
            return Ok(());
        }
        self.last_recheck = Some(Instant::now());
        let mut allowed = Vec::new();
        for (cgroup, path) in std::mem::take(&mut self.pending) {
            self.consider(cgroup, &path, &mut allowed);
        }
        probe.allow(&allowed)?;
        Ok(())
    }

    /// Adds `cgroup` to `allowed` when kept, or to the pending list when
    /// only a missing pod name keeps it out.
    fn consider(&mut self, cgroup: CgroupRef, path: &str, allowed: &mut Vec<CgroupRef>) {
        if self.keeps(path) {
            allowed.push(cgroup);
            return;
        }
        let identity = self.identities.identify(path);
        let may_be_named_later = self.selector.uses_names()
            && matches!(identity.workload, Workload::Pod { .. })
            && (identity.pod.is_none()
                || (identity.container_id().is_some() && identity.container.is_none()));
        if may_be_named_later {
            if self.pending.len() >= MAX_PENDING {
                self.pending.clear();
            }
            self.pending.insert(cgroup, path.to_owned());
        }
    }
}

fn depth(path: &str) -> u32 {
    u32::try_from(path.split('/').filter(|p| !p.is_empty()).count()).unwrap_or(u32::MAX)
}
