#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use vitalflow_model::clinical::{
    Address, ClinicalRecord, Gender, IdClass, Identifier, Ingested, PatientRecord, VitalRecord,
};
use vitalflow_model::deid::{AGE_90_OR_OLDER, DeidPatient, DeidRecord, DeidVital};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use super::*;
use crate::test_support::{anonymizer, key};

pub(crate) const PHI: [&str; 12] = [
    "P000000042",
    "Ada",
    "Lovelace",
    "1815-12-10",
    "12 St James Square",
    "Springfield",
    "555-010-0199",
    "ada@example.org",
    "999-01-2345",
    "MRN0000042",
    "DL-77",
    "02139",
];

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 10, 11, 12).unwrap()
}

pub(crate) fn patient_record(birth: Option<NaiveDate>, zip: &str) -> PatientRecord {
    PatientRecord {
        patient_id: "P000000042".to_owned(),
        mrn: Some("MRN0000042".to_owned()),
        ssn: Some("999-01-2345".to_owned()),
        identifiers: vec![Identifier::new(IdClass::Licence, "DL-77")],
        given: vec!["Ada".to_owned()],
        family: Some("Lovelace".to_owned()),
        birth_date: birth,
        deceased: None,
        gender: Some(Gender::Female),
        addresses: vec![Address {
            lines: vec!["12 St James Square".to_owned()],
            city: Some("Springfield".to_owned()),
            state: Some("MA".to_owned()),
            postal_code: Some(zip.to_owned()),
            country: Some("US".to_owned()),
            district: None,
        }],
        phones: vec!["555-010-0199".to_owned()],
        emails: vec!["ada@example.org".to_owned()],
        faxes: Vec::new(),
        urls: Vec::new(),
        ip_addresses: Vec::new(),
        photos: 0,
        contacts: Vec::new(),
        notes: Vec::new(),
        recorded_at: at(2026, 1, 1),
    }
}

pub(crate) fn ingested(record: ClinicalRecord) -> Ingested {
    Ingested {
        source: "s".to_owned(),
        location: "l".to_owned(),
        sequence: (0, 0),
        record,
        arrival_us: 0,
    }
}

pub(crate) fn vital(kind: VitalKind, value: VitalValue, when: DateTime<Utc>) -> Ingested {
    ingested(ClinicalRecord::Vital(VitalRecord {
        source_id: Some("obs-P000000042-1".to_owned()),
        patient_id: "P000000042".to_owned(),
        kind,
        value,
        effective: when,
        device: None,
        notes: Vec::new(),
        mentioned: Vec::new(),
    }))
}

fn deid_patient(a: &Anonymizer, p: PatientRecord) -> (DeidPatient, DeidReport) {
    let mut report = DeidReport::default();
    match a
        .apply(&ingested(ClinicalRecord::Patient(Box::new(p))), &mut report)
        .unwrap()
    {
        DeidRecord::Patient(p) => (p, report),
        other => panic!("{other:?}"),
    }
}

fn deid_vital(a: &Anonymizer, rec: &Ingested) -> DeidVital {
    match a.apply(rec, &mut DeidReport::default()).unwrap() {
        DeidRecord::Vital(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_direct_identifier_survives() {
    let a = anonymizer(1, DatePolicy::Shift { max_days: 30 });
    let (p, report) = deid_patient(
        &a,
        patient_record(NaiveDate::from_ymd_opt(1970, 12, 10), "02139-1234"),
    );
    let text = serde_json::to_string(&DeidRecord::Patient(p.clone())).unwrap();
    for phi in PHI {
        assert!(!text.contains(phi), "{phi} in {text}");
    }
    assert_eq!(p.pseudonym, a.pseudonym("P000000042"));
    assert_eq!(p.pseudonym.len(), 32);
    assert_eq!((p.birth_year, p.age_group.as_deref()), (Some(1970), None));
    assert_eq!(
        (p.state.as_deref(), p.zip3.as_deref(), p.country.as_deref()),
        (Some("MA"), Some("021"), Some("US"))
    );
    assert_eq!((p.deceased, p.deceased_year), (false, None));
    for (class, action) in [
        ("name", "redact"),
        ("ssn", "redact"),
        ("mrn", "redact"),
        ("licence", "redact"),
        ("phone", "redact"),
        ("email", "redact"),
        ("address", "redact"),
        ("patient-id", "crypto-hash"),
        ("birth-date", "generalize"),
        ("zip", "generalize"),
        ("date", "shift"),
    ] {
        assert_eq!(
            report.count(class, action),
            if matches!(class, "name" | "address") {
                2
            } else {
                1
            },
            "{class}:{action}"
        );
    }
    // The vital's id hides the source id.
    let v = deid_vital(
        &a,
        &vital(
            VitalKind::HeartRate,
            VitalValue::Quantity { value: 70.0 },
            at(2026, 1, 2),
        ),
    );
    let text = serde_json::to_string(&DeidRecord::Vital(v)).unwrap();
    assert!(
        !text.contains("P000000042") && !text.contains("obs-"),
        "{text}"
    );
}

#[test]
fn over_89_withholds_birth_and_death_years() {
    let a = anonymizer(1, DatePolicy::Year);
    // 90 on 2026-01-01 exactly.
    let (p, report) = deid_patient(
        &a,
        patient_record(NaiveDate::from_ymd_opt(1936, 1, 1), "02139"),
    );
    assert_eq!(
        (p.birth_year, p.age_group.as_deref()),
        (None, Some(AGE_90_OR_OLDER))
    );
    assert_eq!(report.count("age-over-89", "generalize"), 1);
    assert_eq!(report.count("birth-date", "generalize"), 0);
    // 89 until tomorrow.
    let (p, _) = deid_patient(
        &a,
        patient_record(NaiveDate::from_ymd_opt(1936, 1, 2), "02139"),
    );
    assert_eq!((p.birth_year, p.age_group), (Some(1936), None));
    // Died at 95 in 2020, recorded later.
    let mut rec = patient_record(NaiveDate::from_ymd_opt(1925, 6, 1), "02139");
    rec.deceased = NaiveDate::from_ymd_opt(2020, 7, 1);
    let (p, _) = deid_patient(&a, rec);
    assert_eq!(
        (p.birth_year, p.deceased, p.deceased_year),
        (None, true, None)
    );
    assert_eq!(p.age_group.as_deref(), Some(AGE_90_OR_OLDER));
    // Died young: the year of death is kept.
    let mut rec = patient_record(NaiveDate::from_ymd_opt(1980, 6, 1), "02139");
    rec.deceased = NaiveDate::from_ymd_opt(2020, 7, 1);
    let (p, _) = deid_patient(&a, rec);
    assert_eq!(
        (p.birth_year, p.deceased, p.deceased_year),
        (Some(1980), true, Some(2020))
    );
    // Deceased without a date.
    let mut rec = patient_record(None, "02139");
    rec.deceased = Some(crate::ingest::DECEASED_DATE_UNKNOWN);
    let (p, _) = deid_patient(&a, rec);
    assert_eq!(
        (p.birth_year, p.deceased, p.deceased_year),
        (None, true, None)
    );
}

#[test]
fn zip3_and_restricted_list() {
    let a = anonymizer(1, DatePolicy::Year);
    let zip = |z: &str| deid_patient(&a, patient_record(None, z)).0.zip3;
    assert_eq!(zip("98053").as_deref(), Some("980"));
    assert_eq!(zip("980531234").as_deref(), Some("980"));
    assert_eq!(zip(" 98053-1234 ").as_deref(), Some("980"));
    for restricted in AnonymizeConfig::default_restricted_zip3() {
        assert_eq!(zip(&format!("{restricted}45")).as_deref(), Some("000"));
    }
    assert_eq!(AnonymizeConfig::default_restricted_zip3().len(), 18);
    for bad in [
        "9805",
        "980531",
        "98-053",
        "K1A 0B1",
        "9805312345",
        "abcde",
        "98053-123",
    ] {
        assert_eq!(zip(bad), None, "{bad}");
    }
    let (_, report) = deid_patient(&a, patient_record(None, "03601"));
    assert_eq!(report.count("zip", "restrict-000"), 1);
}

#[test]
fn shift_is_consistent_per_patient_and_bounded() {
    let a = anonymizer(7, DatePolicy::Shift { max_days: 10 });
    let hr = VitalValue::Quantity { value: 60.0 };
    let t1 = at(2026, 3, 1);
    let t2 = at(2026, 3, 5);
    let v1 = deid_vital(&a, &vital(VitalKind::HeartRate, hr, t1));
    let v2 = deid_vital(&a, &vital(VitalKind::HeartRate, hr, t2));
    // Intervals are preserved, times of day too, dates move by whole days within bounds.
    assert_eq!(v2.effective - v1.effective, t2 - t1);
    assert_eq!(v1.effective.time(), t1.time());
    assert!((v1.effective - t1).num_days().abs() <= 10);
    let (p, _) = deid_patient(&a, patient_record(None, "02139"));
    assert_eq!(
        p.recorded_at - at(2026, 1, 1),
        v1.effective - t1,
        "same shift for the patient"
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..2000 {
        let d = a.shift_days(&format!("P{i}"), 10);
        assert!((-10..=10).contains(&d) && d != 0, "{d}");
        seen.insert(d);
    }
    assert_eq!(seen.len(), 20, "every offset but 0 occurs");
    // The smallest range: a day either way.
    assert!((0..100).all(|i| [-1, 1].contains(&a.shift_days(&format!("P{i}"), 1))));
    assert!([-1, 1].contains(&a.shift_days("P1", 0)));
    assert!(
        (0..100)
            .map(|i| a.shift_days(&format!("P{i}"), 365))
            .any(|d| d != 0)
    );
}

#[test]
fn year_policy() {
    let a = anonymizer(7, DatePolicy::Year);
    let v = deid_vital(
        &a,
        &vital(
            VitalKind::Spo2,
            VitalValue::Quantity { value: 97.0 },
            at(2025, 8, 9),
        ),
    );
    assert_eq!(
        v.effective,
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
    );
    let (p, report) = deid_patient(&a, patient_record(None, "02139"));
    assert_eq!(
        (
            p.recorded_at.year(),
            p.recorded_at.ordinal(),
            p.recorded_at.hour()
        ),
        (2026, 1, 0)
    );
    assert_eq!(report.count("date", "generalize"), 1);
}

#[test]
fn determinism_and_keys() {
    let rec = vital(
        VitalKind::BodyTemperature,
        VitalValue::Quantity { value: 37.0 },
        at(2026, 1, 1),
    );
    let a1 = anonymizer(1, DatePolicy::Shift { max_days: 30 });
    let a1b = anonymizer(1, DatePolicy::Shift { max_days: 30 });
    let a2 = anonymizer(2, DatePolicy::Shift { max_days: 30 });
    assert_eq!(deid_vital(&a1, &rec), deid_vital(&a1b, &rec));
    assert_ne!(deid_vital(&a1, &rec).id, deid_vital(&a2, &rec).id);
    assert_ne!(a1.pseudonym("P1"), a2.pseudonym("P1"));
    assert_ne!(a1.pseudonym("P1"), a1.pseudonym("P2"));
    // Known answer: HMAC-SHA256(key = 32 × 0x01, "patient\0P1"), first 16 bytes.
    let mac = key(1).mac(&[b"patient\0P1"]);
    assert_eq!(a1.pseudonym("P1"), vitalflow_model::ids::hex(&mac[..16]));
    // Ids differ by kind and by source id; without a source id, by time.
    let mut other = rec.clone();
    if let ClinicalRecord::Vital(v) = &mut other.record {
        v.source_id = None;
    }
    assert_ne!(deid_vital(&a1, &rec).id, deid_vital(&a1, &other).id);
    let mut later = other.clone();
    if let ClinicalRecord::Vital(v) = &mut later.record {
        v.effective = at(2026, 1, 2);
    }
    assert_ne!(deid_vital(&a1, &other).id, deid_vital(&a1, &later).id);
}

#[test]
fn empty_patient_id_is_an_error_and_reports_nothing() {
    let a = anonymizer(1, DatePolicy::Year);
    let mut p = patient_record(None, "02139");
    p.patient_id = " ".to_owned();
    let mut report = DeidReport::default();
    let e = a
        .apply(&ingested(ClinicalRecord::Patient(Box::new(p))), &mut report)
        .unwrap_err();
    assert_eq!(e.to_string(), "patient record: patient id is empty");
    assert!(report.is_empty());
}

#[test]
fn keys_load_and_never_print() {
    let k = PseudonymKey::from_bytes(b"0123456789abcdef-secret".to_vec()).unwrap();
    assert_eq!(format!("{k:?}"), "PseudonymKey(<redacted>)");
    let cfg = AnonymizeConfig {
        key: k,
        dates: DatePolicy::Year,
        restricted_zip3: vec![],
        policy: Policy::default(),
    };
    assert!(!format!("{cfg:?}").contains("secret"));
    assert!(!format!("{:?}", Anonymizer::new(cfg)).contains("secret"));
    let e = PseudonymKey::from_bytes(b"short-secret".to_vec()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pseudonymization key too short: 12 bytes, at least 16 required"
    );

    let dir = std::env::temp_dir().join(format!("vitalflow-ops-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key");
    std::fs::write(&path, "0123456789abcdef-secret\n").unwrap();
    let from_file = PseudonymKey::from_file(&path).unwrap();
    let from_bytes = PseudonymKey::from_bytes(b"0123456789abcdef-secret".to_vec()).unwrap();
    assert_eq!(
        from_file.mac(&[b"x"]),
        from_bytes.mac(&[b"x"]),
        "trailing newline trimmed"
    );
    let e = PseudonymKey::from_file(&dir.join("absent")).unwrap_err();
    assert!(matches!(e, KeyError::Io { .. }));
    std::fs::remove_dir_all(&dir).unwrap();

    let e = PseudonymKey::from_env("VITALFLOW_OPERATORS_TEST_SURELY_UNSET").unwrap_err();
    assert_eq!(
        e.to_string(),
        "environment variable VITALFLOW_OPERATORS_TEST_SURELY_UNSET is not set"
    );
    // PATH is set in any test environment and long enough.
    if std::env::var("PATH").is_ok_and(|p| p.len() >= 16) {
        assert!(PseudonymKey::from_env("PATH").is_ok());
    }

    let (e1, e2) = (PseudonymKey::ephemeral(), PseudonymKey::ephemeral());
    assert_ne!(e1.mac(&[b"x"]), e2.mac(&[b"x"]));
    assert_ne!(super::key::fallback_entropy_for_tests(), [0u8; 64]);
}

#[test]
fn per_class_actions_keep_hash_or_refuse() {
    let policy = Policy::with([
        ("name", "keep"),
        ("mrn", "crypto-hash"),
        ("zip", "keep"),
        ("licence", "keep"),
    ])
    .unwrap();
    assert_eq!(
        policy.kept(),
        vec![
            PhiClass::Name,
            PhiClass::Zip,
            PhiClass::Id(IdClass::Licence)
        ]
    );
    let a = Anonymizer::new(AnonymizeConfig {
        key: crate::test_support::key(3),
        dates: DatePolicy::Year,
        restricted_zip3: AnonymizeConfig::default_restricted_zip3(),
        policy,
    });
    let (p, report) = deid_patient(
        &a,
        patient_record(NaiveDate::from_ymd_opt(1970, 5, 6), "02139"),
    );
    assert_eq!(
        p.kept.names,
        vec![(Some("Lovelace".to_owned()), vec!["Ada".to_owned()])]
    );
    assert_eq!(p.kept.postal_code.as_deref(), Some("02139"));
    assert_eq!(p.zip3, None);
    let mrn = p
        .identifiers
        .iter()
        .find(|i| i.class == IdClass::Mrn)
        .unwrap();
    assert!(mrn.hashed && mrn.value.len() == 32 && mrn.value != "MRN0000042");
    let licence = p
        .identifiers
        .iter()
        .find(|i| i.class == IdClass::Licence)
        .unwrap();
    assert_eq!((licence.hashed, licence.value.as_str()), (false, "DL-77"));
    assert!(
        p.identifiers.iter().all(|i| i.class != IdClass::Ssn),
        "ssn stays redacted"
    );
    assert_eq!(report.count("name", "keep"), 2);
    assert_eq!(report.count("mrn", "crypto-hash"), 1);
    assert_eq!(report.count("ssn", "redact"), 1);

    // The Patient resource shows what was kept and hashed, and nothing else.
    let c = crate::canonize::canonize(&DeidRecord::Patient(p)).unwrap();
    let r: serde_json::Value = serde_json::from_str(&c.resource).unwrap();
    assert_eq!(r["name"][0]["family"], "Lovelace");
    assert_eq!(r["address"][0]["postalCode"], "02139");
    let systems: Vec<&str> = r["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["system"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        vec!["urn:vitalflow:hashed:mrn", "urn:vitalflow:id:licence"]
    );
    assert!(r.get("telecom").is_none());

    for (class, action, message) in [
        (
            "photo",
            "keep",
            "`photo` cannot be `keep` (expected one of: redact)",
        ),
        ("names", "redact", "unknown identifier class `names`"),
        (
            "free-text",
            "redact",
            "`free-text` cannot be `redact` (expected one of: drop, scrub)",
        ),
    ] {
        let e = Policy::with([(class, action)]).unwrap_err().to_string();
        assert!(e.starts_with(message), "{e}");
    }
}

fn lab_record(status: vitalflow_model::lab::LabStatus, text: &str) -> Ingested {
    use vitalflow_model::clinical::LabRecord;
    use vitalflow_model::lab::{LabValue, ReferenceRange};
    Ingested {
        source: "s".to_owned(),
        location: "s#1".to_owned(),
        sequence: (1, 0),
        record: ClinicalRecord::Lab(Box::new(LabRecord {
            source_id: Some("ORD-77^LAB/6742-1/".to_owned()),
            patient_id: "P000000042".to_owned(),
            code: "6742-1".to_owned(),
            display: Some("Erythrocyte morphology".to_owned()),
            value: LabValue::Text(text.to_owned()),
            reference_range: ReferenceRange::default(),
            interpretation: Some("A".to_owned()),
            status,
            effective: at(2026, 3, 1),
            issued: Some(at(2026, 3, 2)),
            notes: vec![format!("called {text}")],
            mentioned: vec!["Ada".to_owned(), "Lovelace".to_owned()],
        })),
        arrival_us: 0,
    }
}

/// Issue 37: a laboratory result's text value is free text: dropped by default (the value
/// is then masked), scrubbed under `scrub`; a correction keeps the id of what it corrects.
#[test]
fn lab_results_are_pseudonymized_and_their_text_follows_the_free_text_action() {
    use vitalflow_model::lab::{LabStatus, LabValue};
    let a = anonymizer(1, DatePolicy::Shift { max_days: 30 });
    let mut report = DeidReport::default();
    let deid = |a: &Anonymizer, rec: &Ingested, report: &mut DeidReport| match a
        .apply(rec, report)
        .unwrap()
    {
        DeidRecord::Lab(l) => *l,
        other => panic!("{other:?}"),
    };
    let prelim = deid(
        &a,
        &lab_record(LabStatus::Preliminary, "Ada Lovelace: spherocytes"),
        &mut report,
    );
    let corrected = deid(
        &a,
        &lab_record(LabStatus::Corrected, "spherocytes"),
        &mut report,
    );
    assert_eq!(prelim.id, corrected.id);
    assert_eq!(prelim.id.len(), 32);
    assert!(!prelim.id.contains("ORD-77"));
    assert_eq!(prelim.pseudonym, a.pseudonym("P000000042"));
    assert_eq!(
        (prelim.value.clone(), prelim.value_masked),
        (LabValue::Absent, true)
    );
    assert!(prelim.notes.is_empty());
    let shift = a.shift_days("P000000042", 30);
    assert_eq!(
        prelim.effective,
        at(2026, 3, 1) + chrono::TimeDelta::days(shift)
    );
    assert_eq!(
        prelim.issued,
        Some(at(2026, 3, 2) + chrono::TimeDelta::days(shift))
    );
    assert_eq!(report.count("free-text", "drop"), 4);
    assert_eq!(report.count("result-id", "crypto-hash"), 2);

    let scrub = Anonymizer::new(AnonymizeConfig {
        key: key(1),
        dates: DatePolicy::Shift { max_days: 30 },
        restricted_zip3: AnonymizeConfig::default_restricted_zip3(),
        policy: Policy::with([("free-text", "scrub")]).unwrap(),
    });
    let l = deid(
        &scrub,
        &lab_record(LabStatus::Final, "Ada Lovelace: spherocytes"),
        &mut report,
    );
    let LabValue::Text(text) = &l.value else {
        panic!("{:?}", l.value)
    };
    assert!(
        text.contains("spherocytes") && !text.contains("Ada") && !text.contains("Lovelace"),
        "{text}"
    );
    assert!(!l.value_masked);
    assert_eq!(l.id, prelim.id, "same key, same id");
}
