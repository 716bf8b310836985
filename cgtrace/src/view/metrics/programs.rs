//! cgtrace's own cost, read from the kernel on each scrape: how often each
//! of its eBPF programs ran and for how long (`bpf_prog_info`), while the
//! kernel's run-time statistics are on.
//!
//! The statistics cost every BPF program on the host two clock reads per
//! run while any holder keeps them on, so `serve` turns them on only when
//! asked (`--program-stats`); without them these families are not served,
//! rather than served as zeros.

use std::os::fd::{AsFd as _, OwnedFd};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter},
};

use crate::probe::{BpfStatsEnabled, prog_info};

/// The programs to read, and the holder that keeps their statistics on.
#[derive(Debug)]
pub struct ProgramRuns {
    programs: Vec<(String, OwnedFd)>,
    _stats: StatsHolder,
}

/// [`BpfStatsEnabled`] held for as long as the collector lives.
struct StatsHolder(BpfStatsEnabled);

impl std::fmt::Debug for StatsHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StatsHolder")
            .field(&self.0.is_enabled())
            .finish()
    }
}

impl ProgramRuns {
    /// Turns the kernel's statistics on and reads `programs` (name and
    /// descriptor) from now on; `None` when the kernel refuses.
    #[must_use]
    pub fn enable(programs: Vec<(String, OwnedFd)>) -> Option<Self> {
        let stats = BpfStatsEnabled::enable();
        stats.is_enabled().then(|| Self {
            programs,
            _stats: StatsHolder(stats),
        })
    }
}

impl Collector for ProgramRuns {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters: Vec<(&str, prog_info::ProgramCounters)> = self
            .programs
            .iter()
            .filter_map(|(name, fd)| Some((name.as_str(), prog_info::counters(fd.as_fd()).ok()?)))
            .collect();
        let mut runs = encoder.encode_descriptor(
            "probe_program_runs",
            "Runs of each of cgtrace's eBPF programs while statistics were on",
            None,
            MetricType::Counter,
        )?;
        for (name, c) in &counters {
            let labels = [("program", *name)];
            ConstCounter::new(c.run_count).encode(runs.encode_family(&labels)?)?;
        }
        let mut time = encoder.encode_descriptor(
            "probe_program_run_seconds",
            "Time each of cgtrace's eBPF programs ran while statistics were on",
            None,
            MetricType::Counter,
        )?;
        for (name, c) in &counters {
            let labels = [("program", *name)];
            #[expect(clippy::cast_precision_loss, reason = "seconds")]
            let seconds = c.run_time_ns as f64 / 1e9;
            ConstCounter::new(seconds).encode(time.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
