//! The recorder's sink: every event the selection keeps, written to the
//! trace file, one chunk per sampling interval (so a killed recorder loses
//! at most the interval it was in), with a progress line on a terminal.

use std::{
    fs::File,
    io::IsTerminal as _,
    path::PathBuf,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use super::file::{TraceHeader, TraceWriter};
use crate::{
    event::Event,
    session::{Context, End, Flow, Sink},
    system::{self, Clock},
    view::format::bytes,
};

/// The facts about this machine and moment that open a trace.
#[must_use]
pub fn machine_header() -> TraceHeader {
    let now_monotonic = Clock::monotonic_now_ns();
    let now_wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    TraceHeader {
        kernel_release: system::kernel_release(),
        hostname: system::hostname(),
        boot_time_ns: now_wall.saturating_sub(now_monotonic),
        start_monotonic_ns: now_monotonic,
        start_wall_ns: now_wall,
        page_size: 1 << crate::probe::offsets::page_shift(),
        writer: format!("cgtrace {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Writes a trace.
pub struct TraceSink {
    writer: TraceWriter<File>,
    path: PathBuf,
    progress: bool,
    started: Instant,
    lost: u64,
}

impl TraceSink {
    #[must_use]
    pub fn new(writer: TraceWriter<File>, path: PathBuf) -> Self {
        Self {
            writer,
            path,
            progress: std::io::stderr().is_terminal(),
            started: Instant::now(),
            lost: 0,
        }
    }

    /// Events written.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.writer.records()
    }

    /// Bytes written.
    #[must_use]
    pub fn bytes_written(&self) -> u64 {
        self.writer.bytes_written()
    }

    fn write_failed(&self) -> String {
        format!(
            "cannot write {} (what was written up to the last complete chunk stays readable)",
            self.path.display()
        )
    }
}

impl Sink for TraceSink {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        if let Event::Health(health) = event {
            self.lost = health.stats.lost();
        }
        let kept = cx.keep(event);
        if let Some(event) = kept.as_deref() {
            self.writer
                .event(event)
                .with_context(|| self.write_failed())?;
        }
        if let Event::Tick(_) = event {
            self.writer.flush().with_context(|| self.write_failed())?;
            if self.progress {
                crate::note!(
                    "\rcgtrace: recording {:.0} s, {} records, {} written, {} lost   ",
                    self.started.elapsed().as_secs_f64(),
                    self.writer.records(),
                    bytes(self.writer.bytes_written()),
                    self.lost
                );
            }
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        self.writer.flush().with_context(|| self.write_failed())?;
        if self.progress {
            crate::note!("");
        }
        Ok(())
    }
}
