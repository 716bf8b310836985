//! Throttle spans grouped the way the kernel counts them.
//!
//! The kernel counts a period as throttled (`cpu.stat nr_throttled`) when
//! any of the group's per-CPU run queues was throttled at the period's end;
//! each run queue gives its own span, and all are unthrottled together by
//! the period timer. Spans that overlap in time therefore form one throttle
//! episode, counted once for each expiry of the period timer it covers
//! ([`super::period_clock`]).

use std::collections::HashMap;

use cgtrace_common::cgroup::CgroupRef;

use super::period_clock::{PeriodClock, expiries_between, phase_of};
use crate::event::{Bandwidth, CpuSample, CpuStat, ThrottleSpan};

/// One cpu cgroup over one interval: cgtrace's spans and the kernel's
/// counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInterval {
    pub cgroup: CgroupRef,
    pub spans: SpanStats,
    /// The quota at the interval's end (`None`: not read, the cgroup gone).
    pub bandwidth: Option<Bandwidth>,
    /// The kernel's counters over the interval (`cpu.stat` changes).
    pub kernel: Option<CpuStat>,
    /// CPU time used in the interval, nanoseconds.
    pub usage_ns: Option<u64>,
}

/// What the model remembers of a cgroup between intervals.
#[derive(Debug, Default)]
struct Group {
    spans: Vec<ThrottleSpan>,
    /// The interval's sample, if one came.
    sample: Option<CpuSample>,
    /// The counters at the last close (they count from the session's start).
    stat_before: Option<CpuStat>,
    usage_before: Option<u64>,
    /// The CFS period last read: an interval whose sample is missing (the
    /// group removed, or its sample late) still counts a long throttle once
    /// per period it spans, as the whole recording's count does.
    period_ns: Option<u64>,
    /// The last throttle episode counted, which spans of the next interval
    /// may continue (another CPU's run queue, throttled in the same
    /// period): its periods are not counted twice.
    last_episode: Option<Episode>,
    /// The phase of the group's period timer, from its spans' ends.
    clock: PeriodClock,
}

/// A throttle episode: spans overlapping in time, and the periods it was
/// counted for so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Episode {
    start_ns: u64,
    end_ns: u64,
    periods: u64,
}

/// The kernel's default CFS period (`default_cfs_period()`, 100 ms): a
/// group whose quota has not been read yet has it, unless someone changed it.
const DEFAULT_PERIOD_NS: u64 = 100_000_000;

/// Spans and `cpu.stat` samples, grouped by cgroup and interval.
#[derive(Debug, Default)]
pub struct ThrottleModel {
    groups: HashMap<(u32, u64), (CgroupRef, Group)>,
}

impl ThrottleModel {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A span that ended in the open interval.
    pub fn span(&mut self, span: &ThrottleSpan) {
        let Some(cgroup) = span.cgroup_ref else {
            return;
        };
        self.group(cgroup).spans.push(span.clone());
    }

    /// A cgroup's files at the end of the open interval.
    pub fn cpu(&mut self, sample: &CpuSample) {
        self.group(sample.cgroup).sample = Some(*sample);
    }

    fn group(&mut self, cgroup: CgroupRef) -> &mut Group {
        &mut self
            .groups
            .entry((cgroup.hierarchy, cgroup.id))
            .or_insert_with(|| (cgroup, Group::default()))
            .1
    }

    /// Closes the interval: every cgroup with a quota or with spans in it,
    /// most throttled first.
    pub fn close(&mut self) -> Vec<GroupInterval> {
        let mut rows = Vec::new();
        for (cgroup, group) in self.groups.values_mut() {
            let spans = std::mem::take(&mut group.spans);
            let sample = group.sample.take();
            let limited = sample
                .and_then(|s| s.bandwidth)
                .is_some_and(|b| b.quota_us.is_some());
            let kernel = sample.and_then(|s| s.stat).map(|now| {
                let before = group.stat_before.replace(now).unwrap_or_default();
                now.since(&before)
            });
            let usage_ns = sample
                .and_then(|s| s.usage_ns)
                .map(|now| now.saturating_sub(group.usage_before.replace(now).unwrap_or(0)));
            if !limited && spans.is_empty() {
                continue;
            }
            if let Some(bandwidth) = sample.and_then(|s| s.bandwidth) {
                group.period_ns = Some(bandwidth.period_us.saturating_mul(1000));
            }
            // A span needs a quota, so a group with spans but no quota read
            // yet (just created, its first sample still to come) has one,
            // most likely with the default period.
            let period_ns = group.period_ns.unwrap_or(DEFAULT_PERIOD_NS);
            // The periods are counted below, against the episode the last
            // interval left open.
            let mut stats = span_stats(&spans);
            for span in &spans {
                group.clock.observe(span.end_ns, period_ns);
            }
            let timer = Timer::of(period_ns, group.clock.phase(period_ns));
            stats.periods = new_periods(&spans, timer, &mut group.last_episode);
            rows.push(GroupInterval {
                cgroup: *cgroup,
                spans: stats,
                bandwidth: sample.and_then(|s| s.bandwidth),
                kernel,
                usage_ns,
            });
        }
        rows.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.spans.total_ns),
                r.cgroup.hierarchy,
                r.cgroup.id,
            )
        });
        rows
    }
}

/// The throttled periods among `spans` (of one group) not counted before:
/// as [`periods_in`], but an episode that continues `last` (the previous
/// interval's last) adds only the periods it grew by, so the intervals'
/// counts add up to the whole run's. `last` becomes this interval's last
/// episode.
fn new_periods(spans: &[ThrottleSpan], timer: Option<Timer>, last: &mut Option<Episode>) -> u64 {
    if spans.is_empty() {
        return 0;
    }
    let mut ranges: Vec<(u64, u64)> = spans.iter().map(|s| (s.start_ns, s.end_ns)).collect();
    if let Some(episode) = last {
        ranges.push((episode.start_ns, episode.end_ns));
    }
    let counted_before = last.map_or(0, |e| e.periods);
    let episodes: Vec<Episode> = episodes(ranges)
        .into_iter()
        .map(|(start_ns, end_ns)| Episode {
            start_ns,
            end_ns,
            periods: episode_periods(start_ns, end_ns, timer),
        })
        .collect();
    *last = episodes.last().copied();
    episodes
        .iter()
        .map(|e| e.periods)
        .sum::<u64>()
        .saturating_sub(counted_before)
}

/// Time ranges merged where they overlap, in order.
fn episodes(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(cluster) if start <= cluster.1 => cluster.1 = cluster.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// What is known of a group's period timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timer {
    period_ns: u64,
    /// An expiry's time modulo the period, if spans' ends showed it.
    phase_ns: Option<u64>,
}

impl Timer {
    fn of(period_ns: u64, phase_ns: Option<u64>) -> Option<Self> {
        (period_ns > 0).then_some(Self {
            period_ns,
            phase_ns,
        })
    }

    /// The timer of `period_ns` that the ends of `spans` show.
    fn from_spans(spans: &[ThrottleSpan], period_ns: Option<u64>) -> Option<Self> {
        let period_ns = period_ns?;
        Self::of(
            period_ns,
            phase_of(spans.iter().map(|s| s.end_ns), period_ns),
        )
    }
}

/// The periods the kernel counts for one episode (see [`periods_in`]).
fn episode_periods(start: u64, end: u64, timer: Option<Timer>) -> u64 {
    match timer {
        Some(Timer {
            period_ns,
            phase_ns: Some(phase_ns),
        }) => expiries_between(start, end, phase_ns, period_ns),
        // No end seen yet under this period: by the length, a span ending a
        // moment after the refill that ends it (1 % of a period) counting
        // one period.
        Some(Timer {
            period_ns,
            phase_ns: None,
        }) => 1 + end.saturating_sub(start).saturating_sub(period_ns / 100) / period_ns,
        None => 1,
    }
}

/// The number of throttled periods among `spans` (of one group): clusters
/// of spans that overlap in time, each one period.
#[must_use]
pub fn periods(spans: &[ThrottleSpan]) -> u64 {
    periods_in(spans, None)
}

/// The throttled periods the kernel counts for `spans` (of one group) when
/// its CFS period is `period_ns`. The kernel counts, at each expiry of the
/// period timer, the periods that went by while the group was throttled
/// (`nr_throttled += overrun`), so a throttle that lasts past one refill
/// (the quota's debt was larger than a period's quota, or the timer fired
/// late on a busy host) counts once per period it spans; an episode ending
/// at the first refill after it began counts once, however late its end
/// was seen; one the slack timer ended before any refill counts none. The
/// timer's phase comes from the spans' ends ([`super::period_clock`]).
/// Without the period, an episode counts once.
#[must_use]
pub fn periods_in(spans: &[ThrottleSpan], period_ns: Option<u64>) -> u64 {
    let timer = Timer::from_spans(spans, period_ns);
    episodes(spans.iter().map(|s| (s.start_ns, s.end_ns)).collect())
        .into_iter()
        .map(|(start, end)| episode_periods(start, end, timer))
        .sum()
}

/// One group's spans summed up: count, throttled periods, total, p99, max.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanStats {
    pub spans: u64,
    pub periods: u64,
    pub total_ns: u64,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
}

#[must_use]
pub fn span_stats(spans: &[ThrottleSpan]) -> SpanStats {
    span_stats_in(spans, None)
}

/// [`span_stats`] with the periods counted as the kernel counts them for a
/// CFS period of `period_ns` (see [`periods_in`]).
#[must_use]
pub fn span_stats_in(spans: &[ThrottleSpan], period_ns: Option<u64>) -> SpanStats {
    let mut durations: Vec<u64> = spans.iter().map(ThrottleSpan::duration_ns).collect();
    durations.sort_unstable();
    let p99_ns =
        (!durations.is_empty()).then(|| durations[(durations.len() * 99).div_ceil(100).max(1) - 1]);
    SpanStats {
        spans: durations.len() as u64,
        periods: periods_in(spans, period_ns),
        total_ns: durations.iter().sum(),
        p99_ns,
        max_ns: durations.last().copied(),
    }
}

/// One group's spans over a whole recording, summed as they stream by:
/// count, total, longest and throttled periods, in constant memory.
///
/// Periods need the episodes (spans overlapping in time, on any CPU), and a
/// recorder writes spans nearly but not quite in order, so spans wait as
/// open episodes until the trace is [`EPISODE_WINDOW_NS`] past them (or
/// more than [`OPEN_SPANS`]` / 2` are open); then their periods are counted
/// and they are dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanTally {
    pub spans: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Spans of episodes that may still grow.
    open: Vec<(u64, u64)>,
    /// The latest start seen.
    newest_start_ns: u64,
    /// Periods of the episodes closed so far.
    closed_periods: u64,
    /// The phase of the group's period timer, from the latest spans' ends.
    clock: PeriodClock,
}

/// How long after an episode a span can still arrive and join it.
const EPISODE_WINDOW_NS: u64 = 10_000_000_000;
/// Open spans merged and the settled ones counted once there are this many.
const OPEN_SPANS: usize = 64;

impl SpanTally {
    /// Adds a span; `period_ns` (the group's CFS period as known now)
    /// counts the periods of episodes it settles.
    pub fn add(&mut self, span: &ThrottleSpan, period_ns: Option<u64>) {
        let duration = span.duration_ns();
        self.spans += 1;
        self.total_ns += duration;
        self.max_ns = self.max_ns.max(duration);
        self.newest_start_ns = self.newest_start_ns.max(span.start_ns);
        self.open.push((span.start_ns, span.end_ns));
        // Spans before the group's first sample most likely ran under the
        // default period, as the live model assumes.
        self.clock
            .observe(span.end_ns, period_ns.unwrap_or(DEFAULT_PERIOD_NS));
        if self.open.len() >= OPEN_SPANS {
            self.settle(period_ns);
        }
    }

    /// Merges the open spans into episodes and counts those the window has
    /// passed.
    fn settle(&mut self, period_ns: Option<u64>) {
        let merged = episodes(std::mem::take(&mut self.open));
        let horizon = self.newest_start_ns.saturating_sub(EPISODE_WINDOW_NS);
        let settled = merged.partition_point(|&(_, end)| end < horizon);
        // Spans far out of order could keep many episodes open: past the
        // bound the oldest settle anyway.
        let settled = settled.max(merged.len().saturating_sub(OPEN_SPANS / 2));
        let timer = self.timer(period_ns);
        self.closed_periods += merged[..settled]
            .iter()
            .map(|&(start, end)| episode_periods(start, end, timer))
            .sum::<u64>();
        self.open = merged[settled..].to_vec();
    }

    /// The throttled periods of all the spans, the open episodes counted
    /// with `period_ns` (see [`periods_in`]).
    #[must_use]
    pub fn periods(&self, period_ns: Option<u64>) -> u64 {
        let timer = self.timer(period_ns);
        self.closed_periods
            + episodes(self.open.clone())
                .into_iter()
                .map(|(start, end)| episode_periods(start, end, timer))
                .sum::<u64>()
    }

    fn timer(&self, period_ns: Option<u64>) -> Option<Timer> {
        let period_ns = period_ns?;
        Timer::of(period_ns, self.clock.phase(period_ns))
    }
}

#[cfg(test)]
mod tests {
    use cgtrace_common::cgroup::CgroupRef;

    use super::{SpanTally, ThrottleModel, periods, periods_in};
    use crate::event::{Bandwidth, CpuSample, CpuStat, ThrottleSpan};

    const GROUP: CgroupRef = CgroupRef {
        id: 9,
        hierarchy: 3,
        level: 1,
    };

    fn sample(throttled: u64, quota: Option<u64>) -> CpuSample {
        CpuSample {
            at_ns: 0,
            cgroup: GROUP,
            stat: Some(CpuStat {
                nr_periods: throttled * 2,
                nr_throttled: throttled,
                throttled_ns: throttled * 1000,
                usage_ns: None,
            }),
            bandwidth: Some(Bandwidth {
                quota_us: quota,
                period_us: 100_000,
            }),
            usage_ns: Some(throttled * 10),
        }
    }

    #[test]
    fn intervals_hold_the_spans_and_the_kernels_changes() {
        let mut model = ThrottleModel::new();
        let mut limited = span(0, 50, 0);
        limited.cgroup_ref = Some(GROUP);
        model.span(&limited);
        model.cpu(&sample(3, Some(50_000)));
        let rows = model.close();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].spans.spans, 1);
        assert_eq!(
            rows[0].kernel.unwrap().nr_throttled,
            3,
            "counted from the start"
        );
        model.cpu(&sample(5, Some(50_000)));
        let rows = model.close();
        assert_eq!(
            rows[0].spans.spans, 0,
            "a limited group shows without spans"
        );
        assert_eq!(rows[0].kernel.unwrap().nr_throttled, 2);
        assert_eq!(rows[0].usage_ns, Some(20));
        // No quota and no spans: nothing to show.
        model.cpu(&sample(5, None));
        assert!(model.close().is_empty());
    }

    #[test]
    fn an_interval_without_a_sample_counts_periods_by_the_last_one_read() {
        let mut model = ThrottleModel::new();
        model.cpu(&sample(0, Some(20_000)));
        model.close();
        // The group is removed: its last spans come with no sample, and a
        // 250 ms throttle still spans three 100 ms periods.
        let mut long = span(1000, 1250, 0);
        long.cgroup_ref = Some(GROUP);
        model.span(&long);
        let rows = model.close();
        assert_eq!(rows[0].spans.periods, 3);
        assert_eq!(rows[0].bandwidth, None);
    }

    #[test]
    fn an_episode_across_two_intervals_counts_its_periods_once() {
        let mut model = ThrottleModel::new();
        model.cpu(&sample(0, Some(20_000)));
        model.close();
        // One period's throttle on two CPUs, the second span ending after
        // the interval closed; then a 250 ms throttle closed in two pieces.
        let pieces = [
            vec![span(1000, 1080, 0)],
            vec![span(1010, 1085, 1), span(2000, 2120, 0)],
            vec![span(2100, 2250, 1)],
        ];
        let mut counted = Vec::new();
        for interval in &pieces {
            for piece in interval {
                let mut piece = piece.clone();
                piece.cgroup_ref = Some(GROUP);
                model.span(&piece);
            }
            counted.push(model.close()[0].spans.periods);
        }
        assert_eq!(counted, [1, 2, 1]);
        let all: Vec<_> = pieces.concat();
        assert_eq!(super::periods_in(&all, Some(100_000_000)), 4);
    }

    #[test]
    fn spans_before_the_first_sample_count_by_the_default_period() {
        let mut model = ThrottleModel::new();
        let mut long = span(1000, 1250, 0);
        long.cgroup_ref = Some(GROUP);
        model.span(&long);
        assert_eq!(model.close()[0].spans.periods, 3);
    }

    #[test]
    fn a_tally_counts_as_the_whole_recording_does_in_bounded_memory() {
        let period = Some(100_000_000);
        let mut spans = Vec::new();
        // A day of throttling: three CPUs, each period, each a little late
        // to the trace; some episodes last past a refill.
        for period_index in 0..20_000u64 {
            let base = period_index * 100;
            let length = if period_index % 7 == 0 { 230 } else { 40 };
            for cpu in 0..3 {
                spans.push(span(
                    base + u64::from(cpu),
                    base + length + u64::from(cpu),
                    cpu,
                ));
            }
        }
        // Written as a ring buffer gives them: a little out of order.
        for chunk in spans.chunks_mut(5) {
            chunk.reverse();
        }
        let mut tally = SpanTally::default();
        for s in &spans {
            tally.add(s, period);
        }
        assert_eq!(tally.periods(period), periods_in(&spans, period));
        assert_eq!(tally.spans, 60_000);
        assert_eq!(tally.max_ns, 230_000_000);
        assert!(tally.open.len() < 100, "{} spans open", tally.open.len());
    }

    fn span(start_ms: u64, end_ms: u64, cpu: u32) -> ThrottleSpan {
        ThrottleSpan {
            cgroup: None,
            cgroup_ref: None,
            cpu,
            pid: 1,
            comm: "spin".into(),
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
        }
    }

    #[test]
    fn span_statistics() {
        let spans: Vec<_> = (1..=100)
            .map(|ms| span(ms * 1000, ms * 1000 + ms, 0))
            .collect();
        let stats = super::span_stats(&spans);
        assert_eq!((stats.spans, stats.periods), (100, 100));
        assert_eq!(stats.total_ns, 5050 * 1_000_000);
        assert_eq!(stats.p99_ns, Some(99_000_000));
        assert_eq!(stats.max_ns, Some(100_000_000));
        assert_eq!(super::span_stats(&[]), super::SpanStats::default());
    }

    #[test]
    fn overlapping_spans_on_several_cpus_are_one_period() {
        assert_eq!(periods(&[]), 0);
        let spans = [
            span(20, 100, 0),
            span(30, 101, 1),
            span(125, 200, 0),
            span(120, 200, 1),
            span(320, 400, 0),
        ];
        assert_eq!(periods(&spans), 3);
    }

    #[test]
    fn a_throttle_across_refills_counts_each_period() {
        use super::periods_in;
        let period = Some(100_000_000);
        // Throttled 20 ms into a period, unthrottled at its end: one.
        assert_eq!(periods_in(&[span(20, 100, 0)], period), 1);
        // Unthrottled only at the second refill (or the timer fired late):
        // the kernel counts two.
        assert_eq!(periods_in(&[span(20, 200, 0)], period), 2);
        // A span ending a moment after its refill is still one.
        assert_eq!(periods_in(&[span(0, 100, 0)], period), 1);
        assert_eq!(periods_in(&[span(20, 200, 0)], None), 1);
    }

    #[test]
    fn late_ends_and_slack_unthrottles_count_as_the_timer_does() {
        let period = Some(100_000_000);
        // Twenty periods, each throttled and unthrottled by the timer's
        // expiry at its end (phase 0), the end seen at once or 1 ms late...
        let mut spans: Vec<_> = (0..20u64)
            .map(|k| span(k * 100 + 60, (k + 1) * 100 + k % 2, 0))
            .collect();
        // ...three seen 20 ms late, on a CPU another task held, after a
        // throttle early in the period...
        for k in [1u64, 3, 5] {
            spans[usize::try_from(k).unwrap()] = span(k * 100 + 5, (k + 1) * 100 + 20, 1);
        }
        // ...and two throttles the slack timer ended within their period,
        // when another CPU gave back runtime: the kernel counts none.
        spans.extend([span(710, 740, 1), span(910, 950, 0)]);
        assert_eq!(periods_in(&spans, period), 20);
        let mut tally = SpanTally::default();
        for s in &spans {
            tally.add(s, period);
        }
        assert_eq!(tally.periods(period), 20);
        // The live model, a second at a time, counts the same.
        let mut model = ThrottleModel::new();
        let mut counted = 0;
        for second in spans.chunks(7) {
            for s in second {
                let mut s = s.clone();
                s.cgroup_ref = Some(GROUP);
                model.span(&s);
            }
            model.cpu(&sample(0, Some(20_000)));
            counted += model.close()[0].spans.periods;
        }
        assert_eq!(counted, 20);
    }
}
