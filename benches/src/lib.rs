//! What the benchmarks in `benches/` share: the declared fields of the generator's flat
//! readings and of its patient-context table, as schemas and decoders, and criterion's settings.

use std::time::Duration;

use criterion::Criterion;
use vitalflow_model::row::{Field, Phi, Schema, Type};
use vitalflow_operators::decode::{Decoder, FieldSpec, TimeFormat};

/// A declared field: name, type, nullable, PHI class.
pub type FieldDecl = (&'static str, Type, bool, Option<Phi>);

/// The generator's flat bedside-monitor readings.
pub const FLAT_FIELDS: [FieldDecl; 9] = [
    ("patient_id", Type::String, false, Some(Phi::Hash)),
    ("ts", Type::Timestamp, false, Some(Phi::Date)),
    ("ward", Type::String, false, None),
    ("hr", Type::Int, false, None),
    ("spo2", Type::Int, false, None),
    ("rr", Type::Int, false, None),
    ("temp", Type::Float, true, None),
    ("sbp", Type::Int, false, None),
    ("dbp", Type::Int, false, None),
];

/// The generator's patient-context table (ward, oxygen and SpO2 scale over time).
pub const CONTEXT_FIELDS: [FieldDecl; 5] = [
    ("patient_id", Type::String, false, Some(Phi::Hash)),
    ("since", Type::Timestamp, false, Some(Phi::Date)),
    ("ward", Type::String, false, None),
    ("on_oxygen", Type::Bool, false, None),
    ("spo2_scale", Type::Int, false, None),
];

/// The schema of `fields` (key first, event time second); with `phi`, their PHI classes too.
#[must_use]
pub fn schema_of(fields: &[FieldDecl], phi: bool) -> Schema {
    Schema {
        fields: fields
            .iter()
            .map(|(n, t, nullable, class)| Field {
                name: (*n).to_owned(),
                ty: *t,
                nullable: *nullable,
                phi: if phi { *class } else { None },
            })
            .collect(),
        time: Some(1),
        key: Some(0),
    }
}

/// A decoder of `fields`, timestamps as epoch milliseconds.
#[must_use]
pub fn decoder_of(fields: &[FieldDecl]) -> Decoder {
    Decoder::new(
        fields
            .iter()
            .map(|(n, t, nullable, _)| {
                let mut spec = FieldSpec::new(n, *t, *nullable);
                spec.time_format = TimeFormat::EpochMillis;
                spec
            })
            .collect(),
    )
}

/// Criterion's settings for every benchmark file: short runs on a 2-core machine.
#[must_use]
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}
