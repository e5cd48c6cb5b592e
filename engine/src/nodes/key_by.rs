//! `kind = "key-by"`: routes records by a key, so all records of one key meet on one worker.

use std::sync::Arc;

use serde::Deserialize;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Exchange as _;
use toml::Spanned;
use vitalflow_model::row::{Field, Row, Schema, Value};
use vitalflow_operators::expression::Compiled;

use super::{NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::schema::{Gaps, bare_field, expression, taint, whole};
use crate::job::{Diagnostic, JobText, PortKind};
use crate::runtime::builder::{Builder, PlannedNode, Port, as_rows};
use crate::runtime::ops::stage;
use crate::runtime::rows::{KeyLogic, PassLogic};

/// `kind = "key-by"`: routes records by a key, so all records of one key meet on one worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeyByConfig {
    /// Always `"key-by"`.
    pub kind: String,
    /// Upstream ports (rows of one schema).
    pub inputs: Vec<Spanned<String>>,
    /// The key expression. A bare field name keys by that field; anything else is computed
    /// into the field named by `as`.
    pub key: Spanned<String>,
    /// The field a computed key is stored in. Default: `key`.
    #[serde(rename = "as")]
    pub field: Option<String>,
    /// The key field of the output rows, and the expression if it is computed, once resolved.
    #[serde(skip)]
    pub(crate) resolved: Resolved<(usize, Option<Arc<Compiled>>)>,
}

impl NodeSpec for KeyByConfig {
    fn kind(&self) -> &'static str {
        "key-by"
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
        let bare = bare_field(self.key.get_ref(), &input).is_some();
        let (output, compiled) = key_by_schema(r.text, r.path, self, input, r.gaps, r.errors);
        if let Some(compiled) = compiled {
            let key = output.key.unwrap_or(0);
            self.resolved
                .set((key, (!bare).then(|| Arc::new(compiled))));
        }
        vec![("out", output)]
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let (key, expr) = &**p.resolved(&self.resolved)?;
        Some(Box::new(KeyByOp {
            key: *key,
            expr: expr.clone(),
            schema: Arc::new(p.rows()?),
        }))
    }
}

/// The rows a `key-by` outputs and its compiled key; when its key fails they are keyed by
/// nothing known (noted in `gaps`).
fn key_by_schema(
    text: &JobText,
    path: &str,
    c: &KeyByConfig,
    mut input: Schema,
    gaps: &mut Gaps,
    errors: &mut Vec<Diagnostic>,
) -> (Schema, Option<Compiled>) {
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
            return (failed(input, gaps), None);
        }
    };
    if let Some(i) = bare_field(c.key.get_ref(), &input) {
        input.key = Some(i);
        gaps.key = false;
        return (input, Some(compiled));
    }
    let Some(ty) = compiled.ty() else {
        errors.push(whole(
            text,
            &c.key,
            format!("`{what}`: a key cannot be `null`"),
        ));
        return (failed(input, gaps), None);
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
        return (failed(input, gaps), None);
    }
    input.key = Some(input.fields.len());
    input.fields.push(field);
    gaps.key = false;
    gaps.fields.remove(&name);
    (input, Some(compiled))
}

/// A planned `key-by`.
pub struct KeyByOp {
    /// The key field of the output rows.
    pub key: usize,
    /// The key expression, when the key is computed.
    pub expr: Option<Arc<Compiled>>,
    /// The input rows' schema.
    pub schema: Arc<Schema>,
}

impl Operator for KeyByOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_rows);
        let k = self.key;
        let route = move |r: &Row| r.values.get(k).map_or(0, Value::route_hash);
        let (o, d) = match &self.expr {
            None => {
                let (o, d, _) = stage(input, Exchange::new(route), name, PassLogic, counters);
                (o, d)
            }
            Some(e) => {
                let logic = KeyLogic {
                    stage: name.to_owned(),
                    key: Arc::clone(e),
                    schema: Arc::clone(&self.schema),
                };
                let (o, d, _) = stage(input, Pipeline, name, logic, counters);
                (o.exchange(route), d)
            }
        };
        b.output(name, "out", Port::Rows(o));
        b.output(name, "dead-letter", Port::Dead(d));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
