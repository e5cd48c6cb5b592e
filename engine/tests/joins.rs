//! The `join` operator: as-of semantics on a hand-made changelog, and random changelogs and
//! streams on 1 to 4 workers against a direct computation of "the latest version of the key
//! valid at the record's event time, among the table rows received by the record's batch".
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::Inspect;
use vitalflow_engine::runtime::joins::{JoinPlan, Missing, join};
use vitalflow_engine::runtime::metrics::NodeCounters;
use vitalflow_model::row::{Field, Row, Schema, Type, Value};
use vitalflow_operators::expression::compile;

const T0: i64 = 1_767_258_000_000; // 2026-01-01T09:00:00Z
const MIN: i64 = 60_000;

fn field(name: &str, ty: Type) -> Field {
    Field {
        name: name.into(),
        ty,
        nullable: true,
        phi: None,
    }
}

/// Stream: `patient, ts, hr`. Table: `patient, since, ward`.
fn plan(missing: Missing, bounded: bool, history: i64) -> JoinPlan {
    let stream = Schema {
        fields: vec![
            field("patient", Type::String),
            field("ts", Type::Timestamp),
            field("hr", Type::Int),
        ],
        time: Some(1),
        key: Some(0),
    };
    JoinPlan {
        name: "enrich".into(),
        table: "wards".into(),
        key: Arc::new(compile("patient", &stream).unwrap()),
        time: 1,
        table_key: 0,
        table_time: Some(1),
        take: vec![2],
        missing,
        history,
        bounded_table: bounded,
        schema: Arc::new(stream),
    }
}

/// A table row: (patient, since, ward or deleted, batch).
type TableIn = (u8, i64, Option<u8>, u64);
/// A stream record: (patient, ts, batch).
type StreamIn = (u8, i64, u64);

/// Runs the join; returns (sequence, ward) of every output row, and the dead letters' sequences.
fn run(
    table: &[TableIn],
    stream: &[StreamIn],
    plan: JoinPlan,
    workers: usize,
) -> (Vec<(u64, Value)>, Vec<String>) {
    let (table, stream, plan) = (
        Arc::new(table.to_vec()),
        Arc::new(stream.to_vec()),
        Arc::new(plan),
    );
    let out = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(Mutex::new(Vec::new()));
    let (o2, d2) = (Arc::clone(&out), Arc::clone(&dead));
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut tin = InputHandle::<u64, CapacityContainerBuilder<Vec<Row>>>::new();
        let mut sin = InputHandle::<u64, CapacityContainerBuilder<Vec<Row>>>::new();
        let (o3, d3, p) = (Arc::clone(&o2), Arc::clone(&d2), Arc::clone(&plan));
        worker.dataflow::<u64, _, _>(|scope| {
            let (rows, dead) = join(
                sin.to_stream(scope),
                tin.to_stream(scope),
                p,
                Arc::new(NodeCounters::default()),
            );
            rows.inspect(move |r: &Row| {
                o3.lock()
                    .unwrap()
                    .push((r.sequence, r.values.last().cloned().unwrap()));
            });
            dead.inspect(move |d| d3.lock().unwrap().push(d.location.clone()));
        });
        if worker.index() == 0 {
            let last = table
                .iter()
                .map(|t| t.3)
                .chain(stream.iter().map(|s| s.2))
                .max()
                .unwrap_or(0);
            for b in 0..=last {
                tin.advance_to(b);
                sin.advance_to(b);
                for (seq, (p, since, ward, batch)) in table.iter().enumerate() {
                    if *batch == b {
                        tin.send(Row {
                            values: vec![
                                Value::str(&format!("P{p}")),
                                Value::Timestamp(*since),
                                ward.map_or(Value::Null, |w| Value::str(&format!("W{w}"))),
                            ],
                            sequence: seq as u64,
                            tombstone: ward.is_none(),
                            arrival_us: 0,
                        });
                    }
                }
                for (seq, (p, ts, batch)) in stream.iter().enumerate() {
                    if *batch == b {
                        sin.send(Row {
                            values: vec![
                                Value::str(&format!("P{p}")),
                                Value::Timestamp(*ts),
                                Value::Int(seq as i64),
                            ],
                            sequence: seq as u64,
                            tombstone: false,
                            arrival_us: 0,
                        });
                    }
                }
                worker.step();
            }
        }
        tin.close();
        sin.close();
        while worker.step() {}
    })
    .unwrap();
    let mut rows = std::mem::take(&mut *out.lock().unwrap());
    rows.sort_by_key(|r| r.0);
    let mut dead = std::mem::take(&mut *dead.lock().unwrap());
    dead.sort();
    (rows, dead)
}

fn ward(w: &str) -> Value {
    Value::str(w)
}

#[test]
fn each_event_joins_the_version_valid_at_its_own_time() {
    // P1 is in ward 1 from 09:00, ward 2 from 10:00, discharged (deleted) at 11:00.
    let table = vec![
        (1, T0, Some(1), 0),
        (1, T0 + 60 * MIN, Some(2), 0),
        (1, T0 + 120 * MIN, None, 0),
        (2, T0, Some(7), 0),
    ];
    let stream = vec![
        (1, T0 - 10 * MIN, 1),  // before any version
        (1, T0 + 30 * MIN, 1),  // ward 1
        (1, T0 + 90 * MIN, 1),  // ward 2
        (1, T0 + 130 * MIN, 1), // deleted
        (2, T0 + 5 * MIN, 1),   // ward 7
        (3, T0 + 5 * MIN, 1),   // no such patient
        (1, T0 + 45 * MIN, 2),  // late, still ward 1
    ];
    for workers in [1, 3] {
        let (rows, dead) = run(
            &table,
            &stream,
            plan(Missing::Null, false, 24 * 60 * MIN),
            workers,
        );
        assert_eq!(
            rows,
            vec![
                (0, Value::Null),
                (1, ward("W1")),
                (2, ward("W2")),
                (3, Value::Null),
                (4, ward("W7")),
                (5, Value::Null),
                (6, ward("W1")),
            ],
            "{workers} workers"
        );
        assert!(dead.is_empty());
        let (rows, dead) = run(
            &table,
            &stream,
            plan(Missing::DeadLetter, false, 24 * 60 * MIN),
            workers,
        );
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![1, 2, 4, 6]
        );
        assert_eq!(dead, vec!["record #0", "record #3", "record #5"]);
        let (rows, _) = run(
            &table,
            &stream,
            plan(Missing::Drop, false, 24 * 60 * MIN),
            workers,
        );
        assert_eq!(rows.len(), 4);
    }
}

#[test]
fn a_later_table_update_does_not_rewrite_earlier_output() {
    // The move to ward 2 (valid from 10:00) reaches the table only in batch 3, after the 10:30
    // event was joined in batch 1: that output stays ward 1; the 10:40 event of batch 4 sees
    // ward 2.
    let table = vec![(1, T0, Some(1), 0), (1, T0 + 60 * MIN, Some(2), 3)];
    let stream = vec![(1, T0 + 90 * MIN, 1), (1, T0 + 100 * MIN, 4)];
    let (rows, _) = run(
        &table,
        &stream,
        plan(Missing::Null, false, 24 * 60 * MIN),
        2,
    );
    assert_eq!(rows, vec![(0, ward("W1")), (1, ward("W2"))]);
    // A bounded table (a file) is read whole first: both see ward 2.
    let (rows, _) = run(&table, &stream, plan(Missing::Null, true, 24 * 60 * MIN), 2);
    assert_eq!(rows, vec![(0, ward("W2")), (1, ward("W2"))]);
}

#[test]
fn superseded_versions_are_released_after_the_history() {
    // History of 10 minutes: once the stream's watermark is past 10:10, ward 1 (superseded at
    // 10:00) is retracted, and an event from 09:30 arriving afterwards finds no version.
    let table = vec![(1, T0, Some(1), 0), (1, T0 + 60 * MIN, Some(2), 0)];
    let stream = vec![
        (1, T0 + 30 * MIN, 1),
        (1, T0 + 80 * MIN, 2),
        (1, T0 + 30 * MIN, 4),
    ];
    let (rows, _) = run(&table, &stream, plan(Missing::Null, false, 10 * MIN), 2);
    assert_eq!(
        rows,
        vec![(0, ward("W1")), (1, ward("W2")), (2, Value::Null)]
    );
}

/// The expected ward of each stream record.
fn reference(table: &[TableIn], stream: &[StreamIn]) -> Vec<(u64, Value)> {
    stream
        .iter()
        .enumerate()
        .map(|(seq, (p, ts, batch))| {
            let best = table
                .iter()
                .enumerate()
                .filter(|(_, (tp, since, _, tb))| tp == p && since <= ts && tb <= batch)
                .max_by_key(|(tseq, (_, since, _, _))| (*since, *tseq));
            let v = match best {
                Some((_, (_, _, Some(w), _))) => Value::str(&format!("W{w}")),
                _ => Value::Null,
            };
            (seq as u64, v)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn joins_equal_a_direct_as_of_lookup(
        table in prop::collection::vec((0u8..4, 0i64..20, prop::option::weighted(0.85, 0u8..9), 0u64..6), 0..40),
        stream in prop::collection::vec((0u8..5, 0i64..24, 0u64..6), 1..60),
        workers in 1usize..=4,
        // A long history (releases, records wait for the stream's watermark) and `forever` (no
        // releases, records go through once the table has their time).
        history in prop::sample::select(vec![i64::MAX / 4, i64::MAX]),
    ) {
        let table: Vec<TableIn> = table.into_iter().map(|(p, s, w, b)| (p, T0 + s * MIN, w, b)).collect();
        let stream: Vec<StreamIn> = stream.into_iter().map(|(p, s, b)| (p, T0 + s * MIN, b)).collect();
        let (rows, dead) = run(&table, &stream, plan(Missing::Null, false, history), workers);
        prop_assert!(dead.is_empty());
        let expected = reference(&table, &stream);
        prop_assert_eq!(rows, expected);
    }
}

#[test]
fn version_order_is_event_time_then_changelog() {
    // Two versions with the same valid-from: the later in the changelog wins.
    let table = vec![(1, T0, Some(1), 0), (1, T0, Some(2), 0)];
    let stream = vec![(1, T0, 0)];
    let (rows, _) = run(
        &table,
        &stream,
        plan(Missing::Null, false, 24 * 60 * MIN),
        1,
    );
    assert_eq!(rows, vec![(0, ward("W2"))]);
    let _ = BTreeMap::<u8, u8>::new();
}

#[test]
fn records_keep_their_batch_when_a_later_batch_is_joined_first() {
    // The table is complete, so any batch of the stream is ready as soon as it arrives. Batch 5
    // comes first while batch 1 is still open (another input, as another worker's source would
    // be): batch 1 must still come out at batch 1, not at a later time, or downstream windows
    // would see it after their watermark passed it.
    let plan = Arc::new(plan(Missing::Null, false, i64::MAX));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    timely::execute(timely::Config::thread(), move |worker| {
        let mut tin = InputHandle::<u64, CapacityContainerBuilder<Vec<Row>>>::new();
        let mut early = InputHandle::<u64, CapacityContainerBuilder<Vec<Row>>>::new();
        let mut late = InputHandle::<u64, CapacityContainerBuilder<Vec<Row>>>::new();
        let (s3, p) = (Arc::clone(&s2), Arc::clone(&plan));
        worker.dataflow::<u64, _, _>(|scope| {
            let stream = early.to_stream(scope).concat(late.to_stream(scope));
            let (rows, _) = join(
                stream,
                tin.to_stream(scope),
                p,
                Arc::new(NodeCounters::default()),
            );
            rows.inspect_core(move |event| {
                if let Ok((stamp, data)) = event {
                    for r in data {
                        s3.lock()
                            .unwrap()
                            .push((r.sequence, *stamp.least().unwrap()));
                    }
                }
            });
        });
        let row = |seq: u64, ts: i64| Row {
            values: vec![Value::str("P1"), Value::Timestamp(ts), Value::Int(0)],
            sequence: seq,
            tombstone: false,
            arrival_us: 0,
        };
        tin.send(Row {
            values: vec![Value::str("P1"), Value::Timestamp(T0), Value::str("W1")],
            sequence: 0,
            tombstone: false,
            arrival_us: 0,
        });
        tin.close();
        late.advance_to(5);
        late.send(row(5, T0 + 50 * MIN));
        late.flush();
        for _ in 0..20 {
            worker.step();
        }
        early.advance_to(1);
        early.send(row(1, T0 + 10 * MIN));
        early.close();
        late.close();
        while worker.step() {}
    })
    .unwrap();
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    seen.sort_unstable();
    assert_eq!(seen, vec![(1, 1), (5, 5)], "(record, output time)");
}
