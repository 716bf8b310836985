//! Reports and replays of one real recorded run, checked against the
//! kernel's own counters, and the HTML report rendered in a real browser.
//!
//! The run: a 160 MiB file read twice
//! under a 64 MiB limit (page cache added and evicted, reclaim stalls,
//! refaults), a second of spinning under half a core (throttling), then a
//! memory hog OOM-killed; at the end the workload prints its own cgroup's
//! `memory.stat` and limit-hit count, which the trace must agree with.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use cgtrace::cgroup::{Version, stat};
use cgtrace_tests::{
    Hierarchies, TracePath, cgtrace_bin, json_lines, kernel_before, report_json, require_root,
    row_for, trace_path, uncached_file,
};

/// The recorded run, and what the workload printed about its own cgroup.
struct Recorded {
    trace: TracePath,
    /// The command's memory cgroup, as the trace names it.
    group: String,
    /// Its `memory.stat` at the end of the run.
    stat: HashMap<String, u64>,
    /// Times its usage hit the limit (v1 `memory.failcnt`, v2 `max` event).
    limit_hits: u64,
    version: Version,
}

fn record_run() -> Recorded {
    let hierarchies = Hierarchies::discover().expect("cgroup mounts");
    let memory = hierarchies
        .with_controller("memory")
        .expect("a memory hierarchy")
        .clone();
    // The workload finds its own memory cgroup in /proc/self/cgroup.
    let own_cgroup = match memory.version {
        Version::V1 => r"awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup",
        Version::V2 => r#"awk -F: '$1 == "0" {print $3}' /proc/self/cgroup"#,
    };
    let limit_hits = match memory.version {
        Version::V1 => r#"echo "limit_hits $(cat "$dir/memory.failcnt")""#,
        Version::V2 => r#"echo "limit_hits $(awk '$1 == "max" {print $2}' "$dir/memory.events")""#,
    };
    // The kernel's own high-water mark of the group's usage, and on v2 the
    // time its tasks stalled on memory.
    let watermark = match memory.version {
        Version::V1 => r#"echo "watermark $(cat "$dir/memory.max_usage_in_bytes")""#,
        Version::V2 => {
            r#"echo "watermark $(cat "$dir/memory.peak")"; awk '$1 == "some" {sub("total=", "", $5); print "pressure_some_us", $5}' "$dir/memory.pressure""#
        }
    };
    let file = uncached_file("report", 160);
    let bin = cgtrace_bin();
    let script = format!(
        "cat {file} > /dev/null; cat {file} > /dev/null; {bin} __spin 1 1; {bin} __memhog 128; \
         dir={mount}$({own_cgroup}); cat \"$dir/memory.stat\"; {limit_hits}; {watermark}",
        file = file.path.display(),
        bin = bin.display(),
        mount = memory.mount.display(),
    );
    let trace = trace_path("report");
    let output = Command::new(&bin)
        .args(["record", "--interval", "200ms", "-o"])
        .arg(&trace)
        .args([
            "--memory-limit",
            "64M",
            "--cpu-limit",
            "0.5",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cgtrace record");
    assert!(output.status.success(), "record failed: {}", output.status);
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    let stat = stat::parse(&printed);
    let limit_hits = stat["limit_hits"];
    let report = report_json(&trace);
    let group = report["oom_kills"][0]["victim"]["cgroup"]
        .as_str()
        .unwrap_or_else(|| panic!("no OOM kill recorded: {report}"))
        .to_owned();
    Recorded {
        trace,
        group,
        stat,
        limit_hits,
        version: memory.version,
    }
}

/// The replayed rows of `group` in a view's `--input --json` output.
fn replayed_rows<'a>(
    lines: &'a [serde_json::Value],
    key: &str,
    group: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    lines
        .iter()
        .filter_map(move |line| line[key].as_array())
        .flatten()
        .filter(move |row| row["cgroup"] == group)
}

/// One recording, then its report, its replays and its HTML page.
#[test]
fn a_recorded_run_reports_replays_and_renders() {
    if !require_root("a_recorded_run_reports_replays_and_renders") {
        return;
    }
    let run = record_run();
    report_and_replays_agree_with_the_kernel(&run);
    html_report_draws_its_plots_in_a_real_browser(&run);
}

fn report_and_replays_agree_with_the_kernel(run: &Recorded) {
    let report = report_json(&run.trace);
    assert_eq!(report["ending"]["complete"], true);
    assert_eq!(report["losses"]["ring_buffer_drops"], 0, "{report}");
    let row = row_for(&report, &run.group);
    let page_cache = stat::page_cache_bytes(&run.stat, run.version).expect("page cache figure");

    // The cache view, replayed: the same flows as the report, and the page
    // cache it shows last is the kernel's own figure.
    let cache = json_lines(&[
        "cache".as_ref(),
        "--json".as_ref(),
        "--input".as_ref(),
        run.trace.as_os_str(),
    ]);
    let rows: Vec<_> = replayed_rows(&cache, "cgroups", &run.group).collect();
    assert!(!rows.is_empty(), "no replayed cache rows for {}", run.group);
    let sum = |key: &str, reason: Option<&str>| -> u64 {
        rows.iter()
            .map(|r| {
                let value = reason.map_or(&r[key], |reason| &r[key][reason]);
                value.as_u64().unwrap_or(0)
            })
            .sum()
    };
    // Two reads of 160M under a 64M limit: the second adds nearly all of it
    // again. Part of the file may still be cached from its writing (7.3
    // added 287 MiB in all): the exact check is the replay's, below.
    assert!(
        sum("added_bytes", None) > 256 << 20,
        "added {}: {rows:?}",
        sum("added_bytes", None)
    );
    assert_eq!(
        sum("added_bytes", None),
        row["added_bytes"].as_u64().unwrap()
    );
    let own_limit = sum("evicted_bytes", Some("own_limit"));
    assert!(own_limit > 200 << 20, "evicted under its own 64M limit");
    assert_eq!(
        own_limit,
        row["evicted_bytes"]["own_limit"].as_u64().unwrap()
    );
    let last_owned = rows.last().unwrap()["owned_bytes"].as_u64().unwrap();
    // v1 counters are exact since 5.13. v2 folds per-CPU stat deltas into
    // memory.stat lazily (before 6.8, reads may skip the flush), and before
    // 5.13 (no rstat) both versions leave each CPU's pending delta out of
    // the file, so it can lag by up to a charge batch (64 pages) per CPU.
    let batched = run.version == Version::V2 || kernel_before(5, 13);
    let slack = if batched {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        64 * 4096 * cpus as u64
    } else {
        0
    };
    assert!(
        last_owned.abs_diff(page_cache) <= slack,
        "replayed page cache {last_owned} against memory.stat {page_cache} at the end of the run (slack {slack})"
    );

    // The reclaim view, replayed: the same stalls as the report.
    let reclaim = json_lines(&[
        "reclaim".as_ref(),
        "--json".as_ref(),
        "--input".as_ref(),
        run.trace.as_os_str(),
    ]);
    let stalls: u64 = replayed_rows(&reclaim, "stalls", &run.group)
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    let reported_stalls: u64 = row["stalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert!(stalls > 0, "reclaim under the limit stalls the reader");
    assert_eq!(stalls, reported_stalls);

    // Counters only the kernel keeps, recorded each interval.
    assert_eq!(
        row["memory_events"]["max"].as_u64(),
        Some(run.limit_hits),
        "limit hits against the kernel's count"
    );
    if let Some(refaults) = run.stat.get("workingset_refault_file") {
        assert_eq!(
            row["charges"]["refault_file"]["charged_pages"].as_u64(),
            Some(*refaults),
            "file refaults against memory.stat"
        );
    }
    assert_eq!(row["oom_kills"], 1);
    assert!(row["throttled_periods"].as_u64().unwrap() >= 5, "{row}");
    assert_eq!(row["limit_bytes"], 64 << 20);
    // The kernel's watermark, not a sample: an OOM victim may charge past
    // the limit while it exits (the forced charge in try_charge), which a
    // sample may or may not catch. The recorder reads it after the script
    // printed it, when nothing in the group can raise it any more.
    assert_eq!(
        row["peak_usage_bytes"].as_u64(),
        run.stat.get("watermark").copied(),
        "peak usage against the kernel's watermark"
    );
    // Pressure stall information lives in cgroup v2.
    if let Some(stalled) = run.stat.get("pressure_some_us") {
        assert_eq!(
            row["pressure"]["memory"]["some_stalled_us"].as_u64(),
            Some(*stalled),
            "memory stall time against memory.pressure: {row}"
        );
    }
}

/// The y coordinates of the polyline drawn in `colour` in an SVG chart.
fn polyline_heights(svg: &str, colour: &str) -> Vec<f64> {
    let stroke = format!("stroke=\"{colour}\"");
    let line = svg
        .split("<polyline ")
        .skip(1)
        .find(|element| element[..element.find('>').unwrap_or(element.len())].contains(&stroke))
        .unwrap_or_else(|| panic!("no {colour} line in the chart"));
    let points = line
        .split_once("points=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("", |(points, _)| points);
    points
        .split_whitespace()
        .filter_map(|point| point.split_once(',')?.1.parse().ok())
        .collect()
}

/// An RGB colour from `#rrggbb`.
fn rgb(hex: &str) -> [u8; 3] {
    let channel = |at: usize| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex colour");
    [channel(1), channel(3), channel(5)]
}

/// Bands of screenshot rows holding at least `min_pixels` pixels of
/// `colour` each, rows closer than 12 px counting as one band: one band per
/// chart that drew something in that colour.
fn bands(image: &Screenshot, colour: [u8; 3], min_pixels: usize) -> usize {
    let mut bands = 0;
    let (mut in_band, mut band_pixels, mut gap) = (false, 0, 0);
    for y in 0..image.height {
        let row = (0..image.width)
            .filter(|x| {
                let pixel = image.pixel(*x, y);
                pixel
                    .iter()
                    .zip(colour)
                    .all(|(have, want)| have.abs_diff(want) <= 24)
            })
            .count();
        if row > 0 {
            in_band = true;
            band_pixels += row;
            gap = 0;
        } else if in_band {
            gap += 1;
            if gap > 12 {
                bands += usize::from(band_pixels >= min_pixels);
                (in_band, band_pixels) = (false, 0);
            }
        }
    }
    bands + usize::from(in_band && band_pixels >= min_pixels)
}

/// A decoded RGB(A) screenshot.
struct Screenshot {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

impl Screenshot {
    fn read(path: &Path) -> Self {
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(path).expect("open screenshot"),
        ));
        let mut reader = decoder.read_info().expect("PNG header");
        let mut data = vec![0; reader.output_buffer_size().expect("PNG size")];
        let info = reader.next_frame(&mut data).expect("PNG frame");
        data.truncate(info.buffer_size());
        Self {
            width: info.width as usize,
            height: info.height as usize,
            channels: info.color_type.samples(),
            data,
        }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let at = (y * self.width + x) * self.channels;
        [self.data[at], self.data[at + 1], self.data[at + 2]]
    }
}

/// Removes a file on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn html_report_draws_its_plots_in_a_real_browser(run: &Recorded) {
    let html = Scratch(run.trace.with_extension("html"));
    let png = Scratch(run.trace.with_extension("png"));
    let status = Command::new(cgtrace_bin())
        .arg("report")
        .arg(&*run.trace)
        .arg("--html")
        .arg(&html.0)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let page = std::fs::read_to_string(&html.0).unwrap();
    // Self-contained: no scripts, nothing fetched; the only URL is the SVG
    // namespace.
    assert!(!page.contains("<script") && !page.contains(" src=") && !page.contains(" href="));
    assert_eq!(
        page.matches("http").count(),
        page.matches("http://www.w3.org/2000/svg").count()
    );
    // The colour the legend gives the workload's cgroup.
    let legend = format!("\"></i>{}</span>", run.group);
    let at = page
        .find(&legend)
        .unwrap_or_else(|| panic!("{} is not in a legend", run.group));
    let colour = &page[at - 7..at];
    // The eviction chart plots the workload's evictions: its line rises
    // off the baseline (the reads evicted hundreds of MiB under 64M).
    let chart = &page[page
        .find("Page cache evicted per cgroup")
        .expect("an eviction chart")..];
    let chart = &chart[..chart.find("</svg>").expect("the chart's end")];
    let heights = polyline_heights(chart, colour);
    assert!(
        heights.iter().any(|y| (y - heights[0]).abs() > 1.0),
        "the workload's evictions draw as a flat line: {heights:?}"
    );

    let Some(browser) = which("chromium") else {
        // The kernel-matrix guests (`cargo xtask vm-test`) carry no browser;
        // the page is rendered on the host run.
        assert!(
            std::env::var_os("CGTRACE_SKIP_BROWSER").is_some(),
            "chromium is not installed: `cargo xtask test` installs it (apt-get install chromium)"
        );
        eprintln!("skipped the HTML screenshot: no browser in this environment");
        return;
    };
    let output = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,3600",
        ])
        .arg(format!("--screenshot={}", png.0.display()))
        .arg(format!("file://{}", html.0.display()))
        .output()
        .expect("run chromium");
    assert!(
        output.status.success() && png.0.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shot = Screenshot::read(&png.0);
    // Memory, page cache, evictions and throttling each draw the workload's
    // line (legend swatches alone are 56 pixels, under the threshold).
    let drawn = bands(&shot, rgb(colour), 150);
    assert!(
        drawn >= 4,
        "the workload's line ({colour}) is drawn in {drawn} charts, not 4"
    );
    // The OOM kill: a dashed marker in each chart and a mark on the timeline.
    let oom = bands(&shot, rgb(cgtrace::view::report::svg::OOM_COLOUR), 60);
    assert!(oom >= 5, "the OOM kill is marked {oom} times, not 5");
    // Throttle spans on the timeline.
    let spans = bands(&shot, rgb(cgtrace::view::report::svg::THROTTLE_COLOUR), 300);
    assert!(spans >= 1, "no throttle spans drawn on the timeline");
    // The page fits the window: no table or chart runs past its right
    // edge (or needs its own scroll bar), down to a 1000-pixel window.
    for width in [1400, 1000] {
        let overflow = overflow_at(&browser, &page, &run.trace, width);
        assert_eq!(
            overflow, 0,
            "at {width} px, {overflow} px are past the right edge"
        );
    }
}

/// How many pixels of the page, or of any of its scrolling tables, lie past
/// the right edge in a window `width` pixels wide: a copy of the page with a
/// measuring script (the report itself has none), laid out by the browser,
/// which prints the DOM with the figure in it.
fn overflow_at(browser: &Path, page: &str, trace: &Path, width: u32) -> u64 {
    let probe = Scratch(trace.with_extension("measure.html"));
    let script = "<script>window.addEventListener('load', () => { \
        const parts = [document.documentElement, ...document.querySelectorAll('.scroll')]; \
        const over = Math.max(0, ...parts.map(p => p.scrollWidth - p.clientWidth)); \
        document.body.insertAdjacentHTML('beforeend', `<pre id=\"measured\">${over}</pre>`); \
        });</script>";
    std::fs::write(
        &probe.0,
        page.replace("</body>", &format!("{script}</body>")),
    )
    .unwrap();
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--window-size={width},900"),
            "--dump-dom",
        ])
        .arg(format!("file://{}", probe.0.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    let marker = "<pre id=\"measured\">";
    let at = dom.rfind(marker).unwrap_or_else(|| {
        panic!(
            "nothing measured: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let text = &dom[at + marker.len()..];
    text[..text.find('<').unwrap_or(text.len())]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a measure: {text}"))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
