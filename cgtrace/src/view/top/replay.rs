//! A recording read as `top` steps through it. Snapshots are made on
//! demand as the screen moves forward, and only the last [`WINDOW`] are
//! kept for stepping back; a step further back reads the recording again
//! from its start. So a replay starts at once and holds the same memory
//! for a minute's recording as for a week's.

use std::path::{Path, PathBuf};

use crate::{
    model::top::Snapshot,
    session::{self, Context, End, Sink as _, Source as _, TraceSource},
    view::top::TopSink,
};

/// Snapshots kept behind the newest one made.
pub const WINDOW: usize = 256;

pub struct Replay {
    path: PathBuf,
    page_size: u64,
    source: TraceSource,
    sink: TopSink,
    /// The recording's index of `sink.snapshots[0]`.
    first: usize,
    /// The recording has been read to its end: the count is known.
    ended: bool,
}

impl Replay {
    /// Opens `path` and makes its first snapshot; an error if it has none.
    pub fn open(path: &Path, cx: &mut Context) -> anyhow::Result<Self> {
        let source = TraceSource::open(path)?;
        let page_size = source.header().page_size;
        source.learn_names(cx)?;
        let mut replay = Self {
            path: path.to_owned(),
            page_size,
            source,
            sink: TopSink::new(page_size, true),
            first: 0,
            ended: false,
        };
        if replay.seek(0, cx)?.is_none() {
            anyhow::bail!("{} holds no complete interval to show", path.display());
        }
        Ok(replay)
    }

    /// Snapshot `index`, or the last one if the recording ends before it:
    /// its index. `None` only for a recording without any.
    pub fn seek(&mut self, index: usize, cx: &mut Context) -> anyhow::Result<Option<usize>> {
        if index < self.first {
            self.restart(cx)?;
        }
        while self.first + self.sink.snapshots.len() <= index && !self.ended {
            self.read_one(cx)?;
        }
        let made = self.first + self.sink.snapshots.len();
        Ok((made > 0).then(|| index.min(made - 1)))
    }

    /// Whether `index` is behind the kept snapshots (a step there reads
    /// the recording again).
    #[must_use]
    pub fn is_behind(&self, index: usize) -> bool {
        index < self.first
    }

    /// Snapshots in the recording, once it has been read to its end.
    #[must_use]
    pub fn count(&self) -> Option<usize> {
        self.ended.then_some(self.first + self.sink.snapshots.len())
    }

    #[must_use]
    pub fn snapshot(&self, index: usize) -> Option<&Snapshot> {
        self.sink.snapshots.get(index.checked_sub(self.first)?)
    }

    /// The sink, whose snapshots start at [`Self::first`].
    #[must_use]
    pub fn sink(&self) -> &TopSink {
        &self.sink
    }

    /// The recording's index of the sink's first snapshot.
    #[must_use]
    pub fn first(&self) -> usize {
        self.first
    }

    fn read_one(&mut self, cx: &mut Context) -> anyhow::Result<()> {
        let next = session::runtime()?.block_on(self.source.next(cx))?;
        let Some(event) = next else {
            self.ended = true;
            let end = End {
                ending: self.source.ending(),
                ..End::default()
            };
            return self.sink.finish(cx, &end);
        };
        session::deliver(&event, cx, &mut [&mut self.sink])?;
        let kept = self.sink.snapshots.len();
        if kept > WINDOW + WINDOW / 4 {
            let dropped = kept - WINDOW;
            self.sink.snapshots.drain(..dropped);
            self.first += dropped;
        }
        Ok(())
    }

    fn restart(&mut self, cx: &mut Context) -> anyhow::Result<()> {
        self.source = TraceSource::open(&self.path)?;
        self.source.learn_names(cx)?;
        self.sink = TopSink::new(self.page_size, true);
        self.first = 0;
        self.ended = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Replay, WINDOW};
    use crate::{
        identity::selection::{SelectArgs, Selection},
        session::Context,
        system::Clock,
        trace::file::{TraceHeader, TraceWriter},
    };

    /// A recording of `intervals` one-second intervals.
    fn recording(intervals: u64) -> tempfile_path::Path {
        let path = tempfile_path::Path::new("top-replay");
        let file = std::fs::File::create(&path.0).unwrap();
        let header = TraceHeader {
            page_size: 4096,
            ..TraceHeader::default()
        };
        let mut writer = TraceWriter::new(std::io::BufWriter::new(file), &header).unwrap();
        for s in 0..intervals {
            writer
                .event(&crate::event::Event::Tick(crate::event::Tick {
                    start_ns: s * 1_000_000_000,
                    end_ns: (s + 1) * 1_000_000_000,
                }))
                .unwrap();
        }
        writer.flush().unwrap();
        path
    }

    mod tempfile_path {
        /// A file in the temporary directory, removed on drop.
        pub struct Path(pub std::path::PathBuf);

        impl Path {
            pub fn new(name: &str) -> Self {
                Self(std::env::temp_dir().join(format!(
                    "cgtrace-unit-{name}-{}-{:?}.cgt",
                    std::process::id(),
                    std::thread::current().id()
                )))
            }
        }

        impl Drop for Path {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn steps_forward_and_far_back_through_a_bounded_window() {
        let intervals = 3 * WINDOW as u64;
        let path = recording(intervals);
        let mut cx = Context::new(
            Selection::new(&SelectArgs::default()).unwrap(),
            Clock::from_boot_time(0),
            4096,
        );
        let mut replay = Replay::open(&path.0, &mut cx).unwrap();
        assert_eq!(replay.count(), None, "read only as far as shown");
        let last = usize::try_from(intervals).unwrap() - 1;
        assert_eq!(replay.seek(usize::MAX, &mut cx).unwrap(), Some(last));
        assert_eq!(replay.count(), Some(last + 1));
        assert!(replay.sink().snapshots.len() <= WINDOW + WINDOW / 4);
        let end_ns = |replay: &Replay, at| replay.snapshot(at).unwrap().end_ns;
        assert_eq!(end_ns(&replay, last), intervals * 1_000_000_000);
        // Back to the start: read again, the same snapshots.
        assert!(replay.is_behind(0));
        assert_eq!(replay.seek(0, &mut cx).unwrap(), Some(0));
        assert_eq!(end_ns(&replay, 0), 1_000_000_000);
        assert_eq!(replay.seek(7, &mut cx).unwrap(), Some(7));
        assert_eq!(end_ns(&replay, 7), 8_000_000_000);
    }
}
