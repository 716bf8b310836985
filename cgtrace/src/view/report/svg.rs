//! Inline SVG plots for the HTML report: a line chart with time on the x
//! axis, and a swimlane timeline of spans and instants. No scripts and no
//! external resources, so the report is one file that opens anywhere.

use std::fmt::Write as _;

use crate::view::format::bytes;

/// Colours of the series, in order (the Tableau 10 palette without its red,
/// which is kept for OOM kills).
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
];
/// OOM kills, wherever they are drawn.
pub const OOM_COLOUR: &str = "#d62728";
/// Throttle spans on the timeline.
pub const THROTTLE_COLOUR: &str = "#e6a100";

const WIDTH: f64 = 960.0;
const CHART_HEIGHT: f64 = 240.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 30.0;

/// How a chart's values read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    BytesPerSecond,
    /// Milliseconds per second: a share of one CPU's time.
    MillisPerSecond,
    /// A plain number of things (series, cgroups).
    Count,
}

impl Unit {
    /// A tick step for values up to `top`: binary multiples for bytes, so
    /// ticks read 256M, 512M rather than 477M, 954M.
    fn step(self, top: f64) -> f64 {
        match self {
            Self::Bytes | Self::BytesPerSecond => {
                let mut scale = 1.0;
                while top / scale >= 1024.0 {
                    scale *= 1024.0;
                }
                let top = top / scale;
                // 1, 2 or 5 tenths below 10 units; powers of two above.
                let step = if top < 10.0 {
                    tick_step(top, 4.0)
                } else {
                    2f64.powf((top / 4.0).log2().floor())
                };
                step * scale
            }
            Self::MillisPerSecond | Self::Count => tick_step(top, 4.0),
        }
    }

    fn label(self, value: f64) -> String {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "non-negative axis values"
        )]
        let whole = value.max(0.0).round() as u64;
        match self {
            Self::Bytes => bytes(whole),
            Self::BytesPerSecond => format!("{}/s", bytes(whole)),
            Self::MillisPerSecond => format!("{whole} ms/s"),
            Self::Count => whole.to_string(),
        }
    }
}

/// One line of a chart: `(seconds since start, value)` points.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A vertical marker (an OOM kill) at a time, with its tooltip.
#[derive(Clone, Debug)]
pub struct Marker {
    pub seconds: f64,
    pub label: String,
}

/// Escapes text for HTML and SVG.
#[must_use]
pub fn escape(text: &str) -> String {
    // Control characters are not allowed in HTML at all: shown as text.
    let text = crate::text::printable(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about
/// `ticks` ticks over `range`.
#[must_use]
pub fn tick_step(range: f64, ticks: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let rough = range / ticks;
    let power = 10f64.powf(rough.log10().floor());
    let fraction = rough / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// Maps data to pixels inside the plot area.
struct Axes {
    /// Where the plot area starts: after the value labels or lane names.
    left: f64,
    x_max: f64,
    y_max: f64,
    height: f64,
}

impl Axes {
    fn x(&self, seconds: f64) -> f64 {
        self.left + (seconds / self.x_max).clamp(0.0, 1.0) * (WIDTH - self.left - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        let plot = self.height - TOP - BOTTOM;
        TOP + plot - (value / self.y_max).clamp(0.0, 1.0) * plot
    }

    /// The time axis: ticks, labels and vertical grid lines.
    fn time_axis(&self, out: &mut String) {
        let step = tick_step(self.x_max, 8.0);
        let mut t = 0.0;
        while t <= self.x_max * 1.0001 {
            let x = self.x(t);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}s</text>"##,
                self.height - BOTTOM,
                self.height - BOTTOM + 16.0,
                trim_float(t)
            );
            t += step;
        }
        let _ = write!(
            out,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="#888"/>"##,
            self.left,
            self.height - BOTTOM,
            WIDTH - RIGHT
        );
    }
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A line chart of `series` over `[0, x_max]` seconds, with `markers`.
#[must_use]
pub fn line_chart(
    title: &str,
    unit: Unit,
    series: &[Series],
    markers: &[Marker],
    x_max: f64,
) -> String {
    let top_value = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let step = unit.step(top_value.max(1.0));
    let axes = Axes {
        left: LEFT,
        x_max: x_max.max(0.001),
        y_max: (top_value / step).ceil().max(1.0) * step,
        height: CHART_HEIGHT,
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{CHART_HEIGHT}" viewBox="0 0 {WIDTH} {CHART_HEIGHT}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let mut value = 0.0;
    while value <= axes.y_max * 1.0001 {
        let y = axes.y(value);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&unit.label(value))
        );
        value += step;
    }
    axes.time_axis(&mut out);
    for line in series {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", axes.x(*t), axes.y(*v)))
            .collect();
        if points.len() == 1 {
            let (t, v) = line.points[0];
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}</title></circle>"#,
                axes.x(t),
                axes.y(v),
                line.colour,
                escape(&line.name)
            );
        } else if !points.is_empty() {
            let _ = write!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"><title>{}</title></polyline>"#,
                points.join(" "),
                line.colour,
                escape(&line.name)
            );
        }
    }
    for marker in markers {
        let x = axes.x(marker.seconds);
        let _ = write!(
            out,
            r#"<g><title>{}</title><line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{OOM_COLOUR}" stroke-width="2" stroke-dasharray="5,3"/><text x="{:.1}" y="{:.1}" class="marker" fill="{OOM_COLOUR}">OOM</text></g>"#,
            escape(&marker.label),
            CHART_HEIGHT - BOTTOM,
            x + 3.0,
            TOP + 10.0
        );
    }
    out.push_str("</svg>");
    out
}

/// One row of a timeline.
#[derive(Clone, Debug, Default)]
pub struct Lane {
    pub name: String,
    /// `(start, end, tooltip)` in seconds since start.
    pub spans: Vec<(f64, f64, String)>,
    /// `(time, tooltip)` instants (OOM kills).
    pub instants: Vec<(f64, String)>,
}

const LANE_HEIGHT: f64 = 24.0;
/// Room for the lane names, left of the timeline.
const LANE_LABEL_WIDTH: f64 = 260.0;
/// Characters of a lane name that fit in it.
const LANE_LABEL_CHARS: usize = 38;

/// A swimlane timeline: throttle spans as bars, OOM kills as red marks.
#[must_use]
pub fn timeline(lanes: &[Lane], x_max: f64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a handful of lanes")]
    let height = TOP + BOTTOM + LANE_HEIGHT * lanes.len() as f64;
    let axes = Axes {
        left: LANE_LABEL_WIDTH,
        x_max: x_max.max(0.001),
        y_max: 1.0,
        height,
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="events timeline">"#
    );
    axes.time_axis(&mut out);
    for (index, lane) in lanes.iter().enumerate() {
        #[expect(clippy::cast_precision_loss, reason = "a handful of lanes")]
        let top = TOP + LANE_HEIGHT * index as f64;
        let _ = write!(
            out,
            r#"<rect x="{LANE_LABEL_WIDTH}" y="{top:.1}" width="{:.1}" height="{LANE_HEIGHT}" fill="{}"/><text x="4" y="{:.1}" class="lane"><title>{}</title>{}</text>"#,
            WIDTH - LANE_LABEL_WIDTH - RIGHT,
            if index % 2 == 0 { "#f6f6f6" } else { "#ffffff" },
            top + 16.0,
            escape(&lane.name),
            escape(&crate::view::format::tail(&lane.name, LANE_LABEL_CHARS))
        );
        for (start, end, tip) in &lane.spans {
            let x = axes.x(*start);
            let width = (axes.x(*end) - x).max(1.5);
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{THROTTLE_COLOUR}"><title>{}</title></rect>"#,
                top + 5.0,
                LANE_HEIGHT - 10.0,
                escape(tip)
            );
        }
        for (time, tip) in &lane.instants {
            let x = axes.x(*time);
            let _ = write!(
                out,
                r#"<path d="M{x:.1},{:.1} l6,10 l-6,10 l-6,-10 z" fill="{OOM_COLOUR}"><title>{}</title></path>"#,
                top + 2.0,
                escape(tip)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::{Marker, Series, Unit, escape, line_chart, tick_step, timeline};

    #[test]
    fn ticks_are_nice() {
        assert!((tick_step(10.0, 5.0) - 2.0).abs() < 1e-9);
        assert!((tick_step(7.3, 8.0) - 1.0).abs() < 1e-9);
        assert!((tick_step(1e9, 4.0) - 5e8).abs() < 1e-3);
        assert!((tick_step(0.0, 4.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn byte_ticks_are_binary() {
        assert!(
            (Unit::Bytes.step(1.86 * 1024.0 * 1024.0 * 1024.0) - 512.0 * 1024.0 * 1024.0).abs()
                < 1.0
        );
        assert!((Unit::Bytes.step(128.0 * 1024.0 * 1024.0) - 32.0 * 1024.0 * 1024.0).abs() < 1.0);
        assert!((Unit::Bytes.step(100.0) - 16.0).abs() < 1e-9);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
    }

    #[test]
    fn charts_draw_their_data_inside_the_plot() {
        let chart = line_chart(
            "memory",
            Unit::Bytes,
            &[Series {
                name: "/a<b>".into(),
                colour: "#1f77b4",
                points: vec![(0.0, 0.0), (1.0, 100.0), (2.0, 50.0)],
            }],
            &[Marker {
                seconds: 1.5,
                label: "OOM kill".into(),
            }],
            2.0,
        );
        assert!(chart.starts_with("<svg") && chart.ends_with("</svg>"));
        assert!(chart.contains("<polyline points=\"80.0,"));
        assert!(chart.contains("/a&lt;b&gt;"));
        assert!(chart.contains(">OOM</text>"));
        let lanes = timeline(
            &[super::Lane {
                name: "/a".into(),
                spans: vec![(0.1, 0.2, "throttled".into())],
                instants: vec![(0.5, "kill".into())],
            }],
            1.0,
        );
        assert!(lanes.contains("<title>throttled</title>"));
        assert!(lanes.contains("<title>kill</title>"));
    }
}
