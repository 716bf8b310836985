//! Pressure stall information per cgroup, checked against the cgroup's own
//! `memory.pressure`: the stall time cgtrace reports over a run is the
//! kernel's total's rise, to the microsecond.

use cgtrace_tests::{Hierarchies, ScratchCgroup, View, require_root, uncached_file};

/// `some total=` of a `*.pressure` file.
fn some_total(file: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(file).expect("read the pressure file");
    let pressure = cgtrace::cgroup::sampler::parse_pressure(&text).expect("parse it");
    pressure.some.total_us
}

#[test]
fn memory_pressure_is_the_kernels_to_the_microsecond() {
    if !require_root("memory_pressure_is_the_kernels_to_the_microsecond") {
        return;
    }
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    let name = format!("cgtrace-test-psi-{}", std::process::id());
    let memory = ScratchCgroup::create(&hierarchies, &name).expect("memory cgroup");
    memory.set_memory_limit(32 << 20).expect("limit");
    // PSI lives in cgroup v2: on a hybrid host, in the unified twin.
    let twin = ScratchCgroup::create_unified(&hierarchies, &name).expect("unified cgroup");
    let pressure_dir = twin.as_ref().unwrap_or(&memory).dir().to_owned();
    let file = pressure_dir.join("memory.pressure");
    if !file.exists() {
        eprintln!(
            "skipped: this kernel keeps no pressure stall information (CONFIG_PSI off or psi=0)"
        );
        return;
    }
    let before = some_total(&file);
    let path = format!("/{name}");
    let view = View::start(
        &["cache", "--json", "--interval", "200ms", "--cgroup", &path],
        "cgtrace: keeping",
    );
    let big = uncached_file("psi", 96);
    let small = uncached_file("psi-small", 1);
    let groups: Vec<&ScratchCgroup> = std::iter::once(&memory).chain(twin.as_ref()).collect();
    let cat = |file: &std::path::Path| {
        let mut command = std::process::Command::new("cat");
        command.arg(file).stdout(std::process::Stdio::null());
        let status = cgtrace::cgroup::scratch::spawn_into_all(&groups, &mut command)
            .expect("start cat")
            .wait()
            .expect("wait for cat");
        assert!(status.success());
    };
    // Three reads of 96 MiB under a 32 MiB limit: reclaim stalls the reader.
    for _ in 0..3 {
        cat(&big.path);
    }
    // Then a quiet read, so the last interval samples the group after the
    // stalls ended.
    std::thread::sleep(std::time::Duration::from_millis(300));
    cat(&small.path);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (status, lines) = view.interrupt();
    assert!(status.success(), "{status}");
    let after = some_total(&file);
    let reported: u64 = lines
        .iter()
        .filter_map(|line| line["cgroups"].as_array())
        .flatten()
        .filter(|row| row["cgroup"] == path.as_str())
        .filter_map(|row| row["memory_pressure"]["some_stalled_us"].as_u64())
        .sum();
    assert!(
        after > before,
        "reading 3 x 96 MiB under 32 MiB stalls on memory"
    );
    assert_eq!(
        reported,
        after - before,
        "memory stall time against memory.pressure's total"
    );
    // The last interval's average is the kernel's, not a figure of ours.
    let last = lines
        .iter()
        .filter_map(|line| line["cgroups"].as_array())
        .flatten()
        .filter(|row| row["cgroup"] == path.as_str())
        .filter_map(|row| row["memory_pressure"]["some_avg10_percent"].as_f64())
        .next_back()
        .expect("pressure in the rows");
    assert!((0.0..=100.0).contains(&last));
}
