//! `cgtrace report FILE [--json] [--html OUT]`: what a recorded run did, per
//! cgroup: memory usage, OOM kills, page cache added and evicted by reason
//! and by whom, reclaim stalls, throttled periods and time; the trace's
//! losses, and whether it was cut short. `--html` also writes a
//! self-contained page with time-series plots.
//!
//! Reads the file only: no root, no eBPF, any machine.

use std::{
    fs::File,
    io::{self, BufWriter, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use clap::Args;

use super::Outcome;
use crate::{
    identity::selection::{SelectArgs, Selection},
    session::{self, TraceSource},
    system::Clock,
    trace::file::{Ending, TraceInfo},
    view::report::{
        html,
        series::{ChartPlan, ChartSeries},
        summary::Summary,
        text::{self, Context},
    },
};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The trace file (written by `cgtrace record`).
    pub file: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML page with plots.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<Outcome> {
    let mut source = TraceSource::open(&args.file)?;
    let header = source.header().clone();
    let mut session = session::Context::new(
        Selection::new(&args.select)?,
        Clock::from_boot_time(header.boot_time_ns),
        header.page_size,
    );
    source.learn_names(&mut session)?;
    let mut summary = Summary::new(header.start_monotonic_ns, header.page_size);
    let end = session::run(&mut source, &mut session, &mut [&mut summary])?;
    let trace = TraceInfo {
        header,
        ending: end.ending.unwrap_or(Ending::Complete),
        records: source.records(),
        skipped: source.skipped(),
    };
    let selection = &mut session.selection;
    if !selection.is_everything() {
        summary.retain(|path| selection.keeps(path));
    }
    let cx = Context::new(&trace, &summary, &mut |path| selection.identify(path));
    if let Some(path) = &args.html {
        let series = chart_series(&args.file, &trace, html::plan(&cx))?;
        let mut file = BufWriter::new(
            File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
        );
        html::write_page(&mut file, &cx, &series, &args.file.display().to_string())
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
        crate::note!("cgtrace: wrote {}", path.display());
    }
    let mut out = BufWriter::new(crate::text::stdout());
    let result = if args.json {
        text::write_json(&mut out, &cx)
    } else {
        text::text(&mut out, &cx)
    }
    .and_then(|()| out.flush());
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Outcome::Success),
        other => other.map(|()| Outcome::Success).map_err(Into::into),
    }
}

/// The HTML report's series: a second pass over the trace for the cgroups
/// the charts draw, so no cgroup's whole history is held.
fn chart_series(
    file: &std::path::Path,
    trace: &TraceInfo,
    plan: ChartPlan,
) -> anyhow::Result<ChartSeries> {
    let mut source = TraceSource::open(file)?;
    let mut session = session::Context::new(
        Selection::new(&SelectArgs::default())?,
        Clock::from_boot_time(trace.header.boot_time_ns),
        trace.header.page_size,
    );
    source.learn_names(&mut session)?;
    let mut series = ChartSeries::new(plan, trace.header.page_size);
    session::run(&mut source, &mut session, &mut [&mut series])?;
    Ok(series)
}
