//! `cgtrace top`: one live screen for every cgroup's memory, reclaim, OOM
//! kills and throttling. [`TopSink`] is a sink like every other view's: it
//! feeds [`TopModel`] and keeps each interval's [`Snapshot`] (the latest,
//! live; all of them, replayed). `lines` groups and sorts a snapshot,
//! `state` holds what the keys chose, `render` draws it; the terminal
//! itself is `cli::top`'s.

pub mod lines;
pub mod notes;
pub mod render;
pub mod replay;
pub mod state;

use crate::{
    event::{Event, ProbeStats},
    model::top::{Snapshot, TopModel},
    session::{Context, End, Flow, Sink},
};

/// The sink: snapshots out of the session's events.
pub struct TopSink {
    model: TopModel,
    /// Every snapshot (a replay), or only the latest (live).
    keep_all: bool,
    pub snapshots: Vec<Snapshot>,
    /// The probe's loss counters as last heard.
    pub health: Option<ProbeStats>,
    /// Set when a tick closed a new snapshot; the screen clears it.
    pub fresh: bool,
}

impl TopSink {
    #[must_use]
    pub fn new(page_size: u64, keep_all: bool) -> Self {
        Self {
            model: TopModel::new(page_size),
            keep_all,
            snapshots: Vec::new(),
            health: None,
            fresh: false,
        }
    }

    /// The newest snapshot.
    #[must_use]
    pub fn latest(&self) -> Option<&Snapshot> {
        self.snapshots.last()
    }
}

impl Sink for TopSink {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        if let Event::Health(health) = event {
            self.health = Some(health.stats);
        }
        let names = &cx.names;
        let snapshot = self
            .model
            .event(event, &mut |cgroup| names.path(cgroup).map(str::to_owned));
        if let Some(mut snapshot) = snapshot {
            // A filter's other cgroups are not shown (live, the kernel
            // dropped most of their events already).
            snapshot.rows.retain(|row| cx.selection.keeps(&row.path));
            if !self.keep_all {
                self.snapshots.clear();
            }
            self.snapshots.push(snapshot);
            self.fresh = true;
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, end: &End) -> anyhow::Result<()> {
        if let Some(health) = end.health {
            self.health = Some(health);
        }
        Ok(())
    }
}

/// The losses line of the status bar.
#[must_use]
pub fn losses(health: Option<&ProbeStats>) -> String {
    match health {
        Some(stats) => format!(
            "lost: {} drops, {} misses, {} failed reads",
            stats.ring_buffer_drops, stats.recursion_misses, stats.read_failures
        ),
        None => String::new(),
    }
}
