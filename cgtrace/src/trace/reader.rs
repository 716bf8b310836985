//! Reads a trace as a stream of [`Event`]s, a chunk at a time: never the
//! whole file in memory. Format 2's records are events already; format 1's
//! go through [`V1Adapter`].
//!
//! Damage is an error naming its offset, never a panic. A last chunk cut
//! short (a recorder killed mid-write, a full disk) ends the stream
//! normally, and [`TraceReader::ending`] says what was lost.

use std::{collections::VecDeque, io::Read};

use super::{
    codec::{CodecError, Decoder},
    disk,
    file::{
        CHUNK_MAGIC, CHUNK_MAX, CHUNK_PREFIX, Damage, Ending, FILE_PREFIX, FORMAT_VERSION, MAGIC,
        RecordError, TraceError, TraceHeader,
    },
    record::TraceRecord,
    v1::V1Adapter,
};
use crate::event::Event;

/// A trace being read.
pub struct TraceReader<R> {
    input: R,
    header: TraceHeader,
    version: u16,
    /// Bytes consumed from the start of the file.
    offset: u64,
    chunk: Vec<u8>,
    /// Where the next record starts in `chunk`.
    at: usize,
    /// Where `chunk` starts in the file.
    chunk_offset: u64,
    ending: Option<Ending>,
    skipped: u64,
    records: u64,
    ready: VecDeque<Event>,
    v1: V1Adapter,
}

impl<R: Read> TraceReader<R> {
    /// Reads and checks the file's prefix and header.
    pub fn open(mut input: R) -> Result<Self, TraceError> {
        let mut prefix = [0u8; FILE_PREFIX];
        let got = fill(&mut input, &mut prefix)?;
        let prefix = &prefix[..got];
        if prefix.is_empty() {
            return Err(TraceError::Empty);
        }
        if prefix.len() < MAGIC.len() || prefix[..MAGIC.len()] != MAGIC {
            return Err(if got < FILE_PREFIX && MAGIC.starts_with(prefix) {
                TraceError::TooShort { len: got }
            } else {
                TraceError::BadMagic
            });
        }
        if got < FILE_PREFIX {
            return Err(TraceError::TooShort { len: got });
        }
        let version = u16::from_le_bytes([prefix[8], prefix[9]]);
        if version > FORMAT_VERSION {
            return Err(TraceError::NewerFormat { found: version });
        }
        let header_len = u32_at(prefix, 12) as usize;
        if header_len > CHUNK_MAX {
            return Err(damaged(12, Damage::HeaderLength));
        }
        let mut header_bytes = vec![0u8; header_len];
        if fill(&mut input, &mut header_bytes)? < header_len {
            return Err(damaged(12, Damage::HeaderLength));
        }
        if crc32fast::hash(&header_bytes) != u32_at(prefix, 16) {
            return Err(damaged(FILE_PREFIX as u64, Damage::HeaderCrc));
        }
        let header = TraceHeader::decode(&header_bytes)
            .map_err(|e| damaged(FILE_PREFIX as u64, Damage::Header(e)))?;
        Ok(Self {
            input,
            header,
            version,
            offset: (FILE_PREFIX + header_len) as u64,
            chunk: Vec::new(),
            at: 0,
            chunk_offset: 0,
            ending: None,
            skipped: 0,
            records: 0,
            ready: VecDeque::new(),
            v1: V1Adapter::new(),
        })
    }

    #[must_use]
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The format the file is in.
    #[must_use]
    pub fn format(&self) -> u16 {
        self.version
    }

    /// How the trace ended; `None` until the last event was read.
    #[must_use]
    pub fn ending(&self) -> Option<Ending> {
        self.ending
    }

    /// Records of kinds this build does not know, skipped so far.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Records read so far (as stored: a format-1 interval is several).
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next event; `Ok(None)` at the end of the trace.
    pub fn next_event(&mut self) -> Result<Option<Event>, TraceError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            if self.at >= self.chunk.len() && !self.next_chunk()? {
                return Ok(None);
            }
            self.next_record()?;
        }
    }

    /// Decodes the record at `at` into `ready`.
    fn next_record(&mut self) -> Result<(), TraceError> {
        let at = self.at;
        let where_ = self.chunk_offset + CHUNK_PREFIX as u64;
        let bad = |e: RecordError| damaged(where_, Damage::Record(e));
        if self.version >= 2 {
            let mut input = Decoder::new(&self.chunk[at..]);
            let kind = input.u8().map_err(|e| bad(e.into()))?;
            let len = usize::try_from(input.u64().map_err(|e| bad(e.into()))?)
                .map_err(|_| bad(CodecError::OutOfRange.into()))?;
            let body = input.bytes(len).map_err(|e| bad(e.into()))?;
            let used = self.chunk.len() - at - input.remaining();
            match disk::decode(kind, body).map_err(|e| bad(e.into()))? {
                Some(event) => self.ready.push_back(event),
                None => self.skipped += 1,
            }
            self.at += used;
        } else {
            let mut input = Decoder::new(&self.chunk[at..]);
            let record = TraceRecord::decode(&mut input).map_err(|e| bad(e.into()))?;
            let used = self.chunk.len() - at - input.remaining();
            match record {
                Some(record) => self.v1.push(record, &mut self.ready),
                None => self.skipped += 1,
            }
            self.at += used;
        }
        self.records += 1;
        Ok(())
    }

    /// Reads the next chunk; `false` at the end of the file (or at a last
    /// chunk cut short).
    fn next_chunk(&mut self) -> Result<bool, TraceError> {
        if self.ending.is_some() {
            return Ok(false);
        }
        let start = self.offset;
        let mut prefix = [0u8; CHUNK_PREFIX];
        let got = fill(&mut self.input, &mut prefix)?;
        if got == 0 {
            self.ending = Some(Ending::Complete);
            return Ok(false);
        }
        if got < CHUNK_PREFIX {
            if prefix[..got]
                .iter()
                .zip(CHUNK_MAGIC.to_le_bytes())
                .any(|(a, b)| *a != b)
            {
                return Err(damaged(start, Damage::ChunkMagic));
            }
            self.ending = Some(Ending::CutShort {
                offset: start,
                lost_bytes: got as u64,
            });
            return Ok(false);
        }
        if u32_at(&prefix, 0) != CHUNK_MAGIC {
            return Err(damaged(start, Damage::ChunkMagic));
        }
        let len = u32_at(&prefix, 4) as usize;
        if len > CHUNK_MAX {
            return Err(damaged(start + 4, Damage::ChunkLength { len }));
        }
        self.chunk.resize(len, 0);
        let got_payload = fill(&mut self.input, &mut self.chunk)?;
        if got_payload < len {
            self.ending = Some(Ending::CutShort {
                offset: start,
                lost_bytes: (CHUNK_PREFIX + got_payload) as u64,
            });
            self.chunk.clear();
            return Ok(false);
        }
        if crc32fast::hash(&self.chunk) != u32_at(&prefix, 8) {
            return Err(damaged(start, Damage::ChunkCrc));
        }
        self.chunk_offset = start;
        self.offset = start + (CHUNK_PREFIX + len) as u64;
        self.at = 0;
        Ok(true)
    }
}

/// Reads until `buffer` is full or the input ends; how much was read.
fn fill(input: &mut impl Read, buffer: &mut [u8]) -> Result<usize, TraceError> {
    let mut got = 0;
    while got < buffer.len() {
        match input.read(&mut buffer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TraceError::Read(e)),
        }
    }
    Ok(got)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn damaged(offset: u64, what: Damage) -> TraceError {
    TraceError::Damaged { offset, what }
}
