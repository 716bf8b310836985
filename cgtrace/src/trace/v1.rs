//! Format 1 read as [`Event`]s. Format 1 stored each interval's results
//! (flows, stalls, charges, and per cgroup its files' figures with memory
//! events and `memory.stat` charges as deltas) closed by an `Interval`
//! record. The adapter gathers an interval's records and gives the events a
//! format-2 recording of the same run would hold: the interval's
//! [`ProbeCounters`], a [`MemorySample`] per cgroup with its counters as
//! running sums from the start of the trace, and the [`Tick`] that closes
//! the interval. Fed those, the models give what format 1 stored.

use std::collections::{HashMap, VecDeque};

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CHARGE_KINDS, ChargeKind},
};

use super::record::{ChargesFrom, TraceRecord};
use crate::{
    cgroup::{Version, stat::MemoryEvents},
    event::{
        CgroupNamed, Charge, Charges, Event, Flow, Health, MemorySample, ProbeCounters, Stall,
        Tick, WorkloadNames,
    },
};

/// A cgroup by what identifies it: its hierarchy and id.
type Key = (u32, u64);

fn key(cgroup: CgroupRef) -> Key {
    (cgroup.hierarchy, cgroup.id)
}

/// Turns format-1 records into events, an interval at a time.
#[derive(Debug, Default)]
pub struct V1Adapter {
    interval: Pending,
    /// Memory events and `memory.stat` charges summed since the start.
    events: HashMap<Key, MemoryEvents>,
    stat_charges: HashMap<Key, Charges>,
    /// Each hierarchy's version, as its memory records said.
    versions: HashMap<u32, Version>,
}

/// The records of the interval being read.
#[derive(Debug, Default)]
struct Pending {
    flows: Vec<Flow>,
    stalls: Vec<Stall>,
    charges: Vec<Charge>,
    memory: Vec<(u64, CgroupRef, crate::cgroup::stat::MemorySample)>,
}

impl V1Adapter {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one record; appends the events it completes to `out`.
    pub fn push(&mut self, record: TraceRecord, out: &mut VecDeque<Event>) {
        match record {
            TraceRecord::CgroupName { cgroup, path } => {
                out.push_back(Event::CgroupNamed(CgroupNamed { cgroup, path }));
            }
            TraceRecord::WorkloadNames {
                path,
                namespace,
                pod,
                container,
            } => out.push_back(Event::WorkloadNamed(WorkloadNames {
                path,
                namespace,
                pod,
                container,
            })),
            TraceRecord::OomKill(kill) => out.push_back(Event::OomKill(kill)),
            TraceRecord::Throttle(span) => out.push_back(Event::ThrottleSpan(span)),
            TraceRecord::Stats {
                monotonic_ns,
                stats,
            } => out.push_back(Event::Health(Health {
                at_ns: monotonic_ns,
                stats,
                // Format 1 wrote its counters once, at the end.
                is_final: true,
            })),
            TraceRecord::CacheFlow {
                owner,
                actor,
                reason,
                pages,
                ..
            } => self.interval.flows.push(Flow {
                owner,
                actor,
                reason,
                pages,
            }),
            TraceRecord::Stall {
                cgroup,
                kind,
                stats,
                ..
            } => self.interval.stalls.push(Stall {
                cgroup,
                kind,
                stats,
            }),
            TraceRecord::Charge {
                cgroup,
                kind,
                charged,
                uncharged,
                ..
            } => self.interval.charges.push(Charge {
                cgroup,
                kind,
                charged,
                uncharged,
            }),
            TraceRecord::Memory {
                end_ns,
                cgroup,
                sample,
            } => {
                if let Some((_, version)) = sample.events {
                    self.versions.insert(cgroup.hierarchy, version);
                }
                self.interval.memory.push((end_ns, cgroup, sample));
            }
            TraceRecord::Interval {
                start_ns,
                end_ns,
                charges_from,
            } => self.close(start_ns, end_ns, charges_from, out),
        }
    }

    fn close(
        &mut self,
        start_ns: u64,
        end_ns: u64,
        charges_from: ChargesFrom,
        out: &mut VecDeque<Event>,
    ) {
        let pending = std::mem::take(&mut self.interval);
        let (tracepoint_charges, stat_charges) = match charges_from {
            ChargesFrom::Tracepoints => (Some(pending.charges), Vec::new()),
            ChargesFrom::MemoryStat => (None, pending.charges),
            ChargesFrom::Nothing => (None, Vec::new()),
        };
        out.push_back(Event::Counters(Box::new(ProbeCounters {
            start_ns,
            end_ns,
            flows: pending.flows,
            stalls: pending.stalls,
            charges: tracepoint_charges,
            files: None,
        })));
        // This interval's memory.stat charges, per cgroup.
        let mut interval_stat: HashMap<Key, Charges> = HashMap::new();
        for charge in stat_charges {
            let Some(cgroup) = charge.cgroup else {
                continue;
            };
            interval_stat
                .entry(key(cgroup))
                .or_insert([(0, 0); CHARGE_KINDS])[charge.kind as usize] =
                (charge.charged, charge.uncharged);
        }
        for (at_ns, cgroup, sample) in pending.memory {
            let events = sample.events.map(|(delta, _)| {
                let total = self.events.entry(key(cgroup)).or_default();
                *total = total.plus(&delta);
                *total
            });
            let stat_charges = (charges_from == ChargesFrom::MemoryStat).then(|| {
                let total = self
                    .stat_charges
                    .entry(key(cgroup))
                    .or_insert([(0, 0); CHARGE_KINDS]);
                if let Some(delta) = interval_stat.get(&key(cgroup)) {
                    for kind in ChargeKind::ALL {
                        let (slot, more) = (&mut total[kind as usize], delta[kind as usize]);
                        *slot = (slot.0 + more.0, slot.1 + more.1);
                    }
                }
                *total
            });
            out.push_back(Event::Memory(Box::new(MemorySample {
                at_ns,
                cgroup,
                version: self
                    .versions
                    .get(&cgroup.hierarchy)
                    .copied()
                    .unwrap_or(Version::V1),
                usage_bytes: sample.usage_bytes,
                limit_bytes: sample.limit_bytes,
                peak_bytes: sample.peak_bytes,
                page_cache_bytes: sample.page_cache_bytes,
                events,
                stat_charges,
            })));
        }
        out.push_back(Event::Tick(Tick { start_ns, end_ns }));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use cgtrace_common::{
        cgroup::CgroupRef,
        pagecache::{CacheReason, ChargeKind},
    };

    use super::V1Adapter;
    use crate::{
        cgroup::{
            Version,
            stat::{MemoryEvents, MemorySample},
        },
        event::Event,
        trace::record::{ChargesFrom, TraceRecord},
    };

    const APP: CgroupRef = CgroupRef {
        id: 7,
        hierarchy: 4,
        level: 1,
    };

    fn memory(end_ns: u64, max: u64) -> TraceRecord {
        TraceRecord::Memory {
            end_ns,
            cgroup: APP,
            sample: MemorySample {
                usage_bytes: Some(1),
                events: Some((
                    MemoryEvents {
                        max: Some(max),
                        ..MemoryEvents::default()
                    },
                    Version::V2,
                )),
                ..MemorySample::default()
            },
        }
    }

    fn interval(start_ns: u64, end_ns: u64, charges_from: ChargesFrom) -> TraceRecord {
        TraceRecord::Interval {
            start_ns,
            end_ns,
            charges_from,
        }
    }

    #[test]
    fn an_interval_becomes_counters_samples_and_a_tick() {
        let mut adapter = V1Adapter::new();
        let mut out = VecDeque::new();
        adapter.push(
            TraceRecord::CacheFlow {
                end_ns: 20,
                owner: Some(APP),
                actor: None,
                reason: CacheReason::OwnLimit,
                pages: 5,
            },
            &mut out,
        );
        adapter.push(memory(20, 3), &mut out);
        adapter.push(
            TraceRecord::Charge {
                end_ns: 20,
                cgroup: Some(APP),
                kind: ChargeKind::File,
                charged: 10,
                uncharged: 4,
            },
            &mut out,
        );
        assert!(out.is_empty(), "nothing before the interval closes");
        adapter.push(interval(10, 20, ChargesFrom::MemoryStat), &mut out);
        let events: Vec<Event> = out.drain(..).collect();
        assert_eq!(events.len(), 3);
        let Event::Counters(counters) = &events[0] else {
            panic!("counters first: {events:?}");
        };
        assert_eq!((counters.start_ns, counters.end_ns), (10, 20));
        assert_eq!(counters.flows.len(), 1);
        assert!(counters.charges.is_none(), "memory.stat charges");
        let Event::Memory(sample) = &events[1] else {
            panic!("then the sample: {events:?}");
        };
        assert_eq!(sample.version, Version::V2);
        assert_eq!(sample.events.unwrap().max, Some(3));
        assert_eq!(
            sample.stat_charges.unwrap()[ChargeKind::File as usize],
            (10, 4)
        );
        assert!(matches!(events[2], Event::Tick(_)));

        // The next interval's counters add up from there.
        adapter.push(memory(30, 2), &mut out);
        adapter.push(interval(20, 30, ChargesFrom::MemoryStat), &mut out);
        let Some(Event::Memory(sample)) = out.get(1) else {
            panic!("{out:?}");
        };
        assert_eq!(sample.events.unwrap().max, Some(5));
        assert_eq!(
            sample.stat_charges.unwrap()[ChargeKind::File as usize],
            (10, 4),
            "no charge records this time"
        );
    }

    #[test]
    fn tracepoint_charges_stay_with_the_counters() {
        let mut adapter = V1Adapter::new();
        let mut out = VecDeque::new();
        adapter.push(
            TraceRecord::Charge {
                end_ns: 20,
                cgroup: None,
                kind: ChargeKind::RefaultFile,
                charged: 12,
                uncharged: 0,
            },
            &mut out,
        );
        adapter.push(interval(10, 20, ChargesFrom::Tracepoints), &mut out);
        let Some(Event::Counters(counters)) = out.front() else {
            panic!("{out:?}");
        };
        assert_eq!(counters.charges.as_ref().map(Vec::len), Some(1));
    }
}
