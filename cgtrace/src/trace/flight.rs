//! The flight recorder: `serve --flight-recorder DIR` records continuously
//! into segment files of bounded size and age, deleting the oldest to stay
//! under a disk cap, and keeps the last minutes as a snapshot on every OOM
//! kill and on SIGUSR1.
//!
//! - A segment is a whole trace file (`segment-<UTC>-<seq>.cgt`). It opens
//!   with the names of every cgroup alive then and every workload, so any
//!   run of segments replays with its cgroups named however long ago they
//!   were learnt. (A removed cgroup's name is in the segments from its
//!   creation to its removal, not re-sent after: under churn that would
//!   grow each segment's opening without bound.) A directory of segments
//!   reads as one trace.
//! - A snapshot is a directory under `snapshots/` of hard links to the
//!   segments covering the last `--keep` minutes, the one being written
//!   included (it goes on growing there until it is full): taking one
//!   copies nothing, and its data stays when the ring deletes its own
//!   links.
//! - The cap counts every file once, however many links it has. Before a
//!   segment opens, the oldest segments of the ring go, then the oldest
//!   snapshots, until the new segment fits at its full size and one chunk
//!   more (the chunk being written may take it past its size), so the
//!   directory never passes the cap.
//! - A write that fails (the disk is full) pauses the recorder: the rest of
//!   the session goes on, a metric and one log line say so, and each
//!   interval it tries a fresh segment until one can be written.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use super::{
    file::{CHUNK_TARGET, TraceWriter},
    sink::machine_header,
};
use crate::{
    event::{CgroupNamed, Event, OomKill, WorkloadNames},
    session::{Context, End, Flow, Sink},
    system::Clock,
    view::format::file_time,
};

/// Where and how much to record.
#[derive(Clone, Debug)]
pub struct FlightOptions {
    pub dir: PathBuf,
    /// The most the directory holds, segments and snapshots together.
    pub max_disk: u64,
    /// A segment is closed once it holds this much...
    pub segment_bytes: u64,
    /// ...or has recorded for this long.
    pub segment_age: Duration,
    /// How far back a snapshot reaches.
    pub keep: Duration,
}

/// The default disk cap.
pub const DEFAULT_MAX_DISK: u64 = 1 << 30;
/// The default snapshot reach: the minutes before a kill.
pub const DEFAULT_KEEP: Duration = Duration::from_mins(10);
/// A segment's age at most: a snapshot reaches back at most this much
/// further than asked.
pub const SEGMENT_AGE: Duration = Duration::from_mins(1);
/// Snapshots are at least this far apart: in an OOM storm, a kill soon
/// after a snapshot is in that snapshot's growing last segment.
const SNAPSHOT_SPACING_NS: u64 = 10_000_000_000;

impl FlightOptions {
    /// The options for `dir` with a cap of `max_disk`: segments of a
    /// sixteenth of the cap (at most 64 MiB), so the ring holds many.
    pub fn new(dir: PathBuf, max_disk: u64, keep: Duration) -> anyhow::Result<Self> {
        let segment_bytes = (max_disk / 16).min(64 << 20);
        if segment_bytes < CHUNK_TARGET as u64 {
            anyhow::bail!(
                "--max-disk {max_disk} bytes is too small for a flight recorder: give at least 1M"
            );
        }
        Ok(Self {
            dir,
            max_disk,
            segment_bytes,
            segment_age: SEGMENT_AGE,
            keep,
        })
    }
}

/// The recorder's state as metrics.
#[derive(Clone, Debug, Default)]
pub struct RecorderStatus {
    disk_bytes: Gauge,
    paused: Gauge,
    snapshots: Counter,
    deleted: Counter,
}

impl RecorderStatus {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "flight_recorder_disk_bytes",
            "Bytes the flight recorder's directory holds, segments and snapshots",
            self.disk_bytes.clone(),
        );
        registry.register(
            "flight_recorder_paused",
            "1 while the flight recorder cannot write (the disk is full), else 0",
            self.paused.clone(),
        );
        registry.register(
            "flight_recorder_snapshots",
            "Snapshots the flight recorder kept (on OOM kills and SIGUSR1)",
            self.snapshots.clone(),
        );
        registry.register(
            "flight_recorder_segments_deleted",
            "Segments deleted to stay under --max-disk",
            self.deleted.clone(),
        );
    }
}

/// The segment being written.
struct Segment {
    writer: TraceWriter<File>,
    path: PathBuf,
    start_ns: u64,
}

/// A closed segment of the ring; the times are `None` for one found from an
/// earlier run (deleted in turn, never in a snapshot).
struct Closed {
    path: PathBuf,
    span_ns: Option<(u64, u64)>,
}

pub struct FlightRecorder {
    options: FlightOptions,
    status: RecorderStatus,
    current: Option<Segment>,
    ring: VecDeque<Closed>,
    /// The cgroups alive, by hierarchy and id.
    names: HashMap<(u32, u64), CgroupNamed>,
    /// The size of the last segment's opening names.
    preamble_bytes: u64,
    /// The workload names of the cgroups alive, by path.
    workloads: HashMap<String, WorkloadNames>,
    /// Why writing stopped, while it is stopped.
    paused: Option<String>,
    sequence: u64,
    last_snapshot_ns: Option<u64>,
    /// Set by SIGUSR1.
    snapshot_asked: Arc<AtomicBool>,
}

impl FlightRecorder {
    /// Makes the directory and takes in segments an earlier run left.
    pub fn open(options: FlightOptions, status: RecorderStatus) -> anyhow::Result<Self> {
        std::fs::create_dir_all(options.dir.join("snapshots"))
            .with_context(|| format!("cannot make {}", options.dir.display()))?;
        let ring = segment_files(&options.dir)?
            .into_iter()
            .map(|path| Closed {
                path,
                span_ns: None,
            })
            .collect();
        Ok(Self {
            options,
            status,
            current: None,
            ring,
            names: HashMap::new(),
            preamble_bytes: 0,
            workloads: HashMap::new(),
            paused: None,
            sequence: 0,
            last_snapshot_ns: None,
            snapshot_asked: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Set to ask for a snapshot at the next interval (SIGUSR1).
    #[must_use]
    pub fn snapshot_trigger(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.snapshot_asked)
    }

    /// Bytes under the directory, each file once however many links it has.
    #[must_use]
    pub fn disk_bytes(&self) -> u64 {
        let mut seen = HashSet::new();
        let mut total = 0;
        let mut count = |path: &Path| {
            if let Ok(meta) = std::fs::symlink_metadata(path)
                && meta.is_file()
                && seen.insert((meta.dev(), meta.ino()))
            {
                // Blocks held, or the length where the filesystem counts
                // none (ramfs).
                total += (meta.blocks() * 512).max(meta.len());
            }
        };
        for_each_file(&self.options.dir, &mut count);
        for snapshot in snapshot_dirs(&self.options.dir) {
            for_each_file(&snapshot, &mut count);
        }
        total
    }

    fn learn(&mut self, event: &Event) {
        match event {
            Event::CgroupCreated(named) | Event::CgroupNamed(named) => {
                self.names
                    .insert((named.cgroup.hierarchy, named.cgroup.id), named.clone());
            }
            Event::CgroupRemoved(removed) => {
                if let Some(named) = self
                    .names
                    .remove(&(removed.cgroup.hierarchy, removed.cgroup.id))
                {
                    self.workloads.remove(&named.path);
                }
            }
            Event::WorkloadNamed(names) => {
                self.workloads.insert(names.path.clone(), names.clone());
            }
            _ => {}
        }
    }

    /// Stops writing, once, saying why.
    fn pause(&mut self, why: &anyhow::Error) {
        self.current = None;
        if self.paused.is_none() {
            crate::note!(
                "cgtrace: flight recorder: {why:#}: recording paused (metrics go on); it resumes when a segment can be written"
            );
            self.status.paused.set(1);
            self.paused = Some(format!("{why:#}"));
        }
    }

    /// Writes `event` to the current segment, opening one when there is
    /// none; pauses on failure.
    fn write(&mut self, event: &Event) {
        if self.current.is_none() && self.paused.is_none() {
            self.open_segment();
        }
        let Some(segment) = &mut self.current else {
            return;
        };
        let written = segment
            .writer
            .event(event)
            .with_context(|| format!("cannot write {}", segment.path.display()));
        if let Err(error) = written {
            self.pause(&error);
        } else if segment.writer.bytes_written() >= self.segment_limit() {
            self.close_segment();
        }
    }

    /// The size a segment is closed at: the option, or twice its opening
    /// names where they are larger (so a host with many cgroups still
    /// records more than names in each segment).
    fn segment_limit(&self) -> u64 {
        self.options.segment_bytes.max(2 * self.preamble_bytes)
    }

    /// Opens a new segment once there is room for it at its full size, and
    /// writes the names it starts with.
    fn open_segment(&mut self) {
        self.make_room(self.segment_limit());
        self.sequence += 1;
        let path = self.options.dir.join(format!(
            "segment-{}-{:06}.cgt",
            file_time(SystemTime::now()),
            self.sequence
        ));
        match self.start_segment(&path) {
            Ok(segment) => {
                if self.paused.take().is_some() {
                    crate::note!("cgtrace: flight recorder: recording again");
                    self.status.paused.set(0);
                }
                self.current = Some(segment);
            }
            Err(error) => {
                // Leave no header-only file behind.
                let _ = std::fs::remove_file(&path);
                self.pause(&error);
            }
        }
    }

    fn start_segment(&mut self, path: &Path) -> anyhow::Result<Segment> {
        let now_ns = Clock::monotonic_now_ns();
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = TraceWriter::new(file, &machine_header())
            .with_context(|| format!("cannot write {}", path.display()))?;
        for named in self.names.values() {
            writer.event(&Event::CgroupNamed(named.clone()))?;
        }
        for names in self.workloads.values() {
            writer.event(&Event::WorkloadNamed(names.clone()))?;
        }
        writer
            .flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.preamble_bytes = writer.bytes_written();
        Ok(Segment {
            writer,
            path: path.to_owned(),
            start_ns: now_ns,
        })
    }

    fn close_segment(&mut self) {
        let Some(mut segment) = self.current.take() else {
            return;
        };
        let flushed = segment
            .writer
            .flush()
            .with_context(|| format!("cannot write {}", segment.path.display()));
        self.ring.push_back(Closed {
            path: segment.path,
            span_ns: Some((segment.start_ns, Clock::monotonic_now_ns())),
        });
        if let Err(error) = flushed {
            self.pause(&error);
        }
    }

    /// Deletes the oldest segments, then the oldest snapshots, until
    /// `reserve` more bytes fit under the cap, and the chunk that may take
    /// a segment past its size.
    fn make_room(&mut self, reserve: u64) {
        let reserve = reserve + CHUNK_TARGET as u64;
        loop {
            let used = self.disk_bytes();
            self.status
                .disk_bytes
                .set(i64::try_from(used).unwrap_or(i64::MAX));
            if used + reserve <= self.options.max_disk {
                return;
            }
            if let Some(oldest) = self.ring.pop_front() {
                let _ = std::fs::remove_file(&oldest.path);
                self.status.deleted.inc();
            } else if let Some(oldest) = snapshot_dirs(&self.options.dir).into_iter().next() {
                crate::note!(
                    "cgtrace: flight recorder: deleted snapshot {} to stay under --max-disk",
                    oldest.display()
                );
                let _ = std::fs::remove_dir_all(&oldest);
            } else {
                return;
            }
        }
    }

    /// Keeps the segments covering the last `--keep` as `snapshots/<UTC>-<why>`.
    fn snapshot(&mut self, why: &str) -> anyhow::Result<()> {
        if let Some(segment) = &mut self.current {
            segment.writer.flush()?;
        }
        let now_ns = Clock::monotonic_now_ns();
        let since_ns = now_ns.saturating_sub(duration_ns(self.options.keep));
        let mut paths: Vec<&Path> = self
            .ring
            .iter()
            .filter(|closed| closed.span_ns.is_some_and(|(_, end)| end >= since_ns))
            .map(|closed| closed.path.as_path())
            .collect();
        paths.extend(self.current.as_ref().map(|segment| segment.path.as_path()));
        if paths.is_empty() {
            return Ok(());
        }
        let dir = self
            .options
            .dir
            .join("snapshots")
            .join(format!("{}-{why}", file_time(SystemTime::now())));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
        for path in paths {
            if let Some(name) = path.file_name() {
                std::fs::hard_link(path, dir.join(name)).with_context(|| {
                    format!("cannot link {} into {}", path.display(), dir.display())
                })?;
            }
        }
        self.last_snapshot_ns = Some(now_ns);
        self.status.snapshots.inc();
        crate::note!(
            "cgtrace: flight recorder: kept the last {} min as {}",
            self.options.keep.as_secs().div_ceil(60),
            dir.display()
        );
        Ok(())
    }

    fn snapshot_for_kill(&mut self, kill: &OomKill, cx: &mut Context) {
        if self
            .last_snapshot_ns
            .is_some_and(|at| kill.monotonic_ns.saturating_sub(at) < SNAPSHOT_SPACING_NS)
        {
            return;
        }
        let workload = kill.victim.cgroup.as_deref().map_or_else(
            || "unknown".to_owned(),
            |path| {
                let identity = cx.selection.identify(path);
                identity
                    .pod
                    .or_else(|| {
                        path.rsplit('/')
                            .find(|part| !part.is_empty())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "root".to_owned())
            },
        );
        if let Err(error) = self.snapshot(&format!("oom-{}", file_name_part(&workload))) {
            crate::note!("cgtrace: flight recorder: no snapshot of the kill: {error:#}");
        }
    }

    /// At the end of an interval: the segment's age, the cap, a paused
    /// recorder's retry, and a snapshot SIGUSR1 asked for.
    fn tick(&mut self) {
        if let Some(segment) = &mut self.current {
            let flushed = segment
                .writer
                .flush()
                .with_context(|| format!("cannot write {}", segment.path.display()));
            if let Err(error) = flushed {
                self.pause(&error);
            }
        }
        if let Some(segment) = &self.current
            && Clock::monotonic_now_ns().saturating_sub(segment.start_ns)
                >= duration_ns(self.options.segment_age)
        {
            self.close_segment();
        }
        if self.current.is_none() {
            // The next event opens one; a paused recorder tries now.
            if self.paused.is_some() {
                self.open_segment();
            }
        } else {
            let written = self
                .current
                .as_ref()
                .map_or(0, |s| s.writer.bytes_written());
            self.make_room(self.segment_limit().saturating_sub(written));
        }
        if self.snapshot_asked.swap(false, Ordering::Relaxed)
            && let Err(error) = self.snapshot("signal")
        {
            crate::note!("cgtrace: flight recorder: no snapshot: {error:#}");
        }
    }
}

impl Sink for FlightRecorder {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        self.learn(event);
        // What the filters keep, as `record` writes it.
        if let Some(kept) = cx.keep(event) {
            self.write(&kept);
        }
        match event {
            Event::Tick(_) => self.tick(),
            Event::OomKill(kill) if kill.counted_as_kill != Some(false) => {
                self.snapshot_for_kill(kill, cx);
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        self.close_segment();
        Ok(())
    }
}

/// `dir`'s segment files, oldest first.
fn segment_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("segment-"));
            named && path.extension().is_some_and(|e| e == "cgt")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The snapshot directories, oldest first.
fn snapshot_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn for_each_file(dir: &Path, f: &mut impl FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        f(&entry.path());
    }
}

/// `text` safe in a file name: letters, digits, `.`, `_` and `-`, at most
/// 64 of them.
fn file_name_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_name_is_safe_in_a_file_name() {
        assert_eq!(file_name_part("web-7d9f/../x y"), "web-7d9f_.._x_y");
        assert_eq!(file_name_part("..hidden"), "hidden");
        assert_eq!(file_name_part(&"a".repeat(300)).len(), 64);
    }
}
