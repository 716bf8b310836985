//! The throttle view: one row per limited cgroup per interval, and one line
//! per span with `--spans`.

use serde_json::{Value, json};

use super::{
    cache::duration,
    format::{rfc3339, tail},
};
use crate::{
    cgroup::{cpu::Bandwidth, stat::CpuStat},
    event::ThrottleSpan,
    identity::Identity,
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
        "{:<w$} {:>7} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>6}",
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
        w = NAME_WIDTH
    )
}

#[must_use]
pub fn line(row: &ThrottleRow) -> String {
    let dash = || "-".to_owned();
    let cores = row.bandwidth.and_then(|b| b.cores());
    format!(
        "{:<w$} {:>7} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>6}",
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
        w = NAME_WIDTH
    )
}

#[must_use]
pub fn json(row: &ThrottleRow) -> Value {
    json!({
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
    })
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
        span.comm,
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
