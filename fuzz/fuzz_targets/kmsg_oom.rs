//! Any text as `/dev/kmsg` records, fed to the OOM-kill parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parser = cgtrace::kmsg::OomLogParser::new();
    for line in text.split('\n') {
        if let Some(record) = cgtrace::kmsg::parse_record(line) {
            let _ = parser.feed(&record);
        }
    }
});
