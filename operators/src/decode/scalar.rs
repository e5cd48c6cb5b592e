//! Typed values from JSON scalars and from CSV cell text, and ISO 8601 timestamps.

use std::sync::Arc;

use vitalflow_model::row::{Type, Value};

use super::{DecodeError, FieldSpec, TimeFormat};

/// A JSON scalar as the parser hands it over.
#[derive(Clone, Copy, Debug)]
pub(super) enum Scalar<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    /// What it is, for error messages (never its value).
    const fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "a boolean",
            Self::I64(_) | Self::U64(_) | Self::F64(_) => "a number",
            Self::Str(_) => "a string",
        }
    }
}

/// `2^63` as a float: the first value above the `i64` range.
const I64_END: f64 = 9_223_372_036_854_775_808.0;

/// A float as an integer, if it has no fraction and fits `i64`; otherwise what it is.
fn float_to_int(f: f64) -> Result<i64, &'static str> {
    if !f.is_finite() {
        Err("a non-finite number")
    } else if f.fract() != 0.0 {
        Err("a number with a fraction")
    } else if !(-I64_END..I64_END).contains(&f) {
        Err("a number out of range")
    } else {
        // In range and integral: the conversion is exact.
        Ok(f as i64)
    }
}

/// Milliseconds from a float number of milliseconds, rounded to the nearest.
fn float_millis(ms: f64) -> Result<i64, &'static str> {
    let r = ms.round();
    if r.is_finite() && (-I64_END..I64_END).contains(&r) {
        Ok(r as i64)
    } else {
        Err("a number out of range")
    }
}

/// Milliseconds from a number of seconds.
fn seconds_millis(s: i64) -> Result<i64, &'static str> {
    s.checked_mul(1000).ok_or("a number out of range")
}

/// A JSON scalar as a value of `spec`'s type. Inlined into each visitor method, so that the
/// scalar's kind is known statically (and the scalar is not passed through memory).
#[inline(always)]
pub(super) fn from_json(spec: &FieldSpec, s: Scalar<'_>) -> Result<Value, DecodeError> {
    let mismatch = |found: &str| DecodeError::mismatch(spec, found);
    match (spec.ty, s) {
        (Type::Int, Scalar::I64(i)) => Ok(Value::Int(i)),
        (Type::Int, Scalar::U64(u)) => i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| mismatch("an integer out of range")),
        (Type::Int, Scalar::F64(f)) => float_to_int(f).map(Value::Int).map_err(mismatch),
        (Type::Float, Scalar::I64(i)) => Ok(Value::Float(i as f64)),
        (Type::Float, Scalar::U64(u)) => Ok(Value::Float(u as f64)),
        (Type::Float, Scalar::F64(f)) => Ok(Value::Float(f)),
        (Type::String, Scalar::Str(s)) => Ok(Value::Str(Arc::from(s))),
        (Type::Bool, Scalar::Bool(b)) => Ok(Value::Bool(b)),
        (Type::Timestamp, s) => json_time(spec.time_format, s)
            .map(Value::Timestamp)
            .map_err(mismatch),
        (_, s) => Err(mismatch(s.kind())),
    }
}

/// A JSON scalar as a timestamp of `format`; otherwise what was found.
#[inline(always)]
fn json_time(format: TimeFormat, s: Scalar<'_>) -> Result<i64, &'static str> {
    use TimeFormat::{Auto, EpochMillis, EpochSeconds, Iso8601};
    match (format, s) {
        (EpochMillis | Auto, Scalar::I64(i)) => Ok(i),
        (EpochMillis | Auto, Scalar::U64(u)) => {
            i64::try_from(u).map_err(|_| "a number out of range")
        }
        (EpochMillis | Auto, Scalar::F64(f)) => float_millis(f),
        (EpochSeconds, Scalar::I64(i)) => seconds_millis(i),
        (EpochSeconds, Scalar::U64(u)) => i64::try_from(u)
            .map_err(|_| "a number out of range")
            .and_then(seconds_millis),
        (EpochSeconds, Scalar::F64(f)) => float_millis(f * 1000.0),
        (Iso8601 | Auto, Scalar::Str(s)) => {
            parse_iso8601(s).ok_or("a string that is not an ISO 8601 date or date-time")
        }
        (_, s) => Err(s.kind()),
    }
}

/// A non-empty CSV cell as a value of `spec`'s type. A blank cell of a non-string type is null.
pub(super) fn from_text(spec: &FieldSpec, cell: &[u8]) -> Result<Value, DecodeError> {
    let mismatch = |found: &str| DecodeError::mismatch(spec, found);
    if spec.ty == Type::String {
        return std::str::from_utf8(cell)
            .map(|s| Value::Str(Arc::from(s)))
            .map_err(|_| mismatch("invalid UTF-8"));
    }
    let cell = cell.trim_ascii();
    if cell.is_empty() {
        return Ok(Value::Null);
    }
    // Every valid cell of these types is ASCII.
    let Ok(text) = std::str::from_utf8(cell) else {
        return Err(mismatch("text"));
    };
    match spec.ty {
        Type::Int => text_int(text).map(Value::Int).map_err(mismatch),
        Type::Float => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            Ok(_) => Err(mismatch("a non-finite number")),
            Err(_) => Err(mismatch("text")),
        },
        Type::Bool => match text {
            "1" => Ok(Value::Bool(true)),
            "0" => Ok(Value::Bool(false)),
            t if t.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            t if t.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(mismatch("text")),
        },
        Type::Timestamp => text_time(spec.time_format, text)
            .map(Value::Timestamp)
            .map_err(mismatch),
        Type::String => Err(mismatch("text")), // handled above
    }
}

/// An integer written as text (a float without fraction is accepted).
fn text_int(text: &str) -> Result<i64, &'static str> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(i);
    }
    match text.parse::<f64>() {
        Ok(f) => float_to_int(f),
        Err(_) => Err("text"),
    }
}

/// A number of milliseconds or seconds written as text.
fn text_epoch(text: &str, seconds: bool) -> Result<i64, &'static str> {
    if let Ok(i) = text.parse::<i64>() {
        return if seconds { seconds_millis(i) } else { Ok(i) };
    }
    match text.parse::<f64>() {
        Ok(f) if seconds => float_millis(f * 1000.0),
        Ok(f) => float_millis(f),
        Err(_) => Err("text"),
    }
}

/// A timestamp written as text.
fn text_time(format: TimeFormat, text: &str) -> Result<i64, &'static str> {
    let iso = || parse_iso8601(text).ok_or("text that is not an ISO 8601 date or date-time");
    match format {
        TimeFormat::EpochMillis => text_epoch(text, false),
        TimeFormat::EpochSeconds => text_epoch(text, true),
        TimeFormat::Iso8601 => iso(),
        TimeFormat::Auto => {
            let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                text.parse::<i64>().map_err(|_| "a number out of range")
            } else {
                iso()
            }
        }
    }
}

/// Parses an ISO 8601 timestamp to milliseconds since the Unix epoch, UTC.
///
/// Accepted: `YYYY-MM-DD` (its first instant, UTC); `YYYY-MM-DDTHH:MM:SS` with an optional
/// fraction (`.f`, digits beyond milliseconds are truncated) and an optional offset (`Z` or
/// `±HH:MM`; without one the time is UTC). `t` or a space may replace the `T`, `z` the `Z`.
/// Surrounding ASCII whitespace is ignored. Anything else, or an impossible date or time
/// (`2026-02-30`, `24:00:00`), is `None`. A leap second (`:60`) counts as the next second.
#[must_use]
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let s = text.as_bytes().trim_ascii();
    let year = digits(s, 0, 4)?;
    let month = digits(s, 5, 2)?;
    let day = digits(s, 8, 2)?;
    if s.get(4) != Some(&b'-')
        || s.get(7) != Some(&b'-')
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
    {
        return None;
    }
    let date_ms = days_from_civil(year, month, day) * 86_400_000;
    if s.len() == 10 {
        return Some(date_ms);
    }
    let hour = digits(s, 11, 2)?;
    let minute = digits(s, 14, 2)?;
    let second = digits(s, 17, 2)?;
    if !matches!(s.get(10), Some(b'T' | b't' | b' '))
        || s.get(13) != Some(&b':')
        || s.get(16) != Some(&b':')
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = s.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(d - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match s.get(i..)? {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (digits(s, i + 1, 2)?, digits(s, i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    Some(
        date_ms + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis
            - offset_minutes * 60_000,
    )
}

/// The number written by the `len` ASCII digits at `at`.
fn digits(s: &[u8], at: usize, len: usize) -> Option<i64> {
    let part = s.get(at..at.checked_add(len)?)?;
    part.iter().try_fold(0i64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
    })
}

const fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

const fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(super) const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
