//! Interleaved comparisons: one workload run untraced and under each
//! tracer, in rounds whose order alternates, giving per-round ratios to
//! the untraced run of the same round.

use std::{fmt::Write as _, time::Duration};

use crate::stats::{Summary, round_order};
use crate::tracer::{Finished, Tracer, TracerSpec};

/// What the tracers of a comparison lost, summed over its runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Losses {
    pub ring_buffer_drops: u64,
    pub recursion_misses: u64,
    pub read_failures: u64,
}

impl Losses {
    fn add(&mut self, finished: &Finished) {
        self.ring_buffer_drops += finished.probe_counter("ring_buffer_drops");
        self.recursion_misses += finished.probe_counter("recursion_misses");
        self.read_failures += finished.probe_counter("read_failures");
    }
}

/// The outcome of one comparison.
pub struct Comparison {
    /// Untraced wall times, one per round.
    pub untraced: Vec<Duration>,
    /// Per tracer: its label and its traced/untraced ratio in each round.
    pub ratios: Vec<(String, Vec<f64>)>,
    /// Per tracer: what a stopped tracer reported, one per round.
    pub finished: Vec<Vec<Finished>>,
    pub losses: Vec<Losses>,
}

impl Comparison {
    /// Runs `rounds` rounds of `workload` untraced and under each tracer;
    /// `prepare` runs before each run, before its tracer starts. `workload`
    /// gets a label naming the arm, for its scratch cgroup.
    pub fn run(
        name: &str,
        rounds: usize,
        tracers: &[TracerSpec],
        mut prepare: impl FnMut(),
        mut workload: impl FnMut(&str) -> Duration,
    ) -> Self {
        let arms = tracers.len() + 1;
        let mut comparison = Self {
            untraced: Vec::new(),
            ratios: tracers
                .iter()
                .map(|t| (t.label.clone(), Vec::new()))
                .collect(),
            finished: vec![Vec::new(); tracers.len()],
            losses: vec![Losses::default(); tracers.len()],
        };
        for round in 0..rounds {
            let mut times = vec![Duration::ZERO; arms];
            for arm in round_order(arms, round) {
                prepare();
                if arm == 0 {
                    times[0] = workload("untraced");
                    continue;
                }
                let spec = &tracers[arm - 1];
                let tracer = Tracer::start(spec);
                times[arm] = workload(&format!("traced{arm}"));
                let finished = tracer.stop();
                comparison.losses[arm - 1].add(&finished);
                comparison.finished[arm - 1].push(finished);
            }
            comparison.untraced.push(times[0]);
            let mut line = format!(
                "{name} round {:>2}: untraced {:.3} s",
                round + 1,
                times[0].as_secs_f64()
            );
            for (i, (label, ratios)) in comparison.ratios.iter_mut().enumerate() {
                let ratio = times[i + 1].as_secs_f64() / times[0].as_secs_f64();
                ratios.push(ratio);
                let _ = write!(
                    line,
                    ", {label} {:.3} s ({ratio:.3})",
                    times[i + 1].as_secs_f64()
                );
            }
            eprintln!("{line}");
        }
        comparison
    }

    /// The median untraced time.
    pub fn untraced_median(&self) -> Duration {
        let secs: Vec<f64> = self.untraced.iter().map(Duration::as_secs_f64).collect();
        Duration::from_secs_f64(Summary::of(&secs).map_or(0.0, |s| s.median))
    }

    /// A markdown table: one row per tracer with its ratio summary and losses.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| traced by | traced/untraced min / **median** / max | ring-buffer drops | recursion misses |\n\
             |---|---|---|---|\n",
        );
        for ((label, ratios), losses) in self.ratios.iter().zip(&self.losses) {
            let summary = Summary::of(ratios).expect("at least one round");
            let _ = writeln!(
                out,
                "| {label} | {summary} | {} | {} |",
                losses.ring_buffer_drops, losses.recursion_misses
            );
        }
        out
    }

    /// The ratio summary of the tracer labelled `label`.
    pub fn summary(&self, label: &str) -> Option<Summary> {
        self.ratios
            .iter()
            .find(|(l, _)| l == label)
            .and_then(|(_, r)| Summary::of(r))
    }
}
