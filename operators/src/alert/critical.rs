//! Critical laboratory values: limits by LOINC code and unit, beyond which a result must be
//! reported to the care team at once.
//!
//! A result is critical when its value is at or below a limit's `low`, or at or above its
//! `high` (the lists cited in `docs/laboratory.md` give their limits inclusive: "≤" and "≥"),
//! in one of the limit's units. The `alert` node turns each limit into a rule; its alert events
//! are `critical_value_detected`.

use serde::{Deserialize, Serialize};

/// Which limit a value crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// At or below `low`.
    Low,
    /// At or above `high`.
    High,
}

impl Direction {
    /// `low` or `high`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::High => "high",
        }
    }
}

/// Critical limits of one analyte in one family of units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CriticalLimit {
    /// Its name (`potassium`): the `parameter` of its events, and the name of its rule.
    pub name: String,
    /// The LOINC codes it applies to.
    pub codes: Vec<String>,
    /// The units (UCUM, as canonization maps them) it applies to; `""` for a result without
    /// one.
    pub units: Vec<String>,
    /// Critical at or below this value.
    pub low: Option<f64>,
    /// Critical at or above this value.
    pub high: Option<f64>,
}

impl CriticalLimit {
    /// The limit a value crosses, and its threshold; `None` when the value is not critical.
    #[must_use]
    pub fn crossed(&self, value: f64) -> Option<(Direction, f64)> {
        match (self.low, self.high) {
            (Some(low), _) if value <= low => Some((Direction::Low, low)),
            (_, Some(high)) if value >= high => Some((Direction::High, high)),
            _ => None,
        }
    }

    /// Whether it applies to a result coded `code` in `unit`.
    #[must_use]
    pub fn applies(&self, code: &str, unit: &str) -> bool {
        self.codes.iter().any(|c| c == code) && self.units.iter().any(|u| u == unit)
    }
}

/// One row of [`DEFAULT_LIMITS`]: name, LOINC codes, units, low, high.
type DefaultLimit = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    Option<f64>,
    Option<f64>,
);

/// The default limits. Sources (both give inclusive limits): Main Line Health Laboratories,
/// "Critical values for general laboratory tests" (potassium, sodium, glucose, haemoglobin,
/// platelets, troponin I, INR); Houston Methodist, "Critical Values" (lactic acid). The mmol/L
/// glucose, g/L haemoglobin and ng/L troponin I rows are the same limits in those units; the
/// troponin T row is the University of Iowa's call value. `docs/laboratory.md` shows this
/// table; a test checks that it lists every row.
pub const DEFAULT_LIMITS: &[DefaultLimit] = &[
    (
        "potassium",
        &["2823-3", "6298-4"],
        &["mmol/L"],
        Some(2.8),
        Some(6.0),
    ),
    (
        "sodium",
        &["2951-2", "2947-0"],
        &["mmol/L"],
        Some(125.0),
        Some(160.0),
    ),
    (
        "glucose",
        &["2345-7", "2339-0"],
        &["mg/dL"],
        Some(50.0),
        Some(450.0),
    ),
    (
        "glucose-si",
        &["2345-7", "2339-0", "15074-8"],
        &["mmol/L"],
        Some(2.8),
        Some(25.0),
    ),
    ("haemoglobin", &["718-7"], &["g/dL"], Some(7.0), Some(20.0)),
    (
        "haemoglobin-si",
        &["718-7"],
        &["g/L"],
        Some(70.0),
        Some(200.0),
    ),
    (
        "platelets",
        &["777-3", "26515-7"],
        &["10*3/uL", "10*9/L"],
        Some(50.0),
        Some(1000.0),
    ),
    (
        "troponin-i",
        &["10839-9"],
        &["ng/mL", "ug/L"],
        None,
        Some(0.4),
    ),
    ("troponin-i-hs", &["89579-7"], &["ng/L"], None, Some(400.0)),
    (
        "troponin-t",
        &["6598-7"],
        &["ng/mL", "ug/L"],
        None,
        Some(0.1),
    ),
    (
        "lactate",
        &["2524-7", "32693-4"],
        &["mmol/L"],
        None,
        Some(3.5),
    ),
    ("inr", &["6301-6"], &["{INR}", "1", ""], None, Some(6.0)),
];

/// [`DEFAULT_LIMITS`] as limits.
#[must_use]
pub fn default_limits() -> Vec<CriticalLimit> {
    DEFAULT_LIMITS
        .iter()
        .map(|(name, codes, units, low, high)| CriticalLimit {
            name: (*name).to_owned(),
            codes: codes.iter().map(|c| (*c).to_owned()).collect(),
            units: units.iter().map(|u| (*u).to_owned()).collect(),
            low: *low,
            high: *high,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive() {
        let k = default_limits()
            .into_iter()
            .find(|l| l.name == "potassium")
            .unwrap();
        assert_eq!(k.crossed(2.8), Some((Direction::Low, 2.8)));
        assert_eq!(k.crossed(2.81), None);
        assert_eq!(k.crossed(5.99), None);
        assert_eq!(k.crossed(6.0), Some((Direction::High, 6.0)));
        assert!(k.applies("6298-4", "mmol/L"));
        assert!(!k.applies("6298-4", "mg/dL"));
        assert!(!k.applies("2951-2", "mmol/L"));
    }

    #[test]
    fn every_default_code_is_loinc() {
        for l in default_limits() {
            assert!(l.low.is_some() || l.high.is_some(), "{}", l.name);
            for c in &l.codes {
                assert!(vitalflow_model::lab::is_loinc_code(c), "{c}");
            }
        }
    }
}
