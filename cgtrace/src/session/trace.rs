//! A trace file as a source: its events, streamed a chunk at a time.
//!
//! The names come first: a first pass over the file reads only the cgroup
//! and workload names, so a replay names a pod's cgroups from their first
//! event even where the recorder learnt the pod's names later.

use std::{
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
    path: PathBuf,
}

impl TraceSource {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let reader = TraceReader::open(BufReader::new(file))
            .with_context(|| format!("{} is not a readable trace", path.display()))?;
        Ok(Self {
            reader,
            path: path.to_owned(),
        })
    }

    #[must_use]
    pub fn header(&self) -> &TraceHeader {
        self.reader.header()
    }

    /// Records of kinds this build does not know, skipped so far.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.reader.skipped()
    }

    /// Records read so far.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.reader.records()
    }

    /// Reads the whole trace once for its names, into `cx`.
    pub fn learn_names(&self, cx: &mut Context) -> anyhow::Result<()> {
        let mut first_pass = Self::open(&self.path)?;
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

    fn read(&mut self) -> anyhow::Result<Option<Event>> {
        self.reader
            .next_event()
            .with_context(|| format!("{} is not a readable trace", self.path.display()))
    }
}

impl Source for TraceSource {
    async fn next(&mut self, _cx: &mut Context) -> anyhow::Result<Option<Event>> {
        self.read()
    }

    fn ending(&self) -> Option<Ending> {
        self.reader.ending()
    }
}
