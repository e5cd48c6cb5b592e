//! Laboratory results: their status, value, UCUM unit, reference range and interpretation, and
//! the mappings from HL7 v2 (OBX-6, OBX-7, OBX-8, OBX-11) to them.
//!
//! The unit table ([`ucum_unit`]) renames the usual spellings of common lab units to their UCUM
//! code; it never converts a value (every entry is the same unit under another name). A unit it
//! does not know is kept as the source wrote it, flagged as not UCUM ([`LabUnit::ucum`] is
//! `None`), and the result is kept.

use serde::{Deserialize, Serialize};

/// The status of a laboratory result, as FHIR R4 `Observation.status` codes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabStatus {
    /// `preliminary` (HL7 v2 OBX-11 `P`, `R`, `S`).
    Preliminary,
    /// `final` (`F`, `U`).
    Final,
    /// `amended` (`A`).
    Amended,
    /// `corrected` (`C`): replaces an earlier result of the same id.
    Corrected,
    /// `cancelled` (`X`): the result could not be obtained.
    Cancelled,
    /// `entered-in-error` (`W`, `D`): an earlier result was wrong.
    EnteredInError,
    /// `unknown` (OBX-11 empty).
    Unknown,
}

impl LabStatus {
    /// The FHIR code.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Preliminary => "preliminary",
            Self::Final => "final",
            Self::Amended => "amended",
            Self::Corrected => "corrected",
            Self::Cancelled => "cancelled",
            Self::EnteredInError => "entered-in-error",
            Self::Unknown => "unknown",
        }
    }

    /// The status of an HL7 v2 result status (OBX-11, table 0085); `None` for the codes that
    /// carry no result (`I` pending, `O` order detail, `N` not asked) and unknown codes.
    #[must_use]
    pub fn from_v2(code: &str) -> Option<Self> {
        Some(match code.trim() {
            "P" | "R" | "S" => Self::Preliminary,
            "F" | "U" => Self::Final,
            "A" => Self::Amended,
            "C" => Self::Corrected,
            "X" => Self::Cancelled,
            "W" | "D" => Self::EnteredInError,
            "" => Self::Unknown,
            _ => return None,
        })
    }

    /// The status of a FHIR `Observation.status` code; `None` for `registered` (no result yet)
    /// and unknown codes.
    #[must_use]
    pub fn from_fhir(code: &str) -> Option<Self> {
        Some(match code {
            "preliminary" => Self::Preliminary,
            "final" => Self::Final,
            "amended" => Self::Amended,
            "corrected" => Self::Corrected,
            "cancelled" => Self::Cancelled,
            "entered-in-error" => Self::EnteredInError,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// Whether a result of this status may have no value (it was never obtained, or withdrawn).
    #[must_use]
    pub const fn may_lack_value(self) -> bool {
        matches!(self, Self::Cancelled | Self::EnteredInError)
    }
}

/// A comparator of a numeric result (`<0.04`: below the limit of detection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Comparator {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>=`
    GreaterOrEqual,
    /// `>`
    Greater,
}

impl Comparator {
    /// The FHIR `Quantity.comparator` code.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::GreaterOrEqual => ">=",
            Self::Greater => ">",
        }
    }

    /// Parses `<`, `<=`, `>=`, `>`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "<" => Self::Less,
            "<=" => Self::LessOrEqual,
            ">=" => Self::GreaterOrEqual,
            ">" => Self::Greater,
            _ => return None,
        })
    }
}

/// The unit of a numeric result: as the source wrote it, and its UCUM code when the table knows
/// it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabUnit {
    /// The unit as the source wrote it (empty when none was given).
    pub text: String,
    /// Its UCUM code, `None` when it cannot be mapped (the result is then flagged).
    pub ucum: Option<String>,
}

impl LabUnit {
    /// The unit `text` (of the result coded `loinc`), mapped with [`ucum_unit`].
    #[must_use]
    pub fn map(text: &str, loinc: &str) -> Self {
        let text = text.trim();
        Self {
            text: text.to_owned(),
            ucum: ucum_unit(text, loinc).map(str::to_owned),
        }
    }

    /// The unit to show: the UCUM code, else the source's text.
    #[must_use]
    pub fn display(&self) -> &str {
        self.ucum.as_deref().unwrap_or(&self.text)
    }
}

/// The value of a laboratory result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LabValue {
    /// A number with its unit (HL7 v2 `NM`, `SN` without a range; FHIR `valueQuantity`).
    Quantity {
        /// The number, as the source gave it (units are renamed, never converted).
        value: f64,
        /// `<`, `>`, ... when the result is a limit.
        comparator: Option<Comparator>,
        /// Its unit.
        unit: LabUnit,
    },
    /// A coded result (HL7 v2 `CE`, `CWE`; FHIR `valueCodeableConcept`).
    Coded {
        /// The code system (FHIR URI; HL7 v2 names such as `SCT` are mapped to theirs).
        system: Option<String>,
        /// The code.
        code: String,
        /// The code's display text.
        display: Option<String>,
    },
    /// A free-text result (HL7 v2 `ST`, `TX`, `FT`; FHIR `valueString`). Free text may name the
    /// patient: anonymization scrubs it or drops it, as it does notes.
    Text(String),
    /// No value: a cancelled result or one entered in error.
    Absent,
}

/// A reference range (HL7 v2 OBX-7, FHIR `referenceRange`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceRange {
    /// Lower limit, in the result's unit.
    pub low: Option<f64>,
    /// Upper limit, in the result's unit.
    pub high: Option<f64>,
}

impl ReferenceRange {
    /// Parses an HL7 v2 reference range: `3.5-5.1`, `3.5 - 5.1`, `4.3 to 6.2`, `-2-2`, `<0.04`
    /// (upper limit only), `>60` (lower limit only), `<=5`, `>=1`. `None` when it is empty or
    /// not one of these (text ranges such as `negative` are not kept).
    #[must_use]
    pub fn parse_v2(text: &str) -> Option<Self> {
        let t = text.trim();
        if t.is_empty() {
            return None;
        }
        let number =
            |s: &str| -> Option<f64> { s.trim().parse::<f64>().ok().filter(|v| v.is_finite()) };
        for (prefix, upper) in [("<=", true), (">=", false), ("<", true), (">", false)] {
            if let Some(rest) = t.strip_prefix(prefix) {
                let limit = number(rest)?;
                return Some(if upper {
                    Self {
                        low: None,
                        high: Some(limit),
                    }
                } else {
                    Self {
                        low: Some(limit),
                        high: None,
                    }
                });
            }
        }
        if let Some((low, high)) = t.split_once(" to ") {
            return Some(Self {
                low: Some(number(low)?),
                high: Some(number(high)?),
            });
        }
        // `a-b`: the separator is the first `-` after the first character (a may be negative).
        let at = t.get(1..)?.find('-')? + 1;
        let (low, high) = (number(&t[..at])?, number(&t[at + 1..])?);
        Some(Self {
            low: Some(low),
            high: Some(high),
        })
    }

    /// Whether it has neither limit.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.low.is_none() && self.high.is_none()
    }
}

/// The FHIR R4 `v3-ObservationInterpretation` code of an HL7 v2 abnormal flag (OBX-8, table
/// 0078), and its display. `None` for flags that have no such code.
#[must_use]
pub fn interpretation_from_v2(flag: &str) -> Option<(&'static str, &'static str)> {
    Some(match flag.trim() {
        "N" => ("N", "Normal"),
        "A" => ("A", "Abnormal"),
        "AA" => ("AA", "Critical abnormal"),
        "H" => ("H", "High"),
        "HH" | ">" => ("HH", "Critical high"),
        "L" => ("L", "Low"),
        "LL" | "<" => ("LL", "Critical low"),
        "HU" => ("HU", "Significantly high"),
        "LU" => ("LU", "Significantly low"),
        "U" => ("U", "Significant change up"),
        "D" => ("D", "Significant change down"),
        "B" => ("B", "Better"),
        "W" => ("W", "Worse"),
        "S" => ("S", "Susceptible"),
        "R" => ("R", "Resistant"),
        "I" => ("I", "Intermediate"),
        "MS" => ("MS", "Moderately susceptible"),
        "VS" => ("VS", "Very susceptible"),
        "POS" => ("POS", "Positive"),
        "NEG" => ("NEG", "Negative"),
        "IND" => ("IND", "Indeterminate"),
        "DET" => ("DET", "Detected"),
        "ND" => ("ND", "Not detected"),
        "E" => ("E", "Equivocal"),
        "EX" => ("EX", "Outside threshold"),
        "HX" => ("HX", "Above high threshold"),
        "LX" => ("LX", "Below low threshold"),
        "NR" => ("NR", "Non-reactive"),
        "RR" => ("RR", "Reactive"),
        "WR" => ("WR", "Weakly reactive"),
        _ => return None,
    })
}

/// The interpretation code of a FHIR `v3-ObservationInterpretation` code (the same codes as
/// [`interpretation_from_v2`] knows), with its display.
#[must_use]
pub fn interpretation_from_fhir(code: &str) -> Option<(&'static str, &'static str)> {
    match code {
        ">" | "<" => None,
        c => interpretation_from_v2(c),
    }
}

/// LOINC codes of results of monovalent ions, whose `mEq/L` is `mmol/L`: sodium, potassium,
/// chloride, bicarbonate and total CO2, in serum, plasma or blood.
pub const MONOVALENT_LOINC: [&str; 9] = [
    "2951-2", "2947-0", "2823-3", "6298-4", "2075-0", "2069-3", "1963-8", "2028-9", "1959-6",
];

/// The unit table: UCUM code, then the spellings sources use for it (compared without regard to
/// ASCII case when no spelling matches exactly; `µ` and `mc` read as `u`). Every spelling is the
/// same unit: no value changes.
/// `docs/laboratory.md` shows this table; a test checks that it lists every row.
pub const UNIT_TABLE: &[(&str, &[&str])] = &[
    ("mmol/L", &["mmol/L", "mmol/l"]),
    ("umol/L", &["umol/L", "µmol/L"]),
    ("nmol/L", &["nmol/L"]),
    ("pmol/L", &["pmol/L"]),
    ("meq/L", &["meq/L", "mEq/L"]),
    ("mg/dL", &["mg/dL", "mg/dl", "mg%"]),
    ("g/dL", &["g/dL", "g/dl", "gm/dL", "gm/dl"]),
    ("g/L", &["g/L", "g/l"]),
    ("mg/L", &["mg/L", "mg/l"]),
    ("g/mL", &["g/mL", "g/ml"]),
    ("mg/mL", &["mg/mL"]),
    ("ug/mL", &["ug/mL", "mcg/mL"]),
    ("ug/dL", &["ug/dL", "mcg/dL"]),
    ("ug/L", &["ug/L", "mcg/L"]),
    ("ng/mL", &["ng/mL", "ng/ml"]),
    ("ng/dL", &["ng/dL"]),
    ("ng/L", &["ng/L", "ng/l"]),
    ("pg/mL", &["pg/mL", "pg/ml"]),
    (
        "10*3/uL",
        &[
            "10*3/uL", "K/uL", "10^3/uL", "x10E3/uL", "x10^3/uL", "thou/uL", "K/mm3", "10*3/mm3",
        ],
    ),
    (
        "10*6/uL",
        &[
            "10*6/uL", "M/uL", "10^6/uL", "x10E6/uL", "x10^6/uL", "mill/uL", "M/mm3",
        ],
    ),
    (
        "10*9/L",
        &["10*9/L", "10^9/L", "x10E9/L", "x10^9/L", "giga.l-1"],
    ),
    (
        "10*12/L",
        &["10*12/L", "10^12/L", "x10E12/L", "x10^12/L", "tera.l-1"],
    ),
    ("/uL", &["/uL", "/mm3", "cells/uL"]),
    ("{cells}/uL", &["{cells}/uL"]),
    ("%", &["%", "percent"]),
    ("U/L", &["U/L", "u/l"]),
    ("[IU]/L", &["[IU]/L", "IU/L"]),
    ("m[IU]/L", &["m[IU]/L", "mIU/L"]),
    ("u[IU]/mL", &["u[IU]/mL", "uIU/mL"]),
    ("kU/L", &["kU/L"]),
    ("s", &["s", "sec", "seconds"]),
    ("{INR}", &["{INR}", "INR"]),
    ("1", &["1", "ratio"]),
    ("fL", &["fL", "fl"]),
    ("pg", &["pg"]),
    ("pg/{cell}", &["pg/{cell}"]),
    ("mm/h", &["mm/h", "mm/hr"]),
    (
        "mL/min/{1.73_m2}",
        &["mL/min/{1.73_m2}", "mL/min/1.73m2", "mL/min/1.73 m2"],
    ),
    ("mosm/kg", &["mosm/kg", "mOsm/kg"]),
    ("mm[Hg]", &["mm[Hg]", "mmHg"]),
];

/// The UCUM code of a lab unit as sources write it, for the result coded `loinc`: `mEq/L` of a
/// monovalent ion ([`MONOVALENT_LOINC`]) is `mmol/L`; otherwise see [`UNIT_TABLE`]. `None` for an
/// empty or unknown unit.
#[must_use]
pub fn ucum_unit(unit: &str, loinc: &str) -> Option<&'static str> {
    let unit = unit.trim();
    if unit.is_empty() {
        return None;
    }
    let norm = |s: &str| -> String { s.replace('µ', "u").replace("mc", "u").to_ascii_lowercase() };
    let wanted = norm(unit);
    let (ucum, _) = UNIT_TABLE
        .iter()
        .find(|(code, spellings)| *code == unit || spellings.contains(&unit))
        .or_else(|| {
            UNIT_TABLE
                .iter()
                .find(|(_, spellings)| spellings.iter().any(|s| norm(s) == wanted))
        })?;
    if *ucum == "meq/L" && MONOVALENT_LOINC.contains(&loinc.trim()) {
        return Some("mmol/L");
    }
    Some(ucum)
}

/// Whether `code` has the form of a LOINC code (`NNNNN-C`, one to seven digits, a dash and a
/// check digit) and its check digit is right (LOINC's mod-10 algorithm).
#[must_use]
pub fn is_loinc_code(code: &str) -> bool {
    let Some((number, check)) = code.trim().split_once('-') else {
        return false;
    };
    if number.is_empty()
        || number.len() > 7
        || check.len() != 1
        || !number
            .bytes()
            .chain(check.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return false;
    }
    // From the right, every other digit (the rightmost first) is doubled; the digits of the
    // products and of the other digits are summed.
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = 2 * d;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    u32::from(check.as_bytes()[0] - b'0') == (10 - sum % 10) % 10
}

/// The FHIR URI of an HL7 v2 coding system name (table 0396) that lab results use; other names
/// give `None` (the coding is kept without a system).
#[must_use]
pub fn system_uri(v2: &str) -> Option<&'static str> {
    Some(match v2.trim().to_ascii_uppercase().as_str() {
        "LN" | "LOINC" => "http://loinc.org",
        "SCT" | "SNM" | "SNOMED" | "SNOMEDCT" => "http://snomed.info/sct",
        "UCUM" => "http://unitsofmeasure.org",
        "HL70078" => "http://terminology.hl7.org/CodeSystem/v2-0078",
        "HL70136" => "http://terminology.hl7.org/CodeSystem/v2-0136",
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        let r = |s| ReferenceRange::parse_v2(s).map(|r| (r.low, r.high));
        assert_eq!(r("3.5-5.1"), Some((Some(3.5), Some(5.1))));
        assert_eq!(r(" 3.5 - 5.1 "), Some((Some(3.5), Some(5.1))));
        assert_eq!(r("4.3 to 6.2"), Some((Some(4.3), Some(6.2))));
        assert_eq!(r("-2-2"), Some((Some(-2.0), Some(2.0))));
        assert_eq!(r("<0.04"), Some((None, Some(0.04))));
        assert_eq!(r(">60"), Some((Some(60.0), None)));
        assert_eq!(r(">=1"), Some((Some(1.0), None)));
        assert_eq!(r(""), None);
        assert_eq!(r("negative"), None);
        assert_eq!(r("70_105"), None);
        assert_eq!(r("-"), None);
    }

    #[test]
    fn units_map_to_ucum() {
        assert_eq!(ucum_unit("K/uL", "777-3"), Some("10*3/uL"));
        assert_eq!(ucum_unit("x10E3/uL", "777-3"), Some("10*3/uL"));
        assert_eq!(ucum_unit("10^3/µL", "777-3"), Some("10*3/uL"));
        assert_eq!(ucum_unit("mg/dl", "2345-7"), Some("mg/dL"));
        assert_eq!(ucum_unit("mEq/L", "2823-3"), Some("mmol/L"));
        assert_eq!(ucum_unit("mEq/L", "17861-6"), Some("meq/L"));
        assert_eq!(ucum_unit("INR", "6301-6"), Some("{INR}"));
        assert_eq!(ucum_unit("mcg/mL", ""), Some("ug/mL"));
        assert_eq!(ucum_unit("g/l-1", ""), None);
        assert_eq!(ucum_unit("", ""), None);
        assert_eq!(ucum_unit("beats/min", ""), None);
        for (code, spellings) in UNIT_TABLE {
            for s in *spellings {
                let got = ucum_unit(s, "");
                assert_eq!(got, Some(*code), "{s}");
            }
        }
    }

    #[test]
    fn loinc_check_digits() {
        for code in [
            "2951-2", "2823-3", "6298-4", "2345-7", "2339-0", "718-7", "777-3", "6598-7",
            "10839-9", "89579-7", "2524-7", "32693-4", "6301-6", "625-4", "1554-5", "26464-8",
        ] {
            assert!(is_loinc_code(code), "{code}");
        }
        for code in [
            "2951-3",
            "718-8",
            "2951",
            "-2",
            "12345678-1",
            "ab-1",
            "718-77",
            "",
        ] {
            assert!(!is_loinc_code(code), "{code}");
        }
    }

    #[test]
    fn the_docs_show_every_unit_row() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/laboratory.md");
        let docs = std::fs::read_to_string(path).unwrap();
        let table = docs
            .split("<!-- units:begin")
            .nth(1)
            .and_then(|t| t.split("<!-- units:end -->").next())
            .unwrap();
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(rows.len(), UNIT_TABLE.len(), "one row per UCUM unit");
        for ((code, spellings), row) in UNIT_TABLE.iter().zip(&rows) {
            let listed: Vec<String> = spellings.iter().map(|s| format!("`{s}`")).collect();
            assert_eq!(
                *row,
                format!("| `{code}` | {} |", listed.join(", ")),
                "docs/laboratory.md, in the table's order"
            );
        }
    }

    #[test]
    fn statuses_and_flags_map() {
        assert_eq!(LabStatus::from_v2("C"), Some(LabStatus::Corrected));
        assert_eq!(LabStatus::from_v2("X"), Some(LabStatus::Cancelled));
        assert_eq!(LabStatus::from_v2("I"), None);
        assert_eq!(interpretation_from_v2("HH"), Some(("HH", "Critical high")));
        assert_eq!(interpretation_from_v2("<"), Some(("LL", "Critical low")));
        assert_eq!(interpretation_from_v2("ZZ"), None);
    }
}
