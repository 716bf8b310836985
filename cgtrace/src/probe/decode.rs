//! Ring-buffer records, as the eBPF programs wrote them, decoded into
//! [`Event`]s.

use cgtrace_common::{
    RecordHeader, RecordKind,
    cgroup::{CgroupCreatedRecord, CgroupRemovedRecord},
    oom::{
        ConstraintSource, OOM_FLAG_GROUP_KILL, OOM_FLAG_MEMSW_LIMIT, OOM_FLAG_READ_FAILED,
        OomRecord,
    },
    throttle::ThrottleRecord,
};

use crate::event::{
    Constraint, ConstraintFoundBy, Event, LimitKind, OomKill, OomMemcg, OomSource, Task,
    ThrottleSpan, VictimMemory, comm_to_string,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring-buffer record of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error("ring-buffer record kind {kind} is unknown")]
    UnknownKind { kind: u32 },
    #[error("ring-buffer record of kind {kind:?} has {len} bytes, expected {expected}")]
    WrongSize {
        kind: RecordKind,
        len: usize,
        expected: usize,
    },
}

/// Facts about the running kernel needed to decode records.
#[derive(Clone, Debug)]
pub struct DecodeContext {
    pub page_shift: u32,
    /// `enum oom_constraint` values and their names.
    pub oom_constraints: Vec<(i64, &'static str)>,
}

impl Default for DecodeContext {
    fn default() -> Self {
        Self {
            page_shift: 12,
            oom_constraints: vec![(0, "none"), (1, "cpuset"), (2, "mempolicy"), (3, "memcg")],
        }
    }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], context: &DecodeContext) -> Result<Event, DecodeError> {
    let header: RecordHeader = read_record(bytes).ok_or(DecodeError::Short { len: bytes.len() })?;
    let kind =
        RecordKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
    match kind {
        RecordKind::OomKill => {
            let record: OomRecord = read_exact(bytes, kind)?;
            Ok(Event::OomKill(Box::new(oom_from_record(&record, context))))
        }
        RecordKind::ThrottleSpan => {
            let r: ThrottleRecord = read_exact(bytes, kind)?;
            Ok(Event::ThrottleSpan(ThrottleSpan {
                cgroup: None,
                cgroup_ref: r.cgroup.is_some().then_some(r.cgroup),
                cpu: r.cpu,
                pid: r.pid,
                comm: comm_to_string(&r.comm),
                start_ns: r.start_ns,
                end_ns: r.end_ns,
            }))
        }
        RecordKind::CgroupCreated => {
            let r: CgroupCreatedRecord = read_exact(bytes, kind)?;
            let len = r.path.iter().position(|b| *b == 0).unwrap_or(r.path.len());
            Ok(Event::CgroupCreated(crate::event::CgroupNamed {
                cgroup: r.cgroup,
                path: crate::text::from_bytes(&r.path[..len]),
            }))
        }
        RecordKind::CgroupRemoved => {
            let r: CgroupRemovedRecord = read_exact(bytes, kind)?;
            Ok(Event::CgroupRemoved(crate::event::CgroupRemoved {
                at_ns: r.header.monotonic_ns,
                cgroup: r.cgroup,
            }))
        }
    }
}

/// Copies a `T` out of `bytes`, which must be exactly its size.
fn read_exact<T: Copy>(bytes: &[u8], kind: RecordKind) -> Result<T, DecodeError> {
    let expected = std::mem::size_of::<T>();
    read_record(bytes)
        .filter(|_| bytes.len() == expected)
        .ok_or(DecodeError::WrongSize {
            kind,
            len: bytes.len(),
            expected,
        })
}

/// Copies a `T` out of the front of `bytes` if it is long enough.
fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above; read_unaligned copes with any
    // alignment, and T is one of the plain-integer record types, for which
    // every bit pattern is valid.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn oom_from_record(r: &OomRecord, context: &DecodeContext) -> OomKill {
    let page = |pages: u64| pages << context.page_shift;
    let rss = |pages: i64| page(u64::try_from(pages).unwrap_or(0));
    let source = ConstraintSource::from_u8(r.constraint_source);
    let (constraint, found_by) = match source {
        ConstraintSource::OomControl => {
            let name = context
                .oom_constraints
                .iter()
                .find(|(value, _)| *value == i64::from(r.oc_constraint))
                .map(|(_, name)| *name);
            let constraint = match (r.oom_memcg.is_some(), name) {
                (true, _) | (false, Some("memcg")) => Constraint::Memcg,
                (false, Some("cpuset")) => Constraint::Cpuset,
                (false, Some("mempolicy")) => Constraint::Mempolicy,
                (false, Some("none")) => Constraint::Global,
                (false, _) => Constraint::Unknown,
            };
            (constraint, ConstraintFoundBy::OomControl)
        }
        ConstraintSource::LimitWalk => (Constraint::Memcg, ConstraintFoundBy::LimitWalk),
        // The walk ran and found no memcg at its limit.
        ConstraintSource::None if r.flags & OOM_FLAG_READ_FAILED == 0 => {
            (Constraint::Global, ConstraintFoundBy::LimitWalk)
        }
        ConstraintSource::None => (Constraint::Unknown, ConstraintFoundBy::Unknown),
    };
    let oom_memcg = r.oom_memcg.is_some().then(|| OomMemcg {
        path: None,
        id: Some(r.oom_memcg.id),
        limit_bytes: Some(page(r.oom_memcg_limit_pages)),
        usage_bytes: Some(page(r.oom_memcg_usage_pages)),
        limit_kind: if r.flags & OOM_FLAG_MEMSW_LIMIT == 0 {
            LimitKind::Memory
        } else {
            LimitKind::MemorySwap
        },
        values_from: "kernel",
        cgroup_ref: Some(r.oom_memcg),
    });
    let incomplete = r.flags & OOM_FLAG_READ_FAILED != 0;
    let known = |value: u64| (!incomplete || value != 0).then_some(value);
    OomKill {
        monotonic_ns: r.header.monotonic_ns,
        source: OomSource::Probe,
        victim: Task {
            pid: r.victim_tgid,
            tid: Some(r.victim_tid),
            comm: comm_to_string(&r.victim_comm),
            uid: Some(r.victim_uid),
            cgroup: None,
            cgroup_ref: r.victim_memcg.is_some().then_some(r.victim_memcg),
        },
        trigger: Some(Task {
            pid: r.trigger_tgid,
            tid: Some(r.trigger_tid),
            comm: comm_to_string(&r.trigger_comm),
            uid: None,
            cgroup: None,
            cgroup_ref: r.trigger_memcg.is_some().then_some(r.trigger_memcg),
        }),
        constraint,
        constraint_found_by: found_by,
        oom_memcg,
        memory: VictimMemory {
            total_vm_bytes: known(page(r.total_vm_pages)),
            anon_rss_bytes: known(rss(r.anon_rss_pages)),
            file_rss_bytes: known(rss(r.file_rss_pages)),
            shmem_rss_bytes: known(rss(r.shmem_rss_pages)),
            pgtables_bytes: known(r.pgtables_bytes),
        },
        oom_score_adj: Some(r.oom_score_adj),
        group_kill: Some(r.flags & OOM_FLAG_GROUP_KILL != 0),
        victim_memcg_oom_kills: known(r.victim_memcg_oom_kills),
        counted_as_kill: None,
        incomplete,
    }
}

#[cfg(test)]
mod tests {
    use cgtrace_common::{
        RecordHeader, RecordKind,
        cgroup::CgroupRef,
        oom::{ConstraintSource, OOM_FLAG_GROUP_KILL, OomRecord},
    };

    use super::{Constraint, ConstraintFoundBy, DecodeContext, DecodeError, Event, decode};

    fn record() -> OomRecord {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"memhog");
        OomRecord {
            header: RecordHeader {
                kind: RecordKind::OomKill as u32,
                size: 200,
                monotonic_ns: 123_456_789,
            },
            victim_tgid: 4242,
            victim_tid: 4243,
            trigger_tgid: 4242,
            trigger_tid: 4243,
            victim_uid: 1000,
            oom_score_adj: -500,
            constraint_source: ConstraintSource::LimitWalk as u8,
            flags: OOM_FLAG_GROUP_KILL,
            victim_comm: comm,
            trigger_comm: comm,
            victim_memcg: CgroupRef {
                id: 77,
                hierarchy: 4,
                level: 2,
            },
            trigger_memcg: CgroupRef {
                id: 77,
                hierarchy: 4,
                level: 2,
            },
            oom_memcg: CgroupRef {
                id: 70,
                hierarchy: 4,
                level: 1,
            },
            oom_memcg_limit_pages: 25_600,
            oom_memcg_usage_pages: 25_590,
            total_vm_pages: 52_000,
            anon_rss_pages: 25_000,
            file_rss_pages: 300,
            shmem_rss_pages: -2,
            pgtables_bytes: 270_336,
            victim_memcg_oom_kills: 1,
            oc_totalpages: 0,
            oc_constraint: 0,
            padding: 0,
        }
    }

    fn bytes_of(r: &OomRecord) -> Vec<u8> {
        // SAFETY: OomRecord is a padding-free repr(C) record of integers.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(r).cast::<u8>(), size_of::<OomRecord>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_an_oom_record() {
        let Ok(Event::OomKill(kill)) = decode(&bytes_of(&record()), &DecodeContext::default())
        else {
            panic!("not decoded");
        };
        assert_eq!(kill.victim.pid, 4242);
        assert_eq!(kill.victim.tid, Some(4243));
        assert_eq!(kill.victim.comm, "memhog");
        assert_eq!(kill.victim.uid, Some(1000));
        assert_eq!(kill.constraint, Constraint::Memcg);
        assert_eq!(kill.constraint_found_by, ConstraintFoundBy::LimitWalk);
        let memcg = kill.oom_memcg.unwrap();
        assert_eq!(memcg.limit_bytes, Some(100 << 20));
        assert_eq!(memcg.usage_bytes, Some(25_590 * 4096));
        assert_eq!(kill.memory.anon_rss_bytes, Some(25_000 * 4096));
        assert_eq!(
            kill.memory.shmem_rss_bytes,
            Some(0),
            "negative counters clamp to 0"
        );
        assert_eq!(kill.memory.pgtables_bytes, Some(270_336));
        assert_eq!(kill.oom_score_adj, Some(-500));
        assert_eq!(kill.group_kill, Some(true));
        assert!(!kill.incomplete);
    }

    #[test]
    fn no_memcg_at_its_limit_is_a_global_oom() {
        let mut r = record();
        r.constraint_source = ConstraintSource::None as u8;
        r.oom_memcg = CgroupRef::default();
        let Ok(Event::OomKill(kill)) = decode(&bytes_of(&r), &DecodeContext::default()) else {
            panic!("not decoded");
        };
        assert_eq!(kill.constraint, Constraint::Global);
        assert!(kill.oom_memcg.is_none());
    }

    #[test]
    fn oom_control_gives_the_exact_constraint() {
        let mut r = record();
        r.constraint_source = ConstraintSource::OomControl as u8;
        r.oom_memcg = CgroupRef::default();
        r.oc_constraint = 1;
        let Ok(Event::OomKill(kill)) = decode(&bytes_of(&r), &DecodeContext::default()) else {
            panic!("not decoded");
        };
        assert_eq!(kill.constraint, Constraint::Cpuset);
        assert_eq!(kill.constraint_found_by, ConstraintFoundBy::OomControl);
    }

    #[test]
    fn rejects_bad_records() {
        let good = bytes_of(&record());
        let context = DecodeContext::default();
        assert_eq!(
            decode(&good[..8], &context),
            Err(DecodeError::Short { len: 8 })
        );
        assert!(matches!(
            decode(&good[..199], &context),
            Err(DecodeError::WrongSize { .. })
        ));
        let mut unknown = good.clone();
        unknown[0] = 99;
        assert_eq!(
            decode(&unknown, &context),
            Err(DecodeError::UnknownKind { kind: 99 })
        );
        let mut longer = good;
        longer.push(0);
        assert!(matches!(
            decode(&longer, &context),
            Err(DecodeError::WrongSize { .. })
        ));
    }
}
