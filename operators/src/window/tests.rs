#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use vitalflow_model::row::{KeyValue, Type, Value};

use super::*;

const MIN: i64 = 60_000;

fn spec(kind: WindowKind, lateness: i64) -> Arc<WindowSpec> {
    Arc::new(WindowSpec {
        kind,
        lateness,
        aggs: vec![
            AggSpec {
                func: AggFn::Count,
                arg: None,
            },
            AggSpec {
                func: AggFn::Sum,
                arg: Some(Type::Int),
            },
        ],
    })
}

fn rec(key: &str, time: i64, v: i64, seq: u64) -> WindowRecord {
    WindowRecord {
        key: KeyValue(Value::str(key)),
        time,
        seq,
        args: vec![Value::Null, Value::Int(v)],
    }
}

/// (start, count, sum, revision, diff) of each change.
fn summary(changes: &[Change]) -> Vec<(i64, i64, i64, i64, i64)> {
    changes
        .iter()
        .map(|c| {
            let int = |v: &Value| match v {
                Value::Int(i) | Value::Timestamp(i) => *i,
                _ => i64::MIN,
            };
            (int(&c[1]), int(&c[3]), int(&c[4]), int(&c[5]), int(&c[6]))
        })
        .collect()
}

#[test]
fn tumbling_windows_emit_when_the_watermark_passes_their_end() {
    let mut w = Windows::new(spec(WindowKind::Tumbling { size: 5 * MIN }, 0));
    assert!(w.add(&rec("a", MIN, 10, 0)));
    assert!(w.add(&rec("a", 4 * MIN, 5, 1)));
    assert!(w.add(&rec("a", 6 * MIN, 7, 2)));
    assert!(
        w.advance(5 * MIN - 1).is_empty(),
        "the first window is still open"
    );
    assert_eq!(summary(&w.advance(5 * MIN)), vec![(0, 2, 15, 0, 1)]);
    assert_eq!(w.len(), 1, "the closed window is released (no lateness)");
    // Behind the watermark, with no lateness: late.
    assert!(!w.add(&rec("a", 2 * MIN, 1, 3)));
    assert_eq!(summary(&w.advance(i64::MAX)), vec![(5 * MIN, 1, 7, 0, 1)]);
    assert!(w.is_empty());
}

#[test]
fn late_records_within_lateness_retract_and_correct_the_window() {
    let mut w = Windows::new(spec(WindowKind::Tumbling { size: 5 * MIN }, 2 * MIN));
    w.add(&rec("a", MIN, 10, 0));
    assert_eq!(summary(&w.advance(5 * MIN)), vec![(0, 1, 10, 0, 1)]);
    assert!(w.add(&rec("a", 2 * MIN, 3, 1)), "within lateness");
    assert_eq!(
        summary(&w.advance(6 * MIN)),
        vec![(0, 1, 10, 0, -1), (0, 2, 13, 1, 1)]
    );
    // The watermark passes end + lateness: the window is released, the next record is late.
    w.advance(7 * MIN);
    assert!(w.is_empty());
    assert!(!w.add(&rec("a", 3 * MIN, 1, 2)));
}

#[test]
fn sliding_windows_hold_a_record_in_size_over_slide_windows() {
    let mut w = Windows::new(spec(
        WindowKind::Sliding {
            size: 3 * MIN,
            slide: MIN,
        },
        0,
    ));
    w.add(&rec("a", 2 * MIN + 30_000, 1, 0));
    let starts: Vec<i64> = summary(&w.advance(i64::MAX)).iter().map(|c| c.0).collect();
    assert_eq!(starts, vec![0, MIN, 2 * MIN]);
}

#[test]
fn sessions_merge_and_retract_the_rows_they_replace() {
    let mut w = Windows::new(spec(WindowKind::Session { gap: MIN }, 10 * MIN));
    w.add(&rec("a", 0, 1, 0));
    w.add(&rec("a", 3 * MIN, 2, 1));
    // Two sessions: [0, 1m) and [3m, 4m).
    assert_eq!(
        summary(&w.advance(5 * MIN)),
        vec![(0, 1, 1, 0, 1), (3 * MIN, 1, 2, 0, 1)]
    );
    // 1.5m opens [1.5m, 2.5m), which touches neither (sessions merge on overlap, not contact).
    w.add(&rec("a", 90_000, 4, 2));
    // 2.5m overlaps [1.5m, 2.5m)? No: it starts where that one ends. It overlaps [3m, 4m).
    w.add(&rec("a", 150_000, 8, 3));
    let mut changes = summary(&w.advance(5 * MIN));
    changes.sort_unstable();
    assert_eq!(
        changes,
        vec![
            (90_000, 1, 4, 0, 1),
            (150_000, 2, 10, 1, 1),
            (3 * MIN, 1, 2, 0, -1)
        ],
        "{changes:?}"
    );
    // 55s opens [55s, 115s), overlapping [0, 1m) and [1.5m, 2.5m): they merge into [0, 2.5m),
    // which touches [2.5m, 4m) without overlapping it.
    w.add(&rec("a", 55_000, 16, 4));
    let mut changes = summary(&w.advance(5 * MIN));
    changes.sort_unstable();
    assert_eq!(
        changes,
        vec![(0, 1, 1, 0, -1), (0, 3, 21, 1, 1), (90_000, 1, 4, 0, -1)],
        "{changes:?}"
    );
}

#[test]
fn aggregates_match_their_definitions() {
    let aggs = [
        (AggFn::Mean, Type::Float),
        (AggFn::Stddev, Type::Float),
        (AggFn::Min, Type::Float),
        (AggFn::Max, Type::Float),
        (AggFn::First, Type::Float),
        (AggFn::Last, Type::Float),
        (AggFn::CountDistinct, Type::Float),
        (AggFn::Sum, Type::Float),
    ];
    let values = [(3, 2.0), (1, 4.0), (2, 4.0), (5, 5.0), (4, 7.0), (6, 9.0)];
    for (func, ty) in aggs {
        let mut a = Acc::new(func, Some(ty));
        let mut b = Acc::new(func, Some(ty));
        for (i, (t, v)) in values.iter().enumerate() {
            let target = if i % 2 == 0 { &mut a } else { &mut b };
            target.add(Some(&Value::Float(*v)), *t, i as u64);
        }
        a.add(Some(&Value::Null), 0, 99);
        a.merge(b);
        let got = a.value();
        let expected = match func {
            AggFn::Mean => Value::Float(31.0 / 6.0),
            AggFn::Stddev => {
                let mean = 31.0 / 6.0;
                let ss: f64 = values.iter().map(|(_, v)| (v - mean) * (v - mean)).sum();
                Value::Float((ss / 5.0).sqrt())
            }
            AggFn::Min => Value::Float(2.0),
            AggFn::Max | AggFn::Last => Value::Float(9.0),
            AggFn::First => Value::Float(4.0),
            AggFn::CountDistinct => Value::Int(5),
            _ => Value::Float(31.0),
        };
        match (&got, &expected) {
            (Value::Float(g), Value::Float(e)) => {
                assert!((g - e).abs() < 1e-12, "{func:?}: {g} vs {e}");
            }
            _ => assert_eq!(got, expected, "{func:?}"),
        }
    }
    assert_eq!(
        Acc::new(AggFn::Stddev, Some(Type::Int)).value(),
        Value::Null
    );
}

#[test]
fn aggregate_calls_are_parsed_with_their_argument_offset() {
    let (f, arg) = split_call(" mean( hr + 1 )").unwrap();
    assert_eq!(f, AggFn::Mean);
    assert_eq!(arg, Some(("hr + 1", 7)));
    assert_eq!(split_call("count()").unwrap(), (AggFn::Count, None));
    assert_eq!(split_call("count(*)").unwrap(), (AggFn::Count, None));
    assert!(
        split_call("median(hr)")
            .unwrap_err()
            .contains("unknown aggregate")
    );
    assert!(split_call("sum()").unwrap_err().contains("one argument"));
    assert!(split_call("hr").is_err());
}

#[test]
fn advancing_a_slice_at_a_time_gives_the_changes_of_one_advance() {
    let spec = spec(WindowKind::Tumbling { size: MIN }, 2 * MIN);
    let records: Vec<WindowRecord> = (0..300u64)
        .map(|i| {
            let key = format!("k{}", i % 40);
            rec(&key, (i as i64 % 7) * MIN + i as i64, i as i64, i)
        })
        .collect();
    let mut whole = Windows::new(Arc::clone(&spec));
    let mut sliced = Windows::new(spec);
    for r in &records {
        assert_eq!(whole.add(r), sliced.add(r));
    }
    let expected = whole.advance(5 * MIN);
    let mut got = Vec::new();
    let mut calls = 0;
    loop {
        let (changes, more) = sliced.advance_at_most(5 * MIN, 16);
        assert!(changes.len() <= 16, "a slice of {} changes", changes.len());
        got.extend(changes);
        calls += 1;
        if !more {
            break;
        }
    }
    assert!(calls > 1, "the closed windows fit one slice");
    assert_eq!(summary(&got), summary(&expected));
    assert_eq!(got, expected);
    // Late records and the next watermark behave the same afterwards.
    let late = rec("k1", MIN / 2, 1, 1_000);
    assert_eq!(whole.add(&late), sliced.add(&late));
    assert_eq!(whole.advance(9 * MIN), sliced.advance(9 * MIN));
}
