//! Records after anonymization: no direct identifiers, pseudonymous patient ids, generalized or
//! shifted dates, ZIP3. Everything downstream of the anonymization stage sees only these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clinical::Gender;
use crate::vitals::{VitalKind, VitalValue};

/// The age group reported instead of a birth year for patients over 89.
pub const AGE_90_OR_OLDER: &str = "90 or older";

/// A de-identified patient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeidPatient {
    /// Keyed HMAC-SHA256 pseudonym of the source patient id.
    pub pseudonym: String,
    /// Birth year; `None` when unknown or when the patient is over 89.
    pub birth_year: Option<i32>,
    /// `Some("90 or older")` for patients over 89.
    pub age_group: Option<String>,
    /// Year of death, if deceased (and not over 89).
    pub deceased_year: Option<i32>,
    /// Whether the patient is deceased.
    pub deceased: bool,
    /// Administrative gender.
    pub gender: Option<Gender>,
    /// State (kept by Safe Harbor).
    pub state: Option<String>,
    /// First three digits of the ZIP code, `000` for restricted ZIP3s.
    pub zip3: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// When the record was recorded, with the patient's date policy applied.
    pub recorded_at: DateTime<Utc>,
}

/// A de-identified vital-sign measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeidVital {
    /// Pseudonymous, deterministic id of the measurement.
    pub id: String,
    /// The patient's pseudonym.
    pub pseudonym: String,
    /// What was measured.
    pub kind: VitalKind,
    /// The value in the kind's canonical unit.
    pub value: VitalValue,
    /// When it was measured, with the patient's date policy applied.
    pub effective: DateTime<Utc>,
}

/// A de-identified record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DeidRecord {
    /// Patient demographics.
    Patient(DeidPatient),
    /// A vital-sign measurement.
    Vital(DeidVital),
}

impl DeidRecord {
    /// The patient's pseudonym.
    #[must_use]
    pub fn pseudonym(&self) -> &str {
        match self {
            Self::Patient(p) => &p.pseudonym,
            Self::Vital(v) => &v.pseudonym,
        }
    }
}
