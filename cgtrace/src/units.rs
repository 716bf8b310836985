//! The units the command line takes: durations (`1s`, `250ms`, `2m`),
//! sizes (`512M`, `2G`) and ring-buffer sizes (a power of two of bytes).

use std::time::Duration;

/// Why a value on the command line is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("`{text}` is not a duration (try 1s, 500ms, 2m)")]
    NotADuration { text: String },
    #[error("`{text}` is outside 10ms..24h")]
    DurationOutOfRange { text: String },
    #[error("`{text}`: unknown unit (use K, M, G or T)")]
    UnknownSizeUnit { text: String },
    #[error("`{text}` is not a size (try 512M)")]
    NotASize { text: String },
    #[error("`{text}` is not a usable memory limit (at least a page, 4096 bytes)")]
    SizeOutOfRange { text: String },
    #[error("`{text}` must be a power of two of at least 4096 bytes")]
    NotARingBufferSize { text: String },
}

/// Parses `1s`, `250ms`, `2m`, `1.5` (seconds), within 10 ms..24 h.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let seconds: f64 = number
        .trim()
        .parse()
        .map_err(|_| UnitError::NotADuration { text: text.into() })?;
    let seconds = seconds * scale;
    if !(0.01..=86_400.0).contains(&seconds) {
        return Err(UnitError::DurationOutOfRange { text: text.into() });
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `512M`, `2G`, `64MiB`, `1048576`: at least a page.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => (&text[..at], &text[at..]),
        None => (text, ""),
    };
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(UnitError::UnknownSizeUnit { text: text.into() }),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| UnitError::NotASize { text: text.into() })?;
    value
        .checked_mul(scale)
        .filter(|bytes| *bytes >= 4096)
        .ok_or_else(|| UnitError::SizeOutOfRange { text: text.into() })
}

/// A ring-buffer size: the kernel wants a power-of-two number of pages.
pub fn parse_ring_buffer_bytes(text: &str) -> Result<u32, UnitError> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|bytes| *bytes >= 4096 && bytes.is_power_of_two())
        .ok_or_else(|| UnitError::NotARingBufferSize { text: text.into() })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{UnitError, parse_duration, parse_ring_buffer_bytes, parse_size};

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(matches!(
            parse_duration("0"),
            Err(UnitError::DurationOutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration("soon"),
            Err(UnitError::NotADuration { .. })
        ));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("12").is_err(), "below a page");
        assert!(matches!(
            parse_size("5X"),
            Err(UnitError::UnknownSizeUnit { .. })
        ));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn parses_ring_buffer_sizes() {
        assert_eq!(parse_ring_buffer_bytes("262144"), Ok(262_144));
        assert!(parse_ring_buffer_bytes("1000").is_err());
        assert!(parse_ring_buffer_bytes("6144").is_err());
        assert_eq!(
            parse_ring_buffer_bytes("x").unwrap_err().to_string(),
            "`x` must be a power of two of at least 4096 bytes"
        );
    }
}
