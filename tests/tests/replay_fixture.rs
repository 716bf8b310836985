//! A trace written by an earlier cgtrace (`cgtrace demo`, trace format 1)
//! still reads, and every view of it says what the cgtrace that wrote it
//! said: the report (text and JSON), each view's replay and both exports.
//!
//! The expected outputs were produced by that cgtrace from the same file
//! (`cgtrace/tests/fixtures/trace-v1-demo/`), and are built into this test
//! so it runs wherever the test binary does (the kernel-matrix guests
//! too). Needs no root: nothing here touches the kernel.

use std::process::Command;

use cgtrace_tests::cgtrace_bin;

/// The fixture files, by name.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            "../../cgtrace/tests/fixtures/trace-v1-demo/",
            $name
        ))
    };
}

const TRACE: &[u8] = include_bytes!("../../cgtrace/tests/fixtures/trace-v1-demo/trace.cgt");

/// What `cgtrace ARGS… <fixture trace>` prints on stdout.
fn run(args: &[&str]) -> String {
    let trace = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(trace.path(), TRACE).expect("write the fixture trace");
    let output = Command::new(cgtrace_bin())
        .args(args)
        .arg(trace.path())
        .output()
        .expect("run cgtrace");
    assert!(
        output.status.success(),
        "cgtrace {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// JSON lines as values, without the one field that depends on when the
/// command ran (the `time` of a live `stats` line), and with the rows of
/// every list in one order: rows that tie on what a view sorts by (two
/// cgroups that moved as many pages) may come in either order.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            let mut value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if value["type"] == "stats" && value.get("final").is_some() {
                value.as_object_mut().unwrap().remove("time");
            }
            sort_lists(&mut value);
            value
        })
        .collect()
}

fn sort_lists(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(sort_lists);
            items.sort_by_cached_key(ToString::to_string);
        }
        serde_json::Value::Object(fields) => fields.values_mut().for_each(sort_lists),
        _ => {}
    }
}

fn assert_same_json_lines(now: &str, then: &str, what: &str) {
    let (now, then) = (json_lines(now), json_lines(then));
    assert_eq!(now.len(), then.len(), "{what}: line count");
    for (index, (now, then)) in now.iter().zip(&then).enumerate() {
        assert_eq!(now, then, "{what}: line {}", index + 1);
    }
}

#[test]
fn the_report_of_a_format_1_trace_is_unchanged() {
    assert_eq!(run(&["report"]), fixture!("report.txt"), "text report");
    let now: serde_json::Value = serde_json::from_str(&run(&["report", "--json"])).unwrap();
    let then: serde_json::Value = serde_json::from_str(fixture!("report.json")).unwrap();
    assert_eq!(now, then);
}

#[test]
fn every_replay_of_a_format_1_trace_is_unchanged() {
    for (view, expected) in [
        ("oom", fixture!("oom.jsonl")),
        ("cache", fixture!("cache.jsonl")),
        ("reclaim", fixture!("reclaim.jsonl")),
        ("throttle", fixture!("throttle.jsonl")),
    ] {
        assert_same_json_lines(&run(&[view, "--json", "--input"]), expected, view);
    }
    assert_same_json_lines(
        &run(&["throttle", "--spans", "--json", "--input"]),
        fixture!("throttle-spans.jsonl"),
        "throttle --spans",
    );
}

#[test]
fn the_exports_of_a_format_1_trace_are_unchanged() {
    // The same lines; within an interval, a cgroup's name line may come
    // before the interval's first record rather than just before the first
    // record that names it (format 1 interleaved them; read as events, an
    // interval's counters come whole).
    let sorted = |text: &str| {
        let mut lines: Vec<String> = json_lines(text).iter().map(ToString::to_string).collect();
        lines.sort();
        lines
    };
    let (now, then) = (
        sorted(&run(&["export", "--format", "jsonl"])),
        sorted(fixture!("export.jsonl")),
    );
    assert_eq!(now.len(), then.len(), "export jsonl: line count");
    for (now, then) in now.iter().zip(&then) {
        assert_eq!(now, then, "export jsonl");
    }
    let now: serde_json::Value =
        serde_json::from_str(&run(&["export", "--format", "chrome-trace"])).unwrap();
    let then: serde_json::Value = serde_json::from_str(fixture!("chrome-trace.json")).unwrap();
    assert_eq!(now, then, "chrome trace");
}
