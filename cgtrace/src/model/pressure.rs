//! Pressure stall information per cgroup: from each sample, the time its
//! tasks stalled since the previous one (some task, and all at once), and
//! the kernel's running averages.

use std::collections::HashMap;

use cgtrace_common::cgroup::CgroupRef;
use serde::Serialize;

use crate::event::{Pressure, PressureSample};

/// One resource's pressure over an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stalled {
    /// Microseconds in which some task stalled on the resource.
    pub some_us: u64,
    /// Microseconds in which all tasks stalled at once (`None` where the
    /// kernel keeps no `full` line).
    pub full_us: Option<u64>,
    /// The kernel's 10-second average of `some` at the end, in hundredths
    /// of a percent.
    pub some_avg10_centi: u32,
}

impl Stalled {
    /// Adds a later interval's stalls: the averages are the later one's.
    pub fn add(&mut self, later: &Self) {
        self.some_us += later.some_us;
        self.full_us = match (self.full_us, later.full_us) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.some_avg10_centi = later.some_avg10_centi;
    }
}

/// What one sample says of the three resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PressureFacts {
    pub memory: Option<Stalled>,
    pub cpu: Option<Stalled>,
    pub io: Option<Stalled>,
}

impl PressureFacts {
    /// Adds a later interval's facts.
    pub fn add(&mut self, later: &Self) {
        for (total, more) in [
            (&mut self.memory, later.memory),
            (&mut self.cpu, later.cpu),
            (&mut self.io, later.io),
        ] {
            if let Some(more) = more {
                total.get_or_insert_default().add(&more);
            }
        }
    }
}

/// The previous sample of each cgroup, to turn totals into stall times.
#[derive(Debug, Default)]
pub struct PressureModel {
    previous: HashMap<(u32, u64), PressureSample>,
}

impl PressureModel {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The stalls since the cgroup's previous sample (since the session
    /// started watching, for its first).
    pub fn sample(&mut self, sample: &PressureSample) -> (CgroupRef, PressureFacts) {
        let before = self
            .previous
            .insert((sample.cgroup.hierarchy, sample.cgroup.id), *sample);
        let stalled = |now: Option<Pressure>, then: Option<Pressure>| {
            let now = now?;
            let then = then.unwrap_or_default();
            Some(Stalled {
                some_us: now.some.total_us.saturating_sub(then.some.total_us),
                full_us: now.full.map(|full| {
                    full.total_us
                        .saturating_sub(then.full.map_or(0, |f| f.total_us))
                }),
                some_avg10_centi: now.some.avg10_centi,
            })
        };
        let before = before.unwrap_or_default();
        (
            sample.cgroup,
            PressureFacts {
                memory: stalled(sample.memory, before.memory),
                cpu: stalled(sample.cpu, before.cpu),
                io: stalled(sample.io, before.io),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use cgtrace_common::cgroup::CgroupRef;

    use super::PressureModel;
    use crate::event::{Pressure, PressureLine, PressureSample};

    fn sample(some_us: u64, full_us: u64, avg10: u32) -> PressureSample {
        PressureSample {
            at_ns: 0,
            cgroup: CgroupRef {
                id: 5,
                hierarchy: 0,
                level: 1,
            },
            memory: Some(Pressure {
                some: PressureLine {
                    avg10_centi: avg10,
                    total_us: some_us,
                    ..PressureLine::default()
                },
                full: Some(PressureLine {
                    total_us: full_us,
                    ..PressureLine::default()
                }),
            }),
            cpu: None,
            io: None,
        }
    }

    #[test]
    fn totals_become_stall_times_between_samples() {
        let mut model = PressureModel::new();
        let (_, first) = model.sample(&sample(1000, 400, 150));
        let memory = first.memory.unwrap();
        assert_eq!((memory.some_us, memory.full_us), (1000, Some(400)));
        let (_, second) = model.sample(&sample(4000, 900, 2500));
        let memory = second.memory.unwrap();
        assert_eq!((memory.some_us, memory.full_us), (3000, Some(500)));
        assert_eq!(memory.some_avg10_centi, 2500);
        assert!(second.cpu.is_none() && second.io.is_none());
        let mut total = first;
        total.add(&second);
        assert_eq!(total.memory.unwrap().some_us, 4000);
    }
}
