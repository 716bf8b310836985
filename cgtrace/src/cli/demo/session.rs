//! The scenarios' workloads run as live sessions: the loop and source every
//! view uses, with the scenario's own sinks collecting what it checks. The
//! demo's one probe is lent to one session per workload.

use std::{
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    cgroup::{Hierarchies, Resolver, scratch::ScratchCgroup},
    identity::selection::Selection,
    probe::Probe,
    session::{self, Context, LiveOptions, LiveSource, Signals, Sink},
    system::Clock,
};

/// How often a workload's session samples the probe's counters.
const INTERVAL: Duration = Duration::from_millis(250);

/// The probe and the signals, between sessions.
pub struct DemoProbe {
    parts: Option<(Signals, Probe)>,
    hierarchies: Hierarchies,
}

/// How a workload ended.
pub struct Ran {
    pub pid: u32,
    pub status: ExitStatus,
    /// From its start until the session saw it end.
    pub took: Duration,
}

impl DemoProbe {
    #[must_use]
    pub fn new(signals: Signals, probe: Probe, hierarchies: Hierarchies) -> Self {
        Self {
            parts: Some((signals, probe)),
            hierarchies,
        }
    }

    #[must_use]
    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// The probe, for its features and counters.
    pub fn probe(&self) -> anyhow::Result<&Probe> {
        self.parts
            .as_ref()
            .map(|(_, probe)| probe)
            .context("the probe is in a session")
    }

    /// Starts `command` inside `cgroups` and runs a live session, every
    /// event to `sinks`, until it exits (or the demo is interrupted).
    pub fn run(
        &mut self,
        cgroups: &[&ScratchCgroup],
        command: Command,
        sinks: &mut [&mut dyn Sink],
    ) -> anyhow::Result<Ran> {
        let (signals, probe) = self.parts.take().context("the probe is in a session")?;
        let mut source = LiveSource::new(
            signals,
            probe,
            Resolver::new(self.hierarchies.clone()),
            LiveOptions {
                interval: INTERVAL,
                ..LiveOptions::default()
            },
        );
        let mut cx = Context::new(
            Selection::everything(),
            Clock::now(),
            1 << crate::probe::offsets::page_shift(),
        );
        cx.hierarchies = Some(self.hierarchies.clone());
        let started = Instant::now();
        let mut pid = None;
        let spawned = session::spawn_in(cgroups, command.into());
        let result = spawned.and_then(|child| {
            pid = child.id();
            source.set_command(child);
            session::run(&mut source, &mut cx, sinks)
        });
        source.stop_command();
        let took = started.elapsed();
        let status = source.exit_status();
        let interrupted = source.interrupted();
        self.parts = Some(source.into_parts());
        result?;
        anyhow::ensure!(!interrupted, "interrupted");
        Ok(Ran {
            pid: pid.unwrap_or(0),
            status: status.context("the workload's exit was not seen")?,
            took,
        })
    }
}
