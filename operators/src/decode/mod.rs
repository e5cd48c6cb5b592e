//! Decoding records of a declared schema (JSON objects and CSV rows) into typed [`Row`]s.
//!
//! A [`Decoder`] is built once per source from its [`FieldSpec`]s and then shared by every
//! worker (it is `Send + Sync` and holds no per-record state).
//!
//! * [`Decoder::decode_json`] reads one JSON object. Fields are found by their
//!   [`path`](FieldSpec::path) (a key, or a path of keys into nested objects); unknown keys are
//!   skipped. The object is walked once, without building a `serde_json::Value` tree: the keys
//!   are matched against a small table of the declared paths built by [`Decoder::new`].
//! * [`Decoder::decode_csv`] reads one CSV row, the columns named by the file's header (or, for
//!   files without one, in declared field order). Cells are parsed from text; an empty cell is
//!   null.
//!
//! A record that does not match the schema gives a [`DecodeError`] naming the field and what was
//! expected and found, e.g. ``field `hr`: expected integer, found a string``. Reasons never hold
//! a value from the input (values may be patient data). No input makes a decoder panic.
//!
//! Value rules:
//!
//! | type | JSON | CSV cell |
//! | --- | --- | --- |
//! | `integer` | an integer, or a float with no fraction, within `i64` | the same, as text |
//! | `float` | any number | a finite number |
//! | `string` | a string | the cell's text |
//! | `boolean` | `true` or `false` | `true`, `false` (any case), `1`, `0` |
//! | `timestamp` | per [`TimeFormat`] | per [`TimeFormat`] |
//!
//! A missing field, a JSON `null` or an empty CSV cell is [`Value::Null`] when the field is
//! nullable, and an error otherwise.

mod csv_row;
mod json;
mod scalar;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_csv;

use std::fmt;

use vitalflow_model::row::{Row, Type, Value};

pub(crate) use csv_row::{open_quote, open_quote_reason};
pub use scalar::parse_iso8601;

/// How a `timestamp` field is written in the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TimeFormat {
    /// Milliseconds since the Unix epoch: a JSON number (a fraction is rounded to the nearest
    /// millisecond), or a number as CSV text.
    EpochMillis,
    /// Seconds since the Unix epoch: a JSON number (fractions keep millisecond precision), or a
    /// number as CSV text.
    EpochSeconds,
    /// ISO 8601 text: RFC 3339 (`2026-01-01T08:30:00.250+01:00`), a date-time without offset
    /// (`2026-01-01T07:30:00[.fff]`, taken as UTC; a space may replace the `T`), or a date
    /// (`2026-01-01`, its first instant in UTC). See [`parse_iso8601`].
    Iso8601,
    /// JSON: a number is epoch milliseconds, a string ISO 8601. CSV: a cell of digits (with an
    /// optional sign) is epoch milliseconds, anything else ISO 8601.
    #[default]
    Auto,
}

impl TimeFormat {
    /// What a field of this format expects, for error messages.
    const fn expected(self) -> &'static str {
        match self {
            Self::EpochMillis => "timestamp (epoch milliseconds)",
            Self::EpochSeconds => "timestamp (epoch seconds)",
            Self::Iso8601 => "timestamp (ISO 8601 text)",
            Self::Auto => "timestamp (epoch milliseconds or ISO 8601 text)",
        }
    }
}

/// How one field of a declared schema is read from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field's name (used in error messages, and as the default key and column).
    pub name: String,
    /// Its type.
    pub ty: Type,
    /// Whether it may be null (missing, JSON `null`, empty CSV cell).
    pub nullable: bool,
    /// JSON: the path of keys to the value, e.g. `["vitals", "hr"]` for
    /// `{"vitals": {"hr": 88}}`. Usually `[name]`; an empty path means `[name]`.
    pub path: Vec<String>,
    /// CSV: the header column holding the field; `None` means the column named `name`. Unused
    /// for files without a header, whose columns are the fields in declared order.
    pub column: Option<String>,
    /// How a `timestamp` field is written (ignored for other types).
    pub time_format: TimeFormat,
}

impl FieldSpec {
    /// A field read from the key (JSON) or column (CSV) of its own name, with
    /// [`TimeFormat::Auto`].
    #[must_use]
    pub fn new(name: &str, ty: Type, nullable: bool) -> Self {
        Self {
            name: name.to_owned(),
            ty,
            nullable,
            path: vec![name.to_owned()],
            column: None,
            time_format: TimeFormat::Auto,
        }
    }

    /// The CSV column name: [`column`](Self::column), or the field's name.
    #[must_use]
    pub fn column_name(&self) -> &str {
        self.column.as_deref().unwrap_or(&self.name)
    }

    /// What the field expects, for error messages (`integer`, `timestamp (ISO 8601 text)`).
    const fn expected(&self) -> &'static str {
        match self.ty {
            Type::Timestamp => self.time_format.expected(),
            ty => ty.as_str(),
        }
    }
}

/// Why a record could not be decoded: the field at fault (if any) and a reason that never holds
/// a value from the input.
///
/// Displays as ``field `hr`: expected integer, found a string``, as ``field `hr` is missing and
/// not nullable`` for a reason that starts with `is `, or as the bare reason when no field is
/// at fault (``expected a JSON object, found an array``).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", Render(.field.as_deref(), .reason))]
pub struct DecodeError {
    /// The field at fault (its declared name), if the error is about one field.
    pub field: Option<String>,
    /// What is wrong, without the field name.
    pub reason: String,
}

impl DecodeError {
    /// An error about the whole record.
    pub(crate) fn record(reason: impl Into<String>) -> Self {
        Self {
            field: None,
            reason: reason.into(),
        }
    }

    /// An error about one field.
    pub(crate) fn field(spec: &FieldSpec, reason: impl Into<String>) -> Self {
        Self {
            field: Some(spec.name.clone()),
            reason: reason.into(),
        }
    }

    /// `expected <type>, found <found>` for `spec`.
    pub(crate) fn mismatch(spec: &FieldSpec, found: &str) -> Self {
        Self::field(spec, format!("expected {}, found {found}", spec.expected()))
    }
}

/// Renders a [`DecodeError`].
struct Render<'a>(Option<&'a str>, &'a str);

impl fmt::Display for Render<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) if self.1.starts_with("is ") => write!(f, "field `{name}` {}", self.1),
            Some(name) => write!(f, "field `{name}`: {}", self.1),
            None => f.write_str(self.1),
        }
    }
}

/// One key of a JSON object level: the fields whose path ends here, and the next level for
/// paths that go on.
#[derive(Clone, Debug, Default)]
struct Entry {
    key: Box<str>,
    leaves: Vec<usize>,
    child: Option<Node>,
}

/// The keys of one JSON object level, in declaration order, with an index sorted by key for
/// binary search when there are many.
#[derive(Clone, Debug, Default)]
struct Node {
    entries: Vec<Entry>,
    sorted: Vec<usize>,
}

/// Above this many keys a level is searched by binary search, below it linearly.
const LINEAR_KEYS: usize = 12;

impl Node {
    fn insert(&mut self, path: &[String], field: usize) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let i = match self.entries.iter().position(|e| *e.key == **first) {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    key: first.as_str().into(),
                    ..Entry::default()
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[i];
        if rest.is_empty() {
            entry.leaves.push(field);
        } else {
            entry
                .child
                .get_or_insert_with(Node::default)
                .insert(rest, field);
        }
    }

    /// Builds the sorted indexes of this level and the levels below.
    fn finish(&mut self) {
        let mut sorted: Vec<usize> = (0..self.entries.len()).collect();
        sorted.sort_by(|&a, &b| self.entries[a].key.cmp(&self.entries[b].key));
        self.sorted = sorted;
        for e in &mut self.entries {
            if let Some(c) = &mut e.child {
                c.finish();
            }
        }
    }

    /// The entry for `key`. Keys usually come in declaration order, so the entry after the
    /// previous match (`hint`) is tried first.
    fn find(&self, key: &str, hint: usize) -> Option<usize> {
        if self.entries.get(hint).is_some_and(|e| *e.key == *key) {
            return Some(hint);
        }
        if self.entries.len() <= LINEAR_KEYS {
            return self.entries.iter().position(|e| *e.key == *key);
        }
        self.sorted
            .binary_search_by(|&i| self.entries[i].key.as_ref().cmp(key))
            .ok()
            .map(|s| self.sorted[s])
    }
}

/// Decodes records of one declared schema into [`Row`]s (see the module documentation).
#[derive(Clone, Debug)]
pub struct Decoder {
    fields: Vec<FieldSpec>,
    root: Node,
}

impl Decoder {
    /// A decoder for rows of `fields`, in this order. An empty [`FieldSpec::path`] means the
    /// field's name. Several fields may read the same path.
    #[must_use]
    pub fn new(fields: Vec<FieldSpec>) -> Self {
        let mut root = Node::default();
        for (i, f) in fields.iter().enumerate() {
            if f.path.is_empty() {
                root.insert(std::slice::from_ref(&f.name), i);
            } else {
                root.insert(&f.path, i);
            }
        }
        root.finish();
        Self { fields, root }
    }

    /// The declared fields, in row order.
    #[must_use]
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    /// Decodes one JSON object (surrounding whitespace allowed) into a row with `sequence`.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not UTF-8 or not one JSON document (the reason gives
    /// the line and column), when the document is not an object, or when a field is missing,
    /// null or of the wrong type while not nullable.
    pub fn decode_json(&self, bytes: &[u8], sequence: u64) -> Result<Row, DecodeError> {
        let values = json::decode(self, bytes)?;
        self.finish(values, sequence, "missing")
    }

    /// Decodes one CSV row (RFC 4180 quoting; one trailing line break allowed) into a row with
    /// `sequence`. With a `header`, each field is read from the column named
    /// [`FieldSpec::column_name`]; without one, the columns are the fields in declared order.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not one CSV row, when a declared column is missing
    /// from the header, when the row's width differs from the header's (or the number of
    /// fields), naming the first missing field if any, or when a cell cannot be parsed as its
    /// field's type or is empty while not nullable.
    pub fn decode_csv(
        &self,
        header: Option<&[String]>,
        bytes: &[u8],
        sequence: u64,
    ) -> Result<Row, DecodeError> {
        let values = csv_row::decode(self, header, bytes)?;
        self.finish(values, sequence, "empty")
    }

    /// Checks that no non-nullable field stayed null (`what` says why it is: missing, empty).
    fn finish(&self, values: Vec<Value>, sequence: u64, what: &str) -> Result<Row, DecodeError> {
        if let Some(f) = self
            .fields
            .iter()
            .zip(&values)
            .find_map(|(f, v)| (v.is_null() && !f.nullable).then_some(f))
        {
            return Err(DecodeError::field(f, format!("is {what} and not nullable")));
        }
        Ok(Row {
            values,
            sequence,
            tombstone: false,
            arrival_us: 0,
        })
    }
}
