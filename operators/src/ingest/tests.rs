#![allow(clippy::unwrap_used)]

use serde_json::json;
use vitalflow_model::{RawFormat, RawRecord};

use super::envelope::tests::{envelope, patient_payload};
use crate::test_support::{XorShift, raw, run};

const FORMATS: [RawFormat; 5] = [
    RawFormat::Envelope,
    RawFormat::Fhir,
    RawFormat::VitalsCsv,
    RawFormat::Hl7v2,
    RawFormat::Unknown,
];

fn with_csv_context(mut r: RawRecord) -> RawRecord {
    if r.format == RawFormat::VitalsCsv {
        r.header = Some(
            ["time", "HR", "ABPSys", "ABPDias", "TEMP"]
                .map(str::to_owned)
                .to_vec(),
        );
        r.context = Some("P1".to_owned());
    }
    r
}

/// Valid inputs of each parsed format, to truncate and mutate.
fn seeds() -> Vec<RawRecord> {
    let bundle = json!({"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p", "name": [{"family": "Lovelace"}],
                      "birthDate": "1815-12-10", "address": [{"postalCode": "02139"}]}},
        {"resource": {"resourceType": "Observation", "id": "o",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                      "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2020-01-01",
                      "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 80, "code": "mm[Hg]"}}]}}
    ]});
    let vital = json!({"patientId": "P1", "type": "heart-rate", "value": 72, "unit": "/min",
                       "effectiveAt": "2026-01-01T00:00:00Z"});
    vec![
        raw(
            RawFormat::Envelope,
            envelope("patient.record.created", patient_payload()),
        ),
        raw(
            RawFormat::Envelope,
            envelope("vitals.measurement.recorded", vital),
        ),
        raw(RawFormat::Fhir, serde_json::to_vec(&bundle).unwrap()),
        with_csv_context(raw(
            RawFormat::VitalsCsv,
            "2026-01-01T00:00:00Z,80,120,70,37.1\n",
        )),
    ]
}

#[test]
fn unsupported_formats_are_dead_lettered() {
    let (ok, dead) = run(&raw(RawFormat::Hl7v2, "MSH|^~\\&|A|B\rPID|1||123"));
    assert!(ok.is_empty());
    assert_eq!(dead[0].reason, "MSH-12: version missing");
    assert_eq!(dead[0].bytes, b"MSH|^~\\&|A|B\rPID|1||123");
    let (_, dead) = run(&raw(RawFormat::Unknown, vec![0, 1, 2]));
    assert_eq!(dead[0].reason, "unrecognised input format");
}

#[test]
fn seeds_parse() {
    for s in seeds() {
        let (ok, dead) = run(&s);
        assert!(
            !ok.is_empty() && dead.is_empty(),
            "{:?}: {dead:?}",
            s.format
        );
    }
}

#[test]
fn random_bytes_never_panic_and_are_accounted_for() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 {
        let len = rng.below(200);
        let mut bytes = rng.bytes(len);
        if i % 3 == 0 {
            // Mostly-printable noise with JSON/CSV punctuation gets further into the parsers.
            const ALPHABET: &[u8] =
                b"{}[]\",:0123456789.-eE truefalsnul\n\r\\abcPatientresourceType";
            bytes = bytes
                .iter()
                .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()])
                .collect();
        }
        for format in FORMATS {
            let (ok, dead) = run(&with_csv_context(raw(format, bytes.clone())));
            if format != RawFormat::VitalsCsv {
                assert!(
                    !ok.is_empty() || !dead.is_empty(),
                    "{format:?} dropped input silently"
                );
            }
        }
    }
}

#[test]
fn truncated_and_mutated_inputs_never_panic() {
    let mut rng = XorShift(42);
    for seed in seeds() {
        for cut in 0..seed.bytes.len() {
            let mut r = seed.clone();
            r.bytes.truncate(cut);
            let (ok, dead) = run(&r);
            if seed.format != RawFormat::VitalsCsv {
                assert!(!ok.is_empty() || !dead.is_empty());
            }
            for d in &dead {
                assert!(!d.reason.contains("Lovelace"), "{}", d.reason);
            }
        }
        for _ in 0..500 {
            let mut r = seed.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(r.bytes.len());
                r.bytes[at] = rng.bytes(1)[0];
            }
            let (_, dead) = run(&r);
            for d in &dead {
                assert!(
                    !d.reason.contains("Lovelace") && !d.reason.contains("02139"),
                    "{}",
                    d.reason
                );
            }
        }
    }
}

#[test]
fn deep_nesting_is_rejected_not_overflowed() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for format in [RawFormat::Envelope, RawFormat::Fhir] {
        let (ok, dead) = run(&raw(format, deep.clone()));
        assert!(ok.is_empty());
        assert!(
            dead[0].reason.starts_with("invalid JSON"),
            "{}",
            dead[0].reason
        );
    }
}
