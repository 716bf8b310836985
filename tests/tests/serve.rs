//! `cgtrace serve` against the real kernel: its endpoint answers, its OOM
//! and throttling counters are the kernel's, a noisy neighbour is named as
//! the evictor, and a removed cgroup's series go after their TTL. Its
//! flight recorder keeps the minutes before an OOM kill, stays under its
//! disk cap through cgroup churn, and pauses on a full disk while the
//! metrics go on.

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use cgtrace::cgroup::{Hierarchies, scratch::ScratchCgroup};
use cgtrace_tests::{
    ChildGuard, Tmpfs, cgtrace_bin,
    http::{free_port, get, sample, scrape},
    memhog, promtool_accepts, read_in, report_json, require_root, row_for, scratch, uncached_file,
    wait_until,
};

const MIB: u64 = 1 << 20;

/// `cgtrace serve` (with `extra` arguments) on a free loopback port, once
/// it answers ready, and the lines it prints on stdout.
fn serve(extra: &[&str]) -> (ChildGuard, u16, Receiver<String>) {
    let port = free_port();
    let mut serve = ChildGuard(
        Command::new(cgtrace_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--interval",
                "200ms",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cgtrace serve"),
    );
    let stdout = serve.0.stdout.take().expect("serve's stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    wait_until("serve to be ready", || {
        get(port, "/healthz", "").is_some_and(|(status, _)| status == 200)
    });
    (serve, port, received)
}

#[test]
fn a_throttled_group_has_the_kernels_throttled_periods() {
    if !require_root("a_throttled_group_has_the_kernels_throttled_periods") {
        return;
    }
    let (_serve, port, _) = serve(&[]);
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    let name = format!("cgtrace-test-serve-cpu-{}", std::process::id());
    let group = ScratchCgroup::create_for(&hierarchies, "cpu", &name).expect("a cpu cgroup");
    group.set_cpu_quota(20_000, 100_000).expect("a quota");
    let mut spin = Command::new(cgtrace_bin());
    spin.args(["__spin", "2", "1"]);
    ChildGuard(group.spawn_into(&mut spin).expect("start the spinner")).wait();
    let kernel = group.cpu_stat().expect("cpu.stat").nr_throttled;
    assert!(kernel > 5, "the kernel throttled the spinner: {kernel}");
    let series = |family: &str| format!("{family}{{cgroup=\"{}\"}}", group.path());
    // Compared with the kernel's count as it is at each scrape: a period
    // may still be counted throttled after the spinner exits (6.16 does).
    wait_until("the kernel's throttled periods on /metrics", || {
        get(port, "/metrics", "")
            .and_then(|(_, text)| sample(&text, &series("cgtrace_cpu_cfs_throttled_periods_total")))
            == Some(group.cpu_stat().expect("cpu.stat").nr_throttled)
    });
    // Periods with runnable tasks may go on a moment after the last
    // throttled one.
    wait_until("the kernel's periods on /metrics", || {
        sample(&scrape(port), &series("cgtrace_cpu_cfs_periods_total"))
            == Some(group.cpu_stat().expect("cpu.stat").nr_periods)
    });
    let text = scrape(port);
    // cgtrace's own spans, as a histogram: each span ends when the quota
    // comes back, so one is never longer than a period (0.1 s here).
    let spans = sample(
        &text,
        &series("cgtrace_cpu_cfs_throttle_span_seconds_count"),
    )
    .expect("the span histogram");
    assert!(spans > 0, "cgtrace saw the spans: {text}");
    let under = |le: &str| {
        let bucket = format!(
            "cgtrace_cpu_cfs_throttle_span_seconds_bucket{{le=\"{le}\",cgroup=\"{}\"}}",
            group.path()
        );
        sample(&text, &bucket).expect("a bucket")
    };
    assert_eq!(under("+Inf"), spans);
    assert_eq!(
        under("0.268435456"),
        spans,
        "no span outlasts a period: {text}"
    );
}

#[test]
fn an_oom_kill_is_counted_with_the_limit_that_was_hit() {
    if !require_root("an_oom_kill_is_counted_with_the_limit_that_was_hit") {
        return;
    }
    let (_serve, port, lines) = serve(&[]);
    let group = scratch("serve-oom", Some(64 << 20));
    memhog(&group, 128).wait();
    let kernel = group.oom_kill_count().expect("the kernel's oom_kill");
    assert!(kernel >= 1, "the kernel killed the memory hog");
    let series = format!(
        "cgtrace_oom_events_total{{cgroup=\"{}\",limit=\"own\"}}",
        group.path()
    );
    wait_until("the kill on /metrics", || {
        get(port, "/metrics", "")
            .and_then(|(_, text)| sample(&text, &series))
            .is_some_and(|counted| counted == kernel)
    });
    // OpenMetrics when asked for, with its terminator.
    let (status, openmetrics) = get(
        port,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0\r\n",
    )
    .expect("an OpenMetrics scrape");
    assert_eq!(status, 200);
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert_eq!(sample(&openmetrics, &series), Some(kernel));
    assert_eq!(
        sample(&openmetrics, "cgtrace_probe_ring_buffer_drops_total"),
        Some(0)
    );
    assert_eq!(
        get(port, "/nothing", "").map(|(status, _)| status),
        Some(404)
    );
    // Hitting the limit, the hog stalled in the group's own reclaim first
    // (counted at the end of an interval, a moment after the kill).
    let stalls = format!(
        "cgtrace_memory_reclaim_stall_seconds_count{{cgroup=\"{}\",kind=\"memcg\"}}",
        group.path()
    );
    wait_until("the hog's reclaim stalls", || {
        sample(&scrape(port), &stalls).is_some_and(|count| count > 0)
    });
    promtool_accepts(&scrape(port));
    // And as a JSON line on stdout (the `oom --json` schema), for log
    // shippers.
    let kill = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(20)).ok())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .find(|line| line["type"] == "oom_kill")
        .expect("a kill line on stdout");
    assert_eq!(kill["victim"]["cgroup"], group.path());
}

#[test]
fn a_noisy_neighbour_is_named_as_the_evictor() {
    if !require_root("a_noisy_neighbour_is_named_as_the_evictor") {
        return;
    }
    let (_serve, port, _) = serve(&[]);
    let quiet_file = uncached_file("serve-quiet", 64);
    let noisy_file = uncached_file("serve-noisy", 128);
    let mut parent = scratch("serve-neighbours", Some(96 * MIB));
    // The quiet group caches its file; the noisy one then reads a larger
    // one, and the parent's limit makes room from the quiet group's cache.
    let quiet = {
        let quiet = parent.child("quiet").unwrap();
        read_in(quiet, &[&quiet_file.path]);
        quiet.path().to_owned()
    };
    let noisy = {
        let noisy = parent.child("noisy").unwrap();
        read_in(noisy, &[&noisy_file.path]);
        noisy.path().to_owned()
    };
    let by_noisy = format!(
        "cgtrace_page_cache_evicted_by_bytes_total{{cgroup=\"{quiet}\",evictor=\"{noisy}\"}}"
    );
    let at_parent_limit = format!(
        "cgtrace_page_cache_evicted_bytes_total{{cgroup=\"{quiet}\",reason=\"ancestor_limit\"}}"
    );
    wait_until("the quiet group's eviction by the noisy one", || {
        sample(&scrape(port), &by_noisy).is_some_and(|bytes| bytes >= 16 * MIB)
    });
    let text = scrape(port);
    let evicted = sample(&text, &at_parent_limit).expect("evictions at the parent's limit");
    let named = sample(&text, &by_noisy).unwrap_or(0);
    assert!(
        named * 100 >= evicted * 90,
        "the noisy neighbour evicted most of it: {named} of {evicted} bytes\n{text}"
    );
    assert!(
        sample(
            &text,
            &format!("cgtrace_memory_cache_bytes{{cgroup=\"{noisy}\"}}")
        )
        .is_some_and(|bytes| bytes > 0),
        "the noisy group owns page cache: {text}"
    );
}

#[test]
fn a_removed_cgroups_series_go_after_the_ttl() {
    if !require_root("a_removed_cgroups_series_go_after_the_ttl") {
        return;
    }
    let (_serve, port, _) = serve(&["--series-ttl", "3s"]);
    let group = scratch("serve-ttl", Some(64 << 20));
    memhog(&group, 128).wait();
    let series = format!(
        "cgtrace_oom_events_total{{cgroup=\"{}\",limit=\"own\"}}",
        group.path()
    );
    wait_until("the kill on /metrics", || {
        sample(&scrape(port), &series).is_some()
    });
    drop(group);
    // Gone from the kernel, still scraped: a kill outlives its container.
    assert!(sample(&scrape(port), &series).is_some());
    wait_until("the series to expire", || {
        sample(&scrape(port), &series).is_none()
    });
}

/// Stops `serve` as a node's init system would (SIGTERM), and waits.
fn stop(mut serve: ChildGuard) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(i32::try_from(serve.pid()).expect("a pid"), libc::SIGTERM);
    }
    let status = serve.wait();
    assert!(status.success(), "serve ended with {status}");
}

/// Bytes under `dir`, each file once however many links it has.
fn disk_bytes(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if seen.insert(meta.ino()) {
                total += (meta.blocks() * 512).max(meta.len());
            }
        }
    }
    total
}

/// The snapshot directories under a flight recorder's `dir`.
fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found
}

#[test]
fn an_oom_kill_leaves_a_snapshot_of_the_minutes_before() {
    if !require_root("an_oom_kill_leaves_a_snapshot_of_the_minutes_before") {
        return;
    }
    let dir = tempfile::tempdir().expect("a directory");
    let recorder = dir.path().join("flight");
    let (serve, _, _lines) = serve(&[
        "--flight-recorder",
        recorder.to_str().unwrap(),
        "--keep",
        "1m",
    ]);
    let group = scratch("flight-oom", Some(64 * MIB));
    // What the group did before it was killed: read a file into its cache.
    let file = uncached_file("flight", 32);
    read_in(&group, &[&file.path]);
    memhog(&group, 128).wait();
    let kernel = group.oom_kill_count().expect("the kernel's oom_kill");
    // Named after the victim's workload (other tests' kills, seen by the
    // same kernel, have snapshots of their own).
    let ours = format!("-oom-{}", group.path().trim_start_matches('/'));
    let find = || {
        snapshots(&recorder)
            .into_iter()
            .find(|s| s.to_string_lossy().ends_with(&ours))
    };
    wait_until("a snapshot of the kill", || find().is_some());
    // One interval more, so the samples after the kill are written too.
    std::thread::sleep(Duration::from_millis(500));
    stop(serve);
    let snapshot = find().expect("the snapshot");
    let report = report_json(&snapshot);
    let kills: Vec<&serde_json::Value> = report["oom_kills"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|kill| kill["victim"]["cgroup"] == group.path())
        .collect();
    assert_eq!(kills.len() as u64, kernel, "{report}");
    assert_eq!(
        kills[0]["oom_memcg"]["path"],
        group.path(),
        "its own limit: {report}"
    );
    // The minutes before it: the file the group read before the hog ran.
    let row = row_for(&report, group.path());
    assert!(
        row["added_bytes"].as_u64().unwrap() >= 32 * MIB,
        "the read before the kill: {row}"
    );
    assert_eq!(report["ending"]["complete"], true, "{report}");
    // The whole directory reads as one trace too.
    let whole = report_json(&recorder);
    assert_eq!(whole["oom_kills"].as_array().unwrap().len(), kills.len());
}

#[test]
fn cgroup_churn_never_takes_the_recorder_past_its_cap() {
    const CAP: u64 = MIB;
    if !require_root("cgroup_churn_never_takes_the_recorder_past_its_cap") {
        return;
    }
    let dir = tempfile::tempdir().expect("a directory");
    let recorder = dir.path().join("flight");
    let (serve, port, _lines) = serve(&[
        "--flight-recorder",
        recorder.to_str().unwrap(),
        "--max-disk",
        "1M",
    ]);
    let parent = scratch("flight-churn", None);
    // Each cgroup made and removed is two records, the first with its
    // path (long names fill the cap sooner, also in a slow guest): churn
    // until the ring has had to delete segments a few times.
    let long = "x".repeat(200);
    let mut highest = 0;
    let mut made = 0;
    let deleted = || {
        sample(
            &scrape(port),
            "cgtrace_flight_recorder_segments_deleted_total",
        )
        .unwrap_or(0)
    };
    wait_until("the churn to fill the cap", || {
        for _ in 0..200 {
            let child = parent.dir().join(format!("c{made}-{long}"));
            std::fs::create_dir(&child).expect("mkdir");
            std::fs::remove_dir(&child).expect("rmdir");
            made += 1;
        }
        highest = highest.max(disk_bytes(&recorder));
        deleted() >= 3
    });
    // SIGUSR1 keeps the last minutes now, within the cap too.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(i32::try_from(serve.pid()).expect("a pid"), libc::SIGUSR1);
    }
    wait_until("a snapshot on SIGUSR1", || {
        snapshots(&recorder)
            .iter()
            .any(|s| s.to_string_lossy().ends_with("-signal"))
    });
    std::thread::sleep(Duration::from_millis(500));
    highest = highest.max(disk_bytes(&recorder));
    stop(serve);
    eprintln!("{made} cgroups made and removed: at most {highest} bytes under a cap of {CAP}");
    assert!(highest <= CAP, "{highest} bytes under a cap of {CAP}");
    // What is left reads as one trace.
    let report = report_json(&recorder);
    assert!(report["records"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn a_full_disk_pauses_the_recorder_and_the_metrics_go_on() {
    if !require_root("a_full_disk_pauses_the_recorder_and_the_metrics_go_on") {
        return;
    }
    let dir = tempfile::tempdir().expect("a directory");
    let disk = Tmpfs::mount(dir.path(), "4m");
    let recorder = dir.path().join("flight");
    let (serve, port, _lines) = serve(&["--flight-recorder", recorder.to_str().unwrap()]);
    // Something else fills the disk.
    let filler = dir.path().join("filler");
    let mut file = std::fs::File::create(&filler).expect("a filler file");
    let block = vec![0u8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    drop(file);
    // Cgroups come and go, so the recorder has records to write.
    let parent = scratch("flight-full", None);
    let churn = |count: usize| {
        for i in 0..count {
            let child = parent.dir().join(format!("c{i}"));
            let _ = std::fs::create_dir(&child);
            let _ = std::fs::remove_dir(&child);
        }
    };
    wait_until("the recorder to pause", || {
        churn(200);
        sample(&scrape(port), "cgtrace_flight_recorder_paused") == Some(1)
    });
    // The metrics go on: an OOM kill is counted while nothing is recorded.
    let group = scratch("flight-full-oom", Some(64 * MIB));
    memhog(&group, 128).wait();
    let kernel = group.oom_kill_count().expect("the kernel's oom_kill");
    let series = format!(
        "cgtrace_oom_events_total{{cgroup=\"{}\",limit=\"own\"}}",
        group.path()
    );
    wait_until("the kill on /metrics", || {
        sample(&scrape(port), &series) == Some(kernel)
    });
    // Space comes back: recording resumes.
    std::fs::remove_file(&filler).expect("remove the filler");
    wait_until("the recorder to resume", || {
        churn(10);
        sample(&scrape(port), "cgtrace_flight_recorder_paused") == Some(0)
    });
    stop(serve);
    drop(disk);
}

/// `text` for a URL's query string.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Prometheus server (Debian's `prometheus`) scraping `target` every
/// second, with its storage in a directory of its own; stopped on drop.
struct Prometheus {
    _server: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// `None` where it is not installed (the kernel-matrix guests).
    fn start(target: u16) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cgtrace\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .expect("write the scrape config");
        let port = free_port();
        let server = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(server) = server else {
            assert!(
                std::env::var_os("CGTRACE_SKIP_BROWSER").is_some(),
                "prometheus is not installed: `cargo xtask test` installs it (apt-get install prometheus)"
            );
            return None;
        };
        let prometheus = Self {
            _server: ChildGuard(server),
            port,
            _dir: dir,
        };
        wait_until("Prometheus to be ready", || {
            get(port, "/-/ready", "").is_some_and(|(status, _)| status == 200)
        });
        Some(prometheus)
    }

    /// An instant query's answer: the HTTP status and the JSON.
    fn answer(&self, promql: &str) -> Option<(u16, serde_json::Value)> {
        let path = format!("/api/v1/query?query={}", percent_encoded(promql));
        let (status, body) = get(self.port, &path, "")?;
        // The body may come chunked; the JSON object is what lies between
        // the first `{` and the last `}`.
        let json = &body[body.find('{')?..=body.rfind('}')?];
        Some((status, serde_json::from_str(json).ok()?))
    }

    /// The value of an instant query's one result, if it has one.
    fn query(&self, promql: &str) -> Option<f64> {
        let (status, answer) = self.answer(promql)?;
        if status != 200 {
            return None;
        }
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

#[test]
fn a_prometheus_server_scraping_serve_answers_with_the_kernels_counts() {
    if !require_root("a_prometheus_server_scraping_serve_answers_with_the_kernels_counts") {
        return;
    }
    let (_serve, port, _lines) = serve(&[]);
    let Some(prometheus) = Prometheus::start(port) else {
        return;
    };
    // An OOM kill at a group's own limit.
    let group = scratch("serve-prom-oom", Some(64 * MIB));
    memhog(&group, 128).wait();
    let kills = group.oom_kill_count().expect("the kernel's oom_kill");
    // A group throttled at a fifth of a core.
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    let name = format!("cgtrace-test-serve-prom-cpu-{}", std::process::id());
    let throttled = ScratchCgroup::create_for(&hierarchies, "cpu", &name).expect("a cpu cgroup");
    throttled.set_cpu_quota(20_000, 100_000).expect("a quota");
    let mut spin = Command::new(cgtrace_bin());
    spin.args(["__spin", "1", "1"]);
    ChildGuard(throttled.spawn_into(&mut spin).expect("start the spinner")).wait();
    let periods = throttled.cpu_stat().expect("cpu.stat").nr_throttled;
    // The questions an on-call engineer asks, in PromQL (README).
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let (kills, periods) = (kills as f64, periods as f64);
    let killed_at_own_limit = format!(
        "sum by (cgroup) (cgtrace_oom_events_total{{cgroup=\"{}\",limit=\"own\"}})",
        group.path()
    );
    wait_until("Prometheus to have the kill", || {
        prometheus.query(&killed_at_own_limit) == Some(kills)
    });
    let throttled_periods = format!(
        "cgtrace_cpu_cfs_throttled_periods_total{{cgroup=\"{}\"}}",
        throttled.path()
    );
    wait_until("Prometheus to have the throttled periods", || {
        prometheus.query(&throttled_periods) == Some(periods)
    });
    assert_eq!(
        prometheus.query("sum(cgtrace_probe_ring_buffer_drops_total)"),
        Some(0.0),
        "nothing lost"
    );
    // Every query of the Grafana dashboard in deploy/ is one Prometheus
    // runs, with Grafana's variables as Grafana would fill them in.
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    )))
    .expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a query");
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$namespace", ".*");
            let (status, answer) = prometheus.answer(&promql).expect("an answer");
            assert_eq!(
                (status, &answer["status"]),
                (200, &serde_json::json!("success")),
                "{promql}: {answer}"
            );
        }
    }
}

#[test]
fn a_quiet_cgroup_has_its_usage_and_limit_served() {
    if !require_root("a_quiet_cgroup_has_its_usage_and_limit_served") {
        return;
    }
    let (_serve, port, _lines) = serve(&["--sweep", "1s"]);
    // A group that does nothing: no page cache, no reclaim, no charges.
    let group = scratch("serve-quiet", Some(48 * MIB));
    let limit = format!(
        "cgtrace_spec_memory_limit_bytes{{cgroup=\"{}\"}}",
        group.path()
    );
    let usage = format!("cgtrace_memory_usage_bytes{{cgroup=\"{}\"}}", group.path());
    wait_until("the quiet group's limit on /metrics", || {
        sample(&scrape(port), &limit) == Some(48 * MIB)
    });
    assert_eq!(
        sample(&scrape(port), &usage),
        Some(0),
        "an empty group holds nothing"
    );
}
