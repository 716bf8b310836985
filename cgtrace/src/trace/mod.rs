//! The trace file format: what `cgtrace record` will write and `report`,
//! `export` and every view's `--input` will read (docs/trace-format.md).

pub mod codec;
pub mod file;
pub mod record;
