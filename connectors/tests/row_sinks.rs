//! Sinks of rows of a declared schema: Parquet files and JSON-lines rendering.
#![allow(clippy::unwrap_used, clippy::float_cmp)]

use std::fs::{self, File};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use vitalflow_connectors::SinkError;
use vitalflow_connectors::jsonl::{JsonlFile, write_row_json};
use vitalflow_connectors::parquet_rows::{RowParquetWriter, arrow_schema};
use vitalflow_model::row::{Field, Row, Schema, Type, Value, format_timestamp};

fn field(name: &str, ty: Type, nullable: bool) -> Field {
    Field {
        name: name.to_owned(),
        ty,
        nullable,
        phi: None,
    }
}

/// Fields named in sorted order, so that serde_json's (sorted) maps keep schema order.
fn schema() -> Schema {
    Schema {
        fields: vec![
            field("a_id", Type::String, false),
            field("b_ts", Type::Timestamp, false),
            field("c_hr", Type::Int, true),
            field("d_temp", Type::Float, true),
            field("e_alert", Type::Bool, true),
            field("f_note", Type::String, true),
            field("g_seen", Type::Timestamp, true),
            field("h_count", Type::Int, false),
        ],
        time: Some(1),
        key: Some(0),
    }
}

fn row(i: u64) -> Row {
    let n = i64::try_from(i).unwrap();
    let odd = i % 2 == 1;
    Row {
        values: vec![
            Value::str(&format!("P{i:04} \"é\"")),
            Value::Timestamp(1_767_225_600_000 + n * 61_001),
            if odd { Value::Null } else { Value::Int(60 + n) },
            match i % 3 {
                0 => Value::Float(36.5 + n as f64 / 10.0),
                1 => Value::Int(37), // an integer in a float column
                _ => Value::Null,
            },
            if odd {
                Value::Bool(i % 4 == 1)
            } else {
                Value::Null
            },
            if odd {
                Value::Null
            } else {
                Value::str("line\nbreak, \\ \u{1}")
            },
            if odd {
                Value::Timestamp(-n)
            } else {
                Value::Null
            },
            Value::Int(i64::MIN + n),
        ],
        sequence: i,
        tombstone: false,
        arrival_us: 0,
    }
}

fn read(path: &Path) -> RecordBatch {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let mut batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1, "the files here hold one batch");
    batches.remove(0)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn arrow_types_follow_the_schema() {
    let arrow = arrow_schema(&schema());
    let types: Vec<(&str, &DataType, bool)> = arrow
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type(), f.is_nullable()))
        .collect();
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    assert_eq!(
        types,
        vec![
            ("a_id", &DataType::Utf8, false),
            ("b_ts", &ts, false),
            ("c_hr", &DataType::Int64, true),
            ("d_temp", &DataType::Float64, true),
            ("e_alert", &DataType::Boolean, true),
            ("f_note", &DataType::Utf8, true),
            ("g_seen", &ts, true),
            ("h_count", &DataType::Int64, false),
        ]
    );
}

#[test]
fn parquet_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out").join("flagged-parquet");
    let schema = schema();
    let w = RowParquetWriter::new(dir.clone(), &schema);
    let rows: Vec<Row> = (0..50).map(row).collect();
    let files = w.write("0000000001-0000000002-w0", &rows).unwrap();
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert_eq!(f.path, dir.join("part-0000000001-0000000002-w0.parquet"));
    assert_eq!(f.rows, 50);
    assert_eq!(f.bytes, fs::metadata(&f.path).unwrap().len());
    assert_eq!(listing(&dir), vec!["part-0000000001-0000000002-w0.parquet"]);

    let b = read(&f.path);
    assert_eq!(b.num_rows(), 50);
    assert_eq!(b.schema(), *w.arrow_schema());
    for (i, r) in rows.iter().enumerate() {
        for (c, v) in r.values.iter().enumerate() {
            let col = b.column(c);
            let what = format!("row {i} column {c}");
            match v {
                Value::Null => assert!(col.is_null(i), "{what}"),
                Value::Str(s) => assert_eq!(col.as_string::<i32>().value(i), &**s, "{what}"),
                Value::Timestamp(t) => {
                    let a = col.as_primitive::<TimestampMillisecondType>();
                    assert_eq!(a.timezone(), Some("UTC"));
                    assert_eq!(a.value(i), *t, "{what}");
                }
                Value::Int(x) if c == 3 => {
                    assert_eq!(col.as_primitive::<Float64Type>().value(i), *x as f64);
                }
                Value::Int(x) => assert_eq!(col.as_primitive::<Int64Type>().value(i), *x, "{what}"),
                Value::Float(x) => {
                    assert_eq!(col.as_primitive::<Float64Type>().value(i), *x, "{what}");
                }
                Value::Bool(x) => assert_eq!(col.as_boolean().value(i), *x, "{what}"),
            }
            assert_eq!(col.is_null(i), v.is_null(), "{what}");
        }
    }

    // The same tag again replaces the file; no rows, no file.
    let again = w.write("0000000001-0000000002-w0", &rows[..3]).unwrap();
    assert_eq!(again[0].path, f.path);
    assert_eq!(read(&f.path).num_rows(), 3);
    assert!(w.write("0000000003-0000000003-w0", &[]).unwrap().is_empty());
    assert_eq!(listing(&dir).len(), 1);
}

#[test]
fn rows_that_do_not_fit_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rows");
    let w = RowParquetWriter::new(dir.clone(), &schema());
    let secret = "SECRET-Jane";
    let mut bad_null = row(0);
    bad_null.values[0] = Value::Null;
    bad_null.sequence = 17;
    let mut bad_type = row(1);
    bad_type.values[2] = Value::str(secret);
    let mut short = row(2);
    short.values.pop();
    for (bad, want) in [
        (
            bad_null,
            "field `a_id` of row #17 is null, but the field is not nullable",
        ),
        (
            bad_type,
            "field `c_hr` of row #1 holds a string value, but the field is integer",
        ),
        (short, "row #2 has 7 values, but the schema has 8 fields"),
    ] {
        let rows = vec![row(5), bad];
        let e = w.write("t1", &rows).unwrap_err();
        assert!(matches!(e, SinkError::Arrow { .. }), "{e:?}");
        let message = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(message.contains(want), "{message}");
        assert!(!message.contains("SECRET"));
        // Nothing is left behind, not even the `.inprogress` file.
        assert!(
            !dir.exists() || listing(&dir).is_empty(),
            "{:?}",
            listing(&dir)
        );
    }
    for tag in ["", "../x", ".hidden", "a/b"] {
        assert!(matches!(
            w.write(tag, &[row(0)]),
            Err(SinkError::InvalidName(_))
        ));
    }
}

/// Rows with awkward values for JSON: escapes, control characters, non-BMP characters,
/// non-finite and extreme floats, extreme integers and timestamps.
fn json_rows() -> Vec<Row> {
    let strings = [
        "",
        "plain",
        "quote \" backslash \\ slash /",
        "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
        "é ü 漢字 😀 \u{2028}\u{2029}",
        "</script>",
    ];
    let floats = [
        0.0,
        -0.0,
        0.1,
        36.8,
        -1.5e-300,
        1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
        1e21,
        123_456_789.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    let times = [
        0,
        -1,
        1_767_225_600_123,
        -62_167_219_200_000,
        -62_167_219_200_001,
        253_402_300_799_999,
        253_402_300_800_000,
        8_210_266_876_799_999,
        i64::MAX,
        i64::MIN,
    ];
    let mut rows = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..400u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pick = |n: usize| usize::try_from(x % n as u64).unwrap();
        let t = if i % 2 == 0 {
            times[pick(times.len())]
        } else {
            i64::from_le_bytes(x.to_le_bytes()) % 300_000_000_000_000
        };
        rows.push(Row {
            values: vec![
                Value::str(strings[pick(strings.len())]),
                Value::Timestamp(t),
                if i % 5 == 0 {
                    Value::Null
                } else {
                    Value::Int(i64::from_le_bytes(x.to_le_bytes()))
                },
                if i % 7 == 0 {
                    Value::Null
                } else if i % 3 == 0 {
                    Value::Float(f64::from_bits(x))
                } else {
                    Value::Float(floats[pick(floats.len())])
                },
                if i % 3 == 0 {
                    Value::Null
                } else {
                    Value::Bool(i % 2 == 0)
                },
                Value::str(&format!("{i}{}", strings[pick(strings.len())])),
                Value::Timestamp(i64::from_le_bytes(x.rotate_left(7).to_le_bytes())),
                Value::Int(if i % 2 == 0 { i64::MIN } else { i64::MAX }),
            ],
            sequence: i,
            tombstone: false,
            arrival_us: 0,
        });
    }
    rows
}

#[test]
fn row_json_is_serde_json_text() {
    let schema = schema();
    let mut buf = Vec::new();
    for row in json_rows() {
        buf.clear();
        write_row_json(&schema, &row, &mut buf);
        let expected = serde_json::to_vec(&schema.to_json(&row)).unwrap();
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        assert!(!buf.contains(&b'\n'));
    }
    // Any field names, in schema order.
    let odd = Schema {
        fields: vec![
            field("z \"quoted\"\n", Type::Int, true),
            field("a", Type::Timestamp, true),
        ],
        ..Schema::default()
    };
    let row = Row {
        values: vec![Value::Int(1), Value::Timestamp(1_767_225_600_000)],
        sequence: 0,
        tombstone: false,
        arrival_us: 0,
    };
    buf.clear();
    write_row_json(&odd, &row, &mut buf);
    assert_eq!(
        std::str::from_utf8(&buf).unwrap(),
        r#"{"z \"quoted\"\n":1,"a":"2026-01-01T00:00:00.000Z"}"#
    );
    let parsed: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(parsed, odd.to_json(&row));
}

#[test]
fn row_json_timestamps_match_format_timestamp() {
    let schema = Schema {
        fields: vec![field("t", Type::Timestamp, false)],
        ..Schema::default()
    };
    let mut buf = Vec::new();
    let mut check = |ms: i64| {
        buf.clear();
        let row = Row {
            values: vec![Value::Timestamp(ms)],
            sequence: 0,
            tombstone: false,
            arrival_us: 0,
        };
        write_row_json(&schema, &row, &mut buf);
        let expected = format!("{{\"t\":{}}}", serde_json::json!(format_timestamp(ms)));
        assert_eq!(std::str::from_utf8(&buf).unwrap(), expected, "{ms}");
    };
    let mut x: u64 = 1;
    for _ in 0..20_000 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let wide = i64::from_le_bytes(x.to_le_bytes());
        check(wide);
        check(wide % 400_000_000_000_000);
        check(wide % 100_000_000_000);
    }
    for ms in [
        0,
        -1,
        1,
        86_399_999,
        -86_400_000,
        -62_167_219_200_000,
        253_402_300_799_999,
    ] {
        check(ms);
    }
}

#[test]
fn raw_lines_commit_like_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = schema();
    let mut f = JsonlFile::create(tmp.path(), "part-1.jsonl", false).unwrap();
    let mut buf = Vec::new();
    for i in 0..3 {
        buf.clear();
        write_row_json(&schema, &row(i), &mut buf);
        f.write_raw_line(&buf).unwrap();
    }
    assert_eq!(f.lines(), 3);
    let path = f.commit().unwrap();
    let text = fs::read_to_string(path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1], schema.to_json(&row(1)));
    assert_eq!(lines[0]["b_ts"], "2026-01-01T00:00:00.000Z");
}
