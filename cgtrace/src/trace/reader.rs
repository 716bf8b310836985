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

#[cfg(test)]
mod tests {
    use super::TraceReader;
    use crate::{
        event::Event,
        trace::{
            disk::tests::events,
            file::{CHUNK_TARGET, Ending, TraceError, TraceWriter, tests::header},
        },
    };

    /// A trace of `copies` rounds of every sample event, in several chunks.
    fn trace_bytes(copies: usize) -> Vec<u8> {
        let mut writer = TraceWriter::new(Vec::new(), &header()).unwrap();
        for _ in 0..copies {
            for event in events() {
                writer.event(&event).unwrap();
            }
        }
        writer.finish().unwrap()
    }

    /// Every event of `bytes`, and how the trace ended.
    fn read(bytes: &[u8]) -> Result<(Vec<Event>, Ending), TraceError> {
        let mut reader = TraceReader::open(bytes)?;
        let mut all = Vec::new();
        while let Some(event) = reader.next_event()? {
            all.push(event);
        }
        Ok((all, reader.ending().expect("ended")))
    }

    #[test]
    fn round_trip_over_several_chunks() {
        let copies = 600;
        let bytes = trace_bytes(copies);
        assert!(
            bytes.len() > 2 * CHUNK_TARGET,
            "spans chunks: {}",
            bytes.len()
        );
        let reader = TraceReader::open(&bytes[..]).unwrap();
        assert_eq!(reader.header(), &header());
        assert_eq!(reader.format(), 2);
        let (all, ending) = read(&bytes).unwrap();
        assert_eq!(ending, Ending::Complete);
        assert_eq!(all.len(), copies * events().len());
        assert_eq!(all[..events().len()], events()[..]);
    }

    #[test]
    fn a_file_cut_mid_chunk_keeps_every_complete_chunk() {
        let bytes = trace_bytes(300);
        let (whole, _) = read(&bytes).unwrap();
        let (cut, ending) = read(&bytes[..bytes.len() - 100]).unwrap();
        assert!(matches!(ending, Ending::CutShort { lost_bytes, .. } if lost_bytes > 100));
        assert!(!cut.is_empty() && cut.len() < whole.len());
        assert_eq!(cut[..], whole[..cut.len()]);
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
    /// cut must keep a prefix of the events.
    #[test]
    fn survives_a_hundred_thousand_damaged_files() {
        let original = trace_bytes(8);
        let (whole, _) = read(&original).unwrap();
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
                Ok((events, _)) => {
                    if case % 4 == 0 {
                        assert_eq!(events[..], whole[..events.len()]);
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
        writer.event(&events()[0]).unwrap();
        let mut bytes = writer.finish().unwrap();
        // Append a chunk holding one record of a kind from the future.
        let payload = [250u8, 1, 0];
        bytes.extend_from_slice(b"CHNK");
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let mut reader = TraceReader::open(&bytes[..]).unwrap();
        assert_eq!(reader.next_event().unwrap(), Some(events()[0].clone()));
        assert_eq!(reader.next_event().unwrap(), None);
        assert_eq!(reader.skipped(), 1);
    }

    #[test]
    fn a_format_1_trace_reads_as_events() {
        let bytes = include_bytes!("../../tests/fixtures/trace-v1-demo/trace.cgt");
        let mut reader = TraceReader::open(&bytes[..]).unwrap();
        assert_eq!(reader.format(), 1);
        let mut kills = 0;
        let mut ticks = 0;
        while let Some(event) = reader.next_event().unwrap() {
            kills += usize::from(matches!(event, Event::OomKill(_)));
            ticks += usize::from(matches!(event, Event::Tick(_)));
        }
        assert_eq!((kills, ticks), (1, 43));
        assert_eq!(reader.records(), 397);
        assert_eq!(reader.ending(), Some(Ending::Complete));
    }
}
