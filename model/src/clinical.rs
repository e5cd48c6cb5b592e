//! Records as ingestion parsed them. **These hold PHI**: they exist only between ingestion and
//! anonymization, and no sink accepts them.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::vitals::{VitalKind, VitalValue};

/// Administrative gender, as FHIR R4 codes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// `male`
    Male,
    /// `female`
    Female,
    /// `other`
    Other,
    /// `unknown`
    Unknown,
}

impl Gender {
    /// Parses FHIR codes and the usual abbreviations (`M`, `F`, `O`, `U`), case-insensitively.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "male" | "m" => Some(Self::Male),
            "female" | "f" => Some(Self::Female),
            "other" | "o" => Some(Self::Other),
            "unknown" | "u" => Some(Self::Unknown),
            _ => None,
        }
    }

    /// The FHIR code.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Male => "male",
            Self::Female => "female",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }
}

/// A postal address (PHI).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street lines.
    pub lines: Vec<String>,
    /// City.
    pub city: Option<String>,
    /// State or province.
    pub state: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// Country.
    pub country: Option<String>,
}

/// A patient demographic record (PHI).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatientRecord {
    /// The source system's patient id.
    pub patient_id: String,
    /// Medical record number.
    pub mrn: Option<String>,
    /// Social security number.
    pub ssn: Option<String>,
    /// Other identifiers (driver's licence, passport, insurance member ids, ...).
    pub other_identifiers: Vec<String>,
    /// Given names.
    pub given: Vec<String>,
    /// Family name.
    pub family: Option<String>,
    /// Birth date.
    pub birth_date: Option<NaiveDate>,
    /// Date of death, if deceased.
    pub deceased: Option<NaiveDate>,
    /// Administrative gender.
    pub gender: Option<Gender>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Phone and fax numbers.
    pub phones: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// When the record was created or last updated at the source.
    pub recorded_at: DateTime<Utc>,
}

/// One vital-sign measurement (PHI: tied to a patient and a date).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitalRecord {
    /// The source system's id of the measurement, if it has one.
    pub source_id: Option<String>,
    /// The source system's patient id.
    pub patient_id: String,
    /// What was measured.
    pub kind: VitalKind,
    /// The value, already normalized to the kind's canonical UCUM unit.
    pub value: VitalValue,
    /// When it was measured.
    pub effective: DateTime<Utc>,
}

/// A clinical record as ingestion parsed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClinicalRecord {
    /// Patient demographics.
    Patient(PatientRecord),
    /// A vital-sign measurement.
    Vital(VitalRecord),
}

impl ClinicalRecord {
    /// The source patient id (used to route a patient's records to one worker).
    #[must_use]
    pub fn patient_id(&self) -> &str {
        match self {
            Self::Patient(p) => &p.patient_id,
            Self::Vital(v) => &v.patient_id,
        }
    }
}

/// A parsed record with where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ingested {
    /// Source node name.
    pub source: String,
    /// `path:line`, `generator#n`, ...
    pub location: String,
    /// Position in the source, and index within that raw record (a Bundle yields many).
    pub sequence: (u64, u32),
    /// The record.
    pub record: ClinicalRecord,
}
