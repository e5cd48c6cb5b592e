//! How records cross processes.
//!
//! In a cluster, timely encodes every record an exchange sends to a worker of another process
//! with bincode 1.x. Bincode writes no field names and no type markers: a value is read back
//! only as its type declares it, field after field. Three things the JSON of vitalflow's records
//! relies on cannot be read back that way:
//!
//! - a field left out when empty (`skip_serializing_if`): the reader expects every field;
//! - an internally tagged enum (`#[serde(tag = "type")]`): its variant is known only once the
//!   tag has been read, wherever it is, which needs a self-describing format;
//! - a [`serde_json::Value`]: its shape is in the data, not in the type.
//!
//! The types that use them keep their JSON (the job's outputs: alert events, the audit log)
//! and, in formats that are not human-readable, write another form, exactly (floats bit for
//! bit, NaN included):
//!
//! - a struct whose JSON leaves fields out writes all its fields in order (`every_field!`);
//! - a JSON value is written as a tagged tree of its nodes ([`Json`], [`optional_json`]);
//! - [`crate::vitals::VitalValue`] is written as an externally tagged enum.
//!
//! In all of them the derived JSON code is kept as is: the type derives with
//! `#[serde(remote = "Self")]`, which makes the derived code associated functions of the type,
//! and its `Serialize` and `Deserialize` call them when the format is human-readable.

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};

/// Implements `Serialize` and `Deserialize` for a struct deriving them with
/// `#[serde(remote = "Self")]`: human-readable formats (JSON) use the derived code, others write
/// every field, in the order given, as a tuple.
///
/// `every_field!(Type { a, b, c as Json })` lists every field of `Type` (a field left out does
/// not compile); `as Json` writes a field through the [`Json`] wrapper (a
/// [`serde_json::Value`] field).
macro_rules! every_field {
    ($ty:ident { $($field:ident $(as $wrap:ident)?),+ $(,)? }) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    return $ty::serialize(self, serializer);
                }
                let $ty { $($field),+ } = self;
                let mut tuple = ::serde::Serializer::serialize_tuple(
                    serializer,
                    <[()]>::len(&[$($crate::wire::every_field!(@unit $field)),+]),
                )?;
                $($crate::wire::every_field!(@ser tuple, $field $(, $wrap)?);)+
                ::serde::ser::SerializeTuple::end(tuple)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Fields;
                impl<'de> ::serde::de::Visitor<'de> for Fields {
                    type Value = $ty;

                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str(concat!("the fields of ", stringify!($ty)))
                    }

                    fn visit_seq<A: ::serde::de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<$ty, A::Error> {
                        let mut read = 0usize;
                        $(
                            let $field = $crate::wire::every_field!(@de seq, read, $field $(, $wrap)?);
                            read += 1;
                        )+
                        let _ = read;
                        Ok($ty { $($field),+ })
                    }
                }

                if deserializer.is_human_readable() {
                    return $ty::deserialize(deserializer);
                }
                let fields = <[()]>::len(&[$($crate::wire::every_field!(@unit $field)),+]);
                ::serde::Deserializer::deserialize_tuple(deserializer, fields, Fields)
            }
        }
    };
    (@unit $field:ident) => {
        ()
    };
    (@ser $tuple:ident, $field:ident) => {
        ::serde::ser::SerializeTuple::serialize_element(&mut $tuple, $field)?
    };
    (@ser $tuple:ident, $field:ident, $wrap:ident) => {
        ::serde::ser::SerializeTuple::serialize_element(&mut $tuple, &$wrap($field))?
    };
    (@de $seq:ident, $read:ident, $field:ident) => {
        match ::serde::de::SeqAccess::next_element(&mut $seq)? {
            Some(value) => value,
            None => return Err(::serde::de::Error::invalid_length($read, &Fields)),
        }
    };
    (@de $seq:ident, $read:ident, $field:ident, $wrap:ident) => {
        match ::serde::de::SeqAccess::next_element::<$wrap<_>>(&mut $seq)? {
            Some(value) => value.0,
            None => return Err(::serde::de::Error::invalid_length($read, &Fields)),
        }
    };
}

pub(crate) use every_field;

/// A [`serde_json::Value`] that crosses processes: as itself in human-readable formats, as a
/// tagged tree of its nodes in others (numbers keep their kind: unsigned, signed or float).
///
/// Serializes from `Json<&Value>`, deserializes into `Json<Value>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl Serialize for Json<&serde_json::Value> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde_json::Value;
        if serializer.is_human_readable() {
            return self.0.serialize(serializer);
        }
        // The variants as numbered in `Node`.
        match self.0 {
            Value::Null => serializer.serialize_unit_variant("Node", 0, "Null"),
            Value::Bool(b) => serializer.serialize_newtype_variant("Node", 1, "Bool", b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    serializer.serialize_newtype_variant("Node", 2, "PosInt", &u)
                } else if let Some(i) = n.as_i64() {
                    serializer.serialize_newtype_variant("Node", 3, "NegInt", &i)
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    serializer.serialize_newtype_variant("Node", 4, "Float", &f)
                }
            }
            Value::String(s) => serializer.serialize_newtype_variant("Node", 5, "String", s),
            Value::Array(items) => {
                serializer.serialize_newtype_variant("Node", 6, "Array", &Items(items))
            }
            Value::Object(map) => {
                serializer.serialize_newtype_variant("Node", 7, "Object", &Entries(map))
            }
        }
    }
}

/// An array's items, each through [`Json`].
struct Items<'a>(&'a [serde_json::Value]);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(Json))
    }
}

/// An object's entries in its order, as (key, value) pairs, each value through [`Json`].
struct Entries<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|(k, v)| (k, Json(v))))
    }
}

/// A JSON value's node as [`Json`] writes it (its variants numbered in this order).
#[derive(serde::Deserialize)]
enum Node {
    Null,
    Bool(bool),
    PosInt(u64),
    NegInt(i64),
    Float(f64),
    String(String),
    Array(Vec<Json<serde_json::Value>>),
    Object(Vec<(String, Json<serde_json::Value>)>),
}

impl From<Node> for serde_json::Value {
    fn from(node: Node) -> Self {
        match node {
            Node::Null => Self::Null,
            Node::Bool(b) => Self::Bool(b),
            Node::PosInt(u) => Self::from(u),
            Node::NegInt(i) => Self::from(i),
            Node::Float(f) => serde_json::Number::from_f64(f).map_or(Self::Null, Self::Number),
            Node::String(s) => Self::String(s),
            Node::Array(items) => Self::Array(items.into_iter().map(|j| j.0).collect()),
            Node::Object(entries) => {
                Self::Object(entries.into_iter().map(|(k, v)| (k, v.0)).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json<serde_json::Value> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return serde_json::Value::deserialize(deserializer).map(Json);
        }
        Node::deserialize(deserializer).map(|n| Json(n.into()))
    }
}

/// `#[serde(with = "vitalflow_model::wire::optional_json")]` for an `Option<serde_json::Value>`
/// field: the value through [`Json`].
pub mod optional_json {
    use super::{Deserialize, Deserializer, Json, Serialize, Serializer};

    /// Writes the value through [`Json`].
    ///
    /// # Errors
    /// The serializer's.
    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(
        value: &Option<serde_json::Value>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().map(Json).serialize(serializer)
    }

    /// Reads a value [`serialize`] wrote.
    ///
    /// # Errors
    /// The deserializer's.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<serde_json::Value>, D::Error> {
        Option::<Json<serde_json::Value>>::deserialize(deserializer).map(|v| v.map(|j| j.0))
    }
}
