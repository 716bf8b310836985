//! The kernel log as a source of OOM kills: the records `/dev/kmsg` holds
//! from boot (older ones rotate out), then new ones as they come. A live
//! session reads it beside the probe; `cgtrace oom` without `--follow`
//! reads it alone, to its end.

use std::{collections::VecDeque, io, path::Path};

use super::{Context, Source};
use crate::{
    event::{Event, OomKill},
    kmsg::{DEV_KMSG, KmsgReader, OomLogParser},
};

/// `/dev/kmsg`, read and parsed for OOM kills.
pub struct KernelLog {
    reader: KmsgReader,
    parser: OomLogParser,
    /// The oldest record's timestamp (µs since boot), once one was read.
    oldest_us: Option<u64>,
}

impl KernelLog {
    /// Opens `/dev/kmsg`; the error says what it needs when refused.
    pub fn open() -> anyhow::Result<Self> {
        let reader = KmsgReader::open(Path::new(DEV_KMSG)).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                ": reading the kernel log needs CAP_SYSLOG while kernel.dmesg_restrict is 1; run it with sudo, or give its user CAP_SYSLOG"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!("cannot read the kernel log {DEV_KMSG}{hint}"))
        })?;
        Ok(Self {
            reader,
            parser: OomLogParser::new(),
            oldest_us: None,
        })
    }

    /// Every kill in the records ready now.
    pub fn read(&mut self) -> io::Result<Vec<OomKill>> {
        let mut kills = Vec::new();
        while let Some(record) = self.reader.next_record()? {
            self.oldest_us.get_or_insert(record.timestamp_us);
            kills.extend(self.parser.feed(&record));
        }
        Ok(kills)
    }

    /// Records the kernel overwrote before they were read.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.reader.lost
    }

    #[must_use]
    pub fn oldest_us(&self) -> Option<u64> {
        self.oldest_us
    }

    /// The descriptor, readable when records wait.
    #[must_use]
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.reader)
    }
}

/// The kernel log alone, read to its end: the kills since boot.
pub struct KernelLogSource {
    log: KernelLog,
    ready: Option<VecDeque<Event>>,
}

impl KernelLogSource {
    #[must_use]
    pub fn new(log: KernelLog) -> Self {
        Self { log, ready: None }
    }

    #[must_use]
    pub fn log(&self) -> &KernelLog {
        &self.log
    }
}

impl Source for KernelLogSource {
    async fn next(&mut self, _cx: &mut Context) -> anyhow::Result<Option<Event>> {
        if self.ready.is_none() {
            let kills = self.log.read()?;
            self.ready = Some(
                kills
                    .into_iter()
                    .map(|k| Event::OomKill(Box::new(k)))
                    .collect(),
            );
        }
        Ok(self.ready.as_mut().and_then(VecDeque::pop_front))
    }
}
