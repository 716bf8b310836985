//! The HTML report's time series, gathered in a second pass over the trace
//! for only the cgroups its charts draw (chosen from the first pass's
//! totals), so a recording of any length is plotted in bounded memory.
//!
//! Each series keeps its points as they are up to [`POINTS`]; past that it
//! folds them into [`BINS`] bins over the recording (the highest level, or
//! the mean rate), more than a chart's width can show apart. A short
//! recording plots exactly as its points; a long one as its bins. Throttle
//! spans on the timeline likewise stay spans up to [`LANE_SPANS`] per
//! lane, then merge into blocks of nearby spans.

use std::collections::HashMap;

use cgtrace_common::cgroup::CgroupRef;

use crate::{
    event::{Event, ThrottleSpan},
    model::{cache::by_owner, memory::MemoryModel, pressure::PressureModel},
    session::{CgroupNames, Context, End, Flow, Sink},
    view::cache::duration,
};

/// Points a series keeps as they are.
pub const POINTS: usize = 2000;
/// Bins a longer series is folded into.
pub const BINS: usize = 1000;
/// Spans a timeline lane keeps as they are.
pub const LANE_SPANS: usize = 2000;

/// Which cgroups each chart draws, most important first, and the
/// recording's extent: what the first pass decided.
#[derive(Clone, Debug, Default)]
pub struct ChartPlan {
    pub memory: Vec<String>,
    pub page_cache: Vec<String>,
    pub evicted: Vec<String>,
    pub throttled: Vec<String>,
    pub pressure: Vec<String>,
    pub lanes: Vec<String>,
    /// When the recording started, and its length in seconds.
    pub start_ns: u64,
    pub x_max: f64,
    /// Whether the trace has sampling intervals (evictions then plot per
    /// interval, quiet ones as zero).
    pub has_intervals: bool,
    /// The width of the throttle chart's bins, seconds.
    pub throttle_bin_s: f64,
}

/// How a series folds points that share a bin.
#[derive(Clone, Copy, Debug)]
enum Fold {
    /// The highest (a level: memory in use).
    Max,
    /// The mean, weighted by each point's length (a rate).
    Mean,
}

/// A bin: what its points folded to.
#[derive(Clone, Copy, Debug, Default)]
struct Bin {
    max: f64,
    weighted: f64,
    weight: f64,
    points: u64,
}

/// One bounded series of `(seconds, value)` points.
#[derive(Debug)]
struct Points {
    fold: Fold,
    raw: Vec<(f64, f64, f64)>,
    bins: Vec<Bin>,
}

impl Points {
    fn new(fold: Fold) -> Self {
        Self {
            fold,
            raw: Vec::new(),
            bins: Vec::new(),
        }
    }

    /// Adds a point that stands for `weight` seconds (rates).
    fn push(&mut self, x: f64, y: f64, weight: f64, x_max: f64) {
        if self.bins.is_empty() {
            self.raw.push((x, y, weight));
            if self.raw.len() > POINTS {
                self.bins = vec![Bin::default(); BINS];
                for (x, y, weight) in std::mem::take(&mut self.raw) {
                    self.fold_in(x, y, weight, x_max);
                }
            }
        } else {
            self.fold_in(x, y, weight, x_max);
        }
    }

    fn fold_in(&mut self, x: f64, y: f64, weight: f64, x_max: f64) {
        let bin = &mut self.bins[bin_of(x, x_max)];
        bin.max = if bin.points == 0 { y } else { bin.max.max(y) };
        bin.weighted += y * weight;
        bin.weight += weight;
        bin.points += 1;
    }

    fn points(&self, x_max: f64) -> Vec<(f64, f64)> {
        if self.bins.is_empty() {
            return self.raw.iter().map(|&(x, y, _)| (x, y)).collect();
        }
        let width = bin_width(x_max);
        self.bins
            .iter()
            .enumerate()
            .filter(|(_, bin)| bin.points > 0)
            .map(|(index, bin)| {
                #[expect(clippy::cast_precision_loss, reason = "bin index")]
                let mid = (index as f64 + 0.5) * width;
                let value = match self.fold {
                    Fold::Max => bin.max,
                    Fold::Mean if bin.weight > 0.0 => bin.weighted / bin.weight,
                    #[expect(clippy::cast_precision_loss, reason = "point count")]
                    Fold::Mean => bin.weighted / bin.points as f64,
                };
                (mid, value)
            })
            .collect()
    }
}

fn bin_width(x_max: f64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a small constant")]
    let bins = BINS as f64;
    (x_max / bins).max(1e-9)
}

fn bin_of(x: f64, x_max: f64) -> usize {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative bin index, clamped"
    )]
    let index = (x / bin_width(x_max)).floor().max(0.0) as usize;
    index.min(BINS - 1)
}

/// A lane's throttle spans: each with its tooltip, or past
/// [`LANE_SPANS`] merged blocks.
#[derive(Debug, Default)]
struct LaneSpans {
    /// `(start, end, tooltip, throttled ns)`.
    spans: Vec<(f64, f64, String, u64)>,
    /// `(start, end, spans, throttled ns)` once spans are merged.
    blocks: Vec<(f64, f64, u64, u64)>,
    /// How close (seconds) a span must start to a block to join it.
    join_s: f64,
}

impl LaneSpans {
    fn push(&mut self, start: f64, end: f64, span: &ThrottleSpan, x_max: f64) {
        if self.blocks.is_empty() && self.spans.len() < LANE_SPANS {
            self.spans.push((
                start,
                end,
                format!(
                    "throttled {} on CPU {} (quota run out by {}[{}])",
                    duration(span.duration_ns()),
                    span.cpu,
                    span.comm,
                    span.pid
                ),
                span.duration_ns(),
            ));
            return;
        }
        if self.blocks.is_empty() {
            self.join_s = x_max / 2000.0;
            let spans = std::mem::take(&mut self.spans);
            for (start, end, _, ns) in spans {
                self.join(start, end, ns);
            }
        }
        self.join(start, end, span.duration_ns());
        if self.blocks.len() > 2 * LANE_SPANS {
            // Far out of order: merge again, coarser.
            self.join_s *= 2.0;
            let blocks = std::mem::take(&mut self.blocks);
            for (start, end, spans, ns) in blocks {
                self.join_block(start, end, spans, ns);
            }
        }
    }

    fn join(&mut self, start: f64, end: f64, ns: u64) {
        self.join_block(start, end, 1, ns);
    }

    fn join_block(&mut self, start: f64, end: f64, spans: u64, ns: u64) {
        match self.blocks.last_mut() {
            Some(last) if start >= last.0 && start <= last.1 + self.join_s => {
                last.1 = last.1.max(end);
                last.2 += spans;
                last.3 += ns;
            }
            _ => self.blocks.push((start, end, spans, ns)),
        }
    }

    fn spans(&self) -> Vec<(f64, f64, String)> {
        if self.blocks.is_empty() {
            return self
                .spans
                .iter()
                .map(|(start, end, text, _)| (*start, *end, text.clone()))
                .collect();
        }
        self.blocks
            .iter()
            .map(|&(start, end, spans, ns)| {
                let text = if spans == 1 {
                    format!("throttled {}", duration(ns))
                } else {
                    format!("{spans} throttle spans, {} throttled", duration(ns))
                };
                (start, end, text)
            })
            .collect()
    }
}

/// One drawn cgroup's series.
#[derive(Debug)]
struct Collected {
    usage: Points,
    page_cache: Points,
    /// Bytes evicted per second.
    evicted: Points,
    /// Milliseconds stalled on memory per second.
    pressure: Points,
    /// Pages evicted in intervals whose tick is still to come, by their end.
    evicted_pending: Vec<(u64, u64)>,
    last_pressure_ns: Option<u64>,
    /// Throttled seconds per throttle-chart bin.
    throttle_bins: Vec<f64>,
    lane: LaneSpans,
}

impl Collected {
    fn new() -> Self {
        Self {
            usage: Points::new(Fold::Max),
            page_cache: Points::new(Fold::Max),
            evicted: Points::new(Fold::Mean),
            pressure: Points::new(Fold::Mean),
            evicted_pending: Vec::new(),
            last_pressure_ns: None,
            throttle_bins: Vec::new(),
            lane: LaneSpans::default(),
        }
    }
}

/// The second pass: a sink that gathers the planned cgroups' series.
#[derive(Debug)]
pub struct ChartSeries {
    plan: ChartPlan,
    page_size: u64,
    names: CgroupNames,
    memory_model: MemoryModel,
    pressure_model: PressureModel,
    collected: HashMap<String, Collected>,
}

impl ChartSeries {
    #[must_use]
    pub fn new(plan: ChartPlan, page_size: u64) -> Self {
        let collected = [
            &plan.memory,
            &plan.page_cache,
            &plan.evicted,
            &plan.throttled,
            &plan.pressure,
            &plan.lanes,
        ]
        .into_iter()
        .flatten()
        .map(|path| (path.clone(), Collected::new()))
        .collect();
        Self {
            plan,
            page_size,
            names: CgroupNames::default(),
            memory_model: MemoryModel::new(page_size),
            pressure_model: PressureModel::new(),
            collected,
        }
    }

    #[must_use]
    pub fn plan(&self) -> &ChartPlan {
        &self.plan
    }

    /// Seconds since the recording started.
    fn seconds(&self, ns: u64) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "durations well below 2^52 ns")]
        let s = ns.saturating_sub(self.plan.start_ns) as f64 / 1e9;
        s
    }

    /// The series of a cgroup the first pass named, as the summary names it.
    /// Looked up without making the name: this runs for every event.
    fn of(&mut self, cgroup: Option<CgroupRef>) -> Option<&mut Collected> {
        let name: std::borrow::Cow<'_, str> = match cgroup {
            None => "(uncharged)".into(),
            Some(c) => self
                .names
                .path(c)
                .map_or_else(|| format!("id:{}", c.id).into(), Into::into),
        };
        self.collected.get_mut(name.as_ref())
    }

    /// Memory in use over time.
    #[must_use]
    pub fn usage(&self, path: &str) -> Vec<(f64, f64)> {
        self.points(path, |c| &c.usage)
    }

    /// Page cache owned over time.
    #[must_use]
    pub fn page_cache(&self, path: &str) -> Vec<(f64, f64)> {
        self.points(path, |c| &c.page_cache)
    }

    /// Bytes of page cache evicted per second.
    #[must_use]
    pub fn evicted(&self, path: &str) -> Vec<(f64, f64)> {
        self.points(path, |c| &c.evicted)
    }

    /// Milliseconds per second some task stalled on memory.
    #[must_use]
    pub fn memory_stalled(&self, path: &str) -> Vec<(f64, f64)> {
        self.points(path, |c| &c.pressure)
    }

    fn points(&self, path: &str, series: impl Fn(&Collected) -> &Points) -> Vec<(f64, f64)> {
        self.collected
            .get(path)
            .map(|c| series(c).points(self.plan.x_max))
            .unwrap_or_default()
    }

    /// Throttled milliseconds per second, in the throttle chart's bins.
    #[must_use]
    pub fn throttled(&self, path: &str) -> Vec<(f64, f64)> {
        let bin_s = self.plan.throttle_bin_s;
        self.collected
            .get(path)
            .map(|c| {
                c.throttle_bins
                    .iter()
                    .enumerate()
                    .map(|(bin, t)| {
                        #[expect(clippy::cast_precision_loss, reason = "bin index")]
                        let mid = (bin as f64 + 0.5) * bin_s;
                        (mid, t / bin_s * 1000.0)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A timeline lane's spans: `(start, end, tooltip)` in seconds.
    #[must_use]
    pub fn lane(&self, path: &str) -> Vec<(f64, f64, String)> {
        self.collected
            .get(path)
            .map(|c| c.lane.spans())
            .unwrap_or_default()
    }

    fn span(&mut self, span: &ThrottleSpan) {
        let (start, end) = (self.seconds(span.start_ns), self.seconds(span.end_ns));
        let (x_max, bin_s) = (self.plan.x_max, self.plan.throttle_bin_s);
        let Some(collected) = self.of(span.cgroup_ref) else {
            return;
        };
        collected.lane.push(start, end, span, x_max);
        if collected.throttle_bins.is_empty() {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a bin count of a bounded recording"
            )]
            let bin_count = ((x_max / bin_s).ceil() as usize).clamp(1, 100_000);
            collected.throttle_bins = vec![0.0; bin_count];
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "non-negative bin index"
        )]
        let first = (start / bin_s).floor().max(0.0) as usize;
        for (bin, slot) in collected.throttle_bins.iter_mut().enumerate().skip(first) {
            #[expect(clippy::cast_precision_loss, reason = "bin index")]
            let (lo, hi) = (bin as f64 * bin_s, (bin + 1) as f64 * bin_s);
            if lo >= end {
                break;
            }
            *slot += (end.min(hi) - start.max(lo)).max(0.0);
        }
    }

    fn counters(&mut self, counters: &crate::event::ProbeCounters) {
        self.memory_model.counters(counters);
        let (page, x_max, has_intervals) =
            (self.page_size, self.plan.x_max, self.plan.has_intervals);
        let at = self.seconds(counters.end_ns);
        for activity in by_owner(counters) {
            let evicted = activity.evicted_total();
            if evicted == 0 {
                continue;
            }
            let Some(collected) = self.of(activity.owner) else {
                continue;
            };
            if has_intervals {
                collected.evicted_pending.push((counters.end_ns, evicted));
            } else {
                collected
                    .evicted
                    .push(at, as_f64(evicted * page), 1.0, x_max);
            }
        }
    }

    /// An interval's end: every drawn cgroup's evictions in it, a quiet
    /// one as zero rather than a line between its neighbours.
    fn tick(&mut self, start_ns: u64, end_ns: u64) {
        if !self.plan.has_intervals {
            return;
        }
        #[expect(clippy::cast_precision_loss, reason = "interval lengths")]
        let length = (end_ns.saturating_sub(start_ns) as f64 / 1e9).max(1e-3);
        let (at, page, x_max) = (self.seconds(end_ns), self.page_size, self.plan.x_max);
        for collected in self.collected.values_mut() {
            let pages: u64 = collected
                .evicted_pending
                .iter()
                .filter(|(end, _)| *end == end_ns)
                .map(|(_, pages)| pages)
                .sum();
            collected.evicted_pending.retain(|(end, _)| *end > end_ns);
            collected
                .evicted
                .push(at, as_f64(pages * page) / length, length, x_max);
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "byte counts plotted as f64")]
fn as_f64(value: u64) -> f64 {
    value as f64
}

impl Sink for ChartSeries {
    fn event(&mut self, event: &Event, _cx: &mut Context) -> anyhow::Result<Flow> {
        let x_max = self.plan.x_max;
        match event {
            Event::CgroupCreated(named) | Event::CgroupNamed(named) => self.names.learn(named),
            Event::ThrottleSpan(span) => self.span(span),
            Event::Counters(counters) => self.counters(counters),
            Event::Tick(tick) => self.tick(tick.start_ns, tick.end_ns),
            Event::Memory(sample) => {
                let facts = self.memory_model.sample(sample);
                let at = self.seconds(sample.at_ns);
                if let Some(collected) = self.of(Some(sample.cgroup)) {
                    if let Some(usage) = facts.usage_bytes {
                        collected.usage.push(at, as_f64(usage), 1.0, x_max);
                    }
                    if let Some(cache) = facts.owned_bytes {
                        collected.page_cache.push(at, as_f64(cache), 1.0, x_max);
                    }
                }
            }
            Event::Pressure(sample) => {
                let (cgroup, facts) = self.pressure_model.sample(sample);
                let at = self.seconds(sample.at_ns);
                if let (Some(memory), Some(collected)) = (facts.memory, self.of(Some(cgroup)))
                    && let Some(before) = collected.last_pressure_ns.replace(sample.at_ns)
                {
                    #[expect(clippy::cast_precision_loss, reason = "interval lengths")]
                    let length_s = (sample.at_ns.saturating_sub(before) as f64 / 1e9).max(1e-3);
                    collected.pressure.push(
                        at,
                        as_f64(memory.some_us) / 1000.0 / length_s,
                        length_s,
                        x_max,
                    );
                }
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{BINS, Fold, LANE_SPANS, LaneSpans, POINTS, Points};
    use crate::event::ThrottleSpan;

    #[test]
    fn a_short_series_is_its_points_and_a_long_one_its_bins() {
        let mut short = Points::new(Fold::Max);
        for i in 0..10 {
            short.push(f64::from(i), f64::from(i * 2), 1.0, 10.0);
        }
        assert_eq!(short.points(10.0).len(), 10);
        assert_eq!(short.points(10.0)[3], (3.0, 6.0));

        let x_max = 100_000.0;
        let mut level = Points::new(Fold::Max);
        let mut rate = Points::new(Fold::Mean);
        for i in 0..100_000u32 {
            let y = if i == 54_321 { 1e9 } else { f64::from(i % 100) };
            level.push(f64::from(i), y, 1.0, x_max);
            rate.push(f64::from(i), f64::from(i % 2) * 10.0, 1.0, x_max);
        }
        let levels = level.points(x_max);
        assert_eq!(levels.len(), BINS);
        assert!(levels.len() < POINTS);
        assert!(
            levels.iter().any(|&(_, y)| (y - 1e9).abs() < 1.0),
            "a level's peak survives the folding"
        );
        assert!(
            rate.points(x_max)
                .iter()
                .all(|&(_, y)| (y - 5.0).abs() < 1e-9)
        );
    }

    #[test]
    fn a_busy_lane_merges_its_spans_into_blocks() {
        let span = |ms: u64| ThrottleSpan {
            cgroup: None,
            cgroup_ref: None,
            cpu: 0,
            pid: 1,
            comm: "w".into(),
            start_ns: ms * 1_000_000,
            end_ns: (ms + 50) * 1_000_000,
        };
        let mut lane = LaneSpans::default();
        let x_max = 100_000.0;
        for i in 0..(LANE_SPANS as u64 * 10) {
            let s = span(i * 1000);
            #[expect(clippy::cast_precision_loss, reason = "test values")]
            let start = (i as f64) * 1.0;
            lane.push(start, start + 0.05, &s, x_max);
        }
        let drawn = lane.spans();
        assert!(drawn.len() <= 2 * LANE_SPANS, "{} blocks", drawn.len());
        let total: u64 = lane.blocks.iter().map(|b| b.3).sum();
        assert_eq!(
            total,
            LANE_SPANS as u64 * 10 * 50_000_000,
            "no throttled time lost"
        );
    }
}
