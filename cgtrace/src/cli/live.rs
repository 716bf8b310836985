//! What every live subcommand does before it runs: catch the signals, load
//! and attach the probes, start counting, say which variants are in use,
//! and put the filter's cgroups in the kernel's allowlist.

use anyhow::Context as _;

use crate::{
    cgroup::{Hierarchies, Resolver},
    identity::selection::Selection,
    probe::{Probe, ProbeOptions},
    session::{Context, LiveOptions, LiveSource, Signals},
    system::Clock,
};

/// A live session ready to run. `options` is asked, once the cgroup mounts
/// are known, what to sample (it may add cgroups the selection keeps).
pub fn start(
    selection: Selection,
    probe: &ProbeOptions,
    options: impl FnOnce(&Hierarchies, &mut Selection) -> anyhow::Result<LiveOptions>,
) -> anyhow::Result<(LiveSource, Context)> {
    // Caught from now: a Ctrl-C while the probes load ends cleanly.
    let signals = Signals::install()?;
    let probe = Probe::load(&ProbeOptions {
        filter: !selection.is_everything(),
        ..probe.clone()
    })?;
    let hierarchies = Hierarchies::discover().context("cannot read the cgroup mounts")?;
    let mut cx = Context::new(
        selection,
        Clock::now(),
        1 << crate::probe::offsets::page_shift(),
    );
    let options = options(&hierarchies, &mut cx.selection)?;
    cx.hierarchies = Some(hierarchies.clone());
    let mut source = LiveSource::new(signals, probe, Resolver::new(hierarchies), options);
    // Said once counting has started (a test waits for these lines).
    for feature in source.probe().features() {
        crate::note!("cgtrace: {feature}");
    }
    let (probe, resolver) = source.probe_and_resolver();
    let allowed = cx.selection.install(probe, resolver)?;
    if !cx.selection.is_everything() {
        crate::note!(
            "cgtrace: keeping {} ({allowed} cgroups now, and their descendants as they appear)",
            cx.selection.describe()
        );
    }
    Ok((source, cx))
}

/// Gives up every capability but those `keep` needs, once everything is
/// attached, and says what it kept (a view that runs nothing else after
/// attaching calls it; `record` and `demo` do not: what they run inherits
/// their capabilities).
pub fn give_up_privileges(keep: &[crate::privilege::Keep]) -> anyhow::Result<()> {
    let dropped = crate::privilege::drop_all_but(keep)
        .context("cannot give up the capabilities no longer needed")?;
    crate::note!("cgtrace: capabilities: {dropped}");
    Ok(())
}
