//! `cgtrace export FILE --format jsonl|chrome-trace`: a trace as JSON lines
//! (one object per event, in the live views' schema), or as Chrome trace-event
//! JSON, which Perfetto UI and chrome://tracing open: throttle spans as
//! slices per cgroup and CPU, OOM kills as instant events, page-cache
//! evictions and memory usage as counters.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
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
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let destination = args
        .output
        .as_ref()
        .map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    let mut export = Export::new(
        args.format == ExportFormat::ChromeTrace,
        header.page_size,
        out,
        destination,
    );
    let end = match session::run(&mut source, &mut cx, &mut [&mut export]) {
        Err(error) if is_broken_pipe(&error) => return Ok(Outcome::Success),
        other => other?,
    };
    if let Some(Ending::CutShort { offset, lost_bytes }) = end.ending {
        crate::note!(
            "cgtrace: the trace was cut short at byte {offset} ({lost_bytes} bytes lost); exported what was recorded"
        );
    }
    Ok(Outcome::Success)
}

/// Whether writing failed because the reader went away (`| head`): not an
/// error of the export.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
