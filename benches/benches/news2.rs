//! NEWS2 and the alert monitor, per reading (`Throughput::Elements`).
//!
//! The readings are 10,000 of the generator's flat readings (1,000 patients, one reading a
//! minute each, 30 % deteriorating towards sepsis), decoded; each carries respiration rate,
//! SpO2, air (no oxygen), systolic pressure, pulse and (but for about 5 %) temperature; 10 % of
//! patients are on SpO2 scale 2.
//!
//! * `score`: `vitalflow_operators::alert::news2::score` of each reading's observations;
//! * `monitor/news2`: `vitalflow_operators::alert::monitor::Monitor::observe` with NEWS2 only
//!   (15-minute freshness, raised at `medium`, resolved after 10 minutes, repeats suppressed for
//!   30): per-patient latest values, the score and the alert lifecycle;
//! * `monitor/icu-alerting`: the same with the rules of `dataflows/icu-alerting.toml` as well:
//!   `spo2 < 90` sustained for 2 minutes, `hr > 130`, and `max(sbp) - sbp > 30` over a
//!   15-minute window.
//!
//! The monitors keep their state across iterations; each iteration's readings come 10 minutes
//! of event time after the previous ones (shifted copies, made outside the timing), so the
//! state is the steady state of a live feed.
//!
//! `cargo bench -p vitalflow-benches --bench news2`
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vitalflow_benches::{FLAT_FIELDS, decoder_of, schema_of};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_model::row::{Field, Row, Schema, Type, Value};
use vitalflow_operators::alert::latest::Reading;
use vitalflow_operators::alert::lifecycle::LifecycleConfig;
use vitalflow_operators::alert::monitor::{
    Monitor, MonitorSpec, ObservationRef, Observed, RuleAggregate, RuleSpec,
};
use vitalflow_operators::alert::news2::{Level, Observations, Parameter, Spo2Scale, score};
use vitalflow_operators::expression::compile;
use vitalflow_operators::window::AggFn;

const PATIENTS: u64 = 1_000;
const READINGS: u64 = 10_000;
const MIN: i64 = 60_000;

fn schema() -> Schema {
    schema_of(&FLAT_FIELDS, false)
}

/// The generator's flat readings, decoded.
fn rows() -> Vec<Row> {
    let g = Generator::new(GeneratorConfig {
        seed: 42,
        patients: PATIENTS,
        count: READINGS,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    });
    let decoder = decoder_of(&FLAT_FIELDS);
    (0..READINGS)
        .map(|i| decoder.decode_json(g.flat_line(i).as_bytes(), i).unwrap())
        .collect()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// A reading as the alert operator hands it to the monitor.
fn observed(row: &Row) -> Observed {
    let v = &row.values;
    let (Value::Str(patient), Value::Timestamp(time), Value::Str(ward)) = (&v[0], &v[1], &v[2])
    else {
        panic!("flat reading of an unexpected shape")
    };
    let mut readings = vec![(Parameter::AirOrOxygen, Reading::Oxygen(false))];
    for (param, i) in [
        (Parameter::Pulse, 3),
        (Parameter::Spo2, 4),
        (Parameter::RespirationRate, 5),
        (Parameter::Temperature, 6),
        (Parameter::SystolicBp, 7),
    ] {
        if let Some(x) = number(&v[i]) {
            readings.push((param, Reading::Number(x)));
        }
    }
    // One patient in ten has a prescribed 88–92 % target.
    let scale = if (row.sequence % PATIENTS).is_multiple_of(10) {
        Spo2Scale::Two
    } else {
        Spo2Scale::One
    };
    Observed {
        patient: patient.to_string(),
        time: *time,
        id: ObservationRef::Position(row.sequence),
        ward: Some(ward.to_string()),
        scale,
        readings,
    }
}

/// The observations a reading gives NEWS2 on its own.
fn observations(o: &Observed) -> Observations {
    let mut obs = Observations::default();
    for (p, r) in &o.readings {
        match (p, r) {
            (Parameter::RespirationRate, Reading::Number(x)) => obs.respiration_rate = Some(*x),
            (Parameter::Spo2, Reading::Number(x)) => obs.spo2 = Some(*x),
            (Parameter::AirOrOxygen, Reading::Oxygen(b)) => obs.on_oxygen = Some(*b),
            (Parameter::SystolicBp, Reading::Number(x)) => obs.systolic_bp = Some(*x),
            (Parameter::Pulse, Reading::Number(x)) => obs.pulse = Some(*x),
            (Parameter::Temperature, Reading::Number(x)) => obs.temperature = Some(*x),
            _ => {}
        }
    }
    obs
}

/// The alert node of `dataflows/icu-alerting.toml` (rules optional).
fn spec(with_rules: bool) -> Arc<MonitorSpec> {
    let schema = schema();
    let rule = |name: &str, when: &str, level, sustain| RuleSpec {
        name: name.to_owned(),
        condition: when.to_owned(),
        when: Arc::new(compile(when, &schema).unwrap()),
        level,
        sustain,
        window: 0,
        aggregates: Vec::new(),
    };
    let mut extended = schema.clone();
    extended.fields.push(Field {
        name: "sbp_peak".into(),
        ty: Type::Int,
        nullable: true,
        phi: None,
    });
    let falling = "sbp_peak - sbp > 30";
    let rules = if with_rules {
        vec![
            rule("desaturation", "spo2 < 90", Level::High, 2 * MIN),
            rule("tachycardia", "hr > 130", Level::Medium, 0),
            RuleSpec {
                name: "falling-sbp".into(),
                condition: falling.into(),
                when: Arc::new(compile(falling, &extended).unwrap()),
                level: Level::Medium,
                sustain: 0,
                window: 15 * MIN,
                aggregates: vec![RuleAggregate {
                    func: AggFn::Max,
                    arg: Some(Arc::new(compile("sbp", &schema).unwrap())),
                }],
            },
        ]
    } else {
        Vec::new()
    };
    Arc::new(MonitorSpec {
        news2: true,
        freshness: 15 * MIN,
        raise_at: Level::Medium,
        lifecycle: LifecycleConfig {
            resolve_after: 10 * MIN,
            suppress_for: 30 * MIN,
        },
        rules,
    })
}

/// Each call: the readings, shifted one batch span (10 minutes) later than the previous call's.
fn shifted(base: &[(Observed, Row)]) -> impl FnMut() -> Vec<(Observed, Row)> + '_ {
    let span = i64::try_from(READINGS / PATIENTS).unwrap() * MIN;
    let mut round = 0i64;
    move || {
        let shift = round * span;
        round += 1;
        base.iter()
            .map(|(o, r)| {
                let mut o = o.clone();
                o.time += shift;
                let mut r = r.clone();
                r.values[1] = Value::Timestamp(o.time);
                (o, r)
            })
            .collect()
    }
}

fn bench(c: &mut Criterion) {
    let base: Vec<(Observed, Row)> = rows().into_iter().map(|r| (observed(&r), r)).collect();
    let obs: Vec<(Observations, Spo2Scale)> = base
        .iter()
        .map(|(o, _)| (observations(o), o.scale))
        .collect();

    // A run through both monitors before timing: some readings alert.
    let mut alerts = [0usize; 2];
    for (k, with_rules) in [false, true].into_iter().enumerate() {
        let mut m = Monitor::new(spec(with_rules));
        for (o, r) in &base {
            alerts[k] += m.observe(o, &r.values).unwrap().len();
        }
    }
    assert!(alerts[0] > 0 && alerts[1] > alerts[0], "{alerts:?}");

    let mut group = c.benchmark_group("news2");
    group.throughput(Throughput::Elements(READINGS));
    group.bench_function("score", |b| {
        b.iter(|| {
            obs.iter()
                .map(|(o, scale)| u32::from(score(black_box(o), *scale).total))
                .sum::<u32>()
        });
    });
    for (id, with_rules) in [("monitor/news2", false), ("monitor/icu-alerting", true)] {
        let mut monitor = Monitor::new(spec(with_rules));
        let mut next = shifted(&base);
        group.bench_function(id, |b| {
            b.iter_batched(
                &mut next,
                |batch| {
                    let mut fired = 0usize;
                    for (o, r) in &batch {
                        fired += monitor.observe(o, &r.values).map_or(0, |f| f.len());
                    }
                    (fired, batch)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = vitalflow_benches::criterion();
    targets = bench
}
criterion_main!(benches);
