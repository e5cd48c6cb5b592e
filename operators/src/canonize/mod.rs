//! Canonization: de-identified records to FHIR R4 resources with typed columns.
//!
//! * [`DeidRecord::Patient`] → a `Patient` tagged `PSEUDED`, with the birth year only, the
//!   deceased flag, state / ZIP3 / country, and an age-group extension for patients over 89.
//!   Partitioned by the `recorded_at` date (UTC).
//! * [`DeidRecord::Vital`] → an `Observation` following the FHIR R4 vital-signs profile of its
//!   kind, valued in UCUM; blood pressure as systolic / diastolic components. Partitioned by the
//!   effective date (UTC).
//!
//! The JSON is compact, with members in a fixed order (`resourceType` first).

mod json;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use thiserror::Error;
use vitalflow_model::canonical::{CanonicalResource, Columns, ObservationColumns, PatientColumns};
use vitalflow_model::deid::{DeidPatient, DeidRecord, DeidVital};
use vitalflow_model::vitals::{
    DIASTOLIC_LOINC, SPO2_ARTERIAL_LOINC, SYSTOLIC_LOINC, VitalKind, VitalValue,
};

use self::json::{
    Address, CodeableConcept, Coding, Component, Extension, Meta, Observation, Patient, Quantity,
    Reference,
};

/// URL of the extension carrying the age group of patients over 89.
pub const AGE_GROUP_EXTENSION: &str = "https://vitalflow.dev/fhir/StructureDefinition/age-group";
/// The LOINC code system.
pub const LOINC: &str = "http://loinc.org";
/// The UCUM code system.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// Display of the systolic component.
pub const SYSTOLIC_DISPLAY: &str = "Systolic blood pressure";
/// Display of the diastolic component.
pub const DIASTOLIC_DISPLAY: &str = "Diastolic blood pressure";
/// Display of the second SpO2 coding (2708-6).
pub const SPO2_ARTERIAL_DISPLAY: &str = "Oxygen saturation in Arterial blood";

/// A de-identified record that cannot be canonized. Messages never contain values.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CanonizeError {
    /// The record has no pseudonym (or no id).
    #[error("{field}: empty")]
    EmptyId {
        /// The field.
        field: &'static str,
    },
    /// A value is NaN or infinite.
    #[error("{field}: not a finite number")]
    NotFinite {
        /// The field.
        field: &'static str,
    },
    /// A year FHIR cannot represent (outside 0001..=9999).
    #[error("{field}: year outside 0001..=9999")]
    YearOutOfRange {
        /// The field.
        field: &'static str,
    },
    /// JSON serialization failed.
    #[error("cannot serialize the FHIR resource: {0}")]
    Json(String),
}

/// Canonizes one de-identified record into a FHIR R4 resource with typed columns.
///
/// # Errors
/// [`CanonizeError`] for an empty pseudonym or id, a non-finite value, or a year FHIR cannot
/// represent.
pub fn canonize(rec: &DeidRecord) -> Result<CanonicalResource, CanonizeError> {
    if rec.pseudonym().is_empty() {
        return Err(CanonizeError::EmptyId { field: "pseudonym" });
    }
    match rec {
        DeidRecord::Patient(p) => patient(p),
        DeidRecord::Vital(v) => observation(v),
    }
}

fn patient(p: &DeidPatient) -> Result<CanonicalResource, CanonizeError> {
    let birth_date = p
        .birth_year
        .map(|y| year_text(y, "birth_year"))
        .transpose()?;
    let address = Address {
        state: p.state.as_deref(),
        postal_code: p.zip3.as_deref(),
        country: p.country.as_deref(),
    };
    let resource = Patient {
        resource_type: "Patient",
        id: &p.pseudonym,
        meta: Meta::pseudonymized(None),
        gender: p.gender.map(|g| g.as_str()),
        birth_date,
        deceased_boolean: p.deceased,
        address: if address.is_empty() {
            Vec::new()
        } else {
            vec![address]
        },
        extension: p
            .age_group
            .as_deref()
            .map(|g| Extension {
                url: AGE_GROUP_EXTENSION,
                value_string: g,
            })
            .into_iter()
            .collect(),
    };
    Ok(CanonicalResource {
        id: p.pseudonym.clone(),
        patient: p.pseudonym.clone(),
        date: p.recorded_at.date_naive(),
        columns: Columns::Patient(PatientColumns {
            gender: p.gender.map(|g| g.as_str().to_owned()),
            birth_year: p.birth_year,
            age_group: p.age_group.clone(),
            deceased: p.deceased,
            state: p.state.clone(),
            zip3: p.zip3.clone(),
            country: p.country.clone(),
        }),
        resource: to_json(&resource)?,
    })
}

fn observation(v: &DeidVital) -> Result<CanonicalResource, CanonizeError> {
    if v.id.is_empty() {
        return Err(CanonizeError::EmptyId { field: "id" });
    }
    let code = v.kind.code();
    let mut coding = vec![Coding::new(LOINC, code.loinc, code.display)];
    if v.kind == VitalKind::Spo2 {
        coding.push(Coding::new(
            LOINC,
            SPO2_ARTERIAL_LOINC,
            SPO2_ARTERIAL_DISPLAY,
        ));
    }
    let quantity = |value: f64, field| -> Result<Quantity, CanonizeError> {
        Ok(Quantity {
            value: round(value, field)?,
            unit: code.ucum,
            system: UCUM,
            code: code.ucum,
        })
    };
    let (value_quantity, component, columns) = match v.value {
        VitalValue::Quantity { value } => {
            let q = quantity(value, "value")?;
            let value = q.value;
            (Some(q), Vec::new(), (Some(value), None, None))
        }
        VitalValue::BloodPressure {
            systolic,
            diastolic,
        } => {
            let s = quantity(systolic, "systolic")?;
            let d = quantity(diastolic, "diastolic")?;
            let cols = (None, Some(s.value), Some(d.value));
            let component = vec![
                Component::new(SYSTOLIC_LOINC, SYSTOLIC_DISPLAY, s),
                Component::new(DIASTOLIC_LOINC, DIASTOLIC_DISPLAY, d),
            ];
            (None, component, cols)
        }
    };
    let effective = effective_text(v.effective)?;
    let resource = Observation {
        resource_type: "Observation",
        id: &v.id,
        meta: Meta::pseudonymized(Some(v.kind.profile_url())),
        status: "final",
        category: vec![CodeableConcept::vital_signs()],
        code: CodeableConcept {
            coding,
            text: code.display,
        },
        subject: Reference {
            reference: format!("Patient/{}", v.pseudonym),
        },
        effective_date_time: effective,
        value_quantity,
        component,
    };
    Ok(CanonicalResource {
        id: v.id.clone(),
        patient: v.pseudonym.clone(),
        date: v.effective.date_naive(),
        columns: Columns::Observation(ObservationColumns {
            code: code.loinc.to_owned(),
            display: code.display.to_owned(),
            value: columns.0,
            unit: code.ucum.to_owned(),
            systolic: columns.1,
            diastolic: columns.2,
            effective_us: v.effective.timestamp_micros(),
        }),
        resource: to_json(&resource)?,
    })
}

/// `value` rounded to 2 decimals.
fn round(value: f64, field: &'static str) -> Result<f64, CanonizeError> {
    let r = (value * 100.0).round() / 100.0;
    if r.is_finite() {
        // No negative zero in the output.
        Ok(r + 0.0)
    } else {
        Err(CanonizeError::NotFinite { field })
    }
}

fn year_text(year: i32, field: &'static str) -> Result<String, CanonizeError> {
    if (1..=9999).contains(&year) {
        Ok(format!("{year:04}"))
    } else {
        Err(CanonizeError::YearOutOfRange { field })
    }
}

fn effective_text(t: DateTime<Utc>) -> Result<String, CanonizeError> {
    year_text(t.year(), "effective")?;
    Ok(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn to_json<T: serde::Serialize>(resource: &T) -> Result<String, CanonizeError> {
    serde_json::to_string(resource).map_err(|e| CanonizeError::Json(e.to_string()))
}

#[cfg(test)]
mod tests;
