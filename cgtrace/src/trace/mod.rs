//! The trace file format (docs/trace-format.md): a header, then chunks of
//! records with their length and CRC. `cgtrace record` writes
//! [`crate::event::Event`]s (format 2); [`reader::TraceReader`] reads them
//! back as a stream, and reads format 1 too.

pub mod codec;
pub mod codes;
pub mod disk;
pub mod file;
pub mod flight;
pub mod reader;
pub mod record;
pub mod sink;
pub mod v1;
