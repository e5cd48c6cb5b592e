//! The records the engine's own exchanges carry (stage stats and sink commits to worker 0, join
//! probes, alert readings and window records by key) survive timely's encoding of records sent
//! to another process (bincode 1.x). The model's records are checked in the model crate.

use std::fmt::Debug;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vitalflow_model::envelope::Counts;
use vitalflow_model::row::{KeyValue, Row, Value};
use vitalflow_operators::alert::latest::Reading;
use vitalflow_operators::alert::monitor::{ObservationRef, Observed};
use vitalflow_operators::alert::news2::{Acvpu, Parameter, Spo2Scale};
use vitalflow_operators::window::WindowRecord;

use super::alerts::Prepared;
use super::joins::Probe;
use super::ops::{SinkCommit, StageStat};

/// `batch` encoded as timely encodes a batch sent to another process, decoded, and encoded again:
/// the same bytes and the same value (by its `Debug` form: not every type compares).
fn survives<T: Serialize + DeserializeOwned + Debug>(name: &str, batch: &Vec<T>) {
    let bytes = match bincode::serialize(batch) {
        Ok(bytes) => bytes,
        Err(e) => panic!("{name}: cannot be encoded: {e}"),
    };
    let size = bincode::serialized_size(batch).unwrap_or(0);
    assert_eq!(size, bytes.len() as u64, "{name}: sized unlike encoded");
    let back: Vec<T> = match bincode::deserialize(&bytes) {
        Ok(back) => back,
        Err(e) => panic!("{name}: does not survive bincode: {e}"),
    };
    assert_eq!(format!("{back:?}"), format!("{batch:?}"), "{name}: changed");
    assert_eq!(
        bincode::serialize(&back).ok(),
        Some(bytes),
        "{name}: encodes differently once decoded"
    );
}

fn row(tombstone: bool) -> Row {
    Row {
        values: vec![
            Value::str("P1"),
            Value::Timestamp(1_767_225_600_000),
            Value::Float(0.1 + 0.2),
            Value::Null,
            Value::Int(7),
            Value::Bool(false),
        ],
        sequence: 9,
        tombstone,
        arrival_us: 1_767_225_600_000_123,
    }
}

#[test]
fn stage_stats_with_and_without_detail() {
    let stats = vec![
        StageStat {
            batch: 2,
            counts: Counts {
                records_in: 5,
                records_out: 4,
                rejected: 1,
            },
            detail: Some(serde_json::json!({"name:redact": 3, "date:shift": 12})),
        },
        StageStat {
            batch: 3,
            counts: Counts::default(),
            detail: None,
        },
    ];
    survives("StageStat", &stats);
    // Its JSON is what it was.
    assert_eq!(
        serde_json::to_string(&stats[0]).ok().as_deref(),
        Some(
            r#"{"batch":2,"counts":{"recordsIn":5,"recordsOut":4,"rejected":1},"detail":{"date:shift":12,"name:redact":3}}"#
        )
    );
}

#[test]
fn sink_commits() {
    survives(
        "SinkCommit",
        &vec![SinkCommit {
            sink: "vitals".to_owned(),
            batches: vec![0, 1],
            files: vec!["rows/0000000000-0000000001-w3.parquet".to_owned()],
            rows: 12,
            first: 0,
            last: 1,
            digests: vec![vitalflow_model::envelope::FileDigest {
                path: "rows/0000000000-0000000001-w3.parquet".to_owned(),
                bytes: 1234,
                sha256: "ab".repeat(32),
            }],
        }],
    );
}

#[test]
fn join_probes() {
    let key = KeyValue(Value::str("P1"));
    let probes: Vec<Probe> = vec![
        (
            (key.0.route_hash(), key.clone()),
            1_767_225_600_000,
            row(false),
        ),
        ((0, KeyValue(Value::Null)), i64::MIN, row(true)),
    ];
    survives("join probe", &probes);
}

#[test]
fn alert_readings() {
    let readings = vec![
        Prepared {
            observed: Observed {
                patient: "P1".to_owned(),
                time: 1_767_225_600_000,
                id: ObservationRef::Text(Arc::from("obs-1")),
                ward: Some("ICU".to_owned()),
                scale: Spo2Scale::Two,
                readings: vec![
                    (Parameter::Pulse, Reading::Number(131.5)),
                    (Parameter::AirOrOxygen, Reading::Oxygen(true)),
                    (
                        Parameter::Consciousness,
                        Reading::Consciousness(Acvpu::NewConfusion),
                    ),
                ],
            },
            row: row(false),
            scale_missing: false,
        },
        Prepared {
            observed: Observed {
                patient: "P2".to_owned(),
                time: -1,
                id: ObservationRef::Position(42),
                ward: None,
                scale: Spo2Scale::One,
                readings: Vec::new(),
            },
            row: row(false),
            scale_missing: true,
        },
    ];
    survives("alert reading", &readings);
}

#[test]
fn window_records() {
    let records = vec![(
        WindowRecord {
            key: KeyValue(Value::str("ward-3")),
            time: 1_767_225_600_000,
            seq: 4,
            args: vec![Value::Null, Value::Float(98.6), Value::Int(1)],
        },
        row(false),
    )];
    survives("window record", &records);
}
