//! `cache` and `reclaim` share this: their options, and the session each
//! runs — live (the page-cache and reclaim probes and the files of the
//! cgroups they name) or a trace's events — with [`IntervalView`] handing
//! each interval to the view's renderer.

use crate::privilege;
use std::{io, path::Path, time::Duration};

use clap::Args;

use crate::{
    identity::selection::{SelectArgs, Selection},
    probe::{FeatureSet, ProbeOptions},
    session::{self, Context, FileSamples, LiveOptions, TraceSource},
    system::Clock,
    view::interval::{IntervalContext, IntervalView},
};

/// Live views report this often unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Options shared by the interval views.
#[derive(Debug, Clone, Args)]
pub struct IntervalArgs {
    /// Time between reports: `1s`, `500ms`, `2m`, or plain seconds (default
    /// 1s; a replay keeps the recorded intervals unless given one).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub interval: Option<Duration>,
    /// Stop after this many reports (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// One JSON object per interval (schema: docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// What a live interval view attaches beyond the page-cache and reclaim
/// probes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveExtras {
    /// Per-file counts (`cache --files`).
    pub files: bool,
    /// The memcg stat tracepoints (`--charges`).
    pub charges: bool,
}

/// Runs a view: live (attach the probes, then every interval fold a sample
/// into the model and render it, until Ctrl-C or `--count`), or from a
/// trace's recorded intervals. `extras` applies live only.
pub fn run(
    args: &IntervalArgs,
    extras: LiveExtras,
    input: Option<&Path>,
    mut render: impl FnMut(&mut IntervalContext<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let selection = Selection::new(&args.select)?;
    match input {
        Some(path) => replay(args, path, selection, &mut render),
        None => watch(args, extras, selection, &mut render),
    }
}

/// A trace's intervals, rendered as they were live (or merged into
/// `--interval` long ones).
fn replay(
    args: &IntervalArgs,
    path: &Path,
    selection: Selection,
    render: &mut dyn FnMut(&mut IntervalContext<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut source = TraceSource::open(path)?;
    let header = source.header().clone();
    let mut cx = Context::new(
        selection,
        Clock::from_boot_time(header.boot_time_ns),
        header.page_size,
    );
    source.learn_names(&mut cx)?;
    let mut view = IntervalView::new(
        header.page_size,
        render,
        args.interval,
        args.count,
        args.json,
    );
    session::run(&mut source, &mut cx, &mut [&mut view])?;
    Ok(())
}

/// This machine, live: the page-cache and reclaim probes, each interval's
/// counters and the files of the cgroups they name.
fn watch(
    args: &IntervalArgs,
    extras: LiveExtras,
    selection: Selection,
    render: &mut dyn FnMut(&mut IntervalContext<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let (mut source, mut cx) = super::live::start(
        selection,
        &ProbeOptions {
            features: FeatureSet {
                charges: extras.charges,
                ..FeatureSet::CACHE_AND_RECLAIM
            },
            files: extras.files,
            ..ProbeOptions::default()
        },
        |_, _| {
            Ok(LiveOptions {
                interval: args.interval.unwrap_or(DEFAULT_INTERVAL),
                files: FileSamples {
                    memory: true,
                    cpu: false,
                    pressure: true,
                    cpu_usage: false,
                },
                ..LiveOptions::default()
            })
        },
    )?;
    super::live::give_up_privileges(privilege::kept_by(if extras.files {
        "cache --files"
    } else {
        "cache, reclaim"
    }))?;
    let page_size = cx.page_size;
    let mut view = IntervalView::new(page_size, render, None, args.count, args.json);
    session::run(&mut source, &mut cx, &mut [&mut view])?;
    Ok(())
}
