//! Canonization: de-identified records to FHIR R4 resources with typed columns.
//!
//! * [`DeidRecord::Patient`] → a `Patient` tagged `PSEUDED`, with the birth year only, the
//!   deceased flag, state / ZIP3 / country, and an age-group extension for patients over 89.
//!   Partitioned by the `recorded_at` date (UTC).
//! * [`DeidRecord::Vital`] → an `Observation` following the FHIR R4 vital-signs profile of its
//!   kind, valued in UCUM; blood pressure as systolic / diastolic components. Partitioned by the
//!   effective date (UTC).
//!
//! * [`DeidRecord::Lab`] → an `Observation` of category `laboratory` (see [`lab`]).
//!
//! * [`DeidRecord::Encounter`] → an `Encounter`: status from the event (admit, transfer →
//!   `in-progress`; register → `arrived`; discharge → `finished`), `class` from the HL7 v2
//!   patient class (v3 ActCode `IMP`, `AMB`, `EMER`, `PRENC`, else the v2-0004 code), the period
//!   and the ward as `location.display`. Partitioned by the start date (else the recorded date).
//!
//! Identifiers a job keeps or crypto-hashes go to `Patient.identifier` (system
//! `urn:vitalflow:id:<class>` or `urn:vitalflow:hashed:<class>`) and `Observation.device`; kept
//! names, telecom and address parts to their FHIR elements; scrubbed notes to `Observation.note`.
//!
//! The JSON is compact, with members in a fixed order (`resourceType` first).

mod json;
pub mod lab;

use std::borrow::Cow;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use thiserror::Error;
use vitalflow_model::canonical::{
    CanonicalResource, Columns, EncounterColumns, ObservationColumns, PatientColumns,
};
use vitalflow_model::clinical::EncounterEvent;
use vitalflow_model::deid::{DeidEncounter, DeidIdentifier, DeidPatient, DeidRecord, DeidVital};
use vitalflow_model::vitals::{
    DIASTOLIC_LOINC, SPO2_ARTERIAL_LOINC, SYSTOLIC_LOINC, VitalKind, VitalValue,
};

use self::json::{
    Address, Annotation, CodeableConcept, Coding, Component, ContactPoint, Encounter,
    EncounterLocation, Extension, HumanName, Identifier, IdentifierReference, LocationDisplay,
    Meta, Observation, OwnedCoding, Patient, Period, Quantity, Reference, TypeText,
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
        DeidRecord::Encounter(e) => encounter(e),
        DeidRecord::Lab(l) => lab::observation(l),
    }
}

fn patient(p: &DeidPatient) -> Result<CanonicalResource, CanonizeError> {
    let kept = &p.kept;
    let birth_date = match kept.birth_date {
        Some(d) => {
            year_text(d.year(), "birth_date")?;
            Some(d.format("%Y-%m-%d").to_string())
        }
        None => p
            .birth_year
            .map(|y| year_text(y, "birth_year"))
            .transpose()?,
    };
    let address = Address {
        line: &kept.lines,
        city: kept.city.as_deref(),
        district: kept.district.as_deref(),
        state: p.state.as_deref(),
        postal_code: kept.postal_code.as_deref().or(p.zip3.as_deref()),
        country: p.country.as_deref(),
    };
    let resource = Patient {
        resource_type: "Patient",
        id: &p.pseudonym,
        meta: Meta::pseudonymized(None),
        identifier: p.identifiers.iter().map(identifier).collect(),
        name: kept
            .names
            .iter()
            .map(|(family, given)| HumanName {
                family: family.as_deref(),
                given,
            })
            .collect(),
        telecom: kept
            .telecom
            .iter()
            .map(|(system, value)| ContactPoint { system, value })
            .collect(),
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
        device: v.device.as_ref().map(|d| IdentifierReference {
            identifier: identifier(d),
        }),
        note: v.notes.iter().map(|text| Annotation { text }).collect(),
    };
    Ok(CanonicalResource {
        id: v.id.clone(),
        patient: v.pseudonym.clone(),
        date: v.effective.date_naive(),
        columns: Columns::Observation(ObservationColumns {
            code: Cow::Borrowed(code.loinc),
            display: Cow::Borrowed(code.display),
            value: columns.0,
            unit: Cow::Borrowed(code.ucum),
            unit_ucum: true,
            category: Cow::Borrowed("vital-signs"),
            status: Cow::Borrowed("final"),
            value_text: None,
            interpretation: None,
            ref_low: None,
            ref_high: None,
            systolic: columns.1,
            diastolic: columns.2,
            effective_us: v.effective.timestamp_micros(),
        }),
        resource: to_json(&resource)?,
    })
}

/// A kept or crypto-hashed identifier: `system` names its class, and says whether it is hashed.
fn identifier(i: &DeidIdentifier) -> Identifier<'_> {
    let how = if i.hashed { "hashed" } else { "id" };
    Identifier {
        type_: TypeText {
            text: i.class.as_str(),
        },
        system: format!("urn:vitalflow:{how}:{}", i.class.as_str()),
        value: &i.value,
    }
}

/// The FHIR status of an encounter after its event.
const fn encounter_status(e: &DeidEncounter) -> &'static str {
    match e.event {
        EncounterEvent::Discharge => "finished",
        EncounterEvent::Register => "arrived",
        EncounterEvent::Update if e.end.is_some() => "finished",
        EncounterEvent::Admit | EncounterEvent::Transfer | EncounterEvent::Update => "in-progress",
    }
}

/// The `Encounter.class` of an HL7 v2 patient class (table 0004): a v3 ActCode where one fits,
/// else the v2 code itself.
fn encounter_class(code: &str) -> (&'static str, &str, Option<&'static str>) {
    const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    match code {
        "I" | "B" => (ACT, "IMP", Some("inpatient encounter")),
        "O" | "R" => (ACT, "AMB", Some("ambulatory")),
        "E" => (ACT, "EMER", Some("emergency")),
        "P" => (ACT, "PRENC", Some("pre-admission")),
        _ => (
            "http://terminology.hl7.org/CodeSystem/v2-0004",
            if code.len() <= 8 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                code
            } else {
                "U"
            },
            None,
        ),
    }
}

fn encounter(e: &DeidEncounter) -> Result<CanonicalResource, CanonizeError> {
    if e.id.is_empty() {
        return Err(CanonizeError::EmptyId { field: "id" });
    }
    let (system, code, display) = encounter_class(&e.class);
    let start = e.start.map(effective_text).transpose()?;
    let end = e.end.map(effective_text).transpose()?;
    let status = encounter_status(e);
    let resource = Encounter {
        resource_type: "Encounter",
        id: &e.id,
        meta: Meta::pseudonymized(None),
        status,
        class: OwnedCoding {
            system,
            code,
            display,
        },
        subject: Reference {
            reference: format!("Patient/{}", e.pseudonym),
        },
        period: (start.is_some() || end.is_some()).then(|| Period {
            start: start.clone(),
            end: end.clone(),
        }),
        location: e
            .ward
            .as_deref()
            .map(|display| EncounterLocation {
                location: LocationDisplay { display },
            })
            .into_iter()
            .collect(),
    };
    Ok(CanonicalResource {
        id: e.id.clone(),
        patient: e.pseudonym.clone(),
        date: e.start.unwrap_or(e.recorded_at).date_naive(),
        columns: Columns::Encounter(EncounterColumns {
            event: e.event.as_str().to_owned(),
            status: status.to_owned(),
            class: code.to_owned(),
            ward: e.ward.clone(),
            start_us: e.start.map(|t| t.timestamp_micros()),
            end_us: e.end.map(|t| t.timestamp_micros()),
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
    vitalflow_model::json::to_string(resource).map_err(|e| CanonizeError::Json(e.to_string()))
}

#[cfg(test)]
mod tests;
