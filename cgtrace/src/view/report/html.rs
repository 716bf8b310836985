//! `cgtrace report --html OUT`: one self-contained HTML page (inline CSS
//! and SVG, no scripts, nothing fetched) with the report's tables and its
//! time series: memory and page cache per cgroup, evictions, CPU
//! throttling, and a timeline of throttle spans and OOM kills.

use std::{
    collections::HashMap,
    fmt::{self, Write as _},
    io,
};

use super::{
    series::{ChartPlan, ChartSeries},
    summary::{CgroupSummary, Summary},
    svg::{self, Lane, Marker, PALETTE, Series, Unit, escape},
    text::{
        CPU_COLUMNS, Context, MEMORY_COLUMNS, cpu_cells, cpu_rows, ending_text, losses_text,
        memory_cells, memory_rows,
    },
};
use crate::{
    trace::file::Ending,
    view::format::{bytes, rfc3339},
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

/// The `SERIES_PER_CHART` cgroups ranking highest by `key`; the root
/// cgroup (the whole machine) is left out.
fn ranked(cx: &Context<'_>, key: impl Fn(&CgroupSummary) -> u64) -> Vec<String> {
    let mut ranked: Vec<(&String, u64)> = cx
        .summary
        .cgroups
        .iter()
        .map(|(name, c)| (name, key(c)))
        .filter(|(name, key)| name.as_str() != "/" && *key > 0)
        .collect();
    ranked.sort_by_key(|(name, key)| (std::cmp::Reverse(*key), (*name).clone()));
    ranked
        .into_iter()
        .take(SERIES_PER_CHART)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The timeline's lanes: cgroups throttled or OOM-killed, the most (by
/// throttled time, a kill counting a second) first.
fn lanes(cx: &Context<'_>) -> Vec<String> {
    let mut lanes: Vec<(u64, String, &String)> = cx
        .summary
        .cgroups
        .iter()
        .filter(|(_, c)| c.throttle.spans > 0 || c.oom_kills > 0)
        .map(|(name, c)| {
            (
                c.throttled_ns() + c.oom_kills * 1_000_000_000,
                cx.label(name),
                name,
            )
        })
        .collect();
    lanes.sort_by_key(|(weight, label, _)| (std::cmp::Reverse(*weight), label.clone()));
    lanes
        .into_iter()
        .take(TIMELINE_LANES)
        .map(|(_, _, name)| name.clone())
        .collect()
}

/// What the charts draw, from the summary: the second pass gathers it.
#[must_use]
pub fn plan(cx: &Context<'_>) -> ChartPlan {
    let summary = cx.summary;
    let x_max = summary.seconds();
    ChartPlan {
        memory: ranked(cx, |c| c.peak_usage().unwrap_or(0)),
        page_cache: ranked(cx, |c| c.sampled_page_cache_max.unwrap_or(0)),
        evicted: ranked(cx, CgroupSummary::evicted_total),
        throttled: ranked(cx, CgroupSummary::throttled_ns),
        pressure: ranked(cx, |c| {
            c.pressure.and_then(|p| p.memory).map_or(0, |m| m.some_us)
        }),
        lanes: lanes(cx),
        start_ns: summary.start_ns,
        x_max,
        has_intervals: summary.intervals > 0,
        throttle_bin_s: svg::tick_step(x_max, 40.0).max(0.1),
    }
}

/// The planned cgroups of one chart as coloured series of `points`.
fn top_series(
    cx: &Context<'_>,
    colours: &mut Colours,
    paths: &[String],
    points: impl Fn(&str) -> Vec<(f64, f64)>,
) -> Vec<Series> {
    paths
        .iter()
        .map(|name| Series {
            name: cx.label(name),
            colour: colours.of(name),
            points: points(name),
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

fn charts(out: &mut String, cx: &Context<'_>, series: &ChartSeries) {
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
    let chart = Chart {
        cx,
        series,
        markers: &markers,
        x_max: series.plan().x_max,
    };
    memory_charts(out, &chart, &mut colours);
    eviction_chart(out, &chart, &mut colours);
    throttle_chart(out, &chart, &mut colours);
    pressure_chart(out, &chart, &mut colours);
    timeline(out, &chart);
}

/// What every chart draws from.
struct Chart<'a> {
    cx: &'a Context<'a>,
    series: &'a ChartSeries,
    markers: &'a [Marker],
    x_max: f64,
}

impl Chart<'_> {
    /// A line chart section of `paths`' series, or `empty` without any.
    #[expect(clippy::too_many_arguments, reason = "one chart's words and data")]
    fn line_section(
        &self,
        out: &mut String,
        colours: &mut Colours,
        (title, label, unit): (&str, &str, Unit),
        paths: &[String],
        points: impl Fn(&str) -> Vec<(f64, f64)>,
        note: &str,
        empty: &str,
    ) {
        let lines = top_series(self.cx, colours, paths, points);
        chart_section(
            out,
            title,
            if lines.is_empty() { empty } else { note },
            (!lines.is_empty()).then(|| {
                (
                    svg::line_chart(label, unit, &lines, self.markers, self.x_max),
                    &lines[..],
                )
            }),
        );
    }
}

/// Memory usage and page cache per cgroup over time.
fn memory_charts(out: &mut String, chart: &Chart<'_>, colours: &mut Colours) {
    let (plan, series) = (chart.series.plan(), chart.series);
    let root_note =
        "The root cgroup (the whole machine) is left out of the plots; the tables list it.";
    chart.line_section(
        out,
        colours,
        ("Memory usage per cgroup", "memory usage", Unit::Bytes),
        &plan.memory,
        |path| series.usage(path),
        root_note,
        "No memory samples in this trace.",
    );
    chart.line_section(
        out,
        colours,
        ("Page cache per cgroup", "page cache", Unit::Bytes),
        &plan.page_cache,
        |path| series.page_cache(path),
        root_note,
        "No page-cache samples in this trace.",
    );
}

/// Page cache evicted per second, per victim cgroup.
fn eviction_chart(out: &mut String, chart: &Chart<'_>, colours: &mut Colours) {
    let series = chart.series;
    chart.line_section(
        out,
        colours,
        (
            "Page cache evicted per cgroup (victim)",
            "evicted",
            Unit::BytesPerSecond,
        ),
        &series.plan().evicted,
        |path| series.evicted(path),
        "Bytes of each cgroup's page cache evicted per second, whoever reclaimed it; the tables say by whom.",
        "No page cache was evicted while recording.",
    );
}

/// Throttled time per second, per cgroup.
fn throttle_chart(out: &mut String, chart: &Chart<'_>, colours: &mut Colours) {
    let series = chart.series;
    chart.line_section(
        out,
        colours,
        (
            "CPU throttling per cgroup",
            "throttled",
            Unit::MillisPerSecond,
        ),
        &series.plan().throttled,
        |path| series.throttled(path),
        "Milliseconds per second the cgroup's run queues spent throttled (summed over CPUs, so it can exceed 1000 ms/s).",
        "No CFS throttling while recording.",
    );
}

/// Memory pressure per cgroup: the time some task stalled on memory,
/// in milliseconds per second, between consecutive samples. Drawn only
/// where the trace has pressure samples (cgroup v2).
fn pressure_chart(out: &mut String, chart: &Chart<'_>, colours: &mut Colours) {
    if chart
        .cx
        .summary
        .cgroups
        .values()
        .all(|c| c.pressure.and_then(|p| p.memory).is_none())
    {
        return;
    }
    let series = chart.series;
    let note = "Milliseconds per second in which some task of the cgroup stalled on memory (reclaim, refaults, swap-in): memory.pressure, some.";
    chart.line_section(
        out,
        colours,
        (
            "Memory pressure per cgroup",
            "memory stalled",
            Unit::MillisPerSecond,
        ),
        &series.plan().pressure,
        |path| series.memory_stalled(path),
        note,
        note,
    );
}

/// Throttle spans and OOM kills, one lane per cgroup.
fn timeline(out: &mut String, chart: &Chart<'_>) {
    let (cx, series) = (chart.cx, chart.series);
    let summary = cx.summary;
    let mut lanes: Vec<Lane> = series
        .plan()
        .lanes
        .iter()
        .map(|name| Lane {
            name: cx.label(name),
            spans: series.lane(name),
            instants: Vec::new(),
        })
        .collect();
    for kill in &summary.kills {
        let name = cx.label(kill.victim.cgroup.as_deref().unwrap_or_default());
        if let Some(lane) = lanes.iter_mut().find(|l| l.name == name) {
            lane.instants.push((
                seconds(summary, kill.monotonic_ns),
                format!("OOM kill of {}[{}]", kill.victim.comm, kill.victim.pid),
            ));
        }
    }
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
        out.push_str(&svg::timeline(&lanes, chart.x_max));
    }
}

/// An HTML table: a name column, then `columns`.
fn table<'a>(
    out: &mut impl fmt::Write,
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
    let _ = out.write_str("</tr>");
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
        let _ = out.write_str("</tr>");
    }
    let _ = out.write_str("</table></div>");
}

fn tables(out: &mut impl fmt::Write, cx: &Context<'_>) {
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
        let _ = out.write_str("<h2>OOM kills</h2><div class=\"scroll\"><table><tr><th>time (UTC)</th><th>victim</th><th>cgroup</th><th>limit hit in</th><th>limit</th><th>usage</th><th>anon RSS</th><th>file RSS</th></tr>");
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
        let _ = out.write_str("</table></div>");
    }
}

/// Writes the whole page to `sink`: its head and charts (bounded by the
/// plan), then its tables row by row, so a report of many cgroups is never
/// held whole.
pub fn write_page(
    sink: &mut dyn io::Write,
    cx: &Context<'_>,
    series: &ChartSeries,
    source: &str,
) -> io::Result<()> {
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
        cx.summary.intervals,
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
    charts(&mut out, cx, series);
    sink.write_all(out.as_bytes())?;
    let mut out = IoText::new(sink);
    tables(&mut out, cx);
    let _ = out.write_str("</body></html>\n");
    out.finish()
}

/// `fmt::Write` over an `io::Write`, keeping the first error for the end.
struct IoText<'a> {
    sink: &'a mut dyn io::Write,
    error: Option<io::Error>,
}

impl<'a> IoText<'a> {
    fn new(sink: &'a mut dyn io::Write) -> Self {
        Self { sink, error: None }
    }

    fn finish(self) -> io::Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

impl fmt::Write for IoText<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.error.is_some() {
            return Err(fmt::Error);
        }
        self.sink.write_all(text.as_bytes()).map_err(|error| {
            self.error = Some(error);
            fmt::Error
        })
    }
}
