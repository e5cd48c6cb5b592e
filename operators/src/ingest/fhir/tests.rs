#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use vitalflow_model::RawFormat;
use vitalflow_model::clinical::{ClinicalRecord, Gender, IdClass, Identifier};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use super::patient_ref;
use crate::ingest::DECEASED_DATE_UNKNOWN;
use crate::test_support::{raw, run, sample_dir};

fn fhir(v: &Value) -> (Vec<ClinicalRecord>, Vec<String>) {
    let (ok, dead) = run(&raw(RawFormat::Fhir, serde_json::to_vec(v).unwrap()));
    (
        ok.into_iter().map(|r| r.record).collect(),
        dead.into_iter().map(|d| d.reason).collect(),
    )
}

fn vital_obs(code: &str, value: Value) -> Value {
    json!({
        "resourceType": "Observation", "id": "obs-1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p-1"},
        "effectiveDateTime": "2020-03-04T05:06:07-05:00",
        "valueQuantity": value
    })
}

#[test]
fn patient_resource_is_parsed() {
    let p = json!({
        "resourceType": "Patient", "id": "p-1", "meta": {"lastUpdated": "2024-05-06T07:08:09Z"},
        "identifier": [
            {"system": "https://github.com/synthetichealth/synthea", "value": "p-1"},
            {"type": {"coding": [{"code": "MR"}]}, "value": "MRN-1"},
            {"type": {"coding": [{"code": "SS"}]}, "system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-80-9771"},
            {"type": {"coding": [{"code": "DL"}]}, "value": "S99952463"}
        ],
        "name": [{"use": "nickname", "given": ["Al"]}, {"use": "official", "family": "Powlowski563", "given": ["Lynwood354"], "prefix": ["Mr."]}],
        "telecom": [{"system": "phone", "value": "555-901-6523"}, {"system": "email", "value": "l@example.org"}],
        "gender": "male", "birthDate": "1999-10-22", "deceasedDateTime": "2021-01-02T03:04:05-08:00",
        "address": [{"line": ["776 Howe Run Suite 92"], "city": "Redmond", "state": "WA", "postalCode": "98053", "country": "US"}]
    });
    let (ok, dead) = fhir(&p);
    assert!(dead.is_empty(), "{dead:?}");
    let ClinicalRecord::Patient(p) = &ok[0] else {
        panic!()
    };
    assert_eq!(p.patient_id, "p-1");
    assert_eq!(p.given, vec!["Lynwood354".to_owned()]);
    assert_eq!(p.family.as_deref(), Some("Powlowski563"));
    assert_eq!(
        (p.mrn.as_deref(), p.ssn.as_deref()),
        (Some("MRN-1"), Some("999-80-9771"))
    );
    assert_eq!(
        p.identifiers,
        vec![
            Identifier::new(IdClass::Other, "p-1"),
            Identifier::new(IdClass::Licence, "S99952463")
        ]
    );
    assert_eq!((p.phones.len(), p.emails.len()), (1, 1));
    assert_eq!(p.gender, Some(Gender::Male));
    assert_eq!(p.deceased.unwrap().to_string(), "2021-01-02");
    assert_eq!(p.addresses[0].city.as_deref(), Some("Redmond"));
    assert_eq!(p.recorded_at.to_rfc3339(), "2024-05-06T07:08:09+00:00");

    let (ok, _) = fhir(&json!({"resourceType": "Patient", "id": "p", "deceasedBoolean": true}));
    let ClinicalRecord::Patient(p) = &ok[0] else {
        panic!()
    };
    assert_eq!(p.deceased, Some(DECEASED_DATE_UNKNOWN));
}

#[test]
fn vital_observations_are_parsed() {
    let (ok, dead) = fhir(&vital_obs("8331-1", json!({"value": 98.6, "unit": "degF"})));
    assert!(dead.is_empty(), "{dead:?}");
    let ClinicalRecord::Vital(v) = &ok[0] else {
        panic!()
    };
    assert_eq!(
        (v.kind, v.patient_id.as_str(), v.source_id.as_deref()),
        (VitalKind::BodyTemperature, "p-1", Some("obs-1"))
    );
    let VitalValue::Quantity { value } = v.value else {
        panic!()
    };
    assert!((value - 37.0).abs() < 1e-9);
    assert_eq!(v.effective.to_rfc3339(), "2020-03-04T10:06:07+00:00");

    let mut bp = vital_obs("85354-9", Value::Null);
    bp["subject"]["reference"] = json!("urn:uuid:p-2");
    bp["component"] = json!([
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 91, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 110.0, "unit": "mmHg"}}
    ]);
    let (ok, dead) = fhir(&bp);
    assert!(dead.is_empty(), "{dead:?}");
    let ClinicalRecord::Vital(v) = &ok[0] else {
        panic!()
    };
    assert_eq!(v.patient_id, "p-2");
    assert_eq!(
        v.value,
        VitalValue::BloodPressure {
            systolic: 110.0,
            diastolic: 91.0
        }
    );
}

#[test]
fn unusable_resources_are_dead_lettered_with_reasons() {
    let reason = |v: Value| {
        let (ok, dead) = fhir(&v);
        assert!(ok.is_empty(), "{ok:?}");
        assert_eq!(dead.len(), 1);
        dead.into_iter().next().unwrap()
    };
    assert_eq!(
        reason(json!({"resourceType": "Encounter", "id": "e"})),
        "resource type Encounter is not supported yet (supported: Patient, vital-signs and laboratory Observation)"
    );
    assert_eq!(
        reason(vital_obs("72514-3", json!({"value": 3, "code": "{score}"}))),
        "Observation code 72514-3 is not a supported vital sign"
    );
    let mut o = vital_obs("8867-4", json!({"value": 80, "code": "/min"}));
    o["subject"] = json!({"reference": "Group/g-1"});
    assert_eq!(
        reason(o),
        "Observation.subject.reference: not a Patient reference"
    );
    let mut o = vital_obs("8867-4", Value::Null);
    o["dataAbsentReason"] = json!({"text": "x"});
    assert_eq!(
        reason(o),
        "Observation.valueQuantity: missing (dataAbsentReason given)"
    );
    let mut o = vital_obs("8867-4", json!({"value": 80, "code": "/min"}));
    o.as_object_mut().unwrap().remove("effectiveDateTime");
    assert_eq!(
        reason(o),
        "Observation.effective[x]: missing (and no issued)"
    );
    let bp = vital_obs("85354-9", Value::Null);
    assert_eq!(
        reason(bp),
        "Observation.component: no systolic (8480-6) value"
    );
    assert_eq!(
        reason(json!({"resourceType": "Patient"})),
        "Patient.id: missing"
    );
    assert_eq!(
        reason(json!({"resourceType": "Patient", "id": "p", "birthDate": "22/10/1999"})),
        "Patient.birthDate: not a FHIR date"
    );
    assert_eq!(
        reason(json!({"resourceType": "Patient", "id": "p", "name": [{"family": 5}]})),
        "Patient.name[0].family: expected a string"
    );
    assert_eq!(
        reason(json!({"id": "x"})),
        "resourceType: missing or not a string"
    );
    assert_eq!(reason(json!([])), "FHIR document: expected a JSON object");
    assert_eq!(
        reason(json!({"resourceType": "Bundle"})),
        "Bundle.entry: missing or empty"
    );
    let r = reason(json!({"resourceType": "Ada Lovelace"}));
    assert!(!r.contains("Lovelace"), "{r}");
}

#[test]
fn bundle_entries_are_parsed_one_by_one() {
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p-1"}},
        {"resource": {"resourceType": "Claim", "id": "c"}},
        {"fullUrl": "urn:uuid:x"},
        {"resource": vital_obs("8867-4", json!({"value": 80, "code": "/min"}))},
    ]});
    let (ok, dead) = run(&raw(RawFormat::Fhir, serde_json::to_vec(&bundle).unwrap()));
    assert_eq!(
        ok.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        vec![(7, 0), (7, 3)]
    );
    assert_eq!(dead.len(), 2);
    let claim: Value = serde_json::from_slice(&dead[0].bytes).unwrap();
    assert_eq!(claim, json!({"resourceType": "Claim", "id": "c"}));
    assert_eq!(dead[1].reason, "Bundle.entry[2].resource: missing");
    // Without any date of its own, the Patient is dated by the latest clinical time.
    let ClinicalRecord::Patient(p) = &ok[0].record else {
        panic!()
    };
    assert_eq!(p.recorded_at.to_rfc3339(), "2020-03-04T10:06:07+00:00");
}

#[test]
fn references() {
    assert_eq!(patient_ref("Patient/123").as_deref(), Some("123"));
    assert_eq!(patient_ref("urn:uuid:abc-def").as_deref(), Some("abc-def"));
    assert_eq!(
        patient_ref("https://x.org/fhir/Patient/9/_history/2").as_deref(),
        Some("9")
    );
    assert_eq!(patient_ref("Group/1"), None);
    assert_eq!(patient_ref("NotPatient/1"), None);
    assert_eq!(patient_ref("Patient/"), None);
}

#[test]
fn synthea_bundles() {
    let Some(dir) = sample_dir("fhir-r4") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4);
    let (mut patients, mut kinds, mut reasons) = (0, BTreeMap::new(), BTreeMap::new());
    let mut labs = 0;
    for (i, f) in (0u64..).zip(&files) {
        let mut r = raw(RawFormat::Fhir, std::fs::read(f).unwrap());
        r.sequence = i;
        let (ok, dead) = run(&r);
        let mut pid = None;
        for rec in &ok {
            match &rec.record {
                ClinicalRecord::Patient(p) => {
                    patients += 1;
                    assert!(p.ssn.is_some() && p.mrn.is_some() && p.family.is_some());
                    assert!(p.birth_date.is_some() && !p.addresses.is_empty());
                    // Dated by the latest encounter: after birth.
                    assert!(p.recorded_at.date_naive() > p.birth_date.unwrap());
                    pid = Some(p.patient_id.clone());
                }
                ClinicalRecord::Vital(v) => {
                    *kinds.entry(v.kind).or_insert(0) += 1;
                    assert!(v.source_id.is_some());
                }
                ClinicalRecord::Encounter(_) => panic!("no encounter from FHIR"),
                ClinicalRecord::Lab(l) => {
                    labs += 1;
                    assert!(l.source_id.is_some());
                    assert!(vitalflow_model::lab::is_loinc_code(&l.code), "{}", l.code);
                    if let vitalflow_model::lab::LabValue::Quantity { unit, .. } = &l.value {
                        assert!(unit.ucum.is_some(), "{unit:?}");
                    } else {
                        panic!("{:?}", l.value);
                    }
                }
            }
        }
        let pid = pid.unwrap();
        assert!(
            ok.iter().all(|r| r.record.patient_id() == pid),
            "subjects resolve to the Patient id"
        );
        for d in dead {
            let key = if d.reason.starts_with("resource type") {
                "resource type"
            } else {
                &d.reason.clone()
            };
            *reasons.entry(key.to_owned()).or_insert(0) += 1;
            assert!(
                serde_json::from_slice::<Value>(&d.bytes)
                    .unwrap()
                    .is_object()
            );
        }
    }
    assert_eq!(patients, 4);
    // Issue 37: the laboratory Observations of the bundles are laboratory results.
    assert_eq!(labs, 101, "{reasons:?}");
    assert!(
        !reasons
            .keys()
            .any(|r| r.contains("718-7") || r.contains("2345-7")),
        "{reasons:?}"
    );
    for kind in [
        VitalKind::BodyWeight,
        VitalKind::BodyHeight,
        VitalKind::Bmi,
        VitalKind::BloodPressure,
        VitalKind::BodyTemperature,
    ] {
        assert!(
            kinds.get(&kind).copied().unwrap_or(0) > 0,
            "{kind:?}: {kinds:?}"
        );
    }
    assert_eq!(kinds[&VitalKind::BloodPressure], 34);
    assert_eq!(kinds[&VitalKind::BodyTemperature], 4);
    assert!(
        reasons.contains_key("Observation code 72514-3 is not a supported vital sign"),
        "{reasons:?}"
    );
    assert!(reasons.contains_key("Observation code 59576-9 is not a supported vital sign"));
}

#[test]
fn bundle_references_by_full_url_resolve_to_the_patient_id() {
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:0a1b", "resource": {"resourceType": "Patient", "id": "P-7"}},
            {"fullUrl": "urn:uuid:0c2d", "resource": vital_obs("8867-4", json!({"value": 70, "code": "/min"}))
                .as_object().unwrap().clone().into_iter()
                .chain([("subject".to_owned(), json!({"reference": "urn:uuid:0a1b"}))])
                .collect::<serde_json::Map<String, Value>>()}
        ]
    });
    let (ok, dead) = run(&raw(RawFormat::Fhir, serde_json::to_vec(&bundle).unwrap()));
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(ok.len(), 2);
    assert!(ok.iter().all(|r| r.record.patient_id() == "P-7"));
}

fn lab_obs(extra: Value) -> Value {
    let mut o = json!({
        "resourceType": "Observation", "id": "lab-1", "status": "corrected",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
        "subject": {"reference": "Patient/p-1"},
        "effectiveDateTime": "2020-03-04T05:06:07Z",
        "issued": "2020-03-04T06:00:00Z",
        "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.1}}],
        "interpretation": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "HH"}]}]
    });
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

/// Issue 37: laboratory Observations become laboratory results.
#[test]
fn laboratory_observations_are_lab_results() {
    use vitalflow_model::lab::{Comparator, LabStatus, LabValue};
    let lab = |v: Value| match fhir(&lab_obs(v)) {
        (ok, dead) if ok.len() == 1 => match ok.into_iter().next().unwrap() {
            ClinicalRecord::Lab(l) => *l,
            other => panic!("{other:?} {dead:?}"),
        },
        (_, dead) => panic!("{dead:?}"),
    };
    let l = lab(json!({"valueQuantity": {"value": 6.8, "unit": "mEq/L"}}));
    assert_eq!(
        (l.code.as_str(), l.status),
        ("2823-3", LabStatus::Corrected)
    );
    assert_eq!(
        (l.reference_range.low, l.reference_range.high),
        (Some(3.5), Some(5.1))
    );
    assert_eq!(l.interpretation.as_deref(), Some("HH"));
    assert_eq!(l.source_id.as_deref(), Some("lab-1"));
    assert!(l.issued.is_some());
    let LabValue::Quantity {
        value,
        unit,
        comparator,
    } = l.value
    else {
        panic!()
    };
    assert_eq!(
        (value, unit.ucum.as_deref(), comparator),
        (6.8, Some("mmol/L"), None)
    );
    let l = lab(
        json!({"valueQuantity": {"value": 0.01, "comparator": "<", "unit": "ng/mL",
        "system": "http://unitsofmeasure.org", "code": "ng/mL"}}),
    );
    assert!(matches!(
        l.value,
        LabValue::Quantity {
            comparator: Some(Comparator::Less),
            ..
        }
    ));
    let l = lab(json!({"valueQuantity": {"value": 13.4, "unit": "g/l-1"}}));
    let LabValue::Quantity { unit, .. } = l.value else {
        panic!()
    };
    assert_eq!(
        (unit.text.as_str(), unit.ucum),
        ("g/l-1", None),
        "kept, flagged"
    );
    let l = lab(
        json!({"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
        "code": "260415000", "display": "Not detected"}]}}),
    );
    assert!(matches!(l.value, LabValue::Coded { ref code, .. } if code == "260415000"));
    let l = lab(json!({"valueString": "Many spherocytes"}));
    assert_eq!(l.value, LabValue::Text("Many spherocytes".to_owned()));
    let l = lab(json!({"status": "cancelled"}));
    assert_eq!(l.value, LabValue::Absent);

    let (ok, dead) = fhir(&lab_obs(json!({})));
    assert!(ok.is_empty());
    assert_eq!(
        dead,
        ["Observation.value[x]: missing (and no dataAbsentReason)"]
    );
    let (_, dead) = fhir(&lab_obs(
        json!({"status": "registered", "valueString": "x"}),
    ));
    assert_eq!(
        dead,
        ["Observation.status: a registered result carries no value yet"]
    );
    let (_, dead) = fhir(&lab_obs(json!({"valueRange": {"low": {"value": 1}}})));
    assert!(
        dead[0].starts_with("Observation.valueRange: this value type is not supported"),
        "{dead:?}"
    );
    // Without the laboratory category, a code that is not a vital sign is still refused.
    let mut other = lab_obs(json!({"valueQuantity": {"value": 1.0, "unit": "mmol/L"}}));
    other.as_object_mut().unwrap().remove("category");
    let (ok, dead) = fhir(&other);
    assert!(ok.is_empty());
    assert_eq!(
        dead,
        ["Observation code 2823-3 is not a supported vital sign"]
    );
}
