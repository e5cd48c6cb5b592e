//! Platform event envelopes ([`vitalflow_model::RawFormat::Envelope`]).
//!
//! One JSON object `{"metadata": {...}, "payload": {...}}`. `metadata` follows
//! [`vitalflow_model::envelope::EventMetadata`]: `eventId`, `eventType`, `eventSource`,
//! `correlationId`, `timestamp` (RFC 3339) and `version` are required strings, `causationId` and
//! `traceId` optional strings.
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

mod fast;

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
    let metadata =
        opt_obj(root, "envelope", "metadata")?.ok_or_else(|| "metadata: missing".to_owned())?;
    for key in ["eventId", "eventSource", "correlationId", "version"] {
        req_str(metadata, "metadata", key)?;
    }
    for key in ["causationId", "traceId"] {
        opt_str(metadata, "metadata", key)?;
    }
    let event_type = req_str(metadata, "metadata", "eventType")?;
    let timestamp = time::rfc3339(req_str(metadata, "metadata", "timestamp")?)
        .ok_or_else(|| "metadata.timestamp: not an RFC 3339 date-time".to_owned())?;
    let payload = match get(root, "payload") {
        None => return Err("payload: missing".to_owned()),
        Some(v) => as_obj(v, "payload")?,
    };
    match event_type {
        PATIENT_CREATED | PATIENT_UPDATED => {
            patient(payload, timestamp).map(|p| ClinicalRecord::Patient(Box::new(p)))
        }
        VITALS_RECORDED => vital(payload).map(ClinicalRecord::Vital),
        other => Err(format!(
            "metadata.eventType: unknown event type {} (supported: {PATIENT_CREATED}, \
             {PATIENT_UPDATED}, {VITALS_RECORDED})",
            super::safe_code(other)
        )),
    }
}

fn patient(p: &Obj, recorded_at: chrono::DateTime<chrono::Utc>) -> Result<PatientRecord, Reason> {
    const P: &str = "payload";
    let patient_id = req_str(p, P, "patientId")?.trim().to_owned();
    let birth_date = opt_text(p, P, "dateOfBirth")?
        .map(|s| {
            time::date(s).ok_or_else(|| "payload.dateOfBirth: not a YYYY-MM-DD date".to_owned())
        })
        .transpose()?;
    let gender = opt_text(p, P, "gender")?
        .map(|s| Gender::parse(s).ok_or_else(|| "payload.gender: not a gender code".to_owned()))
        .transpose()?;
    let mut addresses = Vec::new();
    if let Some(a) = opt_obj(p, P, "address")? {
        const A: &str = "payload.address";
        addresses.push(Address {
            lines: opt_text(a, A, "street")?
                .map(str::to_owned)
                .into_iter()
                .collect(),
            city: opt_text(a, A, "city")?.map(str::to_owned),
            state: opt_text(a, A, "state")?.map(str::to_owned),
            postal_code: opt_text(a, A, "postalCode")?.map(str::to_owned),
            country: opt_text(a, A, "country")?.map(str::to_owned),
            district: opt_text(a, A, "county")?.map(str::to_owned),
        });
    }
    let mut identifiers = Vec::new();
    for (path, id) in obj_items(p, P, "identifiers")? {
        let class = req_str(id, &path, "type")?;
        let class = IdClass::parse(class.trim()).ok_or_else(|| {
            format!(
                "{path}.type: unknown identifier class {} (expected mrn, ssn, health-plan, \
                 account, licence, vehicle, device, biometric or other)",
                super::safe_code(class)
            )
        })?;
        identifiers.push(Identifier::new(class, req_str(id, &path, "value")?));
    }
    let owned = |key: &str| -> Result<Option<String>, Reason> {
        Ok(opt_text(p, P, key)?.map(str::to_owned))
    };
    Ok(PatientRecord {
        patient_id,
        mrn: owned("mrn")?,
        ssn: owned("ssn")?,
        identifiers,
        given: owned("firstName")?.into_iter().collect(),
        family: owned("lastName")?,
        birth_date,
        deceased: None,
        gender,
        addresses,
        phones: owned("phoneNumber")?.into_iter().collect(),
        emails: owned("email")?.into_iter().collect(),
        faxes: owned("fax")?.into_iter().collect(),
        urls: owned("url")?.into_iter().collect(),
        ip_addresses: owned("ipAddress")?.into_iter().collect(),
        photos: u32::from(owned("photo")?.is_some()),
        contacts: Vec::new(),
        notes: owned("notes")?.into_iter().collect(),
        recorded_at,
    })
}

fn vital(p: &Obj) -> Result<VitalRecord, Reason> {
    const P: &str = "payload";
    let patient_id = req_str(p, P, "patientId")?.trim().to_owned();
    let source_id = opt_text(p, P, "measurementId")?.map(str::to_owned);
    let name = req_str(p, P, "type")?;
    let kind = VitalKind::from_name(name.trim()).ok_or_else(|| {
        format!(
            "payload.type: unknown vital-sign type {}",
            super::safe_code(name)
        )
    })?;
    let effective = time::rfc3339(req_str(p, P, "effectiveAt")?)
        .ok_or_else(|| "payload.effectiveAt: not an RFC 3339 date-time".to_owned())?;
    let unit = opt_text(p, P, "unit")?;
    let norm = |field: &str, v: f64, unit: &str| -> Result<f64, Reason> {
        kind.normalize(v, unit)
            .map_err(|e| super::unit_reason(&format!("payload.{field}"), &e))
    };
    let value = if kind == VitalKind::BloodPressure {
        let unit = unit.unwrap_or(kind.code().ucum);
        VitalValue::BloodPressure {
            systolic: norm("unit", req_f64(p, P, "systolic")?, unit)?,
            diastolic: norm("unit", req_f64(p, P, "diastolic")?, unit)?,
        }
    } else {
        let v = req_f64(p, P, "value")?;
        let unit = unit.ok_or_else(|| "payload.unit: missing".to_owned())?;
        VitalValue::Quantity {
            value: norm("unit", v, unit)?,
        }
    };
    Ok(VitalRecord {
        source_id,
        patient_id,
        kind,
        value,
        effective,
        device: opt_text(p, P, "deviceId")?.map(str::to_owned),
        notes: opt_text(p, P, "note")?
            .map(str::to_owned)
            .into_iter()
            .collect(),
        mentioned: Vec::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests;
