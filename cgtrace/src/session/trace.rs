//! A trace as a source: its events, streamed a chunk at a time. A trace is
//! a file, or a directory of segment files (the flight recorder's, or one
//! of its snapshots) read in name order as one trace.
//!
//! The names come first: a first pass over the trace reads only the cgroup
//! and workload names, so a replay names a pod's cgroups from their first
//! event even where the recorder learnt the pod's names later.

use std::{
    collections::VecDeque,
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{Context, Source};
use crate::{
    event::Event,
    trace::{
        file::{Ending, TraceHeader},
        reader::TraceReader,
    },
};

/// A trace being replayed.
pub struct TraceSource {
    reader: TraceReader<BufReader<File>>,
    /// The file being read.
    path: PathBuf,
    /// The files after it, for a directory.
    rest: VecDeque<PathBuf>,
    /// What was given: the file, or the directory.
    given: PathBuf,
    /// The first file's header: the trace's.
    header: TraceHeader,
    /// Records and skipped records of the files already read.
    records_before: u64,
    skipped_before: u64,
    /// The first file that was cut short (a recorder stopped mid-write),
    /// unless it is the last.
    cut_short: Option<Ending>,
}

/// The trace files `path` names: itself, or a directory's segment files
/// (`*.cgt`) in name order, which is the order they were written in.
pub fn trace_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|file| file.is_file() && file.extension().is_some_and(|e| e == "cgt"))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!(
            "{} holds no trace segments (*.cgt): give a trace file, or a flight recorder's directory or snapshot",
            path.display()
        );
    }
    Ok(files)
}

fn open_file(path: &Path) -> anyhow::Result<TraceReader<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    TraceReader::open(BufReader::new(file))
        .with_context(|| format!("{} is not a readable trace", path.display()))
}

impl TraceSource {
    /// Opens `path` (a trace file, or a directory of segments) and reads
    /// the first header.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut rest: VecDeque<PathBuf> = trace_files(path)?.into();
        let first = rest.pop_front().unwrap_or_else(|| path.to_owned());
        let reader = open_file(&first)?;
        Ok(Self {
            header: reader.header().clone(),
            reader,
            path: first,
            rest,
            given: path.to_owned(),
            records_before: 0,
            skipped_before: 0,
            cut_short: None,
        })
    }

    #[must_use]
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Records of kinds this build does not know, skipped so far.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.skipped_before + self.reader.skipped()
    }

    /// Records read so far.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records_before + self.reader.records()
    }

    /// Reads the whole trace once for its names, into `cx`.
    pub fn learn_names(&self, cx: &mut Context) -> anyhow::Result<()> {
        let mut first_pass = Self::open(&self.given)?;
        while let Some(event) = first_pass.read()? {
            if matches!(
                event,
                Event::CgroupCreated(_) | Event::CgroupNamed(_) | Event::WorkloadNamed(_)
            ) {
                cx.learn(&event);
            }
        }
        Ok(())
    }

    /// The next event, going on to the next file at the end of one.
    fn read(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            let event = self
                .reader
                .next_event()
                .with_context(|| format!("{} is not a readable trace", self.path.display()))?;
            if event.is_some() {
                return Ok(event);
            }
            let Some(next) = self.rest.pop_front() else {
                return Ok(None);
            };
            if let Some(ending @ Ending::CutShort { .. }) = self.reader.ending() {
                crate::note!(
                    "cgtrace: {} was cut short; the segments after it are read too",
                    self.path.display()
                );
                self.cut_short.get_or_insert(ending);
            }
            self.records_before += self.reader.records();
            self.skipped_before += self.reader.skipped();
            self.reader = open_file(&next)?;
            self.path = next;
        }
    }
}

impl Source for TraceSource {
    async fn next(&mut self, _cx: &mut Context) -> anyhow::Result<Option<Event>> {
        self.read()
    }

    /// How the trace ended: a segment before the last that was cut short
    /// is said (a recorder stopped, the disk filled), else the last file's
    /// ending.
    fn ending(&self) -> Option<Ending> {
        self.cut_short.or_else(|| self.reader.ending())
    }
}
