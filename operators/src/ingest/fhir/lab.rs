//! FHIR R4 laboratory Observations (category `laboratory`, a LOINC code that is not a vital
//! sign) as [`LabRecord`]s.
//!
//! * `status`: every Observation status but `registered` (no result yet);
//! * `code`: the first LOINC coding, its display (else `code.text`);
//! * the value: `valueQuantity` (`value`, `comparator`; the unit is its `code` when `system` is
//!   UCUM, else `unit` mapped with [`vitalflow_model::lab::ucum_unit`], kept and flagged when
//!   unknown), `valueInteger` (no unit), `valueCodeableConcept` (the first coding with a code,
//!   else its `text` as a text result), `valueString`; none with a `dataAbsentReason`, or for a
//!   cancelled result or one entered in error;
//! * `referenceRange[0]` low and high values, `interpretation[0]` (v3-ObservationInterpretation
//!   codes), `issued`, `note[].text`; the identity is the resource id.

use serde_json::Value;
use vitalflow_model::clinical::LabRecord;
use vitalflow_model::lab::{
    Comparator, LabStatus, LabUnit, LabValue, ReferenceRange, interpretation_from_fhir,
};

use super::{LOINC_SYSTEM, effective, patient_ref};
use crate::ingest::json::{Obj, Reason, get, obj_items, opt_f64, opt_obj, opt_text, req_str};
use crate::ingest::{safe_code, time};

const O: &str = "Observation";
/// The observation-category code system.
const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
/// The UCUM code system.
const UCUM_SYSTEM: &str = "http://unitsofmeasure.org";

/// Whether the Observation's `category` includes `laboratory`.
pub(super) fn is_laboratory(r: &Obj) -> bool {
    let Some(Value::Array(categories)) = get(r, "category") else {
        return false;
    };
    categories
        .iter()
        .filter_map(|c| c.get("coding")?.as_array())
        .flatten()
        .any(|coding| {
            coding.get("code").and_then(Value::as_str) == Some("laboratory")
                && coding
                    .get("system")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s == CATEGORY_SYSTEM)
        })
}

/// A laboratory Observation as a [`LabRecord`].
pub(super) fn observation(r: &Obj) -> Result<LabRecord, Reason> {
    let status = match opt_text(r, O, "status")? {
        None => return Err("Observation.status: missing".to_owned()),
        Some("registered") => {
            return Err("Observation.status: a registered result carries no value yet".to_owned());
        }
        Some(s) => LabStatus::from_fhir(s.trim()).ok_or_else(|| {
            format!(
                "Observation.status: `{}` is not an Observation status",
                safe_code(s)
            )
        })?,
    };
    let concept = opt_obj(r, O, "code")?.ok_or_else(|| "Observation.code: missing".to_owned())?;
    let (code, display) = loinc(concept)?.ok_or_else(|| {
        "Observation.code: no LOINC coding (a laboratory result needs one)".to_owned()
    })?;
    let subject =
        opt_obj(r, O, "subject")?.ok_or_else(|| "Observation.subject: missing".to_owned())?;
    let patient_id = patient_ref(req_str(subject, "Observation.subject", "reference")?)
        .ok_or_else(|| "Observation.subject.reference: not a Patient reference".to_owned())?;
    let effective = effective(r)?;
    let issued = opt_text(r, O, "issued")?
        .map(|s| {
            time::instant(s).ok_or_else(|| "Observation.issued: not a FHIR instant".to_owned())
        })
        .transpose()?;
    let value = value(r, &code, status)?;
    let mut reference_range = ReferenceRange::default();
    if let Some((path, range)) = obj_items(r, O, "referenceRange")?.into_iter().next() {
        let limit = |key: &str| -> Result<Option<f64>, Reason> {
            match opt_obj(range, &path, key)? {
                Some(q) => opt_f64(q, &format!("{path}.{key}"), "value"),
                None => Ok(None),
            }
        };
        reference_range = ReferenceRange {
            low: limit("low")?,
            high: limit("high")?,
        };
    }
    let mut interpretation = None;
    if let Some((path, concept)) = obj_items(r, O, "interpretation")?.into_iter().next() {
        for (cpath, coding) in obj_items(concept, &path, "coding")? {
            if let Some((code, _)) =
                opt_text(coding, &cpath, "code")?.and_then(|c| interpretation_from_fhir(c.trim()))
            {
                interpretation = Some(code.to_owned());
                break;
            }
        }
    }
    let mut notes = Vec::new();
    for (path, note) in obj_items(r, O, "note")? {
        notes.extend(opt_text(note, &path, "text")?.map(str::to_owned));
    }
    Ok(LabRecord {
        source_id: opt_text(r, O, "id")?.map(str::to_owned),
        patient_id,
        code,
        display,
        value,
        reference_range,
        interpretation,
        status,
        effective,
        issued,
        notes,
        mentioned: Vec::new(),
    })
}

/// The first LOINC coding of a CodeableConcept and its display (else the concept's text).
fn loinc(concept: &Obj) -> Result<Option<(String, Option<String>)>, Reason> {
    let text = opt_text(concept, "Observation.code", "text")?;
    for (path, coding) in obj_items(concept, "Observation.code", "coding")? {
        if opt_text(coding, &path, "system")?.map(str::trim) == Some(LOINC_SYSTEM)
            && let Some(code) = opt_text(coding, &path, "code")?
        {
            let display = opt_text(coding, &path, "display")?.or(text);
            return Ok(Some((code.trim().to_owned(), display.map(str::to_owned))));
        }
    }
    Ok(None)
}

/// The value of a laboratory Observation.
fn value(r: &Obj, loinc: &str, status: LabStatus) -> Result<LabValue, Reason> {
    if let Some(q) = opt_obj(r, O, "valueQuantity")? {
        const Q: &str = "Observation.valueQuantity";
        let value = opt_f64(q, Q, "value")?
            .ok_or_else(|| "Observation.valueQuantity.value: missing".to_owned())?;
        let comparator = match opt_text(q, Q, "comparator")? {
            None => None,
            Some(c) => Some(Comparator::parse(c).ok_or_else(|| {
                "Observation.valueQuantity.comparator: not <, <=, >= or >".to_owned()
            })?),
        };
        let code = opt_text(q, Q, "code")?.map(str::trim);
        let text = opt_text(q, Q, "unit")?.map(str::trim);
        let ucum = opt_text(q, Q, "system")?.map(str::trim) == Some(UCUM_SYSTEM);
        let unit = match (code, text) {
            (Some(code), text) if ucum => LabUnit {
                text: text.unwrap_or(code).to_owned(),
                ucum: Some(code.to_owned()),
            },
            (code, text) => LabUnit::map(code.or(text).unwrap_or_default(), loinc),
        };
        return Ok(LabValue::Quantity {
            value,
            comparator,
            unit,
        });
    }
    if let Some(Value::Number(n)) = get(r, "valueInteger") {
        let value = n
            .as_f64()
            .ok_or_else(|| "Observation.valueInteger: not a number".to_owned())?;
        return Ok(LabValue::Quantity {
            value,
            comparator: None,
            unit: LabUnit::map("", loinc),
        });
    }
    if let Some(c) = opt_obj(r, O, "valueCodeableConcept")? {
        const C: &str = "Observation.valueCodeableConcept";
        for (path, coding) in obj_items(c, C, "coding")? {
            if let Some(code) = opt_text(coding, &path, "code")? {
                return Ok(LabValue::Coded {
                    system: opt_text(coding, &path, "system")?.map(|s| s.trim().to_owned()),
                    code: code.trim().to_owned(),
                    display: opt_text(coding, &path, "display")?.map(str::to_owned),
                });
            }
        }
        if let Some(text) = opt_text(c, C, "text")? {
            return Ok(LabValue::Text(text.to_owned()));
        }
        return Err(format!("{C}: neither a coding with a code nor text"));
    }
    if let Some(text) = opt_text(r, O, "valueString")? {
        return Ok(LabValue::Text(text.to_owned()));
    }
    if let Some(other) = r
        .keys()
        .find(|k| k.starts_with("value") && k.len() > "value".len())
    {
        return Err(format!(
            "Observation.{}: this value type is not supported for laboratory results \
             (valueQuantity, valueInteger, valueCodeableConcept and valueString are)",
            safe_code(other)
        ));
    }
    if get(r, "dataAbsentReason").is_some() || status.may_lack_value() {
        return Ok(LabValue::Absent);
    }
    Err("Observation.value[x]: missing (and no dataAbsentReason)".to_owned())
}
