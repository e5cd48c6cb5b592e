//! Tests of CSV decoding, robustness on arbitrary input, and the shared sample data.
#![allow(clippy::unwrap_used)]

use vitalflow_model::row::{Type, Value};

use super::tests::{FLAT, JAN1, flat_decoder, spec, ts};
use super::*;
use crate::test_support::{XorShift, sample_dir, sample_missing};

/// Decodes one CSV cell with field `x` of `field`.
fn cell(field: FieldSpec, text: &str) -> Result<Value, String> {
    let d = Decoder::new(vec![field]);
    d.decode_csv(None, text.as_bytes(), 0)
        .map(|r| r.values[0].clone())
        .map_err(|e| e.to_string())
}

#[test]
fn csv_with_and_without_header() {
    let d = Decoder::new(vec![
        spec("id", Type::String, false),
        FieldSpec {
            column: Some("HR".to_owned()),
            ..spec("hr", Type::Int, false)
        },
        spec("ok", Type::Bool, true),
        spec("temp", Type::Float, true),
        ts("time", TimeFormat::Auto),
    ]);
    let header: Vec<String> = ["time", "unused", "temp", "ok", "HR", "id"]
        .map(str::to_owned)
        .to_vec();
    let row = d
        .decode_csv(
            Some(&header),
            b"2026-01-01T00:00:00Z,x,36.6,TRUE, 88 ,P1\r\n",
            5,
        )
        .unwrap();
    assert_eq!(row.sequence, 5);
    assert_eq!(
        row.values,
        vec![
            Value::str("P1"),
            Value::Int(88),
            Value::Bool(true),
            Value::Float(36.6),
            Value::Timestamp(JAN1)
        ]
    );
    let row = d.decode_csv(None, b"P2,90,0,,1767225600000", 0).unwrap();
    assert_eq!(
        row.values,
        vec![
            Value::str("P2"),
            Value::Int(90),
            Value::Bool(false),
            Value::Null,
            Value::Timestamp(JAN1)
        ]
    );
    let err = |header: Option<&[String]>, line: &str| {
        d.decode_csv(header, line.as_bytes(), 0)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(None, "P2,90,0"),
        "field `temp` is missing: the CSV row has 3 cells, fewer than the 5 expected"
    );
    assert_eq!(
        err(None, "P2,90,0,1,2,3"),
        "the CSV row has 6 cells, more than the 5 declared fields"
    );
    assert_eq!(
        err(None, ",90,0,1,2"),
        "field `id` is empty and not nullable"
    );
    assert_eq!(
        err(None, "P,  ,0,1,2"),
        "field `hr` is empty and not nullable"
    );
    assert_eq!(
        err(None, "P,9.5,0,1,2"),
        "field `hr`: expected integer, found a number with a fraction"
    );
    assert_eq!(
        err(None, "P,9,yes,1,2"),
        "field `ok`: expected boolean, found text"
    );
    assert_eq!(
        err(None, "P,9,1,inf,2"),
        "field `temp`: expected float, found a non-finite number"
    );
    assert_eq!(
        err(None, "P,9,1,1,2026-01-01T00:00"),
        "field `time`: expected timestamp (epoch milliseconds or ISO 8601 text), found text that \
         is not an ISO 8601 date or date-time"
    );
    let short: Vec<String> = ["time", "HR", "id", "ok"].map(str::to_owned).to_vec();
    assert_eq!(
        err(Some(&short), "0,1,P,1"),
        "field `temp`: no column `temp` in the CSV header"
    );
    assert_eq!(err(Some(&header), ""), "the CSV row is empty");
    assert_eq!(
        err(Some(&header), "0,x,1,1,1"),
        "field `id` is missing: the CSV row has 5 cells, fewer than the 6 expected"
    );
    assert_eq!(
        err(Some(&header), "0,,1,1,1,P,"),
        "the CSV row has 7 cells, more than the 6 columns in the header"
    );
    let e = d.decode_csv(None, b"P\xff,1,1,1,1", 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "field `id`: expected string, found invalid UTF-8"
    );
}

#[test]
fn quoted_csv() {
    let d = Decoder::new(vec![
        spec("a", Type::String, false),
        spec("b", Type::Int, false),
        spec("c", Type::String, true),
    ]);
    let row = d
        .decode_csv(None, b"\"Doe, Jane \"\"J\"\"\",\"42\",\"line\nbreak\"\n", 0)
        .unwrap();
    assert_eq!(
        row.values,
        vec![
            Value::str("Doe, Jane \"J\""),
            Value::Int(42),
            Value::str("line\nbreak")
        ]
    );
    let row = d.decode_csv(None, b"\"\",1,\"\"", 0);
    assert_eq!(
        row.unwrap_err().to_string(),
        "field `a` is empty and not nullable"
    );
    let e = d.decode_csv(None, b"x,1,\"y\"\nz,2,w", 0).unwrap_err();
    assert_eq!(e.to_string(), "the record holds more than one CSV row");
}

#[test]
fn csv_timestamps() {
    let c = |f, text: &str| cell(ts("t", f), text);
    assert_eq!(
        c(TimeFormat::EpochMillis, "1767225600000"),
        Ok(Value::Timestamp(JAN1))
    );
    assert_eq!(
        c(TimeFormat::EpochMillis, "1767225600000.4"),
        Ok(Value::Timestamp(JAN1))
    );
    assert_eq!(
        c(TimeFormat::EpochSeconds, "1767225600.5"),
        Ok(Value::Timestamp(JAN1 + 500))
    );
    assert_eq!(
        c(TimeFormat::Iso8601, "2026-01-01"),
        Ok(Value::Timestamp(JAN1))
    );
    assert_eq!(c(TimeFormat::Auto, "-1000"), Ok(Value::Timestamp(-1000)));
    assert_eq!(
        c(TimeFormat::Auto, "2026-01-01 00:00:00.000"),
        Ok(Value::Timestamp(JAN1))
    );
    assert!(c(TimeFormat::Iso8601, "1767225600000").is_err());
    assert!(c(TimeFormat::EpochMillis, "2026-01-01").is_err());
    assert!(c(TimeFormat::Auto, "99999999999999999999").is_err());
    assert!(c(TimeFormat::EpochSeconds, "9223372036854775807").is_err());
}

/// Mutates a byte string: flips, inserts, deletes or duplicates bytes.
fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    const SPECIAL: &[u8] = b"{}[]\",:\\0123456789.eE+-tfnul \n\r\xff\xc3";
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if at < out.len() => out[at] = SPECIAL[rng.below(SPECIAL.len())],
            1 => out.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
            2 if at < out.len() => {
                out.remove(at);
            }
            _ => {
                let end = (at + rng.below(8)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
        }
    }
    out
}

#[test]
fn no_panic_on_random_and_mutated_input() {
    let nested = Decoder::new(vec![
        FieldSpec {
            path: vec!["vitals".to_owned(), "hr".to_owned()],
            ..spec("hr", Type::Int, true)
        },
        ts("ts", TimeFormat::Iso8601),
        spec("b", Type::Bool, true),
    ]);
    let decoders = [flat_decoder(), nested];
    let header: Vec<String> = [
        "patient_id",
        "ts",
        "hr",
        "spo2",
        "rr",
        "temp",
        "sbp",
        "ward",
    ]
    .map(str::to_owned)
    .to_vec();
    let seeds: [&[u8]; 5] = [
        FLAT.as_bytes(),
        br#"{"vitals":{"hr":88.0},"ts":"2026-01-01T00:00:00.5+01:00","b":true}"#,
        b"P1,1767225600000,88,97,16,36.8,121,ICU",
        b"\"P,1\",2026-01-01,88,97,16,\"3\"\"6\",121,\"a\nb\"",
        b"",
    ];
    let mut rng = XorShift(0xdec0de);
    let (mut ok, mut failed) = (0u32, 0u32);
    for round in 0..6000 {
        let input = if round % 3 == 0 {
            let len = rng.below(64);
            rng.bytes(len)
        } else {
            let seed = seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        for d in &decoders {
            for result in [
                d.decode_json(&input, round),
                d.decode_csv(None, &input, round),
                d.decode_csv(Some(&header), &input, round),
            ] {
                match result {
                    Ok(row) => {
                        assert_eq!(row.values.len(), d.fields().len());
                        ok += 1;
                    }
                    Err(e) => {
                        assert!(!e.reason.is_empty());
                        failed += 1;
                    }
                }
            }
        }
    }
    assert!(ok > 100 && failed > 1000, "ok {ok}, failed {failed}");
}

#[test]
fn decodes_the_sample_vitals_csv() {
    let Some(dir) = sample_dir("vitals") else {
        return;
    };
    let path = dir.join("s00001-numerics.csv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        sample_missing(&path);
        return;
    };
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    let col = |name: &str, column: &str, ty, nullable| FieldSpec {
        column: Some(column.to_owned()),
        ..spec(name, ty, nullable)
    };
    let d = Decoder::new(vec![
        spec("minute", Type::Int, false),
        FieldSpec {
            time_format: TimeFormat::Iso8601,
            ..col("ts", "time", Type::Timestamp, false)
        },
        col("hr", "HR", Type::Float, true),
        col("spo2", "SpO2", Type::Float, true),
        col("resp", "RESP", Type::Float, true),
        col("nbp_sys", "NBPSys", Type::Float, true),
    ]);
    let base = parse_iso8601("2026-01-01T00:31:25Z").unwrap();
    let mut rows = 0;
    let mut nulls = 0;
    for (i, line) in lines.enumerate() {
        let row = d
            .decode_csv(Some(&header), line.as_bytes(), i as u64)
            .unwrap_or_else(|e| panic!("line {}: {e}", i + 2));
        let Value::Int(minute) = row.values[0] else {
            panic!("line {}: minute is not an integer", i + 2);
        };
        assert_eq!(row.values[1], Value::Timestamp(base + minute * 60_000));
        nulls += row.values.iter().filter(|v| v.is_null()).count();
        rows += 1;
    }
    assert_eq!(rows, 1936);
    assert!(nulls > 0, "the NBP columns have empty cells");
}

#[test]
fn an_unterminated_quote_is_named_with_its_column() {
    let d = Decoder::new(vec![
        FieldSpec::new("id", Type::String, false),
        FieldSpec::new("note", Type::String, true),
        FieldSpec::new("hr", Type::Int, false),
    ]);
    let header: Vec<String> = ["id", "note", "hr"].map(str::to_owned).to_vec();
    let e = d
        .decode_csv(Some(&header), b"P1,\"never closed,72", 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unterminated quote: the quoted field of column 2 (`note`), opened on the record's first \
         line, is never closed"
    );
    let e = d.decode_csv(None, b"P1,\"a \"\"b\"\",72", 0).unwrap_err();
    assert!(e.to_string().contains("column 2,"), "{e}");
    // Quotes that close, and a quote inside an unquoted field, are fine.
    assert!(d.decode_csv(None, b"P1,\"a,\"\"b\"\"\",72", 0).is_ok());
    assert!(d.decode_csv(None, b"P1,5\" tall,72", 0).is_ok());
}

#[test]
fn an_unterminated_quote_names_the_line_it_opened_on() {
    let d = Decoder::new(vec![
        FieldSpec::new("id", Type::String, false),
        FieldSpec::new("note", Type::String, true),
        FieldSpec::new("hr", Type::Int, false),
    ]);
    let e = d
        .decode_csv(None, b"P1,\"two\nlines\",72,\"x\nP2,y,1", 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unterminated quote: the quoted field of column 4, opened on line 2 of the record, is \
         never closed"
    );
}
