//! Records of a declared schema, as the `file`, `kafka` and `generator` sources read them:
//! `fields`, `event-time`, `key` and `header`, checked and turned into a schema and a decoder
//! once.

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;
use vitalflow_model::row::{Field, Phi, Schema, Type};
use vitalflow_operators::decode::{Decoder, FieldSpec, TimeFormat};

use super::{Check, Resolve, Resolved};
use crate::job::schema::{Gaps, phi_fits, unknown_field};
use crate::job::{Diagnostic, JobText, PortKind};

/// Time formats of timestamp fields.
pub const TIME_FORMATS: [&str; 4] = ["auto", "epoch-ms", "epoch-s", "iso8601"];

/// One field of a declared schema (`fields = [{ name = "hr", type = "integer" }, ...]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FieldConfig {
    /// The name expressions and sinks use.
    pub name: Spanned<String>,
    /// `string`, `integer`, `float`, `boolean` or `timestamp`.
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    /// Whether the field may be missing or null. Default: false (a record without it is
    /// dead-lettered).
    #[serde(default)]
    pub nullable: bool,
    /// JSON: where the value is, as a dotted path into nested objects (`vitals.hr`). Default:
    /// the name.
    pub path: Option<Spanned<String>>,
    /// CSV: the header column holding the value. Default: the name.
    pub column: Option<String>,
    /// Timestamp fields: `epoch-ms`, `epoch-s`, `iso8601`, or `auto` (numbers are epoch
    /// milliseconds, text is ISO-8601). Default: `auto`.
    pub format: Option<Spanned<String>>,
    /// Whether the field is PHI and what anonymization does with it: `hash` (keyed pseudonym),
    /// `date` (shifted or generalized to the year), `redact`, `zip3`, `age`. Rows with PHI
    /// fields reach sinks only through an `anonymize` operator.
    pub phi: Option<Spanned<String>>,
}

/// The record settings of a source, whatever its kind.
pub(crate) struct Declared<'a> {
    /// The format's word (`json`, `csv`, `envelope`, ...) and where it is.
    pub format: &'a str,
    /// Where the format is written.
    pub format_at: usize,
    /// `fields`.
    pub fields: Option<&'a Spanned<Vec<FieldConfig>>>,
    /// `event-time`.
    pub event_time: Option<&'a Spanned<String>>,
    /// `key`.
    pub key: Option<&'a Spanned<String>>,
    /// `header`.
    pub header: Option<bool>,
}

/// A declared schema and how each of its fields is read.
#[derive(Debug, Clone)]
pub struct Records {
    /// The rows' schema.
    pub schema: Schema,
    /// How each field is read, in schema order.
    pub specs: Vec<FieldSpec>,
}

impl Records {
    /// The decoder of all the fields.
    #[must_use]
    pub fn decoder(&self) -> Decoder {
        Decoder::new(self.specs.clone())
    }

    /// A decoder of the one field `name` (a Kafka record's event time).
    #[must_use]
    pub fn field_decoder(&self, name: &str) -> Decoder {
        Decoder::new(
            self.specs
                .iter()
                .filter(|s| s.name == name)
                .cloned()
                .collect(),
        )
    }
}

/// A file source's schema settings belong to the `json` and `csv` formats, which need them.
pub(crate) fn check(c: &mut Check<'_>, f: &Declared<'_>) {
    let (format, path) = (f.format, c.path.to_owned());
    let declared = matches!(format, "json" | "csv");
    if declared && f.fields.is_none() {
        c.at(
            f.format_at,
            format!(
                "`{path}`: format `{format}` needs a declared schema: \
                 `fields = [{{ name = \"...\", type = \"...\" }}, ...]`"
            ),
        );
    }
    if !declared {
        let misplaced = [
            ("fields", f.fields.map(Spanned::span)),
            ("event-time", f.event_time.map(Spanned::span)),
            ("key", f.key.map(Spanned::span)),
        ];
        for (field, span) in misplaced {
            if let Some(span) = span {
                c.at(
                    span.start,
                    format!(
                        "`{path}.{field}` applies to the `json` and `csv` formats only, \
                         not `{format}`"
                    ),
                );
            }
        }
    }
    if f.header.is_some() && format != "csv" {
        c.at_node(format!("`{path}.header` applies to the `csv` format only"));
    }
}

/// The schema a file source declares: the fields declared without a mistake (the others are
/// noted in `gaps`).
pub(crate) fn declared(
    text: &JobText,
    f: &Declared<'_>,
    path: &str,
    gaps: &mut Gaps,
    errors: &mut Vec<Diagnostic>,
) -> Option<Records> {
    let fields = f.fields?;
    if fields.get_ref().is_empty() {
        errors.push(text.diag(
            fields.span().start,
            format!("`{path}.fields` is empty: declare at least one field"),
        ));
    }
    let format = f.format;
    let mut schema = Schema::default();
    let mut specs = Vec::new();
    let mut seen = BTreeSet::new();
    for fc in fields.get_ref() {
        let field = declared_field(text, fc, path, format, errors);
        if !seen.insert(fc.name.get_ref().clone()) {
            errors.push(text.diag(
                fc.name.span().start,
                format!(
                    "`{path}.fields`: field `{}` is declared twice",
                    fc.name.get_ref()
                ),
            ));
            continue;
        }
        match field {
            Some((field, spec)) => {
                schema.fields.push(field);
                specs.push(spec);
            }
            None => {
                gaps.fields.insert(fc.name.get_ref().clone());
            }
        }
    }
    if let Some(t) = f.event_time {
        match schema.field(t.get_ref()) {
            Some((i, field)) if field.ty == Type::Timestamp => schema.time = Some(i),
            Some((_, field)) => errors.push(text.diag(
                t.span().start,
                format!(
                    "`{path}.event-time`: field `{}` is {}, not a timestamp",
                    field.name, field.ty
                ),
            )),
            None if gaps.fields.contains(t.get_ref()) => {}
            None => errors.push(unknown_field(text, t, path, "event-time", &schema)),
        }
        gaps.time |= schema.time.is_none();
    }
    if let Some(k) = f.key {
        match schema.index(k.get_ref()) {
            Some(i) => schema.key = Some(i),
            None if gaps.fields.contains(k.get_ref()) => {}
            None => errors.push(unknown_field(text, k, path, "key", &schema)),
        }
        gaps.key |= schema.key.is_none();
    }
    Some(Records { schema, specs })
}

fn declared_field(
    text: &JobText,
    fc: &FieldConfig,
    path: &str,
    format: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<(Field, FieldSpec)> {
    let name = fc.name.get_ref();
    let before = errors.len();
    if name.is_empty() {
        errors.push(text.diag(
            fc.name.span().start,
            format!("`{path}.fields`: a field name is empty"),
        ));
    }
    let ty = Type::parse(fc.ty.get_ref());
    if ty.is_none() {
        errors.push(text.diag(
            fc.ty.span().start,
            format!(
                "`{path}.fields.{name}`: unknown type `{}`{} (expected string, integer, float, \
                 boolean or timestamp)",
                fc.ty.get_ref(),
                crate::job::did_you_mean(
                    fc.ty.get_ref(),
                    ["string", "integer", "float", "boolean", "timestamp"]
                )
            ),
        ));
    }
    if let Some(fmt) = &fc.format {
        if ty != Some(Type::Timestamp) {
            errors.push(text.diag(
                fmt.span().start,
                format!("`{path}.fields.{name}.format` applies to timestamp fields only"),
            ));
        } else if !TIME_FORMATS.contains(&fmt.get_ref().as_str()) {
            errors.push(text.diag(
                fmt.span().start,
                format!(
                    "`{path}.fields.{name}.format`: unknown time format `{}` (expected one of: {})",
                    fmt.get_ref(),
                    TIME_FORMATS.join(", ")
                ),
            ));
        }
    }
    if let Some(p) = &fc.path {
        if format != "json" {
            errors.push(text.diag(
                p.span().start,
                format!("`{path}.fields.{name}.path` applies to the `json` format (use `column` for CSV)"),
            ));
        } else if p.get_ref().split('.').any(str::is_empty) {
            errors.push(text.diag(
                p.span().start,
                format!(
                    "`{path}.fields.{name}.path`: `{}` is not a dotted path like `vitals.hr`",
                    p.get_ref()
                ),
            ));
        }
    }
    if fc.column.is_some() && format != "csv" {
        errors.push(text.diag(
            fc.name.span().start,
            format!(
                "`{path}.fields.{name}.column` applies to the `csv` format (use `path` for JSON)"
            ),
        ));
    }
    let phi = match &fc.phi {
        None => None,
        Some(p) => match Phi::parse(p.get_ref()) {
            None => {
                errors.push(text.diag(
                    p.span().start,
                    format!(
                        "`{path}.fields.{name}.phi`: unknown action `{}` (expected hash, date, \
                         redact, zip3 or age)",
                        p.get_ref()
                    ),
                ));
                None
            }
            Some(phi) => {
                if let (Some(t), false) = (ty, phi_fits(phi, ty.unwrap_or(Type::String))) {
                    errors.push(text.diag(
                        p.span().start,
                        format!(
                            "`{path}.fields.{name}.phi`: `{}` does not apply to a {t} field \
                             ({})",
                            phi.as_str(),
                            phi_types(phi)
                        ),
                    ));
                }
                Some(phi)
            }
        },
    };
    let time_format = match fc.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("auto") => TimeFormat::Auto,
        Some("epoch-ms") => TimeFormat::EpochMillis,
        Some("epoch-s") => TimeFormat::EpochSeconds,
        Some("iso8601") => TimeFormat::Iso8601,
        // Reported above.
        Some(_) => return None,
    };
    let ty = ty?;
    (errors.len() == before).then(|| {
        let field = Field {
            name: name.clone(),
            ty,
            nullable: fc.nullable,
            phi,
        };
        let spec = FieldSpec {
            name: name.clone(),
            ty,
            nullable: fc.nullable,
            path: fc.path.as_ref().map_or_else(
                || vec![name.clone()],
                |p| p.get_ref().split('.').map(str::to_owned).collect(),
            ),
            column: fc.column.clone(),
            time_format,
        };
        (field, spec)
    })
}

const fn phi_types(phi: Phi) -> &'static str {
    match phi {
        Phi::Hash | Phi::Zip3 => "it takes string or integer fields",
        Phi::Date => "it takes timestamp fields",
        Phi::Redact => "it takes any field",
        Phi::Age => "it takes integer or float fields",
    }
}

/// The ports of a source: with declared records, rows, its domain events (it is the
/// ingestion stage of their saga) and dead letters; otherwise raw records.
pub(crate) const fn outputs(declared: bool) -> &'static [(&'static str, PortKind)] {
    if declared {
        &[
            ("out", PortKind::Rows),
            ("events", PortKind::DomainEvent),
            ("dead-letter", PortKind::DeadLetter),
        ]
    } else {
        &[("out", PortKind::Raw)]
    }
}

/// A source's output schema, and its records to keep for the planner. A source starts afresh:
/// nothing upstream is missing from its rows.
pub(crate) fn resolve(
    r: &mut Resolve<'_>,
    d: &Declared<'_>,
) -> (Vec<(&'static str, Schema)>, Option<Records>) {
    *r.gaps = Gaps::default();
    match declared(r.text, d, r.path, r.gaps, r.errors) {
        Some(records) => (vec![("out", records.schema.clone())], Some(records)),
        None => (Vec::new(), None),
    }
}

/// Keeps what [`resolve`] gave in `into`.
pub(crate) fn keep(
    (ports, records): (Vec<(&'static str, Schema)>, Option<Records>),
    into: &mut Resolved<Records>,
) -> Vec<(&'static str, Schema)> {
    if let Some(records) = records {
        into.set(records);
    }
    ports
}
