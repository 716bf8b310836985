//! `cgtrace serve` against the real kernel: its endpoint answers, and its
//! OOM counter is the kernel's.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use cgtrace::cgroup::{Hierarchies, scratch::ScratchCgroup};
use cgtrace_tests::{ChildGuard, cgtrace_bin, memhog, require_root, scratch, wait_until};

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` with these headers; the status code and the body.
fn get(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The value of the sample line starting with `series`.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// `cgtrace serve` on a free loopback port, once it answers ready, and
/// the lines it prints on stdout.
fn serve() -> (ChildGuard, u16, Receiver<String>) {
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

/// `promtool check metrics` (Debian's `prometheus`) finds nothing wrong
/// with a scrape in the Prometheus text format. Skipped where it is not
/// installed: the kernel-matrix guests.
fn promtool_accepts(text: &str) {
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CGTRACE_SKIP_BROWSER").is_some(),
            "promtool is not installed: `cargo xtask test` installs it (apt-get install prometheus)"
        );
        return;
    };
    promtool
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("run promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn a_throttled_group_has_the_kernels_throttled_periods() {
    if !require_root("a_throttled_group_has_the_kernels_throttled_periods") {
        return;
    }
    let (_serve, port, _) = serve();
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
    wait_until("the kernel's throttled periods on /metrics", || {
        get(port, "/metrics", "")
            .and_then(|(_, text)| sample(&text, &series("cgtrace_cpu_throttled_periods_total")))
            .is_some_and(|periods| periods == kernel)
    });
    let (_, text) = get(port, "/metrics", "").expect("a scrape");
    let spans = sample(&text, &series("cgtrace_throttle_spans_total")).unwrap_or(0);
    assert!(spans > 0, "cgtrace saw the spans: {text}");
}

#[test]
fn an_oom_kill_is_counted_with_the_limit_that_was_hit() {
    if !require_root("an_oom_kill_is_counted_with_the_limit_that_was_hit") {
        return;
    }
    let (_serve, port, lines) = serve();
    let group = scratch("serve-oom", Some(64 << 20));
    memhog(&group, 128).wait();
    let kernel = group.oom_kill_count().expect("the kernel's oom_kill");
    assert!(kernel >= 1, "the kernel killed the memory hog");
    let series = format!(
        "cgtrace_oom_kills_total{{cgroup=\"{}\",limit=\"own\"}}",
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
    promtool_accepts(&get(port, "/metrics", "").expect("a scrape").1);
    // And as a JSON line on stdout (the `oom --json` schema), for log
    // shippers.
    let kill = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(20)).ok())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .find(|line| line["type"] == "oom_kill")
        .expect("a kill line on stdout");
    assert_eq!(kill["victim"]["cgroup"], group.path());
}
