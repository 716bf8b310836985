//! Where a group's CFS period timer expires, estimated from where its
//! throttle spans end, and the expiries a throttle covered.
//!
//! The kernel counts throttled periods at the period timer's expiries: each
//! expiry that finds the group throttled adds the periods that went by
//! (`nr_throttled += overrun` in `do_sched_cfs_period_timer`). The timer
//! keeps its phase for as long as the period stays the same: each expiry
//! and each restart after it idled (`start_cfs_bandwidth`) move it on by
//! whole periods (`hrtimer_forward_now`).
//!
//! So the count a throttle earns is the number of expiries between its
//! start and its end, not its length over the period. A span's end is seen
//! at the first context switch after the unthrottle: at once on a CPU the
//! group left idle, but up to a scheduler slice later where another task
//! holds the CPU, and longer still on a virtual CPU waiting for its host's.
//! A length-based count took such a late end for another period; counting
//! expiries does not, as long as the end is less than a period late. A
//! throttle ended early by the slack timer (runtime another CPU returned)
//! covers no expiry, and the kernel does not count it either.
//!
//! Most spans end at an expiry, seen a moment later, and so the ends'
//! residues modulo the period cluster just after the timer's phase, spread
//! upwards by the delays: the cluster's lower edge estimates the phase. It
//! is found from the densest window of ends (the most common delay), then
//! followed down through ends no further apart than that window's width
//! (smaller delays), for at most a tenth of the period. Slack-timer ends
//! fall anywhere and rarely form a cluster.

use std::collections::VecDeque;

/// How many of the latest ends a [`PeriodClock`] estimates the phase from.
const ENDS_KEPT: usize = 64;

/// The width of the cluster of ends sought, as a fraction of the period
/// (2 ms of a 100 ms period): wide enough for the moment between an expiry
/// and the switches it causes, narrow enough that the estimate is never
/// more than that before the true phase.
const CLUSTER_FRACTION: u64 = 50;

/// The timer phase of one group, learnt from the ends of its latest spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeriodClock {
    period_ns: u64,
    /// Ends modulo `period_ns`, the latest last.
    residues: VecDeque<u64>,
}

impl PeriodClock {
    /// A span of the group ended at `end_ns` while its period was
    /// `period_ns`; ends seen under another period are forgotten (a new
    /// period restarts the timer at a new phase).
    pub fn observe(&mut self, end_ns: u64, period_ns: u64) {
        if period_ns == 0 {
            return;
        }
        if period_ns != self.period_ns {
            self.period_ns = period_ns;
            self.residues.clear();
        }
        if self.residues.len() == ENDS_KEPT {
            self.residues.pop_front();
        }
        self.residues.push_back(end_ns % period_ns);
    }

    /// The timer's phase (an expiry's time modulo `period_ns`), if ends
    /// were seen under that period.
    #[must_use]
    pub fn phase(&self, period_ns: u64) -> Option<u64> {
        if period_ns != self.period_ns {
            return None;
        }
        let mut residues: Vec<u64> = self.residues.iter().copied().collect();
        cluster_lower_edge(&mut residues, period_ns)
    }
}

/// The phase of the period timer that `ends` (span ends, nanoseconds)
/// suggest for `period_ns`: the lower edge of their cluster.
#[must_use]
pub fn phase_of(ends: impl Iterator<Item = u64>, period_ns: u64) -> Option<u64> {
    if period_ns == 0 {
        return None;
    }
    let mut residues: Vec<u64> = ends.map(|end| end % period_ns).collect();
    cluster_lower_edge(&mut residues, period_ns)
}

/// How far below the densest window the cluster's edge is followed, as a
/// fraction of the period (10 ms of 100 ms): further than a scheduler slice
/// or two of delay, so that where most ends were seen late the earliest
/// still mark the phase; near enough that stray slack-timer ends below the
/// cluster cannot lead it far.
const EDGE_FRACTION: u64 = 10;

/// The lower edge of the residues' cluster, wrapping round the period's
/// end: the start of the densest window of [`CLUSTER_FRACTION`] of the
/// period, followed down through residues at most that width apart.
fn cluster_lower_edge(residues: &mut [u64], period_ns: u64) -> Option<u64> {
    residues.sort_unstable();
    let n = residues.len();
    let width = period_ns / CLUSTER_FRACTION;
    let mut edge = densest_window_start(residues, period_ns, width)?;
    let mut followed = 0;
    for _ in 1..n {
        let below = (edge + n - 1) % n;
        let gap = upwards(residues[below], residues[edge], period_ns);
        if gap > width || followed + gap > period_ns / EDGE_FRACTION {
            break;
        }
        followed += gap;
        edge = below;
    }
    Some(residues[edge])
}

/// How far residue `to` lies above residue `from`, going up round the
/// period's end.
fn upwards(from: u64, to: u64, period_ns: u64) -> u64 {
    (to + period_ns - from) % period_ns
}

/// The index of the sorted residue that starts the window of `width`
/// holding the most residues, the window wrapping round the period's end;
/// of equally dense windows, the one starting lowest.
fn densest_window_start(residues: &[u64], period_ns: u64, width: u64) -> Option<usize> {
    let n = residues.len();
    let mut best: Option<(usize, usize)> = None;
    // The window starting at residue `i` reaches residue `last` (an index
    // into the residues laid out twice, so that it may wrap); `last` only
    // moves forward as `i` does.
    let mut last = 0;
    for i in 0..n {
        last = last.max(i);
        while last + 1 < i + n && upwards(residues[i], residues[(last + 1) % n], period_ns) <= width
        {
            last += 1;
        }
        let count = last - i + 1;
        if best.is_none_or(|(most, _)| count > most) {
            best = Some((count, i));
        }
    }
    best.map(|(_, start)| start)
}

/// The expiries of a timer of phase `phase_ns` and period `period_ns` in
/// `(start_ns, end_ns]`: the periods the kernel counts for a throttle from
/// `start_ns` to `end_ns`.
#[must_use]
pub fn expiries_between(start_ns: u64, end_ns: u64, phase_ns: u64, period_ns: u64) -> u64 {
    // Expiries at or before `t` (plus one, the same for both ends).
    let upto = |t: u64| (t + period_ns - phase_ns % period_ns) / period_ns;
    upto(end_ns).saturating_sub(upto(start_ns))
}

#[cfg(test)]
mod tests {
    use super::{PeriodClock, expiries_between, phase_of};

    const MS: u64 = 1_000_000;
    const PERIOD: u64 = 100 * MS;

    #[test]
    fn expiries_are_counted_after_the_start_up_to_the_end() {
        let phase = 30 * MS;
        // Throttled 20 ms before an expiry, unthrottled by it.
        assert_eq!(expiries_between(110 * MS, 130 * MS, phase, PERIOD), 1);
        // Seen 40 ms late: still the one expiry.
        assert_eq!(expiries_between(110 * MS, 170 * MS, phase, PERIOD), 1);
        // Two refills went by before it could run again.
        assert_eq!(expiries_between(110 * MS, 230 * MS, phase, PERIOD), 2);
        // Ended by the slack timer before any expiry.
        assert_eq!(expiries_between(140 * MS, 180 * MS, phase, PERIOD), 0);
        // Before the first period ends, and at time zero.
        assert_eq!(expiries_between(0, 30 * MS, phase, PERIOD), 1);
        assert_eq!(expiries_between(0, 29 * MS, phase, PERIOD), 0);
    }

    #[test]
    fn the_phase_is_the_lower_edge_of_the_ends_cluster() {
        // Ends 0 to 1.5 ms after expiries at 37 ms, some much later (a busy
        // CPU), and two slack-timer ends elsewhere.
        let mut ends: Vec<u64> = (0..40u64)
            .map(|k| k * PERIOD + 37 * MS + (k % 4) * MS / 2)
            .collect();
        ends.extend([5 * PERIOD + 60 * MS, 9 * PERIOD + 80 * MS]);
        ends.extend([11 * PERIOD + 45 * MS, 12 * PERIOD + 52 * MS]);
        assert_eq!(phase_of(ends.iter().copied(), PERIOD), Some(37 * MS));
        assert_eq!(phase_of(std::iter::empty(), PERIOD), None);
        assert_eq!(phase_of(ends.iter().copied(), 0), None);
    }

    #[test]
    fn ends_mostly_seen_late_still_mark_the_phase_at_the_earliest() {
        // Expiries at 50 ms; a busy CPU delays most ends 2.5 to 3.5 ms, some
        // less, a few seen at once; a slack-timer end 20 ms before.
        let delays_us = [
            2500, 2700, 3000, 3100, 3300, 3500, 2600, 2900, 3200, 3400, 2800, 3000, 1500, 900, 0,
            200, 2000, 1200,
        ];
        let mut ends: Vec<u64> = delays_us
            .iter()
            .enumerate()
            .map(|(k, d)| (k as u64 + 1) * PERIOD + 50 * MS + d * 1000)
            .collect();
        ends.push(40 * PERIOD + 30 * MS);
        assert_eq!(phase_of(ends.iter().copied(), PERIOD), Some(50 * MS));
        // Every span, throttled 20 ms into its period, counts its expiry.
        let phase = phase_of(ends.iter().copied(), PERIOD).unwrap();
        for (k, end) in ends.iter().take(delays_us.len()).enumerate() {
            let start = k as u64 * PERIOD + 70 * MS;
            assert_eq!(expiries_between(start, *end, phase, PERIOD), 1, "{k}");
        }
    }

    #[test]
    fn the_edge_is_followed_no_further_than_a_tenth_of_the_period() {
        // Ends every 1.5 ms round the whole period (no timer cluster, as if
        // every span ended by the slack timer), and a cluster at 80 ms.
        let mut ends: Vec<u64> = (0..66u64).map(|k| k * PERIOD + k * 1_500_000).collect();
        ends.extend((0..10u64).map(|k| k * PERIOD + 80 * MS + k * 10_000));
        let phase = phase_of(ends.iter().copied(), PERIOD).unwrap();
        assert!((70 * MS..=80 * MS).contains(&phase), "{phase}");
    }

    #[test]
    fn a_cluster_across_the_periods_end_wraps() {
        // Expiries at 99.5 ms: ends seen at 99.5 to 101 ms.
        let ends = (0..30u64).map(|k| k * PERIOD + 99_500_000 + (k % 4) * MS / 2);
        assert_eq!(phase_of(ends, PERIOD), Some(99_500_000));
    }

    #[test]
    fn a_clock_keeps_the_latest_ends_of_one_period() {
        let mut clock = PeriodClock::default();
        assert_eq!(clock.phase(PERIOD), None);
        for k in 0..200u64 {
            clock.observe(k * PERIOD + 12 * MS, PERIOD);
        }
        assert_eq!(clock.residues.len(), super::ENDS_KEPT);
        assert_eq!(clock.phase(PERIOD), Some(12 * MS));
        assert_eq!(clock.phase(50 * MS), None, "another period's phase");
        // The period changed: the timer restarted at another phase.
        clock.observe(7 * MS, 50 * MS);
        assert_eq!(clock.phase(50 * MS), Some(7 * MS));
        assert_eq!(clock.residues.len(), 1);
    }
}
