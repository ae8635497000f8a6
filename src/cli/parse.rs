//! Parsers for command-line values: `key=value` pairs and times.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// `key=value` (the value may contain `=`; the key may not be empty).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// A time: RFC 3339 (`2026-11-01T00:00:00Z`), a date (`2026-11-01`, midnight UTC), or a
/// date and time without a zone (`2026-11-01T08:00:00`, UTC).
pub fn time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        return Ok(at.and_utc());
    }
    Err(format!(
        "expected a date (2026-11-01) or an RFC 3339 time (2026-11-01T00:00:00Z), got {text:?}"
    ))
}

/// Pairs as a map (a later key wins).
pub fn map(pairs: Vec<(String, String)>) -> HashMap<String, String> {
    pairs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(key_value("a="), Ok(("a".into(), String::new())));
        assert!(key_value("=b").is_err());
        assert!(key_value("ab").is_err());
    }

    #[test]
    fn times() {
        let midnight = "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>();
        assert_eq!(time("2026-11-01").ok(), midnight.ok());
        assert_eq!(time("2026-11-01T00:00:00Z").ok(), midnight.ok());
        assert_eq!(time("2026-11-01T01:00:00+01:00").ok(), midnight.ok());
        assert!(time("2026-11-01T08:00:00").is_ok());
        assert!(time("November").is_err());
    }
}
