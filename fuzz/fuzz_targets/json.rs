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
use vitalflow_model::row::Type;
use vitalflow_operators::decode::{Decoder, FieldSpec, TimeFormat};

#[path = "support/decode.rs"]
mod support;
use support::{check, field};

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

fuzz_target!(|data: &[u8]| {
    for decoder in DECODERS.iter() {
        check(decoder, decoder.decode_json(data, 7), 7);
    }
});
