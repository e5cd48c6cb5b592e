//! Dates and date-times as sources write them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// An RFC 3339 date-time, strictly (the envelope format).
pub(crate) fn rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A date-time as FHIR and CSV sources write it: RFC 3339, a date-time without offset (taken as
/// UTC), or a FHIR partial date (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`, taken as its first instant).
pub(crate) fn instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = rfc3339(s) {
        return Some(t);
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    date(s)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// A FHIR `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`. Partial dates are taken as their first day
/// (which makes age checks conservative: the person is taken to be as old as possible).
pub(crate) fn date(s: &str) -> Option<NaiveDate> {
    let b = s.trim().as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |acc, d| Some(acc * 10 + u32::from(d - b'0')))
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    let (month, day) = match b.len() {
        4 => (1, 1),
        7 if b[4] == b'-' => (digits(5..7)?, 1),
        10 if b[4] == b'-' && b[7] == b'-' => (digits(5..7)?, digits(8..10)?),
        _ => return None,
    };
    NaiveDate::from_ymd_opt(year, month, day)
}

/// The calendar date of a FHIR `dateTime` (a date, partial date or date-time), in the offset it
/// was written in.
pub(crate) fn date_of_datetime(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    if let Some(d) = date(s) {
        return Some(d);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.date_naive());
    }
    instant(s).map(|t| t.date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_shapes() {
        assert!(rfc3339("2026-01-01T00:31:25Z").is_some());
        assert!(rfc3339("2026-01-01").is_none());
        assert_eq!(
            instant("2010-11-05T15:43:56-07:00").map(|t| t.to_rfc3339()),
            Some("2010-11-05T22:43:56+00:00".to_owned())
        );
        assert!(instant("2010-11-05 15:43:56").is_some());
        assert_eq!(instant("2010").map(|t| t.timestamp()), Some(1_262_304_000));
        assert_eq!(date("1999-10"), NaiveDate::from_ymd_opt(1999, 10, 1));
        assert_eq!(date("1999-13-01"), None);
        assert_eq!(date("+999-10-01"), None);
        assert_eq!(date("19ü9"), None);
        assert_eq!(
            date_of_datetime("2020-05-01T23:00:00-05:00"),
            NaiveDate::from_ymd_opt(2020, 5, 1)
        );
    }
}
