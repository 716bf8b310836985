//! `cgtrace export FILE --format jsonl|chrome-trace`: a trace as JSON lines
//! (one object per event, in the live views' schema), or as Chrome trace-event
//! JSON, which Perfetto UI and chrome://tracing open: throttle spans as
//! slices per cgroup and CPU, OOM kills as instant events, page-cache
//! evictions and memory usage as counters.

use std::{
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::Outcome;
use crate::{
    identity::selection::{SelectArgs, Selection},
    session::{self, Context, TraceSource},
    system::Clock,
    trace::file::Ending,
    view::export::Export,
};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The trace file.
    pub file: PathBuf,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Where to write (default: standard output).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per record.
    Jsonl,
    /// Chrome trace-event JSON (Perfetto UI, chrome://tracing).
    ChromeTrace,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<Outcome> {
    let mut source = TraceSource::open(&args.file)?;
    let header = source.header().clone();
    let mut cx = Context::new(
        Selection::new(&SelectArgs::default())?,
        Clock::from_boot_time(header.boot_time_ns),
        header.page_size,
    );
    source.learn_names(&mut cx)?;
    let mut export = Export::new(args.format == ExportFormat::ChromeTrace, header.page_size);
    let end = session::run(&mut source, &mut cx, &mut [&mut export])?;
    if let Some(Ending::CutShort { offset, lost_bytes }) = end.ending {
        crate::note!(
            "cgtrace: the trace was cut short at byte {offset} ({lost_bytes} bytes lost); exporting what was recorded"
        );
    }
    let text = export.into_text();
    if let Some(path) = &args.output {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(Outcome::Success);
    }
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Outcome::Success),
        other => other.map(|()| Outcome::Success).map_err(Into::into),
    }
}
