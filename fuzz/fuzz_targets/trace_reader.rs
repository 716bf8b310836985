//! Any bytes as a trace file (format 1 or 2, as the bytes say): the reader
//! gives events, an end or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = cgtrace::trace::reader::TraceReader::open(data) else {
        return;
    };
    // Every record takes at least a byte, so this ends.
    while let Ok(Some(_event)) = reader.next_event() {}
});
