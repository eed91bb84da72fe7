//! Parsers for flag values the subcommands share: durations written as Go
//! writes them (`30s`, `1m30s`, `500ms`), as upstream's components take them.

use std::time::Duration;

/// A non-negative Go duration (`15s`, `1m30s`, `500ms`).
pub fn duration(s: &str) -> Result<Duration, String> {
    kybern_apimachinery::go_text::parse_duration(s)
        // Saturated: the text overflowed what a duration holds.
        .filter(|n| *n != i64::MAX)
        .and_then(|n| u64::try_from(n).ok())
        .map(Duration::from_nanos)
        .ok_or_else(|| format!("{s:?} is not a duration such as 15s, 2m or 500ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["soon", "5d", "-3s", "", "99999999999999999999s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
