//! What a trace holds, record by record, and its compact encoding: a kind
//! byte, the body's length, then varint fields. A reader skips kinds it
//! does not know by their length, so newer writers can add kinds.

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CacheReason, ChargeKind, ReclaimKind, STALL_BUCKETS, StallStats},
};

use super::{
    codec::{CodecError, Decoder, Encoder},
    codes::{CONSTRAINTS, FOUND_BY, LIMIT_KINDS, SOURCES, VALUES_FROM, code_of, from_code},
};
use crate::{
    cgroup::{
        Version,
        stat::{MemoryEvents, MemorySample},
    },
    event::{OomKill, OomMemcg, Task, ThrottleSpan, VictimMemory},
    probe::ProbeStats,
};

/// One record of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceRecord {
    /// A cgroup's path, written before the first record that refers to it,
    /// so a trace names its cgroups even after they are gone.
    CgroupName {
        cgroup: CgroupRef,
        path: String,
    },
    OomKill(Box<OomKill>),
    Throttle(ThrottleSpan),
    /// Page-cache pages that moved in the interval ending at `end_ns`.
    CacheFlow {
        end_ns: u64,
        owner: Option<CgroupRef>,
        actor: Option<CgroupRef>,
        reason: CacheReason,
        pages: u64,
    },
    /// The probe's loss counters when recording ended.
    Stats {
        monotonic_ns: u64,
        stats: ProbeStats,
    },
    /// Reclaim stalls of one memcg in the interval ending at `end_ns`.
    Stall {
        end_ns: u64,
        cgroup: Option<CgroupRef>,
        kind: ReclaimKind,
        stats: Box<StallStats>,
    },
    /// Pages charged to and uncharged from one memcg in the interval (for
    /// the refault kinds, refaults).
    Charge {
        end_ns: u64,
        cgroup: Option<CgroupRef>,
        kind: ChargeKind,
        charged: u64,
        uncharged: u64,
    },
    /// A cgroup's own files at the end of the interval.
    Memory {
        end_ns: u64,
        cgroup: CgroupRef,
        sample: MemorySample,
    },
    /// The names of the workload at a cgroup path, learnt from the node's
    /// files (pod logs, Docker state) while recording, so a report names
    /// pods and containers wherever and whenever it is read.
    WorkloadNames {
        path: String,
        namespace: Option<String>,
        pod: Option<String>,
        container: Option<String>,
    },
    /// Closes a sampling interval: the `CacheFlow`, `Stall`, `Charge` and
    /// `Memory` records before it with the same `end_ns` belong to it.
    Interval {
        start_ns: u64,
        end_ns: u64,
        charges_from: ChargesFrom,
    },
}

/// Where an interval's `Charge` records came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChargesFrom {
    /// Neither source was available: no charge records.
    Nothing,
    /// The memcg stat tracepoints: every charge and uncharge.
    Tracepoints,
    /// `memory.stat` deltas: net changes only.
    MemoryStat,
}

impl ChargesFrom {
    const ALL: [Self; 3] = [Self::Nothing, Self::Tracepoints, Self::MemoryStat];

    /// How the views name the source (`charges.source` in JSON).
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Self::Nothing => None,
            Self::Tracepoints => Some("memcg_stat_tracepoints"),
            Self::MemoryStat => Some("memory.stat"),
        }
    }

    /// The source the views named `name`.
    #[must_use]
    pub fn from_name(name: Option<&str>) -> Self {
        Self::ALL
            .into_iter()
            .find(|from| from.name() == name)
            .unwrap_or(Self::Nothing)
    }
}

const KIND_CGROUP_NAME: u8 = 1;
const KIND_OOM_KILL: u8 = 2;
const KIND_THROTTLE: u8 = 3;
const KIND_CACHE_FLOW: u8 = 4;
const KIND_STATS: u8 = 5;
const KIND_STALL: u8 = 6;
const KIND_CHARGE: u8 = 7;
const KIND_MEMORY: u8 = 8;
const KIND_INTERVAL: u8 = 9;
const KIND_WORKLOAD_NAMES: u8 = 10;

impl TraceRecord {
    /// Appends the record (kind, length, body) to `out`.
    pub fn encode(&self, out: &mut Encoder) {
        let mut body = Encoder::default();
        let kind = match self {
            Self::CgroupName { cgroup, path } => {
                cgroup_ref(&mut body, Some(*cgroup));
                body.str(path);
                KIND_CGROUP_NAME
            }
            Self::OomKill(kill) => {
                oom(&mut body, kill);
                KIND_OOM_KILL
            }
            Self::WorkloadNames {
                path,
                namespace,
                pod,
                container,
            } => {
                body.str(path);
                body.opt_str(namespace.as_deref());
                body.opt_str(pod.as_deref());
                body.opt_str(container.as_deref());
                KIND_WORKLOAD_NAMES
            }
            Self::Throttle(span) => {
                throttle(&mut body, span);
                KIND_THROTTLE
            }
            Self::CacheFlow {
                end_ns,
                owner,
                actor,
                reason,
                pages,
            } => {
                body.u64(*end_ns);
                cgroup_ref(&mut body, *owner);
                cgroup_ref(&mut body, *actor);
                body.u64(*reason as u64);
                body.u64(*pages);
                KIND_CACHE_FLOW
            }
            Self::Stats {
                monotonic_ns,
                stats,
            } => {
                body.u64(*monotonic_ns);
                probe_stats(&mut body, stats);
                KIND_STATS
            }
            Self::Stall {
                end_ns,
                cgroup,
                kind,
                stats,
            } => {
                body.u64(*end_ns);
                cgroup_ref(&mut body, *cgroup);
                body.u64(*kind as u64);
                stall(&mut body, stats);
                KIND_STALL
            }
            Self::Charge {
                end_ns,
                cgroup,
                kind,
                charged,
                uncharged,
            } => {
                body.u64(*end_ns);
                cgroup_ref(&mut body, *cgroup);
                body.u64(*kind as u64);
                body.u64(*charged);
                body.u64(*uncharged);
                KIND_CHARGE
            }
            Self::Memory {
                end_ns,
                cgroup,
                sample,
            } => {
                body.u64(*end_ns);
                cgroup_ref(&mut body, Some(*cgroup));
                memory(&mut body, sample);
                KIND_MEMORY
            }
            Self::Interval {
                start_ns,
                end_ns,
                charges_from,
            } => {
                body.u64(*start_ns);
                body.u64(end_ns.saturating_sub(*start_ns));
                body.u8(code_of(&ChargesFrom::ALL, charges_from));
                KIND_INTERVAL
            }
        };
        out.u8(kind);
        out.u64(body.bytes.len() as u64);
        out.bytes.extend_from_slice(&body.bytes);
    }

    /// Decodes the next record; `Ok(None)` for a kind this reader does not
    /// know (skipped whole).
    pub fn decode(input: &mut Decoder<'_>) -> Result<Option<Self>, CodecError> {
        let kind = input.u8()?;
        let len = usize::try_from(input.u64()?).map_err(|_| CodecError::OutOfRange)?;
        let mut body = Decoder::new(input.bytes(len)?);
        let record = match kind {
            KIND_CGROUP_NAME => Self::CgroupName {
                cgroup: read_cgroup_ref(&mut body)?.ok_or(CodecError::OutOfRange)?,
                path: body.str()?,
            },
            KIND_OOM_KILL => Self::OomKill(Box::new(read_oom(&mut body)?)),
            KIND_WORKLOAD_NAMES => Self::WorkloadNames {
                path: body.str()?,
                namespace: body.opt_str()?,
                pod: body.opt_str()?,
                container: body.opt_str()?,
            },
            KIND_THROTTLE => {
                let cgroup_ref = read_cgroup_ref(&mut body)?;
                let cpu = body.u32()?;
                let pid = body.u32()?;
                let comm = body.str()?;
                let start_ns = body.u64()?;
                let end_ns = start_ns.saturating_add(body.u64()?);
                Self::Throttle(ThrottleSpan {
                    cgroup: None,
                    cgroup_ref,
                    cpu,
                    pid,
                    comm,
                    start_ns,
                    end_ns,
                })
            }
            KIND_CACHE_FLOW => Self::CacheFlow {
                end_ns: body.u64()?,
                owner: read_cgroup_ref(&mut body)?,
                actor: read_cgroup_ref(&mut body)?,
                reason: CacheReason::from_u32(body.u32()?).ok_or(CodecError::OutOfRange)?,
                pages: body.u64()?,
            },
            KIND_STATS => Self::Stats {
                monotonic_ns: body.u64()?,
                stats: ProbeStats {
                    records: body.u64()?,
                    ring_buffer_drops: body.u64()?,
                    read_failures: body.u64()?,
                    recursion_misses: body.u64()?,
                    decode_errors: body.u64()?,
                    map_full: body.u64()?,
                },
            },
            KIND_STALL => Self::Stall {
                end_ns: body.u64()?,
                cgroup: read_cgroup_ref(&mut body)?,
                kind: ReclaimKind::from_u32(body.u32()?).ok_or(CodecError::OutOfRange)?,
                stats: Box::new(read_stall(&mut body)?),
            },
            KIND_CHARGE => Self::Charge {
                end_ns: body.u64()?,
                cgroup: read_cgroup_ref(&mut body)?,
                kind: ChargeKind::from_u32(body.u32()?).ok_or(CodecError::OutOfRange)?,
                charged: body.u64()?,
                uncharged: body.u64()?,
            },
            KIND_MEMORY => Self::Memory {
                end_ns: body.u64()?,
                cgroup: read_cgroup_ref(&mut body)?.ok_or(CodecError::OutOfRange)?,
                sample: read_memory(&mut body)?,
            },
            KIND_INTERVAL => {
                let start_ns = body.u64()?;
                Self::Interval {
                    start_ns,
                    end_ns: start_ns.saturating_add(body.u64()?),
                    charges_from: from_code_or_err(&ChargesFrom::ALL, body.u8()?)?,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(record))
    }
}

fn cgroup_ref(out: &mut Encoder, cgroup: Option<CgroupRef>) {
    match cgroup {
        None => out.u8(0),
        Some(c) => {
            out.u8(1);
            out.u64(u64::from(c.hierarchy));
            out.u64(c.id);
            out.u64(u64::from(c.level));
        }
    }
}

fn read_cgroup_ref(input: &mut Decoder<'_>) -> Result<Option<CgroupRef>, CodecError> {
    match input.u8()? {
        0 => Ok(None),
        1 => Ok(Some(CgroupRef {
            hierarchy: input.u32()?,
            id: input.u64()?,
            level: input.u32()?,
        })),
        _ => Err(CodecError::OutOfRange),
    }
}

fn throttle(out: &mut Encoder, span: &ThrottleSpan) {
    cgroup_ref(out, span.cgroup_ref);
    out.u64(u64::from(span.cpu));
    out.u64(u64::from(span.pid));
    out.str(&span.comm);
    out.u64(span.start_ns);
    out.u64(span.end_ns.saturating_sub(span.start_ns));
}

fn probe_stats(out: &mut Encoder, stats: &ProbeStats) {
    for value in [
        stats.records,
        stats.ring_buffer_drops,
        stats.read_failures,
        stats.recursion_misses,
        stats.decode_errors,
        stats.map_full,
    ] {
        out.u64(value);
    }
}

/// Stall totals, with the histogram as (bucket, count) pairs of its
/// non-empty buckets: most of its buckets are empty.
fn stall(out: &mut Encoder, stats: &StallStats) {
    for value in [
        stats.count,
        stats.total_ns,
        stats.max_ns,
        stats.scanned,
        stats.reclaimed,
        stats.dirty,
        stats.writeback,
    ] {
        out.u64(value);
    }
    let filled: Vec<(usize, u64)> = stats
        .buckets
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, count)| *count > 0)
        .collect();
    out.u64(filled.len() as u64);
    for (bucket, count) in filled {
        out.u64(bucket as u64);
        out.u64(count);
    }
}

fn read_stall(input: &mut Decoder<'_>) -> Result<StallStats, CodecError> {
    let mut stats = StallStats {
        count: input.u64()?,
        total_ns: input.u64()?,
        max_ns: input.u64()?,
        scanned: input.u64()?,
        reclaimed: input.u64()?,
        dirty: input.u64()?,
        writeback: input.u64()?,
        ..StallStats::default()
    };
    let filled = input.u64()?;
    for _ in 0..filled {
        let bucket = usize::try_from(input.u64()?).map_err(|_| CodecError::OutOfRange)?;
        let slot = stats
            .buckets
            .get_mut(bucket)
            .filter(|_| bucket < STALL_BUCKETS)
            .ok_or(CodecError::OutOfRange)?;
        *slot = input.u64()?;
    }
    Ok(stats)
}

fn memory(out: &mut Encoder, sample: &MemorySample) {
    out.opt_u64(sample.usage_bytes);
    out.opt_u64(sample.limit_bytes);
    out.opt_u64(sample.page_cache_bytes);
    match &sample.events {
        None => out.u8(0),
        Some((events, version)) => {
            out.u8(match version {
                Version::V1 => 1,
                Version::V2 => 2,
            });
            for value in [events.high, events.max, events.oom, events.oom_kill] {
                out.opt_u64(value);
            }
        }
    }
    // Added after the first release: older readers stop before it, older
    // files end before it.
    out.opt_u64(sample.peak_bytes);
}

fn read_memory(input: &mut Decoder<'_>) -> Result<MemorySample, CodecError> {
    let usage_bytes = input.opt_u64()?;
    let limit_bytes = input.opt_u64()?;
    let page_cache_bytes = input.opt_u64()?;
    let version = match input.u8()? {
        0 => None,
        1 => Some(Version::V1),
        2 => Some(Version::V2),
        _ => return Err(CodecError::OutOfRange),
    };
    let events = match version {
        None => None,
        Some(version) => Some((
            MemoryEvents {
                high: input.opt_u64()?,
                max: input.opt_u64()?,
                oom: input.opt_u64()?,
                oom_kill: input.opt_u64()?,
            },
            version,
        )),
    };
    let peak_bytes = if input.is_empty() {
        None
    } else {
        input.opt_u64()?
    };
    Ok(MemorySample {
        usage_bytes,
        limit_bytes,
        peak_bytes,
        page_cache_bytes,
        events,
    })
}

fn task(out: &mut Encoder, task: &Task) {
    out.u64(u64::from(task.pid));
    out.opt_u64(task.tid.map(u64::from));
    out.str(&task.comm);
    out.opt_u64(task.uid.map(u64::from));
    out.opt_str(task.cgroup.as_deref());
    cgroup_ref(out, task.cgroup_ref);
}

fn read_task(input: &mut Decoder<'_>) -> Result<Task, CodecError> {
    let narrow = |v: Option<u64>| {
        v.map(u32::try_from)
            .transpose()
            .map_err(|_| CodecError::OutOfRange)
    };
    Ok(Task {
        pid: input.u32()?,
        tid: narrow(input.opt_u64()?)?,
        comm: input.str()?,
        uid: narrow(input.opt_u64()?)?,
        cgroup: input.opt_str()?,
        cgroup_ref: read_cgroup_ref(input)?,
    })
}

/// `Option<bool>` as 0 (none), 1 (false), 2 (true).
fn opt_bool(value: Option<bool>) -> u8 {
    value.map_or(0, |b| 1 + u8::from(b))
}

fn read_opt_bool(input: &mut Decoder<'_>) -> Result<Option<bool>, CodecError> {
    match input.u8()? {
        0 => Ok(None),
        1 => Ok(Some(false)),
        2 => Ok(Some(true)),
        _ => Err(CodecError::OutOfRange),
    }
}

fn oom(out: &mut Encoder, kill: &OomKill) {
    out.u64(kill.monotonic_ns);
    out.u8(code_of(&SOURCES, &kill.source));
    task(out, &kill.victim);
    match &kill.trigger {
        None => out.u8(0),
        Some(trigger) => {
            out.u8(1);
            task(out, trigger);
        }
    }
    out.u8(code_of(&CONSTRAINTS, &kill.constraint));
    out.u8(code_of(&FOUND_BY, &kill.constraint_found_by));
    match &kill.oom_memcg {
        None => out.u8(0),
        Some(m) => {
            out.u8(1);
            out.opt_str(m.path.as_deref());
            out.opt_u64(m.id);
            out.opt_u64(m.limit_bytes);
            out.opt_u64(m.usage_bytes);
            out.u8(code_of(&LIMIT_KINDS, &m.limit_kind));
            out.u8(code_of(&VALUES_FROM, &m.values_from));
            cgroup_ref(out, m.cgroup_ref);
        }
    }
    let m = &kill.memory;
    for value in [
        m.total_vm_bytes,
        m.anon_rss_bytes,
        m.file_rss_bytes,
        m.shmem_rss_bytes,
        m.pgtables_bytes,
    ] {
        out.opt_u64(value);
    }
    match kill.oom_score_adj {
        None => out.u8(0),
        Some(adj) => {
            out.u8(1);
            out.i64(i64::from(adj));
        }
    }
    out.u8(opt_bool(kill.group_kill));
    out.opt_u64(kill.victim_memcg_oom_kills);
    out.u8(opt_bool(kill.counted_as_kill));
    out.u8(u8::from(kill.incomplete));
}

fn read_oom(input: &mut Decoder<'_>) -> Result<OomKill, CodecError> {
    let monotonic_ns = input.u64()?;
    let source = from_code_or_err(&SOURCES, input.u8()?)?;
    let victim = read_task(input)?;
    let trigger = match input.u8()? {
        0 => None,
        1 => Some(read_task(input)?),
        _ => return Err(CodecError::OutOfRange),
    };
    let constraint = from_code_or_err(&CONSTRAINTS, input.u8()?)?;
    let constraint_found_by = from_code_or_err(&FOUND_BY, input.u8()?)?;
    let oom_memcg = match input.u8()? {
        0 => None,
        1 => Some(OomMemcg {
            path: input.opt_str()?,
            id: input.opt_u64()?,
            limit_bytes: input.opt_u64()?,
            usage_bytes: input.opt_u64()?,
            limit_kind: from_code_or_err(&LIMIT_KINDS, input.u8()?)?,
            values_from: from_code_or_err(&VALUES_FROM, input.u8()?)?,
            cgroup_ref: read_cgroup_ref(input)?,
        }),
        _ => return Err(CodecError::OutOfRange),
    };
    let memory = VictimMemory {
        total_vm_bytes: input.opt_u64()?,
        anon_rss_bytes: input.opt_u64()?,
        file_rss_bytes: input.opt_u64()?,
        shmem_rss_bytes: input.opt_u64()?,
        pgtables_bytes: input.opt_u64()?,
    };
    let oom_score_adj = match input.u8()? {
        0 => None,
        1 => Some(i16::try_from(input.i64()?).map_err(|_| CodecError::OutOfRange)?),
        _ => return Err(CodecError::OutOfRange),
    };
    Ok(OomKill {
        monotonic_ns,
        source,
        victim,
        trigger,
        constraint,
        constraint_found_by,
        oom_memcg,
        memory,
        oom_score_adj,
        group_kill: read_opt_bool(input)?,
        victim_memcg_oom_kills: input.opt_u64()?,
        counted_as_kill: read_opt_bool(input)?,
        incomplete: input.u8()? != 0,
    })
}

fn from_code_or_err<T: Copy>(all: &[T], code: u8) -> Result<T, CodecError> {
    from_code(all, code).ok_or(CodecError::OutOfRange)
}

#[cfg(test)]
pub(crate) mod tests {
    use cgtrace_common::{
        cgroup::CgroupRef,
        pagecache::{
            CacheReason, ChargeKind, ReclaimKind, STALL_BUCKETS, StallStats, stall_bucket,
        },
    };

    use super::{ChargesFrom, TraceRecord};
    use crate::{
        cgroup::{
            Version,
            stat::{MemoryEvents, MemorySample},
        },
        event::{
            Constraint, ConstraintFoundBy, LimitKind, OomKill, OomMemcg, OomSource, Task,
            ThrottleSpan, VictimMemory,
        },
        trace::codec::{Decoder, Encoder},
    };

    /// One record of every kind, with every optional field both ways.
    pub(crate) fn samples() -> Vec<TraceRecord> {
        let cgroup = CgroupRef {
            id: 4242,
            hierarchy: 4,
            level: 2,
        };
        let victim = Task {
            pid: 100,
            tid: Some(101),
            comm: "memhog".into(),
            uid: Some(1000),
            cgroup: Some("/kubepods/pod1/app".into()),
            cgroup_ref: Some(cgroup),
        };
        let kill = OomKill {
            monotonic_ns: 123_456_789,
            source: OomSource::Probe,
            victim: victim.clone(),
            trigger: Some(Task {
                tid: None,
                uid: None,
                cgroup: None,
                cgroup_ref: None,
                ..victim
            }),
            constraint: Constraint::Memcg,
            constraint_found_by: ConstraintFoundBy::LimitWalk,
            oom_memcg: Some(OomMemcg {
                path: Some("/kubepods/pod1".into()),
                id: Some(4000),
                limit_bytes: Some(100 << 20),
                usage_bytes: Some(100 << 20),
                limit_kind: LimitKind::MemorySwap,
                values_from: "kernel_log",
                cgroup_ref: None,
            }),
            memory: VictimMemory {
                anon_rss_bytes: Some(99 << 20),
                ..VictimMemory::default()
            },
            oom_score_adj: Some(-998),
            group_kill: Some(true),
            victim_memcg_oom_kills: Some(0),
            counted_as_kill: None,
            incomplete: false,
        };
        let global = OomKill {
            source: OomSource::KernelLog,
            trigger: None,
            constraint: Constraint::Global,
            constraint_found_by: ConstraintFoundBy::KernelLog,
            oom_memcg: None,
            oom_score_adj: None,
            group_kill: None,
            incomplete: true,
            ..kill.clone()
        };
        let mut records = vec![
            TraceRecord::CgroupName {
                cgroup,
                path: "/kubepods/pod1/app".into(),
            },
            TraceRecord::WorkloadNames {
                path: "/kubepods/pod1/app".into(),
                namespace: Some("shop".into()),
                pod: Some("web-0".into()),
                container: None,
            },
            TraceRecord::OomKill(Box::new(kill)),
            TraceRecord::OomKill(Box::new(global)),
            TraceRecord::Throttle(ThrottleSpan {
                cgroup: None,
                cgroup_ref: Some(cgroup),
                cpu: 1,
                pid: 77,
                comm: "spin".into(),
                start_ns: 5_000_000_000,
                end_ns: 5_080_000_000,
            }),
            TraceRecord::CacheFlow {
                end_ns: 6_000_000_000,
                owner: Some(cgroup),
                actor: None,
                reason: CacheReason::AncestorLimit,
                pages: 32_760,
            },
        ];
        records.extend(interval_samples(cgroup));
        records.push(TraceRecord::Stats {
            monotonic_ns: 7_000_000_000,
            stats: crate::probe::ProbeStats {
                records: 3,
                ring_buffer_drops: 1,
                read_failures: 0,
                recursion_misses: 2,
                decode_errors: 0,
                map_full: 0,
            },
        });
        records
    }

    /// One interval's stall, charge, memory and interval records.
    fn interval_samples(cgroup: CgroupRef) -> Vec<TraceRecord> {
        vec![
            TraceRecord::Stall {
                end_ns: 6_000_000_000,
                cgroup: Some(cgroup),
                kind: ReclaimKind::Memcg,
                stats: Box::new(StallStats {
                    count: 3,
                    total_ns: 900_000,
                    max_ns: 500_000,
                    scanned: 96,
                    reclaimed: 64,
                    dirty: 1,
                    writeback: 2,
                    buckets: {
                        let mut buckets = [0; STALL_BUCKETS];
                        buckets[stall_bucket(100_000)] = 1;
                        buckets[stall_bucket(300_000)] = 1;
                        buckets[stall_bucket(500_000)] = 1;
                        buckets
                    },
                }),
            },
            TraceRecord::Charge {
                end_ns: 6_000_000_000,
                cgroup: None,
                kind: ChargeKind::RefaultFile,
                charged: 12,
                uncharged: 0,
            },
            TraceRecord::Memory {
                end_ns: 6_000_000_000,
                cgroup,
                sample: MemorySample {
                    usage_bytes: Some(100 << 20),
                    limit_bytes: None,
                    peak_bytes: Some(101 << 20),
                    page_cache_bytes: Some(0),
                    events: Some((
                        MemoryEvents {
                            high: None,
                            max: Some(7),
                            oom: None,
                            oom_kill: Some(1),
                        },
                        Version::V1,
                    )),
                },
            },
            TraceRecord::Memory {
                end_ns: 6_000_000_000,
                cgroup,
                sample: MemorySample::default(),
            },
            TraceRecord::Interval {
                start_ns: 5_000_000_000,
                end_ns: 6_000_000_000,
                charges_from: ChargesFrom::MemoryStat,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        let mut out = Encoder::default();
        for record in samples() {
            record.encode(&mut out);
        }
        let mut input = Decoder::new(&out.bytes);
        for expected in samples() {
            assert_eq!(TraceRecord::decode(&mut input).unwrap(), Some(expected));
        }
        assert!(input.is_empty());
    }

    #[test]
    fn unknown_kinds_are_skipped_whole() {
        let mut out = Encoder::default();
        out.u8(200);
        out.u64(3);
        out.bytes.extend_from_slice(&[9, 9, 9]);
        samples()[0].encode(&mut out);
        let mut input = Decoder::new(&out.bytes);
        assert_eq!(TraceRecord::decode(&mut input).unwrap(), None);
        assert_eq!(
            TraceRecord::decode(&mut input).unwrap(),
            Some(samples()[0].clone())
        );
    }
}
