//! Small formatting helpers shared by the views.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes in binary units, three significant digits: `0`, `512K`, `99.6M`, `1.25G`.
#[must_use]
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    if value < 1024 {
        return value.to_string();
    }
    #[expect(clippy::cast_precision_loss, reason = "display rounding only")]
    let mut scaled = value as f64;
    let mut unit = 0;
    while scaled >= 1024.0 && unit < UNITS.len() - 1 {
        scaled /= 1024.0;
        unit += 1;
    }
    let text = if scaled >= 100.0 {
        format!("{scaled:.0}")
    } else if scaled >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

/// `text` cut to `width` characters, keeping the end (the most specific part
/// of a cgroup path) behind a leading `…`.
#[must_use]
pub fn tail(text: &str, width: usize) -> String {
    // Names come from whoever runs a workload: shown, never acted on.
    let text = crate::text::printable(text);
    let count = text.chars().count();
    if count <= width {
        return text.into_owned();
    }
    let keep: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{keep}")
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Splits a wall-clock time into UTC fields.
fn utc_fields(time: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    (
        year,
        month,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros(),
    )
}

/// RFC 3339 in UTC with microseconds: `2026-11-22T21:54:18.123456Z`.
#[must_use]
pub fn rfc3339(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s, us) = utc_fields(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

/// UTC for file names, sorting in time order: `20261122T215418Z`.
#[must_use]
pub fn file_time(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = utc_fields(time);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Compact UTC for tables: `11-22 21:54:18.123`.
#[must_use]
pub fn short_time(time: SystemTime) -> String {
    let (_, mo, d, h, mi, s, us) = utc_fields(time);
    format!("{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:03}", us / 1000)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{bytes, rfc3339, short_time, tail};

    #[test]
    fn formats_bytes() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(1023), "1023");
        assert_eq!(bytes(1024), "1K");
        assert_eq!(bytes(100 << 20), "100M");
        assert_eq!(bytes(102_016 * 1024), "99.6M");
        assert_eq!(bytes(6540 * 1024), "6.39M");
        assert_eq!(bytes(1 << 30), "1G");
        assert_eq!(bytes(u64::MAX), "16384P");
    }

    #[test]
    fn keeps_the_tail_of_long_paths() {
        assert_eq!(tail("/short", 10), "/short");
        assert_eq!(
            tail("/kubepods/burstable/pod1234/abcdef", 12),
            "…1234/abcdef"
        );
        assert_eq!(tail("abcdef", 4).chars().count(), 4);
    }

    #[test]
    fn formats_times_in_utc() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_384_458_123_456);
        assert_eq!(rfc3339(t), "2026-11-22T21:54:18.123456Z");
        assert_eq!(short_time(t), "11-22 21:54:18.123");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_hours(264_384); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T"));
    }
}
