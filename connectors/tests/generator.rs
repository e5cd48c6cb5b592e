//! Generator: determinism, envelope shape, PHI coverage and physiology.
#![allow(clippy::unwrap_used, clippy::float_cmp)]

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use vitalflow_connectors::{Generator, GeneratorConfig};
use vitalflow_model::RawFormat;

fn small(seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        patients: 50,
        count: 5_050,
        ..GeneratorConfig::default()
    }
}

fn json(g: &Generator, i: u64) -> Value {
    serde_json::from_slice(&g.event(i)).unwrap()
}

#[test]
fn same_seed_gives_identical_bytes_in_any_order() {
    let a = Generator::new(small(7));
    let b = Generator::new(small(7));
    let forward: Vec<Vec<u8>> = (0..a.count()).map(|i| a.event(i)).collect();
    let mut backward: Vec<Vec<u8>> = (0..b.count()).rev().map(|i| b.event(i)).collect();
    backward.reverse();
    assert_eq!(forward, backward);
    // Workers generating i % 3 == w together produce the same events.
    for w in 0..3 {
        let g = Generator::new(small(7));
        for i in (w..g.count()).step_by(3) {
            assert_eq!(g.event(i), forward[usize::try_from(i).unwrap()]);
        }
    }
    let other = Generator::new(small(8));
    assert_ne!(other.event(0), forward[0]);
    assert_ne!(other.event(100), forward[100]);
    let r = a.raw("gen", 60);
    assert_eq!(r.location, "generator#60");
    assert_eq!((r.sequence, r.format), (60, RawFormat::Envelope));
    assert_eq!(r.bytes, forward[60]);
}

#[test]
fn envelopes_have_the_platform_shape() {
    let g = Generator::new(small(1));
    let e = json(&g, 3);
    let m = &e["metadata"];
    assert_eq!(m["eventType"], "patient.record.created");
    assert_eq!(m["eventSource"], "vitalflow-generator");
    assert_eq!(m["version"], "1.0");
    assert_eq!(m["eventId"].as_str().unwrap().len(), 36);
    assert!(m.get("causationId").is_none());
    assert!(
        m["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T00:")
    );
    let p = &e["payload"];
    let id = p["patientId"].as_str().unwrap();
    assert!(id.len() == 10 && id.starts_with('P') && id[1..].bytes().all(|b| b.is_ascii_digit()));
    assert!(["male", "female"].contains(&p["gender"].as_str().unwrap()));
    assert!(p["ssn"].as_str().unwrap().len() == 11);
    assert!(p["mrn"].as_str().unwrap().starts_with("MRN"));
    assert!(p["phoneNumber"].as_str().unwrap().starts_with("555-"));
    assert_eq!(p["address"]["postalCode"].as_str().unwrap().len(), 5);
    assert_eq!(p["address"]["state"].as_str().unwrap().len(), 2);

    // Event 50 + 3 is patient 3's first reading, caused by its created event.
    let v = json(&g, 53);
    assert_eq!(v["metadata"]["eventType"], "vitals.measurement.recorded");
    assert_eq!(v["metadata"]["causationId"], m["eventId"]);
    assert_eq!(v["metadata"]["correlationId"], m["correlationId"]);
    assert_eq!(v["payload"]["patientId"], id);
    assert_eq!(v["payload"]["type"], "heart-rate");
    assert_eq!(v["payload"]["unit"], "/min");
    assert!(v["payload"]["value"].is_u64(), "integer heart rate");

    let mut units: BTreeMap<(String, String), usize> = BTreeMap::new();
    for i in 50..g.count() {
        let v = json(&g, i);
        let p = &v["payload"];
        let kind = p["type"].as_str().unwrap().to_owned();
        let unit = p["unit"].as_str().unwrap().to_owned();
        if kind == "blood-pressure" {
            assert!(p.get("value").is_none());
            assert!(p["systolic"].as_f64().unwrap() > p["diastolic"].as_f64().unwrap());
        } else {
            assert!(p.get("systolic").is_none() && p["value"].is_number());
        }
        let at = p["effectiveAt"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.len() == 20, "{at}");
        assert!(v["metadata"]["timestamp"].as_str().unwrap() > at);
        *units.entry((kind, unit)).or_default() += 1;
    }
    let expected = [
        ("blood-pressure", "mm[Hg]"),
        ("body-temperature", "Cel"),
        ("body-temperature", "[degF]"),
        ("heart-rate", "/min"),
        ("respiratory-rate", "/min"),
        ("spo2", "%"),
    ];
    let got: Vec<(&str, &str)> = units
        .keys()
        .map(|(k, u)| (k.as_str(), u.as_str()))
        .collect();
    assert_eq!(got, expected);
    let f = units[&("body-temperature".into(), "[degF]".into())];
    let c = units[&("body-temperature".into(), "Cel".into())];
    assert!(f > 0 && f < c, "{f} °F vs {c} °C readings");
}

/// Every string leaf of a patient payload except the coarse ones is in `phi_values`.
#[test]
fn phi_values_cover_every_phi_field() {
    let g = Generator::new(small(3));
    let phi: HashSet<String> = g.phi_values().into_iter().collect();
    let coarse = ["gender", "state", "postalCode"];
    let mut fields = HashSet::new();
    for i in 0..50 {
        let e = json(&g, i);
        let p = e["payload"].as_object().unwrap();
        let address = p["address"].as_object().unwrap();
        for (k, v) in p.iter().chain(address) {
            let Some(s) = v.as_str() else { continue };
            fields.insert(k.clone());
            if !coarse.contains(&k.as_str()) {
                assert!(
                    phi.contains(s),
                    "{k} of patient {i} missing from phi_values"
                );
            }
        }
        let full = format!(
            "{} {}",
            p["firstName"].as_str().unwrap(),
            p["lastName"].as_str().unwrap()
        );
        assert!(phi.contains(&full));
    }
    for f in [
        "patientId",
        "firstName",
        "lastName",
        "dateOfBirth",
        "street",
        "city",
        "phoneNumber",
        "email",
        "ssn",
        "mrn",
    ] {
        assert!(fields.contains(f), "{f}");
    }
    for v in &phi {
        assert!(v.len() >= 5, "PHI value too short to scan for: {v:?}");
    }
    // No PHI value appears in a vitals event other than the patient id.
    let ids: HashSet<String> = (0..50).map(|p| g.patient_id(p)).collect();
    for i in 50..300 {
        let text = String::from_utf8(g.event(i)).unwrap();
        for v in phi.iter().filter(|v| !ids.contains(*v)) {
            assert!(
                !text.contains(v.as_str()),
                "event {i} holds a non-id PHI value"
            );
        }
    }
}

#[test]
fn deteriorating_patients_reach_septic_values() {
    let g = Generator::new(GeneratorConfig::default());
    let patients = g.config().patients;
    let mut max_hr = vec![0f64; usize::try_from(patients).unwrap()];
    let mut min_spo2 = vec![100f64; max_hr.len()];
    for i in patients..g.count() {
        let e = json(&g, i);
        let p = &e["payload"];
        let n = usize::try_from((i - patients) % patients).unwrap();
        match p["type"].as_str().unwrap() {
            "heart-rate" => max_hr[n] = max_hr[n].max(p["value"].as_f64().unwrap()),
            "spo2" => min_spo2[n] = min_spo2[n].min(p["value"].as_f64().unwrap()),
            _ => {}
        }
    }
    let deteriorating: Vec<usize> = (0..max_hr.len())
        .filter(|&n| g.physiology(n as u64).deteriorating())
        .collect();
    assert!(
        (60..=140).contains(&deteriorating.len()),
        "{}",
        deteriorating.len()
    );
    let septic = deteriorating
        .iter()
        .filter(|&&n| max_hr[n] > 120.0 && min_spo2[n] < 92.0)
        .count();
    assert!(
        septic * 2 > deteriorating.len(),
        "{septic} of {}",
        deteriorating.len()
    );
    let stable_septic = (0..max_hr.len())
        .filter(|n| !deteriorating.contains(n) && max_hr[*n] > 120.0 && min_spo2[*n] < 92.0)
        .count();
    assert_eq!(stable_septic, 0);
}
