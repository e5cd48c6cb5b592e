//! Schemas and expressions: the shape of the rows on every port, inferred in dependency order
//! from the sources' declared fields, with every expression parsed and type-checked against the
//! rows it reads. Problems are reported at the expression's line and column, underlined.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;
use vitalflow_model::row::{Phi, Schema, Type};
use vitalflow_operators::expression::{self, Compiled, ExprError};

use super::{Diagnostic, InputRef, JobText, Node};
use crate::nodes::Resolve;

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

/// What a port's rows lack because of a problem already reported upstream: a field whose
/// declaration or expression failed, or the event-time or key role. Downstream problems that only
/// follow from these are not reported again.
#[derive(Debug, Clone, Default)]
pub struct Gaps {
    /// Fields missing from the schema.
    pub fields: BTreeSet<String>,
    /// The event-time field is unknown.
    pub time: bool,
    /// The key field is unknown.
    pub key: bool,
}

impl Gaps {
    fn is_empty(&self) -> bool {
        self.fields.is_empty() && !self.time && !self.key
    }

    /// Adds what `other` lacks.
    pub fn extend(&mut self, other: &Self) {
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
pub(crate) fn remove_field(schema: &mut Schema, i: usize, gaps: &mut Gaps) {
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

/// Infers the schema of every rows port, checking every expression; each node keeps what it
/// compiled for the planner. `nodes` is in dependency order. A node with a problem still gives
/// what it can of its output (the fields that did not fail), so that every node downstream is
/// checked too, in the same run.
pub(super) fn infer(text: &JobText, nodes: &mut [Node], errors: &mut Vec<Diagnostic>) -> Schemas {
    let mut schemas = Schemas::new();
    let mut gaps: BTreeMap<String, Gaps> = BTreeMap::new();
    for n in nodes {
        let Node {
            name,
            section,
            kind,
            inputs,
            span,
        } = n;
        let path = format!("{}.{name}", section.as_str());
        let mut found = Vec::new();
        let mut input_gaps = Gaps::default();
        for i in inputs.iter() {
            if let Some(g) = gaps.get(&port_key(&i.node, &i.port)) {
                input_gaps.extend(g);
            }
        }
        let mut out_gaps = input_gaps.clone();
        let outputs = kind.spec_mut().resolve(&mut Resolve {
            text,
            span: span.clone(),
            inputs,
            path: &path,
            schemas: &schemas,
            gaps: &mut out_gaps,
            errors: &mut found,
        });
        errors.extend(found.into_iter().filter(|d| !input_gaps.explains(d)));
        for (port, schema) in outputs {
            let key = port_key(name, port);
            if !out_gaps.is_empty() {
                gaps.insert(key.clone(), out_gaps.clone());
            }
            schemas.insert(key, schema);
        }
    }
    schemas
}

/// The schema of the rows on `inputs` (all the same), if they carry rows.
pub(crate) fn input_schema(
    text: &JobText,
    inputs: &[InputRef],
    path: &str,
    schemas: &Schemas,
    errors: &mut Vec<Diagnostic>,
) -> Option<Schema> {
    let mut found: Option<(&str, &Schema)> = None;
    for input in inputs {
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

/// A sink's rows must hold no PHI: reported at its first input otherwise.
pub(crate) fn refuse_phi(r: &mut Resolve<'_>) {
    let Some(input) = r.input() else {
        return;
    };
    if !input.has_phi() {
        return;
    }
    let phi: Vec<String> = input
        .fields
        .iter()
        .filter_map(|f| {
            f.phi
                .map(|p| format!("`{}` (phi = \"{}\")", f.name, p.as_str()))
        })
        .collect();
    let at = r.inputs.first().map_or(r.span.start, |i| i.span.start);
    let d = r.text.diag(
        at,
        format!(
            "`{}`: the rows hold PHI in {}: route them through an `anonymize` operator before \
             a sink",
            r.path,
            phi.join(", ")
        ),
    );
    r.errors.push(d);
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

/// A type as messages name it (`null` for none).
pub(crate) fn type_name(t: Option<Type>) -> String {
    t.map_or_else(|| "null".to_owned(), |t| t.as_str().to_owned())
}

/// A setting naming a field the rows do not have.
pub(crate) fn unknown_field(
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

/// Whether an anonymization action applies to a type.
pub(crate) const fn phi_fits(phi: Phi, ty: Type) -> bool {
    match phi {
        Phi::Hash => matches!(ty, Type::String | Type::Int),
        Phi::Date => matches!(ty, Type::Timestamp),
        Phi::Redact => true,
        Phi::Zip3 => matches!(ty, Type::String | Type::Int),
        Phi::Age => matches!(ty, Type::Int | Type::Float),
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

/// A problem with a whole expression, underlined.
pub(crate) fn whole(text: &JobText, source: &Spanned<String>, message: String) -> Diagnostic {
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
pub(crate) fn taint(compiled: &Compiled, source: &str, input: &Schema, ty: Type) -> Option<Phi> {
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

/// The PHI fields an expression reads, for messages.
pub(crate) fn phi_read(compiled: &Compiled, input: &Schema) -> Vec<String> {
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

/// The event-time field of the rows an event-time operator reads; a problem at the node when
/// they have none.
pub(crate) fn event_time(
    text: &JobText,
    at: usize,
    path: &str,
    input: &Schema,
    errors: &mut Vec<Diagnostic>,
) -> Option<usize> {
    if input.time.is_none() {
        errors.push(text.diag(
            at,
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
pub(crate) type AggregateCall<'a> = (
    vitalflow_operators::window::AggFn,
    Option<(&'a str, usize)>,
    Option<Compiled>,
);

/// An aggregate call `func(argument)`: the function, the argument's text and its compiled
/// expression (`None` for `count()`); its problems, at their place, otherwise.
pub(crate) fn aggregate_call<'a>(
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
