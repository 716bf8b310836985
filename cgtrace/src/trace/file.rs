//! The trace file: a header, then chunks of records, each chunk with its
//! length and a CRC-32 of its payload (layout in docs/trace-format.md).
//!
//! Append-only and crash-safe: a chunk is written with one `write`, so a
//! recorder killed mid-write, or a full disk, leaves at most one partial
//! chunk at the end. The reader keeps every complete chunk before it and
//! says the trace was cut short; damage anywhere else is an error naming
//! its offset, never a panic.

use std::io::{self, Write};

use super::codec::{CodecError, Decoder, Encoder};
use crate::event::Event;

/// `CGTRACE\0`.
pub const MAGIC: [u8; 8] = *b"CGTRACE\0";
/// The format this build writes and the newest it reads: 1 held each
/// interval's results, 2 holds [`crate::event::Event`]s.
pub const FORMAT_VERSION: u16 = 2;
/// `CHNK`, little-endian, at the start of every chunk.
pub(super) const CHUNK_MAGIC: u32 = u32::from_le_bytes(*b"CHNK");
/// magic, version, reserved, header length, header CRC.
pub(super) const FILE_PREFIX: usize = 8 + 2 + 2 + 4 + 4;
/// magic, payload length, payload CRC.
pub(super) const CHUNK_PREFIX: usize = 4 + 4 + 4;
/// Chunks are written once their payload passes this size.
pub const CHUNK_TARGET: usize = 64 * 1024;
/// A longer chunk length can only be damage.
pub(super) const CHUNK_MAX: usize = 64 * 1024 * 1024;

/// Facts about the traced machine and run, at the start of the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHeader {
    pub kernel_release: String,
    pub hostname: String,
    /// Wall-clock nanoseconds since the epoch at boot, so monotonic
    /// timestamps in records can be shown as times.
    pub boot_time_ns: u64,
    /// Monotonic and wall-clock nanoseconds when recording started.
    pub start_monotonic_ns: u64,
    pub start_wall_ns: u64,
    pub page_size: u64,
    /// The cgtrace version that wrote it.
    pub writer: String,
}

impl TraceHeader {
    fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::default();
        out.str(&self.kernel_release);
        out.str(&self.hostname);
        out.u64(self.boot_time_ns);
        out.u64(self.start_monotonic_ns);
        out.u64(self.start_wall_ns);
        out.u64(self.page_size);
        out.str(&self.writer);
        out.bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut input = Decoder::new(bytes);
        Ok(Self {
            kernel_release: input.str()?,
            hostname: input.str()?,
            boot_time_ns: input.u64()?,
            start_monotonic_ns: input.u64()?,
            start_wall_ns: input.u64()?,
            page_size: input.u64()?,
            writer: input.str()?,
        })
    }
}

/// Why a trace cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("the file is empty: not a cgtrace trace")]
    Empty,
    #[error("not a cgtrace trace: it is {len} bytes, shorter than a trace header")]
    TooShort { len: usize },
    #[error("not a cgtrace trace: wrong magic number at offset 0")]
    BadMagic,
    #[error(
        "this trace is format {found}, written by a newer cgtrace; this one reads formats up to {FORMAT_VERSION}"
    )]
    NewerFormat { found: u16 },
    #[error("damaged trace: {what} at offset {offset}")]
    Damaged { offset: u64, what: Damage },
    #[error("cannot read the trace")]
    Read(#[source] io::Error),
}

/// What is wrong at a damaged place.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Damage {
    #[error("header length past the end of the file")]
    HeaderLength,
    #[error("header CRC mismatch")]
    HeaderCrc,
    #[error("header: {0}")]
    Header(#[source] CodecError),
    #[error("bad chunk magic")]
    ChunkMagic,
    #[error("impossible chunk length {len}")]
    ChunkLength { len: usize },
    #[error("chunk CRC mismatch")]
    ChunkCrc,
    #[error("record in chunk: {0}")]
    Record(#[source] RecordError),
}

/// A record that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("{0}")]
    Disk(#[from] super::disk::DiskError),
}

/// How a trace ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Complete,
    /// The last chunk was incomplete (the recorder was killed, the disk
    /// filled): everything before `offset` was read, `lost_bytes` were not.
    CutShort {
        offset: u64,
        lost_bytes: u64,
    },
}

/// What a report says of the trace itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceInfo {
    pub header: TraceHeader,
    pub ending: Ending,
    /// Records read.
    pub records: u64,
    /// Records of kinds this build does not know, skipped.
    pub skipped: u64,
}

/// Writes a trace, a chunk at a time.
pub struct TraceWriter<W: Write> {
    out: W,
    chunk: Encoder,
    /// Bytes written so far (header and complete chunks).
    written: u64,
    records: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header.
    pub fn new(mut out: W, header: &TraceHeader) -> io::Result<Self> {
        let body = header.encode();
        let mut prefix = Vec::with_capacity(FILE_PREFIX + body.len());
        prefix.extend_from_slice(&MAGIC);
        prefix.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        prefix.extend_from_slice(&0u16.to_le_bytes());
        prefix.extend_from_slice(&length(body.len()).to_le_bytes());
        prefix.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        prefix.extend_from_slice(&body);
        out.write_all(&prefix)?;
        out.flush()?;
        Ok(Self {
            out,
            chunk: Encoder::default(),
            written: prefix.len() as u64,
            records: 0,
        })
    }

    /// Adds an event; writes the chunk once it is large enough.
    pub fn event(&mut self, event: &Event) -> io::Result<()> {
        super::disk::encode(event, &mut self.chunk.bytes);
        self.records += 1;
        if self.chunk.bytes.len() >= CHUNK_TARGET {
            self.write_chunk()?;
        }
        Ok(())
    }

    /// Writes what is buffered as a chunk, so a crash after this loses
    /// nothing recorded so far.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.chunk.bytes.is_empty() {
            self.write_chunk()?;
        }
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }

    /// Bytes written to the file so far.
    #[must_use]
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    #[must_use]
    pub fn records(&self) -> u64 {
        self.records
    }

    fn write_chunk(&mut self) -> io::Result<()> {
        let payload = std::mem::take(&mut self.chunk.bytes);
        let mut chunk = Vec::with_capacity(CHUNK_PREFIX + payload.len());
        chunk.extend_from_slice(&CHUNK_MAGIC.to_le_bytes());
        chunk.extend_from_slice(&length(payload.len()).to_le_bytes());
        chunk.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        chunk.extend_from_slice(&payload);
        // One write: a crash leaves this chunk whole or partial, never
        // interleaved with the next.
        self.out.write_all(&chunk)?;
        self.written += chunk.len() as u64;
        self.chunk.bytes = payload;
        self.chunk.bytes.clear();
        Ok(())
    }
}

fn length(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::TraceHeader;

    pub(crate) fn header() -> TraceHeader {
        TraceHeader {
            kernel_release: "6.18.44".into(),
            hostname: "node-1".into(),
            boot_time_ns: 1_795_000_000_000_000_000,
            start_monotonic_ns: 5,
            start_wall_ns: 1_795_000_000_000_000_005,
            page_size: 4096,
            writer: "cgtrace 0.1.0".into(),
        }
    }
}
