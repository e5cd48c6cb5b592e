//! Platform event envelopes ([`vitalflow_model::RawFormat::Envelope`]).
//!
//! One JSON object `{"metadata": {...}, "payload": {...}}`. `metadata` follows
//! [`vitalflow_model::envelope::EventMetadata`]: `eventId`, `eventType`, `eventSource`,
//! `correlationId` and `version` are required strings, `causationId` and `traceId` optional
//! strings, and `timestamp` is required: an RFC 3339 string (`2026-01-01T08:30:00.250+01:00`) or
//! an integer of milliseconds since the Unix epoch (`1767252600250`).
//!
//! A record with problems is dead-lettered once, its reason naming every problem found, in the
//! order of the fields above and below, joined by `; ` (`metadata.eventId: missing;
//! payload.value: expected a number`). Fields whose meaning depends on another field (a vital's
//! value on its `type`, the payload on `eventType`) are checked only when that one is usable.
//!
//! # `patient.record.created` / `patient.record.updated`
//!
//! ```json
//! {"patientId": "P000000001", "firstName": "Ada", "lastName": "Lovelace",
//!  "dateOfBirth": "1815-12-10", "gender": "female",
//!  "address": {"street": "12 St James's Square", "city": "London", "state": "LN",
//!              "postalCode": "02139", "country": "US"},
//!  "phoneNumber": "555-010-0199", "email": "ada@example.org", "ssn": "999-01-2345",
//!  "mrn": "MRN0000001"}
//! ```
//!
//! and, also optional: `fax`, `url`, `ipAddress` (strings), `photo` (a string: base64 image or
//! link; never kept), `notes` (free text), and `identifiers`, a list of
//! `{"type": CLASS, "value": "..."}` where `CLASS` is one of `mrn`, `ssn`, `health-plan`,
//! `account`, `licence`, `vehicle`, `device`, `biometric`, `other`.
//!
//! Only `patientId` is required; every other field may be absent or `null`, but must have the
//! type shown when present. `dateOfBirth` is `YYYY-MM-DD`; `gender` a FHIR administrative gender
//! code (or `M`, `F`, `O`, `U`). The record's `recorded_at` is `metadata.timestamp`.
//!
//! # `vitals.measurement.recorded` (the vital-signs payload)
//!
//! ```json
//! {"patientId": "P000000001", "measurementId": "3f0c…", "type": "heart-rate",
//!  "value": 72, "unit": "/min", "effectiveAt": "2026-01-01T00:00:07Z"}
//! {"patientId": "P000000001", "type": "blood-pressure", "unit": "mm[Hg]",
//!  "systolic": 121, "diastolic": 79, "effectiveAt": "2026-01-01T00:00:07Z"}
//! ```
//!
//! * `patientId` (string, required): the source patient id;
//! * `measurementId` (string, optional): the source's id of the measurement;
//! * `type` (string, required): a [`VitalKind`] name: `heart-rate`, `respiratory-rate`, `spo2`,
//!   `body-temperature`, `blood-pressure`, `mean-arterial-pressure`, `body-weight`,
//!   `body-height`, `bmi`;
//! * `value` (number): required, except for `blood-pressure`, where it is ignored;
//! * `unit` (string): the unit of `value` (or of both pressures): UCUM (`/min`, `%`, `Cel`,
//!   `[degF]`, `mm[Hg]`, `kg`, `[lb_av]`, `cm`, `kg/m2`) or a usual spelling (`bpm`, `mmHg`,
//!   `lb`, ...), see [`VitalKind::normalize`]. Required, except for `blood-pressure`, where it
//!   defaults to `mm[Hg]`;
//! * `systolic`, `diastolic` (numbers, required for `blood-pressure` only);
//! * `effectiveAt` (string, required): when it was measured, RFC 3339;
//! * `deviceId` (string, optional): the identifier or serial number of the measuring device;
//! * `note` (string, optional): free text.
//!
//! Values are normalized to the kind's canonical UCUM unit.
//!
//! # `lab_result_available` (a laboratory result)
//!
//! See [`lab`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use vitalflow_model::clinical::{
    Address, ClinicalRecord, Gender, IdClass, Identifier, PatientRecord, VitalRecord,
};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use super::json::{
    Obj, Reason, as_obj, get, obj_items, opt_obj, opt_str, opt_text, req_f64, req_str,
};
use super::{Sink, time};

/// `eventType` of patient demographics.
pub const PATIENT_CREATED: &str = "patient.record.created";
/// `eventType` of patient demographics updates (parsed like [`PATIENT_CREATED`]).
pub const PATIENT_UPDATED: &str = "patient.record.updated";
/// `eventType` of vital-sign measurements.
pub const VITALS_RECORDED: &str = "vitals.measurement.recorded";
/// `eventType` of laboratory results (see [`lab`]).
pub const LAB_RESULT_AVAILABLE: &str = "lab_result_available";

mod fast;
mod lab;

/// Parses the raw record as one envelope.
pub(crate) fn parse(sink: &mut Sink<'_>) {
    if let Some(record) = fast::vital(&sink.raw().bytes) {
        sink.accept(0, record);
        return;
    }
    match parse_record(&sink.raw().bytes) {
        Ok(record) => sink.accept(0, record),
        Err(reason) => sink.reject_raw(reason),
    }
}

fn parse_record(bytes: &[u8]) -> Result<ClinicalRecord, Reason> {
    let root: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| super::json::syntax_reason(&e))?;
    let root = as_obj(&root, "envelope")?;
    let mut problems = Problems::default();
    let metadata = problems.take(
        opt_obj(root, "envelope", "metadata")
            .and_then(|m| m.ok_or_else(|| "metadata: missing".to_owned())),
    );
    let (mut event_type, mut timestamp) = (None, None);
    if let Some(metadata) = metadata {
        for key in ["eventId", "eventSource", "correlationId", "version"] {
            problems.take(req_str(metadata, "metadata", key));
        }
        for key in ["causationId", "traceId"] {
            problems.take(opt_str(metadata, "metadata", key));
        }
        event_type = problems.take(req_str(metadata, "metadata", "eventType"));
        timestamp = problems.take(metadata_timestamp(metadata));
    }
    let payload = problems.take(match get(root, "payload") {
        None => Err("payload: missing".to_owned()),
        Some(v) => as_obj(v, "payload"),
    });
    let record = match event_type {
        None => None,
        Some(PATIENT_CREATED | PATIENT_UPDATED) => payload
            .and_then(|p| patient(p, &mut problems))
            .zip(timestamp)
            .map(|(mut p, recorded_at)| {
                p.recorded_at = recorded_at;
                ClinicalRecord::Patient(Box::new(p))
            }),
        Some(VITALS_RECORDED) => payload
            .and_then(|p| vital(p, &mut problems))
            .map(ClinicalRecord::Vital),
        Some(LAB_RESULT_AVAILABLE) => payload
            .and_then(|p| lab::lab(p, &mut problems))
            .map(|l| ClinicalRecord::Lab(Box::new(l))),
        Some(other) => {
            problems.0.push(format!(
                "metadata.eventType: unknown event type {} (supported: {PATIENT_CREATED}, \
                 {PATIENT_UPDATED}, {VITALS_RECORDED}, {LAB_RESULT_AVAILABLE})",
                super::safe_code(other)
            ));
            None
        }
    };
    match record {
        Some(record) if problems.0.is_empty() => Ok(record),
        _ => Err(problems.0.join("; ")),
    }
}

/// The problems found in one envelope, gathered so that its dead letter names them all.
#[derive(Default)]
struct Problems(Vec<Reason>);

impl Problems {
    /// The value of `r`, or `None` with its reason noted.
    fn take<T>(&mut self, r: Result<T, Reason>) -> Option<T> {
        r.map_err(|reason| self.0.push(reason)).ok()
    }

    /// An optional, non-blank string field, owned (`None` also when it is of another type).
    fn text(&mut self, obj: &Obj, path: &str, key: &str) -> Option<String> {
        self.take(opt_text(obj, path, key))
            .flatten()
            .map(str::to_owned)
    }
}

/// `metadata.timestamp`: an RFC 3339 string, or an integer of milliseconds since the Unix epoch
/// (as many producers write it).
fn metadata_timestamp(metadata: &Obj) -> Result<DateTime<Utc>, Reason> {
    const EXPECTED: &str =
        "metadata.timestamp: expected an RFC 3339 string or epoch milliseconds (an integer)";
    match get(metadata, "timestamp") {
        None => Err("metadata.timestamp: missing".to_owned()),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err("metadata.timestamp: empty".to_owned())
        }
        Some(Value::String(s)) => time::rfc3339(s)
            .ok_or_else(|| "metadata.timestamp: not an RFC 3339 date-time".to_owned()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) => DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| "metadata.timestamp: epoch milliseconds out of range".to_owned()),
            None => Err(EXPECTED.to_owned()),
        },
        Some(_) => Err(EXPECTED.to_owned()),
    }
}

/// The patient of a demographics payload; its `recorded_at` is left for the caller to set.
fn patient(p: &Obj, problems: &mut Problems) -> Option<PatientRecord> {
    const P: &str = "payload";
    let patient_id = problems
        .take(req_str(p, P, "patientId"))
        .map(|s| s.trim().to_owned());
    let birth_date = problems
        .take(opt_text(p, P, "dateOfBirth"))
        .flatten()
        .and_then(|s| {
            problems.take(
                time::date(s)
                    .ok_or_else(|| "payload.dateOfBirth: not a YYYY-MM-DD date".to_owned()),
            )
        });
    let gender = problems
        .take(opt_text(p, P, "gender"))
        .flatten()
        .and_then(|s| {
            problems.take(
                Gender::parse(s).ok_or_else(|| "payload.gender: not a gender code".to_owned()),
            )
        });
    let mut addresses = Vec::new();
    if let Some(a) = problems.take(opt_obj(p, P, "address")).flatten() {
        const A: &str = "payload.address";
        addresses.push(Address {
            lines: problems.text(a, A, "street").into_iter().collect(),
            city: problems.text(a, A, "city"),
            state: problems.text(a, A, "state"),
            postal_code: problems.text(a, A, "postalCode"),
            country: problems.text(a, A, "country"),
            district: problems.text(a, A, "county"),
        });
    }
    let mut identifiers = Vec::new();
    for (path, id) in problems
        .take(obj_items(p, P, "identifiers"))
        .unwrap_or_default()
    {
        let class = problems.take(req_str(id, &path, "type")).and_then(|class| {
            problems.take(IdClass::parse(class.trim()).ok_or_else(|| {
                format!(
                    "{path}.type: unknown identifier class {} (expected mrn, ssn, health-plan, \
                     account, licence, vehicle, device, biometric or other)",
                    super::safe_code(class)
                )
            }))
        });
        let value = problems.take(req_str(id, &path, "value"));
        if let (Some(class), Some(value)) = (class, value) {
            identifiers.push(Identifier::new(class, value));
        }
    }
    let record = PatientRecord {
        patient_id: patient_id.unwrap_or_default(),
        mrn: problems.text(p, P, "mrn"),
        ssn: problems.text(p, P, "ssn"),
        identifiers,
        given: problems.text(p, P, "firstName").into_iter().collect(),
        family: problems.text(p, P, "lastName"),
        birth_date,
        deceased: None,
        gender,
        addresses,
        phones: problems.text(p, P, "phoneNumber").into_iter().collect(),
        emails: problems.text(p, P, "email").into_iter().collect(),
        faxes: problems.text(p, P, "fax").into_iter().collect(),
        urls: problems.text(p, P, "url").into_iter().collect(),
        ip_addresses: problems.text(p, P, "ipAddress").into_iter().collect(),
        photos: u32::from(problems.text(p, P, "photo").is_some()),
        contacts: Vec::new(),
        notes: problems.text(p, P, "notes").into_iter().collect(),
        recorded_at: DateTime::UNIX_EPOCH,
    };
    problems.0.is_empty().then_some(record)
}

/// The measurement of a vital-sign payload.
fn vital(p: &Obj, problems: &mut Problems) -> Option<VitalRecord> {
    const P: &str = "payload";
    let patient_id = problems
        .take(req_str(p, P, "patientId"))
        .map(|s| s.trim().to_owned());
    let source_id = problems.text(p, P, "measurementId");
    let kind = problems.take(req_str(p, P, "type")).and_then(|name| {
        problems.take(VitalKind::from_name(name.trim()).ok_or_else(|| {
            format!(
                "payload.type: unknown vital-sign type {}",
                super::safe_code(name)
            )
        }))
    });
    let effective = problems.take(req_str(p, P, "effectiveAt")).and_then(|s| {
        problems.take(
            time::rfc3339(s)
                .ok_or_else(|| "payload.effectiveAt: not an RFC 3339 date-time".to_owned()),
        )
    });
    let unit = problems.take(opt_text(p, P, "unit")).flatten();
    // The value's fields depend on the kind: without one they cannot be checked.
    let value = kind.and_then(|kind| {
        let norm = |v: f64, unit: &str| -> Result<f64, Reason> {
            kind.normalize(v, unit)
                .map_err(|e| super::unit_reason("payload.unit", &e))
        };
        if kind == VitalKind::BloodPressure {
            let unit = unit.unwrap_or(kind.code().ucum);
            let systolic = problems.take(req_f64(p, P, "systolic"));
            let diastolic = problems.take(req_f64(p, P, "diastolic"));
            let (systolic, diastolic) = systolic.zip(diastolic)?;
            let systolic = problems.take(norm(systolic, unit));
            let diastolic = problems.take(norm(diastolic, unit));
            Some(VitalValue::BloodPressure {
                systolic: systolic?,
                diastolic: diastolic?,
            })
        } else {
            let v = problems.take(req_f64(p, P, "value"));
            let unit = problems.take(unit.ok_or_else(|| "payload.unit: missing".to_owned()));
            let value = problems.take(norm(v?, unit?))?;
            Some(VitalValue::Quantity { value })
        }
    });
    let device = problems.text(p, P, "deviceId");
    let notes = problems.text(p, P, "note").into_iter().collect();
    if !problems.0.is_empty() {
        return None;
    }
    Some(VitalRecord {
        source_id,
        patient_id: patient_id?,
        kind: kind?,
        value: value?,
        effective: effective?,
        device,
        notes,
        mentioned: Vec::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests;
