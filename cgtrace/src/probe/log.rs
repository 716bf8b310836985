//! The programs' own account of what they could not read
//! (`cgtrace check --probe-log`), through aya-log.
//!
//! The log's level is a read-only global of the eBPF object
//! (`AYA_LOG_LEVEL`): [`level`] gives 0 unless the log is asked for, and
//! with 0 the verifier removes every log call, so a probe loaded without
//! the log costs what it would cost with no log code at all.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, Ordering},
};

use aya::Ebpf;
use aya_log::EbpfLogger;

/// Whether the probes this process loads log (`--probe-log`).
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every probe this process loads from now on to log (or not).
pub fn request(enabled: bool) {
    REQUESTED.store(enabled, Ordering::Relaxed);
}

/// Whether `--probe-log` was given: the default of [`super::ProbeOptions::log`].
#[must_use]
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// aya-log's `Level::Warn`: the programs log their failures at this level.
const WARN: u8 = 2;

/// The value of `AYA_LOG_LEVEL` for a probe loaded with or without the log.
#[must_use]
pub fn level(enabled: bool) -> u8 {
    if enabled { WARN } else { 0 }
}

/// The lines the programs logged, kept until taken: each distinct line
/// once, with how often it came, in the order first seen (a failing read
/// fails on every event).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(String, u64)>>>);

impl log::Log for Lines {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = record.args().to_string();
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match lines.iter_mut().find(|(seen, _)| *seen == line) {
            Some((_, times)) => *times += 1,
            None => lines.push((line, 1)),
        }
    }

    fn flush(&self) {}
}

/// Reads the programs' log records as they come.
pub struct ProbeLog {
    logger: EbpfLogger<Lines>,
    lines: Lines,
}

impl ProbeLog {
    /// Takes the log's ring buffer from a probe loaded with the log on.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, aya_log::Error> {
        let lines = Lines::default();
        let logger = EbpfLogger::init_with_logger(ebpf, lines.clone())?;
        Ok(Self { logger, lines })
    }

    /// Reads what the programs logged into the kept lines: often enough,
    /// and a failure on every event cannot fill the log's ring buffer.
    pub fn flush(&mut self) {
        self.logger.flush();
    }

    /// The lines logged since the last call, each once, with `(N times)`
    /// after those that came more than once.
    pub fn take_lines(&mut self) -> Vec<String> {
        self.logger.flush();
        let lines =
            std::mem::take(&mut *self.lines.0.lock().unwrap_or_else(PoisonError::into_inner));
        lines
            .into_iter()
            .map(|(line, times)| {
                if times > 1 {
                    format!("{line} ({times} times)")
                } else {
                    line
                }
            })
            .collect()
    }
}
