//! Expression evaluation per record, against the same computation written as plain Rust over
//! the same rows (the ratio is the cost of the expression language).
//!
//! `cargo bench -p vitalflow-benches --bench expressions`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vitalflow_benches::{FLAT_FIELDS, decoder_of, schema_of};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_model::row::{Field, Row, Schema, Type, Value};
use vitalflow_operators::decode::Decoder;
use vitalflow_operators::expression::compile;

/// The score of `dataflows/vitals-flat.toml`'s issue example.
const SCORE: &str = "(if hr > 130 then 3 else 0) + (if spo2 <= 91 then 3 else 0) \
    + (if rr >= 25 then 3 else 0) + (if temp < 35.0 then 3 else 0) + (if sbp <= 90 then 3 else 0)";
/// A filter condition mixing strings and numbers.
const CONDITION: &str = "score >= 5 and patient_id != 'P000000001' and ward in ('ICU', 'HDU')";

const ROWS: u64 = 10_000;

fn schema() -> (Schema, Decoder) {
    (schema_of(&FLAT_FIELDS, false), decoder_of(&FLAT_FIELDS))
}

/// The generator's flat readings, decoded.
fn rows(decoder: &Decoder) -> Vec<Row> {
    let g = Generator::new(GeneratorConfig {
        seed: 42,
        patients: 500,
        count: ROWS,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    });
    (0..ROWS)
        .map(|i| decoder.decode_json(g.flat_line(i).as_bytes(), i).unwrap())
        .collect()
}

/// The score as plain Rust over the same values (null temperature scores 0, as in SQL).
fn plain_score(v: &[Value]) -> i64 {
    let int = |i: usize| match v[i] {
        Value::Int(x) => x,
        _ => 0,
    };
    let temp_low = matches!(v[6], Value::Float(t) if t < 35.0);
    i64::from(int(3) > 130) * 3
        + i64::from(int(4) <= 91) * 3
        + i64::from(int(5) >= 25) * 3
        + i64::from(temp_low) * 3
        + i64::from(int(7) <= 90) * 3
}

fn bench(c: &mut Criterion) {
    let (schema, decoder) = schema();
    let rows = rows(&decoder);
    let score = compile(SCORE, &schema).unwrap();
    // The condition reads the score as a field, as after a `map`.
    let mut with_score = schema.clone();
    with_score.fields.push(Field {
        name: "score".into(),
        ty: Type::Int,
        nullable: false,
        phi: None,
    });
    let condition = compile(CONDITION, &with_score).unwrap();
    let scored: Vec<Vec<Value>> = rows
        .iter()
        .map(|r| {
            let mut v = r.values.clone();
            v.push(score.eval(&r.values).unwrap());
            v
        })
        .collect();
    // Same answers before timing anything.
    for r in &rows {
        assert_eq!(
            score.eval(&r.values).unwrap(),
            Value::Int(plain_score(&r.values))
        );
    }

    let mut g = c.benchmark_group("expressions");
    g.throughput(Throughput::Elements(ROWS));
    g.bench_function("score/compiled", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for r in &rows {
                if let Ok(Value::Int(s)) = score.eval(black_box(&r.values)) {
                    sum += s;
                }
            }
            sum
        });
    });
    g.bench_function("score/plain-rust", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for r in &rows {
                sum += plain_score(black_box(&r.values));
            }
            sum
        });
    });
    g.bench_function("condition/compiled", |b| {
        b.iter(|| {
            scored
                .iter()
                .filter(|v| condition.eval_bool(black_box(v)).unwrap_or(false))
                .count()
        });
    });
    g.bench_function("decode/flat-json", |b| {
        let lines: Vec<String> = {
            let gen_ = Generator::new(GeneratorConfig {
                seed: 42,
                patients: 500,
                count: ROWS,
                ..GeneratorConfig::default()
            });
            (0..ROWS).map(|i| gen_.flat_line(i)).collect()
        };
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
