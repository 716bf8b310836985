//! The throttle view: one row per limited cgroup per interval, and one line
//! per span with `--spans`.

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write as _},
    time::Duration,
};

use serde_json::{Value, json};

use super::{
    cache::{duration, pressure_cell, pressure_json},
    format::{rfc3339, tail},
};
use crate::{
    cgroup::{cpu::Bandwidth, stat::CpuStat},
    event::{Event, ThrottleSpan},
    identity::Identity,
    model::{
        pressure::{PressureModel, Stalled},
        throttle::ThrottleModel,
    },
    session::{Context, End, Flow, Sink},
    system::Clock,
};

const NAME_WIDTH: usize = 30;

/// One limited cgroup over one interval.
#[derive(Clone, Debug)]
pub struct ThrottleRow {
    pub name: String,
    /// The cgroup's workload (`namespace/pod/container` when named).
    pub workload: Identity,
    pub bandwidth: Option<Bandwidth>,
    /// The kernel's counters over the interval (`cpu.stat` deltas).
    pub kernel: Option<CpuStat>,
    /// CPU time used in the interval, nanoseconds.
    pub usage_ns: Option<u64>,
    pub interval_ns: u64,
    /// cgtrace's spans of this group in the interval.
    pub spans: u64,
    pub throttled_periods: u64,
    pub total_ns: u64,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    /// CPU pressure in the interval, where the kernel has it.
    pub pressure: Option<Stalled>,
}

impl ThrottleRow {
    #[must_use]
    pub fn new(
        name: String,
        stats: crate::model::throttle::SpanStats,
        interval_ns: u64,
        bandwidth: Option<Bandwidth>,
        kernel: Option<CpuStat>,
        usage_ns: Option<u64>,
    ) -> Self {
        Self {
            workload: Identity::unnamed(&name),
            name,
            bandwidth,
            kernel,
            usage_ns,
            interval_ns,
            spans: stats.spans,
            throttled_periods: stats.periods,
            total_ns: stats.total_ns,
            p99_ns: stats.p99_ns,
            max_ns: stats.max_ns,
            pressure: None,
        }
    }

    /// Throttled periods over elapsed periods (kernel counts).
    #[must_use]
    pub fn ratio(&self) -> Option<f64> {
        let k = self.kernel?;
        #[expect(clippy::cast_precision_loss, reason = "period counts")]
        (k.nr_periods > 0).then(|| k.nr_throttled as f64 / k.nr_periods as f64)
    }

    /// Cores used on average over the interval.
    #[must_use]
    pub fn cores_used(&self) -> Option<f64> {
        #[expect(clippy::cast_precision_loss, reason = "nanosecond totals")]
        self.usage_ns
            .map(|ns| ns as f64 / self.interval_ns.max(1) as f64)
    }
}

#[must_use]
pub fn header() -> String {
    format!(
        "{:<w$} {:>7} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>6} {:>7}",
        "CGROUP",
        "PERIODS",
        "THROTTLED",
        "(KERNEL)",
        "RATIO",
        "TOTAL",
        "P99",
        "MAX",
        "QUOTA",
        "MCORES",
        "USED",
        "USED%",
        "CPU.PSI",
        w = NAME_WIDTH
    )
}

#[must_use]
pub fn line(row: &ThrottleRow) -> String {
    let dash = || "-".to_owned();
    let cores = row.bandwidth.and_then(|b| b.cores());
    format!(
        "{:<w$} {:>7} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>6} {:>7}",
        tail(&row.workload.label(&row.name), NAME_WIDTH),
        row.kernel.map_or_else(dash, |k| k.nr_periods.to_string()),
        row.throttled_periods,
        row.kernel.map_or_else(dash, |k| k.nr_throttled.to_string()),
        row.ratio()
            .map_or_else(dash, |r| format!("{:.0}%", r * 100.0)),
        duration(row.total_ns),
        row.p99_ns.map_or_else(dash, duration),
        row.max_ns.map_or_else(dash, duration),
        // No bandwidth known (a replayed trace) is not the same as no limit.
        row.bandwidth.map_or_else(dash, |_| cores
            .map_or_else(|| "none".to_owned(), |c| format!("{c:.2}"))),
        row.bandwidth
            .and_then(|b| b.millicores())
            .map_or_else(dash, |m| format!("{m}m")),
        row.cores_used().map_or_else(dash, |c| format!("{c:.2}")),
        row.cores_used()
            .zip(cores)
            .map_or_else(dash, |(used, limit)| format!(
                "{:.0}%",
                used / limit * 100.0
            )),
        pressure_cell(row.pressure.as_ref()),
        w = NAME_WIDTH
    )
}

#[must_use]
pub fn json(row: &ThrottleRow) -> Value {
    let mut value = json!({
        "cgroup": row.name,
        "workload": row.workload.to_json(),
        "quota_us": row.bandwidth.and_then(|b| b.quota_us),
        "period_us": row.bandwidth.map(|b| b.period_us),
        "quota_cores": row.bandwidth.and_then(|b| b.cores()),
        "quota_millicores": row.bandwidth.and_then(|b| b.millicores()),
        "usage_cores": row.cores_used(),
        "periods": row.kernel.map(|k| k.nr_periods),
        "throttled_periods": row.throttled_periods,
        "kernel_throttled_periods": row.kernel.map(|k| k.nr_throttled),
        "kernel_throttled_ns": row.kernel.map(|k| k.throttled_ns),
        "throttled_ratio": row.ratio(),
        "spans": row.spans,
        "throttled_ns": row.total_ns,
        "p99_ns": row.p99_ns,
        "max_ns": row.max_ns,
    });
    if let Some(pressure) = &row.pressure {
        value["cpu_pressure"] = pressure_json(pressure);
    }
    value
}

#[must_use]
pub fn span_line(span: &ThrottleSpan, clock: &Clock, workload: &Identity) -> String {
    let cgroup = span
        .cgroup
        .as_deref()
        .map_or_else(|| "?".to_owned(), |path| workload.label(path));
    format!(
        "span {} cpu {:>2} {:<w$} {:>9}  ran out by {}[{}]",
        super::format::short_time(clock.wall_time(span.start_ns)),
        span.cpu,
        tail(&cgroup, NAME_WIDTH),
        duration(span.duration_ns()),
        crate::text::printable(&span.comm),
        span.pid,
        w = NAME_WIDTH
    )
}

#[must_use]
pub fn span_json(span: &ThrottleSpan, clock: &Clock, workload: &Identity) -> Value {
    let mut value = serde_json::to_value(span).unwrap_or(Value::Null);
    value["workload"] = workload.to_json();
    value["type"] = json!("throttle_span");
    value["start"] = json!(rfc3339(clock.wall_time(span.start_ns)));
    value["duration_ns"] = json!(span.duration_ns());
    value
}

/// Prints one interval's rows, as text or a JSON object.
pub fn print_interval(
    out: &mut impl io::Write,
    rows: &[ThrottleRow],
    clock: &Clock,
    start_ns: u64,
    end_ns: u64,
    json: bool,
    header_printed: &mut bool,
) -> io::Result<()> {
    let time = rfc3339(clock.wall_time(end_ns));
    if json {
        let cgroups: Vec<_> = rows.iter().map(self::json).collect();
        #[expect(clippy::cast_precision_loss, reason = "interval seconds")]
        let seconds = end_ns.saturating_sub(start_ns) as f64 / 1e9;
        let record =
            json!({"type": "throttle", "time": time, "interval_s": seconds, "cgroups": cgroups});
        return writeln!(out, "{record}");
    }
    if !*header_printed {
        writeln!(out, "{}", header())?;
        *header_printed = true;
    }
    writeln!(out, "-- {time}")?;
    for row in rows {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

/// How a replay shows throttling.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOptions {
    /// Every span as a line, too.
    pub spans: bool,
    pub json: bool,
    /// The most throttled cgroups per interval.
    pub top: usize,
    pub interval: Duration,
}

/// A trace's throttling in `interval` buckets from the start of the
/// recording, shown as the live view would have: spans bucketed by their
/// end, with the kernel's counters and the CPU pressure from the samples
/// recorded in the same bucket (a trace without samples shows spans only).
///
/// A recorder writes spans as the ring buffer gives them, not quite in
/// order, so facts wait in a window sorted by time and a bucket is shown
/// once the trace has moved [`REORDER_WINDOW_NS`] (or two recorded
/// intervals, if longer) past its end. The window, not the trace, bounds
/// what is held. A fact older than a bucket already shown is counted as
/// late and shown in the next bucket.
pub struct ThrottleReplay {
    options: ReplayOptions,
    start_ns: u64,
    /// Spans, samples and pressure not shown yet, by the time that buckets
    /// them and their order in the trace.
    window: BTreeMap<(u64, u64), Event>,
    /// Facts added so far (ties keep the trace's order).
    added: u64,
    /// The latest fact's time.
    newest_ns: u64,
    /// The longest recorded interval seen.
    recorded_interval_ns: u64,
    /// Every bucket before this time has been shown.
    shown_until_ns: u64,
    /// Facts that came after their bucket was shown.
    late: u64,
    view: ThrottleView,
}

/// How far behind the newest fact a bucket waits for stragglers.
const REORDER_WINDOW_NS: u64 = 10_000_000_000;

impl ThrottleReplay {
    #[must_use]
    pub fn new(options: ReplayOptions, start_ns: u64) -> Self {
        Self {
            options,
            start_ns,
            window: BTreeMap::new(),
            added: 0,
            newest_ns: 0,
            recorded_interval_ns: 0,
            shown_until_ns: start_ns,
            late: 0,
            view: ThrottleView::new(options, None),
        }
    }

    fn interval_ns(&self) -> u64 {
        u64::try_from(self.options.interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Shows every bucket that ends at least the reorder window before
    /// `until_ns` (all of them with `u64::MAX`).
    fn show_until(&mut self, until_ns: u64, cx: &mut Context) -> io::Result<()> {
        let wait = REORDER_WINDOW_NS.max(self.recorded_interval_ns.saturating_mul(2));
        let interval_ns = self.interval_ns();
        let mut out = crate::text::stdout();
        while let Some((&(first, _), _)) = self.window.first_key_value() {
            let bucket = first.saturating_sub(self.start_ns) / interval_ns;
            let (bucket_start, bucket_end) = (
                self.start_ns + bucket * interval_ns,
                self.start_ns + (bucket + 1) * interval_ns,
            );
            if bucket_end.saturating_add(wait) > until_ns {
                break;
            }
            let mut spans = false;
            while let Some(entry) = self.window.first_entry() {
                if entry.key().0 >= bucket_end {
                    break;
                }
                match entry.remove() {
                    Event::ThrottleSpan(mut span) => {
                        span.cgroup = span.cgroup_ref.map(|c| cx.names.name(c));
                        spans |= cx
                            .selection
                            .keeps(span.cgroup.as_deref().unwrap_or_default());
                        self.view.span(&span, cx)?;
                    }
                    other => {
                        self.view.event(&other, cx).map_err(io::Error::other)?;
                    }
                }
            }
            self.shown_until_ns = bucket_end;
            // As before samples were recorded: a bucket shows when it has
            // spans, or samples of a limited group.
            let rows = self.view.rows(bucket_start, bucket_end, cx);
            if spans || !rows.is_empty() {
                print_interval(
                    &mut out,
                    &rows,
                    &cx.clock,
                    bucket_start,
                    bucket_end,
                    self.options.json,
                    &mut self.view.header_printed,
                )?;
            }
        }
        out.flush()
    }
}

impl Sink for ThrottleReplay {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        let at = match event {
            Event::ThrottleSpan(span) => span.end_ns,
            Event::Cpu(sample) => sample.at_ns,
            Event::Pressure(sample) => sample.at_ns,
            Event::Tick(tick) => {
                self.recorded_interval_ns = self
                    .recorded_interval_ns
                    .max(tick.end_ns.saturating_sub(tick.start_ns));
                return Ok(Flow::Continue);
            }
            _ => return Ok(Flow::Continue),
        };
        let at = if at < self.shown_until_ns {
            self.late += 1;
            self.shown_until_ns
        } else {
            at
        };
        self.window.insert((at, self.added), event.clone());
        self.added += 1;
        self.newest_ns = self.newest_ns.max(at);
        match self.show_until(self.newest_ns, cx) {
            // The reader went away: nothing more to show.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
            other => Ok(other.map(|()| Flow::Continue)?),
        }
    }

    fn finish(&mut self, cx: &mut Context, _end: &End) -> anyhow::Result<()> {
        match self.show_until(u64::MAX, cx) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
        if self.late > 0 {
            crate::note!(
                "cgtrace: {} spans or samples reached the trace more than {} s after their time and are shown in a later interval",
                self.late,
                REORDER_WINDOW_NS.max(self.recorded_interval_ns.saturating_mul(2)) / 1_000_000_000
            );
        }
        Ok(())
    }
}

/// The live throttle view: every span as it ends (with `--spans`), and each
/// interval the throttled and limited cgroups, cgtrace's spans beside the
/// kernel's counters.
pub struct ThrottleView {
    options: ReplayOptions,
    count: Option<u64>,
    model: ThrottleModel,
    pressure: PressureModel,
    /// CPU pressure of each cgroup in the open interval.
    cpu_pressure: HashMap<(u32, u64), Stalled>,
    header_printed: bool,
    reports: u64,
}

impl ThrottleView {
    #[must_use]
    pub fn new(options: ReplayOptions, count: Option<u64>) -> Self {
        Self {
            options,
            count,
            model: ThrottleModel::new(),
            pressure: PressureModel::new(),
            cpu_pressure: HashMap::new(),
            header_printed: false,
            reports: 0,
        }
    }

    fn span(&mut self, span: &ThrottleSpan, cx: &mut Context) -> io::Result<()> {
        let path = span.cgroup.clone().unwrap_or_default();
        if !cx.selection.keeps(&path) {
            return Ok(());
        }
        if self.options.spans {
            let workload = cx.selection.identify(&path);
            let mut out = crate::text::stdout();
            if self.options.json {
                writeln!(out, "{}", span_json(span, &cx.clock, &workload))?;
            } else {
                writeln!(out, "{}", span_line(span, &cx.clock, &workload))?;
            }
            out.flush()?;
        }
        self.model.span(span);
        Ok(())
    }

    /// The interval's rows: the throttled and limited cgroups the
    /// selection keeps, most throttled first.
    fn rows(&mut self, start_ns: u64, end_ns: u64, cx: &mut Context) -> Vec<ThrottleRow> {
        let interval_ns = end_ns.saturating_sub(start_ns);
        let mut rows: Vec<ThrottleRow> = Vec::new();
        for group in self.model.close() {
            let name = cx.names.name(group.cgroup);
            if !cx.selection.keeps(&name) {
                continue;
            }
            let mut row = ThrottleRow::new(
                name,
                group.spans,
                interval_ns,
                group.bandwidth,
                group.kernel,
                group.usage_ns,
            );
            row.workload = cx.selection.identify(&row.name);
            row.pressure = self
                .cpu_pressure
                .get(&(group.cgroup.hierarchy, group.cgroup.id))
                .copied();
            rows.push(row);
        }
        self.cpu_pressure.clear();
        rows.truncate(self.options.top);
        rows
    }

    fn interval(&mut self, start_ns: u64, end_ns: u64, cx: &mut Context) -> io::Result<()> {
        let rows = self.rows(start_ns, end_ns, cx);
        let mut out = crate::text::stdout();
        print_interval(
            &mut out,
            &rows,
            &cx.clock,
            start_ns,
            end_ns,
            self.options.json,
            &mut self.header_printed,
        )?;
        out.flush()
    }
}

impl Sink for ThrottleView {
    fn event(&mut self, event: &Event, cx: &mut Context) -> anyhow::Result<Flow> {
        let written = match event {
            Event::ThrottleSpan(span) => self.span(span, cx),
            Event::Cpu(sample) => {
                self.model.cpu(sample);
                Ok(())
            }
            Event::Pressure(sample) => {
                let (cgroup, facts) = self.pressure.sample(sample);
                if let Some(cpu) = facts.cpu {
                    self.cpu_pressure
                        .entry((cgroup.hierarchy, cgroup.id))
                        .or_default()
                        .add(&cpu);
                }
                Ok(())
            }
            Event::Tick(tick) => {
                let written = self.interval(tick.start_ns, tick.end_ns, cx);
                self.reports += 1;
                if written.is_ok() && self.count.is_some_and(|count| self.reports >= count) {
                    return Ok(Flow::Stop);
                }
                written
            }
            _ => Ok(()),
        };
        match written {
            // The reader went away: nothing more to show.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
            other => Ok(other.map(|()| Flow::Continue)?),
        }
    }

    fn finish(&mut self, _cx: &mut Context, end: &End) -> anyhow::Result<()> {
        if let Some(stats) = &end.health {
            match super::interval::report_stats(stats, self.options.json) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{ThrottleRow, header, json, line};
    use crate::cgroup::{cpu::Bandwidth, stat::CpuStat};

    #[test]
    fn renders_a_row() {
        let row = ThrottleRow {
            name: "/kubepods/pod1/app".into(),
            workload: crate::identity::Identity::unnamed("/kubepods/pod1/app"),
            bandwidth: Some(Bandwidth {
                quota_us: Some(20_000),
                period_us: 100_000,
            }),
            kernel: Some(CpuStat {
                nr_periods: 10,
                nr_throttled: 10,
                throttled_ns: 800_000_000,
                usage_ns: None,
            }),
            usage_ns: Some(200_000_000),
            interval_ns: 1_000_000_000,
            spans: 10,
            throttled_periods: 10,
            total_ns: 800_000_000,
            p99_ns: Some(80_000_000),
            max_ns: Some(81_000_000),
            pressure: None,
        };
        let text = line(&row);
        assert!(
            text.contains("100%") && text.contains("200m") && text.contains("0.20"),
            "{text}"
        );
        assert_eq!(
            text.find("200m").unwrap() + 4,
            header().find("MCORES").unwrap() + 6
        );
        let value = json(&row);
        assert_eq!(value["quota_millicores"], 200);
        assert_eq!(value["throttled_ratio"], 1.0);
    }
}
