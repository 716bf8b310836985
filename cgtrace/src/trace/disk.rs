//! Format 2's records: every [`Event`] as a dedicated on-disk struct,
//! serialized with postcard (varint integers), so a change to an in-memory
//! type cannot change the file format unnoticed: the structs here change
//! only on purpose, and the round-trip tests pin them.
//!
//! A record is a kind byte, the body's length (varint) and the body; a
//! reader skips kinds it does not know by their length, so newer writers
//! can add kinds. Enums are stored as the codes listed in [`super::codes`].

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CHARGE_KINDS, CacheReason, ChargeKind, ReclaimKind, STALL_BUCKETS, StallStats},
};
use serde::{Deserialize, Serialize};

use super::{
    codec::Encoder,
    codes::{
        CONSTRAINTS, FOUND_BY, LIMIT_KINDS, SOURCES, VALUES_FROM, VERSIONS, code_of, from_code,
    },
};
use crate::event::{
    Bandwidth, CgroupNamed, Charge, CpuSample, CpuStat, Event, FileFlow, Flow, Health,
    MemoryEvents, MemorySample, OomKill, OomMemcg, Pressure, PressureLine, PressureSample,
    ProbeCounters, ProbeStats, Stall, Task, ThrottleSpan, Tick, VictimMemory, WorkloadNames,
};

/// A record body that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskError {
    #[error("record body: {0}")]
    Body(#[from] postcard::Error),
    #[error("a value out of range in a record of kind {kind}")]
    OutOfRange { kind: u8 },
}

const KIND_CGROUP_CREATED: u8 = 1;
const KIND_CGROUP_NAMED: u8 = 2;
const KIND_WORKLOAD_NAMED: u8 = 3;
const KIND_OOM_KILL: u8 = 4;
const KIND_THROTTLE_SPAN: u8 = 5;
const KIND_COUNTERS: u8 = 6;
const KIND_MEMORY: u8 = 7;
const KIND_CPU: u8 = 8;
const KIND_PRESSURE: u8 = 9;
const KIND_HEALTH: u8 = 10;
const KIND_TICK: u8 = 11;
const KIND_CGROUP_REMOVED: u8 = 12;

/// Appends `event` as one record (kind, length, body) to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    thread_local! {
        /// The body of the record being encoded: its length goes before it,
        /// so it is serialized apart first. Kept, so encoding allocates
        /// nothing once it has grown to the largest body.
        static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BODY.with_borrow_mut(|body| {
        body.clear();
        let kind = match event {
            Event::CgroupCreated(named) => {
                serialize(KIND_CGROUP_CREATED, &DiskNamed::from(named), body)
            }
            Event::CgroupNamed(named) => {
                serialize(KIND_CGROUP_NAMED, &DiskNamed::from(named), body)
            }
            Event::WorkloadNamed(names) => {
                serialize(KIND_WORKLOAD_NAMED, &DiskWorkload::from(names), body)
            }
            Event::OomKill(kill) => serialize(KIND_OOM_KILL, &DiskOomKill::from(&**kill), body),
            Event::ThrottleSpan(span) => serialize(KIND_THROTTLE_SPAN, &DiskSpan::from(span), body),
            Event::Counters(counters) => {
                serialize(KIND_COUNTERS, &DiskCounters::from(&**counters), body)
            }
            Event::Memory(sample) => serialize(KIND_MEMORY, &DiskMemory::from(&**sample), body),
            Event::Cpu(sample) => serialize(KIND_CPU, &DiskCpu::from(sample), body),
            Event::Pressure(sample) => {
                serialize(KIND_PRESSURE, &DiskPressureSample::from(&**sample), body)
            }
            Event::Health(health) => serialize(KIND_HEALTH, &DiskHealth::from(health), body),
            Event::Tick(tick) => serialize(KIND_TICK, &(tick.start_ns, tick.end_ns), body),
            Event::CgroupRemoved(removed) => serialize(
                KIND_CGROUP_REMOVED,
                &(removed.at_ns, DiskCgroup::from(removed.cgroup)),
                body,
            ),
        };
        let mut prefix = Encoder::default();
        prefix.u8(kind);
        prefix.u64(body.len() as u64);
        out.extend_from_slice(&prefix.bytes);
        out.extend_from_slice(body);
    });
}

/// Serializes `value` into `body` (empty); returns `kind`.
fn serialize<T: Serialize>(kind: u8, value: &T, body: &mut Vec<u8>) -> u8 {
    // Serializing these plain structs into a Vec cannot fail.
    if let Ok(filled) = postcard::to_extend(value, std::mem::take(body)) {
        *body = filled;
    }
    kind
}

/// Decodes one record body of `kind`; `Ok(None)` for a kind this reader
/// does not know.
pub fn decode(kind: u8, body: &[u8]) -> Result<Option<Event>, DiskError> {
    let range = || DiskError::OutOfRange { kind };
    let event = match kind {
        KIND_CGROUP_CREATED => Event::CgroupCreated(from_slice::<DiskNamed>(body)?.into()),
        KIND_CGROUP_NAMED => Event::CgroupNamed(from_slice::<DiskNamed>(body)?.into()),
        KIND_WORKLOAD_NAMED => Event::WorkloadNamed(from_slice::<DiskWorkload>(body)?.into()),
        KIND_OOM_KILL => Event::OomKill(Box::new(
            from_slice::<DiskOomKill>(body)?
                .into_event()
                .ok_or_else(range)?,
        )),
        KIND_THROTTLE_SPAN => Event::ThrottleSpan(from_slice::<DiskSpan>(body)?.into()),
        KIND_COUNTERS => Event::Counters(Box::new(
            from_slice::<DiskCounters>(body)?
                .into_event()
                .ok_or_else(range)?,
        )),
        KIND_MEMORY => Event::Memory(Box::new(
            from_slice::<DiskMemory>(body)?
                .into_event()
                .ok_or_else(range)?,
        )),
        KIND_CPU => Event::Cpu(from_slice::<DiskCpu>(body)?.into()),
        KIND_PRESSURE => Event::Pressure(Box::new(from_slice::<DiskPressureSample>(body)?.into())),
        KIND_HEALTH => Event::Health(from_slice::<DiskHealth>(body)?.into()),
        KIND_TICK => {
            let (start_ns, end_ns) = from_slice::<(u64, u64)>(body)?;
            Event::Tick(Tick { start_ns, end_ns })
        }
        KIND_CGROUP_REMOVED => {
            let (at_ns, cgroup) = from_slice::<(u64, DiskCgroup)>(body)?;
            Event::CgroupRemoved(crate::event::CgroupRemoved {
                at_ns,
                cgroup: cgroup.into(),
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}

fn from_slice<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DiskError> {
    Ok(postcard::from_bytes(body)?)
}

#[derive(Serialize, Deserialize)]
struct DiskCgroup {
    hierarchy: u32,
    id: u64,
    level: u32,
}

impl From<CgroupRef> for DiskCgroup {
    fn from(c: CgroupRef) -> Self {
        Self {
            hierarchy: c.hierarchy,
            id: c.id,
            level: c.level,
        }
    }
}

impl From<DiskCgroup> for CgroupRef {
    fn from(c: DiskCgroup) -> Self {
        Self {
            id: c.id,
            hierarchy: c.hierarchy,
            level: c.level,
        }
    }
}

fn disk(c: Option<CgroupRef>) -> Option<DiskCgroup> {
    c.map(DiskCgroup::from)
}

fn memory_ref(c: Option<DiskCgroup>) -> Option<CgroupRef> {
    c.map(CgroupRef::from)
}

#[derive(Serialize, Deserialize)]
struct DiskNamed {
    cgroup: DiskCgroup,
    path: String,
}

impl From<&CgroupNamed> for DiskNamed {
    fn from(n: &CgroupNamed) -> Self {
        Self {
            cgroup: n.cgroup.into(),
            path: n.path.clone(),
        }
    }
}

impl From<DiskNamed> for CgroupNamed {
    fn from(n: DiskNamed) -> Self {
        Self {
            cgroup: n.cgroup.into(),
            path: n.path,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DiskWorkload {
    path: String,
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
}

impl From<&WorkloadNames> for DiskWorkload {
    fn from(w: &WorkloadNames) -> Self {
        Self {
            path: w.path.clone(),
            namespace: w.namespace.clone(),
            pod: w.pod.clone(),
            container: w.container.clone(),
        }
    }
}

impl From<DiskWorkload> for WorkloadNames {
    fn from(w: DiskWorkload) -> Self {
        Self {
            path: w.path,
            namespace: w.namespace,
            pod: w.pod,
            container: w.container,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DiskTask {
    pid: u32,
    tid: Option<u32>,
    comm: String,
    uid: Option<u32>,
    cgroup_path: Option<String>,
    cgroup: Option<DiskCgroup>,
}

impl From<&Task> for DiskTask {
    fn from(t: &Task) -> Self {
        Self {
            pid: t.pid,
            tid: t.tid,
            comm: t.comm.clone(),
            uid: t.uid,
            cgroup_path: t.cgroup.clone(),
            cgroup: disk(t.cgroup_ref),
        }
    }
}

impl From<DiskTask> for Task {
    fn from(t: DiskTask) -> Self {
        Self {
            pid: t.pid,
            tid: t.tid,
            comm: t.comm,
            uid: t.uid,
            cgroup: t.cgroup_path,
            cgroup_ref: memory_ref(t.cgroup),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DiskOomMemcg {
    path: Option<String>,
    id: Option<u64>,
    limit_bytes: Option<u64>,
    usage_bytes: Option<u64>,
    limit_kind: u8,
    values_from: u8,
    cgroup: Option<DiskCgroup>,
}

#[derive(Serialize, Deserialize)]
struct DiskOomKill {
    monotonic_ns: u64,
    source: u8,
    victim: DiskTask,
    trigger: Option<DiskTask>,
    constraint: u8,
    constraint_found_by: u8,
    oom_memcg: Option<DiskOomMemcg>,
    total_vm_bytes: Option<u64>,
    anon_rss_bytes: Option<u64>,
    file_rss_bytes: Option<u64>,
    shmem_rss_bytes: Option<u64>,
    pgtables_bytes: Option<u64>,
    oom_score_adj: Option<i16>,
    group_kill: Option<bool>,
    victim_memcg_oom_kills: Option<u64>,
    counted_as_kill: Option<bool>,
    incomplete: bool,
}

impl From<&OomKill> for DiskOomKill {
    fn from(k: &OomKill) -> Self {
        Self {
            monotonic_ns: k.monotonic_ns,
            source: code_of(&SOURCES, &k.source),
            victim: (&k.victim).into(),
            trigger: k.trigger.as_ref().map(DiskTask::from),
            constraint: code_of(&CONSTRAINTS, &k.constraint),
            constraint_found_by: code_of(&FOUND_BY, &k.constraint_found_by),
            oom_memcg: k.oom_memcg.as_ref().map(|m| DiskOomMemcg {
                path: m.path.clone(),
                id: m.id,
                limit_bytes: m.limit_bytes,
                usage_bytes: m.usage_bytes,
                limit_kind: code_of(&LIMIT_KINDS, &m.limit_kind),
                values_from: code_of(&VALUES_FROM, &m.values_from),
                cgroup: disk(m.cgroup_ref),
            }),
            total_vm_bytes: k.memory.total_vm_bytes,
            anon_rss_bytes: k.memory.anon_rss_bytes,
            file_rss_bytes: k.memory.file_rss_bytes,
            shmem_rss_bytes: k.memory.shmem_rss_bytes,
            pgtables_bytes: k.memory.pgtables_bytes,
            oom_score_adj: k.oom_score_adj,
            group_kill: k.group_kill,
            victim_memcg_oom_kills: k.victim_memcg_oom_kills,
            counted_as_kill: k.counted_as_kill,
            incomplete: k.incomplete,
        }
    }
}

impl DiskOomKill {
    fn into_event(self) -> Option<OomKill> {
        let oom_memcg = match self.oom_memcg {
            None => None,
            Some(m) => Some(OomMemcg {
                path: m.path,
                id: m.id,
                limit_bytes: m.limit_bytes,
                usage_bytes: m.usage_bytes,
                limit_kind: from_code(&LIMIT_KINDS, m.limit_kind)?,
                values_from: from_code(&VALUES_FROM, m.values_from)?,
                cgroup_ref: memory_ref(m.cgroup),
            }),
        };
        Some(OomKill {
            monotonic_ns: self.monotonic_ns,
            source: from_code(&SOURCES, self.source)?,
            victim: self.victim.into(),
            trigger: self.trigger.map(Task::from),
            constraint: from_code(&CONSTRAINTS, self.constraint)?,
            constraint_found_by: from_code(&FOUND_BY, self.constraint_found_by)?,
            oom_memcg,
            memory: VictimMemory {
                total_vm_bytes: self.total_vm_bytes,
                anon_rss_bytes: self.anon_rss_bytes,
                file_rss_bytes: self.file_rss_bytes,
                shmem_rss_bytes: self.shmem_rss_bytes,
                pgtables_bytes: self.pgtables_bytes,
            },
            oom_score_adj: self.oom_score_adj,
            group_kill: self.group_kill,
            victim_memcg_oom_kills: self.victim_memcg_oom_kills,
            counted_as_kill: self.counted_as_kill,
            incomplete: self.incomplete,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct DiskSpan {
    cgroup_path: Option<String>,
    cgroup: Option<DiskCgroup>,
    cpu: u32,
    pid: u32,
    comm: String,
    start_ns: u64,
    duration_ns: u64,
}

impl From<&ThrottleSpan> for DiskSpan {
    fn from(s: &ThrottleSpan) -> Self {
        Self {
            cgroup_path: s.cgroup.clone(),
            cgroup: disk(s.cgroup_ref),
            cpu: s.cpu,
            pid: s.pid,
            comm: s.comm.clone(),
            start_ns: s.start_ns,
            duration_ns: s.duration_ns(),
        }
    }
}

impl From<DiskSpan> for ThrottleSpan {
    fn from(s: DiskSpan) -> Self {
        Self {
            cgroup: s.cgroup_path,
            cgroup_ref: memory_ref(s.cgroup),
            cpu: s.cpu,
            pid: s.pid,
            comm: s.comm,
            start_ns: s.start_ns,
            end_ns: s.start_ns.saturating_add(s.duration_ns),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DiskFlow {
    owner: Option<DiskCgroup>,
    actor: Option<DiskCgroup>,
    reason: u8,
    pages: u64,
}

/// Stall statistics with the histogram as (bucket, count) pairs of its
/// non-empty buckets: most of its buckets are empty.
#[derive(Serialize, Deserialize)]
struct DiskStall {
    cgroup: Option<DiskCgroup>,
    kind: u8,
    count: u64,
    total_ns: u64,
    max_ns: u64,
    scanned: u64,
    reclaimed: u64,
    dirty: u64,
    writeback: u64,
    buckets: Vec<(u16, u64)>,
}

#[derive(Serialize, Deserialize)]
struct DiskCharge {
    cgroup: Option<DiskCgroup>,
    kind: u8,
    charged: u64,
    uncharged: u64,
}

#[derive(Serialize, Deserialize)]
struct DiskFile {
    owner: Option<DiskCgroup>,
    dev: u32,
    ino: u64,
    reason: u8,
    pages: u64,
}

#[derive(Serialize, Deserialize)]
struct DiskCounters {
    start_ns: u64,
    end_ns: u64,
    flows: Vec<DiskFlow>,
    stalls: Vec<DiskStall>,
    charges: Option<Vec<DiskCharge>>,
    files: Option<Vec<DiskFile>>,
}

fn enum_code(value: u32) -> u8 {
    u8::try_from(value).unwrap_or(u8::MAX)
}

impl From<&ProbeCounters> for DiskCounters {
    fn from(c: &ProbeCounters) -> Self {
        Self {
            start_ns: c.start_ns,
            end_ns: c.end_ns,
            flows: c
                .flows
                .iter()
                .map(|f| DiskFlow {
                    owner: disk(f.owner),
                    actor: disk(f.actor),
                    reason: enum_code(f.reason as u32),
                    pages: f.pages,
                })
                .collect(),
            stalls: c
                .stalls
                .iter()
                .map(|s| DiskStall {
                    cgroup: disk(s.cgroup),
                    kind: enum_code(s.kind as u32),
                    count: s.stats.count,
                    total_ns: s.stats.total_ns,
                    max_ns: s.stats.max_ns,
                    scanned: s.stats.scanned,
                    reclaimed: s.stats.reclaimed,
                    dirty: s.stats.dirty,
                    writeback: s.stats.writeback,
                    buckets: s
                        .stats
                        .buckets
                        .iter()
                        .enumerate()
                        .filter(|(_, count)| **count > 0)
                        .map(|(bucket, count)| (u16::try_from(bucket).unwrap_or(0), *count))
                        .collect(),
                })
                .collect(),
            charges: c.charges.as_ref().map(|charges| {
                charges
                    .iter()
                    .map(|c| DiskCharge {
                        cgroup: disk(c.cgroup),
                        kind: enum_code(c.kind as u32),
                        charged: c.charged,
                        uncharged: c.uncharged,
                    })
                    .collect()
            }),
            files: c.files.as_ref().map(|files| {
                files
                    .iter()
                    .map(|f| DiskFile {
                        owner: disk(f.owner),
                        dev: f.dev,
                        ino: f.ino,
                        reason: enum_code(f.reason as u32),
                        pages: f.pages,
                    })
                    .collect()
            }),
        }
    }
}

impl DiskCounters {
    fn into_event(self) -> Option<ProbeCounters> {
        let flows = self
            .flows
            .into_iter()
            .map(|f| {
                Some(Flow {
                    owner: memory_ref(f.owner),
                    actor: memory_ref(f.actor),
                    reason: CacheReason::from_u32(u32::from(f.reason))?,
                    pages: f.pages,
                })
            })
            .collect::<Option<_>>()?;
        let stalls = self
            .stalls
            .into_iter()
            .map(|s| {
                let mut stats = StallStats {
                    count: s.count,
                    total_ns: s.total_ns,
                    max_ns: s.max_ns,
                    scanned: s.scanned,
                    reclaimed: s.reclaimed,
                    dirty: s.dirty,
                    writeback: s.writeback,
                    ..StallStats::default()
                };
                for (bucket, count) in s.buckets {
                    *stats
                        .buckets
                        .get_mut(usize::from(bucket))
                        .filter(|_| usize::from(bucket) < STALL_BUCKETS)? = count;
                }
                Some(Stall {
                    cgroup: memory_ref(s.cgroup),
                    kind: ReclaimKind::from_u32(u32::from(s.kind))?,
                    stats: Box::new(stats),
                })
            })
            .collect::<Option<_>>()?;
        let charges = match self.charges {
            None => None,
            Some(charges) => Some(
                charges
                    .into_iter()
                    .map(|c| {
                        Some(Charge {
                            cgroup: memory_ref(c.cgroup),
                            kind: ChargeKind::from_u32(u32::from(c.kind))?,
                            charged: c.charged,
                            uncharged: c.uncharged,
                        })
                    })
                    .collect::<Option<_>>()?,
            ),
        };
        let files = match self.files {
            None => None,
            Some(files) => Some(
                files
                    .into_iter()
                    .map(|f| {
                        Some(FileFlow {
                            owner: memory_ref(f.owner),
                            dev: f.dev,
                            ino: f.ino,
                            reason: CacheReason::from_u32(u32::from(f.reason))?,
                            pages: f.pages,
                        })
                    })
                    .collect::<Option<_>>()?,
            ),
        };
        Some(ProbeCounters {
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            flows,
            stalls,
            charges,
            files,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct DiskMemoryEvents {
    high: Option<u64>,
    max: Option<u64>,
    oom: Option<u64>,
    oom_kill: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct DiskMemory {
    at_ns: u64,
    cgroup: DiskCgroup,
    version: u8,
    usage_bytes: Option<u64>,
    limit_bytes: Option<u64>,
    peak_bytes: Option<u64>,
    page_cache_bytes: Option<u64>,
    events: Option<DiskMemoryEvents>,
    /// `(charged, uncharged)` per charge kind, in `ChargeKind` order.
    stat_charges: Option<Vec<(u64, u64)>>,
}

impl From<&MemorySample> for DiskMemory {
    fn from(m: &MemorySample) -> Self {
        Self {
            at_ns: m.at_ns,
            cgroup: m.cgroup.into(),
            version: code_of(&VERSIONS, &m.version),
            usage_bytes: m.usage_bytes,
            limit_bytes: m.limit_bytes,
            peak_bytes: m.peak_bytes,
            page_cache_bytes: m.page_cache_bytes,
            events: m.events.map(|e| DiskMemoryEvents {
                high: e.high,
                max: e.max,
                oom: e.oom,
                oom_kill: e.oom_kill,
            }),
            stat_charges: m.stat_charges.map(|c| c.to_vec()),
        }
    }
}

impl DiskMemory {
    fn into_event(self) -> Option<MemorySample> {
        let stat_charges = match self.stat_charges {
            None => None,
            Some(list) => {
                let mut charges = [(0, 0); CHARGE_KINDS];
                // Kinds a newer writer added are left out; missing ones are 0.
                for (slot, value) in charges.iter_mut().zip(list) {
                    *slot = value;
                }
                Some(charges)
            }
        };
        Some(MemorySample {
            at_ns: self.at_ns,
            cgroup: self.cgroup.into(),
            version: from_code(&VERSIONS, self.version)?,
            usage_bytes: self.usage_bytes,
            limit_bytes: self.limit_bytes,
            peak_bytes: self.peak_bytes,
            page_cache_bytes: self.page_cache_bytes,
            events: self.events.map(|e| MemoryEvents {
                high: e.high,
                max: e.max,
                oom: e.oom,
                oom_kill: e.oom_kill,
            }),
            stat_charges,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct DiskCpuStat {
    nr_periods: u64,
    nr_throttled: u64,
    throttled_ns: u64,
    usage_ns: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct DiskCpu {
    at_ns: u64,
    cgroup: DiskCgroup,
    stat: Option<DiskCpuStat>,
    /// `(quota_us, period_us)`.
    bandwidth: Option<(Option<u64>, u64)>,
    usage_ns: Option<u64>,
}

impl From<&CpuSample> for DiskCpu {
    fn from(c: &CpuSample) -> Self {
        Self {
            at_ns: c.at_ns,
            cgroup: c.cgroup.into(),
            stat: c.stat.map(|s| DiskCpuStat {
                nr_periods: s.nr_periods,
                nr_throttled: s.nr_throttled,
                throttled_ns: s.throttled_ns,
                usage_ns: s.usage_ns,
            }),
            bandwidth: c.bandwidth.map(|b| (b.quota_us, b.period_us)),
            usage_ns: c.usage_ns,
        }
    }
}

impl From<DiskCpu> for CpuSample {
    fn from(c: DiskCpu) -> Self {
        Self {
            at_ns: c.at_ns,
            cgroup: c.cgroup.into(),
            stat: c.stat.map(|s| CpuStat {
                nr_periods: s.nr_periods,
                nr_throttled: s.nr_throttled,
                throttled_ns: s.throttled_ns,
                usage_ns: s.usage_ns,
            }),
            bandwidth: c.bandwidth.map(|(quota_us, period_us)| Bandwidth {
                quota_us,
                period_us,
            }),
            usage_ns: c.usage_ns,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DiskPressureLine {
    avg10_centi: u32,
    avg60_centi: u32,
    avg300_centi: u32,
    total_us: u64,
}

#[derive(Serialize, Deserialize)]
struct DiskPressure {
    some: DiskPressureLine,
    full: Option<DiskPressureLine>,
}

#[derive(Serialize, Deserialize)]
struct DiskPressureSample {
    at_ns: u64,
    cgroup: DiskCgroup,
    memory: Option<DiskPressure>,
    cpu: Option<DiskPressure>,
    io: Option<DiskPressure>,
}

impl From<&PressureLine> for DiskPressureLine {
    fn from(l: &PressureLine) -> Self {
        Self {
            avg10_centi: l.avg10_centi,
            avg60_centi: l.avg60_centi,
            avg300_centi: l.avg300_centi,
            total_us: l.total_us,
        }
    }
}

impl From<DiskPressureLine> for PressureLine {
    fn from(l: DiskPressureLine) -> Self {
        Self {
            avg10_centi: l.avg10_centi,
            avg60_centi: l.avg60_centi,
            avg300_centi: l.avg300_centi,
            total_us: l.total_us,
        }
    }
}

impl From<&Pressure> for DiskPressure {
    fn from(p: &Pressure) -> Self {
        Self {
            some: (&p.some).into(),
            full: p.full.as_ref().map(DiskPressureLine::from),
        }
    }
}

impl From<DiskPressure> for Pressure {
    fn from(p: DiskPressure) -> Self {
        Self {
            some: p.some.into(),
            full: p.full.map(PressureLine::from),
        }
    }
}

impl From<&PressureSample> for DiskPressureSample {
    fn from(p: &PressureSample) -> Self {
        Self {
            at_ns: p.at_ns,
            cgroup: p.cgroup.into(),
            memory: p.memory.as_ref().map(DiskPressure::from),
            cpu: p.cpu.as_ref().map(DiskPressure::from),
            io: p.io.as_ref().map(DiskPressure::from),
        }
    }
}

impl From<DiskPressureSample> for PressureSample {
    fn from(p: DiskPressureSample) -> Self {
        Self {
            at_ns: p.at_ns,
            cgroup: p.cgroup.into(),
            memory: p.memory.map(Pressure::from),
            cpu: p.cpu.map(Pressure::from),
            io: p.io.map(Pressure::from),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DiskHealth {
    at_ns: u64,
    is_final: bool,
    records: u64,
    ring_buffer_drops: u64,
    read_failures: u64,
    recursion_misses: u64,
    decode_errors: u64,
    map_full: u64,
}

impl From<&Health> for DiskHealth {
    fn from(h: &Health) -> Self {
        Self {
            at_ns: h.at_ns,
            is_final: h.is_final,
            records: h.stats.records,
            ring_buffer_drops: h.stats.ring_buffer_drops,
            read_failures: h.stats.read_failures,
            recursion_misses: h.stats.recursion_misses,
            decode_errors: h.stats.decode_errors,
            map_full: h.stats.map_full,
        }
    }
}

impl From<DiskHealth> for Health {
    fn from(h: DiskHealth) -> Self {
        Self {
            at_ns: h.at_ns,
            is_final: h.is_final,
            stats: ProbeStats {
                records: h.records,
                ring_buffer_drops: h.ring_buffer_drops,
                read_failures: h.read_failures,
                recursion_misses: h.recursion_misses,
                decode_errors: h.decode_errors,
                map_full: h.map_full,
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use cgtrace_common::{
        cgroup::CgroupRef,
        pagecache::{CacheReason, ChargeKind, ReclaimKind, StallStats, stall_bucket},
    };

    use super::{decode, encode};
    use crate::{
        cgroup::Version,
        event::{
            Bandwidth, CgroupNamed, Charge, CpuSample, CpuStat, Event, FileFlow, Flow, Health,
            MemoryEvents, MemorySample, Pressure, PressureLine, PressureSample, ProbeCounters,
            ProbeStats, Stall, ThrottleSpan, Tick, WorkloadNames,
        },
        trace::record::tests::samples,
    };

    const APP: CgroupRef = CgroupRef {
        id: 77,
        hierarchy: 4,
        level: 2,
    };

    /// One event of every kind, every optional field present somewhere.
    #[expect(clippy::too_many_lines, reason = "one literal per event kind")]
    pub(crate) fn events() -> Vec<Event> {
        let kill = samples()
            .into_iter()
            .find_map(|r| match r {
                crate::trace::record::TraceRecord::OomKill(kill) => Some(kill),
                _ => None,
            })
            .expect("a sample kill");
        let mut stats = StallStats {
            count: 3,
            total_ns: 900_000,
            max_ns: 500_000,
            scanned: 96,
            reclaimed: 64,
            dirty: 1,
            writeback: 2,
            ..StallStats::default()
        };
        stats.buckets[stall_bucket(100_000)] = 2;
        stats.buckets[stall_bucket(500_000)] = 1;
        let line = PressureLine {
            avg10_centi: 1234,
            avg60_centi: 56,
            avg300_centi: 7,
            total_us: 8_000_000,
        };
        vec![
            Event::CgroupCreated(CgroupNamed {
                cgroup: APP,
                path: "/kubepods/pod1/app".into(),
            }),
            Event::CgroupNamed(CgroupNamed {
                cgroup: APP,
                path: "/kubepods/pod1/app".into(),
            }),
            Event::WorkloadNamed(WorkloadNames {
                path: "/kubepods/pod1/app".into(),
                namespace: Some("shop".into()),
                pod: Some("web-0".into()),
                container: None,
            }),
            Event::OomKill(kill),
            Event::ThrottleSpan(ThrottleSpan {
                cgroup: Some("/limited".into()),
                cgroup_ref: Some(APP),
                cpu: 1,
                pid: 42,
                comm: "spin".into(),
                start_ns: 1_000,
                end_ns: 51_000,
            }),
            Event::Counters(Box::new(ProbeCounters {
                start_ns: 5,
                end_ns: 1_000_000_005,
                flows: vec![Flow {
                    owner: Some(APP),
                    actor: None,
                    reason: CacheReason::AncestorLimit,
                    pages: 32_760,
                }],
                stalls: vec![Stall {
                    cgroup: Some(APP),
                    kind: ReclaimKind::Memcg,
                    stats: Box::new(stats),
                }],
                charges: Some(vec![Charge {
                    cgroup: None,
                    kind: ChargeKind::RefaultFile,
                    charged: 12,
                    uncharged: 0,
                }]),
                files: Some(vec![FileFlow {
                    owner: Some(APP),
                    dev: 8 << 20 | 1,
                    ino: 1234,
                    reason: CacheReason::Added,
                    pages: 9,
                }]),
            })),
            Event::Counters(Box::default()),
            Event::Memory(Box::new(MemorySample {
                at_ns: 1_000_000_005,
                cgroup: APP,
                version: Version::V2,
                usage_bytes: Some(100 << 20),
                limit_bytes: None,
                peak_bytes: Some(101 << 20),
                page_cache_bytes: Some(0),
                events: Some(MemoryEvents {
                    high: None,
                    max: Some(7),
                    oom: Some(1),
                    oom_kill: Some(1),
                }),
                stat_charges: Some([(1, 2); cgtrace_common::pagecache::CHARGE_KINDS]),
            })),
            Event::Cpu(CpuSample {
                at_ns: 1_000_000_005,
                cgroup: APP,
                stat: Some(CpuStat {
                    nr_periods: 10,
                    nr_throttled: 9,
                    throttled_ns: 800_000,
                    usage_ns: Some(500_000),
                }),
                bandwidth: Some(Bandwidth {
                    quota_us: Some(50_000),
                    period_us: 100_000,
                }),
                usage_ns: None,
            }),
            Event::Pressure(Box::new(PressureSample {
                at_ns: 1_000_000_005,
                cgroup: APP,
                memory: Some(Pressure {
                    some: line,
                    full: Some(line),
                }),
                cpu: Some(Pressure {
                    some: line,
                    full: None,
                }),
                io: None,
            })),
            Event::Health(Health {
                at_ns: 9,
                stats: ProbeStats {
                    records: 1,
                    ring_buffer_drops: 2,
                    read_failures: 3,
                    recursion_misses: 4,
                    decode_errors: 5,
                    map_full: 6,
                },
                is_final: true,
            }),
            Event::Tick(Tick {
                start_ns: 5,
                end_ns: 1_000_000_005,
            }),
        ]
    }

    #[test]
    fn every_event_round_trips() {
        for event in events() {
            let mut bytes = Vec::new();
            encode(&event, &mut bytes);
            let kind = bytes[0];
            // A one-byte length for these small bodies, or a longer varint.
            let mut at = 1;
            let mut len = 0usize;
            let mut shift = 0;
            loop {
                let byte = bytes[at];
                at += 1;
                len |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            assert_eq!(bytes.len(), at + len, "{event:?}");
            assert_eq!(decode(kind, &bytes[at..]), Ok(Some(event)));
        }
    }

    #[test]
    fn unknown_kinds_and_bad_bodies_are_told_apart() {
        assert_eq!(decode(200, &[1, 2, 3]), Ok(None));
        assert!(decode(11, &[]).is_err(), "a tick needs its times");
        // A flow whose reason no build knows.
        let mut bytes = Vec::new();
        encode(
            &Event::Counters(Box::new(ProbeCounters {
                flows: vec![Flow {
                    owner: None,
                    actor: None,
                    reason: CacheReason::Added,
                    pages: 1,
                }],
                ..ProbeCounters::default()
            })),
            &mut bytes,
        );
        // kind, length, start, end, flow count, owner None, actor None, reason.
        assert_eq!(bytes[7], CacheReason::Added as u8);
        bytes[7] = 99;
        assert!(decode(bytes[0], &bytes[2..]).is_err());
    }
}
