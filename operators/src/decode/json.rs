//! One JSON object to row values, in a single pass over the text.
//!
//! The object is read with `serde_json`'s streaming deserializer: each key is looked up in the
//! decoder's table of declared paths ([`Node`]); a matching value is converted straight into
//! its field's [`Value`], a nested object on a declared path is walked the same way, and
//! everything else is skipped with [`IgnoredAny`]. No `serde_json::Value` is built.
//!
//! A field error is kept aside and the parse aborted with an empty custom error, so that no
//! message from a `Deserialize` implementation (which may quote the input) reaches a reason.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use vitalflow_model::row::Value;

use super::scalar::{Scalar, from_json};
use super::{DecodeError, Decoder, Entry, FieldSpec, Node};

/// Decodes `bytes` into one value per declared field (null where absent).
pub(super) fn decode(decoder: &Decoder, bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| utf8_error(bytes, e.valid_up_to()))?;
    let mut walk = Walk {
        fields: &decoder.fields,
        values: vec![Value::Null; decoder.fields.len()],
        error: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = RootSeed {
        walk: &mut walk,
        node: &decoder.root,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match parsed {
        Ok(()) => Ok(walk.values),
        Err(e) => Err(walk.error.take().unwrap_or_else(|| json_error(&e))),
    }
}

/// Invalid UTF-8 at byte `at`, located like serde_json locates errors (1-based line and column).
fn utf8_error(bytes: &[u8], at: usize) -> DecodeError {
    let before = bytes.get(..at).unwrap_or(bytes);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
    DecodeError::record(format!("invalid UTF-8 at line {line} column {column}"))
}

/// A reason for a serde_json error. Syntax and end-of-input messages are fixed texts with a
/// position; any other message could come from a `Deserialize` implementation and quote the
/// input, so only its position is kept.
fn json_error(e: &serde_json::Error) -> DecodeError {
    match e.classify() {
        Category::Syntax | Category::Eof => DecodeError::record(format!("invalid JSON: {e}")),
        Category::Io | Category::Data => DecodeError::record(format!(
            "invalid JSON at line {} column {}",
            e.line(),
            e.column()
        )),
    }
}

/// The state of one record's walk.
struct Walk<'d> {
    fields: &'d [FieldSpec],
    values: Vec<Value>,
    error: Option<DecodeError>,
}

impl<'d> Walk<'d> {
    /// Records `error` and returns the error that aborts the parse.
    fn fail<E: de::Error>(&mut self, error: DecodeError) -> E {
        self.error = Some(error);
        E::custom("")
    }

    /// Sets the fields of `leaves` from a scalar.
    #[inline(always)]
    fn set<E: de::Error>(&mut self, leaves: &[usize], s: Scalar<'_>) -> Result<(), E> {
        for &i in leaves {
            let (Some(spec), Some(_)) = (self.fields.get(i), self.values.get(i)) else {
                continue;
            };
            match from_json(spec, s) {
                Ok(v) => self.values[i] = v,
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(())
    }

    /// Fails on the first field of `leaves`, which found a value of kind `found`.
    fn mismatch<E: de::Error>(&mut self, leaves: &[usize], found: &str) -> Result<(), E> {
        match leaves.first().and_then(|&i| self.fields.get(i)) {
            Some(spec) => {
                let e = DecodeError::mismatch(spec, found);
                Err(self.fail(e))
            }
            None => Ok(()),
        }
    }

    /// Walks the entries of one object level.
    fn object<'de, A: MapAccess<'de>>(
        &mut self,
        node: &'d Node,
        mut map: A,
    ) -> Result<(), A::Error> {
        let mut hint = 0;
        while let Some(found) = map.next_key_seed(KeySeed { node, hint })? {
            match found.and_then(|i| node.entries.get(i).map(|e| (i, e))) {
                Some((i, entry)) => {
                    hint = i + 1;
                    map.next_value_seed(EntrySeed { walk: self, entry })?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The whole document, which must be an object.
struct RootSeed<'w, 'd> {
    walk: &'w mut Walk<'d>,
    node: &'d Node,
}

impl<'de> DeserializeSeed<'de> for RootSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl RootSeed<'_, '_> {
    fn not_object<E: de::Error>(self, found: &str) -> Result<(), E> {
        let e = DecodeError::record(format!("expected a JSON object, found {found}"));
        Err(self.walk.fail(e))
    }
}

impl<'de> Visitor<'de> for RootSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.walk.object(self.node, map)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_object("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_object("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_object("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_object("a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_object("a string")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_object("null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_object("an array")
    }
}

/// A key, looked up in one object level: the index of its entry, if declared.
struct KeySeed<'n> {
    node: &'n Node,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.node.find(key, self.hint))
    }
}

/// The value of a declared key: a field's value, an object on a longer path, or both.
struct EntrySeed<'w, 'd> {
    walk: &'w mut Walk<'d>,
    entry: &'d Entry,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.walk.set(&self.entry.leaves, Scalar::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<(), E> {
        self.walk.set(&self.entry.leaves, Scalar::I64(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<(), E> {
        self.walk.set(&self.entry.leaves, Scalar::U64(u))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<(), E> {
        self.walk.set(&self.entry.leaves, Scalar::F64(f))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.walk.set(&self.entry.leaves, Scalar::Str(s))
    }

    /// JSON `null`: null for nullable fields, an error for the others. Fields on longer paths
    /// stay missing.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        for &i in &self.entry.leaves {
            let Some(spec) = self.walk.fields.get(i) else {
                continue;
            };
            if !spec.nullable {
                let e = DecodeError::field(spec, "is null and not nullable");
                return Err(self.walk.fail(e));
            }
            if let Some(v) = self.walk.values.get_mut(i) {
                *v = Value::Null;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.walk.mismatch(&self.entry.leaves, "an object")?;
        match &self.entry.child {
            Some(child) => self.walk.object(child, map),
            None => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(())
            }
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.walk.mismatch(&self.entry.leaves, "an array")?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}
