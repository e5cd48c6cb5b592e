#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};
use vitalflow_model::RawFormat;
use vitalflow_model::canonical::{CanonicalResource, Columns, ResourceType};
use vitalflow_model::clinical::{ClinicalRecord, Gender};
use vitalflow_model::deid::{AGE_90_OR_OLDER, DeidPatient, DeidRecord, DeidVital, KeptPhi};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use super::*;
use crate::anonymize::{DatePolicy, DeidReport};
use crate::ingest::envelope::tests::{envelope, patient_payload};
use crate::test_support::{anonymizer, raw, run, sample_dir};

fn deid_patient() -> DeidPatient {
    DeidPatient {
        pseudonym: "a".repeat(32),
        birth_year: Some(1970),
        age_group: None,
        deceased_year: None,
        deceased: false,
        gender: Some(Gender::Female),
        state: Some("MA".to_owned()),
        zip3: Some("021".to_owned()),
        country: None,
        recorded_at: Utc.with_ymd_and_hms(2026, 1, 1, 23, 0, 0).unwrap(),
        identifiers: Vec::new(),
        kept: KeptPhi::default(),
    }
}

fn deid_vital(kind: VitalKind, value: VitalValue) -> DeidVital {
    DeidVital {
        id: "b".repeat(32),
        pseudonym: "a".repeat(32),
        kind,
        value,
        effective: Utc.with_ymd_and_hms(2026, 2, 3, 4, 5, 6).unwrap(),
        device: None,
        notes: Vec::new(),
    }
}

fn parsed(c: &CanonicalResource) -> Value {
    serde_json::from_str(&c.resource).unwrap()
}

#[test]
fn patient_resource() {
    let c = canonize(&DeidRecord::Patient(deid_patient())).unwrap();
    assert_eq!(c.resource_type(), ResourceType::Patient);
    assert_eq!(
        (c.id.as_str(), c.patient.as_str()),
        ("a".repeat(32).as_str(), "a".repeat(32).as_str())
    );
    assert_eq!(c.date, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
    let expected = format!(
        r#"{{"resourceType":"Patient","id":"{}","meta":{{"security":[{{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"PSEUDED","display":"pseudonymized"}}]}},"gender":"female","birthDate":"1970","deceasedBoolean":false,"address":[{{"state":"MA","postalCode":"021"}}]}}"#,
        "a".repeat(32)
    );
    assert_eq!(c.resource, expected);
    let Columns::Patient(cols) = &c.columns else {
        panic!()
    };
    assert_eq!(
        (
            cols.birth_year,
            cols.zip3.as_deref(),
            cols.gender.as_deref()
        ),
        (Some(1970), Some("021"), Some("female"))
    );

    let mut old = deid_patient();
    (old.birth_year, old.age_group, old.deceased) = (None, Some(AGE_90_OR_OLDER.to_owned()), true);
    (old.state, old.zip3, old.gender) = (None, None, None);
    let v = parsed(&canonize(&DeidRecord::Patient(old)).unwrap());
    assert!(
        v.get("birthDate").is_none() && v.get("address").is_none() && v.get("gender").is_none()
    );
    assert_eq!(v["deceasedBoolean"], true);
    assert_eq!(
        v["extension"],
        json!([{"url": "https://vitalflow.dev/fhir/StructureDefinition/age-group", "valueString": "90 or older"}])
    );
}

#[test]
fn observation_resources() {
    let c = canonize(&DeidRecord::Vital(deid_vital(
        VitalKind::BodyTemperature,
        VitalValue::Quantity { value: 37.123_456 },
    )))
    .unwrap();
    assert_eq!(c.resource_type(), ResourceType::Observation);
    assert_eq!(c.date, NaiveDate::from_ymd_opt(2026, 2, 3).unwrap());
    let v = parsed(&c);
    assert!(
        c.resource
            .starts_with(r#"{"resourceType":"Observation","id":"bbbb"#)
    );
    assert_eq!(
        v["meta"]["profile"],
        json!(["http://hl7.org/fhir/StructureDefinition/bodytemp"])
    );
    assert_eq!(v["meta"]["security"][0]["code"], "PSEUDED");
    assert_eq!(v["status"], "final");
    assert_eq!(v["category"][0]["coding"][0]["code"], "vital-signs");
    assert_eq!(v["category"][0]["text"], "Vital Signs");
    assert_eq!(
        v["code"]["coding"],
        json!([{"system": "http://loinc.org", "code": "8310-5", "display": "Body temperature"}])
    );
    assert_eq!(
        v["subject"]["reference"],
        format!("Patient/{}", "a".repeat(32))
    );
    assert_eq!(v["effectiveDateTime"], "2026-02-03T04:05:06Z");
    assert_eq!(
        v["valueQuantity"],
        json!({"value": 37.12, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"})
    );
    let Columns::Observation(cols) = &c.columns else {
        panic!()
    };
    assert_eq!(
        (
            cols.code.as_ref(),
            cols.unit.as_ref(),
            cols.value,
            cols.systolic
        ),
        ("8310-5", "Cel", Some(37.12), None)
    );
    assert_eq!(cols.effective_us, 1_770_091_506_000_000);

    let c = canonize(&DeidRecord::Vital(deid_vital(
        VitalKind::Spo2,
        VitalValue::Quantity { value: 97.0 },
    )))
    .unwrap();
    let codes: Vec<_> = parsed(&c)["code"]["coding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].clone())
        .collect();
    assert_eq!(codes, vec![json!("59408-5"), json!("2708-6")]);

    let bp = VitalValue::BloodPressure {
        systolic: 120.004,
        diastolic: 80.0,
    };
    let c = canonize(&DeidRecord::Vital(deid_vital(VitalKind::BloodPressure, bp))).unwrap();
    let v = parsed(&c);
    assert!(v.get("valueQuantity").is_none());
    assert_eq!(v["component"][0]["code"]["coding"][0]["code"], "8480-6");
    assert_eq!(
        v["component"][0]["code"]["coding"][0]["display"],
        "Systolic blood pressure"
    );
    assert_eq!(v["component"][0]["valueQuantity"]["value"], 120.0);
    assert_eq!(v["component"][1]["code"]["coding"][0]["code"], "8462-4");
    assert_eq!(v["component"][1]["valueQuantity"]["code"], "mm[Hg]");
    let Columns::Observation(cols) = &c.columns else {
        panic!()
    };
    assert_eq!(
        (cols.value, cols.systolic, cols.diastolic),
        (None, Some(120.0), Some(80.0))
    );
}

#[test]
fn invalid_records_are_errors() {
    let nan = deid_vital(
        VitalKind::HeartRate,
        VitalValue::Quantity { value: f64::NAN },
    );
    assert_eq!(
        canonize(&DeidRecord::Vital(nan)),
        Err(CanonizeError::NotFinite { field: "value" })
    );
    let mut p = deid_patient();
    p.birth_year = Some(-5);
    assert_eq!(
        canonize(&DeidRecord::Patient(p)),
        Err(CanonizeError::YearOutOfRange {
            field: "birth_year"
        })
    );
    let mut p = deid_patient();
    p.pseudonym.clear();
    assert!(canonize(&DeidRecord::Patient(p)).is_err());
}

/// Ingest → anonymize → canonize, asserting no PHI string survives anywhere.
fn pipeline(
    records: &[vitalflow_model::clinical::Ingested],
    phi: &[String],
    policy: DatePolicy,
) -> Vec<CanonicalResource> {
    let a = anonymizer(3, policy);
    let mut report = DeidReport::default();
    let mut out = Vec::new();
    for r in records {
        let d = a.apply(r, &mut report).unwrap();
        let text = serde_json::to_string(&d).unwrap();
        let c = canonize(&d).unwrap();
        let ctext = serde_json::to_string(&c).unwrap();
        for p in phi {
            assert!(!text.contains(p.as_str()), "{p} in {text}");
            assert!(!ctext.contains(p.as_str()), "{p} in {ctext}");
        }
        out.push(c);
    }
    assert!(!report.is_empty());
    out
}

#[test]
fn envelope_flow_converts_units_and_removes_phi() {
    let mut raws = vec![raw(
        RawFormat::Envelope,
        envelope("patient.record.created", patient_payload()),
    )];
    for (ty, value, unit) in [
        ("body-temperature", 98.6, "[degF]"),
        ("body-weight", 220.0, "[lb_av]"),
    ] {
        let p = json!({"patientId": "P000000042", "measurementId": "m-P000000042", "type": ty,
                       "value": value, "unit": unit, "effectiveAt": "2026-01-01T08:00:00Z"});
        raws.push(raw(
            RawFormat::Envelope,
            envelope("vitals.measurement.recorded", p),
        ));
    }
    let ok: Vec<_> = raws.iter().flat_map(|r| run(r).0).collect();
    assert_eq!(ok.len(), 3);
    let phi: Vec<String> = crate::anonymize::tests::PHI
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let out = pipeline(&ok, &phi, DatePolicy::Shift { max_days: 100 });
    let values: Vec<_> = out
        .iter()
        .map(|c| parsed(c)["valueQuantity"].clone())
        .collect();
    assert_eq!(
        values[1],
        json!({"value": 37.0, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"})
    );
    assert_eq!(values[2]["value"], 99.79);
    assert_eq!(values[2]["code"], "kg");
    assert!(out.iter().all(|c| c.patient == out[0].id));
}

#[test]
fn synthea_flow_removes_phi() {
    let Some(dir) = sample_dir("fhir-r4") else {
        return;
    };
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let (ok, _) = run(&raw(RawFormat::Fhir, std::fs::read(&path).unwrap()));
        let mut phi = Vec::new();
        for r in &ok {
            if let ClinicalRecord::Patient(p) = &r.record {
                phi.push(p.patient_id.clone());
                phi.extend(
                    p.given
                        .iter()
                        .chain(&p.family)
                        .chain(&p.phones)
                        .chain(&p.emails)
                        .cloned(),
                );
                phi.extend(
                    p.ssn
                        .iter()
                        .chain(&p.mrn)
                        .chain(p.identifiers.iter().map(|i| &i.value))
                        .cloned(),
                );
                phi.extend(p.birth_date.map(|d| d.to_string()));
                for a in &p.addresses {
                    // (Postal codes are left out: 5 digits may occur in numbers by chance.)
                    phi.extend(a.lines.iter().chain(&a.city).cloned());
                }
            }
        }
        assert!(phi.len() > 8, "{}", path.display());
        for policy in [DatePolicy::Shift { max_days: 365 }, DatePolicy::Year] {
            let out = pipeline(&ok, &phi, policy);
            assert_eq!(out.len(), ok.len());
            assert_eq!(
                out.iter()
                    .filter(|c| c.resource_type() == ResourceType::Patient)
                    .count(),
                1
            );
        }
    }
}
