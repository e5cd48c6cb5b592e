//! What the flat decoders' fuzz targets (`csv`, `json`) share: declaring a field, and checking
//! that a decoder's answer is a row of its fields' types or an error with a reason.

use vitalflow_model::row::{Row, Type, Value};
use vitalflow_operators::decode::{DecodeError, Decoder, FieldSpec, TimeFormat};

/// A field of `ty` read with `time_format`.
pub fn field(name: &str, ty: Type, nullable: bool, time_format: TimeFormat) -> FieldSpec {
    FieldSpec {
        time_format,
        ..FieldSpec::new(name, ty, nullable)
    }
}

/// A row or an error, as the decoder promises.
pub fn check(decoder: &Decoder, result: Result<Row, DecodeError>, sequence: u64) {
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
