//! T: the trace writer alone, on one core: events encoded, chunked,
//! CRC-checked and written to a file, then streamed back.

use std::time::Instant;

/// The trace writer alone: a million events (throttle spans and page-cache
/// counters, the two frequent kinds) encoded, chunked, CRC-checked and written
/// to a file, on one core. Returns the report section.
pub fn writer_throughput() -> String {
    use cgtrace::{
        event::{Event, Flow, ProbeCounters, ThrottleSpan},
        trace::{
            file::{TraceHeader, TraceWriter},
            reader::TraceReader,
        },
    };
    use cgtrace_common::{cgroup::CgroupRef, pagecache::CacheReason};
    const RECORDS: u64 = 1_000_000;
    let path =
        std::env::temp_dir().join(format!("cgtrace-bench-writer-{}.cgt", std::process::id()));
    let file = std::fs::File::create(&path).expect("create bench trace");
    let mut writer = TraceWriter::new(file, &TraceHeader::default()).expect("write header");
    let cgroup = |id| {
        Some(CgroupRef {
            id,
            hierarchy: 4,
            level: 3,
        })
    };
    let started = Instant::now();
    for n in 0..RECORDS {
        let event = if n % 2 == 0 {
            Event::ThrottleSpan(ThrottleSpan {
                cgroup: None,
                cgroup_ref: cgroup(1000 + n % 64),
                cpu: u32::try_from(n % 2).unwrap_or(0),
                pid: 4242,
                comm: "worker".into(),
                start_ns: 1_000_000_000 + n * 100_000,
                end_ns: 1_000_000_000 + n * 100_000 + 80_000_000,
            })
        } else {
            // One interval's counters holding one flow: the smallest.
            Event::Counters(Box::new(ProbeCounters {
                start_ns: 1_000_000_000 + n * 1000,
                end_ns: 1_000_000_000 + n * 1000 + 1000,
                flows: vec![Flow {
                    owner: cgroup(1000 + n % 64),
                    actor: cgroup(2000 + n % 8),
                    reason: CacheReason::OwnLimit,
                    pages: n % 512,
                }],
                ..ProbeCounters::default()
            }))
        };
        writer.event(&event).expect("write record");
    }
    writer.flush().expect("flush");
    let took = started.elapsed();
    let bytes = writer.bytes_written();
    drop(writer);
    let read_started = Instant::now();
    let file = std::io::BufReader::new(std::fs::File::open(&path).expect("read back"));
    let mut reader = TraceReader::open(file).expect("parse back");
    let mut read = 0;
    while reader.next_event().expect("parse back").is_some() {
        read += 1;
    }
    let read_took = read_started.elapsed();
    let _ = std::fs::remove_file(&path);
    assert_eq!(read, RECORDS);
    #[expect(clippy::cast_precision_loss, reason = "display figures")]
    let (rate, per_record, read_rate) = (
        RECORDS as f64 / took.as_secs_f64(),
        bytes as f64 / RECORDS as f64,
        RECORDS as f64 / read_took.as_secs_f64(),
    );
    eprintln!("writer: {rate:.0} records/s, {per_record:.1} bytes each");
    format!(
        "\n## Trace writer\n\n{RECORDS} records (throttle spans and page-cache flows, alternating) \
         encoded, chunked, CRC-checked and written to a file on one core: \
         **{:.2} million records/s, {per_record:.1} bytes per record**; read back and checked at \
         {:.2} million records/s.\n",
        rate / 1e6,
        read_rate / 1e6
    )
}
