//! Parsing throughput, in input bytes: raw records through the real ingestion code
//! (`vitalflow_operators::ingest::ingest_with`, default options) for each format, and flat JSON
//! and CSV rows through a declared schema's decoder (`vitalflow_operators::decode::Decoder`).
//!
//! * `envelope/generator`: 10,000 generator envelopes (1,000 `patient.record.created`, 9,000
//!   `vitals.measurement.recorded` rotating through the five vital signs);
//! * `fhir/bundle`: 1,000 FHIR R4 JSON Bundles of one Patient and five vital-sign Observations
//!   (heart rate, respiratory rate, SpO2, temperature, blood-pressure panel) referring to the
//!   Patient by its entry's `fullUrl`;
//! * `hl7v2/adt-a01`: 1,000 HL7 v2.5.1 `ADT^A01` admits (MSH, EVN, PID, NK1, PV1);
//! * `hl7v2/oru-r01`: 1,000 HL7 v2.5.1 `ORU^R01` messages of six vital-sign OBX each (heart rate,
//!   respiratory rate, SpO2, temperature, systolic and diastolic of one panel);
//! * `vitals-csv/row`: 10,000 CSV rows of bedside-monitor numerics;
//! * `decode/flat-json`, `decode/csv`: 10,000 of the generator's flat readings, as JSON lines and
//!   as CSV rows with a header, decoded against a nine-field schema.
//!
//! Inputs are synthetic (the generator's fake identities and physiology) and made once, before
//! timing; each is checked to ingest or decode without a dead letter. Throughput is the input
//! bytes of one iteration (one batch).
//!
//! `cargo bench -p vitalflow-benches --bench parse` (`-- hl7v2` for one format).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use vitalflow_benches::{FLAT_FIELDS, decoder_of};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_model::vitals::VitalKind;
use vitalflow_model::{RawFormat, RawRecord};
use vitalflow_operators::decode::Decoder;
use vitalflow_operators::ingest::{IngestOptions, ingest_with};

/// Events of the envelope batch, and rows of the CSV and flat batches.
const EVENTS: u64 = 10_000;
/// Messages (or Bundles) per batch: one per patient.
const MESSAGES: u64 = 1_000;
const STAGE: &str = "ingest";

fn generator(count: u64) -> Generator {
    Generator::new(GeneratorConfig {
        seed: 42,
        patients: MESSAGES,
        count,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    })
}

fn raw(format: RawFormat, i: u64, bytes: Vec<u8>) -> RawRecord {
    RawRecord {
        source: "bench".to_owned(),
        location: format!("bench#{i}"),
        sequence: i,
        format,
        header: None,
        context: None,
        bytes,
        arrival_us: 0,
    }
}

/// One reading of every vital sign of patient `p` at tick `tick`, and when it was taken.
struct Reading {
    at: DateTime<Utc>,
    hr: f64,
    rr: f64,
    spo2: f64,
    temp: f64,
    sbp: f64,
    dbp: f64,
}

fn reading(g: &Generator, p: u64, tick: u64) -> Reading {
    let cfg = g.config();
    let phys = g.physiology(p);
    let m = |kind| phys.measure(cfg.seed, p, tick, kind);
    let (sbp, dbp) = m(VitalKind::BloodPressure);
    let secs = i64::try_from(tick * u64::from(cfg.interval_secs) + p % 60).unwrap();
    Reading {
        at: cfg.start + TimeDelta::seconds(secs),
        hr: m(VitalKind::HeartRate).0,
        rr: m(VitalKind::RespiratoryRate).0,
        spo2: m(VitalKind::Spo2).0,
        temp: m(VitalKind::BodyTemperature).0,
        sbp,
        dbp: dbp.unwrap_or(sbp - 40.0),
    }
}

/// A FHIR R4 transaction Bundle: patient `p`'s Patient resource and one Observation per vital
/// sign, subjects given as the Patient entry's `fullUrl`.
fn fhir_bundle(g: &Generator, p: u64) -> Vec<u8> {
    let id = g.identity(p);
    let r = reading(g, p, 1);
    let at = r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patient_url = format!("urn:uuid:patient-{p}");
    let category = json!([{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs"
    }]}]);
    let quantity = |value: f64, unit: &str| json!({"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit});
    let observation = |n: u32, code: &str, display: &str, value: serde_json::Value| {
        let mut o = json!({
            "resourceType": "Observation",
            "id": format!("obs-{p}-{n}"),
            "status": "final",
            "category": category,
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": patient_url},
            "effectiveDateTime": at,
            "device": {"display": format!("bedside-monitor-{}", p % 40)}
        });
        if code == "85354-9" {
            o["component"] = value;
        } else {
            o["valueQuantity"] = value;
        }
        json!({"fullUrl": format!("urn:uuid:obs-{p}-{n}"), "resource": o,
               "request": {"method": "POST", "url": "Observation"}})
    };
    let component = |code: &str, display: &str, v: f64| {
        json!({"code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
               "valueQuantity": quantity(v, "mm[Hg]")})
    };
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": at,
        "entry": [
            {"fullUrl": patient_url, "resource": {
                "resourceType": "Patient",
                "id": id.patient_id,
                "meta": {"lastUpdated": at},
                "identifier": [
                    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                     "system": "urn:oid:2.16.840.1.113883.19.5", "value": id.mrn},
                    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}]},
                     "system": "http://hl7.org/fhir/sid/us-ssn", "value": id.ssn}
                ],
                "name": [{"use": "official", "family": id.last, "given": [id.first]}],
                "telecom": [{"system": "phone", "value": id.phone, "use": "home"},
                            {"system": "email", "value": id.email}],
                "gender": id.gender,
                "birthDate": id.birth_date.format("%Y-%m-%d").to_string(),
                "address": [{"line": [id.street], "city": id.city, "state": id.state,
                             "postalCode": id.postal_code, "country": "US"}]
             },
             "request": {"method": "PUT", "url": format!("Patient/{}", id.patient_id)}},
            observation(1, "8867-4", "Heart rate", quantity(r.hr, "/min")),
            observation(2, "9279-1", "Respiratory rate", quantity(r.rr, "/min")),
            observation(3, "59408-5", "Oxygen saturation", quantity(r.spo2, "%")),
            observation(4, "8310-5", "Body temperature", quantity(r.temp, "Cel")),
            observation(5, "85354-9", "Blood pressure panel", json!([
                component("8480-6", "Systolic blood pressure", r.sbp),
                component("8462-4", "Diastolic blood pressure", r.dbp)
            ]))
        ]
    });
    serde_json::to_vec(&bundle).unwrap()
}

fn hl7_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S+0000").to_string()
}

/// An `ADT^A01` admit of patient `p` (`\r`-separated segments).
fn adt_a01(g: &Generator, p: u64) -> Vec<u8> {
    let id = g.identity(p);
    let at = hl7_time(reading(g, p, 0).at);
    let sex = if id.gender == "male" { "M" } else { "F" };
    let dob = id.birth_date.format("%Y%m%d");
    let ward = ["ICU", "HDU", "WARD-A", "WARD-B"][usize::try_from(p % 4).unwrap()];
    format!(
        "MSH|^~\\&|ADT|HOSP|VF|HUB|{at}||ADT^A01^ADT_A01|ADT{p:08}|P|2.5.1\r\
         EVN|A01|{at}\r\
         PID|1||{pid}^^^HOSP^PI~{mrn}^^^HOSP^MR~{ssn}^^^SSA^SS||{last}^{first}||{dob}|{sex}|||\
         {street}^^{city}^{state}^{zip}^USA^H||{phone}^PRN^PH~^NET^Internet^{email}\r\
         NK1|1|{last}^Alex|SPO|{street}^^{city}^{state}^{zip}|{phone}\r\
         PV1|1|I|{ward}^{bed}^A^HOSP||||||||||||||||V{p:07}|||||||||||||||||||||||||{at}\r",
        pid = id.patient_id,
        mrn = id.mrn,
        ssn = id.ssn,
        last = id.last,
        first = id.first,
        street = id.street,
        city = id.city,
        state = id.state,
        zip = id.postal_code,
        phone = id.phone,
        email = id.email,
        bed = 100 + p % 40,
    )
    .into_bytes()
}

/// An `ORU^R01` of patient `p` with six vital-sign OBX (`\r`-separated segments).
fn oru_r01(g: &Generator, p: u64) -> Vec<u8> {
    let id = g.identity(p);
    let r = reading(g, p, 1);
    let at = hl7_time(r.at);
    let sex = if id.gender == "male" { "M" } else { "F" };
    let dob = id.birth_date.format("%Y%m%d");
    let dev = format!("MON-{:03}", p % 40);
    format!(
        "MSH|^~\\&|MON|ICU|VF|HUB|{at}||ORU^R01^ORU_R01|ORU{p:08}|P|2.5.1\r\
         PID|1||{pid}^^^HOSP^PI||{last}^{first}||{dob}|{sex}\r\
         OBR|1|||85353-1^Vital signs panel^LN|||{at}\r\
         OBX|1|NM|8867-4^Heart rate^LN||{hr}|/min^^UCUM|||||F|||{at}||||{dev}\r\
         OBX|2|NM|9279-1^Respiratory rate^LN||{rr}|/min^^UCUM|||||F|||{at}||||{dev}\r\
         OBX|3|NM|59408-5^SpO2^LN||{spo2}|%^^UCUM|||||F|||{at}||||{dev}\r\
         OBX|4|NM|8310-5^Body temperature^LN||{temp:.1}|Cel^^UCUM|||||F|||{at}||||{dev}\r\
         OBX|5|NM|8480-6^Systolic blood pressure^LN|1|{sbp}|mm[Hg]^^UCUM|||||F|||{at}||||{dev}\r\
         OBX|6|NM|8462-4^Diastolic blood pressure^LN|1|{dbp}|mm[Hg]^^UCUM|||||F|||{at}||||{dev}\r",
        pid = id.patient_id,
        last = id.last,
        first = id.first,
        hr = r.hr,
        rr = r.rr,
        spo2 = r.spo2,
        temp = r.temp,
        sbp = r.sbp,
        dbp = r.dbp,
    )
    .into_bytes()
}

const CSV_HEADER: [&str; 8] = [
    "time", "HR", "PULSE", "RESP", "SpO2", "TEMP", "NBPSys", "NBPDias",
];

/// A bedside monitor's CSV row of patient `p` at tick `tick` (its file's header: `CSV_HEADER`).
fn vitals_csv(g: &Generator, i: u64) -> RawRecord {
    let (p, tick) = (i % MESSAGES, i / MESSAGES);
    let r = reading(g, p, tick);
    let line = format!(
        "{},{},{},{},{},{:.1},{},{}",
        r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.hr,
        r.hr,
        r.rr,
        r.spo2,
        r.temp,
        r.sbp,
        r.dbp
    );
    RawRecord {
        header: Some(CSV_HEADER.iter().map(|s| (*s).to_owned()).collect()),
        context: Some(g.patient_id(p)),
        ..raw(RawFormat::VitalsCsv, i, line.into_bytes())
    }
}

/// Ingests every record; returns (records, dead letters).
fn ingest_all(raws: &[RawRecord], opts: &IngestOptions) -> (usize, usize) {
    let (mut ok, mut dead) = (Vec::new(), Vec::new());
    for r in raws {
        ingest_with(black_box(r), STAGE, opts, &mut ok, &mut dead);
    }
    (ok.len(), dead.len())
}

/// The nine fields of the generator's flat readings, as a decoder.
fn flat_decoder() -> Decoder {
    decoder_of(&FLAT_FIELDS)
}

/// A flat JSON line as a CSV row (same field order), nulls as empty cells.
fn json_to_csv(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let cells: Vec<String> = [
        "patient_id",
        "ts",
        "ward",
        "hr",
        "spo2",
        "rr",
        "temp",
        "sbp",
        "dbp",
    ]
    .iter()
    .map(|f| match &v[*f] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
    .collect();
    cells.join(",")
}

fn bytes_of(raws: &[RawRecord]) -> u64 {
    raws.iter().map(|r| r.bytes.len() as u64).sum()
}

fn bench(c: &mut Criterion) {
    let opts = IngestOptions::default();
    let g = generator(EVENTS);
    let envelopes: Vec<RawRecord> = (0..EVENTS).map(|i| g.raw("bench", i)).collect();
    let bundles: Vec<RawRecord> = (0..MESSAGES)
        .map(|p| raw(RawFormat::Fhir, p, fhir_bundle(&g, p)))
        .collect();
    let adts: Vec<RawRecord> = (0..MESSAGES)
        .map(|p| raw(RawFormat::Hl7v2, p, adt_a01(&g, p)))
        .collect();
    let orus: Vec<RawRecord> = (0..MESSAGES)
        .map(|p| raw(RawFormat::Hl7v2, p, oru_r01(&g, p)))
        .collect();
    let csv_rows: Vec<RawRecord> = (0..EVENTS).map(|i| vitals_csv(&g, i)).collect();

    // Every input parses cleanly: the happy path is what is timed.
    let n = MESSAGES as usize;
    for (name, raws, records) in [
        ("envelope", &envelopes, EVENTS as usize),
        ("fhir", &bundles, 6 * n),
        ("adt", &adts, 2 * n),
        ("oru", &orus, 5 * n),
        ("vitals-csv", &csv_rows, 5 * EVENTS as usize),
    ] {
        assert_eq!(ingest_all(raws, &opts), (records, 0), "{name}");
    }

    let mut g_ingest = c.benchmark_group("parse");
    for (id, raws) in [
        ("envelope/generator", &envelopes),
        ("fhir/bundle", &bundles),
        ("hl7v2/adt-a01", &adts),
        ("hl7v2/oru-r01", &orus),
        ("vitals-csv/row", &csv_rows),
    ] {
        g_ingest.throughput(Throughput::Bytes(bytes_of(raws)));
        g_ingest.bench_function(id, |b| b.iter(|| ingest_all(raws, &opts)));
    }

    let decoder = flat_decoder();
    let lines: Vec<String> = (0..EVENTS).map(|i| g.flat_line(i)).collect();
    let csv: Vec<String> = lines.iter().map(|l| json_to_csv(l)).collect();
    let header: Vec<String> = decoder.fields().iter().map(|f| f.name.clone()).collect();
    for (i, (json_line, csv_line)) in lines.iter().zip(&csv).enumerate() {
        let j = decoder.decode_json(json_line.as_bytes(), i as u64).unwrap();
        let k = decoder
            .decode_csv(Some(&header), csv_line.as_bytes(), i as u64)
            .unwrap();
        assert_eq!(j.values, k.values);
    }
    g_ingest.throughput(Throughput::Bytes(
        lines.iter().map(|l| l.len() as u64).sum(),
    ));
    g_ingest.bench_function("decode/flat-json", |b| {
        b.iter(|| {
            lines
                .iter()
                .enumerate()
                .filter(|(i, l)| {
                    decoder
                        .decode_json(black_box(l.as_bytes()), *i as u64)
                        .is_ok()
                })
                .count()
        });
    });
    g_ingest.throughput(Throughput::Bytes(csv.iter().map(|l| l.len() as u64).sum()));
    g_ingest.bench_function("decode/csv", |b| {
        b.iter(|| {
            csv.iter()
                .enumerate()
                .filter(|(i, l)| {
                    decoder
                        .decode_csv(Some(&header), black_box(l.as_bytes()), *i as u64)
                        .is_ok()
                })
                .count()
        });
    });
    g_ingest.finish();
}

criterion_group! {
    name = benches;
    config = vitalflow_benches::criterion();
    targets = bench
}
criterion_main!(benches);
