//! `kind = "filter"`: keeps the records for which a condition is true.

use std::sync::Arc;

use serde::Deserialize;
use timely::dataflow::channels::pact::Pipeline;
use toml::Spanned;
use vitalflow_model::row::{Schema, Type};
use vitalflow_operators::expression::Compiled;

use super::{NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::PortKind;
use crate::job::schema::{expression, type_name, whole};
use crate::runtime::builder::{Builder, PlannedNode, Port, as_rows};
use crate::runtime::ops::stage;
use crate::runtime::rows::FilterLogic;

/// `kind = "filter"`: keeps the records for which a condition is true.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilterConfig {
    /// Always `"filter"`.
    pub kind: String,
    /// Upstream ports (rows of one schema).
    pub inputs: Vec<Spanned<String>>,
    /// A boolean expression; records where it is false or null are dropped.
    pub condition: Spanned<String>,
    /// The compiled condition, once resolved.
    #[serde(skip)]
    pub(crate) compiled: Resolved<Compiled>,
}

impl NodeSpec for FilterConfig {
    fn kind(&self) -> &'static str {
        "filter"
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
        let what = format!("{}.condition", r.path);
        match expression(r.text, &self.condition, &input, &what) {
            Err(d) => r.errors.extend(d),
            Ok(c) if c.ty() != Some(Type::Bool) => {
                let d = whole(
                    r.text,
                    &self.condition,
                    format!(
                        "`{what}` must be a boolean expression, not {}",
                        type_name(c.ty())
                    ),
                );
                r.errors.push(d);
            }
            Ok(c) => self.compiled.set(c),
        }
        vec![("out", input)]
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(FilterOp {
            condition: Arc::clone(p.resolved(&self.compiled)?),
            schema: Arc::new(p.rows()?),
        }))
    }
}

/// A planned filter.
pub struct FilterOp {
    /// The condition.
    pub condition: Arc<Compiled>,
    /// The input rows' schema.
    pub schema: Arc<Schema>,
}

impl Operator for FilterOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_rows);
        let logic = FilterLogic {
            stage: name.to_owned(),
            condition: Arc::clone(&self.condition),
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
