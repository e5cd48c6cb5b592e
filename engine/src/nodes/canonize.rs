//! `kind = "canonize"`: de-identified records to canonical FHIR R4 resources.

use serde::Deserialize;
use timely::dataflow::channels::pact::Pipeline;
use toml::Spanned;

use super::{NodeSpec, Operator, Output, Prepare};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port, as_deid};
use crate::runtime::ops::stage;
use crate::runtime::saga::SagaRole;
use crate::runtime::stages::CanonizeLogic;

/// `kind = "canonize"`: no settings but its inputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CanonizeConfig {
    /// Always `"canonize"`.
    pub kind: String,
    /// Upstream ports (de-identified records).
    pub inputs: Vec<Spanned<String>>,
}

impl NodeSpec for CanonizeConfig {
    fn kind(&self) -> &'static str {
        "canonize"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Fhir),
            ("events", PortKind::DomainEvent),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Deidentified]
    }

    fn is_stage(&self) -> bool {
        true
    }

    fn prepare(&self, _p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(CanonizeOp))
    }
}

/// A planned canonize node.
pub struct CanonizeOp;

impl Operator for CanonizeOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_deid);
        let upstream = b.upstream_stage(&node.inputs);
        let logic = CanonizeLogic {
            stage: name.to_owned(),
        };
        let (o, d, s) = stage(input, Pipeline, name, logic, counters);
        b.output(name, "out", Port::Fhir(o));
        b.output(name, "dead-letter", Port::Dead(d));
        b.stage_stats(name, s, SagaRole::Canonization, upstream);
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
