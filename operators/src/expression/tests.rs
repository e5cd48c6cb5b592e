#![allow(clippy::unwrap_used)]

use vitalflow_model::row::{Field, Schema, Type, Value};

use super::{ExprError, compile};

fn schema() -> Schema {
    let f = |name: &str, ty, nullable| Field {
        name: name.into(),
        ty,
        nullable,
        phi: None,
    };
    Schema {
        fields: vec![
            f("patient_id", Type::String, false),
            f("ts", Type::Timestamp, false),
            f("hr", Type::Int, false),
            f("spo2", Type::Int, false),
            f("rr", Type::Int, false),
            f("temp", Type::Float, true),
            f("sbp", Type::Int, false),
            f("ward", Type::String, true),
            f("ok", Type::Bool, true),
            f("odd name", Type::Int, true),
        ],
        time: Some(1),
        key: Some(0),
    }
}

/// 2026-01-01T13:45:30.250Z, a Thursday.
const TS: i64 = 1_767_275_130_250;

fn row() -> Vec<Value> {
    vec![
        Value::str("P000123"),
        Value::Timestamp(TS),
        Value::Int(88),
        Value::Int(97),
        Value::Int(16),
        Value::Float(36.8),
        Value::Int(121),
        Value::Null,
        Value::Bool(true),
        Value::Int(5),
    ]
}

fn eval(src: &str) -> Value {
    compile(src, &schema())
        .unwrap_or_else(|e| panic!("{src}: {e:?}"))
        .eval(&row())
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn errors(src: &str) -> Vec<ExprError> {
    compile(src, &schema())
        .err()
        .unwrap_or_else(|| panic!("{src} compiled"))
}

#[test]
fn arithmetic_and_precedence() {
    assert_eq!(eval("1 + 2 * 3"), Value::Int(7));
    assert_eq!(eval("(1 + 2) * 3"), Value::Int(9));
    assert_eq!(eval("7 / 2"), Value::Int(3));
    assert_eq!(eval("-7 / 2"), Value::Int(-3));
    assert_eq!(eval("7 % 4"), Value::Int(3));
    assert_eq!(eval("7 / 2.0"), Value::Float(3.5));
    assert_eq!(eval("hr - -2"), Value::Int(90));
    assert_eq!(eval("2e3"), Value::Float(2000.0));
    assert_eq!(eval("5m + 1s"), Value::Int(301_000));
    assert_eq!(eval("1 + 2 = 3 and not 2 > 3"), Value::Bool(true));
    assert_eq!(eval("'a' || 'b' || hr"), Value::str("ab88"));
}

#[test]
fn the_score_expression_matches_plain_rust() {
    let src = "(if hr > 130 then 3 else 0) + (if spo2 <= 91 then 3 else 0) \
               + (if rr >= 25 then 3 else 0) + (if temp < 35.0 then 3 else 0)";
    let c = compile(src, &schema()).unwrap();
    assert_eq!(c.ty(), Some(Type::Int));
    assert_eq!(c.fields(), &[2, 3, 4, 5]);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: i64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        i64::try_from(state % 1000).unwrap() % n
    };
    for _ in 0..5000 {
        let (hr, spo2, rr) = (40 + next(120), 80 + next(21), 5 + next(30));
        let temp = if next(10) == 0 {
            None
        } else {
            Some(33.0 + f64::from(i32::try_from(next(70)).unwrap()) / 10.0)
        };
        let mut r = row();
        r[2] = Value::Int(hr);
        r[3] = Value::Int(spo2);
        r[4] = Value::Int(rr);
        r[5] = temp.map_or(Value::Null, Value::Float);
        // A null temperature makes the `if` condition null: the else branch (0).
        let expected = (if hr > 130 { 3 } else { 0 })
            + (if spo2 <= 91 { 3 } else { 0 })
            + (if rr >= 25 { 3 } else { 0 })
            + (if temp.is_some_and(|t| t < 35.0) { 3 } else { 0 });
        assert_eq!(c.eval(&r).unwrap(), Value::Int(expected), "{r:?}");
    }
}

#[test]
fn nulls_follow_sql() {
    assert_eq!(eval("ward = 'ICU'"), Value::Null);
    assert_eq!(eval("ward is null"), Value::Bool(true));
    assert_eq!(eval("ward is not null"), Value::Bool(false));
    assert_eq!(eval("hr + null"), Value::Null);
    assert_eq!(eval("coalesce(ward, 'unknown')"), Value::str("unknown"));
    assert_eq!(eval("if ward = 'ICU' then 1 else 2"), Value::Int(2));
    // Kleene logic.
    let n = "(ward = 'x')";
    for (src, want) in [
        (format!("{n} and false"), Value::Bool(false)),
        (format!("{n} and true"), Value::Null),
        (format!("{n} or true"), Value::Bool(true)),
        (format!("{n} or false"), Value::Null),
        (format!("not {n}"), Value::Null),
    ] {
        assert_eq!(eval(&src), want, "{src}");
    }
    let c = compile("ward = 'ICU'", &schema()).unwrap();
    assert!(c.nullable());
    assert!(!c.eval_bool(&row()).unwrap(), "null is not true");
    assert!(!compile("hr > 3", &schema()).unwrap().nullable());
}

#[test]
fn in_between_and_case() {
    assert_eq!(eval("hr in (87, 88)"), Value::Bool(true));
    assert_eq!(eval("hr not in (1, 2)"), Value::Bool(true));
    assert_eq!(eval("hr in (1, null)"), Value::Null);
    assert_eq!(eval("hr between 80 and 88"), Value::Bool(true));
    assert_eq!(eval("hr not between 80 and 88"), Value::Bool(false));
    assert_eq!(
        eval("case when hr > 100 then 'high' when hr > 80 then 'raised' else 'ok' end"),
        Value::str("raised")
    );
    assert_eq!(eval("case when hr > 100 then 1 end"), Value::Null);
    assert_eq!(eval("if ok then 1 else 2.5"), Value::Float(1.0));
    assert_eq!(eval("`odd name` * 2"), Value::Int(10));
}

#[test]
fn string_functions() {
    assert_eq!(eval("lower('AbC')"), Value::str("abc"));
    assert_eq!(eval("upper(patient_id)"), Value::str("P000123"));
    assert_eq!(eval("trim('  x ')"), Value::str("x"));
    assert_eq!(eval("length('héllo')"), Value::Int(5));
    assert_eq!(
        eval("concat(patient_id, '-', hr, ward)"),
        Value::str("P000123-88")
    );
    assert_eq!(eval("substring('abcdef', 2, 3)"), Value::str("bcd"));
    assert_eq!(eval("substring('abcdef', 4)"), Value::str("def"));
    assert_eq!(eval("substring('abcdef', 0, 2)"), Value::str("a"));
    assert_eq!(eval("starts_with(patient_id, 'P0')"), Value::Bool(true));
    assert_eq!(eval("ends_with(patient_id, '3')"), Value::Bool(true));
    assert_eq!(eval("contains(patient_id, '0012')"), Value::Bool(true));
    assert_eq!(eval("replace('a-b-c', '-', '+')"), Value::str("a+b+c"));
    assert_eq!(
        eval("matches(patient_id, '^P[0-9]{6}$')"),
        Value::Bool(true)
    );
    assert_eq!(eval("matches(patient_id, '^Q')"), Value::Bool(false));
    assert_eq!(eval("'it''s'"), Value::str("it's"));
}

#[test]
fn numeric_functions() {
    assert_eq!(eval("abs(-3)"), Value::Int(3));
    assert_eq!(eval("abs(-2.5)"), Value::Float(2.5));
    assert_eq!(eval("round(36.86, 1)"), Value::Float(36.9));
    assert_eq!(eval("round(2.5)"), Value::Float(3.0));
    assert_eq!(eval("floor(temp)"), Value::Float(36.0));
    assert_eq!(eval("ceil(temp)"), Value::Float(37.0));
    assert_eq!(eval("least(3, hr, 1.5)"), Value::Float(1.5));
    assert_eq!(eval("greatest(3, hr)"), Value::Int(88));
    assert_eq!(eval("nullif(hr, 88)"), Value::Null);
}

#[test]
fn time_functions() {
    assert_eq!(eval("year(ts)"), Value::Int(2026));
    assert_eq!(eval("month(ts)"), Value::Int(1));
    assert_eq!(eval("day(ts)"), Value::Int(1));
    assert_eq!(eval("hour(ts)"), Value::Int(13));
    assert_eq!(eval("minute(ts)"), Value::Int(45));
    assert_eq!(eval("second(ts)"), Value::Int(30));
    assert_eq!(eval("dow(ts)"), Value::Int(4));
    let hour = 1_767_272_400_000;
    assert_eq!(eval("trunc(ts, 'hour')"), Value::Timestamp(hour));
    assert_eq!(
        eval("trunc(ts, 'day')"),
        Value::Timestamp(1_767_225_600_000)
    );
    // The ISO week of 2026-01-01 starts on Monday 2025-12-29.
    assert_eq!(
        eval("trunc(ts, 'week')"),
        Value::Timestamp(1_766_966_400_000)
    );
    assert_eq!(
        eval("trunc(ts, 'month')"),
        Value::Timestamp(1_767_225_600_000)
    );
    assert_eq!(eval("ts - trunc(ts, 'hour')"), Value::Int(TS - hour));
    assert_eq!(
        eval("diff('minute', trunc(ts, 'hour'), ts)"),
        Value::Int(45)
    );
    assert_eq!(eval("ts + 1h > ts"), Value::Bool(true));
    assert_eq!(eval("epoch_ms(ts)"), Value::Int(TS));
    assert_eq!(eval("timestamp_ms(0)"), Value::Timestamp(0));
}

#[test]
fn casts() {
    assert_eq!(eval("cast('42' as integer)"), Value::Int(42));
    assert_eq!(eval("'2.5'::float"), Value::Float(2.5));
    assert_eq!(eval("cast(hr as string)"), Value::str("88"));
    assert_eq!(
        eval("cast(ts as string)"),
        Value::str("2026-01-01T13:45:30.250Z")
    );
    assert_eq!(
        eval("cast('2026-01-01T13:45:30.250Z' as timestamp)"),
        Value::Timestamp(TS)
    );
    assert_eq!(eval("cast(temp as int)"), Value::Int(36));
    assert_eq!(eval("cast('yes' as boolean)"), Value::Bool(true));
    assert_eq!(eval("try_cast('x' as integer)"), Value::Null);
    let c = compile("cast(patient_id as integer)", &schema()).unwrap();
    let e = c.eval(&row()).unwrap_err();
    assert_eq!(e.message, "cannot cast string to integer");
    assert!(!e.message.contains("P000123"), "no values in errors");
}

#[test]
fn runtime_errors_name_the_operation_not_the_values() {
    let c = compile("hr / (spo2 - 97)", &schema()).unwrap();
    assert_eq!(
        c.eval(&row()).unwrap_err().message,
        "division by zero in `/`"
    );
    let c = compile("hr * 9223372036854775807", &schema()).unwrap();
    assert_eq!(
        c.eval(&row()).unwrap_err().message,
        "integer overflow in `*`"
    );
    assert_eq!(eval("temp / 0.5"), Value::Float(73.6));
}

#[test]
fn errors_point_at_their_place() {
    let e = errors("hrr > 130");
    assert_eq!(e[0].span, 0..3);
    assert!(
        e[0].message.contains("unknown field `hrr`"),
        "{}",
        e[0].message
    );
    assert!(
        e[0].message.contains("did you mean `hr`"),
        "{}",
        e[0].message
    );

    let e = errors("'abc' > 3");
    assert_eq!(e[0].span, 0..9);
    assert_eq!(e[0].message, "cannot compare string with integer (`>`)");

    let e = errors("spo2 < < 90");
    assert_eq!(e[0].span, 7..8);
    assert!(
        e[0].message.starts_with("expected a value"),
        "{}",
        e[0].message
    );

    let e = errors("hr > ");
    assert_eq!(e[0].span, 4..5);
    assert!(
        e[0].message.contains("end of the expression"),
        "{}",
        e[0].message
    );

    let e = errors("bogus(hr)");
    assert!(
        e[0].message.starts_with("unknown function `bogus`"),
        "{}",
        e[0].message
    );
    let e = errors("lower(patient_id, 'x')");
    assert_eq!(e[0].message, "`lower` takes 1 argument(s), not 2");
    let e = errors("matches(patient_id, '(')");
    assert_eq!(e[0].span, 20..23);
    let e = errors("if hr then 1 else 2");
    assert!(e[0].message.contains("boolean"), "{}", e[0].message);
    let e = errors("if ok then 1 else 'x'");
    assert!(e[0].message.contains("different types"), "{}", e[0].message);
    let e = errors("trunc(ts, 'fortnight')");
    assert!(
        e[0].message.contains("unknown time unit"),
        "{}",
        e[0].message
    );
    let e = errors("'unterminated");
    assert!(e[0].message.contains("unterminated"), "{}", e[0].message);

    // Every type error is reported, not just the first.
    assert_eq!(errors("(ward > 1) or (hr = 'x') or nope").len(), 3);
}

#[test]
fn arbitrary_input_never_panics() {
    let atoms = [
        "hr",
        "(",
        ")",
        "+",
        "-",
        "*",
        "/",
        "'",
        "\"",
        "`",
        "if",
        "then",
        "else",
        "case",
        "when",
        "end",
        "and",
        "or",
        "not",
        "is",
        "null",
        "in",
        "between",
        "::",
        "int",
        "1",
        "2.5",
        "1e",
        "5m",
        ",",
        "coalesce(",
        "cast(",
        "as",
        "trunc(ts,",
        "'hour')",
        "=",
        "<",
        "é",
        "\u{0}",
        "9223372036854775808",
        "matches(ward, '[')",
        "substring(",
        "ward",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..5000 {
        let mut s = String::new();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = 1 + (state % 9) as usize;
        for k in 0..n {
            let pick = (state.rotate_left(k as u32 * 7) % atoms.len() as u64) as usize;
            s.push_str(atoms[pick]);
            s.push(' ');
        }
        if let Ok(c) = compile(&s, &schema()) {
            let _ = c.eval(&row());
        }
        // Random bytes too.
        let bytes: Vec<u8> = (0..n * 3).map(|i| (state >> (i % 8 * 8)) as u8).collect();
        let _ = compile(&String::from_utf8_lossy(&bytes), &schema());
    }
}

#[test]
fn news2_functions_score_as_the_alert_node() {
    use crate::alert::news2::{Observations, Spo2Scale, score};
    // The chart's bands at their edges, for the expression and the alert node's scorer alike.
    assert_eq!(eval("news2_pulse(40)"), Value::Int(3));
    assert_eq!(eval("news2_pulse(41)"), Value::Int(1));
    assert_eq!(eval("news2_pulse(131)"), Value::Int(3));
    assert_eq!(eval("news2_respiration_rate(8)"), Value::Int(3));
    assert_eq!(eval("news2_spo2(92)"), Value::Int(2));
    assert_eq!(eval("news2_spo2(97, true, true)"), Value::Int(3));
    assert_eq!(eval("news2_spo2(97, true, false)"), Value::Int(0));
    assert_eq!(eval("news2_air_or_oxygen(true)"), Value::Int(2));
    assert_eq!(eval("news2_systolic(220)"), Value::Int(3));
    assert_eq!(eval("news2_consciousness('V')"), Value::Int(3));
    assert_eq!(eval("news2_temperature(39.1)"), Value::Int(2));
    assert_eq!(eval("news2_pulse(null)"), Value::Null);

    let schema = schema();
    let total = compile("news2(rr, spo2, ok, false, sbp, hr, 'A', temp)", &schema).unwrap();
    assert_eq!(total.ty(), Some(Type::Int));
    let level = compile(
        "news2_level(rr, spo2, ok, false, sbp, hr, 'A', temp)",
        &schema,
    )
    .unwrap();
    let mut checked = 0;
    for hr in [30, 40, 41, 50, 51, 90, 91, 110, 111, 130, 131] {
        for spo2 in [85, 91, 92, 93, 94, 95, 96] {
            for rr in [8, 9, 11, 12, 20, 21, 24, 25] {
                for (sbp, temp) in [
                    (90, 35.0),
                    (100, 35.1),
                    (110, 36.0),
                    (150, 38.1),
                    (220, 39.1),
                ] {
                    let mut r = row();
                    r[2] = Value::Int(hr);
                    r[3] = Value::Int(spo2);
                    r[4] = Value::Int(rr);
                    r[5] = Value::Float(temp);
                    r[6] = Value::Int(sbp);
                    let expected = score(
                        &Observations {
                            respiration_rate: Some(rr as f64),
                            spo2: Some(spo2 as f64),
                            on_oxygen: Some(true),
                            systolic_bp: Some(sbp as f64),
                            pulse: Some(hr as f64),
                            consciousness: Some(crate::alert::news2::Acvpu::Alert),
                            temperature: Some(temp),
                        },
                        Spo2Scale::One,
                    );
                    assert_eq!(
                        total.eval(&r).unwrap(),
                        Value::Int(i64::from(expected.total)),
                        "hr {hr} spo2 {spo2} rr {rr} sbp {sbp} temp {temp}"
                    );
                    assert_eq!(
                        level.eval(&r).unwrap(),
                        Value::str(crate::alert::monitor::level_name(expected.level))
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 11 * 7 * 8 * 5);
}

#[test]
fn news2_reports_missing_parameters_and_scale() {
    // Nulls are missing parameters: the score is that of the ones present.
    assert_eq!(
        eval("news2(rr, spo2, null, null, sbp, 40, null, null)"),
        Value::Int(3)
    );
    assert_eq!(
        eval("news2_missing(rr, spo2, null, null, sbp, hr, null, temp)"),
        Value::str("air-or-oxygen,consciousness,spo2-scale")
    );
    assert_eq!(
        eval("news2_missing(rr, spo2, false, false, sbp, hr, 'alert', temp)"),
        Value::str("")
    );
    assert_eq!(
        eval("news2(null, null, null, true, null, null, null, null)"),
        Value::Null
    );
    assert_eq!(
        eval("news2_level(rr, spo2, null, null, sbp, 40, null, null)"),
        Value::str("low-medium")
    );
    // Text that is not ACVPU fails the row, without the value in the message.
    let c = compile("news2_consciousness(ward)", &schema()).unwrap();
    let mut r = row();
    r[7] = Value::str("sleepy");
    let e = c.eval(&r).unwrap_err();
    assert!(e.message.contains("not one of A, C, V, P, U"), "{e}");
    assert!(!e.message.contains("sleepy"), "{e}");
    // Types and arity are checked when the job is validated.
    let e = errors("news2_air_or_oxygen(hr)");
    assert!(e[0].message.contains("must be a boolean"), "{e:?}");
    let e = errors("news2(rr, spo2)");
    assert!(e[0].message.contains("takes 8 argument(s), not 2"), "{e:?}");
}
