//! This machine as a source: the probe's ring buffer (OOM kills, throttle
//! spans, new cgroups) as it fills, and every sampling interval the probe's
//! counters, the files of the cgroups they name (and of any watched ones),
//! the probe's loss counters and the [`Tick`] that closes the interval;
//! until SIGINT or SIGTERM, `--duration`, or the recorded command's exit.
//!
//! It names every cgroup before the first event that refers to it, and the
//! workload at its path as soon as the node's files say (a pod's log
//! directory may appear after its cgroup: such paths are looked at again
//! each interval).

use std::{
    collections::{HashSet, VecDeque},
    os::fd::OwnedFd,
    process::ExitStatus,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use cgtrace_common::cgroup::CgroupRef;
use tokio::{
    io::{Interest, unix::AsyncFd},
    process::Child,
    signal::unix::{Signal, SignalKind, signal},
    time::{Interval, MissedTickBehavior},
};

use super::{Context, KernelLog, Source, quotas::QuotaWatch, removals::Removals};
use crate::{
    cgroup::{
        Resolver,
        sampler::FileSampler,
        scratch::{JoinOnExec, ScratchCgroup},
    },
    event::{Bandwidth, CgroupNamed, Event, Health, OomKill, Tick, WorkloadNames},
    identity::path::Workload,
    probe::Probe,
    system::Clock,
};

/// Room the event queue keeps between intervals.
const PENDING_KEPT: usize = 1024;

/// What a live session samples besides the ring buffer.
#[derive(Default)]
pub struct LiveOptions {
    /// How often the counters and files are sampled.
    pub interval: Duration,
    /// Which cgroup files are sampled.
    pub files: FileSamples,
    /// Attach the per-switch throttle program only while some cgroup has a
    /// CFS quota.
    pub gate_throttle: bool,
    /// Memory cgroups sampled every interval whatever the counters say.
    pub watched: Vec<CgroupRef>,
    /// Every memory cgroup's usage and limit this often, beside the ones
    /// the counters name each interval (read in full): an agent serves
    /// every container's usage and limit, busy or not.
    pub sweep: Option<Duration>,
    /// Read the CFS files of a limited cgroup that was not throttled in
    /// the interval only when the sweep is due (and once when its quota
    /// is first seen): a screen refreshing every second beside thousands
    /// of quotas reads the busy ones each second and the quiet ones each
    /// sweep. Throttled cgroups are read every interval either way.
    pub quiet_quotas_on_sweep: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop when this process (spawned on the session's runtime) exits.
    pub command: Option<Child>,
    /// OOM kills from the kernel log too (from boot, then as they come).
    pub kernel_log: Option<KernelLog>,
}

/// Which cgroup files a live session samples each interval.
#[derive(Clone, Copy, Debug, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent switches, each named where it is set"
)]
pub struct FileSamples {
    /// The memory files of the cgroups each interval's counters name.
    pub memory: bool,
    /// The CFS bandwidth of limited cgroups and of cgroups with spans.
    pub cpu: bool,
    /// The pressure files of the cgroups sampled.
    pub pressure: bool,
    /// The CPU time the cpu cgroups used, with their CFS figures (on v1,
    /// one more file per cgroup per interval).
    pub cpu_usage: bool,
}

/// SIGINT and SIGTERM, caught from the moment this is made: a live command
/// makes it first thing, so a signal that comes while the probes load ends
/// the session cleanly instead of killing the process.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        let _runtime = super::runtime()?.enter();
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }
}

/// What waits for the kernel: created inside the runtime.
struct Reactor {
    /// A duplicate of the ring buffer's descriptor (the ring buffer itself
    /// stays in the probe): the same file, so the same readiness.
    ring: AsyncFd<OwnedFd>,
    /// The kernel log's descriptor, likewise, when it is read.
    kernel_log: Option<AsyncFd<OwnedFd>>,
    timer: Interval,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// Take the last sample, then end.
    Finishing,
    Done,
}

/// A live session's source.
pub struct LiveSource {
    reactor: Option<Reactor>,
    signals: Signals,
    probe: Probe,
    resolver: Resolver,
    files: FileSampler,
    options: LiveOptions,
    pending: VecDeque<Event>,
    named: HashSet<(u32, u64)>,
    /// Paths of pods and containers whose names the node has not said yet.
    unnamed: HashSet<String>,
    /// Cgroups with throttle spans in the open interval.
    throttled: HashSet<CgroupRef>,
    /// The cpu cgroups with a CFS quota.
    quotas: QuotaWatch,
    /// When every memory cgroup was last sampled (`LiveOptions::sweep`).
    last_sweep: Option<Instant>,
    /// Whether this interval's sample is a sweep.
    sweeping: bool,
    /// The limited cgroups whose CFS files were read at least once.
    quotas_read: HashSet<(u32, u64)>,
    /// Removed cgroups whose paths the resolver still keeps. They stay
    /// in `named`: an event after the removal does not name them again.
    removals: Removals,
    /// Cgroups removed since the last sample of the counters.
    gone: Vec<CgroupRef>,
    last_tick_ns: u64,
    started: Instant,
    state: State,
    exit: Option<ExitStatus>,
    /// A SIGINT or SIGTERM ended the session.
    interrupted: bool,
}

impl LiveSource {
    /// Starts counting now: the counters' first sample is the baseline.
    #[must_use]
    pub fn new(
        signals: Signals,
        mut probe: Probe,
        mut resolver: Resolver,
        mut options: LiveOptions,
    ) -> Self {
        // What moved before now is attach noise; counting starts here,
        // before anything slower.
        let _ = probe.sample_counters();
        let counting_from_ns = Clock::monotonic_now_ns();
        let mut files = FileSampler::new(1 << crate::probe::offsets::page_shift());
        let ids: Vec<(u32, bool, bool)> = resolver
            .hierarchies()
            .list
            .iter()
            .filter_map(|h| Some((h.id?, h.has("memory"), h.has("cpu"))))
            .collect();
        for (id, memory, cpu) in ids {
            if (memory && options.files.memory) || (cpu && options.files.cpu) {
                files.prime(&mut resolver, id);
            }
        }
        let mut pending = VecDeque::new();
        if let Some(log) = &mut options.kernel_log {
            // The kills since boot come first. An unreadable log was
            // checked when it was opened; a read failing now loses only
            // the backlog, and the live records still come.
            for kill in log.read().unwrap_or_default() {
                pending.push_back(Event::OomKill(Box::new(kill)));
            }
        }
        Self {
            reactor: None,
            signals,
            probe,
            resolver,
            files,
            options,
            pending,
            named: HashSet::with_capacity(crate::identity::bounded::table_size(
                super::REMOVED_NAMES_KEPT,
            )),
            unnamed: HashSet::new(),
            throttled: HashSet::new(),
            quotas: QuotaWatch::default(),
            last_sweep: None,
            sweeping: false,
            quotas_read: HashSet::new(),
            removals: Removals::default(),
            gone: Vec::new(),
            last_tick_ns: counting_from_ns,
            started: Instant::now(),
            state: State::Running,
            exit: None,
            interrupted: false,
        }
    }

    /// Samples the watched cgroups now (before the recorded command
    /// starts, so their usage watermark's rise is the command's).
    pub fn sample_watched(&mut self, cx: &mut Context) {
        let now = Clock::monotonic_now_ns();
        for cgroup in self.options.watched.clone() {
            self.name(Some(cgroup), cx);
            if let Some(sample) = self.files.memory(cgroup, &mut self.resolver, now, false) {
                self.pending.push_back(Event::Memory(Box::new(sample)));
            }
        }
    }

    /// Stop when `command` exits.
    pub fn set_command(&mut self, command: Child) {
        self.options.command = Some(command);
    }

    /// Whether SIGINT or SIGTERM ended the session.
    #[must_use]
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    fn interrupt(&mut self) {
        self.interrupted = true;
        self.state = State::Finishing;
    }

    /// The signals and the probe back, for another session.
    #[must_use]
    pub fn into_parts(self) -> (Signals, Probe) {
        (self.signals, self.probe)
    }

    /// The probe and the resolver, to fill the kernel's allowlist.
    pub fn probe_and_resolver(&mut self) -> (&mut Probe, &mut Resolver) {
        (&mut self.probe, &mut self.resolver)
    }

    /// The probe, for its feature list and counters.
    #[must_use]
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// How the recorded command ended, once it has.
    #[must_use]
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// Stops the recorded command (if it still runs) and waits for it.
    pub fn stop_command(&mut self) {
        if let Some(mut child) = self.options.command.take() {
            let ended = super::runtime().and_then(|runtime| {
                runtime.block_on(async {
                    if self.exit.is_none() {
                        child.start_kill()?;
                    }
                    child.wait().await
                })
            });
            if let Ok(status) = ended {
                self.exit.get_or_insert(status);
            }
        }
    }

    /// Registers with the runtime what the session waits on (inside it).
    fn reactor(&mut self) -> anyhow::Result<()> {
        if self.reactor.is_none() {
            let period = self.options.interval.max(Duration::from_millis(10));
            let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
            self.reactor = Some(Reactor {
                ring: readable(self.probe.events_fd().try_clone_to_owned()?)?,
                kernel_log: match &self.options.kernel_log {
                    Some(log) => Some(readable(log.fd().try_clone_to_owned()?)?),
                    None => None,
                },
                timer,
            });
        }
        Ok(())
    }

    /// Names `cgroup` if no event has yet, and its workload where known.
    fn name(&mut self, cgroup: Option<CgroupRef>, cx: &mut Context) {
        let Some(cgroup) = cgroup else {
            return;
        };
        if !self.named.insert((cgroup.hierarchy, cgroup.id)) {
            return;
        }
        if let Some(path) = self.resolver.path(cgroup) {
            self.pending.push_back(Event::CgroupNamed(CgroupNamed {
                cgroup,
                path: path.clone(),
            }));
            self.name_workload(&path, cx);
        } else {
            // Gone unnamed: a removed cgroup whose leftover page cache is
            // evicted after its removal left the kept list. Not kept (no
            // removal is to come to drop it); the resolver remembers the
            // miss, so asking again costs no walk.
            self.named.remove(&(cgroup.hierarchy, cgroup.id));
        }
    }

    /// Says the workload names at `path` once the node's files have them.
    fn name_workload(&mut self, path: &str, cx: &mut Context) {
        let identity = cx.selection.identify(path);
        if identity.pod.is_some() || identity.container.is_some() {
            self.unnamed.remove(path);
            self.pending.push_back(Event::WorkloadNamed(WorkloadNames {
                path: path.to_owned(),
                namespace: identity.namespace,
                pod: identity.pod,
                container: identity.container,
            }));
        } else if !matches!(identity.workload, Workload::Unit { .. } | Workload::Path) {
            self.unnamed.insert(path.to_owned());
        }
    }

    /// A path the probe had to cut (it carries at most
    /// `CGROUP_PATH_MAX - 1` bytes; a name alone may have 255) is looked up
    /// in full by a walk of the hierarchy. A cgroup gone before the walk
    /// keeps the cut path, marked as cut with a trailing `…`.
    fn complete_cut_path(&mut self, named: &mut crate::event::CgroupNamed) {
        if named.path.len() < cgtrace_common::cgroup::CGROUP_PATH_MAX - 1 {
            return;
        }
        self.resolver.scan(named.cgroup.hierarchy);
        match self.resolver.path(named.cgroup) {
            Some(full) => named.path = full,
            None => named.path.push('…'),
        }
    }

    /// What the ring buffer holds, named.
    fn drain(&mut self, cx: &mut Context) -> anyhow::Result<()> {
        let mut events = Vec::new();
        self.probe.drain(|event| events.push(event));
        for event in &mut events {
            if let Event::CgroupCreated(named) = event {
                self.complete_cut_path(named);
            }
        }
        let created: Vec<(CgroupRef, String)> = events
            .iter()
            .filter_map(|event| match event {
                Event::CgroupCreated(named) => Some((named.cgroup, named.path.clone())),
                _ => None,
            })
            .collect();
        // Names first: a cgroup created and gone within one read is named.
        cx.selection
            .cgroups_created(&mut self.probe, &mut self.resolver, &created)?;
        for event in events {
            match event {
                Event::CgroupCreated(named) => {
                    self.named.insert((named.cgroup.hierarchy, named.cgroup.id));
                    self.removals.created(named.cgroup);
                    self.quotas
                        .created(named.cgroup, &named.path, &self.resolver);
                    let path = named.path.clone();
                    self.pending.push_back(Event::CgroupCreated(named));
                    self.name_workload(&path, cx);
                }
                Event::CgroupRemoved(removed) => {
                    let key = (removed.cgroup.hierarchy, removed.cgroup.id);
                    self.files.forget(removed.cgroup);
                    self.quotas.removed(removed.cgroup);
                    self.quotas_read.remove(&key);
                    self.gone.push(removed.cgroup);
                    if let Some(oldest) = self.removals.removed(removed.cgroup) {
                        self.named.remove(&(oldest.hierarchy, oldest.id));
                        self.resolver.forget(oldest);
                    }
                    self.pending.push_back(Event::CgroupRemoved(removed));
                }
                Event::OomKill(mut kill) => {
                    self.resolve(&mut kill, cx);
                    self.pending.push_back(Event::OomKill(kill));
                }
                Event::ThrottleSpan(mut span) => {
                    self.name(span.cgroup_ref, cx);
                    span.cgroup = span.cgroup_ref.and_then(|c| self.resolver.path(c));
                    self.throttled.extend(span.cgroup_ref);
                    self.pending.push_back(Event::ThrottleSpan(span));
                }
                other => self.pending.push_back(other),
            }
        }
        Ok(())
    }

    /// The kernel log's new OOM kills.
    fn read_kernel_log(&mut self, cx: &mut Context) -> anyhow::Result<()> {
        if let Some(log) = &mut self.options.kernel_log {
            for kill in log.read()? {
                self.pending.push_back(Event::OomKill(Box::new(kill)));
            }
            cx.kernel_log_lost = Some(log.lost());
        }
        Ok(())
    }

    /// Records the kernel log lost (overwritten before they were read).
    #[must_use]
    pub fn kernel_log_lost(&self) -> Option<u64> {
        self.options.kernel_log.as_ref().map(KernelLog::lost)
    }

    /// Names an OOM kill's cgroups and fills in their paths.
    fn resolve(&mut self, kill: &mut OomKill, cx: &mut Context) {
        let refs = [
            kill.victim.cgroup_ref,
            kill.trigger.as_ref().and_then(|t| t.cgroup_ref),
            kill.oom_memcg.as_ref().and_then(|m| m.cgroup_ref),
        ];
        for cgroup in refs {
            self.name(cgroup, cx);
        }
        resolve_paths(kill, &mut self.resolver);
    }

    /// The interval's samples, then its tick.
    fn sample(&mut self, cx: &mut Context) -> anyhow::Result<()> {
        self.drain(cx)?;
        for line in self.probe.take_log_lines() {
            crate::note!("cgtrace: probe log: {line}");
        }
        let now = Clock::monotonic_now_ns();
        // The counters cover the interval the tick below closes: one clock
        // reading for both, so every consumer finds an interval's counters
        // by its tick (the probe's own reading comes a moment later).
        let counters = self.probe.sample_counters().map(|mut counters| {
            counters.start_ns = self.last_tick_ns;
            counters.end_ns = now;
            counters
        });
        // Counted to their last page: the removed cgroups' entries can go.
        let gone = std::mem::take(&mut self.gone);
        self.probe.forget_cgroups(&gone);
        // What the memory samples need of the counters, before they go.
        let mut memory_cgroups = self.options.watched.clone();
        let swept = self.sweep_due();
        let stat_charges = counters.as_ref().is_none_or(|c| c.charges.is_none());
        if let Some(counters) = counters {
            let cgroups: Vec<CgroupRef> = counters.cgroups().collect();
            for cgroup in cgroups {
                self.name(Some(cgroup), cx);
            }
            memory_cgroups.extend(counters.flows.iter().filter_map(|f| f.owner));
            memory_cgroups.extend(counters.stalls.iter().filter_map(|s| s.cgroup));
            memory_cgroups.extend(counters.charges.iter().flatten().filter_map(|c| c.cgroup));
            self.pending.push_back(Event::Counters(Box::new(counters)));
        }
        let memory = if self.options.files.memory {
            let sampled = self.sample_memory(memory_cgroups, stat_charges, now, cx);
            self.sample_usage(swept, &sampled, now, cx);
            sampled
        } else {
            Vec::new()
        };
        let cpu = if self.options.files.cpu {
            self.sample_cpu(now, cx)?
        } else {
            Vec::new()
        };
        if self.options.files.pressure {
            for cgroup in memory.into_iter().chain(cpu) {
                if let Some(sample) = self.files.pressure(cgroup, &mut self.resolver, now) {
                    self.pending.push_back(Event::Pressure(Box::new(sample)));
                }
            }
        }
        let unnamed: Vec<String> = self.unnamed.iter().cloned().collect();
        for path in unnamed {
            self.name_workload(&path, cx);
        }
        self.pending.push_back(Event::Health(Health {
            at_ns: now,
            stats: self.probe.stats(),
            is_final: self.state == State::Finishing,
        }));
        self.pending.push_back(Event::Tick(Tick {
            start_ns: self.last_tick_ns,
            end_ns: now,
        }));
        self.last_tick_ns = now;
        Ok(())
    }

    /// Every memory cgroup, when a sweep is due.
    fn sweep_due(&mut self) -> Vec<CgroupRef> {
        self.sweeping = false;
        let Some(every) = self.options.sweep else {
            return Vec::new();
        };
        if self.last_sweep.is_some_and(|at| at.elapsed() < every) {
            return Vec::new();
        }
        self.last_sweep = Some(Instant::now());
        self.sweeping = true;
        let Some(id) = self
            .resolver
            .hierarchies()
            .with_controller("memory")
            .and_then(|h| h.id)
        else {
            return Vec::new();
        };
        self.resolver
            .refs(id)
            .into_iter()
            .map(|(cgroup, _)| cgroup)
            .collect()
    }

    /// The usage and limit of the swept cgroups not sampled in full.
    fn sample_usage(
        &mut self,
        swept: Vec<CgroupRef>,
        sampled: &[CgroupRef],
        now: u64,
        cx: &mut Context,
    ) {
        let sampled: HashSet<(u32, u64)> = sampled.iter().map(|c| (c.hierarchy, c.id)).collect();
        for cgroup in swept {
            if sampled.contains(&(cgroup.hierarchy, cgroup.id)) {
                continue;
            }
            self.name(Some(cgroup), cx);
            if let Some(sample) = self.files.memory_usage(cgroup, &mut self.resolver, now) {
                self.pending.push_back(Event::Memory(Box::new(sample)));
            }
        }
    }

    /// The memory files of the cgroups the counters name, and the watched
    /// ones; returns the cgroups sampled.
    fn sample_memory(
        &mut self,
        mut cgroups: Vec<CgroupRef>,
        stat_charges: bool,
        now: u64,
        cx: &mut Context,
    ) -> Vec<CgroupRef> {
        cgroups.sort_by_key(|c| (c.hierarchy, c.id));
        cgroups.dedup_by_key(|c| (c.hierarchy, c.id));
        // A removed cgroup's leftover page cache is counted for minutes
        // after it went; it has no files to sample.
        cgroups.retain(|c| !self.removals.contains(*c));
        let mut sampled = Vec::new();
        for cgroup in cgroups {
            self.name(Some(cgroup), cx);
            if let Some(sample) = self
                .files
                .memory(cgroup, &mut self.resolver, now, stat_charges)
            {
                self.pending.push_back(Event::Memory(Box::new(sample)));
                sampled.push(cgroup);
            }
        }
        sampled
    }

    /// Keeps the per-switch throttle program attached only while some
    /// cgroup has a quota (nothing else can be throttled), and says so.
    fn gate(&mut self, any_limited: bool) -> anyhow::Result<()> {
        match self.probe.gate_throttle(any_limited)? {
            Some(true) => crate::note!(
                "cgtrace: throttle: a cgroup has a CFS quota: sched_switch probe attached"
            ),
            Some(false) => crate::note!(
                "cgtrace: throttle: no cgroup has a CFS quota: sched_switch probe detached (nothing can be throttled)"
            ),
            None => {}
        }
        Ok(())
    }

    /// Gates the throttle program on the quotas of now, before the first
    /// interval (see [`LiveOptions::gate_throttle`]).
    pub fn gate_throttle_now(&mut self) -> anyhow::Result<()> {
        if self.options.gate_throttle {
            let any_limited = !self.quotas.limited(&mut self.resolver).is_empty();
            self.gate(any_limited)?;
        }
        Ok(())
    }

    /// The CFS bandwidth of every limited cpu cgroup and every cgroup
    /// throttled in the interval. Returns the cgroups sampled.
    fn sample_cpu(&mut self, now: u64, cx: &mut Context) -> anyhow::Result<Vec<CgroupRef>> {
        let limited = self.quotas.limited(&mut self.resolver);
        if self.options.gate_throttle {
            self.gate(!limited.is_empty())?;
        }
        // Throttled ones first: their bandwidth is read again (a quota
        // may have changed since the watch last read it).
        let every_one = !self.options.quiet_quotas_on_sweep || self.sweeping;
        let quotas_read = &self.quotas_read;
        let mut cgroups: Vec<(CgroupRef, Option<Bandwidth>)> = self
            .throttled
            .drain()
            .map(|c| (c, None))
            .chain(
                limited
                    .into_iter()
                    .filter(|(c, _)| every_one || !quotas_read.contains(&(c.hierarchy, c.id)))
                    .map(|(c, b)| (c, Some(b))),
            )
            .collect();
        cgroups.sort_by_key(|(c, _)| (c.hierarchy, c.id));
        cgroups.dedup_by_key(|(c, _)| (c.hierarchy, c.id));
        let mut sampled = Vec::new();
        for (cgroup, bandwidth) in cgroups {
            self.name(Some(cgroup), cx);
            if let Some(sample) = self.files.cpu(
                cgroup,
                &mut self.resolver,
                now,
                bandwidth,
                self.options.files.cpu_usage,
            ) {
                self.pending.push_back(Event::Cpu(sample));
                self.quotas_read.insert((cgroup.hierarchy, cgroup.id));
                sampled.push(cgroup);
            }
        }
        Ok(sampled)
    }

    fn due_to_stop(&self) -> bool {
        let timed_out = self
            .options
            .duration
            .is_some_and(|d| self.started.elapsed() >= d);
        timed_out || self.exit.is_some()
    }
}

/// Starts `command` inside every one of `cgroups` on the session's runtime,
/// which reaps it: a session waits for it with [`LiveSource::set_command`].
pub fn spawn_in(
    cgroups: &[&ScratchCgroup],
    mut command: tokio::process::Command,
) -> anyhow::Result<Child> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let joining = JoinOnExec::new(cgroups, command.as_std_mut())
        .with_context(|| format!("cannot run {program}"))?;
    let _runtime = super::runtime()?.enter();
    let child = command
        .spawn()
        .map_err(|source| joining.spawn_error(source))
        .with_context(|| format!("cannot run {program}"))?;
    drop(joining);
    Ok(child)
}

/// Waits for the recorded command to end, or forever without one.
async fn command_ended(command: Option<&mut Child>) -> std::io::Result<ExitStatus> {
    match command {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// `fd` registered with the reactor for reading.
fn readable(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns this descriptor and keeps it open for as
    // long as it is registered.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
}

/// Waits until the kernel log has records, or forever without one.
async fn log_readable(log: Option<&AsyncFd<OwnedFd>>) -> std::io::Result<()> {
    match log {
        Some(log) => log.readable().await.map(|mut ready| ready.clear_ready()),
        None => std::future::pending().await,
    }
}

impl Source for LiveSource {
    async fn next(&mut self, cx: &mut Context) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            // An interval beside thousands of cgroups queues thousands of
            // samples; the queue need not keep that room between them.
            if self.pending.capacity() > PENDING_KEPT {
                self.pending.shrink_to(PENDING_KEPT);
            }
            match self.state {
                State::Done => return Ok(None),
                State::Finishing => {
                    self.sample(cx)?;
                    self.state = State::Done;
                    continue;
                }
                State::Running => {}
            }
            if self.due_to_stop() {
                self.state = State::Finishing;
                continue;
            }
            self.reactor()?;
            let Some(reactor) = self.reactor.as_mut() else {
                continue;
            };
            let signals = &mut self.signals;
            let command = self.options.command.as_mut();
            tokio::select! {
                ready = reactor.ring.readable() => {
                    ready?.clear_ready();
                    self.drain(cx)?;
                }
                _ = reactor.timer.tick() => self.sample(cx)?,
                _ = signals.interrupt.recv() => self.interrupt(),
                _ = signals.terminate.recv() => self.interrupt(),
                status = command_ended(command) => {
                    self.exit = Some(status?);
                    self.options.command = None;
                }
                ready = log_readable(reactor.kernel_log.as_ref()) => {
                    ready?;
                    self.read_kernel_log(cx)?;
                }
            }
        }
    }
}

/// Fills in cgroup paths for the ids the probe recorded.
pub fn resolve_paths(kill: &mut OomKill, resolver: &mut Resolver) {
    if let Some(cgroup) = kill.victim.cgroup_ref {
        kill.victim.cgroup = resolver.path(cgroup);
    }
    if let Some(trigger) = &mut kill.trigger
        && let Some(cgroup) = trigger.cgroup_ref
    {
        trigger.cgroup = resolver.path(cgroup);
    }
    if let Some(memcg) = &mut kill.oom_memcg
        && let Some(cgroup) = memcg.cgroup_ref
    {
        memcg.path = resolver.path(cgroup);
    }
}
