//! De-identification throughput, in records: `vitalflow_operators::anonymize::Anonymizer::apply`
//! on ingested clinical records and `Anonymizer::apply_row` on rows of a declared schema, with
//! the Safe Harbor defaults (every identifier removed, free text dropped, dates shifted by up to
//! 365 days, restricted ZIP3s) and a random key (`PseudonymKey::ephemeral`).
//!
//! * `patient/envelope`: 1,000 patients of the generator's `patient.record.created` envelopes
//!   (names, birth date, address, phone, email, SSN, MRN);
//! * `vital/envelope`: 9,000 of its vital-sign readings;
//! * `vital/scrub-notes`: 1,000 heart-rate readings from HL7 v2 `ORU^R01` messages, each with a
//!   nurse's note naming the patient, a phone number and a date, under `free-text = "scrub"`;
//! * `row/flat`: 10,000 of the generator's flat readings, decoded, with `patient_id` hashed and
//!   `ts` date-shifted (rows are cloned outside the timing: the row anonymizer works in place).
//!
//! `cargo bench -p vitalflow-benches --bench anonymize`
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vitalflow_benches::{FLAT_FIELDS, decoder_of, schema_of};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_model::clinical::{ClinicalRecord, Ingested};
use vitalflow_model::row::{Row, Schema};
use vitalflow_model::{RawFormat, RawRecord};
use vitalflow_operators::anonymize::{
    AnonymizeConfig, Anonymizer, DatePolicy, DeidReport, Policy, PseudonymKey, RowPlan,
};
use vitalflow_operators::ingest::ingest;

const PATIENTS: u64 = 1_000;
const EVENTS: u64 = 10_000;

fn generator() -> Generator {
    Generator::new(GeneratorConfig {
        seed: 42,
        patients: PATIENTS,
        count: EVENTS,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    })
}

fn anonymizer(policy: Policy) -> Anonymizer {
    Anonymizer::new(AnonymizeConfig {
        key: PseudonymKey::ephemeral(),
        dates: DatePolicy::Shift { max_days: 365 },
        restricted_zip3: AnonymizeConfig::default_restricted_zip3(),
        policy,
    })
}

/// Ingests every raw record, asserting that none is dead-lettered.
fn ingest_all(raws: impl IntoIterator<Item = RawRecord>) -> Vec<Ingested> {
    let (mut ok, mut dead) = (Vec::new(), Vec::new());
    for r in raws {
        ingest(&r, "ingest", &mut ok, &mut dead);
    }
    assert!(dead.is_empty(), "{:?}", dead.first().map(|d| &d.reason));
    ok
}

/// An `ORU^R01` heart rate of patient `p` with a note that repeats identifying values.
fn oru_with_note(g: &Generator, p: u64) -> RawRecord {
    let id = g.identity(p);
    let text = format!(
        "MSH|^~\\&|MON|ICU|VF|HUB|20260101080000+0000||ORU^R01^ORU_R01|ORU{p:08}|P|2.5.1\r\
         PID|1||{pid}^^^HOSP^PI||{last}^{first}||{dob}|U|||||{phone}\r\
         OBR|1|||85353-1^Vital signs panel^LN|||20260101075900+0000\r\
         OBX|1|NM|8867-4^Heart rate^LN||{hr}|/min^^UCUM|||||F|||20260101075900+0000\r\
         NTE|1||Mr. {last} reported palpitations; daughter called from {phone} on 2026-01-01, \
         asked to page Dr. Okafor. Bed 12, monitor SN 4471-22.\r",
        pid = id.patient_id,
        last = id.last,
        first = id.first,
        dob = id.birth_date.format("%Y%m%d"),
        phone = id.phone,
        hr = 80 + p % 40,
    );
    RawRecord {
        source: "bench".to_owned(),
        location: format!("bench#{p}"),
        sequence: p,
        format: RawFormat::Hl7v2,
        header: None,
        context: None,
        bytes: text.into_bytes(),
        arrival_us: 0,
    }
}

/// The generator's flat readings, decoded, with the schema marking the patient id and the time
/// as PHI.
fn flat_rows(g: &Generator) -> (Schema, Vec<Row>) {
    let schema = schema_of(&FLAT_FIELDS, true);
    let decoder = decoder_of(&FLAT_FIELDS);
    let rows = (0..EVENTS)
        .map(|i| decoder.decode_json(g.flat_line(i).as_bytes(), i).unwrap())
        .collect();
    (schema, rows)
}

/// Applies the anonymizer to every record; returns how many succeeded.
fn apply_all(a: &Anonymizer, records: &[Ingested]) -> usize {
    let mut report = DeidReport::default();
    records
        .iter()
        .filter(|r| a.apply(black_box(r), &mut report).is_ok())
        .count()
}

fn bench(c: &mut Criterion) {
    let g = generator();
    let ingested = ingest_all((0..EVENTS).map(|i| g.raw("bench", i)));
    let (patients, vitals): (Vec<Ingested>, Vec<Ingested>) = ingested
        .into_iter()
        .partition(|r| matches!(r.record, ClinicalRecord::Patient(_)));
    assert_eq!(
        (patients.len(), vitals.len()),
        (PATIENTS as usize, (EVENTS - PATIENTS) as usize)
    );
    let noted = ingest_all((0..PATIENTS).map(|p| oru_with_note(&g, p)));
    assert!(noted.iter().all(|r| matches!(&r.record,
        ClinicalRecord::Vital(v) if !v.notes.is_empty() && !v.mentioned.is_empty())));

    let safe_harbor = anonymizer(Policy::default());
    let scrubbing = anonymizer(Policy::with([("free-text", "scrub")]).unwrap());
    for (records, a) in [
        (&patients, &safe_harbor),
        (&vitals, &safe_harbor),
        (&noted, &scrubbing),
    ] {
        assert_eq!(apply_all(a, records), records.len());
    }

    let mut group = c.benchmark_group("anonymize");
    for (id, records, a) in [
        ("patient/envelope", &patients, &safe_harbor),
        ("vital/envelope", &vitals, &safe_harbor),
        ("vital/scrub-notes", &noted, &scrubbing),
    ] {
        group.throughput(Throughput::Elements(records.len() as u64));
        group.bench_function(id, |b| b.iter(|| apply_all(a, records)));
    }

    let (schema, rows) = flat_rows(&g);
    let plan = RowPlan::new(&schema, schema.key);
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("row/flat", |b| {
        b.iter_batched_ref(
            || rows.clone(),
            |rows| {
                let mut report = DeidReport::default();
                let mut done = 0usize;
                for r in rows.iter_mut() {
                    done += usize::from(safe_harbor.apply_row(&plan, r, &mut report).is_ok());
                }
                done
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = vitalflow_benches::criterion();
    targets = bench
}
criterion_main!(benches);
