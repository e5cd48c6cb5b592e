//! `kind = "map"` (the input fields plus computed ones) and `kind = "project"` (only the listed
//! fields).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use timely::dataflow::channels::pact::Pipeline;
use toml::Spanned;
use vitalflow_model::row::{Field, Schema};
use vitalflow_operators::expression::Compiled;

use super::{Decode, NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::schema::{Gaps, bare_field, expression, remove_field, taint, whole};
use crate::job::{Diagnostic, JobText, PortKind};
use crate::runtime::builder::{Builder, PlannedNode, Port, as_rows};
use crate::runtime::ops::stage;
use crate::runtime::rows::{MapLogic, Slot};

/// `kind = "map"` (the input fields plus these) or `"project"` (only these): computed fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MapConfig {
    /// `"map"` or `"project"`.
    pub kind: String,
    /// Upstream ports (rows of one schema).
    pub inputs: Vec<Spanned<String>>,
    /// Output field name → expression, in order. `map` replaces an input field of the same
    /// name in place and appends new ones.
    #[serde(rename = "fields")]
    pub fields_table: Spanned<serde::de::IgnoredAny>,
    /// The fields, in declared order, with their places in the job file.
    #[serde(skip)]
    pub fields: Vec<(Spanned<String>, Spanned<String>)>,
    /// Each output field copied from the input or computed, once resolved.
    #[serde(skip)]
    pub(crate) slots: Resolved<Vec<Slot>>,
}

impl MapConfig {
    /// Whether it is a `project` (only the listed fields).
    #[must_use]
    pub fn project(&self) -> bool {
        self.kind == "project"
    }
}

impl NodeSpec for MapConfig {
    fn parse(d: &mut Decode<'_, '_>) -> Option<Self> {
        let mut c: Self = d.decode()?;
        c.fields = d.named_strings("fields", "an expression")?;
        Some(c)
    }

    fn kind(&self) -> &'static str {
        if self.project() { "project" } else { "map" }
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Rows),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Rows]
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        let Some(input) = r.input() else {
            return Vec::new();
        };
        let (output, compiled) = map_schema(
            r.text,
            r.path,
            self.project(),
            &self.fields,
            &input,
            r.gaps,
            r.errors,
        );
        let mut slots = Vec::with_capacity(output.fields.len());
        for field in &output.fields {
            let declared = self.fields.iter().find(|(n, _)| *n.get_ref() == field.name);
            let slot = match declared {
                Some((_, source)) => match bare_field(source.get_ref(), &input) {
                    Some(i) => Slot::Copy(i),
                    None => match compiled.get(&field.name) {
                        Some(e) => Slot::Compute(Arc::clone(e), field.name.clone()),
                        None => continue,
                    },
                },
                None => match input.index(&field.name) {
                    Some(i) if !self.project() => Slot::Copy(i),
                    _ => continue,
                },
            };
            slots.push(slot);
        }
        self.slots.set(slots);
        vec![("out", output)]
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(MapOp {
            slots: Arc::clone(p.resolved(&self.slots)?),
            schema: Arc::new(p.rows()?),
        }))
    }
}

/// The rows a `map` or `project` outputs, and each computed field's expression; a field whose
/// expression fails is left out (noted in `gaps`).
fn map_schema(
    text: &JobText,
    path: &str,
    project: bool,
    fields: &[(Spanned<String>, Spanned<String>)],
    input: &Schema,
    gaps: &mut Gaps,
    errors: &mut Vec<Diagnostic>,
) -> (Schema, BTreeMap<String, Arc<Compiled>>) {
    let mut compiled_fields = BTreeMap::new();
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
                Some(ty) => {
                    let field = Field {
                        name: name.get_ref().clone(),
                        ty,
                        nullable: compiled.nullable(),
                        phi: taint(&compiled, source.get_ref(), input, ty),
                    };
                    compiled_fields.insert(name.get_ref().clone(), Arc::new(compiled));
                    Some(field)
                }
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
    (out, compiled_fields)
}

/// A planned `map` / `project`.
pub struct MapOp {
    /// One slot per output field.
    pub slots: Arc<Vec<Slot>>,
    /// The input rows' schema.
    pub schema: Arc<Schema>,
}

impl Operator for MapOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_rows);
        let logic = MapLogic {
            stage: name.to_owned(),
            slots: Arc::clone(&self.slots),
            schema: Arc::clone(&self.schema),
        };
        let (o, d, _) = stage(input, Pipeline, name, logic, counters);
        b.output(name, "out", Port::Rows(o));
        b.output(name, "dead-letter", Port::Dead(d));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
