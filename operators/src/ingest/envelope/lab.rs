//! `lab_result_available`: one laboratory result ([`LabRecord`]).
//!
//! ```json
//! {"patientId": "P000000001", "resultId": "ORD-77/2823-3", "code": "2823-3",
//!  "display": "Potassium", "value": 6.8, "unit": "mEq/L", "referenceRange": {"low": 3.5,
//!  "high": 5.1}, "interpretation": "HH", "status": "final",
//!  "effectiveAt": "2026-01-01T08:00:00Z", "issuedAt": "2026-01-01T09:10:00Z"}
//! ```
//!
//! * `patientId`, `code` (a LOINC code), `effectiveAt` (RFC 3339): required;
//! * `status`: a FHIR Observation status (`preliminary`, `final`, `amended`, `corrected`,
//!   `cancelled`, `entered-in-error`, `unknown`) or an HL7 v2 result status (`P`, `F`, `C`,
//!   `X`, ...); default `final`;
//! * the value, one of: `value` (a number, with `unit` and an optional `comparator` `<`, `<=`,
//!   `>=`, `>`), `valueCode` (`{"system", "code", "display"}`), `valueText` (free text); none
//!   only for a cancelled result or one entered in error;
//! * `resultId` (the source's identity of the result: a correction carries the id of what it
//!   corrects), `display`, `referenceRange` (`{"low", "high"}`, numbers), `interpretation` (a
//!   v3-ObservationInterpretation or HL7 v2 table 0078 code), `issuedAt`, `note`: optional.

use serde_json::Value;
use vitalflow_model::clinical::LabRecord;
use vitalflow_model::lab::{
    Comparator, LabStatus, LabUnit, LabValue, ReferenceRange, interpretation_from_v2, is_loinc_code,
};

use super::Problems;
use crate::ingest::json::{Obj, get, opt_f64, opt_obj, opt_text, req_str};
use crate::ingest::{safe_code, time};

const P: &str = "payload";

/// The laboratory result of a `lab_result_available` payload; `None` with its problems noted.
pub(super) fn lab(p: &Obj, problems: &mut Problems) -> Option<LabRecord> {
    let patient_id = problems
        .take(req_str(p, P, "patientId"))
        .map(|s| s.trim().to_owned());
    let code = problems.take(req_str(p, P, "code")).and_then(|c| {
        let c = c.trim();
        problems.take(if is_loinc_code(c) {
            Ok(c.to_owned())
        } else {
            Err(format!(
                "payload.code: {} is not a LOINC code",
                safe_code(c)
            ))
        })
    });
    let status = match problems.take(opt_text(p, P, "status")).flatten() {
        None => Some(LabStatus::Final),
        Some(s) => problems.take(
            LabStatus::from_fhir(s.trim())
                .or_else(|| LabStatus::from_v2(s))
                .ok_or_else(|| {
                    format!(
                        "payload.status: {} is not a result status",
                        safe_code(s.trim())
                    )
                }),
        ),
    };
    let time_of = |key: &str, problems: &mut Problems| {
        problems.take(opt_text(p, P, key)).flatten().and_then(|s| {
            problems.take(
                time::rfc3339(s).ok_or_else(|| format!("payload.{key}: not an RFC 3339 date-time")),
            )
        })
    };
    let effective = time_of("effectiveAt", problems);
    if effective.is_none() && get(p, "effectiveAt").is_none() {
        problems.0.push("payload.effectiveAt: missing".to_owned());
    }
    let issued = time_of("issuedAt", problems);
    let value = value(p, code.as_deref().unwrap_or_default(), status, problems);
    let mut reference_range = ReferenceRange::default();
    if let Some(r) = problems.take(opt_obj(p, P, "referenceRange")).flatten() {
        const R: &str = "payload.referenceRange";
        reference_range.low = problems.take(opt_f64(r, R, "low")).flatten();
        reference_range.high = problems.take(opt_f64(r, R, "high")).flatten();
    }
    let interpretation = problems
        .take(opt_text(p, P, "interpretation"))
        .flatten()
        .and_then(|i| interpretation_from_v2(i.trim()))
        .map(|(code, _)| code.to_owned());
    let source_id = problems.text(p, P, "resultId");
    let display = problems.text(p, P, "display");
    let notes = problems.text(p, P, "note").into_iter().collect();
    if !problems.0.is_empty() {
        return None;
    }
    Some(LabRecord {
        source_id,
        patient_id: patient_id?,
        code: code?,
        display,
        value: value?,
        reference_range,
        interpretation,
        status: status?,
        effective: effective?,
        issued,
        notes,
        mentioned: Vec::new(),
    })
}

/// The value: exactly one of `value`, `valueCode`, `valueText` (or none, when the status
/// allows it).
fn value(
    p: &Obj,
    code: &str,
    status: Option<LabStatus>,
    problems: &mut Problems,
) -> Option<LabValue> {
    let given: Vec<&str> = ["value", "valueCode", "valueText"]
        .into_iter()
        .filter(|k| get(p, k).is_some_and(|v| !v.is_null()))
        .collect();
    match given.as_slice() {
        [] if status.is_some_and(LabStatus::may_lack_value) => Some(LabValue::Absent),
        [] => {
            problems.0.push(
                "payload: no value (value, valueCode or valueText; only a cancelled result or \
                 one entered in error may have none)"
                    .to_owned(),
            );
            None
        }
        ["value"] => {
            let value = problems.take(opt_f64(p, P, "value")).flatten()?;
            let unit = problems.take(opt_text(p, P, "unit")).flatten();
            let comparator = match problems.take(opt_text(p, P, "comparator")).flatten() {
                None => None,
                Some(c) => Some(
                    problems.take(
                        Comparator::parse(c)
                            .ok_or_else(|| "payload.comparator: not <, <=, >= or >".to_owned()),
                    )?,
                ),
            };
            Some(LabValue::Quantity {
                value,
                comparator,
                unit: LabUnit::map(unit.unwrap_or_default(), code),
            })
        }
        ["valueCode"] => {
            let c = problems.take(opt_obj(p, P, "valueCode")).flatten()?;
            const C: &str = "payload.valueCode";
            let code = problems.take(req_str(c, C, "code"))?.trim().to_owned();
            Some(LabValue::Coded {
                system: problems.text(c, C, "system"),
                code,
                display: problems.text(c, C, "display"),
            })
        }
        ["valueText"] => match get(p, "valueText") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(LabValue::Text(s.clone())),
            _ => {
                problems
                    .0
                    .push("payload.valueText: expected a non-blank string".to_owned());
                None
            }
        },
        _ => {
            problems.0.push(format!(
                "payload: {} given: a result has one value",
                given.join(" and ")
            ));
            None
        }
    }
}
