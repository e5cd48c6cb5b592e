//! The `window` operator against a batch recomputation: random, out-of-order inputs cut into
//! random batches, run on 1 to 4 timely workers, and the net result of the incremental changes
//! compared with a plain group-by over the same records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    missing_docs
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::Inspect;
use vitalflow_engine::runtime::metrics::NodeCounters;
use vitalflow_engine::runtime::windows::{WindowPlan, window};
use vitalflow_model::row::{Field, KeyValue, Row, Schema, Type, Value};
use vitalflow_operators::expression::compile;
use vitalflow_operators::window::{AggFn, AggSpec, WindowKind, WindowSpec};

const AGGS: &[&str] = &[
    "count()",
    "sum(v)",
    "min(v)",
    "max(x)",
    "mean(x)",
    "stddev(v)",
    "first(v)",
    "last(x)",
    "count_distinct(v)",
];

fn schema() -> Schema {
    let f = |name: &str, ty, nullable| Field {
        name: name.into(),
        ty,
        nullable,
        phi: None,
    };
    Schema {
        fields: vec![
            f("k", Type::String, false),
            f("ts", Type::Timestamp, false),
            f("v", Type::Int, false),
            f("x", Type::Float, true),
        ],
        time: Some(1),
        key: Some(0),
    }
}

/// One input record: key, event time, v, x, and the batch it arrives in.
#[derive(Clone, Debug)]
struct In {
    key: u8,
    ts: i64,
    v: i64,
    x: Option<f64>,
    batch: u64,
}

fn plan(kind: WindowKind, lateness: i64, delay: i64) -> WindowPlan {
    let schema = schema();
    let mut aggs = Vec::new();
    let mut args = Vec::new();
    for a in AGGS {
        let (func, arg) = vitalflow_operators::window::split_call(a).unwrap();
        let compiled = arg.map(|(text, _)| Arc::new(compile(text, &schema).unwrap()));
        aggs.push(AggSpec {
            func,
            arg: compiled.as_ref().and_then(|c| c.ty()),
        });
        args.push(compiled);
    }
    WindowPlan {
        name: "w".into(),
        spec: Arc::new(WindowSpec {
            kind,
            lateness,
            aggs,
        }),
        key: Arc::new(compile("k", &schema).unwrap()),
        time: 1,
        args,
        delay,
        granularity_ms: None,
        schema: Arc::new(schema),
    }
}

/// Runs the operator; returns (changes, late rows' sequences, late count).
fn run(inputs: &[In], plan: WindowPlan, workers: usize) -> (Vec<Vec<Value>>, Vec<u64>, u64) {
    let inputs = Arc::new(inputs.to_vec());
    let plan = Arc::new(plan);
    let changes = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(Mutex::new(Vec::new()));
    let counters = Arc::new(NodeCounters::default());
    let (c2, l2, k2) = (
        Arc::clone(&changes),
        Arc::clone(&late),
        Arc::clone(&counters),
    );
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut input =
            InputHandle::<u64, timely::container::CapacityContainerBuilder<Vec<Row>>>::new();
        let (c3, l3) = (Arc::clone(&c2), Arc::clone(&l2));
        let (p, k) = (Arc::clone(&plan), Arc::clone(&k2));
        worker.dataflow::<u64, _, _>(|scope| {
            let stream = input.to_stream(scope);
            let (out, late, _dead) = window(stream, p, k);
            out.inspect(move |r: &Row| c3.lock().unwrap().push(r.values.clone()));
            late.inspect(move |r: &Row| l3.lock().unwrap().push(r.sequence));
        });
        if worker.index() == 0 {
            for (seq, r) in inputs.iter().enumerate() {
                if r.batch > *input.time() {
                    // The batch's records reach the operator before the batch completes, and
                    // it completes in an activation of its own (where a large one is sliced).
                    input.flush();
                    for _ in 0..3 {
                        worker.step();
                    }
                    input.advance_to(r.batch);
                    for _ in 0..3 {
                        worker.step();
                    }
                }
                input.send(Row {
                    values: vec![
                        Value::str(&format!("k{}", r.key)),
                        Value::Timestamp(r.ts),
                        Value::Int(r.v),
                        r.x.map_or(Value::Null, Value::Float),
                    ],
                    sequence: seq as u64,
                    tombstone: false,
                    arrival_us: 0,
                });
            }
        }
        input.close();
        while worker.step() {}
    })
    .unwrap();
    let changes = std::mem::take(&mut *changes.lock().unwrap());
    let mut late = std::mem::take(&mut *late.lock().unwrap());
    late.sort_unstable();
    let count = counters.late.load(std::sync::atomic::Ordering::Relaxed);
    (changes, late, count)
}

/// The windows a record at `t` falls in.
fn windows_of(kind: WindowKind, t: i64) -> Vec<(i64, i64)> {
    match kind {
        WindowKind::Tumbling { size } => {
            let s = t.div_euclid(size) * size;
            vec![(s, s + size)]
        }
        WindowKind::Sliding { size, slide } => {
            let mut out = Vec::new();
            let mut s = t.div_euclid(slide) * slide;
            while s > t - size {
                out.push((s, s + size));
                s -= slide;
            }
            out
        }
        WindowKind::Session { .. } => unreachable!(),
    }
}

/// The batch recomputation: the watermark before each batch, which records each window takes,
/// a group-by, and every aggregate from its definition.
fn reference(
    inputs: &[In],
    kind: WindowKind,
    lateness: i64,
    delay: i64,
) -> (Vec<Vec<Value>>, Vec<u64>) {
    // Watermark before each batch: the largest event time of earlier batches, minus the delay.
    let mut before: BTreeMap<u64, i64> = BTreeMap::new();
    let mut max = i64::MIN;
    let batches: std::collections::BTreeSet<u64> = inputs.iter().map(|r| r.batch).collect();
    for b in batches {
        before.insert(b, max.saturating_sub(delay));
        max = max.max(
            inputs
                .iter()
                .filter(|r| r.batch == b)
                .map(|r| r.ts)
                .max()
                .unwrap(),
        );
    }
    let mut groups: BTreeMap<(u8, i64, i64), Vec<(u64, &In)>> = BTreeMap::new();
    let mut late = Vec::new();
    match kind {
        WindowKind::Session { gap } => {
            let mut by_key: BTreeMap<u8, Vec<(u64, &In)>> = BTreeMap::new();
            for (seq, r) in inputs.iter().enumerate() {
                if r.ts + gap + lateness <= before[&r.batch] {
                    late.push(seq as u64);
                } else {
                    by_key.entry(r.key).or_default().push((seq as u64, r));
                }
            }
            for (key, mut recs) in by_key {
                recs.sort_by_key(|(s, r)| (r.ts, *s));
                let mut current: Vec<(u64, &In)> = Vec::new();
                let mut end = i64::MIN;
                for (s, r) in recs {
                    if !current.is_empty() && r.ts >= end {
                        let start = current[0].1.ts;
                        groups.insert((key, start, end), std::mem::take(&mut current));
                    }
                    end = if current.is_empty() {
                        r.ts + gap
                    } else {
                        end.max(r.ts + gap)
                    };
                    current.push((s, r));
                }
                if !current.is_empty() {
                    let start = current[0].1.ts;
                    groups.insert((key, start, end), current);
                }
            }
        }
        _ => {
            for (seq, r) in inputs.iter().enumerate() {
                let mut taken = false;
                for (s, e) in windows_of(kind, r.ts) {
                    if e + lateness > before[&r.batch] {
                        groups
                            .entry((r.key, s, e))
                            .or_default()
                            .push((seq as u64, r));
                        taken = true;
                    }
                }
                if !taken {
                    late.push(seq as u64);
                }
            }
        }
    }
    let rows = groups
        .into_iter()
        .map(|((key, s, e), recs)| {
            let vs: Vec<i64> = recs.iter().map(|(_, r)| r.v).collect();
            let xs: Vec<f64> = recs.iter().filter_map(|(_, r)| r.x).collect();
            let n = vs.len() as f64;
            let mean_v = vs.iter().sum::<i64>() as f64 / n;
            let stddev = if vs.len() < 2 {
                Value::Null
            } else {
                let ss: f64 = vs.iter().map(|v| (*v as f64 - mean_v).powi(2)).sum();
                Value::Float((ss / (n - 1.0)).sqrt())
            };
            let first = recs.iter().min_by_key(|(seq, r)| (r.ts, *seq)).unwrap().1;
            let last_x = recs
                .iter()
                .filter(|(_, r)| r.x.is_some())
                .max_by_key(|(seq, r)| (r.ts, *seq))
                .and_then(|(_, r)| r.x);
            let distinct: std::collections::BTreeSet<i64> = vs.iter().copied().collect();
            let float = |f: Option<f64>| f.map_or(Value::Null, Value::Float);
            vec![
                Value::str(&format!("k{key}")),
                Value::Timestamp(s),
                Value::Timestamp(e),
                Value::Int(vs.len() as i64),
                Value::Int(vs.iter().sum()),
                Value::Int(*vs.iter().min().unwrap()),
                float(xs.iter().copied().reduce(f64::max)),
                float((!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)),
                stddev,
                Value::Int(first.v),
                float(last_x),
                Value::Int(distinct.len() as i64),
            ]
        })
        .collect();
    late.sort_unstable();
    (rows, late)
}

/// The net result of a change log: rows whose diffs sum to 1, without revision and diff. Every
/// row's diffs must sum to 0 or 1.
fn net(changes: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let mut sums: BTreeMap<Vec<KeyValue>, i64> = BTreeMap::new();
    for c in changes {
        let (row, diff) = c.split_at(c.len() - 1);
        let Value::Int(d) = diff[0] else {
            panic!("diff is not an integer: {c:?}")
        };
        *sums
            .entry(row.iter().cloned().map(KeyValue).collect())
            .or_default() += d;
    }
    let mut out = Vec::new();
    for (row, sum) in sums {
        assert!(sum == 0 || sum == 1, "a row's diffs sum to {sum}: {row:?}");
        if sum == 1 {
            out.push(row[..row.len() - 1].iter().map(|k| k.0.clone()).collect());
        }
    }
    out
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn check(inputs: &[In], kind: WindowKind, lateness: i64, delay: i64, workers: usize) {
    let (changes, late, late_count) = run(inputs, plan(kind, lateness, delay), workers);
    let (expected, expected_late) = reference(inputs, kind, lateness, delay);
    let mut got = net(&changes);
    let key = |r: &Vec<Value>| (KeyValue(r[0].clone()), KeyValue(r[1].clone()));
    got.sort_by_key(key);
    let mut expected = expected;
    expected.sort_by_key(key);
    assert_eq!(late, expected_late, "late records differ");
    assert_eq!(late_count, expected_late.len() as u64, "late count");
    assert_eq!(
        got.len(),
        expected.len(),
        "window count differs:\n got {got:?}\nwant {expected:?}"
    );
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            g.len() == e.len() && g.iter().zip(e).all(|(a, b)| close(a, b)),
            "window differs:\n got {g:?}\nwant {e:?}"
        );
    }
}

/// Records in roughly increasing event time, each up to `jitter` ms out of order, cut into
/// batches of random sizes.
fn inputs() -> impl Strategy<Value = Vec<In>> {
    (
        prop::collection::vec(
            (
                0u8..5,
                0i64..4_000,
                -20i64..20,
                prop::option::weighted(0.8, -50.0f64..50.0),
                1u64..4,
            ),
            1..120,
        ),
        0i64..20_000,
    )
        .prop_map(|(recs, jitter)| {
            let mut clock = 1_767_225_600_000i64;
            let mut batch = 0u64;
            let mut out = Vec::new();
            for (i, (key, step, v, x, cut)) in recs.into_iter().enumerate() {
                clock += step;
                let back = if jitter == 0 {
                    0
                } else {
                    (step * 7 + i as i64 * 13) % jitter
                };
                if i > 0 && i % 7 == 0 {
                    batch += cut;
                }
                out.push(In {
                    key,
                    ts: clock - back,
                    v,
                    x: x.map(|f| (f * 8.0).round() / 8.0),
                    batch,
                });
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tumbling_windows_equal_a_batch_recomputation(
        input in inputs(),
        size in 1i64..20,
        lateness in 0i64..10_000,
        delay in 0i64..5_000,
        workers in 1usize..=4,
    ) {
        check(&input, WindowKind::Tumbling { size: size * 1_000 }, lateness, delay, workers);
    }

    #[test]
    fn sliding_windows_equal_a_batch_recomputation(
        input in inputs(),
        slide in 1i64..6,
        hops in 1i64..5,
        lateness in 0i64..10_000,
        delay in 0i64..5_000,
        workers in 1usize..=4,
    ) {
        let slide = slide * 1_000;
        check(&input, WindowKind::Sliding { size: slide * hops, slide }, lateness, delay, workers);
    }

    #[test]
    fn session_windows_equal_a_batch_recomputation(
        input in inputs(),
        gap in 1i64..10,
        lateness in 0i64..10_000,
        delay in 0i64..5_000,
        workers in 1usize..=4,
    ) {
        check(&input, WindowKind::Session { gap: gap * 500 }, lateness, delay, workers);
    }
}

#[test]
fn the_same_input_gives_the_same_changes_on_one_and_four_workers() {
    let input: Vec<In> = (0..400)
        .map(|i| In {
            key: (i % 7) as u8,
            ts: 1_767_225_600_000 + i * 250 - (i % 5) * 900,
            v: i % 11,
            x: Some((i % 13) as f64 / 4.0),
            batch: (i / 40) as u64,
        })
        .collect();
    let kind = WindowKind::Tumbling { size: 5_000 };
    let sorted = |mut c: Vec<Vec<Value>>| {
        c.sort_by_key(|r| r.iter().cloned().map(KeyValue).collect::<Vec<_>>());
        c
    };
    let one = sorted(run(&input, plan(kind, 2_000, 500), 1).0);
    let four = sorted(run(&input, plan(kind, 2_000, 500), 4).0);
    assert!(!one.is_empty());
    assert_eq!(
        one, four,
        "the change log (revisions and retractions included)"
    );
    let _ = AggFn::Count;
}

/// Batches and window closings larger than a `window` operator handles in one activation
/// (records added plus windows emitted): on one worker every batch is cut into slices, on four
/// none is, and both give the batch recomputation and the same change log.
#[test]
fn batches_larger_than_one_activation_give_the_same_results() {
    let input: Vec<In> = (0..6_000i64)
        .map(|i| In {
            key: (i % 250) as u8,
            ts: 1_767_225_600_000 + i * 5 - (i % 9) * 400,
            v: i % 17,
            x: Some((i % 5) as f64),
            batch: (i / 2_000) as u64,
        })
        .collect();
    // Each batch spans 10 s of event time: 250 keys close about 10 one-second windows each.
    let kind = WindowKind::Tumbling { size: 1_000 };
    for workers in [1, 4] {
        check(&input, kind, 3_000, 0, workers);
    }
    let sorted = |mut c: Vec<Vec<Value>>| {
        c.sort_by_key(|r| r.iter().cloned().map(KeyValue).collect::<Vec<_>>());
        c
    };
    let one = sorted(run(&input, plan(kind, 3_000, 0), 1).0);
    let four = sorted(run(&input, plan(kind, 3_000, 0), 4).0);
    assert!(one.len() > 2 * 1_024, "{} changes", one.len());
    assert_eq!(
        one, four,
        "the change log (revisions and retractions included)"
    );
}
