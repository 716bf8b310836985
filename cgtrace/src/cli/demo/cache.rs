//! The page-cache scenarios: a cgroup thrashing its cache under a small
//! limit (against the same reads under a limit that fits), and a noisy
//! neighbour evicting a sibling's cache under their parent's limit. Each is
//! checked against the kernel's own `memory.stat`.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CacheReason, ReclaimKind},
};

use super::session::DemoProbe;
use crate::{
    cgroup::{scratch::ScratchCgroup, stat},
    event::Event,
    model::cache::{CacheModel, Totals},
    session::{Context, End, Flow, Sink},
    view::{cache::duration, format::bytes},
    workload::UncachedFile,
};

const MIB: u64 = 1 << 20;

/// The probe's page-cache counters over the sessions it is given to.
#[derive(Default)]
struct Flows {
    totals: Totals,
    model: CacheModel,
}

impl Sink for Flows {
    fn event(&mut self, event: &Event, _cx: &mut Context) -> anyhow::Result<Flow> {
        if let Event::Counters(counters) = event {
            self.totals.add(counters);
            self.model.add(counters);
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        Ok(())
    }
}

/// `cat FILES > /dev/null`: each file read once, in turn.
fn cat(files: &[&std::path::Path]) -> Command {
    let mut command = Command::new("cat");
    command.args(files).stdout(Stdio::null());
    command
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(rustix::param::page_size()).unwrap_or(4096)
}

fn kernel_page_cache(cgroup: &ScratchCgroup) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(cgroup.dir().join("memory.stat"))
        .with_context(|| format!("reading {}/memory.stat", cgroup.dir().display()))?;
    stat::page_cache_bytes(&stat::parse(&text), cgroup.version())
        .context("memory.stat has no page-cache figure")
}

fn cgroup_ref(cgroup: &ScratchCgroup) -> anyhow::Result<CgroupRef> {
    Ok(CgroupRef {
        id: cgroup.id()?,
        hierarchy: cgroup.hierarchy(),
        level: u32::try_from(cgroup.path().matches('/').count()).unwrap_or(0),
    })
}

fn percent(part: u64, whole: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a display figure")]
    let ratio = part as f64 / whole.max(1) as f64;
    ratio * 100.0
}

/// One limited run of the thrash scenario: two reads of the file.
struct ThrashRun {
    seconds: f64,
    added: u64,
    evicted: u64,
    own_limit: u64,
    derived: u64,
    kernel: u64,
    stalls: Option<cgtrace_common::pagecache::StallStats>,
}

fn thrash_run(
    demo: &mut DemoProbe,
    file: &UncachedFile,
    limit: u64,
    label: &str,
) -> anyhow::Result<ThrashRun> {
    file.drop_cache()?;
    let name = format!("cgtrace-demo-{}-{label}", std::process::id());
    let group = ScratchCgroup::create(demo.hierarchies(), &name)?;
    group.set_memory_limit(limit)?;
    let id = group.id()?;
    let mut flows = Flows::default();
    let ran = demo.run(&[&group], cat(&[&file.path, &file.path]), &mut [&mut flows])?;
    if !ran.status.success() {
        bail!("cat failed: {}", ran.status);
    }
    let Flows { totals, model } = flows;
    let page = page_size();
    let derived = u64::try_from(model.net_pages(cgroup_ref(&group)?)).unwrap_or(0) * page;
    Ok(ThrashRun {
        seconds: ran.took.as_secs_f64(),
        added: totals.owned(id, CacheReason::Added) * page,
        evicted: totals.evicted(id) * page,
        own_limit: totals.owned(id, CacheReason::OwnLimit) * page,
        derived,
        kernel: kernel_page_cache(&group)?,
        stalls: totals.stalls_of(id, ReclaimKind::Memcg),
    })
}

pub fn thrash(demo: &mut DemoProbe) -> anyhow::Result<bool> {
    const FILE_MIB: usize = 512;
    crate::say!(
        "\n== cache-thrash: a {FILE_MIB} MiB file read twice, under a 128 MiB limit and under a 1 GiB limit that fits =="
    );
    let file = UncachedFile::create("cgtrace-demo-thrash", FILE_MIB)
        .context("cannot write the demo file")?;
    let small = thrash_run(demo, &file, 128 * MIB, "thrash-small")?;
    let fits = thrash_run(demo, &file, 1024 * MIB, "thrash-fits")?;
    let mut agree = true;
    for (label, run) in [("limit 128M", &small), ("limit 1G  ", &fits)] {
        let stalls = run.stalls.as_ref().map_or_else(
            || "no reclaim stalls".to_owned(),
            |s| {
                format!(
                    "{} reclaim stalls, {} in total (p50 {}, p99 {}, max {})",
                    s.count,
                    duration(s.total_ns),
                    s.quantile_ns(0.5).map_or_else(|| "-".to_owned(), duration),
                    s.quantile_ns(0.99).map_or_else(|| "-".to_owned(), duration),
                    duration(s.max_ns)
                )
            },
        );
        crate::say!(
            "{label}: two reads took {:.2} s; cgtrace: {} added, {} evicted ({:.1}% under its own limit), {stalls}",
            run.seconds,
            bytes(run.added),
            bytes(run.evicted),
            percent(run.own_limit, run.evicted),
        );
        crate::say!(
            "            page cache now: cgtrace {} (from events), memory.stat {}",
            bytes(run.derived),
            bytes(run.kernel)
        );
        agree &= run.derived.abs_diff(run.kernel) * 50 <= run.kernel.max(MIB);
    }
    agree &=
        small.own_limit * 100 >= small.evicted * 95 && small.evicted > 0 && fits.evicted < 16 * MIB;
    let file_bytes = u64::try_from(FILE_MIB).unwrap_or(0) * MIB;
    crate::say!(
        "the second read re-read {} from the block device under the small limit (the group had evicted \
         its own cache to stay under it) and {} under the limit that fits; the two reads took {:.2} s \
         against {:.2} s ({:.2}x)",
        bytes(small.added.saturating_sub(file_bytes)),
        bytes(fits.added.saturating_sub(file_bytes)),
        small.seconds,
        fits.seconds,
        small.seconds / fits.seconds.max(1e-9)
    );
    print_verdict(
        agree,
        "page cache agrees with memory.stat within 2%, and the evictions are the group's own",
    );
    Ok(agree)
}

pub fn noisy_neighbour(demo: &mut DemoProbe) -> anyhow::Result<bool> {
    crate::say!(
        "\n== noisy-neighbour: children quiet and noisy of a parent limited to 192 MiB; \
         quiet caches 128 MiB, then noisy reads 256 MiB =="
    );
    let quiet_file =
        UncachedFile::create("cgtrace-demo-quiet", 128).context("cannot write the demo file")?;
    let noisy_file =
        UncachedFile::create("cgtrace-demo-noisy", 256).context("cannot write the demo file")?;
    let name = format!("cgtrace-demo-{}-neighbours", std::process::id());
    let mut parent = ScratchCgroup::create(demo.hierarchies(), &name)?;
    parent.set_memory_limit(192 * MIB)?;
    let mut flows = Flows::default();
    let (quiet_id, quiet_path, quiet_before) = {
        let quiet = parent.child("quiet")?;
        demo.run(&[quiet], cat(&[&quiet_file.path]), &mut [&mut flows])?;
        (
            quiet.id()?,
            quiet.path().to_owned(),
            kernel_page_cache(quiet)?,
        )
    };
    let (noisy_id, noisy_path) = {
        let noisy = parent.child("noisy")?;
        demo.run(&[noisy], cat(&[&noisy_file.path]), &mut [&mut flows])?;
        (noisy.id()?, noisy.path().to_owned())
    };
    let quiet_after = {
        let dir = demo
            .hierarchies()
            .with_controller("memory")
            .context("no memory hierarchy")?
            .mount
            .join(quiet_path.trim_start_matches('/'));
        let text = std::fs::read_to_string(dir.join("memory.stat"))?;
        stat::page_cache_bytes(&stat::parse(&text), parent.version()).unwrap_or(0)
    };
    let totals = flows.totals;
    let page = page_size();
    let evicted = totals.evicted(quiet_id) * page;
    let by_noisy = totals.between(quiet_id, noisy_id, CacheReason::AncestorLimit) * page;
    crate::say!(
        "cgtrace: {quiet_path} lost {} of page cache to reclaim; {noisy_path} evicted {} of it ({:.1}%) \
         under their parent's limit",
        bytes(evicted),
        bytes(by_noisy),
        percent(by_noisy, evicted)
    );
    crate::say!(
        "memory.stat: {quiet_path}'s page cache went from {} to {}",
        bytes(quiet_before),
        bytes(quiet_after)
    );
    let lost = quiet_before.saturating_sub(quiet_after);
    let agree = by_noisy * 100 >= evicted * 90 && evicted.abs_diff(lost) * 50 <= lost.max(MIB);
    print_verdict(
        agree,
        "the noisy neighbour is named, and what it evicted is what memory.stat lost",
    );
    Ok(agree)
}

fn print_verdict(agree: bool, what: &str) {
    if agree {
        crate::say!("verdict: {what}");
    } else {
        crate::say!("verdict: MISMATCH: expected that {what}");
    }
}
