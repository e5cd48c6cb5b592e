//! Canonization throughput, in records: `vitalflow_operators::canonize::canonize` of
//! de-identified records to FHIR R4 resources (compact JSON plus typed columns).
//!
//! The records are the generator's envelopes, ingested and de-identified with the Safe Harbor
//! defaults and a random key, before timing:
//!
//! * `patient`: 1,000 de-identified patients → `Patient` resources;
//! * `observation`: 9,000 de-identified vital-sign readings (heart rate, respiratory rate,
//!   SpO2, temperature, blood-pressure panels) → vital-signs `Observation` resources.
//!
//! `cargo bench -p vitalflow-benches --bench canonize`
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_model::deid::DeidRecord;
use vitalflow_operators::anonymize::{
    AnonymizeConfig, Anonymizer, DatePolicy, DeidReport, Policy, PseudonymKey,
};
use vitalflow_operators::canonize::canonize;
use vitalflow_operators::ingest::ingest;

const PATIENTS: u64 = 1_000;
const EVENTS: u64 = 10_000;

/// The generator's events, ingested and de-identified.
fn deid_records() -> Vec<DeidRecord> {
    let g = Generator::new(GeneratorConfig {
        seed: 42,
        patients: PATIENTS,
        count: EVENTS,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    });
    let (mut ok, mut dead) = (Vec::new(), Vec::new());
    for i in 0..EVENTS {
        ingest(&g.raw("bench", i), "ingest", &mut ok, &mut dead);
    }
    assert!(dead.is_empty());
    let a = Anonymizer::new(AnonymizeConfig {
        key: PseudonymKey::ephemeral(),
        dates: DatePolicy::Shift { max_days: 365 },
        restricted_zip3: AnonymizeConfig::default_restricted_zip3(),
        policy: Policy::default(),
    });
    let mut report = DeidReport::default();
    ok.iter()
        .map(|r| a.apply(r, &mut report).unwrap())
        .collect()
}

/// Canonizes every record; returns the total JSON length (so nothing is optimized away).
fn canonize_all(records: &[DeidRecord]) -> usize {
    records
        .iter()
        .map(|r| canonize(black_box(r)).map_or(0, |c| c.resource.len()))
        .sum()
}

fn bench(c: &mut Criterion) {
    let (patients, vitals): (Vec<DeidRecord>, Vec<DeidRecord>) = deid_records()
        .into_iter()
        .partition(|r| matches!(r, DeidRecord::Patient(_)));
    assert_eq!(
        (patients.len(), vitals.len()),
        (PATIENTS as usize, (EVENTS - PATIENTS) as usize)
    );
    for r in patients.iter().chain(&vitals) {
        canonize(r).unwrap();
    }

    let mut group = c.benchmark_group("canonize");
    for (id, records) in [("patient", &patients), ("observation", &vitals)] {
        group.throughput(Throughput::Elements(records.len() as u64));
        group.bench_function(id, |b| b.iter(|| canonize_all(records)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = vitalflow_benches::criterion();
    targets = bench
}
criterion_main!(benches);
