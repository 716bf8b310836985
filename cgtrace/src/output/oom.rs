//! OOM kills as aligned table lines and as JSON objects (schema:
//! docs/json-schema.md).

use serde_json::{Map, Value, json};

use super::format::{bytes, rfc3339, short_time, tail};
use crate::{
    event::{Constraint, OomKill, OomSource},
    identity::Identity,
    system::Clock,
};

/// Gives the identity of the cgroup at a path (see `cli::select::Selection`).
pub type Identify<'a> = dyn FnMut(&str) -> Identity + 'a;

const CGROUP_WIDTH: usize = 26;

/// The table header, aligned with [`line`].
#[must_use]
pub fn header() -> String {
    format!(
        "{:<18} {:>7} {:<15} {:>5} {:<w$} {:<w$} {:>13} {:>6} {:>6} {:>6} {:>5}  NOTES",
        "TIME (UTC)",
        "PID",
        "COMM",
        "UID",
        "CGROUP",
        "LIMIT HIT IN",
        "USAGE/LIMIT",
        "ANON",
        "FILE",
        "SHMEM",
        "ADJ",
        w = CGROUP_WIDTH
    )
}

/// One aligned line per kill.
#[must_use]
pub fn line(kill: &OomKill, clock: &Clock, identify: &mut Identify<'_>) -> String {
    let opt = |value: Option<u64>| value.map_or_else(|| "?".to_owned(), bytes);
    let victim_cgroup = cgroup_label(
        kill.victim.cgroup.as_deref(),
        kill.victim.cgroup_ref.map(|c| c.id),
        identify,
    );
    let limit_hit = match (&kill.constraint, &kill.oom_memcg) {
        (Constraint::Memcg, Some(memcg)) => {
            let path = cgroup_label(memcg.path.as_deref(), memcg.id, identify);
            if kill.victim.cgroup.is_some() && memcg.path == kill.victim.cgroup {
                "(its own cgroup)".to_owned()
            } else {
                path
            }
        }
        (Constraint::Memcg, None) => "memcg (unknown)".to_owned(),
        (Constraint::Global, _) => "global (machine)".to_owned(),
        (other, _) => other.to_string(),
    };
    let usage_limit = kill.oom_memcg.as_ref().map_or_else(
        || "-".to_owned(),
        |m| format!("{}/{}", opt(m.usage_bytes), opt(m.limit_bytes)),
    );
    let mut notes = Vec::new();
    if kill.group_kill == Some(true) {
        notes.push("group-kill");
    }
    if kill.source == OomSource::KernelLog {
        notes.push("from-kernel-log");
    }
    if kill.incomplete {
        notes.push("incomplete");
    }
    format!(
        "{:<18} {:>7} {:<15} {:>5} {:<w$} {:<w$} {:>13} {:>6} {:>6} {:>6} {:>5}  {}",
        short_time(clock.wall_time(kill.monotonic_ns)),
        kill.victim.pid,
        tail(&kill.victim.comm, 15),
        kill.victim
            .uid
            .map_or_else(|| "?".to_owned(), |u| u.to_string()),
        tail(&victim_cgroup, CGROUP_WIDTH),
        tail(&limit_hit, CGROUP_WIDTH),
        usage_limit,
        opt(kill.memory.anon_rss_bytes),
        opt(kill.memory.file_rss_bytes),
        opt(kill.memory.shmem_rss_bytes),
        kill.oom_score_adj
            .map_or_else(|| "?".to_owned(), |a| a.to_string()),
        notes.join(","),
        w = CGROUP_WIDTH
    )
}

/// `namespace/pod/container` where known, else the path.
fn cgroup_label(path: Option<&str>, id: Option<u64>, identify: &mut Identify<'_>) -> String {
    match (path, id) {
        (Some(path), _) => identify(path).label(path),
        (None, Some(id)) => format!("id:{id} (gone)"),
        (None, None) => "?".to_owned(),
    }
}

/// One JSON object per kill: `{"type":"oom_kill","time":..., ...}`; each
/// cgroup (victim, trigger, the memcg whose limit was hit) carries its
/// `workload` identity next to its path.
#[must_use]
pub fn json(kill: &OomKill, clock: &Clock, identify: &mut Identify<'_>) -> Value {
    let mut object = Map::new();
    object.insert("type".into(), json!("oom_kill"));
    object.insert(
        "time".into(),
        json!(rfc3339(clock.wall_time(kill.monotonic_ns))),
    );
    if let Ok(Value::Object(fields)) = serde_json::to_value(kill) {
        object.extend(fields);
    }
    for (member, path_field) in [
        ("victim", "cgroup"),
        ("trigger", "cgroup"),
        ("oom_memcg", "path"),
    ] {
        if let Some(Value::Object(inner)) = object.get_mut(member) {
            let workload = inner
                .get(path_field)
                .and_then(Value::as_str)
                .map_or(Value::Null, |path| identify(path).to_json());
            inner.insert("workload".into(), workload);
        }
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::{header, json, line};
    use crate::{
        event::{
            Constraint, ConstraintFoundBy, LimitKind, OomKill, OomMemcg, OomSource, Task,
            VictimMemory,
        },
        identity::Identity,
        system::Clock,
    };

    fn kill() -> OomKill {
        OomKill {
            monotonic_ns: 5_000_000_000,
            source: OomSource::Probe,
            victim: Task {
                pid: 6132,
                tid: Some(6132),
                comm: "python3".into(),
                uid: Some(0),
                cgroup: Some("/cgtrace-test".into()),
                cgroup_ref: None,
            },
            trigger: None,
            constraint: Constraint::Memcg,
            constraint_found_by: ConstraintFoundBy::LimitWalk,
            oom_memcg: Some(OomMemcg {
                path: Some("/cgtrace-test".into()),
                id: Some(42),
                limit_bytes: Some(100 << 20),
                usage_bytes: Some(100 << 20),
                limit_kind: LimitKind::Memory,
                values_from: "kernel",
                cgroup_ref: None,
            }),
            memory: VictimMemory {
                anon_rss_bytes: Some(102_016 * 1024),
                ..VictimMemory::default()
            },
            oom_score_adj: Some(0),
            group_kill: Some(false),
            victim_memcg_oom_kills: Some(1),
            counted_as_kill: Some(true),
            incomplete: false,
        }
    }

    #[test]
    fn lines_align_with_the_header() {
        let clock = Clock::now();
        let text = line(&kill(), &clock, &mut Identity::unnamed);
        let head = header();
        assert_eq!(text.find("python3"), head.find("COMM"));
        assert!(text.contains("(its own cgroup)"), "{text}");
        assert!(text.contains("100M/100M"), "{text}");
        assert!(text.contains("99.6M"), "{text}");
        assert!(text.chars().count() < 160);
    }

    #[test]
    fn json_carries_every_field() {
        let value = json(&kill(), &Clock::now(), &mut Identity::unnamed);
        assert_eq!(value["type"], "oom_kill");
        assert_eq!(value["victim"]["pid"], 6132);
        assert_eq!(value["victim"]["cgroup"], "/cgtrace-test");
        assert_eq!(value["victim"]["workload"]["kind"], "cgroup");
        assert_eq!(
            value["oom_memcg"]["workload"]["pod"],
            serde_json::Value::Null
        );
        assert_eq!(value["constraint"], "memcg");
        assert_eq!(value["constraint_found_by"], "limit_walk");
        assert_eq!(value["oom_memcg"]["limit_bytes"], 100 << 20);
        assert_eq!(value["oom_memcg"]["values_from"], "kernel");
        assert_eq!(value["memory"]["file_rss_bytes"], serde_json::Value::Null);
        assert_eq!(value["source"], "probe");
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
    }
}
