//! Crafted streams through the monitor: NEWS2 raise → escalate → resolve, suppression of
//! repeats, a sustained critical value and a falling trend.

use super::*;
use crate::alert::lifecycle::Transition::{self, *};
use crate::expression::compile;
use vitalflow_model::row::{Field, Schema, Type};

const MIN: i64 = 60_000;

fn schema(extra: &[(&str, Type)]) -> Schema {
    let mut fields: Vec<Field> = ["spo2", "hr", "sbp"]
        .iter()
        .map(|n| Field {
            name: (*n).to_owned(),
            ty: Type::Int,
            nullable: true,
            phi: None,
        })
        .collect();
    for (n, ty) in extra {
        fields.push(Field {
            name: (*n).to_owned(),
            ty: *ty,
            nullable: true,
            phi: None,
        });
    }
    Schema {
        fields,
        time: None,
        key: None,
    }
}

fn rule(name: &str, when: &str, level: Level, sustain: i64) -> RuleSpec {
    RuleSpec {
        name: name.to_owned(),
        condition: when.to_owned(),
        when: Arc::new(compile(when, &schema(&[])).unwrap()),
        level,
        sustain,
        window: 0,
        aggregates: Vec::new(),
    }
}

fn spec(news2: bool, rules: Vec<RuleSpec>) -> Arc<MonitorSpec> {
    Arc::new(MonitorSpec {
        news2,
        freshness: 10 * MIN,
        raise_at: Level::LowMedium,
        lifecycle: LifecycleConfig {
            resolve_after: 5 * MIN,
            suppress_for: 15 * MIN,
        },
        rules,
    })
}

/// A reading of P1 at minute `m` with respiration rate, SpO2, pulse and systolic BP.
fn reading(m: i64, rr: f64, spo2: Option<i64>, hr: i64, sbp: i64) -> (Observed, Vec<Value>) {
    let mut readings = vec![
        (Parameter::RespirationRate, Reading::Number(rr)),
        (Parameter::Pulse, Reading::Number(hr as f64)),
        (Parameter::SystolicBp, Reading::Number(sbp as f64)),
        (Parameter::AirOrOxygen, Reading::Oxygen(false)),
        (
            Parameter::Consciousness,
            Reading::Consciousness(super::super::news2::Acvpu::Alert),
        ),
        (Parameter::Temperature, Reading::Number(37.0)),
    ];
    if let Some(s) = spo2 {
        readings.push((Parameter::Spo2, Reading::Number(s as f64)));
    }
    (
        Observed {
            patient: "P1".to_owned(),
            time: m * MIN,
            id: ObservationRef::Text(Arc::from(format!("obs-{m}"))),
            ward: None,
            scale: Spo2Scale::One,
            readings,
        },
        vec![
            spo2.map_or(Value::Null, Value::Int),
            Value::Int(hr),
            Value::Int(sbp),
        ],
    )
}

type Step = (Option<usize>, Transition, u8, u8, i64);

fn run(m: &mut Monitor, steps: &[(Observed, Vec<Value>)]) -> Vec<Step> {
    let mut out = Vec::new();
    for (o, row) in steps {
        for f in m.observe(o, row).unwrap() {
            out.push((
                f.rule,
                f.change.transition,
                f.change.from,
                f.change.to,
                f.change.at / MIN,
            ));
        }
    }
    out
}

#[test]
fn news2_raises_escalates_and_resolves() {
    let mut m = Monitor::new(spec(true, Vec::new()));
    let steps = [
        reading(0, 16.0, Some(97), 80, 120),  // 0: normal
        reading(1, 22.0, Some(97), 80, 120),  // rr 2: total 2, low: under raise-at
        reading(2, 26.0, Some(97), 80, 120),  // rr 3: low-medium (single 3): raised
        reading(3, 26.0, Some(93), 112, 120), // rr 3 + spo2 2 + pulse 2 = 7: high
        reading(4, 26.0, Some(93), 112, 120), // high again within 15 min: suppressed
        reading(5, 16.0, Some(97), 80, 120),  // normal from minute 5
        reading(9, 16.0, Some(97), 80, 120),  // 4 min normal
        reading(10, 16.0, Some(97), 80, 120), // 5 min normal: resolved
    ];
    assert_eq!(
        run(&mut m, &steps),
        vec![
            (None, Raised, 0, 2, 2),
            (None, Escalated, 2, 4, 3),
            (None, Resolved, 4, 0, 10),
        ]
    );
    assert_eq!(m.active(), 0);
}

#[test]
fn news2_names_the_triggering_observations_and_what_is_missing() {
    let mut m = Monitor::new(spec(true, Vec::new()));
    let (mut o, row) = reading(0, 26.0, Some(97), 80, 120);
    o.readings
        .retain(|(p, _)| !matches!(p, Parameter::Temperature | Parameter::Consciousness));
    let fired = m.observe(&o, &row).unwrap();
    assert_eq!(fired.len(), 1);
    let (news2, absent) = fired[0].news2.clone().unwrap();
    assert_eq!((news2.total, news2.level), (3, Level::LowMedium));
    assert_eq!(
        absent,
        vec![
            (Parameter::Consciousness, Absence::Missing),
            (Parameter::Temperature, Absence::Missing)
        ]
    );
    assert_eq!(
        fired[0].observations,
        vec![ObservationRef::Text(Arc::from("obs-0"))]
    );
}

#[test]
fn repeats_at_the_same_level_are_suppressed_within_the_interval() {
    let mut m = Monitor::new(spec(
        false,
        vec![rule("tachy", "hr > 130", Level::Medium, 0)],
    ));
    let steps: Vec<_> = (0..=31)
        .map(|i| reading(i, 16.0, Some(97), 135, 120))
        .collect();
    assert_eq!(
        run(&mut m, &steps),
        vec![
            (Some(0), Raised, 0, 3, 0),
            (Some(0), Repeated, 3, 3, 15),
            (Some(0), Repeated, 3, 3, 30),
        ]
    );
}

#[test]
fn a_sustained_condition_fires_only_after_holding_for_its_time() {
    let mut m = Monitor::new(spec(
        false,
        vec![rule("desaturation", "spo2 < 90", Level::High, 2 * MIN)],
    ));
    let steps = [
        reading(0, 16.0, Some(88), 80, 120), // holds from 0
        reading(1, 16.0, Some(91), 80, 120), // broken
        reading(2, 16.0, Some(89), 80, 120), // holds from 2
        reading(3, 16.0, None, 80, 120),     // SpO2 not read: the run goes on
        reading(4, 16.0, Some(87), 80, 120), // 2 min: raised
        reading(5, 16.0, Some(96), 80, 120), // normal from 5
        reading(10, 16.0, Some(96), 80, 120),
    ];
    assert_eq!(
        run(&mut m, &steps),
        vec![(Some(0), Raised, 0, 4, 4), (Some(0), Resolved, 4, 0, 10)]
    );
    // The raise names the readings of the run.
    let mut m = Monitor::new(spec(
        false,
        vec![rule("desaturation", "spo2 < 90", Level::High, 2 * MIN)],
    ));
    let mut last = Vec::new();
    for (o, row) in &steps[2..5] {
        last = m.observe(o, row).unwrap();
    }
    let ids: Vec<&str> = last[0]
        .observations
        .iter()
        .map(|o| match o {
            ObservationRef::Text(s) => &**s,
            ObservationRef::Position(_) => "?",
        })
        .collect();
    assert_eq!(ids, ["obs-2", "obs-4"]);
}

#[test]
fn a_trend_rule_compares_with_the_window_aggregate() {
    let s = schema(&[("sbp_peak", Type::Int)]);
    let falling = RuleSpec {
        name: "falling-sbp".to_owned(),
        condition: "sbp_peak - sbp > 30".to_owned(),
        when: Arc::new(compile("sbp_peak - sbp > 30", &s).unwrap()),
        level: Level::Medium,
        sustain: 0,
        window: 15 * MIN,
        aggregates: vec![RuleAggregate {
            func: AggFn::Max,
            arg: Some(Arc::new(compile("sbp", &schema(&[])).unwrap())),
        }],
    };
    let mut m = Monitor::new(spec(false, vec![falling]));
    let steps = [
        reading(0, 16.0, Some(97), 80, 140),
        reading(10, 16.0, Some(97), 80, 125),
        reading(14, 16.0, Some(97), 80, 112), // 140 → 112: 28, not yet
        reading(15, 16.0, Some(97), 80, 109), // 140 → 109 within 15 min: 31
        reading(31, 16.0, Some(97), 80, 100), // peak now 109 (16): 9
        reading(36, 16.0, Some(97), 80, 100),
    ];
    assert_eq!(
        run(&mut m, &steps),
        vec![(Some(0), Raised, 0, 3, 15), (Some(0), Resolved, 3, 0, 36)]
    );
}

#[test]
fn a_failing_condition_changes_nothing_and_names_the_rule() {
    let mut m = Monitor::new(spec(
        true,
        vec![rule("bad", "hr / (sbp - sbp) > 1", Level::High, 0)],
    ));
    let (o, row) = reading(0, 26.0, Some(97), 80, 120);
    match m.observe(&o, &row) {
        Err(e) => assert!(e.to_string().starts_with("rule `bad`"), "{e}"),
        Ok(f) => {
            // Integer division by zero may be null rather than an error: then no alert fires.
            assert!(f.iter().all(|f| f.rule.is_none()));
        }
    }
}
