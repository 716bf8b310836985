//! OOM kills as aligned table lines and as JSON objects (schema:
//! docs/json-schema.md).

use std::io::{self, Write as _};

use serde_json::{Map, Value, json};

use super::format::{bytes, rfc3339, short_time, tail};
use crate::{
    event::{Constraint, Event, OomKill, OomSource, ProbeStats},
    identity::{Identity, selection::Selection},
    model::oom::{DEFAULT_HOLD_NS, OomCorrelator},
    session::{Context, End, Flow, Sink},
    system::Clock,
    trace::file::Ending,
};

/// Gives the identity of the cgroup at a path (see `identity::selection::Selection`).
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

/// Writes the kills a selection keeps to stdout in the chosen format.
#[derive(Debug, Default)]
pub struct OomPrinter {
    json: bool,
    header_printed: bool,
    /// Kills printed.
    pub reported: u64,
    /// Kills seen, kept by the selection or not.
    pub seen: u64,
}

impl OomPrinter {
    #[must_use]
    pub fn new(json: bool) -> Self {
        Self {
            json,
            ..Self::default()
        }
    }

    #[must_use]
    pub fn json(&self) -> bool {
        self.json
    }

    /// Prints `kill` if `selection` keeps it.
    pub fn kill(
        &mut self,
        kill: &OomKill,
        clock: &Clock,
        selection: &mut Selection,
    ) -> io::Result<()> {
        self.seen += 1;
        // The victim's cgroup decides, as in the kernel's filter; a kill
        // whose victim cgroup is unknown is judged by the limit's memcg.
        let judged_by = kill
            .victim
            .cgroup
            .as_deref()
            .or_else(|| kill.oom_memcg.as_ref().and_then(|m| m.path.as_deref()));
        if !selection.keeps_any(&[judged_by]) {
            return Ok(());
        }
        let mut out = crate::text::stdout();
        let identify = &mut |path: &str| selection.identify(path);
        if self.json {
            writeln!(out, "{}", json(kill, clock, identify))?;
        } else {
            if !self.header_printed {
                writeln!(out, "{}", header())?;
                self.header_printed = true;
            }
            writeln!(out, "{}", line(kill, clock, identify))?;
        }
        self.reported += 1;
        out.flush()
    }

    /// The closing (or, with `--stats-interval`, periodic) counters.
    pub fn stats(&self, stats: Option<&ProbeStats>, kmsg_lost: u64, last: bool) -> io::Result<()> {
        if self.json {
            let record = json!({
                "type": "stats",
                "time": rfc3339(std::time::SystemTime::now()),
                "final": last,
                "oom_kills_reported": self.reported,
                "probe": stats,
                "kernel_log_records_lost": kmsg_lost,
            });
            let mut out = crate::text::stdout();
            writeln!(out, "{record}")?;
            return out.flush();
        }
        if last {
            let probe = stats.map_or_else(
                || "no probe (kernel log only)".to_owned(),
                |s| {
                    format!(
                        "probe: {} records, {} ring-buffer drops, {} recursion misses, {} read failures, {} undecodable, {} map-full",
                        s.records, s.ring_buffer_drops, s.recursion_misses, s.read_failures, s.decode_errors, s.map_full
                    )
                },
            );
            crate::note!(
                "cgtrace: {} OOM kills reported; {probe}; kernel log: {kmsg_lost} records lost",
                self.reported
            );
        }
        Ok(())
    }
}

/// The kills of a replay, as the live view printed them.
impl Sink for OomPrinter {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        if let Event::OomKill(kill) = event {
            self.kill(kill, &cx.clock, &mut cx.selection)?;
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _cx: &mut Context, end: &End) -> anyhow::Result<()> {
        if let Some(Ending::CutShort { offset, .. }) = end.ending {
            crate::note!(
                "cgtrace: the trace was cut short at byte {offset}: kills after that were not recorded"
            );
        }
        Ok(())
    }
}

/// `oom --follow`: the kills since boot from the kernel log, then each live
/// kill as the probe sees it, paired with its kernel-log twin (the
/// correlator holds a kill a moment for it), and with `--json` the loss
/// counters every `stats_every` nanoseconds.
pub struct OomFollow {
    printer: OomPrinter,
    correlator: OomCorrelator,
    stats_every_ns: Option<u64>,
    last_stats_ns: Option<u64>,
    latest: Option<ProbeStats>,
}

impl OomFollow {
    #[must_use]
    pub fn new(printer: OomPrinter, attach_ns: u64, stats_every_ns: Option<u64>) -> Self {
        Self {
            printer,
            correlator: OomCorrelator::new(Some(attach_ns), DEFAULT_HOLD_NS),
            stats_every_ns,
            last_stats_ns: None,
            latest: None,
        }
    }

    fn print(&mut self, kills: Vec<OomKill>, cx: &mut Context) -> io::Result<()> {
        for kill in kills {
            self.printer.kill(&kill, &cx.clock, &mut cx.selection)?;
        }
        Ok(())
    }

    fn kernel_log_lost(cx: &Context) -> u64 {
        cx.kernel_log_lost.unwrap_or(0)
    }
}

impl Sink for OomFollow {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        let now = Clock::monotonic_now_ns();
        let ready = match event {
            Event::OomKill(kill) => match kill.source {
                OomSource::Probe => self.correlator.probe((**kill).clone(), now),
                OomSource::KernelLog => self.correlator.log((**kill).clone(), now),
            },
            Event::Health(health) => {
                self.latest = Some(health.stats);
                let due = self.stats_every_ns.is_some_and(|every| {
                    health
                        .at_ns
                        .saturating_sub(*self.last_stats_ns.get_or_insert(health.at_ns))
                        >= every
                });
                if due {
                    self.last_stats_ns = Some(health.at_ns);
                    self.printer
                        .stats(Some(&health.stats), Self::kernel_log_lost(cx), false)?;
                }
                self.correlator.expire(now)
            }
            _ => self.correlator.expire(now),
        };
        self.print(ready, cx)?;
        Ok(Flow::Continue)
    }

    fn finish(&mut self, cx: &mut Context, end: &End) -> anyhow::Result<()> {
        let held = self.correlator.flush();
        self.print(held, cx)?;
        let stats = end.health.or(self.latest);
        self.printer
            .stats(stats.as_ref(), Self::kernel_log_lost(cx), true)?;
        Ok(())
    }
}

impl OomPrinter {
    /// The closing line of `cgtrace oom` without `--follow`: how many
    /// kills the kernel log held (and how many the filter kept), since when.
    pub fn history_summary(
        &self,
        oldest_us: Option<u64>,
        lost: u64,
        clock: &Clock,
        selection: &Selection,
    ) -> io::Result<()> {
        if self.json {
            return self.stats(None, lost, true);
        }
        let since = oldest_us.map_or_else(
            || "nothing".to_owned(),
            |us| rfc3339(clock.wall_time(us.saturating_mul(1000))),
        );
        let kept = if selection.is_everything() {
            String::new()
        } else {
            format!(
                " keeping {} (of {} in all)",
                selection.describe(),
                self.seen
            )
        };
        crate::note!(
            "cgtrace: {} OOM kills in the kernel log{kept} (it holds records since {since}; older ones have rotated out)",
            self.reported
        );
        Ok(())
    }
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
