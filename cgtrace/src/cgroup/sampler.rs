//! Samples of a cgroup's own files as events: memory ([`MemorySample`]),
//! CFS bandwidth ([`CpuSample`]) and pressure ([`PressureSample`]).
//!
//! Counters in the samples count from the moment [`FileSampler::prime`]
//! ran: a cgroup that existed then is counted from that moment, one created
//! later from zero (all it counted happened while watched). `memory.stat`'s
//! gauges become counters here too: every rise of a gauge between two
//! samples counts as charged, every fall as uncharged.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use cgtrace_common::{
    cgroup::CgroupRef,
    pagecache::{CHARGE_KINDS, ChargeKind},
};

use super::{
    Hierarchies, Hierarchy, Resolver, Version, cpu,
    stat::{self, CpuStat, MemoryEvents},
};
use crate::event::{
    Bandwidth, Charges, CpuSample, MemorySample, Pressure, PressureLine, PressureSample,
};

/// A cgroup by what identifies it: its hierarchy and id.
type Key = (u32, u64);

/// A cgroup's path and hierarchy; `None` when it is gone and was never
/// seen, or its hierarchy is not mounted.
fn locate(cgroup: CgroupRef, resolver: &mut Resolver) -> Option<(String, Hierarchy)> {
    let path = resolver.path(cgroup)?;
    let hierarchy = resolver.hierarchies().by_id(cgroup.hierarchy)?.clone();
    Some((path, hierarchy))
}

/// A memory sample of the cgroup's usage and limit alone.
fn usage_sample(cgroup: CgroupRef, h: &Hierarchy, path: &str, at_ns: u64) -> MemorySample {
    let (usage_bytes, limit_bytes) = stat::usage_and_limit(&h.mount, path, h.version);
    MemorySample {
        at_ns,
        cgroup,
        version: h.version,
        usage_bytes,
        limit_bytes,
        peak_bytes: None,
        page_cache_bytes: None,
        events: None,
        stat_charges: None,
    }
}

fn key(cgroup: CgroupRef) -> Key {
    (cgroup.hierarchy, cgroup.id)
}

/// Where one cgroup's counters started, and its last gauges.
#[derive(Debug, Default)]
struct Baseline {
    events: Option<MemoryEvents>,
    cpu: Option<CpuStat>,
    usage_ns: Option<u64>,
    /// `total_us` per pressure file and line (some, full).
    pressure: HashMap<(&'static str, bool), u64>,
    gauges: Option<[Option<u64>; CHARGE_KINDS]>,
    /// `memory.stat` charges summed so far.
    charges: Charges,
}

/// Reads cgroups' files into samples, counting from when it was primed.
#[derive(Debug, Default)]
pub struct FileSampler {
    baselines: HashMap<Key, Baseline>,
    page_size: u64,
    /// Cgroups found without pressure files (cgroup v1, or a hybrid host's
    /// unified tree without them), and when: not looked for again until
    /// [`PRESSURE_RECHECK`] has passed.
    no_pressure: HashMap<Key, Instant>,
}

/// How long a cgroup found without pressure files is not looked at again.
const PRESSURE_RECHECK: Duration = Duration::from_secs(30);

impl FileSampler {
    /// Drops what is kept of a removed cgroup.
    pub fn forget(&mut self, cgroup: CgroupRef) {
        self.baselines.remove(&key(cgroup));
        self.no_pressure.remove(&key(cgroup));
    }

    #[must_use]
    pub fn new(page_size: u64) -> Self {
        Self {
            baselines: HashMap::new(),
            page_size: page_size.max(1),
            no_pressure: HashMap::new(),
        }
    }

    /// Takes every cgroup of `hierarchy` as it is now as the start.
    pub fn prime(&mut self, resolver: &mut Resolver, hierarchy: u32) {
        let Some(h) = resolver.hierarchies().by_id(hierarchy).cloned() else {
            return;
        };
        for (id, path) in resolver.cgroups(hierarchy) {
            let baseline = self.baselines.entry((hierarchy, id)).or_default();
            if h.has("memory") {
                baseline.events = stat::read_events(&h.mount, &path, h.version).ok();
                baseline.gauges = stat::read(&h.mount, &path)
                    .ok()
                    .map(|stat| stat::charge_gauges(&stat, h.version));
            }
            if h.has("cpu") {
                baseline.cpu = cpu::cpu_stat(&h.mount, &path, h.version);
                baseline.usage_ns =
                    cpu::usage_ns(resolver.hierarchies(), &h.mount, &path, h.version);
            }
            for (file, pressure) in read_pressure(resolver.hierarchies(), &h, &path) {
                for (full, line) in [(false, Some(pressure.some)), (true, pressure.full)] {
                    if let Some(line) = line {
                        baseline.pressure.insert((file, full), line.total_us);
                    }
                }
            }
        }
    }

    /// The memory cgroup's usage and limit now, and nothing else (two
    /// small files): for the quiet cgroups an agent sweeps. `None` when it
    /// is gone.
    pub fn memory_usage(
        &mut self,
        cgroup: CgroupRef,
        resolver: &mut Resolver,
        at_ns: u64,
    ) -> Option<MemorySample> {
        let (path, h) = locate(cgroup, resolver)?;
        let sample = usage_sample(cgroup, &h, &path, at_ns);
        sample.usage_bytes.map(|_| sample)
    }

    /// The memory cgroup's files now; `None` when it is gone. With
    /// `stat_charges`, `memory.stat`'s gauges are followed as charges.
    pub fn memory(
        &mut self,
        cgroup: CgroupRef,
        resolver: &mut Resolver,
        at_ns: u64,
        stat_charges: bool,
    ) -> Option<MemorySample> {
        let (path, h) = locate(cgroup, resolver)?;
        let usage = usage_sample(cgroup, &h, &path, at_ns);
        let stat = stat::read(&h.mount, &path).ok();
        if usage.usage_bytes.is_none() && stat.is_none() {
            // Gone, its files with it (the root has memory.stat alone).
            // Nothing is kept for it: a removed cgroup's leftover page
            // cache is evicted for minutes after, and each eviction would
            // otherwise leave a baseline no removal comes to forget.
            return None;
        }
        let baseline = self.baselines.entry(key(cgroup)).or_default();
        let events = stat::read_events(&h.mount, &path, h.version)
            .ok()
            .map(|now| now.since(&baseline.events.unwrap_or_default()));
        let charges = match (&stat, stat_charges) {
            (Some(stat), true) => {
                let now = stat::charge_gauges(stat, h.version);
                let before = baseline
                    .gauges
                    .replace(now)
                    .unwrap_or([Some(0); CHARGE_KINDS]);
                for (index, total) in baseline.charges.iter_mut().enumerate() {
                    let (Some(now), Some(then)) = (now[index], before[index]) else {
                        continue;
                    };
                    // Refault counters are counts; the memory gauges are bytes.
                    let unit = if index >= ChargeKind::RefaultAnon as usize {
                        1
                    } else {
                        self.page_size
                    };
                    if now >= then {
                        total.0 += (now - then) / unit;
                    } else {
                        total.1 += (then - now) / unit;
                    }
                }
                Some(baseline.charges)
            }
            _ => None,
        };
        Some(MemorySample {
            peak_bytes: stat::peak_usage(&h.mount, &path, h.version),
            page_cache_bytes: stat
                .as_ref()
                .and_then(|stat| stat::page_cache_bytes(stat, h.version)),
            events,
            stat_charges: charges,
            ..usage
        })
    }

    /// The cpu cgroup's bandwidth and counters now; `None` when it is gone.
    ///
    /// `known` is the bandwidth when the caller has just read it (it
    /// changes rarely: not read again each interval); `usage` asks for the
    /// CPU time used too (on v1 one more file).
    pub fn cpu(
        &mut self,
        cgroup: CgroupRef,
        resolver: &mut Resolver,
        at_ns: u64,
        known: Option<Bandwidth>,
        usage: bool,
    ) -> Option<CpuSample> {
        let (path, h) = locate(cgroup, resolver)?;
        let bandwidth = known.or_else(|| cpu::bandwidth(&h.mount, &path, h.version));
        let stat = cpu::cpu_stat(&h.mount, &path, h.version);
        let usage = match h.version {
            _ if !usage => None,
            // v2 has it in the cpu.stat just read.
            Version::V2 => stat.and_then(|s| s.usage_ns),
            Version::V1 => cpu::usage_ns(resolver.hierarchies(), &h.mount, &path, h.version),
        };
        if bandwidth.is_none() && stat.is_none() {
            return None;
        }
        let baseline = self.baselines.entry(key(cgroup)).or_default();
        Some(CpuSample {
            at_ns,
            cgroup,
            stat: stat.map(|now| now.since(&baseline.cpu.unwrap_or_default())),
            bandwidth,
            usage_ns: usage.map(|now| now.saturating_sub(baseline.usage_ns.unwrap_or(0))),
        })
    }

    /// The cgroup's pressure files now; `None` where it has none.
    pub fn pressure(
        &mut self,
        cgroup: CgroupRef,
        resolver: &mut Resolver,
        at_ns: u64,
    ) -> Option<PressureSample> {
        if self
            .no_pressure
            .get(&key(cgroup))
            .is_some_and(|at| at.elapsed() < PRESSURE_RECHECK)
        {
            return None;
        }
        let (path, h) = locate(cgroup, resolver)?;
        let files = read_pressure(resolver.hierarchies(), &h, &path);
        if files.is_empty() {
            // Remembered only while it exists: a gone one's entry would
            // wait for a removal that has already been handled.
            if h.mount.join(path.trim_start_matches('/')).is_dir() {
                self.no_pressure.insert(key(cgroup), Instant::now());
            }
            return None;
        }
        self.no_pressure.remove(&key(cgroup));
        let baseline = self.baselines.entry(key(cgroup)).or_default();
        let mut sample = PressureSample {
            at_ns,
            cgroup,
            ..PressureSample::default()
        };
        for (file, mut pressure) in files {
            let since = |line: &mut PressureLine, full: bool| {
                line.total_us = line
                    .total_us
                    .saturating_sub(baseline.pressure.get(&(file, full)).copied().unwrap_or(0));
            };
            since(&mut pressure.some, false);
            if let Some(full) = &mut pressure.full {
                since(full, true);
            }
            match file {
                "memory" => sample.memory = Some(pressure),
                "cpu" => sample.cpu = Some(pressure),
                _ => sample.io = Some(pressure),
            }
        }
        Some(sample)
    }
}

/// The `*.pressure` files of the cgroup at `path`: only cgroup v2 has them,
/// and only with PSI enabled. On a hybrid host a v1 cgroup's pressure is
/// that of the cgroup at the same path in the unified hierarchy, where one
/// exists (systemd and container runtimes mirror their cgroups there).
fn read_pressure(
    hierarchies: &Hierarchies,
    hierarchy: &Hierarchy,
    path: &str,
) -> Vec<(&'static str, Pressure)> {
    let unified = if hierarchy.version == Version::V2 {
        Some(hierarchy)
    } else {
        hierarchies.list.iter().find(|h| h.version == Version::V2)
    };
    let Some(unified) = unified else {
        return Vec::new();
    };
    let dir = unified.mount.join(path.trim_start_matches('/'));
    ["memory", "cpu", "io"]
        .into_iter()
        .filter_map(|resource| {
            let text = super::read_file(dir.join(format!("{resource}.pressure"))).ok()?;
            Some((resource, parse_pressure(&text)?))
        })
        .collect()
}

/// Parses a `*.pressure` file:
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and a `full` line.
#[must_use]
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next()?;
        let mut parsed = PressureLine::default();
        for field in fields {
            let (name, value) = field.split_once('=')?;
            match name {
                "avg10" => parsed.avg10_centi = centi(value)?,
                "avg60" => parsed.avg60_centi = centi(value)?,
                "avg300" => parsed.avg300_centi = centi(value)?,
                "total" => parsed.total_us = value.parse().ok()?,
                _ => {}
            }
        }
        match kind {
            "some" => some = Some(parsed),
            "full" => full = Some(parsed),
            _ => {}
        }
    }
    Some(Pressure { some: some?, full })
}

/// `12.34` as 1234 hundredths.
fn centi(text: &str) -> Option<u32> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let fraction = format!("{fraction:0<2}");
    let whole: u32 = whole.parse().ok()?;
    let fraction: u32 = fraction.get(..2)?.parse().ok()?;
    whole.checked_mul(100)?.checked_add(fraction)
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

    use cgtrace_common::{cgroup::CgroupRef, pagecache::ChargeKind};

    use super::{FileSampler, parse_pressure};
    use crate::cgroup::{Hierarchies, Hierarchy, Resolver, Version};

    /// A fake hierarchy with one cgroup `app` whose files we write.
    fn fake(version: Version, controllers: &[&str]) -> (tempfile::TempDir, Resolver, CgroupRef) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let id = std::fs::metadata(dir.path().join("app")).unwrap().ino();
        let resolver = Resolver::new(Hierarchies {
            list: vec![Hierarchy {
                id: Some(7),
                version,
                mount: PathBuf::from(dir.path()),
                controllers: controllers.iter().map(|c| (*c).to_owned()).collect(),
            }],
        });
        (
            dir,
            resolver,
            CgroupRef {
                id,
                hierarchy: 7,
                level: 1,
            },
        )
    }

    fn write(dir: &tempfile::TempDir, file: &str, text: &str) {
        std::fs::write(dir.path().join("app").join(file), text).unwrap();
    }

    #[test]
    fn a_removed_cgroup_is_not_sampled_and_leaves_nothing_kept() {
        let (dir, mut resolver, app) = fake(Version::V1, &["memory"]);
        write(&dir, "memory.usage_in_bytes", "4096\n");
        write(&dir, "memory.limit_in_bytes", "8192\n");
        let mut sampler = FileSampler::new(4096);
        assert!(sampler.memory(app, &mut resolver, 1, true).is_some());
        assert!(sampler.pressure(app, &mut resolver, 1).is_none());
        sampler.forget(app);
        assert!(sampler.baselines.is_empty() && sampler.no_pressure.is_empty());
        // Removed (its files go with it), but the resolver still names it.
        std::fs::remove_dir_all(dir.path().join("app")).unwrap();
        assert!(sampler.memory(app, &mut resolver, 2, true).is_none());
        assert!(sampler.cpu(app, &mut resolver, 2, None, true).is_none());
        assert!(sampler.pressure(app, &mut resolver, 2).is_none());
        assert!(
            sampler.baselines.is_empty(),
            "{:?}",
            sampler.baselines.keys()
        );
        assert!(sampler.no_pressure.is_empty(), "{:?}", sampler.no_pressure);
    }

    #[test]
    fn v2_memory_counts_from_the_prime_and_follows_the_gauges() {
        let (dir, mut resolver, app) = fake(Version::V2, &["memory", "cpu"]);
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\n",
        );
        write(
            &dir,
            "memory.stat",
            "anon 8192\nfile 40960\nkernel 4096\nsock 0\nshmem 0\nworkingset_refault_anon 0\nworkingset_refault_file 3\n",
        );
        write(&dir, "memory.current", "1048576\n");
        write(&dir, "memory.max", "max\n");
        write(&dir, "memory.peak", "2097152\n");
        let mut sampler = FileSampler::new(4096);
        sampler.prime(&mut resolver, 7);
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 2\nmax 9\noom 2\noom_kill 2\n",
        );
        write(
            &dir,
            "memory.stat",
            "anon 4096\nfile 49152\nkernel 4096\nsock 0\nshmem 0\nworkingset_refault_anon 0\nworkingset_refault_file 10\n",
        );
        let sample = sampler.memory(app, &mut resolver, 5, true).unwrap();
        let events = sample.events.unwrap();
        assert_eq!(
            (events.high, events.max, events.oom, events.oom_kill),
            (Some(0), Some(4), Some(1), Some(1))
        );
        let charges = sample.stat_charges.unwrap();
        assert_eq!(
            charges[ChargeKind::Anon as usize],
            (0, 1),
            "one anon page uncharged"
        );
        assert_eq!(
            charges[ChargeKind::File as usize],
            (2, 0),
            "two file pages charged"
        );
        assert_eq!(
            charges[ChargeKind::RefaultFile as usize],
            (7, 0),
            "refaults are counts"
        );
        assert_eq!(sample.page_cache_bytes, Some(49152));
        assert_eq!(
            (sample.usage_bytes, sample.limit_bytes),
            (Some(1 << 20), None)
        );
        assert_eq!(sample.peak_bytes, Some(2 << 20));
        // The charges keep adding up.
        write(&dir, "memory.stat", "anon 8192\nfile 49152\n");
        let again = sampler.memory(app, &mut resolver, 6, true).unwrap();
        assert_eq!(
            again.stat_charges.unwrap()[ChargeKind::Anon as usize],
            (1, 1)
        );
    }

    #[test]
    fn a_cgroup_created_after_the_prime_counts_from_zero() {
        let (dir, mut resolver, app) = fake(Version::V1, &["memory"]);
        let mut sampler = FileSampler::new(4096);
        sampler.prime(&mut resolver, 7);
        write(&dir, "memory.failcnt", "12\n");
        write(
            &dir,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write(&dir, "memory.stat", "cache 8192\nrss 0\nshmem 0\n");
        let sample = sampler.memory(app, &mut resolver, 1, false).unwrap();
        let events = sample.events.unwrap();
        assert_eq!(
            (events.max, events.oom_kill, events.high),
            (Some(12), Some(1), None)
        );
        assert!(sample.stat_charges.is_none(), "not asked for");
        let gone = CgroupRef {
            id: u64::MAX,
            hierarchy: 7,
            level: 1,
        };
        assert!(sampler.memory(gone, &mut resolver, 1, false).is_none());
    }

    #[test]
    fn cpu_and_pressure_count_from_the_prime() {
        let (dir, mut resolver, app) = fake(Version::V2, &["cpu"]);
        write(&dir, "cpu.max", "50000 100000\n");
        write(
            &dir,
            "cpu.stat",
            "usage_usec 1000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 800\n",
        );
        write(
            &dir,
            "cpu.pressure",
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=5000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=100\n",
        );
        let mut sampler = FileSampler::new(4096);
        sampler.prime(&mut resolver, 7);
        write(
            &dir,
            "cpu.stat",
            "usage_usec 3000\nnr_periods 15\nnr_throttled 6\nthrottled_usec 1800\n",
        );
        write(
            &dir,
            "cpu.pressure",
            "some avg10=12.34 avg60=0.25 avg300=0.00 total=9000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=100\n",
        );
        let cpu = sampler.cpu(app, &mut resolver, 1, None, true).unwrap();
        let stat = cpu.stat.unwrap();
        assert_eq!(
            (stat.nr_periods, stat.nr_throttled, stat.throttled_ns),
            (5, 2, 1_000_000)
        );
        assert_eq!(cpu.usage_ns, Some(2_000_000));
        assert_eq!(cpu.bandwidth.unwrap().millicores(), Some(500));
        let pressure = sampler.pressure(app, &mut resolver, 1).unwrap();
        let some = pressure.cpu.unwrap().some;
        assert_eq!((some.avg10_centi, some.total_us), (1234, 4000));
        assert!(pressure.memory.is_none() && pressure.io.is_none());
    }

    #[test]
    fn parses_pressure_files() {
        let memory = parse_pressure(
            "some avg10=0.12 avg60=3.4 avg300=10.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=45\n",
        )
        .unwrap();
        assert_eq!(
            (
                memory.some.avg10_centi,
                memory.some.avg60_centi,
                memory.some.avg300_centi
            ),
            (12, 340, 1000)
        );
        assert_eq!(memory.full.unwrap().total_us, 45);
        // The root's cpu.pressure had no full line before 5.13.
        assert!(
            parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
                .unwrap()
                .full
                .is_none()
        );
        assert!(parse_pressure("").is_none());
        assert!(parse_pressure("some avg10=x total=1\n").is_none());
    }
}
