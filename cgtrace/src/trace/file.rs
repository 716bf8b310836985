//! The trace file: a header, then chunks of records, each chunk with its
//! length and a CRC-32 of its payload (layout in docs/trace-format.md).
//!
//! Append-only and crash-safe: a chunk is written with one `write`, so a
//! recorder killed mid-write, or a full disk, leaves at most one partial
//! chunk at the end. The reader keeps every complete chunk before it and
//! says the trace was cut short; damage anywhere else is an error naming
//! its offset, never a panic.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use cgtrace_common::cgroup::CgroupRef;

use super::{
    codec::{CodecError, Decoder, Encoder},
    record::TraceRecord,
};

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

/// A whole trace, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub header: TraceHeader,
    pub records: Vec<TraceRecord>,
    pub ending: Ending,
    /// Records of kinds this build does not know, skipped.
    pub skipped: u64,
}

/// The names a trace gives its cgroups (its `CgroupName` records).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupNames(HashMap<(u32, u64), String>);

impl CgroupNames {
    /// The cgroup's path, or `id:N` when the trace never named it.
    #[must_use]
    pub fn name(&self, cgroup: CgroupRef) -> String {
        self.path(cgroup)
            .map_or_else(|| format!("id:{}", cgroup.id), str::to_owned)
    }

    /// The cgroup's path, if the trace named it.
    #[must_use]
    pub fn path(&self, cgroup: CgroupRef) -> Option<&str> {
        self.0
            .get(&(cgroup.hierarchy, cgroup.id))
            .map(String::as_str)
    }
}

impl Trace {
    /// The name table of the whole trace.
    #[must_use]
    pub fn cgroup_names(&self) -> CgroupNames {
        CgroupNames(
            self.records
                .iter()
                .filter_map(|record| match record {
                    TraceRecord::CgroupName { cgroup, path } => {
                        Some(((cgroup.hierarchy, cgroup.id), path.clone()))
                    }
                    _ => None,
                })
                .collect(),
        )
    }
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
        // Format 1's records, until the recorder writes events.
        prefix.extend_from_slice(&1u16.to_le_bytes());
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

    /// Adds a record; writes the chunk once it is large enough.
    pub fn record(&mut self, record: &TraceRecord) -> io::Result<()> {
        record.encode(&mut self.chunk);
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

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn damaged(offset: usize, what: Damage) -> TraceError {
    TraceError::Damaged {
        offset: offset as u64,
        what,
    }
}

/// Reads a whole trace from its bytes.
pub fn read(bytes: &[u8]) -> Result<Trace, TraceError> {
    if bytes.is_empty() {
        return Err(TraceError::Empty);
    }
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(if bytes.len() < FILE_PREFIX && MAGIC.starts_with(bytes) {
            TraceError::TooShort { len: bytes.len() }
        } else {
            TraceError::BadMagic
        });
    }
    if bytes.len() < FILE_PREFIX {
        return Err(TraceError::TooShort { len: bytes.len() });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > FORMAT_VERSION {
        return Err(TraceError::NewerFormat { found: version });
    }
    let header_len = u32_at(bytes, 12) as usize;
    let header_end = FILE_PREFIX
        .checked_add(header_len)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| damaged(12, Damage::HeaderLength))?;
    let header_bytes = &bytes[FILE_PREFIX..header_end];
    if crc32fast::hash(header_bytes) != u32_at(bytes, 16) {
        return Err(damaged(FILE_PREFIX, Damage::HeaderCrc));
    }
    let header =
        TraceHeader::decode(header_bytes).map_err(|e| damaged(FILE_PREFIX, Damage::Header(e)))?;

    let mut records = Vec::new();
    let mut skipped = 0;
    let mut at = header_end;
    let ending = loop {
        let left = bytes.len() - at;
        if left == 0 {
            break Ending::Complete;
        }
        let cut = Ending::CutShort {
            offset: at as u64,
            lost_bytes: left as u64,
        };
        if left < CHUNK_PREFIX {
            if bytes[at..]
                .iter()
                .zip(CHUNK_MAGIC.to_le_bytes())
                .any(|(a, b)| *a != b)
            {
                return Err(damaged(at, Damage::ChunkMagic));
            }
            break cut;
        }
        if u32_at(bytes, at) != CHUNK_MAGIC {
            return Err(damaged(at, Damage::ChunkMagic));
        }
        let len = u32_at(bytes, at + 4) as usize;
        if len > CHUNK_MAX {
            return Err(damaged(at + 4, Damage::ChunkLength { len }));
        }
        let payload_start = at + CHUNK_PREFIX;
        if len > bytes.len() - payload_start {
            break cut;
        }
        let payload = &bytes[payload_start..payload_start + len];
        if crc32fast::hash(payload) != u32_at(bytes, at + 8) {
            return Err(damaged(at, Damage::ChunkCrc));
        }
        let mut input = Decoder::new(payload);
        while !input.is_empty() {
            match TraceRecord::decode(&mut input) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => skipped += 1,
                Err(e) => {
                    return Err(damaged(
                        payload_start,
                        Damage::Record(RecordError::Codec(e)),
                    ));
                }
            }
        }
        at = payload_start + len;
    };
    Ok(Trace {
        header,
        records,
        ending,
        skipped,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{CHUNK_TARGET, Ending, TraceError, TraceHeader, TraceWriter, read};
    use crate::trace::record::{TraceRecord, tests::samples};

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

    /// A trace of `copies` rounds of every sample record, in several chunks.
    fn trace_bytes(copies: usize) -> Vec<u8> {
        let mut writer = TraceWriter::new(Vec::new(), &header()).unwrap();
        for _ in 0..copies {
            for record in samples() {
                writer.record(&record).unwrap();
            }
        }
        writer.finish().unwrap()
    }

    #[test]
    fn round_trip_over_several_chunks() {
        let copies = 2000;
        let bytes = trace_bytes(copies);
        assert!(
            bytes.len() > 2 * CHUNK_TARGET,
            "spans chunks: {}",
            bytes.len()
        );
        let trace = read(&bytes).unwrap();
        assert_eq!(trace.header, header());
        assert_eq!(trace.ending, Ending::Complete);
        assert_eq!(trace.records.len(), copies * samples().len());
        assert_eq!(trace.records[..samples().len()], samples()[..]);
    }

    #[test]
    fn a_file_cut_mid_chunk_keeps_every_complete_chunk() {
        let bytes = trace_bytes(2000);
        let whole = read(&bytes).unwrap().records.len();
        let cut = &bytes[..bytes.len() - 100];
        let trace = read(cut).unwrap();
        assert!(matches!(trace.ending, Ending::CutShort { lost_bytes, .. } if lost_bytes > 100));
        assert!(!trace.records.is_empty() && trace.records.len() < whole);
        assert_eq!(
            trace.records[..],
            read(&bytes).unwrap().records[..trace.records.len()]
        );
    }

    #[test]
    fn bad_files_get_clear_errors() {
        assert!(matches!(read(&[]), Err(TraceError::Empty)));
        assert!(matches!(
            read(b"CGTR"),
            Err(TraceError::TooShort { len: 4 })
        ));
        assert!(matches!(
            read(b"hello, world, this is text"),
            Err(TraceError::BadMagic)
        ));
        let mut newer = trace_bytes(1);
        newer[8] = 9;
        assert!(matches!(
            read(&newer),
            Err(TraceError::NewerFormat { found: 9 })
        ));
        let mut flipped = trace_bytes(1);
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let err = read(&flipped).unwrap_err();
        assert!(err.to_string().contains("CRC mismatch at offset"), "{err}");
    }

    /// Randomized damage: cuts, bit flips, overwritten and inserted bytes.
    /// Every case must give a result or an error, never a panic, and a clean
    /// cut must keep a prefix of the records.
    #[test]
    fn survives_a_hundred_thousand_damaged_files() {
        let original = trace_bytes(40);
        let records = read(&original).unwrap().records;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut errors = 0;
        for case in 0..100_000 {
            let mut bytes = original.clone();
            let pick = |n: u64, len: usize| usize::try_from(n % len as u64).unwrap_or(0);
            match case % 4 {
                0 => bytes.truncate(pick(next(), original.len())),
                1 => {
                    let at = pick(next(), bytes.len());
                    bytes[at] ^= 1 << (next() % 8);
                }
                2 => {
                    let at = pick(next(), bytes.len());
                    let len = pick(next(), 16).min(bytes.len() - at);
                    for byte in &mut bytes[at..at + len] {
                        *byte = u8::try_from(next() & 0xff).unwrap_or(0);
                    }
                }
                _ => {
                    let at = pick(next(), bytes.len());
                    bytes.insert(at, u8::try_from(next() & 0xff).unwrap_or(0));
                }
            }
            match read(&bytes) {
                Ok(trace) => {
                    if case % 4 == 0 {
                        assert_eq!(trace.records[..], records[..trace.records.len()]);
                    }
                }
                Err(_) => errors += 1,
            }
        }
        assert!(
            errors > 10_000,
            "damage is detected, not read as data: {errors}"
        );
    }

    #[test]
    fn unknown_record_kinds_are_counted_not_fatal() {
        let mut writer = TraceWriter::new(Vec::new(), &header()).unwrap();
        writer.record(&samples()[0]).unwrap();
        let mut bytes = writer.finish().unwrap();
        // Append a chunk holding one record of a kind from the future.
        let payload = [250u8, 1, 0];
        bytes.extend_from_slice(b"CHNK");
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let trace = read(&bytes).unwrap();
        assert_eq!(trace.skipped, 1);
        assert_eq!(trace.records, vec![samples()[0].clone()]);
        assert!(matches!(trace.records[0], TraceRecord::CgroupName { .. }));
    }
}
