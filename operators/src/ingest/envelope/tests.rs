#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use vitalflow_model::RawFormat;
use vitalflow_model::clinical::{ClinicalRecord, Gender};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use crate::test_support::{raw, run};

pub(crate) fn metadata(event_type: &str) -> Value {
    json!({
        "eventId": "e-1", "eventType": event_type, "eventSource": "test",
        "correlationId": "c-1", "timestamp": "2026-01-01T00:00:05Z", "version": "1.0"
    })
}

pub(crate) fn patient_payload() -> Value {
    json!({
        "patientId": "P000000042", "firstName": "Ada", "lastName": "Lovelace",
        "dateOfBirth": "1815-12-10", "gender": "female",
        "address": {"street": "12 St James Square", "city": "Springfield", "state": "MA",
                    "postalCode": "02139"},
        "phoneNumber": "555-010-0199", "email": "ada@example.org", "ssn": "999-01-2345",
        "mrn": "MRN0000042"
    })
}

pub(crate) fn envelope(event_type: &str, payload: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"metadata": metadata(event_type), "payload": payload})).unwrap()
}

fn one(bytes: Vec<u8>) -> Result<ClinicalRecord, String> {
    let (ok, dead) = run(&raw(RawFormat::Envelope, bytes));
    assert_eq!(ok.len() + dead.len(), 1, "{ok:?} {dead:?}");
    match (ok.into_iter().next(), dead.into_iter().next()) {
        (Some(r), None) => {
            assert_eq!(r.sequence, (7, 0));
            Ok(r.record)
        }
        (None, Some(d)) => Err(d.reason),
        _ => unreachable!(),
    }
}

#[test]
fn patient_created_and_updated() {
    for ty in ["patient.record.created", "patient.record.updated"] {
        let ClinicalRecord::Patient(p) = one(envelope(ty, patient_payload())).unwrap() else {
            panic!("not a patient");
        };
        assert_eq!(p.patient_id, "P000000042");
        assert_eq!(
            (p.given.clone(), p.family.as_deref()),
            (vec!["Ada".to_owned()], Some("Lovelace"))
        );
        assert_eq!(p.birth_date.unwrap().to_string(), "1815-12-10");
        assert_eq!(p.gender, Some(Gender::Female));
        assert_eq!(p.addresses[0].postal_code.as_deref(), Some("02139"));
        assert_eq!(p.addresses[0].lines, vec!["12 St James Square".to_owned()]);
        assert_eq!(
            (p.ssn.as_deref(), p.mrn.as_deref()),
            (Some("999-01-2345"), Some("MRN0000042"))
        );
        assert_eq!(p.phones.len() + p.emails.len(), 2);
        assert_eq!(p.recorded_at.to_rfc3339(), "2026-01-01T00:00:05+00:00");
    }
}

#[test]
fn vitals_are_normalized() {
    let v = |payload: Value| match one(envelope("vitals.measurement.recorded", payload)) {
        Ok(ClinicalRecord::Vital(v)) => Ok(v),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    let hr = v(
        json!({"patientId": "P1", "measurementId": "m1", "type": "heart-rate",
                      "value": 72, "unit": "bpm", "effectiveAt": "2026-01-01T00:00:00Z"}),
    )
    .unwrap();
    assert_eq!(
        (hr.kind, hr.value),
        (VitalKind::HeartRate, VitalValue::Quantity { value: 72.0 })
    );
    assert_eq!(hr.source_id.as_deref(), Some("m1"));
    let t = v(
        json!({"patientId": "P1", "type": "body-temperature", "value": 98.6,
                     "unit": "[degF]", "effectiveAt": "2026-01-01T00:00:00+01:00"}),
    )
    .unwrap();
    let VitalValue::Quantity { value } = t.value else {
        panic!()
    };
    assert!((value - 37.0).abs() < 1e-9);
    assert_eq!(t.effective.to_rfc3339(), "2025-12-31T23:00:00+00:00");
    let bp = v(
        json!({"patientId": "P1", "type": "blood-pressure", "systolic": 120,
                      "diastolic": 80, "effectiveAt": "2026-01-01T00:00:00Z"}),
    )
    .unwrap();
    assert_eq!(
        bp.value,
        VitalValue::BloodPressure {
            systolic: 120.0,
            diastolic: 80.0
        }
    );
    let w = v(
        json!({"patientId": "P1", "type": "body-weight", "value": 220, "unit": "[lb_av]",
                     "effectiveAt": "2026-01-01T00:00:00Z"}),
    )
    .unwrap();
    let VitalValue::Quantity { value } = w.value else {
        panic!()
    };
    assert!((value - 99.790_321_4).abs() < 1e-6);
}

#[test]
fn bad_fields_are_named_without_values() {
    let vital = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut p = json!({"patientId": "P1", "type": "spo2", "value": 97, "unit": "%",
                           "effectiveAt": "2026-01-01T00:00:00Z"});
        f(p.as_object_mut().unwrap());
        one(envelope("vitals.measurement.recorded", p)).unwrap_err()
    };
    assert_eq!(
        vital(&|p| drop(p.remove("patientId"))),
        "payload.patientId: missing"
    );
    assert_eq!(
        vital(&|p| drop(p.insert("patientId".into(), json!(5)))),
        "payload.patientId: expected a string"
    );
    assert_eq!(
        vital(&|p| drop(p.remove("value"))),
        "payload.value: missing"
    );
    assert_eq!(
        vital(&|p| drop(p.insert("value".into(), json!("97")))),
        "payload.value: expected a number"
    );
    assert_eq!(vital(&|p| drop(p.remove("unit"))), "payload.unit: missing");
    assert_eq!(
        vital(&|p| drop(p.insert("unit".into(), json!("kg")))),
        "payload.unit: unit `kg` is not a unit of spo2"
    );
    let r = vital(&|p| drop(p.insert("unit".into(), json!("Ada Lovelace's unit"))));
    assert!(!r.contains("Lovelace"), "{r}");
    assert!(
        vital(&|p| drop(p.insert("type".into(), json!("pulse"))))
            .starts_with("payload.type: unknown")
    );
    assert_eq!(
        vital(&|p| drop(p.insert("effectiveAt".into(), json!("1815-12-10")))),
        "payload.effectiveAt: not an RFC 3339 date-time"
    );

    let mut p = patient_payload();
    p["dateOfBirth"] = json!("10/12/1815");
    let r = one(envelope("patient.record.created", p)).unwrap_err();
    assert_eq!(r, "payload.dateOfBirth: not a YYYY-MM-DD date");
    let mut p = patient_payload();
    p["address"] = json!("Springfield");
    let r = one(envelope("patient.record.created", p)).unwrap_err();
    assert_eq!(r, "payload.address: expected a JSON object");
    let r = one(envelope("patient.deleted", patient_payload())).unwrap_err();
    assert!(
        r.starts_with("metadata.eventType: unknown event type patient.deleted"),
        "{r}"
    );
}

#[test]
fn broken_envelopes_are_dead_lettered() {
    let cases: [(&[u8], &str); 7] = [
        (b"", "invalid JSON at line 1, column 0"),
        (b"[1,2]", "envelope: expected a JSON object"),
        (b"{\"payload\":{}}", "metadata: missing"),
        (br#"{"metadata":{"eventId":"e","eventType":"patient.record.created","eventSource":"s","correlationId":"c","version":"1","timestamp":"yesterday"},"payload":{}}"#, "metadata.timestamp: not an RFC 3339 date-time"),
        (br#"{"metadata":{"eventId":"e","eventType":"patient.record.created","eventSource":"s","correlationId":"c","version":"1","timestamp":"2026-01-01T00:00:00Z"}}"#, "payload: missing"),
        (br#"{"metadata":{"eventType":"x"},"payload":{}}"#, "metadata.eventId: missing"),
        (b"\xff\xfe\x00garbage", "invalid JSON"),
    ];
    for (bytes, want) in cases {
        let (ok, dead) = run(&raw(RawFormat::Envelope, bytes));
        assert!(ok.is_empty());
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0].reason.starts_with(want),
            "{} vs {want}",
            dead[0].reason
        );
        assert_eq!(dead[0].bytes, bytes);
    }
    // Syntax errors never quote the input.
    let (_, dead) = run(&raw(
        RawFormat::Envelope,
        br#"{"metadata": Lovelace}"#.to_vec(),
    ));
    assert!(!dead[0].reason.contains("Lovelace"), "{}", dead[0].reason);
}

#[test]
fn metadata_timestamp_may_be_epoch_milliseconds() {
    let mut m = metadata("patient.record.created");
    m["timestamp"] = json!(1_767_225_605_250_i64);
    let bytes = serde_json::to_vec(&json!({"metadata": m, "payload": patient_payload()})).unwrap();
    let ClinicalRecord::Patient(p) = one(bytes).unwrap() else {
        panic!("not a patient");
    };
    assert_eq!(p.recorded_at.to_rfc3339(), "2026-01-01T00:00:05.250+00:00");
    // A string, RFC 3339, gives the same instant.
    m["timestamp"] = json!("2026-01-01T01:00:05.250+01:00");
    let bytes = serde_json::to_vec(&json!({"metadata": m, "payload": patient_payload()})).unwrap();
    let ClinicalRecord::Patient(q) = one(bytes).unwrap() else {
        panic!("not a patient");
    };
    assert_eq!(q.recorded_at, p.recorded_at);
    for (value, want) in [
        (
            json!(1.5e12),
            "metadata.timestamp: expected an RFC 3339 string or epoch milliseconds (an integer)",
        ),
        (
            json!(true),
            "metadata.timestamp: expected an RFC 3339 string or epoch milliseconds (an integer)",
        ),
        (
            json!(i64::MAX),
            "metadata.timestamp: epoch milliseconds out of range",
        ),
    ] {
        m["timestamp"] = value;
        let bytes =
            serde_json::to_vec(&json!({"metadata": m, "payload": patient_payload()})).unwrap();
        assert_eq!(one(bytes).unwrap_err(), want);
    }
}

#[test]
fn every_problem_of_a_record_is_reported() {
    let mut m = metadata("vitals.measurement.recorded");
    m["eventId"] = json!(null);
    m["timestamp"] = json!("yesterday");
    let payload = json!({
        "type": "heart-rate", "value": "72", "unit": "/min", "effectiveAt": "soon"
    });
    let bytes = serde_json::to_vec(&json!({"metadata": m, "payload": payload})).unwrap();
    assert_eq!(
        one(bytes).unwrap_err(),
        "metadata.eventId: missing; metadata.timestamp: not an RFC 3339 date-time; \
         payload.patientId: missing; payload.effectiveAt: not an RFC 3339 date-time; \
         payload.value: expected a number"
    );
    let mut p = patient_payload();
    p["dateOfBirth"] = json!("10/12/1815");
    p["gender"] = json!("x");
    p["email"] = json!(5);
    let r = one(envelope("patient.record.created", p)).unwrap_err();
    assert_eq!(
        r,
        "payload.dateOfBirth: not a YYYY-MM-DD date; payload.gender: not a gender code; \
         payload.email: expected a string"
    );
}

/// Issue 37: `lab_result_available` envelopes are laboratory results.
#[test]
fn lab_results_available() {
    use vitalflow_model::lab::{Comparator, LabStatus, LabValue};
    let lab = |payload: Value| match one(envelope("lab_result_available", payload)) {
        Ok(ClinicalRecord::Lab(l)) => Ok(*l),
        Ok(other) => panic!("{other:?}"),
        Err(reason) => Err(reason),
    };
    let base = || {
        json!({"patientId": "P000000042", "resultId": "ORD-77/2823-3", "code": "2823-3",
               "display": "Potassium", "value": 6.8, "unit": "mEq/L",
               "referenceRange": {"low": 3.5, "high": 5.1}, "interpretation": "HH",
               "status": "corrected", "effectiveAt": "2026-01-01T08:00:00Z",
               "issuedAt": "2026-01-01T09:10:00Z", "note": "repeat sample"})
    };
    let l = lab(base()).unwrap();
    assert_eq!(
        (l.patient_id.as_str(), l.code.as_str()),
        ("P000000042", "2823-3")
    );
    assert_eq!(l.source_id.as_deref(), Some("ORD-77/2823-3"));
    assert_eq!(l.status, LabStatus::Corrected);
    assert_eq!(l.interpretation.as_deref(), Some("HH"));
    assert_eq!(
        (l.reference_range.low, l.reference_range.high),
        (Some(3.5), Some(5.1))
    );
    assert_eq!(l.notes, ["repeat sample"]);
    assert!(l.issued.is_some());
    let LabValue::Quantity {
        value,
        comparator,
        unit,
    } = &l.value
    else {
        panic!("{:?}", l.value)
    };
    assert_eq!(
        (*value, *comparator, unit.ucum.as_deref()),
        (6.8, None, Some("mmol/L"))
    );

    let mut p = base();
    p["status"] = json!("P");
    p["comparator"] = json!("<");
    assert_eq!(lab(p).unwrap().status, LabStatus::Preliminary);
    let mut p = base();
    p["comparator"] = json!("<");
    let l = lab(p).unwrap();
    assert!(matches!(
        l.value,
        LabValue::Quantity {
            comparator: Some(Comparator::Less),
            ..
        }
    ));
    let mut p = base();
    p.as_object_mut().unwrap().remove("value");
    p["valueCode"] = json!({"system": "http://snomed.info/sct", "code": "260415000"});
    assert!(matches!(lab(p).unwrap().value, LabValue::Coded { .. }));
    let mut p = base();
    p.as_object_mut().unwrap().remove("value");
    p["valueText"] = json!("haemolysed");
    assert_eq!(
        lab(p).unwrap().value,
        LabValue::Text("haemolysed".to_owned())
    );
    let mut p = base();
    p.as_object_mut().unwrap().remove("value");
    p["status"] = json!("cancelled");
    assert_eq!(lab(p).unwrap().value, LabValue::Absent);

    // Problems are named, all of them, and never with the values.
    let mut p = base();
    p.as_object_mut().unwrap().remove("value");
    assert!(lab(p).unwrap_err().starts_with("payload: no value"));
    let mut p = base();
    p["code"] = json!("K+");
    p["valueText"] = json!("Ada Lovelace");
    p["status"] = json!("pending");
    let reason = lab(p).unwrap_err();
    assert_eq!(
        reason,
        "payload.code: (invalid code) is not a LOINC code; payload.status: pending is not a \
         result status; payload: value and valueText given: a result has one value"
    );
    let mut p = base();
    p.as_object_mut().unwrap().remove("effectiveAt");
    assert_eq!(lab(p).unwrap_err(), "payload.effectiveAt: missing");
}
