//! `cgtrace report --html OUT`: one self-contained HTML page (inline CSS
//! and SVG, no scripts, nothing fetched) with the report's tables and its
//! time series: memory and page cache per cgroup, evictions, CPU
//! throttling, and a timeline of throttle spans and OOM kills.

use std::{collections::HashMap, fmt::Write as _};

use super::{
    summary::{CgroupSummary, Summary},
    svg::{self, Lane, Marker, PALETTE, Series, Unit, escape},
    text::{
        CPU_COLUMNS, Context, MEMORY_COLUMNS, cpu_cells, cpu_rows, ending_text, losses_text,
        memory_cells, memory_rows,
    },
};
use crate::{
    event::ThrottleSpan,
    trace::file::Ending,
    view::{
        cache::duration,
        format::{bytes, rfc3339},
    },
};

/// Cgroups drawn per chart (the tables list them all).
const SERIES_PER_CHART: usize = 8;
/// Lanes on the timeline.
const TIMELINE_LANES: usize = 16;

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
.scroll { overflow-x: auto; max-width: 100%; }
svg.chart { display: block; width: 100%; max-width: 1800px; height: auto; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 8px 0; }
th, td { padding: 3px 6px; text-align: right; border-bottom: 1px solid #eee; white-space: nowrap; }
th { white-space: normal; }
th:first-child, td:first-child { text-align: left; }
td.name { font-family: ui-monospace, monospace; max-width: 24ch; overflow: hidden; text-overflow: ellipsis; }
td.path { font-family: ui-monospace, monospace; white-space: normal; word-break: break-all; text-align: left; min-width: 12ch; }
th:last-child, td:last-child { white-space: normal; text-align: left; min-width: 10em; }
.meta td { text-align: left; }
.warn { background: #fdecea; border: 1px solid #d62728; padding: 8px 12px; margin: 12px 0; }
.legend { font-size: 13px; margin: 2px 0 8px 0; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 14px; height: 4px; margin-right: 5px; vertical-align: middle; }
.empty { color: #777; font-style: italic; }
svg .tick { font-size: 11px; fill: #555; }
svg .lane { font-size: 12px; font-family: ui-monospace, monospace; fill: #222; }
svg .marker { font-size: 11px; font-weight: bold; }
.note { color: #555; font-size: 13px; }
";

/// Seconds since the recording started.
fn seconds(summary: &Summary, ns: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "durations well below 2^52 ns")]
    let s = ns.saturating_sub(summary.start_ns) as f64 / 1e9;
    s
}

#[expect(clippy::cast_precision_loss, reason = "byte counts plotted as f64")]
fn as_f64(value: u64) -> f64 {
    value as f64
}

/// Gives each cgroup one colour in every chart, in the order they are
/// first drawn (colours repeat after the palette's eight).
#[derive(Default)]
struct Colours(HashMap<String, &'static str>);

impl Colours {
    fn of(&mut self, cgroup: &str) -> &'static str {
        let next = PALETTE[self.0.len() % PALETTE.len()];
        self.0.entry(cgroup.to_owned()).or_insert(next)
    }
}

/// The `SERIES_PER_CHART` cgroups ranking highest by `key`, as coloured
/// series of `points`; the root cgroup (the whole machine) is left out.
fn top_series(
    cx: &Context<'_>,
    colours: &mut Colours,
    key: impl Fn(&CgroupSummary) -> u64,
    points: impl Fn(&CgroupSummary) -> Vec<(f64, f64)>,
) -> Vec<Series> {
    let mut ranked: Vec<(&String, &CgroupSummary)> = cx
        .summary
        .cgroups
        .iter()
        .filter(|(name, c)| name.as_str() != "/" && key(c) > 0)
        .collect();
    ranked.sort_by_key(|(name, c)| (std::cmp::Reverse(key(c)), (*name).clone()));
    ranked
        .into_iter()
        .take(SERIES_PER_CHART)
        .map(|(name, c)| Series {
            name: cx.label(name),
            colour: colours.of(name),
            points: points(c),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

fn legend(series: &[Series]) -> String {
    let mut out = String::from(r#"<div class="legend">"#);
    for s in series {
        let _ = write!(
            out,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            s.colour,
            escape(&s.name)
        );
    }
    out.push_str("</div>");
    out
}

/// Throttled milliseconds per second of each cgroup, in bins.
fn throttle_points(summary: &Summary, spans: &[ThrottleSpan], bin_s: f64) -> Vec<(f64, f64)> {
    let total = summary.seconds();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a bin count of a bounded recording"
    )]
    let bin_count = ((total / bin_s).ceil() as usize).clamp(1, 100_000);
    let mut throttled = vec![0.0f64; bin_count];
    for span in spans {
        let (start, end) = (
            seconds(summary, span.start_ns),
            seconds(summary, span.end_ns),
        );
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "non-negative bin index"
        )]
        let first = (start / bin_s).floor().max(0.0) as usize;
        for (bin, slot) in throttled.iter_mut().enumerate().skip(first) {
            #[expect(clippy::cast_precision_loss, reason = "bin index")]
            let (lo, hi) = (bin as f64 * bin_s, (bin + 1) as f64 * bin_s);
            if lo >= end {
                break;
            }
            *slot += (end.min(hi) - start.max(lo)).max(0.0);
        }
    }
    throttled
        .iter()
        .enumerate()
        .map(|(bin, t)| {
            #[expect(clippy::cast_precision_loss, reason = "bin index")]
            let mid = (bin as f64 + 0.5) * bin_s;
            (mid, t / bin_s * 1000.0)
        })
        .collect()
}

fn chart_section(out: &mut String, title: &str, note: &str, chart: Option<(String, &[Series])>) {
    let _ = write!(out, "<h2>{}</h2>", escape(title));
    match chart {
        Some((svg, series)) => {
            out.push_str(&legend(series));
            out.push_str(&svg);
            if !note.is_empty() {
                let _ = write!(out, r#"<p class="note">{}</p>"#, escape(note));
            }
        }
        None => {
            let _ = write!(out, r#"<p class="empty">{}</p>"#, escape(note));
        }
    }
}

fn charts(out: &mut String, cx: &Context<'_>) {
    let summary = cx.summary;
    let markers: Vec<Marker> = summary
        .kills
        .iter()
        .map(|k| Marker {
            seconds: seconds(summary, k.monotonic_ns),
            label: format!(
                "OOM kill of {}[{}] in {}",
                k.victim.comm,
                k.victim.pid,
                k.victim
                    .cgroup
                    .as_deref()
                    .map_or_else(|| "?".to_owned(), |p| cx.label(p))
            ),
        })
        .collect();
    let mut colours = Colours::default();
    memory_charts(out, cx, &mut colours, &markers);
    eviction_chart(out, cx, &mut colours, cx.page, &markers);
    throttle_chart(out, cx, &mut colours, &markers);
    pressure_chart(out, cx, &mut colours, &markers);
    timeline(out, cx);
}

/// Memory usage and page cache per cgroup over time.
fn memory_charts(out: &mut String, cx: &Context<'_>, colours: &mut Colours, markers: &[Marker]) {
    let summary = cx.summary;
    let x_max = summary.seconds();
    let root_note =
        "The root cgroup (the whole machine) is left out of the plots; the tables list it.";
    let memory = top_series(
        cx,
        colours,
        |c| c.peak_usage().unwrap_or(0),
        |c| {
            c.memory
                .iter()
                .filter_map(|p| Some((seconds(summary, p.end_ns), as_f64(p.usage_bytes?))))
                .collect()
        },
    );
    chart_section(
        out,
        "Memory usage per cgroup",
        if memory.is_empty() {
            "No memory samples in this trace."
        } else {
            root_note
        },
        (!memory.is_empty()).then(|| {
            (
                svg::line_chart("memory usage", Unit::Bytes, &memory, markers, x_max),
                &memory[..],
            )
        }),
    );

    let cache = top_series(
        cx,
        colours,
        |c| {
            c.memory
                .iter()
                .filter_map(|p| p.page_cache_bytes)
                .max()
                .unwrap_or(0)
        },
        |c| {
            c.memory
                .iter()
                .filter_map(|p| Some((seconds(summary, p.end_ns), as_f64(p.page_cache_bytes?))))
                .collect()
        },
    );
    chart_section(
        out,
        "Page cache per cgroup",
        if cache.is_empty() {
            "No page-cache samples in this trace."
        } else {
            root_note
        },
        (!cache.is_empty()).then(|| {
            (
                svg::line_chart("page cache", Unit::Bytes, &cache, markers, x_max),
                &cache[..],
            )
        }),
    );
}

/// Page cache evicted per second, per victim cgroup.
fn eviction_chart(
    out: &mut String,
    cx: &Context<'_>,
    colours: &mut Colours,
    page: u64,
    markers: &[Marker],
) {
    let summary = cx.summary;
    let x_max = summary.seconds();
    let evicted = top_series(cx, colours, CgroupSummary::evicted_total, |c| {
        if summary.intervals.is_empty() {
            return c
                .evicted_series
                .iter()
                .map(|(end, pages)| (seconds(summary, *end), as_f64(pages * page)))
                .collect();
        }
        // Every interval, so a quiet one draws as zero rather than as a
        // line between its neighbours.
        let by_end: HashMap<u64, u64> = c.evicted_series.iter().copied().collect();
        summary
            .intervals
            .iter()
            .map(|(start, end)| {
                #[expect(clippy::cast_precision_loss, reason = "interval lengths")]
                let length = (end.saturating_sub(*start) as f64 / 1e9).max(1e-3);
                let pages = by_end.get(end).copied().unwrap_or(0);
                (seconds(summary, *end), as_f64(pages * page) / length)
            })
            .collect()
    });
    chart_section(
        out,
        "Page cache evicted per cgroup (victim)",
        if evicted.is_empty() {
            "No page cache was evicted while recording."
        } else {
            "Bytes of each cgroup's page cache evicted per second, whoever reclaimed it; the tables say by whom."
        },
        (!evicted.is_empty()).then(|| {
            (
                svg::line_chart("evicted", Unit::BytesPerSecond, &evicted, markers, x_max),
                &evicted[..],
            )
        }),
    );
}

/// Throttled time per second, per cgroup.
fn throttle_chart(out: &mut String, cx: &Context<'_>, colours: &mut Colours, markers: &[Marker]) {
    let summary = cx.summary;
    let x_max = summary.seconds();
    let bin_s = svg::tick_step(x_max, 40.0).max(0.1);
    let throttling = top_series(cx, colours, CgroupSummary::throttled_ns, |c| {
        throttle_points(summary, &c.spans, bin_s)
    });
    chart_section(
        out,
        "CPU throttling per cgroup",
        if throttling.is_empty() {
            "No CFS throttling while recording."
        } else {
            "Milliseconds per second the cgroup's run queues spent throttled (summed over CPUs, so it can exceed 1000 ms/s)."
        },
        (!throttling.is_empty()).then(|| {
            (
                svg::line_chart(
                    "throttled",
                    Unit::MillisPerSecond,
                    &throttling,
                    markers,
                    x_max,
                ),
                &throttling[..],
            )
        }),
    );
}

/// Memory pressure per cgroup: the time some task stalled on memory,
/// in milliseconds per second, between consecutive samples. Drawn only
/// where the trace has pressure samples (cgroup v2).
fn pressure_chart(out: &mut String, cx: &Context<'_>, colours: &mut Colours, markers: &[Marker]) {
    let summary = cx.summary;
    if summary
        .cgroups
        .values()
        .all(|c| c.memory_pressure_series.is_empty())
    {
        return;
    }
    let x_max = summary.seconds();
    let stalled = top_series(
        cx,
        colours,
        |c| c.pressure.and_then(|p| p.memory).map_or(0, |m| m.some_us),
        |c| {
            c.memory_pressure_series
                .windows(2)
                .map(|pair| {
                    let ((before, _), (at, us)) = (pair[0], pair[1]);
                    #[expect(clippy::cast_precision_loss, reason = "interval lengths")]
                    let length_s = (at.saturating_sub(before) as f64 / 1e9).max(1e-3);
                    (seconds(summary, at), as_f64(us) / 1000.0 / length_s)
                })
                .collect()
        },
    );
    chart_section(
        out,
        "Memory pressure per cgroup",
        "Milliseconds per second in which some task of the cgroup stalled on memory (reclaim, refaults, swap-in): memory.pressure, some.",
        (!stalled.is_empty()).then(|| {
            (
                svg::line_chart(
                    "memory stalled",
                    Unit::MillisPerSecond,
                    &stalled,
                    markers,
                    x_max,
                ),
                &stalled[..],
            )
        }),
    );
}

/// Throttle spans and OOM kills, one lane per cgroup.
fn timeline(out: &mut String, cx: &Context<'_>) {
    let summary = cx.summary;
    let x_max = summary.seconds();
    let mut lanes: Vec<(u64, Lane)> = summary
        .cgroups
        .iter()
        .filter(|(_, c)| !c.spans.is_empty() || c.oom_kills > 0)
        .map(|(name, c)| {
            let lane = Lane {
                name: cx.label(name),
                spans: c
                    .spans
                    .iter()
                    .map(|s| {
                        (
                            seconds(summary, s.start_ns),
                            seconds(summary, s.end_ns),
                            format!(
                                "throttled {} on CPU {} (quota run out by {}[{}])",
                                duration(s.duration_ns()),
                                s.cpu,
                                s.comm,
                                s.pid
                            ),
                        )
                    })
                    .collect(),
                instants: Vec::new(),
            };
            (c.throttled_ns() + c.oom_kills * 1_000_000_000, lane)
        })
        .collect();
    for kill in &summary.kills {
        let name = cx.label(kill.victim.cgroup.as_deref().unwrap_or_default());
        if let Some((_, lane)) = lanes.iter_mut().find(|(_, l)| l.name == name) {
            lane.instants.push((
                seconds(summary, kill.monotonic_ns),
                format!("OOM kill of {}[{}]", kill.victim.comm, kill.victim.pid),
            ));
        }
    }
    lanes.sort_by_key(|(weight, lane)| (std::cmp::Reverse(*weight), lane.name.clone()));
    let lanes: Vec<Lane> = lanes
        .into_iter()
        .take(TIMELINE_LANES)
        .map(|(_, l)| l)
        .collect();
    out.push_str("<h2>Timeline</h2>");
    if lanes.is_empty() {
        out.push_str(r#"<p class="empty">No throttle spans or OOM kills while recording.</p>"#);
    } else {
        let _ = write!(
            out,
            r#"<div class="legend"><span><i style="background:{}"></i>throttled</span><span><i style="background:{}"></i>OOM kill</span></div>"#,
            svg::THROTTLE_COLOUR,
            svg::OOM_COLOUR
        );
        out.push_str(&svg::timeline(&lanes, x_max));
    }
}

/// An HTML table: a name column, then `columns`.
fn table<'a>(
    out: &mut String,
    title: &str,
    columns: &[&str],
    rows: impl Iterator<Item = (String, &'a String, Vec<String>)>,
) {
    let _ = write!(
        out,
        r#"<h2>{}</h2><div class="scroll"><table><tr><th>cgroup</th>"#,
        escape(title)
    );
    for column in columns {
        let _ = write!(out, "<th>{}</th>", escape(&column.to_lowercase()));
    }
    out.push_str("</tr>");
    for (label, path, cells) in rows {
        let _ = write!(
            out,
            r#"<tr><td class="name" title="{}">{}</td>"#,
            escape(path),
            escape(&label)
        );
        for cell in cells {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></div>");
}

fn tables(out: &mut String, cx: &Context<'_>) {
    let (summary, page) = (cx.summary, cx.page);
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), bytes);
    table(
        out,
        "Memory per cgroup",
        &MEMORY_COLUMNS,
        memory_rows(summary).map(|(name, c)| {
            let cells = memory_cells(c, page, &|who| cx.label(who));
            (cx.label(name), name, cells.to_vec())
        }),
    );
    if cpu_rows(summary).next().is_some() {
        table(
            out,
            "CPU throttling per cgroup",
            &CPU_COLUMNS,
            cpu_rows(summary).map(|(name, c)| (cx.label(name), name, cpu_cells(c).to_vec())),
        );
    }
    if !summary.kills.is_empty() {
        out.push_str("<h2>OOM kills</h2><div class=\"scroll\"><table><tr><th>time (UTC)</th><th>victim</th><th>cgroup</th><th>limit hit in</th><th>limit</th><th>usage</th><th>anon RSS</th><th>file RSS</th></tr>");
        for kill in &summary.kills {
            let memcg = kill.oom_memcg.as_ref();
            let _ = write!(
                out,
                r#"<tr><td>{}</td><td>{}[{}]</td><td class="path">{}</td><td class="path">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                rfc3339(cx.clock.wall_time(kill.monotonic_ns)),
                escape(&kill.victim.comm),
                kill.victim.pid,
                escape(
                    &kill
                        .victim
                        .cgroup
                        .as_deref()
                        .map_or_else(|| "?".to_owned(), |p| cx.label(p))
                ),
                escape(
                    &memcg
                        .and_then(|m| m.path.as_deref())
                        .map_or_else(|| "(global)".to_owned(), |p| cx.label(p))
                ),
                opt(memcg.and_then(|m| m.limit_bytes)),
                opt(memcg.and_then(|m| m.usage_bytes)),
                opt(kill.memory.anon_rss_bytes),
                opt(kill.memory.file_rss_bytes),
            );
        }
        out.push_str("</table></div>");
    }
}

/// The whole page.
#[must_use]
pub fn page(cx: &Context<'_>, source: &str) -> String {
    let h = &cx.trace.header;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>cgtrace report: {host}</title><style>{STYLE}</style></head><body><h1>cgtrace report: {host}</h1>"#,
        host = escape(&h.hostname)
    );
    let _ = write!(
        out,
        r#"<table class="meta"><tr><td>trace</td><td>{}</td></tr><tr><td>recorded by</td><td>{} on {} (Linux {})</td></tr><tr><td>start</td><td>{}</td></tr><tr><td>duration</td><td>{:.1} s, {} records, {} intervals</td></tr><tr><td>ending</td><td>{}</td></tr><tr><td>losses</td><td>{}</td></tr></table>"#,
        escape(source),
        escape(&h.writer),
        escape(&h.hostname),
        escape(&h.kernel_release),
        rfc3339(cx.started),
        cx.summary.seconds(),
        cx.trace.records,
        cx.summary.intervals.len(),
        escape(&ending_text(cx.trace.ending)),
        escape(&losses_text(cx.summary)),
    );
    if let Ending::CutShort { offset, .. } = cx.trace.ending {
        let _ = write!(
            out,
            r#"<p class="warn">This trace was cut short at byte {offset}: what happened after its last complete chunk was not recorded.</p>"#
        );
    }
    if cx.summary.stats.is_some_and(|s| s.lost() > 0) {
        out.push_str(r#"<p class="warn">The recorder lost events (see losses above): counts below are lower bounds.</p>"#);
    }
    charts(&mut out, cx);
    tables(&mut out, cx);
    out.push_str("</body></html>\n");
    out
}
