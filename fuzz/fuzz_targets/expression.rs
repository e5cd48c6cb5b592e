//! Fuzz target: the expression compiler.
//!
//! Feeds arbitrary bytes, as UTF-8 text (invalid sequences replaced: expressions come from
//! TOML strings), to [`expression::compile`] against a fixed schema (the flat vital signs joined
//! to a patient's context, a field whose name needs backquotes), and evaluates each expression
//! that compiles on a few rows: typical values, nulls everywhere, and extremes. Nothing may
//! panic: the compiler returns an expression or errors, each with a message and a span that is
//! a range of the text on character boundaries, or the byte just past its end (job file
//! diagnostics underline it); evaluation returns a value or an error (division by zero,
//! overflow, a failed cast).
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use vitalflow_model::row::{Field, Schema, Type, Value};
use vitalflow_operators::expression;

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let field = |name: &str, ty| Field {
        name: name.to_owned(),
        ty,
        nullable: true,
        phi: None,
    };
    Schema {
        fields: vec![
            field("patient_id", Type::String),
            field("ts", Type::Timestamp),
            field("ward", Type::String),
            field("hr", Type::Int),
            field("spo2", Type::Int),
            field("rr", Type::Int),
            field("temp", Type::Float),
            field("sbp", Type::Int),
            field("dbp", Type::Int),
            field("on_oxygen", Type::Bool),
            field("spo2_scale", Type::Int),
            field("since", Type::Timestamp),
            field("vitals.hr", Type::Int),
        ],
        time: Some(1),
        key: Some(0),
    }
});

/// Rows to evaluate on, in the schema's field order.
static ROWS: LazyLock<Vec<Vec<Value>>> = LazyLock::new(|| {
    let s = |v: &str| Value::Str(Arc::from(v));
    vec![
        vec![
            s("P677985307"),
            Value::Timestamp(1_767_225_650_000),
            s("WARD-B"),
            Value::Int(63),
            Value::Int(97),
            Value::Int(13),
            Value::Float(37.0),
            Value::Int(139),
            Value::Int(65),
            Value::Bool(false),
            Value::Int(1),
            Value::Timestamp(1_767_222_000_000),
            Value::Int(63),
        ],
        vec![Value::Null; 13],
        vec![
            s(""),
            Value::Timestamp(i64::MIN),
            s("ÄÖ\u{1F600}"),
            Value::Int(i64::MAX),
            Value::Int(0),
            Value::Int(-1),
            Value::Float(f64::NAN),
            Value::Int(i64::MIN),
            Value::Int(0),
            Value::Bool(true),
            Value::Int(2),
            Value::Timestamp(i64::MAX),
            Value::Int(-1),
        ],
    ]
});

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    match expression::compile(&source, &SCHEMA) {
        Ok(compiled) => {
            for row in ROWS.iter() {
                let _ = compiled.eval(row);
            }
        }
        Err(errors) => {
            assert!(
                !errors.is_empty(),
                "an expression rejected without an error"
            );
            for e in &errors {
                assert!(!e.message.is_empty(), "an error without a message");
                // At the end of the text, the parser points just past it.
                let (start, end) = (e.span.start, e.span.end);
                assert!(
                    start <= end
                        && source.is_char_boundary(start)
                        && (source.is_char_boundary(end) || end == source.len() + 1),
                    "error span {start}..{end} is not a range of the {}-byte text on character \
                     boundaries",
                    source.len()
                );
            }
        }
    }
});
