//! Tests of JSON decoding and ISO 8601 timestamps.
#![allow(clippy::unwrap_used, clippy::float_cmp)]

use vitalflow_model::row::{Type, Value};

use super::scalar::days_from_civil;
use super::*;
use crate::test_support::XorShift;

/// 2026-01-01T00:00:00Z in milliseconds.
pub(super) const JAN1: i64 = 1_767_225_600_000;

pub(super) const FLAT: &str = r#"{"patient_id":"P000123","ts":1767225600000,"hr":88,"spo2":97,"rr":16,"temp":36.8,"sbp":121,"ward":"ICU"}"#;

pub(super) fn spec(name: &str, ty: Type, nullable: bool) -> FieldSpec {
    FieldSpec::new(name, ty, nullable)
}

pub(super) fn ts(name: &str, format: TimeFormat) -> FieldSpec {
    FieldSpec {
        time_format: format,
        ..spec(name, Type::Timestamp, false)
    }
}

pub(super) fn flat_decoder() -> Decoder {
    Decoder::new(vec![
        spec("patient_id", Type::String, false),
        ts("ts", TimeFormat::EpochMillis),
        spec("hr", Type::Int, false),
        spec("spo2", Type::Int, false),
        spec("rr", Type::Int, false),
        spec("temp", Type::Float, true),
        spec("sbp", Type::Int, false),
        spec("ward", Type::String, false),
    ])
}

/// Decodes `json` with one field `x` of `field`, returning the value or the displayed error.
fn one(field: FieldSpec, json: &str) -> Result<Value, String> {
    let d = Decoder::new(vec![field]);
    d.decode_json(json.as_bytes(), 0)
        .map(|r| r.values[0].clone())
        .map_err(|e| e.to_string())
}

#[test]
fn decoder_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Decoder>();
}

#[test]
fn decodes_a_flat_line() {
    let row = flat_decoder().decode_json(FLAT.as_bytes(), 42).unwrap();
    assert_eq!(row.sequence, 42);
    assert_eq!(
        row.values,
        vec![
            Value::str("P000123"),
            Value::Timestamp(JAN1),
            Value::Int(88),
            Value::Int(97),
            Value::Int(16),
            Value::Float(36.8),
            Value::Int(121),
            Value::str("ICU"),
        ]
    );
}

#[test]
fn keys_in_any_order_unknown_keys_and_duplicates() {
    let d = flat_decoder();
    let json = r#" { "ward":"ICU","extra":{"a":[1,{"b":null}],"hr":"x"},"sbp":121,"temp":null,
        "rr":16,"spo2":97,"hr":1,"hr":88,"ts":1767225600000,"patient_id":"P\u0030001" } "#;
    let row = d.decode_json(json.as_bytes(), 0).unwrap();
    assert_eq!(row.values[0], Value::str("P0001"));
    assert_eq!(row.values[2], Value::Int(88), "the last duplicate wins");
    assert_eq!(row.values[5], Value::Null);
    // An escaped key matches too.
    assert_eq!(
        one(spec("hr", Type::Int, false), r#"{"h\u0072":5}"#),
        Ok(Value::Int(5))
    );
}

#[test]
fn integers() {
    let f = || spec("x", Type::Int, false);
    assert_eq!(one(f(), r#"{"x":-7}"#), Ok(Value::Int(-7)));
    assert_eq!(one(f(), r#"{"x":88.0}"#), Ok(Value::Int(88)));
    assert_eq!(one(f(), r#"{"x":1e3}"#), Ok(Value::Int(1000)));
    assert_eq!(
        one(f(), r#"{"x":9223372036854775807}"#),
        Ok(Value::Int(i64::MAX))
    );
    let err = |json: &str, found: &str| {
        assert_eq!(
            one(f(), json),
            Err(format!("field `x`: expected integer, found {found}"))
        );
    };
    err(r#"{"x":88.5}"#, "a number with a fraction");
    err(r#"{"x":9223372036854775808}"#, "an integer out of range");
    err(r#"{"x":1e19}"#, "a number out of range");
    err(r#"{"x":"88"}"#, "a string");
    err(r#"{"x":true}"#, "a boolean");
    err(r#"{"x":[88]}"#, "an array");
    err(r#"{"x":{"v":88}}"#, "an object");
}

#[test]
fn floats_strings_booleans() {
    let float = || spec("x", Type::Float, false);
    assert_eq!(one(float(), r#"{"x":36.8}"#), Ok(Value::Float(36.8)));
    assert_eq!(one(float(), r#"{"x":-3}"#), Ok(Value::Float(-3.0)));
    assert_eq!(
        one(float(), r#"{"x":18446744073709551615}"#),
        Ok(Value::Float(18_446_744_073_709_551_615.0))
    );
    assert_eq!(
        one(float(), r#"{"x":"36.8"}"#),
        Err("field `x`: expected float, found a string".to_owned())
    );
    let string = || spec("x", Type::String, false);
    assert_eq!(
        one(string(), r#"{"x":"a \"b\" \u00e9 \n"}"#),
        Ok(Value::str("a \"b\" é \n"))
    );
    assert_eq!(
        one(string(), r#"{"x":12}"#),
        Err("field `x`: expected string, found a number".to_owned())
    );
    let boolean = || spec("x", Type::Bool, false);
    assert_eq!(one(boolean(), r#"{"x":false}"#), Ok(Value::Bool(false)));
    for bad in [r#"{"x":"true"}"#, r#"{"x":1}"#] {
        assert!(
            one(boolean(), bad)
                .unwrap_err()
                .starts_with("field `x`: expected boolean")
        );
    }
}

#[test]
fn timestamps_in_json() {
    let ms = |f, json: &str| one(ts("t", f), json);
    assert_eq!(
        ms(TimeFormat::EpochMillis, r#"{"t":1767225600000}"#),
        Ok(Value::Timestamp(JAN1))
    );
    assert_eq!(
        ms(TimeFormat::EpochMillis, r#"{"t":1767225600000.6}"#),
        Ok(Value::Timestamp(JAN1 + 1))
    );
    assert_eq!(
        ms(TimeFormat::EpochSeconds, r#"{"t":1767225600}"#),
        Ok(Value::Timestamp(JAN1))
    );
    assert_eq!(
        ms(TimeFormat::EpochSeconds, r#"{"t":1767225600.25}"#),
        Ok(Value::Timestamp(JAN1 + 250))
    );
    assert_eq!(
        ms(
            TimeFormat::Iso8601,
            r#"{"t":"2026-01-01T01:00:00.5+01:00"}"#
        ),
        Ok(Value::Timestamp(JAN1 + 500))
    );
    assert_eq!(
        ms(TimeFormat::Iso8601, r#"{"t":"2026-01-01"}"#),
        Ok(Value::Timestamp(JAN1))
    );
    assert_eq!(
        ms(TimeFormat::Auto, r#"{"t":1767225600000}"#),
        Ok(Value::Timestamp(JAN1))
    );
    assert_eq!(
        ms(TimeFormat::Auto, r#"{"t":"2026-01-01T00:00:00Z"}"#),
        Ok(Value::Timestamp(JAN1))
    );
    let err = |f, json: &str, msg: &str| assert_eq!(ms(f, json), Err(format!("field `t`: {msg}")));
    err(
        TimeFormat::Iso8601,
        r#"{"t":1767225600000}"#,
        "expected timestamp (ISO 8601 text), found a number",
    );
    err(
        TimeFormat::EpochMillis,
        r#"{"t":"2026-01-01"}"#,
        "expected timestamp (epoch milliseconds), found a string",
    );
    err(
        TimeFormat::EpochSeconds,
        r#"{"t":9223372036854775807}"#,
        "expected timestamp (epoch seconds), found a number out of range",
    );
    err(
        TimeFormat::Auto,
        r#"{"t":"2026-02-30"}"#,
        "expected timestamp (epoch milliseconds or ISO 8601 text), found a string that is not an \
         ISO 8601 date or date-time",
    );
    err(
        TimeFormat::Auto,
        r#"{"t":true}"#,
        "expected timestamp (epoch milliseconds or ISO 8601 text), found a boolean",
    );
}

#[test]
fn iso8601_shapes() {
    let p = parse_iso8601;
    assert_eq!(p("2026-01-01T00:00:00Z"), Some(JAN1));
    assert_eq!(p(" 2026-01-01t00:00:00z "), Some(JAN1));
    assert_eq!(p("2026-01-01 00:00:00"), Some(JAN1));
    assert_eq!(p("2026-01-01T00:00:00.123456"), Some(JAN1 + 123));
    assert_eq!(p("2026-01-01T00:00:00.1"), Some(JAN1 + 100));
    assert_eq!(p("2025-12-31T19:00:00-05:00"), Some(JAN1));
    assert_eq!(p("1969-12-31T23:59:59.999Z"), Some(-1));
    assert_eq!(
        p("2024-02-29"),
        Some(days_from_civil(2024, 2, 29) * 86_400_000)
    );
    for bad in [
        "",
        "2026",
        "2026-01",
        "2026-1-01",
        "2026-13-01",
        "2026-00-10",
        "2025-02-29",
        "2026-01-01T",
        "2026-01-01T24:00:00",
        "2026-01-01T00:60:00",
        "2026-01-01T00:00",
        "2026-01-01T00:00:00.",
        "2026-01-01T00:00:00+0100",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00Zjunk",
        "2026-01-01X00:00:00",
        "+2026-01-01",
        "２０２６-01-01",
    ] {
        assert_eq!(p(bad), None, "{bad:?}");
    }
}

#[test]
fn iso8601_agrees_with_chrono() {
    let mut rng = XorShift(0x5eed);
    for _ in 0..5000 {
        let ms = i64::try_from(rng.next_u64() % 253_402_300_800_000).unwrap(); // years 1970..=9999
        let ms = if rng.below(2) == 0 {
            ms
        } else {
            -ms.min(62_135_596_800_000)
        };
        let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let text = t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        assert_eq!(parse_iso8601(&text), Some(ms), "{text}");
        let offset = t
            .with_timezone(&chrono::FixedOffset::west_opt(3 * 3600 + 1800).unwrap())
            .to_rfc3339();
        assert_eq!(parse_iso8601(&offset), Some(ms), "{offset}");
    }
}

#[test]
fn missing_and_null_fields() {
    let d = Decoder::new(vec![
        spec("a", Type::Int, true),
        spec("b", Type::Int, false),
    ]);
    let row = d.decode_json(br#"{"b":1}"#, 0).unwrap();
    assert_eq!(row.values, vec![Value::Null, Value::Int(1)]);
    let row = d.decode_json(br#"{"a":null,"b":1}"#, 0).unwrap();
    assert_eq!(row.values, vec![Value::Null, Value::Int(1)]);
    let e = d.decode_json(br#"{"a":1}"#, 0).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("b"));
    assert_eq!(e.to_string(), "field `b` is missing and not nullable");
    let e = d.decode_json(br#"{"a":1,"b":null}"#, 0).unwrap_err();
    assert_eq!(e.to_string(), "field `b` is null and not nullable");
}

#[test]
fn nested_paths() {
    let at = |name: &str, path: &[&str], ty, nullable| FieldSpec {
        path: path.iter().map(|s| (*s).to_owned()).collect(),
        ..spec(name, ty, nullable)
    };
    let d = Decoder::new(vec![
        at("hr", &["vitals", "hr"], Type::Int, false),
        at("spo2", &["vitals", "spo2"], Type::Int, true),
        at("unit", &["meta", "device", "unit"], Type::String, true),
        at("id", &[], Type::String, false),
        at("hr_again", &["vitals", "hr"], Type::Float, false),
    ]);
    let json = br#"{"id":"P1","meta":{"device":{"unit":"ICU-3","x":1},"y":[1]},
                    "vitals":{"spo2":97,"other":{"hr":1},"hr":88}}"#;
    let row = d.decode_json(json, 0).unwrap();
    assert_eq!(
        row.values,
        vec![
            Value::Int(88),
            Value::Int(97),
            Value::str("ICU-3"),
            Value::str("P1"),
            Value::Float(88.0)
        ]
    );
    // A parent that is not an object leaves the fields below it missing.
    for json in [
        r#"{"id":"P1","vitals":{"hr":70},"meta":5}"#,
        r#"{"id":"P1","vitals":{"hr":70},"meta":null}"#,
        r#"{"id":"P1","vitals":{"hr":70},"meta":[{"device":{"unit":"u"}}]}"#,
    ] {
        let row = d.decode_json(json.as_bytes(), 0).unwrap();
        assert_eq!(row.values[2], Value::Null, "{json}");
    }
    let e = d
        .decode_json(br#"{"id":"P1","vitals":{"spo2":1}}"#, 0)
        .unwrap_err();
    assert_eq!(e.to_string(), "field `hr` is missing and not nullable");
    let e = d
        .decode_json(br#"{"id":"P1","vitals":{"hr":"x"}}"#, 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "field `hr`: expected integer, found a string"
    );
    let e = d.decode_json(br#"{"id":"P1","vitals":7}"#, 0).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("hr"));
    // A path that is also the prefix of another: an object goes down, a scalar is the value.
    let d = Decoder::new(vec![
        at("v", &["v"], Type::String, true),
        at("w", &["v", "w"], Type::Int, true),
    ]);
    let row = d.decode_json(br#"{"v":"text"}"#, 0).unwrap();
    assert_eq!(row.values, vec![Value::str("text"), Value::Null]);
    let e = d.decode_json(br#"{"v":{"w":1}}"#, 0).unwrap_err();
    assert_eq!(e.to_string(), "field `v`: expected string, found an object");
}

#[test]
fn many_keys_use_the_sorted_index() {
    let fields: Vec<FieldSpec> = (0..40)
        .map(|i| spec(&format!("k{i:02}"), Type::Int, false))
        .collect();
    let d = Decoder::new(fields);
    let mut keys: Vec<String> = (0..40).rev().map(|i| format!("\"k{i:02}\":{i}")).collect();
    keys.insert(7, "\"zz\":0,\"a\":{\"k01\":1}".to_owned());
    let json = format!("{{{}}}", keys.join(","));
    let row = d.decode_json(json.as_bytes(), 0).unwrap();
    assert_eq!(row.values, (0..40).map(Value::Int).collect::<Vec<_>>());
}

#[test]
fn malformed_json_names_no_field_and_no_content() {
    let d = flat_decoder();
    for (json, want) in [
        (&b"[1,2]"[..], "expected a JSON object, found an array"),
        (b"\"P000123\"", "expected a JSON object, found a string"),
        (b"12", "expected a JSON object, found a number"),
        (b"null", "expected a JSON object, found null"),
        (b"true", "expected a JSON object, found a boolean"),
    ] {
        let e = d.decode_json(json, 0).unwrap_err();
        assert_eq!((e.field.as_deref(), e.reason.as_str()), (None, want));
    }
    let secret = "SECRET-Jane-Doe";
    for json in [
        format!(r#"{{"patient_id":"{secret}","hr":"#),
        format!(r#"{{"patient_id":"{secret}"}} {secret}"#),
        format!(r#"{{"patient_id":{secret}}}"#),
        format!(r#"{{"patient_id":"{secret}","hr":"{secret}"}}"#),
        format!(r#"{{"patient_id":"{secret}","hr":{secret}}}"#),
        format!(r#"{{"{secret}":1,"#),
        format!(r#"{{{secret}}}"#),
        format!("\"{secret}\""),
    ] {
        let e = d.decode_json(json.as_bytes(), 0).unwrap_err().to_string();
        assert!(!e.contains("SECRET"), "{e}");
        assert!(!e.is_empty());
    }
    let e = d.decode_json(b"{\"hr\":88,\n \"ward\": ", 0).unwrap_err();
    assert_eq!(e.field, None);
    assert!(e.reason.contains("line 2 column"), "{e}");
    let e = d.decode_json(b"{\"ward\":\n\"I\xffCU\"}", 0).unwrap_err();
    assert_eq!(e.reason, "invalid UTF-8 at line 2 column 3");
    let e = d.decode_json(b"", 0).unwrap_err();
    assert!(e.reason.starts_with("invalid JSON: EOF"), "{e}");
}
