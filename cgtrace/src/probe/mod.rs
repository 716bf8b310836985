//! Loading, attaching and reading cgtrace's eBPF programs.
//!
//! [`Probe::load`] resolves the kernel layout from BTF, loads the object with
//! those values as the `OFFSETS` global, and attaches each feature with the
//! best variant the kernel allows, falling back and recording why. The ring
//! buffer is drained into [`Event`]s; every loss (ring buffer full, kernel
//! read failed, program skipped by recursion protection, undecodable record)
//! is counted and reported by [`Probe::stats`].

pub mod allowlist;
pub mod decode;
pub mod features;
pub mod floor;
mod heap;
pub mod log;
pub mod memlock;
pub mod offsets;
pub mod prog_info;
pub mod sampler;

use std::os::fd::{AsFd as _, BorrowedFd};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, ProgramError, tp_btf::BtfTracePointLinkId},
};
use cgtrace_common::stats::{LossCounter, ReadChain};
use serde::Serialize;

pub use crate::event::ProbeStats;
use crate::{
    btf::{Btf, BtfError},
    event::Event,
    system::Privileges,
};
use decode::{DecodeContext, decode};

/// The eBPF object built by `build.rs`, aligned for the ELF parser.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cgtrace"));

/// Default ring-buffer size. OOM records are 200 bytes; 256 KiB holds over a
/// thousand undelivered kills, far more than an OOM storm produces between
/// two reads.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "cgtrace needs CAP_BPF and CAP_PERFMON to load its eBPF programs and lacks {} (CAP_SYS_ADMIN would also do): run it with sudo, or give its user those capabilities (`setcap cap_bpf,cap_perfmon,cap_syslog+p` on the binary, or as ambient capabilities)",
        .missing.join(" and ")
    )]
    NotPrivileged { missing: Vec<&'static str> },
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("cannot read kernel BTF for aya")]
    AyaBtf(#[source] aya::BtfError),
    #[error("cannot load cgtrace's eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("cannot load cgtrace's eBPF object: {hint}")]
    LoadLimited {
        hint: String,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object has no {kind} `{name}` (build mismatch)")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("cannot attach {program} ({hook}): {reason}{verifier}")]
    Attach {
        program: &'static str,
        hook: &'static str,
        #[source]
        reason: AttachReason,
        /// The end of the verifier's log (the kernel's words), when it
        /// rejected the program.
        verifier: String,
    },
    #[error("eBPF map {name} cannot be used")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the probe log cannot be read")]
    Log {
        #[source]
        source: aya_log::Error,
    },
}

/// Why a program could not be attached.
#[derive(Debug)]
pub enum AttachReason {
    /// The hook's function is not in the kernel's BTF (inlined, renamed).
    NotInBtf { function: &'static str },
    /// The kernel or aya refused (boxed: aya's error is large).
    Refused(Box<ProgramError>),
}

impl std::fmt::Display for AttachReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInBtf { function } => {
                write!(f, "{function} is not in this kernel's BTF (inlined?)")
            }
            // The innermost cause says it best (the kernel's errno, the
            // verifier's verdict).
            Self::Refused(error) => {
                let mut current: &dyn std::error::Error = &**error;
                if let ProgramError::LoadError { io_error, .. } = &**error {
                    return write!(f, "{io_error}");
                }
                while let Some(source) = current.source() {
                    current = source;
                }
                write!(f, "{current}")
            }
        }
    }
}

impl std::error::Error for AttachReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NotInBtf { .. } => None,
            Self::Refused(error) => Some(&**error),
        }
    }
}

/// Which way to find the memcg whose limit an OOM kill hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OomVariant {
    /// fentry where the kernel allows it, else tp_btf with the limit walk.
    #[default]
    Auto,
    /// fentry/fexit on `out_of_memory()` plus tp_btf `mark_victim`; fail if refused.
    Fentry,
    /// tp_btf `mark_victim` only; the constraining memcg by limit walk.
    TpBtf,
}

/// Which features to attach. Each costs only while attached, so a view
/// attaches just what it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent on/off switches, one per feature"
)]
pub struct FeatureSet {
    pub oom: bool,
    /// Page-cache insertions and deletions (the hot path: up to a million
    /// events a second under churn).
    pub page_cache: bool,
    /// Reclaim begin/end pairs and shrink passes.
    pub reclaim: bool,
    /// Charge activity and refaults from the memcg stat tracepoints
    /// (6.14+; elsewhere the views fall back to memory.stat deltas).
    pub charges: bool,
    /// CFS bandwidth throttle spans.
    pub throttle: bool,
}

impl FeatureSet {
    /// Nothing but cgroup names (the floor's programs need no map).
    pub const NONE: Self = Self {
        oom: false,
        page_cache: false,
        reclaim: false,
        charges: false,
        throttle: false,
    };
    pub const OOM: Self = Self {
        oom: true,
        page_cache: false,
        reclaim: false,
        charges: false,
        throttle: false,
    };
    pub const ALL: Self = Self {
        oom: true,
        page_cache: true,
        reclaim: true,
        charges: true,
        throttle: true,
    };
    pub const CACHE_AND_RECLAIM: Self = Self {
        oom: false,
        page_cache: true,
        reclaim: true,
        charges: true,
        throttle: false,
    };
    pub const THROTTLE: Self = Self {
        oom: false,
        page_cache: false,
        reclaim: false,
        charges: false,
        throttle: true,
    };
}

/// What to attach.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub ring_buffer_bytes: u32,
    pub oom_variant: OomVariant,
    pub features: FeatureSet,
    /// Also count page cache per file (five more kernel reads per event).
    pub files: bool,
    pub throttle_variant: ThrottleVariant,
    /// Keep only the cgroups put in the allowlist ([`Probe::allow`]) and
    /// their descendants; everything else is dropped in the kernel.
    pub filter: bool,
    /// The programs log each failed read ([`Probe::take_log_lines`]); off,
    /// the verifier removes the log code.
    pub log: bool,
}

/// How to see CFS throttling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ThrottleVariant {
    /// fentry where the kernel allows it, else tp_btf sched_switch.
    #[default]
    Auto,
    /// fexit on throttle_cfs_rq and fentry on unthrottle_cfs_rq: the exact
    /// moments.
    Fentry,
    /// tp_btf sched_switch, watching each run queue's throttled flag.
    SchedSwitch,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            oom_variant: OomVariant::Auto,
            features: FeatureSet::OOM,
            files: false,
            throttle_variant: ThrottleVariant::Auto,
            filter: false,
            log: log::requested(),
        }
    }
}

/// How one feature was attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeatureStatus {
    pub feature: &'static str,
    /// The probe variant in use; `None` when the feature is unavailable.
    pub variant: Option<String>,
    /// Why this variant, or why none.
    pub detail: String,
    /// Not attached because the view was not asked for it (the kernel
    /// has it); `detail` says how to turn it on.
    #[serde(skip)]
    pub left_off: bool,
}

impl FeatureStatus {
    /// A feature this kernel has that the view leaves off unless asked.
    fn left_off(feature: &'static str, detail: &str) -> Self {
        Self {
            feature,
            variant: None,
            detail: detail.to_owned(),
            left_off: true,
        }
    }
}

impl std::fmt::Display for FeatureStatus {
    /// `oom: tp_btf mark_victim + limit walk (why)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.feature,
            self.variant
                .as_deref()
                .unwrap_or(if self.left_off { "off" } else { "unavailable" }),
            self.detail
        )
    }
}

/// Whether the sched_switch throttle program is in use and attached.
enum SwitchProgram {
    /// Not loaded (throttle off, or the fentry variant in use).
    NotUsed,
    Attached(BtfTracePointLinkId),
    /// Loaded, detached while no cgroup has a quota.
    Detached,
}

/// The loaded and attached programs.
pub struct Probe {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    loss: PerCpuArray<MapData, u64>,
    read_failures: PerCpuArray<MapData, u64>,
    /// The programs' log, when loaded with it.
    log: Option<log::ProbeLog>,
    features: Vec<FeatureStatus>,
    cache_maps: Option<(sampler::CacheMaps, sampler::CounterDiffer)>,
    /// The filter's allowlist, when loaded with one.
    allowlist: Option<allowlist::KernelAllowlist>,
    /// The sched_switch throttle program's attachment (see [`Probe::gate_throttle`]).
    throttle_switch: SwitchProgram,
    context: DecodeContext,
    decode_errors: u64,
    absent_members: Vec<String>,
}

impl Probe {
    /// Loads the eBPF object and attaches the OOM feature.
    pub fn load(options: &ProbeOptions) -> Result<Self, ProbeError> {
        let privileges = Privileges::current();
        if !privileges.can_trace() {
            return Err(ProbeError::NotPrivileged {
                missing: privileges.missing(),
            });
        }
        let heap = heap::LoadingHeap::prepare();
        let KernelBtf {
            layout,
            hooks,
            aya_btf,
            mut loader,
        } = KernelBtf::open()?;
        let switches = Switches::new(options, &layout);
        let mut ebpf = load_object(loader.btf(Some(&aya_btf)), &switches, &layout, options)?;

        let mut features = Vec::new();
        // Every view names cgroups created while it runs, and a filter
        // follows them; cgroup_mkdir and cgroup_rmdir run only when a cgroup
        // is created or removed.
        features.push(attach_group(&mut ebpf, &aya_btf, &hooks, &CGROUP_PROGRAMS));
        if options.features.oom {
            features.push(attach_oom(
                &mut ebpf,
                &aya_btf,
                options.oom_variant,
                &layout,
            )?);
        }
        if options.features.page_cache {
            features.push(attach_group(
                &mut ebpf,
                &aya_btf,
                &hooks,
                &PAGE_CACHE_PROGRAMS,
            ));
        }
        if options.features.reclaim {
            features.push(attach_group(&mut ebpf, &aya_btf, &hooks, &RECLAIM_PROGRAMS));
        }
        let charges = attach_charges(&mut ebpf, &aya_btf, &hooks, options.features);
        let charges_attached = charges.as_ref().is_some_and(|c| c.variant.is_some());
        features.extend(charges);
        let mut throttle_switch = SwitchProgram::NotUsed;
        if options.features.throttle {
            let (status, link) =
                attach_throttle(&mut ebpf, &aya_btf, &hooks, options.throttle_variant)?;
            features.push(status);
            if let Some(link) = link {
                throttle_switch = SwitchProgram::Attached(link);
            }
        }
        drop(aya_btf);
        drop(heap);
        let cache_maps =
            if options.features.page_cache || options.features.reclaim || charges_attached {
                Some((
                    sampler::CacheMaps::take(&mut ebpf, charges_attached, options.files)?,
                    sampler::CounterDiffer::new(),
                ))
            } else {
                None
            };

        let events = take_map(&mut ebpf, "EVENTS")?;
        let events = RingBuf::try_from(events).map_err(|source| ProbeError::Map {
            name: "EVENTS",
            source,
        })?;
        let loss = take_per_cpu_array(&mut ebpf, "LOSS")?;
        let read_failures = take_per_cpu_array(&mut ebpf, "READ_FAILURES")?;
        let log = if options.log {
            Some(log::ProbeLog::take(&mut ebpf).map_err(|source| ProbeError::Log { source })?)
        } else {
            None
        };
        let allowlist = if options.filter {
            Some(allowlist::KernelAllowlist::take(&mut ebpf)?)
        } else {
            None
        };
        Ok(Self {
            ebpf,
            events,
            loss,
            read_failures,
            log,
            features,
            cache_maps,
            allowlist,
            throttle_switch,
            context: DecodeContext {
                page_shift: layout.offsets.page_shift,
                oom_constraints: layout.oom_constraints,
            },
            decode_errors: 0,
            absent_members: layout.absent,
        })
    }

    /// How each feature was attached.
    #[must_use]
    pub fn features(&self) -> &[FeatureStatus] {
        &self.features
    }

    /// Optional kernel struct members this kernel lacks (their fields are unknown).
    #[must_use]
    pub fn absent_members(&self) -> &[String] {
        &self.absent_members
    }

    /// What the page-cache and reclaim counters moved since the previous
    /// call (since attach, for the first), when those features are attached.
    pub fn sample_counters(&mut self) -> Option<crate::event::ProbeCounters> {
        self.cache_maps
            .as_mut()
            .map(|(maps, differ)| differ.update(&maps.sample()))
    }

    /// Deletes the counter maps' entries of removed cgroups (after their
    /// last counts were sampled), so churn fills none of them.
    pub fn forget_cgroups(&mut self, cgroups: &[cgtrace_common::cgroup::CgroupRef]) {
        if let Some((maps, differ)) = &mut self.cache_maps {
            let keys = differ.keys_of(cgroups);
            maps.remove(&keys);
        }
    }

    /// The ring buffer's descriptor, readable when records are waiting.
    #[must_use]
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Waits until the ring buffer has records or `timeout` passes (for
    /// the demo's scenarios and the tests, which read the probe directly).
    pub fn wait(&self, timeout: std::time::Duration) -> std::io::Result<()> {
        let mut poll = [rustix::event::PollFd::new(
            &self.events,
            rustix::event::PollFlags::IN,
        )];
        let timeout =
            rustix::event::Timespec::try_from(timeout).unwrap_or(rustix::event::Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
        match rustix::event::poll(&mut poll, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Decodes every record waiting in the ring buffer.
    pub fn drain(&mut self, mut on_event: impl FnMut(Event)) {
        while let Some(item) = self.events.next() {
            match decode(&item, &self.context) {
                Ok(event) => on_event(event),
                Err(_) => self.decode_errors += 1,
            }
        }
    }

    /// Keeps events about these cgroups (and, as they are created, their
    /// descendants). Returns how many were new. A probe loaded without a
    /// filter keeps everything already, and ignores this.
    pub fn allow(
        &mut self,
        cgroups: &[cgtrace_common::cgroup::CgroupRef],
    ) -> Result<usize, ProbeError> {
        match &mut self.allowlist {
            Some(allowlist) => allowlist.add(cgroups),
            None => Ok(0),
        }
    }

    /// Failed reads of kernel fields since attach, by the chain that
    /// failed; chains that never failed are left out.
    #[must_use]
    pub fn read_failures_by_chain(&self) -> Vec<(ReadChain, u64)> {
        ReadChain::ALL
            .into_iter()
            .filter_map(|chain| {
                let failed: u64 = self
                    .read_failures
                    .get(&(chain as u32), 0)
                    .map_or(0, |values| values.iter().sum());
                (failed > 0).then_some((chain, failed))
            })
            .collect()
    }

    /// Reads the programs' log so far (kept for [`Probe::take_log_lines`]).
    pub fn flush_log(&mut self) {
        if let Some(log) = &mut self.log {
            log.flush();
        }
    }

    /// What the programs logged since the last call (nothing unless loaded
    /// with [`ProbeOptions::log`]).
    pub fn take_log_lines(&mut self) -> Vec<String> {
        self.log
            .as_mut()
            .map(log::ProbeLog::take_lines)
            .unwrap_or_default()
    }

    /// Current loss and delivery counters.
    #[must_use]
    pub fn stats(&self) -> ProbeStats {
        let sum = |counter: LossCounter| -> u64 {
            self.loss
                .get(&(counter as u32), 0)
                .map_or(0, |values| values.iter().sum())
        };
        let recursion_misses = self
            .program_counters()
            .iter()
            .map(|(_, counters)| counters.recursion_misses)
            .sum();
        ProbeStats {
            records: sum(LossCounter::Submitted),
            ring_buffer_drops: sum(LossCounter::RingBufFull),
            read_failures: self.read_failures_by_chain().iter().map(|(_, n)| n).sum(),
            map_full: sum(LossCounter::MapFull),
            recursion_misses,
            decode_errors: self.decode_errors,
        }
    }
}

impl Probe {
    /// Attaches or detaches the sched_switch throttle program. It runs on
    /// every context switch, so a view detaches it while no cgroup has a CFS
    /// quota (nothing can be throttled) and attaches it again when one has.
    /// Returns the new state when it changed. The fentry variant runs only
    /// when something is throttled and is never gated.
    pub fn gate_throttle(&mut self, wanted: bool) -> Result<Option<bool>, ProbeError> {
        let state = std::mem::replace(&mut self.throttle_switch, SwitchProgram::NotUsed);
        let fail = |e: ProgramError| attach_error("throttle_switch", "tp_btf sched_switch", e);
        let (state, changed) = match (wanted, state) {
            (true, SwitchProgram::Detached) => {
                let program: &mut BtfTracePoint = program(&mut self.ebpf, "throttle_switch")?;
                (
                    SwitchProgram::Attached(program.attach().map_err(fail)?),
                    Some(true),
                )
            }
            (false, SwitchProgram::Attached(id)) => {
                let program: &mut BtfTracePoint = program(&mut self.ebpf, "throttle_switch")?;
                program.detach(id).map_err(fail)?;
                // A span open now would never see its end: forget it, so a
                // later attach does not report it with a bogus duration.
                self.forget_open_spans();
                (SwitchProgram::Detached, Some(false))
            }
            (_, unchanged) => (unchanged, None),
        };
        self.throttle_switch = state;
        Ok(changed)
    }

    fn forget_open_spans(&mut self) {
        if let Some(map) = self.ebpf.map_mut("THROTTLED")
            && let Ok(mut open) =
                aya::maps::HashMap::<_, u64, cgtrace_common::throttle::ThrottleStart>::try_from(map)
        {
            let keys: Vec<u64> = open.keys().filter_map(Result::ok).collect();
            for key in keys {
                let _ = open.remove(&key);
            }
        }
        if let Some(map) = self.ebpf.map_mut("OPEN")
            && let Ok(mut open) =
                PerCpuArray::<_, cgtrace_common::throttle::OpenRunQueues>::try_from(map)
            && let Ok(cpus) = aya::util::nr_cpus()
            && let Ok(empty) = aya::maps::PerCpuValues::try_from(vec![
                cgtrace_common::throttle::OpenRunQueues::default();
                cpus
            ])
        {
            let _ = open.set(0, empty, 0);
        }
    }

    /// Each loaded program's name and a descriptor of its own, to read its
    /// counters from elsewhere (the metrics endpoint, on each scrape).
    #[must_use]
    pub fn program_fds(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let fd = program.fd().ok()?.as_fd().try_clone_to_owned().ok()?;
                Some((name.to_owned(), fd))
            })
            .collect()
    }

    /// Each loaded program's kernel counters, by program name.
    #[must_use]
    pub fn program_counters(&self) -> Vec<(String, prog_info::ProgramCounters)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let fd = program.fd().ok()?;
                let counters = prog_info::counters(fd.as_fd()).ok()?;
                Some((name.to_owned(), counters))
            })
            .collect()
    }
}

/// Turns on the kernel's BPF run-time statistics while it lives.
///
/// Held as the descriptor `BPF_ENABLE_STATS` returns, not by writing the
/// `kernel.bpf_stats_enabled` sysctl: the kernel counts the holders and
/// turns the statistics off when the last descriptor closes, even when the
/// process is killed, so a SIGKILL cannot leave every BPF program on the
/// host paying for them. `None` inside when the kernel refuses (before
/// 5.8, or without privilege): the run times then read zero.
pub struct BpfStatsEnabled {
    holder: Option<std::os::fd::OwnedFd>,
}

impl BpfStatsEnabled {
    #[must_use]
    pub fn enable() -> Self {
        Self {
            holder: aya::sys::enable_stats(aya::sys::Stats::RunTime).ok(),
        }
    }

    /// Whether the kernel is counting for this holder.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.holder.is_some()
    }
}

/// What loading needs of the kernel's BTF: cgtrace's index of it, aya's
/// parse of the same bytes, and aya's loader.
/// What loading needs of the kernel's BTF: the layout and hooks cgtrace
/// read from it, aya's parse of it, and aya's loader.
struct KernelBtf {
    layout: offsets::KernelLayout,
    hooks: KernelHooks,
    aya_btf: aya::Btf,
    loader: EbpfLoader<'static>,
}

impl KernelBtf {
    /// Reads the kernel's BTF once for two parses, cgtrace's index and
    /// aya's. `EbpfLoader::new` parses the file a third time, for a copy
    /// cgtrace cannot use. Each parse is dropped before the next is made,
    /// cgtrace's index as soon as the layout and hooks are read from it, so
    /// that at most one parsed copy is alive at a time: they are most of
    /// the collector's peak memory.
    fn open() -> Result<Self, ProbeError> {
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        let btf = Btf::from_sys_fs()?;
        let layout = offsets::resolve(&btf)?;
        let hooks = KernelHooks::of(&btf);
        let raw = btf.into_raw();
        let aya_btf =
            aya::Btf::parse(&raw, aya::Endianness::default()).map_err(ProbeError::AyaBtf)?;
        Ok(Self {
            layout,
            hooks,
            aya_btf,
            loader,
        })
    }
}

/// Which of the hooks cgtrace attaches this kernel has, read from BTF
/// before cgtrace's index of it is dropped.
struct KernelHooks {
    tracepoints: Vec<&'static str>,
    functions: Vec<&'static str>,
}

impl KernelHooks {
    /// Every BTF tracepoint and fentry function cgtrace may attach.
    fn wanted_tracepoints() -> impl Iterator<Item = &'static str> {
        [
            &CGROUP_PROGRAMS,
            &PAGE_CACHE_PROGRAMS,
            &RECLAIM_PROGRAMS,
            &CHARGE_PROGRAMS,
        ]
        .into_iter()
        .flat_map(|group| group.programs.iter().map(|(_, tracepoint)| *tracepoint))
        .chain(floor::FLOOR_PROGRAMS.iter().map(|f| f.tracepoint))
    }

    const FUNCTIONS: [&'static str; 2] = ["throttle_cfs_rq", "unthrottle_cfs_rq"];

    fn of(btf: &Btf) -> Self {
        Self {
            tracepoints: Self::wanted_tracepoints()
                .filter(|name| btf.has_btf_tracepoint(name))
                .collect(),
            functions: Self::FUNCTIONS
                .into_iter()
                .filter(|name| btf.has(crate::btf::Kind::Func, name))
                .collect(),
        }
    }

    /// Whether the kernel has BTF tracepoint `name` (one of those cgtrace
    /// attaches).
    fn has_btf_tracepoint(&self, name: &str) -> bool {
        debug_assert!(
            Self::wanted_tracepoints().any(|wanted| wanted == name),
            "{name} is not among the tracepoints looked up"
        );
        self.tracepoints.contains(&name)
    }

    /// Whether the kernel has function `name` (for fentry).
    fn has_function(&self, name: &str) -> bool {
        debug_assert!(Self::FUNCTIONS.contains(&name), "{name} is not looked up");
        self.functions.contains(&name)
    }
}

/// A feature made of BTF tracepoints only: its programs and hooks.
struct TpBtfGroup {
    feature: &'static str,
    variant: &'static str,
    /// `(program name, tracepoint)`.
    programs: &'static [(&'static str, &'static str)],
}

const PAGE_CACHE_PROGRAMS: TpBtfGroup = TpBtfGroup {
    feature: "page cache",
    variant: "tp_btf filemap add/delete",
    programs: &[
        ("cache_add", "mm_filemap_add_to_page_cache"),
        ("cache_delete", "mm_filemap_delete_from_page_cache"),
    ],
};

const CGROUP_PROGRAMS: TpBtfGroup = TpBtfGroup {
    feature: "cgroup names",
    variant: "tp_btf cgroup_mkdir/rmdir",
    programs: &[
        ("cgroup_mkdir", "cgroup_mkdir"),
        ("cgroup_rmdir", "cgroup_rmdir"),
    ],
};

const RECLAIM_PROGRAMS: TpBtfGroup = TpBtfGroup {
    feature: "reclaim",
    variant: "tp_btf mm_vmscan_*",
    programs: &[
        ("memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_begin"),
        ("memcg_reclaim_end", "mm_vmscan_memcg_reclaim_end"),
        ("direct_reclaim_begin", "mm_vmscan_direct_reclaim_begin"),
        ("direct_reclaim_end", "mm_vmscan_direct_reclaim_end"),
        ("shrink_inactive", "mm_vmscan_lru_shrink_inactive"),
    ],
};

const CHARGE_PROGRAMS: TpBtfGroup = TpBtfGroup {
    feature: "memcg stat tracepoints",
    variant: "tp_btf mod_memcg_(lruvec_)state",
    programs: &[
        ("memcg_state", "mod_memcg_state"),
        ("memcg_lruvec_state", "mod_memcg_lruvec_state"),
    ],
};

/// The memcg stat tracepoints, where `features` asks for them. A view of
/// the page cache that leaves them off says so, and why: they run about
/// four times per page-cache page.
fn attach_charges(
    ebpf: &mut Ebpf,
    aya_btf: &aya::Btf,
    hooks: &KernelHooks,
    features: FeatureSet,
) -> Option<FeatureStatus> {
    let available = CHARGE_PROGRAMS
        .programs
        .iter()
        .any(|(_, tracepoint)| hooks.has_btf_tracepoint(tracepoint));
    // Where the kernel lacks them, attaching finds none and says why.
    if features.charges || (features.page_cache && !available) {
        return Some(attach_group(ebpf, aya_btf, hooks, &CHARGE_PROGRAMS));
    }
    features.page_cache.then(|| {
        FeatureStatus::left_off(
            CHARGE_PROGRAMS.feature,
            "charges and refaults come from memory.stat deltas; --charges attaches the \
             tracepoints, for each charge and uncharge as it happens, at about four more \
             program runs per page-cache page",
        )
    })
}

/// Attaches every program of a group whose tracepoint this kernel has. A
/// missing or refused hook degrades that part of the feature, and the
/// status says which.
fn attach_group(
    ebpf: &mut Ebpf,
    aya_btf: &aya::Btf,
    hooks: &KernelHooks,
    group: &TpBtfGroup,
) -> FeatureStatus {
    let mut missing = Vec::new();
    let mut attached = 0;
    for (name, tracepoint) in group.programs {
        if !hooks.has_btf_tracepoint(tracepoint) {
            missing.push(format!("{tracepoint} (not in this kernel)"));
            continue;
        }
        let result = program::<BtfTracePoint>(ebpf, name).and_then(|p| {
            p.load(tracepoint, aya_btf)
                .and_then(|()| p.attach().map(drop))
                .map_err(|e| attach_error(name, tracepoint, e))
        });
        match result {
            Ok(()) => attached += 1,
            Err(e) => missing.push(e.to_string()),
        }
    }
    if attached == 0 && group.feature == CHARGE_PROGRAMS.feature {
        missing.push("charges and refaults come from memory.stat deltas instead".to_owned());
    }
    FeatureStatus {
        feature: group.feature,
        variant: (attached > 0).then(|| group.variant.to_owned()),
        detail: if missing.is_empty() {
            format!(
                "{attached} tracepoint{} attached",
                if attached == 1 { "" } else { "s" }
            )
        } else {
            format!("{attached} attached; missing: {}", missing.join("; "))
        },
        left_off: false,
    }
}

pub(crate) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name)
        .ok_or(ProbeError::Missing { kind: "map", name })
}

/// The values of the object's read-only switches: the verifier treats them
/// as constants and removes the code they turn off.
struct Switches {
    /// The offsets the programs load straight from BTF-typed pointers.
    direct: cgtrace_common::offsets::DirectOffsets,
    files: u32,
    filter: u32,
    task_se_parent: u32,
    /// 1 where `mark_victim` carries a pid, not the task.
    mark_victim_pid: u32,
    log_level: u8,
}

impl Switches {
    fn new(options: &ProbeOptions, layout: &offsets::KernelLayout) -> Self {
        Self {
            direct: cgtrace_common::offsets::DirectOffsets {
                current_task_btf: u32::from(layout.current_task_btf),
                memcg_pointer: u32::from(layout.memcg_pointer),
                objcg_memcg: layout
                    .objcg_memcg
                    .unwrap_or(cgtrace_common::offsets::ABSENT),
                ..cgtrace_common::offsets::DirectOffsets::of(&layout.offsets)
            },
            files: u32::from(options.files),
            filter: u32::from(options.filter),
            task_se_parent: layout.offsets.task_se_parent,
            mark_victim_pid: u32::from(layout.mark_victim_pid),
            log_level: log::level(options.log),
        }
    }
}

/// Loads the eBPF object with this kernel's layout and the switches in its
/// globals.
fn load_object<'a>(
    loader: &mut EbpfLoader<'a>,
    switches: &'a Switches,
    layout: &'a offsets::KernelLayout,
    options: &ProbeOptions,
) -> Result<Ebpf, ProbeError> {
    let memlock = memlock::Memlock::prepare();
    cap_maps_for_tests(loader);
    shrink_unused_maps(loader, options);
    loader
        .override_global("OFFSETS", &layout.offsets, true)
        .override_global("DIRECT", &switches.direct, true)
        .override_global("FILES_ENABLED", &switches.files, true)
        .override_global("FILTER_ENABLED", &switches.filter, true)
        .override_global("TASK_SE_PARENT", &switches.task_se_parent, true)
        .override_global("MARK_VICTIM_PID", &switches.mark_victim_pid, true)
        .override_global(aya_log::LEVEL, &switches.log_level, true)
        .map_max_entries("EVENTS", options.ring_buffer_bytes)
        // Without the log nothing is written to its ring buffer: one
        // page of kernel memory instead of 1 MiB.
        .map_max_entries(LOG_MAP, if options.log { 1 << 20 } else { 4096 })
        .load(EBPF_OBJECT)
        .map_err(|source| match memlock.hint() {
            Some(hint) => ProbeError::LoadLimited {
                hint,
                source: Box::new(source),
            },
            None => ProbeError::Load(source),
        })
}

/// Gives the maps of features left off one entry instead of thousands:
/// the kernel allocates a map's entries when it is created (tens of
/// megabytes in all), which is most of what creating the maps costs at
/// start-up, and kernel memory held for nothing.
fn shrink_unused_maps(loader: &mut EbpfLoader<'_>, options: &ProbeOptions) {
    let features = options.features;
    let unused = [
        ("CACHE", !features.page_cache),
        ("FILES", !(features.page_cache && options.files)),
        ("CHARGES", !features.charges),
        ("RECLAIMING", !features.reclaim),
        ("STALLS", !features.reclaim),
        ("THROTTLED", !features.throttle),
        ("ALLOWED", !options.filter),
        ("MEMCG_VERDICTS", !options.filter),
    ];
    for (map, _) in unused.into_iter().filter(|(_, unused)| *unused) {
        loader.map_max_entries(map, 1);
    }
}

/// The hash maps whose inserts can fail when full (the LRU maps evict
/// instead), each counted as map-full by the program that tried.
const FILLABLE_MAPS: [&str; 6] = [
    "CHARGES",
    "ALLOWED",
    "OOM_IN_PROGRESS",
    "RECLAIMING",
    "STALLS",
    "THROTTLED",
];

/// Fault injection for the tests: `CGTRACE_MAP_ENTRIES=N` gives every map
/// that can fill N entries, so a test can fill them all with a few
/// workloads and see that cgtrace goes on, counts what it could not keep,
/// and says so.
fn cap_maps_for_tests(loader: &mut EbpfLoader<'_>) {
    let Some(entries) = std::env::var("CGTRACE_MAP_ENTRIES")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n > 0)
    else {
        return;
    };
    crate::note!("cgtrace: CGTRACE_MAP_ENTRIES={entries}: maps that can fill are capped (a test)");
    for map in FILLABLE_MAPS {
        loader.map_max_entries(map, entries);
    }
}

/// A per-CPU array of counters, taken out of the object.
fn take_per_cpu_array(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<MapData, u64>, ProbeError> {
    PerCpuArray::try_from(take_map(ebpf, name)?).map_err(|source| ProbeError::Map { name, source })
}

/// The ring buffer aya-log writes to.
const LOG_MAP: &str = "AYA_LOGS";

/// Attaches the throttle feature: fexit on `throttle_cfs_rq` and fentry on
/// `unthrottle_cfs_rq` where allowed (and wanted), else tp_btf
/// `sched_switch`, whose link is returned so it can be gated.
fn attach_throttle(
    ebpf: &mut Ebpf,
    aya_btf: &aya::Btf,
    hooks: &KernelHooks,
    variant: ThrottleVariant,
) -> Result<(FeatureStatus, Option<BtfTracePointLinkId>), ProbeError> {
    let mut refused = None;
    if variant != ThrottleVariant::SchedSwitch {
        let result = [
            ("throttle_exit", "throttle_cfs_rq"),
            ("unthrottle_enter", "unthrottle_cfs_rq"),
        ]
        .into_iter()
        .try_for_each(|(name, function)| {
            if !hooks.has_function(function) {
                return Err(ProbeError::Attach {
                    program: name,
                    hook: "fentry",
                    reason: AttachReason::NotInBtf { function },
                    verifier: String::new(),
                });
            }
            if name == "throttle_exit" {
                let program: &mut FExit = program(ebpf, name)?;
                program
                    .load(function, aya_btf)
                    .and_then(|()| program.attach().map(drop))
                    .map_err(|e| attach_error(name, "fexit", e))
            } else {
                let program: &mut FEntry = program(ebpf, name)?;
                program
                    .load(function, aya_btf)
                    .and_then(|()| program.attach().map(drop))
                    .map_err(|e| attach_error(name, "fentry", e))
            }
        });
        match result {
            Ok(()) => {
                let status = FeatureStatus {
                    feature: "throttle",
                    variant: Some("fexit throttle_cfs_rq + fentry unthrottle_cfs_rq".to_owned()),
                    detail: "exact throttle and unthrottle moments".to_owned(),
                    left_off: false,
                };
                return Ok((status, None));
            }
            Err(e) if variant == ThrottleVariant::Auto => {
                if let Ok(p) = program::<FExit>(ebpf, "throttle_exit") {
                    let _ = p.unload();
                }
                if let Ok(p) = program::<FEntry>(ebpf, "unthrottle_enter") {
                    let _ = p.unload();
                }
                refused = Some(match e {
                    ProbeError::Attach { reason, .. } => reason.to_string(),
                    other => other.to_string(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    let program: &mut BtfTracePoint = program(ebpf, "throttle_switch")?;
    let link = program
        .load("sched_switch", aya_btf)
        .and_then(|()| program.attach())
        .map_err(|e| attach_error("throttle_switch", "tp_btf sched_switch", e))?;
    let status = FeatureStatus {
        feature: "throttle",
        variant: Some("tp_btf sched_switch".to_owned()),
        detail: match refused {
            Some(reason) => format!(
                "fentry on throttle_cfs_rq refused: {reason}; spans start and end at the next context switch"
            ),
            None => "requested; spans start and end at the next context switch".to_owned(),
        },
        left_off: false,
    };
    Ok((status, Some(link)))
}

/// Attaches the OOM feature: fentry/fexit on `out_of_memory()` when allowed
/// (and wanted), then tp_btf `mark_victim`.
fn attach_oom(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    variant: OomVariant,
    layout: &offsets::KernelLayout,
) -> Result<FeatureStatus, ProbeError> {
    let mut fentry_refused = None;
    if variant != OomVariant::TpBtf {
        match attach_oom_fentry(ebpf, btf) {
            Ok(()) => {}
            Err(ProbeError::Attach { reason, .. }) if variant == OomVariant::Auto => {
                fentry_refused = Some(reason.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    let program: &mut BtfTracePoint = program(ebpf, "mark_victim")?;
    program
        .load("mark_victim", btf)
        .and_then(|()| program.attach().map(drop))
        .map_err(|e| attach_error("mark_victim", "tp_btf oom/mark_victim", e))?;
    let mut detail = match (variant, &fentry_refused) {
        (OomVariant::TpBtf, _) => {
            "requested; constraining memcg found by limit walk (lowest memcg at its limit)"
                .to_owned()
        }
        (_, Some(reason)) => format!(
            "fentry on out_of_memory() refused: {reason}; constraining memcg found by limit walk"
        ),
        (_, None) => "constraining memcg read from oom_control".to_owned(),
    };
    if layout.mark_victim_pid {
        detail.push_str(if fentry_refused.is_some() || variant == OomVariant::TpBtf {
            "; this kernel's mark_victim carries only the victim's pid, and without fentry the rest of the victim is unknown (the kernel log's line has it)"
        } else {
            "; this kernel's mark_victim carries only the victim's pid: the victim is the task out_of_memory() chose"
        });
    }
    let variant = if fentry_refused.is_some() || variant == OomVariant::TpBtf {
        "tp_btf mark_victim + limit walk"
    } else {
        "fentry out_of_memory + tp_btf mark_victim"
    };
    Ok(FeatureStatus {
        feature: "oom",
        variant: Some(variant.to_owned()),
        detail,
        left_off: false,
    })
}

fn attach_oom_fentry(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), ProbeError> {
    let enter: &mut FEntry = program(ebpf, "oom_enter")?;
    enter
        .load("out_of_memory", btf)
        .and_then(|()| enter.attach().map(drop))
        .map_err(|e| attach_error("oom_enter", "fentry out_of_memory", e))?;
    let exit: &mut FExit = program(ebpf, "oom_exit")?;
    let result = exit
        .load("out_of_memory", btf)
        .and_then(|()| exit.attach().map(drop))
        .map_err(|e| attach_error("oom_exit", "fexit out_of_memory", e));
    if result.is_err() {
        // Without fexit the in-progress map would keep stale entries.
        let enter: &mut FEntry = program(ebpf, "oom_enter")?;
        let _ = enter.unload();
    }
    result
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(ProbeError::Missing {
            kind: "program",
            name,
        })
}

/// A load or attach failure as the user should see it: the kernel's errno,
/// plus the last lines of the verifier's log when it rejected the program.
fn attach_error(program: &'static str, hook: &'static str, error: ProgramError) -> ProbeError {
    let log = match &error {
        ProgramError::LoadError { verifier_log, .. } => verifier_log.to_string(),
        _ => String::new(),
    };
    let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let verifier = if tail.is_empty() {
        String::new()
    } else {
        let start = tail.len().saturating_sub(6);
        format!("; the verifier said:\n  {}", tail[start..].join("\n  "))
    };
    ProbeError::Attach {
        program,
        hook,
        reason: AttachReason::Refused(Box::new(error)),
        verifier,
    }
}
