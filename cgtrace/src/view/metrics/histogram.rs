//! A Prometheus histogram of durations filled from counts the kernel has
//! already bucketed: the probe's reclaim-stall histograms (four buckets
//! per power of two of nanoseconds) fold into it exactly, with no
//! observation replayed.
//!
//! The bounds are every other power of two of nanoseconds from 2^10
//! (about 1 µs) to 2^34 (about 17 s). Each is also a bound of the probe's
//! buckets, so every probe bucket falls wholly under one of them: the
//! exposed counts are the kernel's, not estimates. A duration of exactly a
//! bound counts in the bucket above it (the probe's buckets start at their
//! bound), a difference of one nanosecond.

use std::sync::{Arc, Mutex, PoisonError};

use cgtrace_common::pagecache::{STALL_BUCKETS, StallStats, stall_bucket_floor};
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Powers of two of nanoseconds that bound the buckets (below +Inf).
const BOUND_LOG2: [u32; 13] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34];

/// Buckets: one per bound, then +Inf.
const BUCKETS: usize = BOUND_LOG2.len() + 1;

#[derive(Debug, Default)]
struct Inner {
    count: u64,
    sum_ns: u64,
    /// Counts per bucket, not cumulative.
    buckets: [u64; BUCKETS],
}

/// A histogram of durations in seconds; clones share their counts.
#[derive(Clone, Debug, Default)]
pub struct Durations {
    inner: Arc<Mutex<Inner>>,
}

/// The exposed bucket a duration of at least `floor_ns` falls in.
fn bucket_of(floor_ns: u64) -> usize {
    BOUND_LOG2
        .iter()
        .position(|&log2| floor_ns < 1u64 << log2)
        .unwrap_or(BOUND_LOG2.len())
}

impl Durations {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Adds one duration.
    pub fn observe_ns(&self, ns: u64) {
        self.with(|inner| {
            inner.count += 1;
            inner.sum_ns = inner.sum_ns.saturating_add(ns);
            inner.buckets[bucket_of(ns)] += 1;
        });
    }

    /// Adds an interval's stalls, bucket by bucket.
    pub fn add_stalls(&self, stalls: &StallStats) {
        self.with(|inner| {
            for (bucket, &count) in stalls.buckets.iter().enumerate().take(STALL_BUCKETS) {
                if count > 0 {
                    inner.buckets[bucket_of(stall_bucket_floor(bucket))] += count;
                }
            }
            inner.count += stalls.count;
            inner.sum_ns = inner.sum_ns.saturating_add(stalls.total_ns);
        });
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (count, sum_ns, buckets) =
            self.with(|inner| (inner.count, inner.sum_ns, inner.buckets));
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        let bounds = BOUND_LOG2
            .iter()
            .map(|&log2| (1u64 << log2) as f64 / 1e9)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(buckets).collect();
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        let sum = sum_ns as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use cgtrace_common::pagecache::stall_bucket;

    use super::*;

    #[test]
    fn every_probe_bucket_falls_under_one_bound() {
        // A probe bucket straddling a bound would be split by guesswork.
        for bucket in 0..STALL_BUCKETS - 1 {
            let lowest = stall_bucket_floor(bucket);
            let highest = stall_bucket_floor(bucket + 1) - 1;
            assert_eq!(
                bucket_of(lowest),
                bucket_of(highest),
                "probe bucket {bucket}"
            );
        }
    }

    #[test]
    fn stalls_fold_in_as_the_probe_counted_them() {
        let mut stalls = StallStats::ZERO;
        for ns in [500, 1_500, 3_000_000, 3_000_000, 40_000_000_000] {
            stalls.buckets[stall_bucket(ns)] += 1;
            stalls.count += 1;
            stalls.total_ns += ns;
        }
        let durations = Durations::default();
        durations.add_stalls(&stalls);
        let direct = Durations::default();
        for ns in [500, 1_500, 3_000_000, 3_000_000, 40_000_000_000] {
            direct.observe_ns(ns);
        }
        let counts = |d: &Durations| d.with(|inner| (inner.count, inner.sum_ns, inner.buckets));
        assert_eq!(counts(&durations), counts(&direct));
        let (count, _, buckets) = counts(&durations);
        assert_eq!(count, 5);
        // 500 ns under 2^10; 1.5 µs under 2^12; 3 ms twice under 2^22;
        // 40 s past the last bound.
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[1], 1);
        assert_eq!(buckets[6], 2);
        assert_eq!(buckets[BUCKETS - 1], 1);
    }
}
