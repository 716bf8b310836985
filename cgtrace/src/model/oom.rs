//! Pairs the probe's OOM records with the kernel log's.
//!
//! The probe sees every kill the moment the victim is marked; the kernel log
//! says the same thing in words a moment later ("Killed process ...", after
//! an `oom-kill:constraint=...` summary unless ratelimited). A probe kill
//! waits a short while for its log twin: the log confirms (or corrects) the
//! constraint and names the constraining memcg. Kills from before cgtrace
//! started exist only in the log and pass straight through. No kill is
//! reported twice, and none is held longer than the hold time.

use std::collections::{HashMap, VecDeque};

use cgtrace_common::cgroup::CgroupRef;

use crate::event::{ConstraintFoundBy, OomKill, OomSource};

/// How long a kill waits for its twin from the other source.
pub const DEFAULT_HOLD_NS: u64 = 300_000_000;

/// Log kills older than this before attach cannot have a probe twin.
const ATTACH_MARGIN_NS: u64 = 1_000_000_000;

/// How many emitted probe kills are remembered to drop late log twins.
const REMEMBERED: usize = 4096;

#[derive(Debug)]
pub struct OomCorrelator {
    hold_ns: u64,
    /// `CLOCK_MONOTONIC` when the probe was attached; `None` without a probe.
    attach_ns: Option<u64>,
    pending_probe: Vec<(OomKill, u64)>,
    pending_log: Vec<(OomKill, u64)>,
    emitted_probe: VecDeque<u32>,
    /// Last `oom_kill` counter seen per victim memcg.
    oom_kill_counters: HashMap<CgroupRef, u64>,
}

impl OomCorrelator {
    #[must_use]
    pub fn new(attach_ns: Option<u64>, hold_ns: u64) -> Self {
        Self {
            hold_ns,
            attach_ns,
            pending_probe: Vec::new(),
            pending_log: Vec::new(),
            emitted_probe: VecDeque::new(),
            oom_kill_counters: HashMap::new(),
        }
    }

    /// A kill from the probe, seen at `now_ns`. Returns the kills to report now.
    pub fn probe(&mut self, mut kill: OomKill, now_ns: u64) -> Vec<OomKill> {
        self.mark_counted(&mut kill);
        let tid = victim_tid(&kill);
        if let Some(at) = self
            .pending_log
            .iter()
            .position(|(l, _)| l.victim.pid == tid)
        {
            let (log, _) = self.pending_log.swap_remove(at);
            return vec![self.emit_probe(merge(kill, &log))];
        }
        self.pending_probe.push((kill, now_ns + self.hold_ns));
        Vec::new()
    }

    /// A kill from the kernel log, read at `now_ns`.
    pub fn log(&mut self, kill: OomKill, now_ns: u64) -> Vec<OomKill> {
        if let Some(at) = self
            .pending_probe
            .iter()
            .position(|(p, _)| victim_tid(p) == kill.victim.pid)
        {
            let (probe, _) = self.pending_probe.swap_remove(at);
            return vec![self.emit_probe(merge(probe, &kill))];
        }
        if self.emitted_probe.contains(&kill.victim.pid) && self.could_be_live(&kill) {
            // Its probe twin was already reported (the log line came late).
            return Vec::new();
        }
        if self.could_be_live(&kill) {
            self.pending_log.push((kill, now_ns + self.hold_ns));
            return Vec::new();
        }
        vec![kill]
    }

    /// Kills whose wait is over at `now_ns`, oldest first.
    pub fn expire(&mut self, now_ns: u64) -> Vec<OomKill> {
        let mut out = Vec::new();
        let mut index = 0;
        while index < self.pending_probe.len() {
            if self.pending_probe[index].1 <= now_ns {
                let (kill, _) = self.pending_probe.remove(index);
                out.push(self.emit_probe(kill));
            } else {
                index += 1;
            }
        }
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_log)
            .into_iter()
            .partition(|(_, deadline)| *deadline <= now_ns);
        self.pending_log = keep;
        out.extend(due.into_iter().map(|(kill, _)| kill));
        out.sort_by_key(|k| k.monotonic_ns);
        out
    }

    /// Everything still waiting, for a clean exit.
    pub fn flush(&mut self) -> Vec<OomKill> {
        self.expire(u64::MAX)
    }

    /// The earliest deadline of a waiting kill.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending_probe
            .iter()
            .chain(&self.pending_log)
            .map(|(_, deadline)| *deadline)
            .min()
    }

    fn could_be_live(&self, kill: &OomKill) -> bool {
        self.attach_ns
            .is_some_and(|attach| kill.monotonic_ns + ATTACH_MARGIN_NS >= attach)
    }

    fn emit_probe(&mut self, kill: OomKill) -> OomKill {
        if self.emitted_probe.len() >= REMEMBERED {
            self.emitted_probe.pop_front();
        }
        self.emitted_probe.push_back(victim_tid(&kill));
        kill
    }

    /// The kernel bumps the victim memcg's `oom_kill` counter only for real
    /// kills; an unchanged counter means it hurried along an exiting task.
    fn mark_counted(&mut self, kill: &mut OomKill) {
        let (Some(memcg), Some(counter)) = (kill.victim.cgroup_ref, kill.victim_memcg_oom_kills)
        else {
            return;
        };
        let previous = self.oom_kill_counters.insert(memcg, counter);
        kill.counted_as_kill = Some(previous.is_none_or(|p| p != counter));
    }
}

fn victim_tid(kill: &OomKill) -> u32 {
    kill.victim.tid.unwrap_or(kill.victim.pid)
}

/// The probe's record, confirmed or corrected by the kernel's own words.
fn merge(mut probe: OomKill, log: &OomKill) -> OomKill {
    debug_assert_eq!(probe.source, OomSource::Probe);
    if log.constraint_found_by == ConstraintFoundBy::KernelLog {
        let exact = probe.constraint_found_by == ConstraintFoundBy::OomControl;
        if !exact {
            probe.constraint = log.constraint;
            probe.constraint_found_by = ConstraintFoundBy::KernelLog;
            let same_memcg = match (&probe.oom_memcg, &log.oom_memcg) {
                (Some(p), Some(l)) => l.path.is_none() || p.path == l.path,
                (None, None) => true,
                _ => false,
            };
            if !same_memcg {
                probe.oom_memcg.clone_from(&log.oom_memcg);
            }
        }
    }
    if probe.victim.cgroup.is_none() {
        probe.victim.cgroup.clone_from(&log.victim.cgroup);
    }
    if let Some(memcg) = &mut probe.oom_memcg
        && memcg.path.is_none()
    {
        memcg.path = log.oom_memcg.as_ref().and_then(|m| m.path.clone());
    }
    if log.group_kill == Some(true) {
        probe.group_kill = Some(true);
    }
    probe
}

#[cfg(test)]
mod tests {
    use cgtrace_common::cgroup::CgroupRef;

    use super::OomCorrelator;
    use crate::event::{
        Constraint, ConstraintFoundBy, LimitKind, OomKill, OomMemcg, OomSource, Task, VictimMemory,
    };

    const SECOND: u64 = 1_000_000_000;
    const HOLD: u64 = SECOND / 4;

    fn memcg(path: &str, limit: u64, from: &'static str) -> OomMemcg {
        OomMemcg {
            path: Some(path.into()),
            id: None,
            limit_bytes: Some(limit),
            usage_bytes: Some(limit),
            limit_kind: LimitKind::Memory,
            values_from: from,
            cgroup_ref: None,
        }
    }

    fn kill(source: OomSource, pid: u32, at: u64) -> OomKill {
        OomKill {
            monotonic_ns: at,
            source,
            victim: Task {
                pid,
                tid: (source == OomSource::Probe).then_some(pid),
                comm: "hog".into(),
                uid: Some(0),
                cgroup: Some("/a/b".into()),
                cgroup_ref: Some(CgroupRef {
                    id: 9,
                    hierarchy: 4,
                    level: 2,
                }),
            },
            trigger: None,
            constraint: Constraint::Memcg,
            constraint_found_by: if source == OomSource::Probe {
                ConstraintFoundBy::LimitWalk
            } else {
                ConstraintFoundBy::KernelLog
            },
            oom_memcg: Some(memcg(
                "/a",
                100,
                if source == OomSource::Probe {
                    "kernel"
                } else {
                    "kernel_log"
                },
            )),
            memory: VictimMemory::default(),
            oom_score_adj: Some(0),
            group_kill: Some(false),
            victim_memcg_oom_kills: (source == OomSource::Probe).then_some(u64::from(pid)),
            counted_as_kill: None,
            incomplete: false,
        }
    }

    #[test]
    fn probe_kill_waits_for_its_log_twin_and_is_reported_once() {
        let mut c = OomCorrelator::new(Some(10 * SECOND), HOLD);
        assert!(
            c.probe(kill(OomSource::Probe, 7, 20 * SECOND), 20 * SECOND)
                .is_empty()
        );
        let out = c.log(
            kill(OomSource::KernelLog, 7, 20 * SECOND + 1000),
            20 * SECOND + 10,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].source, OomSource::Probe);
        assert_eq!(out[0].constraint_found_by, ConstraintFoundBy::KernelLog);
        assert_eq!(
            out[0].oom_memcg.as_ref().unwrap().values_from,
            "kernel",
            "in-kernel values kept"
        );
        assert!(c.flush().is_empty());
    }

    #[test]
    fn log_corrects_a_wrong_limit_walk() {
        let mut c = OomCorrelator::new(Some(0), HOLD);
        c.probe(kill(OomSource::Probe, 7, SECOND), SECOND);
        let mut log = kill(OomSource::KernelLog, 7, SECOND);
        log.oom_memcg = Some(memcg("/a/b", 50, "kernel_log"));
        let out = c.log(log, SECOND);
        let m = out[0].oom_memcg.as_ref().unwrap();
        assert_eq!(m.path.as_deref(), Some("/a/b"));
        assert_eq!(m.values_from, "kernel_log");

        let mut global = kill(OomSource::KernelLog, 8, SECOND);
        global.constraint = Constraint::Global;
        global.oom_memcg = None;
        c.probe(kill(OomSource::Probe, 8, SECOND), SECOND);
        let out = c.log(global, SECOND);
        assert_eq!(out[0].constraint, Constraint::Global);
        assert!(out[0].oom_memcg.is_none());
    }

    #[test]
    fn unmatched_kills_are_released_at_their_deadline() {
        let mut c = OomCorrelator::new(Some(0), HOLD);
        c.probe(kill(OomSource::Probe, 1, SECOND), SECOND);
        assert!(
            c.log(kill(OomSource::KernelLog, 2, SECOND), SECOND)
                .is_empty()
        );
        assert_eq!(c.next_deadline(), Some(SECOND + HOLD));
        assert!(c.expire(SECOND + HOLD - 1).is_empty());
        let out = c.expire(SECOND + HOLD);
        let sources: Vec<_> = out.iter().map(|k| (k.victim.pid, k.source)).collect();
        assert_eq!(sources, [(1, OomSource::Probe), (2, OomSource::KernelLog)]);
        // A late log twin of an emitted probe kill is dropped.
        assert!(
            c.log(kill(OomSource::KernelLog, 1, SECOND), 2 * SECOND)
                .is_empty()
        );
        assert!(c.flush().is_empty());
    }

    #[test]
    fn history_before_attach_passes_through() {
        let mut c = OomCorrelator::new(Some(100 * SECOND), HOLD);
        let out = c.log(kill(OomSource::KernelLog, 3, 5 * SECOND), 100 * SECOND);
        assert_eq!(out.len(), 1);
        let mut without_probe = OomCorrelator::new(None, HOLD);
        assert_eq!(
            without_probe
                .log(kill(OomSource::KernelLog, 3, 5 * SECOND), 0)
                .len(),
            1
        );
    }

    #[test]
    fn an_unchanged_oom_kill_counter_means_not_counted() {
        let mut c = OomCorrelator::new(Some(0), 0);
        let first = kill(OomSource::Probe, 5, SECOND);
        let mut again = kill(OomSource::Probe, 6, SECOND);
        again.victim_memcg_oom_kills = first.victim_memcg_oom_kills;
        c.probe(first, SECOND);
        c.probe(again, SECOND);
        let out = c.expire(SECOND);
        let counted: Vec<_> = out.iter().map(|k| k.counted_as_kill).collect();
        assert_eq!(counted, [Some(true), Some(false)]);
    }
}
