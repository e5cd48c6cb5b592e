#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use vitalflow_model::clinical::{ClinicalRecord, Ingested, VitalRecord};
use vitalflow_model::vitals::{VitalKind, VitalValue};
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};

use crate::test_support::{raw, run, sample_dir};

const HEADER: &str = "minute,time,HR,ABPSys,ABPDias,ABPMean,PULSE,RESP,SpO2,NBPSys,NBPDias,NBPMean";

fn row(header: &str, line: &str) -> RawRecord {
    let mut r = raw(RawFormat::VitalsCsv, line);
    r.header = Some(header.split(',').map(str::to_owned).collect());
    r.context = Some("s00001".to_owned());
    r
}

fn vitals(ok: &[Ingested]) -> Vec<&VitalRecord> {
    ok.iter()
        .map(|r| match &r.record {
            ClinicalRecord::Vital(v) => v,
            other => panic!("not a vital from CSV: {other:?}"),
        })
        .collect()
}

fn reasons(dead: &[DeadLetter]) -> Vec<&str> {
    dead.iter().map(|d| d.reason.as_str()).collect()
}

#[test]
fn a_full_row() {
    let (ok, dead) = run(&row(
        HEADER,
        "5,2026-01-01T00:36:25Z,80,120,70,85,80,16,97,118,75,88\n",
    ));
    assert!(dead.is_empty(), "{dead:?}");
    let v = vitals(&ok);
    let got: Vec<_> = v
        .iter()
        .map(|v| (v.kind, v.source_id.as_deref().unwrap(), v.value))
        .collect();
    let q = |value| VitalValue::Quantity { value };
    assert_eq!(
        got,
        vec![
            (VitalKind::HeartRate, "HR@2026-01-01T00:36:25Z", q(80.0)),
            (
                VitalKind::RespiratoryRate,
                "RESP@2026-01-01T00:36:25Z",
                q(16.0)
            ),
            (VitalKind::Spo2, "SpO2@2026-01-01T00:36:25Z", q(97.0)),
            (
                VitalKind::MeanArterialPressure,
                "ABPMean@2026-01-01T00:36:25Z",
                q(85.0)
            ),
            (
                VitalKind::MeanArterialPressure,
                "NBPMean@2026-01-01T00:36:25Z",
                q(88.0)
            ),
            (
                VitalKind::BloodPressure,
                "ABPSys@2026-01-01T00:36:25Z",
                VitalValue::BloodPressure {
                    systolic: 120.0,
                    diastolic: 70.0
                }
            ),
            (
                VitalKind::BloodPressure,
                "NBPSys@2026-01-01T00:36:25Z",
                VitalValue::BloodPressure {
                    systolic: 118.0,
                    diastolic: 75.0
                }
            ),
        ]
    );
    assert!(v.iter().all(|v| v.patient_id == "s00001"));
    assert_eq!(
        ok.iter().map(|r| r.sequence.1).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
}

#[test]
fn missing_and_zero_cells_are_skipped() {
    // 0 = not connected, empty = missing; a BP pair needs both sides.
    let (ok, dead) = run(&row(
        HEADER,
        "1,2026-01-01T00:32:25Z,62.8,0,0,0,0,12.7,0,120,,",
    ));
    assert!(dead.is_empty());
    let kinds: Vec<_> = vitals(&ok).iter().map(|v| v.kind).collect();
    assert_eq!(
        kinds,
        vec![VitalKind::HeartRate, VitalKind::RespiratoryRate]
    );
    // Nothing usable: no record, no dead letter, even with a bad time.
    for line in [
        "0,2026-01-01T00:31:25Z,0,0,0,0,0,0,0,,,",
        "0,garbage,0,0,0,0,0,0,0,,,",
        "",
    ] {
        let (ok, dead) = run(&row(HEADER, line));
        assert!(ok.is_empty() && dead.is_empty(), "{line}: {dead:?}");
    }
}

#[test]
fn bad_cells_and_rows() {
    let (ok, dead) = run(&row(
        HEADER,
        "1,2026-01-01T00:32:25Z,abc,120,x,0,0,-3,NaN,,,",
    ));
    assert!(ok.is_empty());
    assert_eq!(
        reasons(&dead),
        vec![
            "column HR: not a number",
            "column RESP: negative value",
            "column SpO2: not a finite number",
            "column ABPDias: not a number",
        ]
    );
    let (ok, dead) = run(&row(HEADER, "1,2026-01-01T00:32:25Z,abc,0,0,0,0,12,0,,,"));
    assert_eq!(
        (ok.len(), reasons(&dead)),
        (1, vec!["column HR: not a number"])
    );
    let (_, dead) = run(&row(HEADER, "1,yesterday,80,0,0,0,0,12,0,,,"));
    assert_eq!(
        reasons(&dead),
        vec!["column time: not an RFC 3339 date-time"]
    );
    let (_, dead) = run(&row(HEADER, "1,,80,0,0,0,0,12,0,,,"));
    assert_eq!(reasons(&dead), vec!["column time: empty"]);
    let (_, dead) = run(&row("minute,HR", "1,80"));
    assert_eq!(
        reasons(&dead),
        vec!["header: no time column (time or timestamp)"]
    );
    let (_, dead) = run(&row(HEADER, "1,2026-01-01T00:32:25Z,80"));
    assert_eq!(
        reasons(&dead),
        vec!["CSV row: 3 fields, but the header has 12 columns"]
    );
    let (_, dead) = run(&row(HEADER, "1,a\n2,b\n"));
    assert_eq!(
        reasons(&dead),
        vec!["CSV row: the record holds more than one row"]
    );
    let (_, dead) = run(&row(
        "timestamp,Temperature",
        "2026-01-01T00:00:00Z,\u{ff}\u{fe}",
    ));
    assert_eq!(reasons(&dead), vec!["column Temperature: not a number"]);
    let mut r = row("time,hr", "2026-01-01T00:00:00Z,\u{0}");
    r.bytes = b"2026-01-01T00:00:00Z,\xff\xfe".to_vec();
    let (_, dead) = run(&r);
    assert_eq!(reasons(&dead), vec!["CSV row: field 2 is not valid UTF-8"]);

    let mut r = row(HEADER, "1,2026-01-01T00:32:25Z,80,0,0,0,0,12,0,,,");
    r.context = None;
    assert_eq!(
        reasons(&run(&r).1),
        vec!["context: missing (the patient id of the CSV file)"]
    );
    r.header = None;
    assert_eq!(
        reasons(&run(&r).1),
        vec!["header: missing (CSV vitals need the file's column names)"]
    );
}

#[test]
fn temperature_and_timestamp_columns() {
    let (ok, dead) = run(&row("Timestamp,TEMP", "2026-01-01 10:00:00,37.2"));
    assert!(dead.is_empty(), "{dead:?}");
    let v = vitals(&ok);
    assert_eq!(
        (v[0].kind, v[0].value),
        (
            VitalKind::BodyTemperature,
            VitalValue::Quantity { value: 37.2 }
        )
    );
    assert_eq!(v[0].effective.to_rfc3339(), "2026-01-01T10:00:00+00:00");
}

#[test]
fn the_numerics_sample() {
    let Some(dir) = sample_dir("vitals") else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("s00001-numerics.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert_eq!(header, HEADER);
    let (mut kinds, mut rows, mut dead_total) = (BTreeMap::new(), 0, 0);
    for (i, line) in (0u64..).zip(lines) {
        let mut r = row(header, line);
        r.sequence = i;
        let (ok, dead) = run(&r);
        dead_total += dead.len();
        rows += 1;
        for v in vitals(&ok) {
            *kinds.entry(v.kind).or_insert(0usize) += 1;
            if let VitalValue::BloodPressure {
                systolic,
                diastolic,
            } = v.value
            {
                assert!(systolic > 0.0 && diastolic > 0.0);
            }
        }
    }
    assert_eq!(rows, 1936);
    assert_eq!(dead_total, 0);
    for kind in [
        VitalKind::HeartRate,
        VitalKind::RespiratoryRate,
        VitalKind::Spo2,
        VitalKind::BloodPressure,
        VitalKind::MeanArterialPressure,
    ] {
        assert!(
            kinds.get(&kind).copied().unwrap_or(0) > 100,
            "{kind:?}: {kinds:?}"
        );
    }
}

#[test]
fn an_unterminated_quote_is_dead_lettered_naming_its_column() {
    let (ok, dead) = run(&row("time,HR,SpO2", "2026-01-01T00:36:25Z,\"80,97"));
    assert!(ok.is_empty(), "{ok:?}");
    assert_eq!(
        reasons(&dead),
        [
            "CSV row: unterminated quote: the quoted field of column 2 (`HR`), opened on the \
          record's first line, is never closed"
        ]
    );
}
