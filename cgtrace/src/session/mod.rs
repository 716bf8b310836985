//! One loop for every view, live or replayed: a [`Source`] produces
//! [`Event`]s, [`run`] hands each to every [`Sink`] (the models and views,
//! the trace writer), and what the views need to name cgroups travels with
//! them in a [`Context`].
//!
//! Names are learnt here, before any sink sees the event that needs them:
//! a source names a cgroup ([`Event::CgroupCreated`], [`Event::CgroupNamed`])
//! before the first event that refers to it.

pub mod kernel_log;
pub mod live;
mod quotas;
mod removals;
mod trace;

use std::{borrow::Cow, collections::HashMap, path::PathBuf};

use cgtrace_common::cgroup::CgroupRef;

pub use self::{
    kernel_log::{KernelLog, KernelLogSource},
    live::{FileSamples, LiveOptions, LiveSource, Signals, spawn_in},
    removals::REMOVED_NAMES_KEPT,
    trace::TraceSource,
};
use crate::{
    cgroup::Hierarchies,
    event::{CgroupNamed, Event, ProbeCounters, ProbeStats},
    identity::selection::Selection,
    session::removals::Removals,
    system::Clock,
    trace::file::Ending,
};

/// What every sink may use besides the event: cgroup names, the workload
/// names and filter, and the clock of the events' timestamps.
pub struct Context {
    pub names: CgroupNames,
    pub selection: Selection,
    /// Turns `CLOCK_MONOTONIC` timestamps into wall-clock times.
    pub clock: Clock,
    pub page_size: u64,
    /// This machine's cgroup mounts, in a live session (a replay's cgroups
    /// are elsewhere, or gone).
    pub hierarchies: Option<Hierarchies>,
    /// Records the kernel log lost, when a live session reads it.
    pub kernel_log_lost: Option<u64>,
    /// Removed cgroups whose names are still kept.
    removals: Removals,
}

impl Context {
    #[must_use]
    pub fn new(selection: Selection, clock: Clock, page_size: u64) -> Self {
        Self {
            names: CgroupNames::default(),
            selection,
            clock,
            page_size,
            hierarchies: None,
            kernel_log_lost: None,
            removals: Removals::default(),
        }
    }

    /// Whether `cgroup` was removed (and not made again since), as far as
    /// the session still remembers its name.
    #[must_use]
    pub fn is_removed(&self, cgroup: CgroupRef) -> bool {
        self.removals.contains(cgroup)
    }

    /// A live cgroup's directory, while it exists.
    #[must_use]
    pub fn directory(&self, cgroup: CgroupRef) -> Option<PathBuf> {
        let path = self.names.path(cgroup)?;
        let mount = &self.hierarchies.as_ref()?.by_id(cgroup.hierarchy)?.mount;
        Some(mount.join(path.trim_start_matches('/')))
    }

    /// Takes in the names an event carries.
    pub fn learn(&mut self, event: &Event) {
        match event {
            Event::CgroupCreated(named) => {
                self.removals.created(named.cgroup);
                self.names.learn(named);
            }
            // Named again for an event after its removal, a cgroup stays
            // removed: only `cgroup_mkdir` makes one.
            Event::CgroupNamed(named) => self.names.learn(named),
            Event::WorkloadNamed(names) => self.selection.learn(names),
            Event::CgroupRemoved(removed) => {
                if let Some(oldest) = self.removals.removed(removed.cgroup)
                    && let Some(path) = self.names.forget(oldest)
                {
                    self.selection.forget(&path);
                }
            }
            _ => {}
        }
    }

    /// `event` as far as the selection keeps it: names and ticks always;
    /// an OOM kill when any of its cgroups is kept; the probe's counters
    /// down to the flows whose owner or actor is kept and the stalls and
    /// charges of kept cgroups; samples of kept cgroups.
    pub fn keep<'e>(&mut self, event: &'e Event) -> Option<Cow<'e, Event>> {
        if self.selection.is_everything() {
            return Some(Cow::Borrowed(event));
        }
        let keep_if = |keep: bool| keep.then_some(Cow::Borrowed(event));
        match event {
            Event::CgroupCreated(_)
            | Event::CgroupNamed(_)
            | Event::WorkloadNamed(_)
            | Event::Health(_)
            | Event::Tick(_) => Some(Cow::Borrowed(event)),
            Event::CgroupRemoved(removed) => keep_if(self.keeps(Some(removed.cgroup))),
            Event::OomKill(kill) => {
                let involved = [
                    kill.victim.cgroup_ref,
                    kill.trigger.as_ref().and_then(|t| t.cgroup_ref),
                    kill.oom_memcg.as_ref().and_then(|m| m.cgroup_ref),
                ];
                keep_if(involved.into_iter().any(|c| self.keeps(c)))
            }
            Event::ThrottleSpan(span) => keep_if(self.keeps(span.cgroup_ref)),
            Event::Memory(sample) => keep_if(self.keeps(Some(sample.cgroup))),
            Event::Cpu(sample) => keep_if(self.keeps(Some(sample.cgroup))),
            Event::Pressure(sample) => keep_if(self.keeps(Some(sample.cgroup))),
            Event::Counters(counters) => {
                let mut counters = counters.clone();
                self.retain_counters(&mut counters);
                Some(Cow::Owned(Event::Counters(counters)))
            }
        }
    }

    /// Drops what involves no kept cgroup from an interval's counters: a
    /// flow stays when its owner or its actor is kept, a stall, charge or
    /// file when its cgroup is.
    pub fn retain_counters(&mut self, counters: &mut ProbeCounters) {
        if self.selection.is_everything() {
            return;
        }
        counters
            .flows
            .retain(|f| self.keeps(f.owner) || self.keeps(f.actor));
        counters.stalls.retain(|s| self.keeps(s.cgroup));
        if let Some(charges) = &mut counters.charges {
            charges.retain(|c| self.keeps(c.cgroup));
        }
        if let Some(files) = &mut counters.files {
            files.retain(|f| self.keeps(f.owner));
        }
    }

    /// Whether the selection keeps `cgroup` (an unnamed one is not kept).
    fn keeps(&mut self, cgroup: Option<CgroupRef>) -> bool {
        cgroup
            .and_then(|c| self.names.path(c))
            .is_some_and(|path| self.selection.keeps(path))
    }

    /// A cgroup's path, `id:N` when it was never named, or `(uncharged)`.
    #[must_use]
    pub fn name(&self, cgroup: Option<CgroupRef>) -> String {
        cgroup.map_or_else(|| "(uncharged)".to_owned(), |c| self.names.name(c))
    }
}

/// The paths of the cgroups a session has named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupNames(HashMap<(u32, u64), String>);

impl Default for CgroupNames {
    /// Room for the removed cgroups kept from the start: a table grown
    /// under churn would be steps in the collector's RSS (see
    /// `identity::bounded`).
    fn default() -> Self {
        Self(HashMap::with_capacity(
            crate::identity::bounded::table_size(REMOVED_NAMES_KEPT),
        ))
    }
}

impl CgroupNames {
    pub fn learn(&mut self, named: &CgroupNamed) {
        self.0.insert(
            (named.cgroup.hierarchy, named.cgroup.id),
            named.path.clone(),
        );
    }

    /// Forgets a removed cgroup's path (see [`REMOVED_NAMES_KEPT`]).
    /// Returns the path it had.
    pub fn forget(&mut self, cgroup: CgroupRef) -> Option<String> {
        self.0.remove(&(cgroup.hierarchy, cgroup.id))
    }

    /// The cgroup's path, or `id:N` when it was never named.
    #[must_use]
    pub fn name(&self, cgroup: CgroupRef) -> String {
        self.path(cgroup)
            .map_or_else(|| format!("id:{}", cgroup.id), str::to_owned)
    }

    /// The cgroup's path, if it was named.
    #[must_use]
    pub fn path(&self, cgroup: CgroupRef) -> Option<&str> {
        self.0
            .get(&(cgroup.hierarchy, cgroup.id))
            .map(String::as_str)
    }
}

/// Whether the session goes on after a sink has seen an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// This sink has what it wanted (`--count` reached, its reader gone).
    Stop,
}

/// How a session ended, for the sinks' closing words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct End {
    /// For a replay: how the trace ended.
    pub ending: Option<Ending>,
    /// The probe's loss counters as the session ended, when the source had
    /// them (a trace cut short lost its last ones).
    pub health: Option<ProbeStats>,
    /// A sink stopped the session before its source ran dry.
    pub stopped: bool,
}

/// Whatever consumes events: a model with its view, the trace writer.
pub trait Sink {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow>;

    /// After the last event.
    fn finish(&mut self, cx: &mut Context, end: &End) -> anyhow::Result<()>;
}

/// Whatever produces events: the live probes and files, or a trace.
#[allow(
    async_fn_in_trait,
    reason = "sources are used by generics, never boxed"
)]
pub trait Source {
    /// The next event; `None` when the source has no more.
    async fn next(&mut self, cx: &mut Context) -> anyhow::Result<Option<Event>>;

    /// For a replay: how the trace ended (after the last event).
    fn ending(&self) -> Option<Ending> {
        None
    }
}

/// The process's one single-threaded runtime, made on first use.
pub fn runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs a session to its end on the runtime.
pub fn run<S: Source>(
    source: &mut S,
    cx: &mut Context,
    sinks: &mut [&mut dyn Sink],
) -> anyhow::Result<End> {
    runtime()?.block_on(run_async(source, cx, sinks))
}

/// One event: learnt from, then given to every sink in turn; `Stop` if a
/// sink asked to stop. (A loop of a view's own, as `top`'s, which also
/// waits for keys, calls this for each event.)
pub fn deliver(
    event: &Event,
    cx: &mut Context,
    sinks: &mut [&mut dyn Sink],
) -> anyhow::Result<Flow> {
    cx.learn(event);
    let mut stop = false;
    for sink in sinks.iter_mut() {
        stop |= sink.event(event, cx)? == Flow::Stop;
    }
    Ok(if stop { Flow::Stop } else { Flow::Continue })
}

/// The loop: each event is learnt from, then given to every sink in turn.
pub async fn run_async<S: Source>(
    source: &mut S,
    cx: &mut Context,
    sinks: &mut [&mut dyn Sink],
) -> anyhow::Result<End> {
    let mut end = End::default();
    let mut latest_health = None;
    while let Some(event) = source.next(cx).await? {
        if let Event::Health(health) = &event {
            latest_health = Some(health.stats);
            if health.is_final {
                end.health = Some(health.stats);
            }
        }
        if deliver(&event, cx, sinks)? == Flow::Stop {
            end.stopped = true;
            break;
        }
    }
    end.ending = source.ending();
    if end.ending.is_none() {
        // Live and stopped early: the counters as they are now.
        end.health = end.health.or(latest_health);
    }
    for sink in sinks.iter_mut() {
        sink.finish(cx, &end)?;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use cgtrace_common::cgroup::CgroupRef;

    use super::{Context, REMOVED_NAMES_KEPT};
    use crate::{
        event::{CgroupNamed, CgroupRemoved, Event},
        identity::selection::{SelectArgs, Selection},
        system::Clock,
    };

    fn cgroup(id: u64) -> CgroupRef {
        CgroupRef {
            id,
            hierarchy: 4,
            level: 1,
        }
    }

    fn created(id: u64, path: &str) -> Event {
        Event::CgroupCreated(CgroupNamed {
            cgroup: cgroup(id),
            path: path.to_owned(),
        })
    }

    fn removed(id: u64) -> Event {
        Event::CgroupRemoved(CgroupRemoved {
            at_ns: id,
            cgroup: cgroup(id),
        })
    }

    #[test]
    fn removed_cgroups_keep_their_names_until_many_more_are_removed() {
        let mut cx = Context::new(
            Selection::new(&SelectArgs::default()).unwrap(),
            Clock::from_boot_time(0),
            4096,
        );
        cx.learn(&created(1, "/gone"));
        cx.learn(&removed(1));
        // Its id given to a new cgroup, which keeps its name.
        cx.learn(&created(2, "/old"));
        cx.learn(&removed(2));
        cx.learn(&created(2, "/reused"));
        assert_eq!(cx.names.name(cgroup(1)), "/gone", "named after its removal");
        let churn = u64::try_from(REMOVED_NAMES_KEPT).unwrap();
        for id in 100..100 + churn {
            cx.learn(&created(id, &format!("/churn-{id}")));
            cx.learn(&removed(id));
        }
        assert_eq!(cx.names.name(cgroup(1)), "id:1", "forgotten under churn");
        assert_eq!(cx.names.name(cgroup(2)), "/reused", "alive: kept");
        assert_eq!(cx.names.0.len(), REMOVED_NAMES_KEPT + 1);
    }

    #[test]
    fn identities_of_removed_cgroups_go_with_their_names() {
        let mut cx = Context::new(
            Selection::new(&SelectArgs::default()).unwrap(),
            Clock::from_boot_time(0),
            4096,
        );
        let churn = 3 * u64::try_from(REMOVED_NAMES_KEPT).unwrap();
        for id in 100..100 + churn {
            let path = format!("/churn-{id}");
            cx.learn(&created(id, &path));
            let _ = cx.selection.identify(&path);
            cx.learn(&removed(id));
        }
        assert_eq!(cx.selection.identities_kept(), REMOVED_NAMES_KEPT);
    }
}
