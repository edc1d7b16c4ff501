//! Instants and durations as the core handles them: Unix nanoseconds in a `u64`, RFC 3339 text at the edges of
//! answers. No function here reads a clock; `now` is always an argument.

use std::time::Duration;

/// Nanoseconds per millisecond.
const NANOS_PER_MILLI: u64 = 1_000_000;

/// A duration in nanoseconds, saturating at `u64::MAX` (about 584 years).
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Whole milliseconds of a nanosecond count.
pub fn millis(nanos: u64) -> u64 {
    nanos / NANOS_PER_MILLI
}

/// Whole milliseconds of a nanosecond count as an OTLP integer attribute value, saturating at `i64::MAX`.
pub fn millis_i64(nanos: u64) -> i64 {
    i64::try_from(millis(nanos)).unwrap_or(i64::MAX)
}

/// An instant as RFC 3339 text (UTC, nanosecond precision when needed).
pub fn rfc3339(unix_nanos: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix_nanos.to_string())
}

/// Parses RFC 3339 text into Unix nanoseconds; `None` for text that is not a time or lies before 1970.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t: jiff::Timestamp = text.parse().ok()?;
    u64::try_from(t.as_nanosecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_through_rfc3339() {
        let t = 1_795_183_200_123_000_000;
        assert_eq!(rfc3339(t), "2026-11-20T14:00:00.123Z");
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None, "before the epoch");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn durations_saturate_instead_of_wrapping() {
        assert_eq!(nanos(Duration::from_secs(2)), 2_000_000_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(millis(2_500_000), 2);
        assert_eq!(millis_i64(u64::MAX), i64::try_from(u64::MAX / NANOS_PER_MILLI).unwrap());
    }
}
