//! Schemas and expressions: the shape of the rows on every port, inferred in dependency order
//! from the sources' declared fields, with every expression parsed and type-checked against the
//! rows it reads. Problems are reported at the expression's line and column, underlined.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;
use vitalflow_model::row::{Field, Phi, Schema, Type};
use vitalflow_operators::expression::{self, Compiled, ExprError};

use super::config::{FieldConfig, FileConfig};
use super::{Diagnostic, JobText, Node, NodeKind};

/// The schema of every rows port: by node name for `out` ports, `node.port` for others (a
/// window's `late`).
pub type Schemas = BTreeMap<String, Schema>;

/// The key of a port in [`Schemas`].
#[must_use]
pub fn port_key(node: &str, port: &str) -> String {
    if port == "out" {
        node.to_owned()
    } else {
        format!("{node}.{port}")
    }
}

/// Time formats of timestamp fields.
pub const TIME_FORMATS: [&str; 4] = ["auto", "epoch-ms", "epoch-s", "iso8601"];

/// What a port's rows lack because of a problem already reported upstream: a field whose
/// declaration or expression failed, or the event-time or key role. Downstream problems that only
/// follow from these are not reported again.
#[derive(Debug, Clone, Default)]
struct Gaps {
    /// Fields missing from the schema.
    fields: BTreeSet<String>,
    /// The event-time field is unknown.
    time: bool,
    /// The key field is unknown.
    key: bool,
}

impl Gaps {
    fn is_empty(&self) -> bool {
        self.fields.is_empty() && !self.time && !self.key
    }

    fn extend(&mut self, other: &Self) {
        self.fields.extend(other.fields.iter().cloned());
        self.time |= other.time;
        self.key |= other.key;
    }

    /// Whether a diagnostic only follows from these gaps.
    fn explains(&self, d: &Diagnostic) -> bool {
        let m = &d.message;
        self.fields.iter().any(|f| {
            m.contains(&format!("unknown field `{f}`")) || m.contains(&format!("no field `{f}`"))
        }) || (self.time && m.contains(NO_EVENT_TIME))
            || (self.key && m.contains(NO_KEY))
    }
}

/// How messages say the rows have no event-time field, and no key.
const NO_EVENT_TIME: &str = "no event-time field";
const NO_KEY: &str = "no declared key";

/// Removes field `i` from a schema, keeping the event-time and key roles of the others; notes in
/// `gaps` the field and any role it had.
fn remove_field(schema: &mut Schema, i: usize, gaps: &mut Gaps) {
    let f = schema.fields.remove(i);
    gaps.fields.insert(f.name);
    for (role, gap) in [
        (&mut schema.time, &mut gaps.time),
        (&mut schema.key, &mut gaps.key),
    ] {
        match *role {
            Some(r) if r == i => {
                *role = None;
                *gap = true;
            }
            Some(r) if r > i => *role = Some(r - 1),
            _ => {}
        }
    }
}

/// Infers the schema of every rows port, checking every expression. `nodes` is in dependency
/// order. A node with a problem still gives what it can of its output (the fields that did not
/// fail), so that every node downstream is checked too, in the same run.
pub(super) fn infer(text: &JobText, nodes: &[Node], errors: &mut Vec<Diagnostic>) -> Schemas {
    let mut schemas = Schemas::new();
    let mut gaps: BTreeMap<String, Gaps> = BTreeMap::new();
    for n in nodes {
        let path = format!("{}.{}", n.section.as_str(), n.name);
        let mut found = Vec::new();
        let mut input_gaps = Gaps::default();
        for i in &n.inputs {
            if let Some(g) = gaps.get(&port_key(&i.node, &i.port)) {
                input_gaps.extend(g);
            }
        }
        let mut out_gaps = input_gaps.clone();
        let outputs = node_schemas(text, n, &path, &schemas, &mut out_gaps, &mut found);
        errors.extend(found.into_iter().filter(|d| !input_gaps.explains(d)));
        for (port, schema) in outputs {
            let key = port_key(&n.name, port);
            if !out_gaps.is_empty() {
                gaps.insert(key.clone(), out_gaps.clone());
            }
            schemas.insert(key, schema);
        }
    }
    schemas
}

/// Checks one node and gives the schema of each of its rows ports; `gaps` starts as its
/// input's and gets what its own problems leave out.
fn node_schemas(
    text: &JobText,
    n: &Node,
    path: &str,
    schemas: &Schemas,
    gaps: &mut Gaps,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(&'static str, Schema)> {
    let source = match &n.kind {
        NodeKind::File(f) => Some(f.clone()),
        NodeKind::Kafka(k) => Some(k.as_file()),
        NodeKind::Generator(g) => g.as_file(),
        _ => None,
    };
    if let Some(f) = &source {
        *gaps = Gaps::default();
        return declared(text, f, path, gaps, errors)
            .map(|s| vec![("out", s)])
            .unwrap_or_default();
    }
    if let NodeKind::Join(c) = &n.kind {
        let (output, parts) = join_check(text, n, path, c, schemas);
        if let Err(d) = parts {
            errors.extend(d);
        }
        return output.map(|s| vec![("out", s)]).unwrap_or_default();
    }
    let Some(input) = input_schema(text, n, path, schemas, errors) else {
        return Vec::new();
    };
    let out = match &n.kind {
        NodeKind::Window(c, aggregates) => {
            let (output, window_gaps, parts) = window_check(text, n, path, c, aggregates, &input);
            if let Err(d) = parts {
                errors.extend(d);
            }
            gaps.extend(&window_gaps);
            return vec![("out", output), ("late", input)];
        }
        NodeKind::Alert(c) => {
            if let Err(d) = alert_parts(text, n, path, c, &input) {
                errors.extend(d);
            }
            None
        }
        NodeKind::Filter(c) => {
            match expression(text, &c.condition, &input, &format!("{path}.condition")) {
                Err(d) => errors.extend(d),
                Ok(c2) if c2.ty() != Some(Type::Bool) => errors.push(whole(
                    text,
                    &c.condition,
                    format!(
                        "`{path}.condition` must be a boolean expression, not {}",
                        type_name(c2.ty())
                    ),
                )),
                Ok(_) => {}
            }
            Some(input)
        }
        NodeKind::Map { project, fields } => Some(map_schema(
            text, path, *project, fields, &input, gaps, errors,
        )),
        NodeKind::KeyBy(c) => Some(key_by_schema(text, path, c, input, gaps, errors)),
        NodeKind::Anonymize(a) => Some(anonymized(text, n, path, a.dates.get_ref(), input, errors)),
        NodeKind::Parquet(_) | NodeKind::Jsonl(_) | NodeKind::KafkaSink(_) => {
            if input.has_phi() {
                let phi: Vec<String> = input
                    .fields
                    .iter()
                    .filter_map(|f| {
                        f.phi
                            .map(|p| format!("`{}` (phi = \"{}\")", f.name, p.as_str()))
                    })
                    .collect();
                errors.push(text.diag(
                    n.inputs.first().map_or(n.span.start, |i| i.span.start),
                    format!(
                        "`{path}`: the rows hold PHI in {}: route them through an \
                         `anonymize` operator before a sink",
                        phi.join(", ")
                    ),
                ));
            }
            None
        }
        _ => None,
    };
    out.map(|s| vec![("out", s)]).unwrap_or_default()
}

/// The schema of a node's rows inputs (all the same), if it takes rows.
fn input_schema(
    text: &JobText,
    n: &Node,
    path: &str,
    schemas: &Schemas,
    errors: &mut Vec<Diagnostic>,
) -> Option<Schema> {
    let mut found: Option<(&str, &Schema)> = None;
    for input in &n.inputs {
        let Some(s) = schemas.get(&port_key(&input.node, &input.port)) else {
            continue;
        };
        match found {
            None => found = Some((&input.node, s)),
            Some((first, f)) if !same_shape(f, s) => {
                errors.push(text.diag(
                    input.span.start,
                    format!(
                        "`{path}.inputs`: `{}` has fields ({}) but `{first}` has ({}): \
                         the inputs of a node must have the same fields",
                        input.node,
                        describe(s),
                        describe(f)
                    ),
                ));
                return None;
            }
            Some(_) => {}
        }
    }
    found.map(|(_, s)| s.clone())
}

fn same_shape(a: &Schema, b: &Schema) -> bool {
    a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|(x, y)| x.name == y.name && x.ty == y.ty && x.phi == y.phi)
}

fn describe(s: &Schema) -> String {
    s.fields
        .iter()
        .map(|f| format!("{} {}", f.name, f.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_name(t: Option<Type>) -> String {
    t.map_or_else(|| "null".to_owned(), |t| t.as_str().to_owned())
}

/// The schema a file source declares: the fields declared without a mistake (the others are
/// noted in `gaps`).
fn declared(
    text: &JobText,
    f: &FileConfig,
    path: &str,
    gaps: &mut Gaps,
    errors: &mut Vec<Diagnostic>,
) -> Option<Schema> {
    let fields = f.fields.as_ref()?;
    if fields.get_ref().is_empty() {
        errors.push(text.diag(
            fields.span().start,
            format!("`{path}.fields` is empty: declare at least one field"),
        ));
    }
    let format = f.format.get_ref().as_str();
    let mut schema = Schema::default();
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
            Some(field) => schema.fields.push(field),
            None => {
                gaps.fields.insert(fc.name.get_ref().clone());
            }
        }
    }
    if let Some(t) = &f.event_time {
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
    if let Some(k) = &f.key {
        match schema.index(k.get_ref()) {
            Some(i) => schema.key = Some(i),
            None if gaps.fields.contains(k.get_ref()) => {}
            None => errors.push(unknown_field(text, k, path, "key", &schema)),
        }
        gaps.key |= schema.key.is_none();
    }
    Some(schema)
}

fn unknown_field(
    text: &JobText,
    at: &Spanned<String>,
    path: &str,
    setting: &str,
    schema: &Schema,
) -> Diagnostic {
    text.diag(
        at.span().start,
        format!(
            "`{path}.{setting}`: no field `{}`{} (declared fields: {})",
            at.get_ref(),
            super::did_you_mean(at.get_ref(), schema.fields.iter().map(|f| f.name.as_str())),
            schema.names()
        ),
    )
}

fn declared_field(
    text: &JobText,
    fc: &FieldConfig,
    path: &str,
    format: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<Field> {
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
                super::did_you_mean(
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
    (errors.len() == before).then(|| Field {
        name: name.clone(),
        ty: ty.unwrap_or(Type::String),
        nullable: fc.nullable,
        phi,
    })
}

/// Whether an anonymization action applies to a type.
const fn phi_fits(phi: Phi, ty: Type) -> bool {
    match phi {
        Phi::Hash => matches!(ty, Type::String | Type::Int),
        Phi::Date => matches!(ty, Type::Timestamp),
        Phi::Redact => true,
        Phi::Zip3 => matches!(ty, Type::String | Type::Int),
        Phi::Age => matches!(ty, Type::Int | Type::Float),
    }
}

const fn phi_types(phi: Phi) -> &'static str {
    match phi {
        Phi::Hash | Phi::Zip3 => "it takes string or integer fields",
        Phi::Date => "it takes timestamp fields",
        Phi::Redact => "it takes any field",
        Phi::Age => "it takes integer or float fields",
    }
}

/// Compiles an expression held in a TOML string, mapping its errors onto the job file.
pub fn expression(
    text: &JobText,
    source: &Spanned<String>,
    schema: &Schema,
    what: &str,
) -> Result<Compiled, Vec<Diagnostic>> {
    expression::compile(source.get_ref(), schema).map_err(|errs| {
        errs.into_iter()
            .map(|e| expr_diag(text, source, &e, what))
            .collect()
    })
}

fn expr_diag(text: &JobText, source: &Spanned<String>, e: &ExprError, what: &str) -> Diagnostic {
    let (start, exact) = text.string_content(&source.span(), source.get_ref());
    let range: Range<usize> = if exact {
        start + e.span.start..start + e.span.end
    } else {
        // The string has escapes: offsets into its value do not map onto the file.
        source.span()
    };
    text.diag_range(range, format!("`{what}`: {}", e.message))
}

fn whole(text: &JobText, source: &Spanned<String>, message: String) -> Diagnostic {
    let (start, exact) = text.string_content(&source.span(), source.get_ref());
    let range = if exact {
        start..start + source.get_ref().len()
    } else {
        source.span()
    };
    text.diag_range(range, message)
}

/// The field an expression names, if it is nothing but a field name.
#[must_use]
pub fn bare_field(source: &str, schema: &Schema) -> Option<usize> {
    let s = source.trim();
    let name = s
        .strip_prefix('`')
        .and_then(|r| r.strip_suffix('`'))
        .unwrap_or(s);
    schema.index(name)
}

/// The PHI action a computed field inherits from the fields it reads: a copied field keeps its
/// own; a value computed from PHI keeps the action if it still fits the result's type (a
/// truncated date is still shifted, a reformatted id still hashed), and is redacted otherwise.
fn taint(compiled: &Compiled, source: &str, input: &Schema, ty: Type) -> Option<Phi> {
    if let Some(i) = bare_field(source, input) {
        return input.fields[i].phi;
    }
    let classes: BTreeSet<Phi> = compiled
        .fields()
        .iter()
        .filter_map(|i| input.fields.get(*i).and_then(|f| f.phi))
        .collect();
    match classes.len() {
        0 => None,
        1 => classes
            .into_iter()
            .next()
            .map(|c| if phi_fits(c, ty) { c } else { Phi::Redact }),
        _ => Some(Phi::Redact),
    }
}

/// The rows a `map` or `project` outputs; a field whose expression fails is left out (noted in
/// `gaps`).
/// The PHI fields an expression reads, for messages.
fn phi_read(compiled: &Compiled, input: &Schema) -> Vec<String> {
    compiled
        .fields()
        .iter()
        .filter_map(|i| input.fields.get(*i))
        .filter_map(|f| {
            f.phi
                .map(|p| format!("`{}` (phi = \"{}\")", f.name, p.as_str()))
        })
        .collect()
}

fn map_schema(
    text: &JobText,
    path: &str,
    project: bool,
    fields: &[(Spanned<String>, Spanned<String>)],
    input: &Schema,
    gaps: &mut Gaps,
    errors: &mut Vec<Diagnostic>,
) -> Schema {
    let mut out = if project {
        Schema::default()
    } else {
        input.clone()
    };
    let mut names = BTreeSet::new();
    for (name, source) in fields {
        let what = format!("{path}.fields.{}", name.get_ref());
        if !names.insert(name.get_ref().clone()) {
            errors.push(text.diag(
                name.span().start,
                format!("`{path}.fields`: `{}` is given twice", name.get_ref()),
            ));
            continue;
        }
        let field = match expression(text, source, input, &what) {
            Ok(compiled) => match compiled.ty() {
                Some(ty) => Some(Field {
                    name: name.get_ref().clone(),
                    ty,
                    nullable: compiled.nullable(),
                    phi: taint(&compiled, source.get_ref(), input, ty),
                }),
                None => {
                    errors.push(whole(
                        text,
                        source,
                        format!("`{what}`: the type of `null` is unknown: write `cast(null as integer)` (or another type)"),
                    ));
                    None
                }
            },
            Err(d) => {
                errors.extend(d);
                None
            }
        };
        let Some(field) = field else {
            match out.index(name.get_ref()) {
                Some(i) => remove_field(&mut out, i, gaps),
                None => {
                    gaps.fields.insert(name.get_ref().clone());
                }
            }
            continue;
        };
        gaps.fields.remove(&field.name);
        let copied = bare_field(source.get_ref(), input);
        match out.index(&field.name) {
            Some(i) => {
                // Replacing a field keeps its role only if it is the same field.
                if copied != Some(i) {
                    if out.time == Some(i) {
                        out.time = None;
                    }
                    if out.key == Some(i) {
                        out.key = None;
                    }
                }
                out.fields[i] = field;
            }
            None => {
                if let Some(c) = copied {
                    if input.time == Some(c) && out.time.is_none() {
                        out.time = Some(out.fields.len());
                    }
                    if input.key == Some(c) && out.key.is_none() {
                        out.key = Some(out.fields.len());
                    }
                }
                out.fields.push(field);
            }
        }
    }
    out
}

/// The rows a `key-by` outputs; when its key fails they are keyed by nothing known (noted in
/// `gaps`).
fn key_by_schema(
    text: &JobText,
    path: &str,
    c: &super::config::KeyByConfig,
    mut input: Schema,
    gaps: &mut Gaps,
    errors: &mut Vec<Diagnostic>,
) -> Schema {
    let what = format!("{path}.key");
    let name = c.field.clone().unwrap_or_else(|| "key".to_owned());
    let failed = |mut input: Schema, gaps: &mut Gaps| {
        input.key = None;
        gaps.key = true;
        if bare_field(c.key.get_ref(), &input).is_none() && input.index(&name).is_none() {
            gaps.fields.insert(name.clone());
        }
        input
    };
    let compiled = match expression(text, &c.key, &input, &what) {
        Ok(compiled) => compiled,
        Err(d) => {
            errors.extend(d);
            return failed(input, gaps);
        }
    };
    if let Some(i) = bare_field(c.key.get_ref(), &input) {
        input.key = Some(i);
        gaps.key = false;
        return input;
    }
    let Some(ty) = compiled.ty() else {
        errors.push(whole(
            text,
            &c.key,
            format!("`{what}`: a key cannot be `null`"),
        ));
        return failed(input, gaps);
    };
    let field = Field {
        name: name.clone(),
        ty,
        nullable: compiled.nullable(),
        phi: taint(&compiled, c.key.get_ref(), &input, ty),
    };
    if let Some(i) = input.index(&name) {
        errors.push(whole(
            text,
            &c.key,
            format!(
                "`{what}`: the computed key goes into field `{name}`, which exists (field {}); \
                 name another with `as = \"...\"`",
                i + 1
            ),
        ));
        return failed(input, gaps);
    }
    input.key = Some(input.fields.len());
    input.fields.push(field);
    gaps.key = false;
    gaps.fields.remove(&name);
    input
}

/// The rows an `anonymize` node outputs: every PHI field de-identified.
fn anonymized(
    text: &JobText,
    n: &Node,
    path: &str,
    dates: &str,
    mut schema: Schema,
    errors: &mut Vec<Diagnostic>,
) -> Schema {
    if dates == "shift"
        && schema.fields.iter().any(|f| f.phi == Some(Phi::Date))
        && patient_field(&schema).is_none()
    {
        errors.push(text.diag(
            n.span.start,
            format!(
                "`{path}`: shifting dates needs the patient of each record: mark the patient id \
                 field `phi = \"hash\"` (or use `dates = \"year\"`)"
            ),
        ));
    }
    for f in &mut schema.fields {
        match f.phi.take() {
            Some(Phi::Hash) => f.ty = Type::String,
            Some(Phi::Redact) => f.nullable = true,
            Some(Phi::Zip3) => {
                f.ty = Type::String;
                f.nullable = true;
            }
            Some(Phi::Date | Phi::Age) | None => {}
        }
    }
    schema
}

/// The field whose value identifies the patient for date shifting: the key if it is hashed,
/// otherwise the first hashed field.
#[must_use]
pub fn patient_field(schema: &Schema) -> Option<usize> {
    schema
        .key
        .filter(|k| {
            schema
                .fields
                .get(*k)
                .is_some_and(|f| f.phi == Some(Phi::Hash))
        })
        .or_else(|| schema.fields.iter().position(|f| f.phi == Some(Phi::Hash)))
}

fn ms(d: &Spanned<String>) -> i64 {
    super::parse_duration(d.get_ref())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The event-time field of the rows an event-time operator reads; a problem at the node when
/// they have none.
fn event_time(
    text: &JobText,
    n: &Node,
    path: &str,
    input: &Schema,
    errors: &mut Vec<Diagnostic>,
) -> Option<usize> {
    if input.time.is_none() {
        errors.push(text.diag(
            n.span.start,
            format!(
                "`{path}`: the rows have no event-time field (fields: {}): declare `event-time` \
                 on the source, or keep its field in `project`",
                input.names()
            ),
        ));
    }
    input.time
}

/// A compiled aggregate call: the function, the argument's text and offset, the argument.
type AggregateCall<'a> = (
    vitalflow_operators::window::AggFn,
    Option<(&'a str, usize)>,
    Option<Compiled>,
);

/// An aggregate call `func(argument)`: the function, the argument's text and its compiled
/// expression (`None` for `count()`); its problems, at their place, otherwise.
fn aggregate_call<'a>(
    text: &JobText,
    source: &'a Spanned<String>,
    input: &Schema,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<AggregateCall<'a>> {
    let (func, arg) = match vitalflow_operators::window::split_call(source.get_ref()) {
        Ok(call) => call,
        Err(message) => {
            errors.push(whole(text, source, format!("`{what}`: {message}")));
            return None;
        }
    };
    let compiled = match arg {
        None => None,
        Some((arg_text, offset)) => match expression::compile(arg_text, input) {
            Ok(e) => Some(e),
            Err(errs) => {
                for e in errs {
                    let shifted = ExprError {
                        span: e.span.start + offset..e.span.end + offset,
                        message: e.message,
                    };
                    errors.push(expr_diag(text, source, &shifted, what));
                }
                return None;
            }
        },
    };
    if compiled.as_ref().is_some_and(|c| c.ty().is_none()) {
        errors.push(whole(
            text,
            source,
            format!("`{what}`: the argument is always null"),
        ));
        return None;
    }
    Some((func, arg, compiled))
}

/// A `window` node, checked and compiled.
pub struct WindowParts {
    /// Window shape.
    pub kind: vitalflow_operators::window::WindowKind,
    /// Allowed lateness (ms).
    pub lateness: i64,
    /// Watermark delay (ms).
    pub delay: i64,
    /// The key expression.
    pub key: Compiled,
    /// The input's event-time field.
    pub time: usize,
    /// Each aggregate and its compiled argument.
    pub aggs: Vec<(vitalflow_operators::window::AggSpec, Option<Compiled>)>,
    /// The output rows: key, `window_start`, `window_end`, aggregates, `revision`, `diff`.
    pub output: Schema,
}

/// Fields every window output has besides the key and the aggregates.
const WINDOW_FIELDS: [&str; 4] = ["window_start", "window_end", "revision", "diff"];

/// Checks and compiles a `window` node over rows of `input`.
///
/// # Errors
/// Every problem, at its line and column.
pub fn window_parts(
    text: &JobText,
    n: &Node,
    path: &str,
    c: &super::config::WindowConfig,
    aggregates: &[(Spanned<String>, Spanned<String>)],
    input: &Schema,
) -> Result<WindowParts, Vec<Diagnostic>> {
    window_check(text, n, path, c, aggregates, input).2
}

/// Checks a `window` node: the schema of its output without what failed, what failed, and the
/// compiled node or every problem.
fn window_check(
    text: &JobText,
    n: &Node,
    path: &str,
    c: &super::config::WindowConfig,
    aggregates: &[(Spanned<String>, Spanned<String>)],
    input: &Schema,
) -> (Schema, Gaps, Result<WindowParts, Vec<Diagnostic>>) {
    use vitalflow_operators::window::{AggFn, AggSpec, WindowKind};
    let mut errors = Vec::new();
    let mut gaps = Gaps::default();
    let at_node = |message: String| text.diag(n.span.start, message);
    let time = event_time(text, n, path, input, &mut errors);
    let key = match &c.key {
        None => {
            errors.push(at_node(format!(
                "`{path}`: a window needs a `key` (an expression: windows are per value of it)"
            )));
            None
        }
        Some(k) => match expression(text, k, input, &format!("{path}.key")) {
            Ok(e) if e.ty().is_none() => {
                errors.push(whole(
                    text,
                    k,
                    format!("`{path}.key`: a key cannot be `null`"),
                ));
                None
            }
            Ok(e) => Some(e),
            Err(d) => {
                errors.extend(d);
                None
            }
        },
    };
    let positive = |v: &Option<Spanned<String>>, field: &str, errors: &mut Vec<Diagnostic>| match v
    {
        None => {
            errors.push(at_node(format!("`{path}`: this window needs `{field}`")));
            None
        }
        Some(d) if ms(d) <= 0 => {
            errors.push(text.diag(
                d.span().start,
                format!("`{path}.{field}` must be longer than 0"),
            ));
            None
        }
        Some(d) => Some(ms(d)),
    };
    let unused =
        |v: &Option<Spanned<String>>, field: &str, shape: &str, errors: &mut Vec<Diagnostic>| {
            if let Some(d) = v {
                errors.push(text.diag(
                    d.span().start,
                    format!("`{path}.{field}` does not apply to {shape} windows"),
                ));
            }
        };
    let kind = match c.window.as_ref().map(|w| w.get_ref().as_str()) {
        None => {
            errors.push(at_node(format!(
                "`{path}`: a window needs `window = \"tumbling\"`, `\"sliding\"` or `\"session\"`"
            )));
            None
        }
        Some("tumbling") => {
            unused(&c.slide, "slide", "tumbling", &mut errors);
            unused(&c.gap, "gap", "tumbling", &mut errors);
            positive(&c.size, "size", &mut errors).map(|size| WindowKind::Tumbling { size })
        }
        Some("sliding") => {
            unused(&c.gap, "gap", "sliding", &mut errors);
            let size = positive(&c.size, "size", &mut errors);
            let slide = positive(&c.slide, "slide", &mut errors);
            match (size, slide) {
                (Some(size), Some(slide)) if slide > size => {
                    if let Some(s) = &c.slide {
                        errors.push(text.diag(
                            s.span().start,
                            format!("`{path}.slide` must be at most `size` (a record would fall in no window)"),
                        ));
                    }
                    None
                }
                (Some(size), Some(slide)) => Some(WindowKind::Sliding { size, slide }),
                _ => None,
            }
        }
        Some("session") => {
            unused(&c.size, "size", "session", &mut errors);
            unused(&c.slide, "slide", "session", &mut errors);
            positive(&c.gap, "gap", &mut errors).map(|gap| WindowKind::Session { gap })
        }
        Some(other) => {
            if let Some(w) = &c.window {
                errors.push(text.diag(
                    w.span().start,
                    format!("`{path}.window`: `{other}` is not `tumbling`, `sliding` or `session`"),
                ));
            }
            None
        }
    };
    let key_name = match (&c.key, &key) {
        (Some(k), Some(_)) => bare_field(k.get_ref(), input)
            .map(|i| input.fields[i].name.clone())
            .unwrap_or_else(|| c.key_as.clone().unwrap_or_else(|| "key".to_owned())),
        _ => "key".to_owned(),
    };
    let mut output = Schema {
        fields: Vec::new(),
        time: Some(1),
        key: Some(0),
    };
    if let (Some(k), Some(src)) = (&key, &c.key) {
        let ty = k.ty().unwrap_or(Type::String);
        output.fields.push(Field {
            name: key_name.clone(),
            ty,
            nullable: k.nullable(),
            phi: taint(k, src.get_ref(), input, ty),
        });
    }
    // Window bounds are dates of the individual a PHI key identifies: they keep the event
    // time's PHI action. Bounds of groups (wards, codes) are not about one person.
    let key_is_phi = output.fields.first().is_some_and(|f| f.phi.is_some());
    let bound_phi = time
        .and_then(|t| input.fields.get(t))
        .and_then(|f| f.phi)
        .filter(|_| key_is_phi);
    let stamp = |name: &str| Field {
        name: name.to_owned(),
        ty: Type::Timestamp,
        nullable: false,
        phi: bound_phi,
    };
    output.fields.push(stamp("window_start"));
    output.fields.push(stamp("window_end"));
    let mut aggs = Vec::new();
    let mut names = BTreeSet::new();
    for (name, source) in aggregates {
        let what = format!("{path}.aggregates.{}", name.get_ref());
        if WINDOW_FIELDS.contains(&name.get_ref().as_str()) || *name.get_ref() == key_name {
            errors.push(text.diag(
                name.span().start,
                format!(
                    "`{what}`: `{}` is a field every window row has; name the aggregate otherwise",
                    name.get_ref()
                ),
            ));
            continue;
        }
        if !names.insert(name.get_ref().clone()) {
            errors.push(text.diag(
                name.span().start,
                format!("`{path}.aggregates`: `{}` is given twice", name.get_ref()),
            ));
            continue;
        }
        let Some((func, arg, compiled)) = aggregate_call(text, source, input, &what, &mut errors)
        else {
            gaps.fields.insert(name.get_ref().clone());
            continue;
        };
        let arg_ty = compiled.as_ref().and_then(Compiled::ty);
        let ty = match func.result_type(arg_ty) {
            Ok(t) => t,
            Err(message) => {
                errors.push(whole(
                    text,
                    source,
                    format!("`{what}`: `{}` {message}", source.get_ref().trim()),
                ));
                gaps.fields.insert(name.get_ref().clone());
                continue;
            }
        };
        // Counts are not PHI; every other aggregate is a value of its argument.
        let counts = matches!(func, AggFn::Count | AggFn::CountDistinct);
        let phi = match (&compiled, arg) {
            (Some(e), Some((arg_text, _))) if !counts => taint(e, arg_text, input, ty),
            _ => None,
        };
        output.fields.push(Field {
            name: name.get_ref().clone(),
            ty,
            nullable: !counts,
            phi,
        });
        aggs.push((AggSpec { func, arg: arg_ty }, compiled));
    }
    for name in ["revision", "diff"] {
        output.fields.push(Field {
            name: name.to_owned(),
            ty: Type::Int,
            nullable: false,
            phi: None,
        });
    }
    if key.is_none() {
        output.time = Some(0);
        output.key = None;
        gaps.key = true;
        gaps.fields.insert(key_name);
    }
    let shape = output.clone();
    let (Some(kind), Some(key), Some(time), true) = (kind, key, time, errors.is_empty()) else {
        return (shape, gaps, Err(errors));
    };
    let parts = WindowParts {
        kind,
        lateness: ms(&c.allowed_lateness),
        delay: ms(&c.watermark_delay),
        key,
        time,
        aggs,
        output,
    };
    (shape, gaps, Ok(parts))
}

/// A `join` node, checked and compiled.
pub struct JoinParts {
    /// The stream's key expression.
    pub key: Compiled,
    /// The stream's event-time field.
    pub time: usize,
    /// The table node and port.
    pub table: (String, String),
    /// The table's key field.
    pub table_key: usize,
    /// The table's event-time field.
    pub table_time: Option<usize>,
    /// The table fields added.
    pub take: Vec<usize>,
    /// Unmatched records.
    pub missing: crate::runtime::joins::Missing,
    /// Version history (ms).
    pub history: i64,
    /// The stream's schema.
    pub stream: Schema,
    /// Stream fields, then the added table fields.
    pub output: Schema,
}

/// Checks and compiles a `join` node (its last input is the table).
///
/// # Errors
/// Every problem, at its line and column.
pub fn join_parts(
    text: &JobText,
    n: &Node,
    path: &str,
    c: &super::config::JoinConfig,
    schemas: &Schemas,
) -> Result<JoinParts, Vec<Diagnostic>> {
    join_check(text, n, path, c, schemas).1
}

/// Checks a `join` node: the schema of its output, when its inputs have schemas, and the compiled
/// node or every problem.
fn join_check(
    text: &JobText,
    n: &Node,
    path: &str,
    c: &super::config::JoinConfig,
    schemas: &Schemas,
) -> (Option<Schema>, Result<JoinParts, Vec<Diagnostic>>) {
    use crate::runtime::joins::Missing;
    let mut errors = Vec::new();
    let Some((table_ref, stream_refs)) = n.inputs.split_last() else {
        return (None, Err(errors));
    };
    let stream_node = Node {
        inputs: stream_refs.to_vec(),
        ..n.clone()
    };
    let stream = input_schema(text, &stream_node, path, schemas, &mut errors);
    let table = schemas.get(&port_key(&table_ref.node, &table_ref.port));
    let (Some(stream), Some(table)) = (stream, table) else {
        // Port kinds were reported by the graph check.
        return (None, Err(errors));
    };
    let at_node = |message: String| text.diag(n.span.start, message);
    if stream.time.is_none() {
        errors.push(at_node(format!(
            "`{path}`: the stream has no event-time field: declare `event-time` on its source \
             (a record joins the table version valid at its event time)"
        )));
    }
    let key_source = c.key.clone().or_else(|| {
        stream
            .key
            .map(|k| Spanned::new(n.span.clone(), stream.fields[k].name.clone()))
    });
    let key = match &key_source {
        None => {
            errors.push(at_node(format!(
                "`{path}`: the stream has no declared key: set `key` (an expression)"
            )));
            None
        }
        Some(k) => match expression(text, k, &stream, &format!("{path}.key")) {
            Ok(e) => Some(e),
            Err(d) => {
                errors.extend(d);
                None
            }
        },
    };
    let table_key = match &c.table_key {
        Some(k) => match table.index(k.get_ref()) {
            Some(i) => Some(i),
            None => {
                errors.push(unknown_field(text, k, path, "table-key", table));
                None
            }
        },
        None => {
            if table.key.is_none() {
                errors.push(at_node(format!(
                    "`{path}`: table `{}` has no declared key: set `table-key`",
                    table_ref.node
                )));
            }
            table.key
        }
    };
    if let (Some(k), Some(tk)) = (&key, table_key) {
        let (a, b) = (k.ty(), Some(table.fields[tk].ty));
        if a != b {
            errors.push(at_node(format!(
                "`{path}`: the stream's key is {} but the table's key `{}` is {}",
                type_name(a),
                table.fields[tk].name,
                type_name(b)
            )));
        }
    }
    let take: Vec<usize> = match &c.fields {
        Some(list) => list
            .iter()
            .filter_map(|f| {
                let i = table.index(f.get_ref());
                if i.is_none() {
                    errors.push(unknown_field(text, f, path, "fields", table));
                }
                i
            })
            .collect(),
        None => (0..table.fields.len())
            .filter(|i| Some(*i) != table_key && Some(*i) != table.time)
            .collect(),
    };
    let mut output = stream.clone();
    for i in &take {
        let mut f = table.fields[*i].clone();
        f.name = format!("{}{}", c.prefix, f.name);
        f.nullable = true;
        if output.index(&f.name).is_some() {
            errors.push(at_node(format!(
                "`{path}`: the stream already has a field `{}`: set `prefix` (e.g. `prefix = \"{}_\"`) or list `fields`",
                f.name, table_ref.node
            )));
        }
        output.fields.push(f);
    }
    let inner = match c.join.get_ref().as_str() {
        "inner" => true,
        "left" => false,
        other => {
            errors.push(text.diag(
                c.join.span().start,
                format!("`{path}.type`: `{other}` is not `inner` or `left`"),
            ));
            true
        }
    };
    let missing = match (c.on_missing.as_ref().map(|m| m.get_ref().as_str()), inner) {
        (None, true) | (Some("drop"), true) => Missing::Drop,
        (None, false) | (Some("null"), false) => Missing::Null,
        (Some("dead-letter"), true) => Missing::DeadLetter,
        (Some(m), _) => {
            let span = c
                .on_missing
                .as_ref()
                .map_or(n.span.start, |s| s.span().start);
            errors.push(text.diag(
                span,
                if inner {
                    format!("`{path}.on-missing`: an inner join takes `drop` or `dead-letter`, not `{m}` (`null` is a left join)")
                } else {
                    format!("`{path}.on-missing`: a left join passes unmatched records with nulls; `{m}` is for inner joins")
                },
            ));
            Missing::Drop
        }
    };
    let shape = Some(output.clone());
    let (Some(key), Some(time), Some(table_key), true) =
        (key, stream.time, table_key, errors.is_empty())
    else {
        return (shape, Err(errors));
    };
    let parts = JoinParts {
        key,
        time,
        table: (table_ref.node.clone(), table_ref.port.clone()),
        table_key,
        table_time: table.time,
        take,
        missing,
        history: if c.history.get_ref() == "forever" {
            i64::MAX
        } else {
            ms(&c.history)
        },
        stream,
        output,
    };
    (shape, Ok(parts))
}

/// An `alert` node, checked and compiled.
pub struct AlertParts {
    /// What the monitor watches.
    pub spec: vitalflow_operators::alert::monitor::MonitorSpec,
    /// The patient expression.
    pub patient: Compiled,
    /// The input's event-time field.
    pub time: usize,
    /// The ward expression.
    pub ward: Option<Compiled>,
    /// The observation-id expression.
    pub observation_id: Option<Compiled>,
    /// Each NEWS2 parameter mapped, with its expression.
    pub params: Vec<(vitalflow_operators::alert::news2::Parameter, Compiled)>,
    /// Whether SpO2 scale 2 applies.
    pub scale2: Option<Compiled>,
}

/// Checks and compiles an `alert` node over rows of `input`.
///
/// # Errors
/// Every problem, at its line and column.
pub fn alert_parts(
    text: &JobText,
    n: &Node,
    path: &str,
    c: &super::config::AlertConfig,
    input: &Schema,
) -> Result<AlertParts, Vec<Diagnostic>> {
    use vitalflow_operators::alert::lifecycle::LifecycleConfig;
    use vitalflow_operators::alert::monitor::{
        MonitorSpec, RULE_AGGREGATES, RuleAggregate, RuleSpec, parse_level,
    };
    use vitalflow_operators::alert::news2::{Level, Parameter};
    use vitalflow_operators::window::AggFn;

    let mut errors = Vec::new();
    let at_node = |message: String| text.diag(n.span.start, message);
    let time = event_time(text, n, path, input, &mut errors);
    // An expression of one of `types` (`None`: any type).
    let mut typed = |source: &Spanned<String>, field: &str, types: Option<&[Type]>, what: &str| {
        let field_path = format!("{path}.{field}");
        match expression(text, source, input, &field_path) {
            Ok(e) => match (e.ty(), types) {
                (None, _) => {
                    errors.push(whole(
                        text,
                        source,
                        format!("`{field_path}` is always null"),
                    ));
                    None
                }
                (Some(t), Some(types)) if !types.contains(&t) => {
                    errors.push(whole(
                        text,
                        source,
                        format!("`{field_path}` must be {what}, not {}", type_name(Some(t))),
                    ));
                    None
                }
                _ => Some(e),
            },
            Err(d) => {
                errors.extend(d);
                None
            }
        }
    };
    let patient = match (&c.patient, input.key) {
        (Some(p), _) => typed(p, "patient", None, "a value"),
        (None, Some(k)) => expression::compile(&format!("`{}`", input.fields[k].name), input).ok(),
        (None, None) => None,
    };
    let ward = c
        .ward
        .as_ref()
        .and_then(|w| typed(w, "ward", None, "a value"));
    let observation_id = c
        .observation_id
        .as_ref()
        .and_then(|o| typed(o, "observation-id", None, "a value"));
    let numbers: &[Type] = &[Type::Int, Type::Float];
    let mut params = Vec::new();
    let mut scale2 = None;
    let mut raise_at = Level::LowMedium;
    if let Some(n2) = &c.news2 {
        for (p, field, source) in [
            (
                Parameter::RespirationRate,
                "respiration-rate",
                &n2.respiration_rate,
            ),
            (Parameter::Spo2, "spo2", &n2.spo2),
            (Parameter::AirOrOxygen, "oxygen", &n2.oxygen),
            (Parameter::SystolicBp, "systolic", &n2.systolic),
            (Parameter::Pulse, "pulse", &n2.pulse),
            (Parameter::Consciousness, "consciousness", &n2.consciousness),
            (Parameter::Temperature, "temperature", &n2.temperature),
        ] {
            let Some(source) = source else { continue };
            let field = format!("news2.{field}");
            let compiled = match p {
                Parameter::AirOrOxygen => typed(source, &field, Some(&[Type::Bool]), "a boolean"),
                Parameter::Consciousness => typed(
                    source,
                    &field,
                    Some(&[Type::String]),
                    "text (A, C, V, P or U)",
                ),
                _ => typed(source, &field, Some(numbers), "a number"),
            };
            if let Some(e) = compiled {
                params.push((p, e));
            }
        }
        scale2 = n2
            .scale2
            .as_ref()
            .and_then(|s| typed(s, "news2.scale2", Some(&[Type::Bool]), "a boolean"));
        raise_at = parse_level(n2.raise_at.get_ref()).unwrap_or(Level::LowMedium);
        if params.is_empty() && errors.is_empty() {
            errors.push(at_node(format!(
                "`{path}.news2` maps no parameter: give at least one of respiration-rate, spo2, \
                 oxygen, systolic, pulse, consciousness, temperature"
            )));
        }
    }
    // Alert events leave the job as they are (only the patient is pseudonymized): the ward and
    // the observation ids they show must not be read from PHI.
    for (field, source, compiled) in [
        ("ward", c.ward.as_ref(), ward.as_ref()),
        (
            "observation-id",
            c.observation_id.as_ref(),
            observation_id.as_ref(),
        ),
    ] {
        if let (Some(source), Some(e)) = (source, compiled) {
            let phi = phi_read(e, input);
            if !phi.is_empty() {
                errors.push(whole(
                    text,
                    source,
                    format!(
                        "`{path}.{field}` reads PHI ({}): alert events leave the job with it; \
                         read fields that are not PHI, or `anonymize` the rows before the alert",
                        phi.join(", ")
                    ),
                ));
            }
        }
    }
    if c.patient.is_none() && input.key.is_none() {
        errors.push(at_node(format!(
            "`{path}`: the rows have no declared key: say which field is the patient with \
             `patient = \"...\"`"
        )));
    }

    let mut rules = Vec::new();
    for (name, r) in &c.rules {
        let rule_path = format!("{path}.rules.{name}");
        let mut extended = input.clone();
        let mut aggregates = Vec::new();
        for (agg_name, source) in &r.aggregates {
            let what = format!("{rule_path}.aggregates.{agg_name}");
            if input.index(agg_name).is_some() {
                errors.push(whole(
                    text,
                    source,
                    format!("`{what}`: the rows already have a field `{agg_name}`"),
                ));
                continue;
            }
            let Some((func, _, compiled)) = aggregate_call(text, source, input, &what, &mut errors)
            else {
                continue;
            };
            if !RULE_AGGREGATES.contains(&func) {
                errors.push(whole(
                    text,
                    source,
                    format!("`{what}`: rules take count, sum, min, max, mean, first or last"),
                ));
                continue;
            }
            let arg_ty = compiled.as_ref().and_then(Compiled::ty);
            let ty = match (func, arg_ty) {
                (AggFn::Count, _) => Type::Int,
                (AggFn::Sum | AggFn::Mean, Some(Type::Int | Type::Float)) => Type::Float,
                (AggFn::Min | AggFn::Max | AggFn::First | AggFn::Last, Some(t)) => t,
                _ => {
                    errors.push(whole(
                        text,
                        source,
                        format!("`{what}`: `{}` needs a number", source.get_ref().trim()),
                    ));
                    continue;
                }
            };
            extended.fields.push(Field {
                name: agg_name.clone(),
                ty,
                nullable: true,
                phi: None,
            });
            aggregates.push(RuleAggregate {
                func,
                arg: compiled.map(std::sync::Arc::new),
            });
        }
        let when = match expression(text, &r.when, &extended, &format!("{rule_path}.when")) {
            Ok(e) if e.ty() == Some(Type::Bool) => Some(e),
            Ok(e) => {
                errors.push(whole(
                    text,
                    &r.when,
                    format!(
                        "`{rule_path}.when` must be a boolean expression, not {}",
                        type_name(e.ty())
                    ),
                ));
                None
            }
            Err(d) => {
                errors.extend(d);
                None
            }
        };
        if let Some(when) = when {
            rules.push(RuleSpec {
                name: name.clone(),
                condition: r.when.get_ref().clone(),
                when: std::sync::Arc::new(when),
                level: parse_level(r.level.get_ref()).unwrap_or(Level::High),
                sustain: r.sustain.as_ref().map_or(0, ms),
                window: r.window.as_ref().map_or(0, ms),
                aggregates,
            });
        }
    }
    let (Some(patient), Some(time), true) = (patient, time, errors.is_empty()) else {
        return Err(errors);
    };
    Ok(AlertParts {
        spec: MonitorSpec {
            news2: !params.is_empty(),
            freshness: ms(&c.freshness),
            raise_at,
            lifecycle: LifecycleConfig {
                resolve_after: ms(&c.resolve_after),
                suppress_for: ms(&c.suppress_for),
            },
            rules,
        },
        patient,
        time,
        ward,
        observation_id,
        params,
        scale2,
    })
}
