//! Typed setting values shared by several node kinds. Each is parsed once, when the job file is
//! read, with a message that names what was expected; the job parser puts it at the value's
//! `path:line:col` (`sources.vitals.max-drift`: `soon` is neither ...).

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use vitalflow_operators::anonymize::{DatePolicy, PseudonymKey};

/// A duration as written in a job file: `500ms`, `5s`, `1m30s`, `2h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// A duration of `ms` milliseconds (defaults).
    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// Milliseconds, saturating.
    #[must_use]
    pub fn millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Milliseconds as a signed number (event-time arithmetic), saturating.
    #[must_use]
    pub fn millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Parses `500ms`, `5s`, `1m30s`, `1h` (what a job file accepts as a duration).
#[must_use]
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    humantime::parse_duration(s.trim()).ok()
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Self).ok_or_else(|| {
            de::Error::custom(format!(
                "`{text}` is not a duration (use e.g. `500ms`, `5s`, `1m`)"
            ))
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Declares a setting written as one of a few words: the enum, its words, and a
/// deserializer whose error lists them.
macro_rules! words {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every word, in order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word for this value.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $word ),+
                }
            }

            /// The value for a word.
            #[must_use]
            pub fn parse(word: &str) -> Option<Self> {
                match word {
                    $( $word => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = String::deserialize(d)?;
                Self::parse(&word).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown {} `{word}` (expected one of: {})",
                        $what,
                        Self::WORDS.join(", ")
                    ))
                })
            }
        }
    };
}
pub(crate) use words;

/// Where a pseudonymization key comes from: `env:NAME`, `file:PATH` or `ephemeral`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable.
    Env(String),
    /// A file, relative to the job file's folder.
    File(String),
    /// A random key for this run only (one for every node of the job).
    Ephemeral,
}

impl KeySource {
    /// Loads the key; `ephemeral` is the run's one random key.
    ///
    /// # Errors
    /// The key cannot be read, or is too short.
    pub fn load(&self, base: &Path, ephemeral: &PseudonymKey) -> Result<PseudonymKey, String> {
        match self {
            Self::Ephemeral => Ok(ephemeral.clone()),
            Self::Env(var) => PseudonymKey::from_env(var).map_err(|e| e.to_string()),
            Self::File(path) => {
                PseudonymKey::from_file(&base.join(path)).map_err(|e| e.to_string())
            }
        }
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let key = if text == "ephemeral" {
            Some(Self::Ephemeral)
        } else if let Some(var) = text.strip_prefix("env:").filter(|v| !v.is_empty()) {
            Some(Self::Env(var.to_owned()))
        } else {
            text.strip_prefix("file:")
                .filter(|p| !p.is_empty())
                .map(|p| Self::File(p.to_owned()))
        };
        key.ok_or_else(|| de::Error::custom("must be `env:NAME`, `file:PATH` or `ephemeral`"))
    }
}

words! {
    /// What anonymization does with dates: `shift` or `year`.
    Dates, "date policy" {
        /// Every date of a patient moved by one consistent number of days.
        Shift = "shift",
        /// Dates generalized to their year.
        Year = "year",
    }
}

impl Dates {
    /// The policy, with the largest shift in days.
    #[must_use]
    pub const fn policy(self, max_days: u32) -> DatePolicy {
        match self {
            Self::Shift => DatePolicy::Shift { max_days },
            Self::Year => DatePolicy::Year,
        }
    }
}

/// A pseudonymization key, a date policy and the largest shift: the settings `anonymize` and
/// `alert` share. The shift must be at least a day: 0 would keep the true dates.
pub(crate) fn check_shift(dates: Dates, max_shift_days: u32) -> Option<&'static str> {
    (dates == Dates::Shift && max_shift_days == 0)
        .then_some("must be at least 1 when dates are shifted")
}

/// A level an alert is raised at: `low`, `low-medium`, `medium` or `high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level(pub vitalflow_operators::alert::news2::Level);

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        vitalflow_operators::alert::monitor::parse_level(&text)
            .map(Self)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "must be `low`, `low-medium`, `medium` or `high`, not `{text}`"
                ))
            })
    }
}

/// An RFC 3339 date-time (`2026-01-01T00:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub chrono::DateTime<chrono::Utc>);

impl<'de> Deserialize<'de> for Rfc3339 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| Self(t.with_timezone(&chrono::Utc)))
            .map_err(|_| de::Error::custom(format!("`{text}` is not an RFC 3339 time")))
    }
}

/// A size in bytes as written in a job file: a number of bytes (`65536`), or a number with a
/// unit, `KiB`, `MiB` or `GiB` (powers of 1,024: `512KiB`, `1MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Parses `65536`, `512KiB`, `1MiB`, `2GiB`.
#[must_use]
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size (bytes, or e.g. `512KiB`, `1MiB`)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("`{v}` is not a size: it is negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not a size (use bytes, or e.g. `512KiB`, `1MiB`, `1GiB`)"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            _ if n >= 1 << 30 && n.is_multiple_of(1 << 30) => write!(f, "{}GiB", n >> 30),
            _ if n >= 1 << 20 && n.is_multiple_of(1 << 20) => write!(f, "{}MiB", n >> 20),
            _ if n >= 1 << 10 && n.is_multiple_of(1 << 10) => write!(f, "{}KiB", n >> 10),
            _ => write!(f, "{n} bytes"),
        }
    }
}

/// A setting that is either a duration or a word (`off`, `forever`): `None` is the word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationOr<const W: u8>(pub Option<Duration>);

/// [`DurationOr`]'s word `off`.
pub const OFF: u8 = 0;
/// [`DurationOr`]'s word `forever`.
pub const FOREVER: u8 = 1;
/// A duration, or `off` (no limit).
pub type OrOff = DurationOr<OFF>;
/// A duration, or `forever`.
pub type OrForever = DurationOr<FOREVER>;

impl<'de, const W: u8> Deserialize<'de> for DurationOr<W> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const W: u8>;
        impl<const W: u8> Visitor<'_> for V<W> {
            type Value = DurationOr<W>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let word = if W == OFF { "off" } else { "forever" };
                if v == word {
                    return Ok(DurationOr(None));
                }
                parse_duration(v)
                    .map(|d| DurationOr(Some(Duration(d))))
                    .ok_or_else(|| {
                        E::custom(format!(
                            "`{v}` is neither a duration (e.g. `30s`, `1m`) nor `{word}`"
                        ))
                    })
            }
        }
        d.deserialize_str(V::<W>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_compound_and_single_units() {
        for (text, ms) in [
            ("500ms", 500),
            ("5s", 5_000),
            ("1m", 60_000),
            ("1min", 60_000),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
        ] {
            assert_eq!(
                parse_duration(text).map(|d| d.as_millis()),
                Some(ms),
                "{text}"
            );
        }
        for bad in ["", "soon", "5", "s5", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_read_bytes_and_binary_units() {
        for (text, n) in [
            ("65536", 65_536),
            ("512KiB", 512 * 1024),
            ("1MiB", 1 << 20),
            (" 2GiB ", 2 << 30),
        ] {
            assert_eq!(parse_size(text), Some(n), "{text}");
        }
        for bad in ["", "MiB", "1MB", "1.5MiB", "-1", "99999999999999999999GiB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(ByteSize(1 << 20).to_string(), "1MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 bytes");
    }
}
