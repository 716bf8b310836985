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

/// A value as text with every object's keys in order.
fn canonical(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|key| format!("{key:?}:{}", canonical(&fields[key])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        serde_json::Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

fn sort_lists(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(sort_lists);
            items.sort_by_cached_key(canonical);
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

/// Format 2's export lines in format 1's shape: an interval's counters as
/// one line per flow, stall and charge; `memory.stat` charges as lines of
/// their own; no fields format 1 did not have.
fn as_format_1_lines(line: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut line = line.clone();
    let fields = line.as_object_mut().unwrap();
    match fields["type"].as_str().unwrap() {
        "counters" => {
            let time = fields["time"].clone();
            let mut lines = Vec::new();
            for flow in fields["flows"].as_array().unwrap() {
                let mut flow = flow.clone();
                flow["type"] = "cache_flow".into();
                flow["time"] = time.clone();
                lines.push(flow);
            }
            for stall in fields["stalls"].as_array().unwrap() {
                let mut stall = stall.clone();
                stall["type"] = "stall".into();
                stall["time"] = time.clone();
                lines.push(stall);
            }
            for charge in fields["charges"].as_array().into_iter().flatten() {
                let mut charge = charge.clone();
                charge["type"] = "charge".into();
                charge["time"] = time.clone();
                lines.push(charge);
            }
            lines
        }
        "memory" => {
            let stat_charges = fields.remove("memory_stat_charges");
            fields.remove("peak_bytes");
            let mut lines = vec![line.clone()];
            for (kind, pages) in stat_charges.iter().filter_map(|c| c.as_object()).flatten() {
                let mut charge = pages.clone();
                charge["type"] = "charge".into();
                charge["time"] = line["time"].clone();
                charge["cgroup"] = line["cgroup"].clone();
                charge["kind"] = kind.clone().into();
                lines.push(charge);
            }
            lines
        }
        "cgroup" => {
            fields.remove("created");
            vec![line]
        }
        _ => vec![line],
    }
}

#[test]
fn the_exports_of_a_format_1_trace_are_unchanged() {
    // The same facts: format 2 exports one line per event (an interval's
    // counters whole), format 1 exported one per record (a line per flow),
    // with each cgroup's name just before the first record that named it.
    let sorted = |lines: Vec<serde_json::Value>| {
        let mut lines: Vec<String> = lines.iter().map(canonical).collect();
        lines.sort();
        lines
    };
    let now = sorted(
        json_lines(&run(&["export", "--format", "jsonl"]))
            .iter()
            .flat_map(as_format_1_lines)
            .map(|mut line| {
                sort_lists(&mut line);
                line
            })
            .collect(),
    );
    let then = sorted(json_lines(fixture!("export.jsonl")));
    assert_eq!(now.len(), then.len(), "export jsonl: line count");
    for (now, then) in now.iter().zip(&then) {
        assert_eq!(now, then, "export jsonl");
    }
    let now: serde_json::Value =
        serde_json::from_str(&run(&["export", "--format", "chrome-trace"])).unwrap();
    let then: serde_json::Value = serde_json::from_str(fixture!("chrome-trace.json")).unwrap();
    assert_eq!(now, then, "chrome trace");
}
