//! Any text as a cgroup path, parsed into a workload (pod, container,
//! Docker container, systemd unit) and labelled as the views show it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let workload = cgtrace::identity::path::parse(&path);
    let _ = cgtrace::identity::Identity {
        workload,
        ..cgtrace::identity::Identity::unnamed(&path)
    }
    .label(&path);
});
