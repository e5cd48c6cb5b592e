//! FHIR R4 resources as the canonization stage emits them: typed columns for analytics plus the
//! full resource JSON.

use std::borrow::Cow;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The FHIR resource types vitalflow writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    /// `Patient`
    Patient,
    /// `Observation`
    Observation,
    /// `Encounter`
    Encounter,
}

impl ResourceType {
    /// The FHIR name, also the folder name under `canonical/`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "Patient",
            Self::Observation => "Observation",
            Self::Encounter => "Encounter",
        }
    }
}

/// Typed columns of a canonical Patient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatientColumns {
    /// FHIR `gender`.
    pub gender: Option<String>,
    /// Birth year (null for patients over 89).
    pub birth_year: Option<i32>,
    /// `90 or older` where the birth year is withheld.
    pub age_group: Option<String>,
    /// Whether the patient is deceased.
    pub deceased: bool,
    /// State.
    pub state: Option<String>,
    /// ZIP3.
    pub zip3: Option<String>,
    /// Country.
    pub country: Option<String>,
}

/// Typed columns of a canonical Observation: a vital sign or a laboratory result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservationColumns {
    /// LOINC code. For vital signs this and `display` and `unit` come from the vital-sign
    /// table, so they borrow its strings: an allocation each per row saved, and a sink reads
    /// them from one place.
    pub code: Cow<'static, str>,
    /// LOINC display.
    pub display: Cow<'static, str>,
    /// Value in `unit` (null for blood-pressure panels, which use the components, and for
    /// coded and text results, which use `value_text`).
    pub value: Option<f64>,
    /// UCUM unit code; for a lab result whose unit has no UCUM mapping, the source's unit text
    /// (and `unit_ucum` is false). Empty when the value has no unit.
    pub unit: Cow<'static, str>,
    /// Whether `unit` is a UCUM code.
    pub unit_ucum: bool,
    /// `Observation.category` code: `vital-signs` or `laboratory`.
    pub category: Cow<'static, str>,
    /// `Observation.status`.
    pub status: Cow<'static, str>,
    /// A coded result's code (`system|code`) or a text result.
    pub value_text: Option<String>,
    /// `interpretation` code (v3-ObservationInterpretation: `H`, `L`, `HH`, `LL`, `A`, `N`, ...).
    pub interpretation: Option<Cow<'static, str>>,
    /// `referenceRange.low`, in `unit`.
    pub ref_low: Option<f64>,
    /// `referenceRange.high`, in `unit`.
    pub ref_high: Option<f64>,
    /// Systolic component (blood-pressure panels only).
    pub systolic: Option<f64>,
    /// Diastolic component (blood-pressure panels only).
    pub diastolic: Option<f64>,
    /// `effectiveDateTime`, microseconds since the Unix epoch, UTC.
    pub effective_us: i64,
}

/// Typed columns of a canonical Encounter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncounterColumns {
    /// The event that produced it: `admit`, `transfer`, `discharge`, `register`, `update`.
    pub event: String,
    /// FHIR `status`.
    pub status: String,
    /// `class.code`.
    pub class: String,
    /// The point of care (`location.display`).
    pub ward: Option<String>,
    /// `period.start`, microseconds since the Unix epoch, UTC.
    pub start_us: Option<i64>,
    /// `period.end`, microseconds since the Unix epoch, UTC.
    pub end_us: Option<i64>,
}

/// The typed part of a canonical resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Columns {
    /// A Patient.
    Patient(PatientColumns),
    /// An Observation.
    Observation(ObservationColumns),
    /// An Encounter.
    Encounter(EncounterColumns),
}

/// A canonical FHIR R4 resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanonicalResource {
    /// The resource id.
    pub id: String,
    /// The pseudonymous patient id (the subject, or the Patient's own id).
    pub patient: String,
    /// The partition date: its month (`month=YYYY-MM`) or day (`date=YYYY-MM-DD`) names the
    /// resource's folder.
    pub date: NaiveDate,
    /// Typed columns.
    pub columns: Columns,
    /// The FHIR R4 JSON.
    pub resource: String,
}

impl CanonicalResource {
    /// The FHIR resource type.
    #[must_use]
    pub const fn resource_type(&self) -> ResourceType {
        match self.columns {
            Columns::Patient(_) => ResourceType::Patient,
            Columns::Observation(_) => ResourceType::Observation,
            Columns::Encounter(_) => ResourceType::Encounter,
        }
    }
}
