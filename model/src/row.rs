//! Records of a declared shape: typed values in the order of a [`Schema`].
//!
//! Sources with a declared schema decode their input into [`Row`]s; the expression operators
//! (`filter`, `map`, `project`, `key-by`) read and write them. A row holds only its values: names,
//! types, the event-time field and the key are in the schema, resolved once when the job is
//! planned, so operators find a field by index, never by name.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The type of a field or an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Type {
    /// `true` or `false`.
    Bool,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// UTF-8 text.
    String,
    /// An instant, milliseconds since the Unix epoch, UTC.
    Timestamp,
}

impl Type {
    /// The name used in job files and messages.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "boolean",
            Self::Int => "integer",
            Self::Float => "float",
            Self::String => "string",
            Self::Timestamp => "timestamp",
        }
    }

    /// Parses a type name as written in job files (`int`, `double`, `bool` are accepted aliases).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "boolean" | "bool" => Self::Bool,
            "integer" | "int" | "long" => Self::Int,
            "float" | "double" => Self::Float,
            "string" | "text" => Self::String,
            "timestamp" => Self::Timestamp,
            _ => return None,
        })
    }

    /// Whether the type is `integer` or `float`.
    #[must_use]
    pub const fn is_numeric(self) -> bool {
        matches!(self, Self::Int | Self::Float)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value of a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text (shared: projecting a field does not copy it).
    Str(Arc<str>),
    /// Milliseconds since the Unix epoch, UTC.
    Timestamp(i64),
}

impl Value {
    /// The value's type (`None` for null).
    #[must_use]
    pub const fn ty(&self) -> Option<Type> {
        match self {
            Self::Null => None,
            Self::Bool(_) => Some(Type::Bool),
            Self::Int(_) => Some(Type::Int),
            Self::Float(_) => Some(Type::Float),
            Self::Str(_) => Some(Type::String),
            Self::Timestamp(_) => Some(Type::Timestamp),
        }
    }

    /// Whether the value is null.
    #[must_use]
    pub const fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// A string value.
    #[must_use]
    pub fn str(s: &str) -> Self {
        Self::Str(Arc::from(s))
    }

    /// The value as JSON: timestamps as RFC 3339 UTC text with milliseconds, non-finite floats
    /// as null (JSON has no NaN).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Null => serde_json::Value::Null,
            Self::Bool(b) => serde_json::Value::Bool(*b),
            Self::Int(i) => serde_json::Value::from(*i),
            Self::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Self::Str(s) => serde_json::Value::String(s.to_string()),
            Self::Timestamp(ms) => serde_json::Value::String(format_timestamp(*ms)),
        }
    }

    /// A key for routing records of one key to one worker (stable across processes).
    #[must_use]
    pub fn route_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        match self {
            Self::Null => feed(&[0]),
            Self::Bool(b) => feed(&[1, u8::from(*b)]),
            Self::Int(i) => feed(&i.to_le_bytes()),
            Self::Float(f) => feed(&f.to_bits().to_le_bytes()),
            Self::Str(s) => feed(s.as_bytes()),
            Self::Timestamp(t) => feed(&t.to_le_bytes()),
        }
        h
    }
}

/// RFC 3339 UTC with milliseconds (`2026-01-01T00:00:00.000Z`); out-of-range values as the number.
#[must_use]
pub fn format_timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

/// A record of a declared shape: its values in schema order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Row {
    /// The values, one per schema field.
    pub values: Vec<Value>,
    /// Position of the record in its source (for dead letters and deterministic ordering).
    pub sequence: u64,
    /// A deletion of the row's key from a table (a Kafka tombstone: a keyed record without a
    /// payload). Only the key field is set. Tombstones reach only the `table` of a `join`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstone: bool,
    /// When the record this row came from reached vitalflow (µs since the Unix epoch; 0:
    /// unknown). Not a field: alert latency is measured from it.
    #[serde(default)]
    pub arrival_us: u64,
}

// JSON leaves `tombstone` out when false; binary formats write every field.
crate::wire::every_field!(Row {
    values,
    sequence,
    tombstone,
    arrival_us
});

/// A value with a total order, equality and hash, for grouping and joining: keys of windows and
/// tables, and distinct counts. Floats compare by [`f64::total_cmp`] (so `NaN` equals itself);
/// values of different types order by type (null first).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyValue(pub Value);

impl KeyValue {
    const fn rank(&self) -> u8 {
        match self.0 {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Str(_) => 4,
            Value::Timestamp(_) => 5,
        }
    }
}

impl PartialEq for KeyValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for KeyValue {}

impl PartialOrd for KeyValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) | (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl std::hash::Hash for KeyValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.route_hash());
    }
}

impl Value {
    /// Orders two values of one type (numbers of either numeric type by value); `None` when
    /// either is null or their types cannot be compared.
    #[must_use]
    pub fn compare(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Self::Int(a), Self::Float(b)) => Some((*a as f64).total_cmp(b)),
            (Self::Float(a), Self::Int(b)) => Some(a.total_cmp(&(*b as f64))),
            (Self::Null, _) | (_, Self::Null) => None,
            (a, b) if a.ty() == b.ty() => Some(KeyValue(a.clone()).cmp(&KeyValue(b.clone()))),
            _ => None,
        }
    }
}

/// How the anonymization stage treats a field that holds (or is derived from) PHI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phi {
    /// Replaced by the keyed pseudonym (HMAC-SHA256), the same one patient ids get everywhere.
    Hash,
    /// A date: shifted by the patient's offset or generalized to its year (the stage's policy).
    Date,
    /// Removed (null).
    Redact,
    /// A ZIP code: the first three digits, `000` for restricted areas.
    Zip3,
    /// An age: ages over 89 become 90.
    Age,
}

impl Phi {
    /// The name used in job files.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Date => "date",
            Self::Redact => "redact",
            Self::Zip3 => "zip3",
            Self::Age => "age",
        }
    }

    /// Parses a name as written in job files.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "hash" => Self::Hash,
            "date" => Self::Date,
            "redact" => Self::Redact,
            "zip3" => Self::Zip3,
            "age" => Self::Age,
            _ => return None,
        })
    }
}

/// One field of a schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The name expressions and sinks use.
    pub name: String,
    /// Its type.
    pub ty: Type,
    /// Whether it may be null (a non-nullable field is never null).
    pub nullable: bool,
    /// Whether, and how, it is PHI: set on source fields and carried to the fields computed
    /// from them, until the anonymization stage applies it.
    pub phi: Option<Phi>,
}

/// The shape of the rows on a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// The fields, in row order.
    pub fields: Vec<Field>,
    /// Index of the event-time field (a timestamp), if declared.
    pub time: Option<usize>,
    /// Index of the key field, if declared.
    pub key: Option<usize>,
}

impl Schema {
    /// The index of a field.
    #[must_use]
    pub fn index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// A field by name, with its index.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<(usize, &Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }

    /// Whether any field holds PHI.
    #[must_use]
    pub fn has_phi(&self) -> bool {
        self.fields.iter().any(|f| f.phi.is_some())
    }

    /// The field names, comma-separated, for messages.
    #[must_use]
    pub fn names(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A row as a JSON object (keys sorted: for dead letters and messages; sinks write fields in
    /// schema order).
    #[must_use]
    pub fn to_json(&self, row: &Row) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .zip(&row.values)
            .map(|(f, v)| (f.name.clone(), v.to_json()))
            .collect();
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_rfc3339_millis() {
        assert_eq!(
            format_timestamp(1_767_225_600_000),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_timestamp(1_767_225_600_123),
            "2026-01-01T00:00:00.123Z"
        );
    }

    #[test]
    fn type_names_round_trip() {
        for t in [
            Type::Bool,
            Type::Int,
            Type::Float,
            Type::String,
            Type::Timestamp,
        ] {
            assert_eq!(Type::parse(t.as_str()), Some(t));
        }
        assert_eq!(Type::parse("int"), Some(Type::Int));
        assert_eq!(Type::parse("uuid"), None);
    }

    #[test]
    fn equal_keys_route_equally_and_types_differ() {
        assert_eq!(Value::str("P1").route_hash(), Value::str("P1").route_hash());
        assert_ne!(Value::str("P1").route_hash(), Value::str("P2").route_hash());
        assert_ne!(Value::Int(1).route_hash(), Value::Bool(true).route_hash());
    }

    #[test]
    fn key_values_order_totally_and_hash_like_routing() {
        use std::collections::BTreeSet;
        let set: BTreeSet<KeyValue> = [
            Value::Float(f64::NAN),
            Value::Float(f64::NAN),
            Value::Int(3),
            Value::Null,
            Value::str("b"),
            Value::str("a"),
            Value::Int(-1),
        ]
        .into_iter()
        .map(KeyValue)
        .collect();
        let order: Vec<Value> = set.into_iter().map(|k| k.0).collect();
        assert_eq!(order.len(), 6, "{order:?}");
        assert_eq!(order[0], Value::Null);
        assert_eq!(order[1], Value::Int(-1));
        assert_eq!(order[2], Value::Int(3));
        assert_eq!(order[4], Value::str("a"));
        assert_eq!(
            Value::Int(2).compare(&Value::Float(2.5)),
            Some(std::cmp::Ordering::Less)
        );
        assert_eq!(Value::Int(2).compare(&Value::str("x")), None);
    }

    #[test]
    fn non_finite_float_is_json_null() {
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::Value::Null);
    }
}
