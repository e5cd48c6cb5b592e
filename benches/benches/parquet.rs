//! Parquet sink throughput, in records: a batch encoded (Arrow batch, Snappy), written to a
//! temporary directory and committed (renamed into place, made durable) as the sinks do on each
//! checkpoint.
//!
//! * `canonical/patient`, `canonical/observation`: 10,000 canonical `Patient` resources, and
//!   10,000 vital-sign `Observation` resources, through
//!   `vitalflow_connectors::parquet::ParquetWriter::write`. They are the generator's envelopes
//!   ingested, de-identified and canonized before timing, with dates generalized to their year
//!   so that each batch is one Hive partition, one file;
//! * `canonical/observation-month-shifted`: the same observations de-identified with the
//!   default date policy (each patient's dates shifted by up to 365 days), in the default
//!   monthly folders: one batch spreads over about 25 `month=` partitions, a file each;
//! * `canonical/observation-day-shifted`: the same in daily folders (`partition = "day"`):
//!   hundreds of `date=` partitions, a file each;
//! * `rows/flat`: 10,000 of the generator's flat readings (nine fields), decoded, through
//!   `vitalflow_connectors::parquet_rows::RowParquetWriter::write`.
//!
//! Every iteration writes the same tag, so each replaces the previous files. The timing includes
//! the file system: the canonical writer makes a write durable with two `syncfs` calls on Linux
//! (the whole file system of the temporary directory: other writers on it add to the time), the
//! row writer with an fsync of the file and of its folder. Run it on the disk the outputs use,
//! with nothing else writing.
//!
//! `cargo bench -p vitalflow-benches --bench parquet`
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use vitalflow_benches::{FLAT_FIELDS, decoder_of, schema_of};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_connectors::parquet::{ParquetWriter, Partitioning};
use vitalflow_connectors::parquet_rows::RowParquetWriter;
use vitalflow_model::canonical::CanonicalResource;
use vitalflow_model::deid::DeidRecord;
use vitalflow_model::row::{Row, Schema};
use vitalflow_operators::anonymize::{
    AnonymizeConfig, Anonymizer, DatePolicy, DeidReport, Policy, PseudonymKey,
};
use vitalflow_operators::canonize::canonize;
use vitalflow_operators::ingest::ingest;

/// Records per batch, of each kind.
const BATCH: u64 = 10_000;

fn generator() -> Generator {
    // BATCH patient-created events, then BATCH readings.
    Generator::new(GeneratorConfig {
        seed: 42,
        patients: BATCH,
        count: 2 * BATCH,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    })
}

/// The generator's events as canonical resources under `dates`: (patients, observations).
fn canonical(g: &Generator, dates: DatePolicy) -> (Vec<CanonicalResource>, Vec<CanonicalResource>) {
    let (mut ok, mut dead) = (Vec::new(), Vec::new());
    for i in 0..g.count() {
        ingest(&g.raw("bench", i), "ingest", &mut ok, &mut dead);
    }
    assert!(dead.is_empty());
    let a = Anonymizer::new(AnonymizeConfig {
        key: PseudonymKey::ephemeral(),
        dates,
        restricted_zip3: AnonymizeConfig::default_restricted_zip3(),
        policy: Policy::default(),
    });
    let mut report = DeidReport::default();
    let (patients, observations): (Vec<_>, Vec<_>) = ok
        .iter()
        .map(|r| {
            let d = a.apply(r, &mut report).unwrap();
            (matches!(d, DeidRecord::Patient(_)), canonize(&d).unwrap())
        })
        .partition(|(patient, _)| *patient);
    let strip = |v: Vec<(bool, CanonicalResource)>| v.into_iter().map(|(_, c)| c).collect();
    (strip(patients), strip(observations))
}

/// The generator's flat readings, decoded, and their schema.
fn flat(g: &Generator) -> (Schema, Vec<Row>) {
    let schema = schema_of(&FLAT_FIELDS, false);
    let decoder = decoder_of(&FLAT_FIELDS);
    let rows = (0..BATCH)
        .map(|i| decoder.decode_json(g.flat_line(i).as_bytes(), i).unwrap())
        .collect();
    (schema, rows)
}

fn bench(c: &mut Criterion) {
    let g = generator();
    let (patients, observations) = canonical(&g, DatePolicy::Year);
    assert_eq!(
        (patients.len(), observations.len()),
        (BATCH as usize, BATCH as usize)
    );
    let (_, shifted) = canonical(&g, DatePolicy::Shift { max_days: 365 });
    let (schema, rows) = flat(&g);
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ParquetWriter::new(dir.path().join("canonical"), Partitioning::Month);
    let mut daily = ParquetWriter::new(dir.path().join("daily"), Partitioning::Day);
    let row_writer = RowParquetWriter::new(dir.path().join("rows"), &schema);
    // One file per batch.
    for batch in [&patients, &observations] {
        assert_eq!(writer.write("bench", batch).unwrap().len(), 1);
    }
    let months = writer.write("bench-shifted", &shifted).unwrap().len();
    assert!((12..=30).contains(&months), "{months} partitions");
    let partitions = daily.write("bench-shifted", &shifted).unwrap().len();
    assert!(partitions > 100, "{partitions} partitions");
    assert_eq!(row_writer.write("bench", &rows).unwrap()[0].rows, BATCH);

    let mut group = c.benchmark_group("parquet");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(BATCH));
    for (id, batch) in [
        ("canonical/patient", &patients),
        ("canonical/observation", &observations),
    ] {
        group.bench_function(id, |b| {
            b.iter(|| writer.write("bench", black_box(batch)).unwrap()[0].bytes);
        });
    }
    println!(
        "shifted observations: {months} month partitions, or {partitions} date partitions, a file each"
    );
    group.bench_function("canonical/observation-month-shifted", |b| {
        b.iter(|| {
            writer
                .write("bench-shifted", black_box(&shifted))
                .unwrap()
                .len()
        });
    });
    // Seconds an iteration: the fewest samples criterion takes.
    group.sample_size(10);
    group.bench_function("canonical/observation-day-shifted", |b| {
        b.iter(|| {
            daily
                .write("bench-shifted", black_box(&shifted))
                .unwrap()
                .len()
        });
    });
    group.sample_size(20);
    group.bench_function("rows/flat", |b| {
        b.iter(|| row_writer.write("bench", black_box(&rows)).unwrap()[0].bytes);
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = vitalflow_benches::criterion();
    targets = bench
}
criterion_main!(benches);
