//! Throttle spans grouped the way the kernel counts them.
//!
//! The kernel counts a period as throttled (`cpu.stat nr_throttled`) when
//! any of the group's per-CPU run queues was throttled at the period's end;
//! each run queue gives its own span, and all are unthrottled together by
//! the period timer. Spans that overlap in time therefore belong to one
//! throttled period.

use crate::event::ThrottleSpan;

/// The number of throttled periods among `spans` (of one group): clusters
/// of spans that overlap in time.
#[must_use]
pub fn periods(spans: &[ThrottleSpan]) -> u64 {
    let mut ranges: Vec<(u64, u64)> = spans.iter().map(|s| (s.start_ns, s.end_ns)).collect();
    ranges.sort_unstable();
    let mut count = 0;
    let mut cluster_end = None;
    for (start, end) in ranges {
        match cluster_end {
            Some(current) if start <= current => cluster_end = Some(current.max(end)),
            _ => {
                count += 1;
                cluster_end = Some(end);
            }
        }
    }
    count
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
    let mut durations: Vec<u64> = spans.iter().map(ThrottleSpan::duration_ns).collect();
    durations.sort_unstable();
    let p99_ns =
        (!durations.is_empty()).then(|| durations[(durations.len() * 99).div_ceil(100).max(1) - 1]);
    SpanStats {
        spans: durations.len() as u64,
        periods: periods(spans),
        total_ns: durations.iter().sum(),
        p99_ns,
        max_ns: durations.last().copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::periods;
    use crate::event::ThrottleSpan;

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
}
