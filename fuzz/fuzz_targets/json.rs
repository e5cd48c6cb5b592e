//! Fuzz target: the declared-schema JSON decoder.
//!
//! Feeds arbitrary bytes to [`Decoder::decode_json`] under three declared schemas: the flat
//! vital signs of `dataflows/vitals-flat.toml`, the patient context table of
//! `dataflows/icu-alerting.toml`, and a wide one (more keys than the decoder searches linearly,
//! nested paths, every type and timestamp format). The decoder must never panic: it returns a
//! row or an error. A row has one value per declared field, each null only where the field is
//! nullable and otherwise of the declared type; an error has a reason.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vitalflow_model::row::{Row, Type, Value};
use vitalflow_operators::decode::{DecodeError, Decoder, FieldSpec, TimeFormat};

fn field(name: &str, ty: Type, nullable: bool, time_format: TimeFormat) -> FieldSpec {
    FieldSpec {
        time_format,
        ..FieldSpec::new(name, ty, nullable)
    }
}

fn nested(name: &str, path: &[&str], ty: Type, nullable: bool) -> FieldSpec {
    FieldSpec {
        path: path.iter().map(|k| (*k).to_owned()).collect(),
        ..FieldSpec::new(name, ty, nullable)
    }
}

static DECODERS: LazyLock<Vec<Decoder>> = LazyLock::new(|| {
    use TimeFormat::{Auto, EpochMillis, EpochSeconds, Iso8601};
    use Type::{Bool, Float, Int, String, Timestamp};
    vec![
        // dataflows/vitals-flat.toml
        Decoder::new(vec![
            field("patient_id", String, false, Auto),
            field("ts", Timestamp, false, EpochMillis),
            field("ward", String, false, Auto),
            field("hr", Int, false, Auto),
            field("spo2", Int, false, Auto),
            field("rr", Int, false, Auto),
            field("temp", Float, true, Auto),
            field("sbp", Int, false, Auto),
            field("dbp", Int, false, Auto),
        ]),
        // The patient context of dataflows/icu-alerting.toml
        Decoder::new(vec![
            field("patient_id", String, false, Auto),
            field("since", Timestamp, false, EpochMillis),
            field("ward", String, false, Auto),
            field("on_oxygen", Bool, false, Auto),
            field("spo2_scale", Int, false, Auto),
        ]),
        // Wide, nested, every timestamp format.
        Decoder::new(vec![
            field("patient_id", String, false, Auto),
            field("ts", Timestamp, true, Auto),
            field("since", Timestamp, true, Iso8601),
            field("ward", String, true, Auto),
            field("hr", Float, true, Auto),
            field("spo2", Int, true, Auto),
            field("rr", Int, true, Auto),
            field("temp", Float, true, Auto),
            field("sbp", Int, true, Auto),
            field("dbp", Int, true, Auto),
            field("on_oxygen", Bool, true, Auto),
            field("spo2_scale", Int, true, Auto),
            field("at", Timestamp, true, EpochSeconds),
            nested("vitals_hr", &["vitals", "hr"], Int, true),
            nested("vitals_at", &["vitals", "at"], Timestamp, true),
            nested("device", &["meta", "device", "id"], String, true),
            nested("device_ok", &["meta", "device", "ok"], Bool, true),
        ]),
    ]
});

/// A row or an error, as the decoder promises.
fn check(decoder: &Decoder, result: Result<Row, DecodeError>, sequence: u64) {
    match result {
        Ok(row) => {
            assert_eq!(row.sequence, sequence, "the row has another sequence");
            assert_eq!(
                row.values.len(),
                decoder.fields().len(),
                "a row with a value count other than the field count"
            );
            for (spec, value) in decoder.fields().iter().zip(&row.values) {
                match value {
                    Value::Null => assert!(spec.nullable, "field `{}`: null", spec.name),
                    v => assert_eq!(v.ty(), Some(spec.ty), "field `{}`: type", spec.name),
                }
            }
        }
        Err(e) => assert!(!e.reason.is_empty(), "an error without a reason"),
    }
}

fuzz_target!(|data: &[u8]| {
    for decoder in DECODERS.iter() {
        check(decoder, decoder.decode_json(data, 7), 7);
    }
});
