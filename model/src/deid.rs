//! Records after anonymization: no direct identifiers, pseudonymous patient ids, generalized or
//! shifted dates, ZIP3. Everything downstream of the anonymization stage sees only these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clinical::{EncounterEvent, Gender, IdClass};
use crate::lab::{LabStatus, LabValue, ReferenceRange};
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
    /// Identifiers whose class the job keeps or crypto-hashes (none under the defaults).
    #[serde(default)]
    pub identifiers: Vec<DeidIdentifier>,
    /// What the job keeps of the identifiers Safe Harbor removes (`keep` actions; empty under
    /// the defaults). A record with any of it is not Safe Harbor de-identified.
    #[serde(default)]
    pub kept: KeptPhi,
}

/// An identifier after its class's action: a keyed hash, or the value kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeidIdentifier {
    /// Its class.
    pub class: IdClass,
    /// The keyed hash (32 hex digits) or, under `keep`, the value.
    pub value: String,
    /// Whether `value` is a keyed hash.
    pub hashed: bool,
}

/// Identifiers a job chose to keep (`keep` actions).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptPhi {
    /// Family name and given names, one entry per source name.
    pub names: Vec<(Option<String>, Vec<String>)>,
    /// Street lines, city and county of the first address.
    pub lines: Vec<String>,
    /// City.
    pub city: Option<String>,
    /// County or district.
    pub district: Option<String>,
    /// The whole postal code.
    pub postal_code: Option<String>,
    /// The whole birth date.
    pub birth_date: Option<chrono::NaiveDate>,
    /// Telecom: (FHIR `ContactPoint.system`, value).
    pub telecom: Vec<(String, String)>,
}

impl KeptPhi {
    /// Whether nothing is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
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
    /// The measuring device's identifier after its action (keyed hash or kept), if any.
    #[serde(default)]
    pub device: Option<DeidIdentifier>,
    /// Free-text notes after the free-text action (scrubbed), empty when dropped.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A de-identified laboratory result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeidLab {
    /// Pseudonymous, deterministic id of the result: a correction has the id of the result it
    /// corrects.
    pub id: String,
    /// The patient's pseudonym.
    pub pseudonym: String,
    /// LOINC code.
    pub code: String,
    /// The code's display name.
    pub display: Option<String>,
    /// The value; a text value after the free-text action ([`LabValue::Absent`] when dropped).
    pub value: LabValue,
    /// Whether a text value was dropped by the free-text action.
    pub value_masked: bool,
    /// The reference range.
    pub reference_range: ReferenceRange,
    /// The FHIR `v3-ObservationInterpretation` code.
    pub interpretation: Option<String>,
    /// The status.
    pub status: LabStatus,
    /// When it was observed, with the patient's date policy applied.
    pub effective: DateTime<Utc>,
    /// When it was released, with the patient's date policy applied.
    pub issued: Option<DateTime<Utc>>,
    /// Free-text notes after the free-text action (scrubbed), empty when dropped.
    pub notes: Vec<String>,
}

/// A de-identified encounter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeidEncounter {
    /// Pseudonymous, deterministic id of the encounter (a keyed hash of the visit number).
    pub id: String,
    /// The patient's pseudonym.
    pub pseudonym: String,
    /// The event that produced the record.
    pub event: EncounterEvent,
    /// The source patient class code (HL7 table 0004).
    pub class: String,
    /// Start, with the patient's date policy applied.
    pub start: Option<DateTime<Utc>>,
    /// End, with the patient's date policy applied.
    pub end: Option<DateTime<Utc>>,
    /// The point of care (ward or unit code).
    pub ward: Option<String>,
    /// When the event was recorded, with the patient's date policy applied.
    pub recorded_at: DateTime<Utc>,
}

/// A de-identified record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DeidRecord {
    /// Patient demographics.
    Patient(DeidPatient),
    /// A vital-sign measurement.
    Vital(DeidVital),
    /// An encounter.
    Encounter(DeidEncounter),
    /// A laboratory result.
    Lab(Box<DeidLab>),
}

impl DeidRecord {
    /// The patient's pseudonym.
    #[must_use]
    pub fn pseudonym(&self) -> &str {
        match self {
            Self::Patient(p) => &p.pseudonym,
            Self::Vital(v) => &v.pseudonym,
            Self::Encounter(e) => &e.pseudonym,
            Self::Lab(l) => &l.pseudonym,
        }
    }
}
