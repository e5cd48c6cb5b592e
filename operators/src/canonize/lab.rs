//! Laboratory results as FHIR R4 Observations of category `laboratory`.
//!
//! * `code`: the LOINC coding (with the source's display);
//! * the value: `valueQuantity` (UCUM system and code when the unit maps to UCUM; otherwise only
//!   `unit`, the source's text, and the Observation carries the [`UNIT_NOT_UCUM_EXTENSION`]),
//!   `valueCodeableConcept` for coded results, `valueString` for text results, and
//!   `dataAbsentReason` when there is no value (`masked`: a text result the free-text action
//!   dropped; `not-performed`: cancelled; `error`: entered in error);
//! * `referenceRange` low and high, in the value's unit; `interpretation` in
//!   `v3-ObservationInterpretation`; `status`; `issued` when known; scrubbed notes as `note`.
//!
//! The id is the de-identified result's: a corrected result has the id of the one it corrects,
//! so it replaces it in a store keyed by id. Partitioned by the effective date (UTC).

use std::borrow::Cow;

use chrono::SecondsFormat;
use serde::Serialize;
use vitalflow_model::canonical::{CanonicalResource, Columns, ObservationColumns};
use vitalflow_model::deid::DeidLab;
use vitalflow_model::lab::{LabStatus, LabUnit, LabValue, interpretation_from_fhir};

use super::json::{Annotation, CATEGORY_SYSTEM, Meta, Reference};
use super::{CanonizeError, LOINC, UCUM, effective_text, to_json};

/// URL of the extension that flags a result whose unit has no UCUM mapping (its value is the
/// unit as the source wrote it, which `valueQuantity.unit` also shows).
pub const UNIT_NOT_UCUM_EXTENSION: &str =
    "https://vitalflow.dev/fhir/StructureDefinition/unit-not-ucum";
/// The `v3-ObservationInterpretation` code system.
pub const INTERPRETATION_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
/// The data-absent-reason code system.
pub const DATA_ABSENT_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";

#[derive(Serialize)]
struct Coding<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'a str>,
}

#[derive(Serialize)]
struct Concept<'a> {
    coding: Vec<Coding<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

impl<'a> Concept<'a> {
    fn one(system: Option<&'a str>, code: &'a str, display: Option<&'a str>) -> Self {
        Self {
            coding: vec![Coding {
                system,
                code,
                display,
            }],
            text: None,
        }
    }
}

#[derive(Serialize)]
struct Quantity<'a> {
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    comparator: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

impl<'a> Quantity<'a> {
    fn new(value: f64, unit: &'a LabUnit) -> Self {
        let text = (!unit.text.is_empty()).then_some(unit.text.as_str());
        Self {
            value,
            comparator: None,
            unit: unit.ucum.as_deref().or(text),
            system: unit.ucum.as_ref().map(|_| UCUM),
            code: unit.ucum.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct Range<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    low: Option<Quantity<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    high: Option<Quantity<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Flag<'a> {
    url: &'static str,
    value_string: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LabObservation<'a> {
    resource_type: &'static str,
    id: &'a str,
    meta: Meta,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extension: Vec<Flag<'a>>,
    status: &'static str,
    category: [Concept<'static>; 1],
    code: Concept<'a>,
    subject: Reference,
    effective_date_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_quantity: Option<Quantity<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_codeable_concept: Option<Concept<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_string: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_absent_reason: Option<Concept<'static>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interpretation: Vec<Concept<'static>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    note: Vec<Annotation<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reference_range: Vec<Range<'a>>,
}

/// A number FHIR can carry (finite), with no negative zero.
fn finite(value: f64, field: &'static str) -> Result<f64, CanonizeError> {
    if value.is_finite() {
        Ok(value + 0.0)
    } else {
        Err(CanonizeError::NotFinite { field })
    }
}

/// The FHIR R4 laboratory Observation of a de-identified result, with its typed columns.
pub(super) fn observation(l: &DeidLab) -> Result<CanonicalResource, CanonizeError> {
    if l.id.is_empty() {
        return Err(CanonizeError::EmptyId { field: "id" });
    }
    if l.code.is_empty() {
        return Err(CanonizeError::EmptyId { field: "code" });
    }
    let display = l.display.as_deref().filter(|d| !d.is_empty());
    let interpretation = l
        .interpretation
        .as_deref()
        .and_then(interpretation_from_fhir);
    let no_unit = LabUnit {
        text: String::new(),
        ucum: None,
    };
    let unit = match &l.value {
        LabValue::Quantity { unit, .. } => unit,
        _ => &no_unit,
    };
    let mut resource = LabObservation {
        resource_type: "Observation",
        id: &l.id,
        meta: Meta::pseudonymized(None),
        extension: Vec::new(),
        status: l.status.as_str(),
        category: [Concept {
            coding: vec![Coding {
                system: Some(CATEGORY_SYSTEM),
                code: "laboratory",
                display: Some("Laboratory"),
            }],
            text: Some("Laboratory"),
        }],
        code: Concept {
            coding: vec![Coding {
                system: Some(LOINC),
                code: &l.code,
                display,
            }],
            text: display,
        },
        subject: Reference {
            reference: format!("Patient/{}", l.pseudonym),
        },
        effective_date_time: effective_text(l.effective)?,
        issued: l
            .issued
            .map(|t| -> Result<String, CanonizeError> {
                effective_text(t)?;
                Ok(t.to_rfc3339_opts(SecondsFormat::Millis, true))
            })
            .transpose()?,
        value_quantity: None,
        value_codeable_concept: None,
        value_string: None,
        data_absent_reason: None,
        interpretation: interpretation
            .map(|(code, display)| Concept::one(Some(INTERPRETATION_SYSTEM), code, Some(display)))
            .into_iter()
            .collect(),
        note: l.notes.iter().map(|text| Annotation { text }).collect(),
        reference_range: Vec::new(),
    };
    let mut columns = ObservationColumns {
        code: Cow::Owned(l.code.clone()),
        display: Cow::Owned(display.unwrap_or_default().to_owned()),
        value: None,
        unit: Cow::Owned(unit.display().to_owned()),
        unit_ucum: unit.ucum.is_some(),
        category: Cow::Borrowed("laboratory"),
        status: Cow::Borrowed(l.status.as_str()),
        value_text: None,
        interpretation: interpretation.map(|(code, _)| Cow::Borrowed(code)),
        ref_low: None,
        ref_high: None,
        systolic: None,
        diastolic: None,
        effective_us: l.effective.timestamp_micros(),
    };
    match &l.value {
        LabValue::Quantity {
            value,
            comparator,
            unit,
        } => {
            let value = finite(*value, "value")?;
            let mut q = Quantity::new(value, unit);
            q.comparator = comparator.map(|c| c.as_str());
            resource.value_quantity = Some(q);
            columns.value = Some(value);
            if unit.ucum.is_none() && !unit.text.is_empty() {
                resource.extension.push(Flag {
                    url: UNIT_NOT_UCUM_EXTENSION,
                    value_string: &unit.text,
                });
            }
        }
        LabValue::Coded {
            system,
            code,
            display,
        } => {
            resource.value_codeable_concept = Some(Concept {
                coding: vec![Coding {
                    system: system.as_deref(),
                    code,
                    display: display.as_deref(),
                }],
                text: display.as_deref(),
            });
            columns.value_text = Some(match system {
                Some(s) => format!("{s}|{code}"),
                None => code.clone(),
            });
        }
        LabValue::Text(text) => {
            resource.value_string = Some(text);
            columns.value_text = Some(text.clone());
        }
        LabValue::Absent => {
            let reason = if l.value_masked {
                ("masked", "Masked")
            } else if l.status == LabStatus::EnteredInError {
                ("error", "Error")
            } else {
                ("not-performed", "Not Performed")
            };
            resource.data_absent_reason = Some(Concept::one(
                Some(DATA_ABSENT_SYSTEM),
                reason.0,
                Some(reason.1),
            ));
        }
    }
    let range = &l.reference_range;
    if !range.is_empty() {
        let low = range.low.map(|v| finite(v, "ref_low")).transpose()?;
        let high = range.high.map(|v| finite(v, "ref_high")).transpose()?;
        columns.ref_low = low;
        columns.ref_high = high;
        resource.reference_range.push(Range {
            low: low.map(|v| Quantity::new(v, unit)),
            high: high.map(|v| Quantity::new(v, unit)),
        });
    }
    Ok(CanonicalResource {
        id: l.id.clone(),
        patient: l.pseudonym.clone(),
        date: l.effective.date_naive(),
        columns: Columns::Observation(columns),
        resource: to_json(&resource)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::Value;
    use vitalflow_model::deid::DeidRecord;
    use vitalflow_model::lab::{Comparator, ReferenceRange};

    use super::*;

    fn lab(value: LabValue) -> DeidLab {
        DeidLab {
            id: "0123456789abcdef0123456789abcdef".to_owned(),
            pseudonym: "p1".to_owned(),
            code: "2823-3".to_owned(),
            display: Some("Potassium".to_owned()),
            value,
            value_masked: false,
            reference_range: ReferenceRange {
                low: Some(3.5),
                high: Some(5.1),
            },
            interpretation: Some("HH".to_owned()),
            status: LabStatus::Corrected,
            effective: Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap(),
            issued: Some(Utc.with_ymd_and_hms(2026, 3, 1, 9, 30, 0).unwrap()),
            notes: vec!["haemolysed".to_owned()],
        }
    }

    fn canon(l: DeidLab) -> (Value, ObservationColumns) {
        let c = super::super::canonize(&DeidRecord::Lab(Box::new(l))).unwrap();
        let Columns::Observation(cols) = c.columns else {
            panic!("not an Observation")
        };
        (serde_json::from_str(&c.resource).unwrap(), cols)
    }

    fn mmol(value: f64, text: &str) -> LabValue {
        LabValue::Quantity {
            value,
            comparator: None,
            unit: LabUnit::map(text, "2823-3"),
        }
    }

    #[test]
    fn numeric_result_is_a_laboratory_observation_in_ucum() {
        let (r, cols) = canon(lab(mmol(6.8, "mEq/L")));
        assert_eq!(r["status"], "corrected");
        assert_eq!(r["category"][0]["coding"][0]["code"], "laboratory");
        assert_eq!(
            r["category"][0]["coding"][0]["system"],
            super::CATEGORY_SYSTEM
        );
        assert_eq!(r["code"]["coding"][0]["system"], LOINC);
        assert_eq!(r["code"]["coding"][0]["code"], "2823-3");
        let q = &r["valueQuantity"];
        assert_eq!(
            (q["value"].as_f64(), &q["system"], &q["code"]),
            (Some(6.8), &Value::from(UCUM), &Value::from("mmol/L"))
        );
        assert_eq!(r["referenceRange"][0]["low"]["value"], 3.5);
        assert_eq!(r["referenceRange"][0]["high"]["code"], "mmol/L");
        assert_eq!(r["interpretation"][0]["coding"][0]["code"], "HH");
        assert_eq!(
            r["interpretation"][0]["coding"][0]["system"],
            INTERPRETATION_SYSTEM
        );
        assert_eq!(r["issued"], "2026-03-01T09:30:00.000Z");
        assert_eq!(r["note"][0]["text"], "haemolysed");
        assert!(r.get("extension").is_none());
        assert_eq!(
            (
                cols.category.as_ref(),
                cols.status.as_ref(),
                cols.value,
                cols.unit.as_ref()
            ),
            ("laboratory", "corrected", Some(6.8), "mmol/L")
        );
        assert_eq!((cols.ref_low, cols.ref_high), (Some(3.5), Some(5.1)));
        assert_eq!(cols.interpretation.as_deref(), Some("HH"));
        assert!(cols.unit_ucum);
    }

    #[test]
    fn unmapped_unit_is_kept_and_flagged() {
        let (r, cols) = canon(lab(mmol(13.4, "g/l-1")));
        let q = &r["valueQuantity"];
        assert_eq!(q["unit"], "g/l-1");
        assert!(q.get("system").is_none() && q.get("code").is_none());
        assert_eq!(r["extension"][0]["url"], UNIT_NOT_UCUM_EXTENSION);
        assert_eq!(r["extension"][0]["valueString"], "g/l-1");
        assert_eq!((cols.unit.as_ref(), cols.unit_ucum), ("g/l-1", false));
        assert_eq!(r["referenceRange"][0]["low"]["unit"], "g/l-1");
    }

    #[test]
    fn comparator_coded_text_and_absent_values() {
        let mut v = mmol(0.04, "ng/mL");
        if let LabValue::Quantity { comparator, .. } = &mut v {
            *comparator = Some(Comparator::Less);
        }
        let (r, _) = canon(lab(v));
        assert_eq!(r["valueQuantity"]["comparator"], "<");
        let (r, cols) = canon(lab(LabValue::Coded {
            system: Some("http://snomed.info/sct".to_owned()),
            code: "260415000".to_owned(),
            display: Some("Not detected".to_owned()),
        }));
        assert_eq!(r["valueCodeableConcept"]["coding"][0]["code"], "260415000");
        assert!(r.get("valueQuantity").is_none());
        assert_eq!(
            cols.value_text.as_deref(),
            Some("http://snomed.info/sct|260415000")
        );
        assert_eq!(
            (cols.value, cols.unit.as_ref(), cols.unit_ucum),
            (None, "", false)
        );
        let (r, _) = canon(lab(LabValue::Text("Many spherocytes".to_owned())));
        assert_eq!(r["valueString"], "Many spherocytes");
        let mut masked = lab(LabValue::Absent);
        masked.value_masked = true;
        let (r, cols) = canon(masked);
        assert_eq!(r["dataAbsentReason"]["coding"][0]["code"], "masked");
        assert_eq!((cols.value, cols.value_text), (None, None));
        let mut cancelled = lab(LabValue::Absent);
        cancelled.status = LabStatus::Cancelled;
        let (r, _) = canon(cancelled);
        assert_eq!(r["dataAbsentReason"]["coding"][0]["code"], "not-performed");
        assert_eq!(r["status"], "cancelled");
    }

    #[test]
    fn non_finite_values_are_refused() {
        let l = lab(mmol(f64::NAN, "mmol/L"));
        assert!(super::super::canonize(&DeidRecord::Lab(Box::new(l))).is_err());
    }
}
