//! `kind = "audit"`: every domain event recorded in a hash chain.

use serde::Deserialize;
use toml::Spanned;

use super::{NodeSpec, Operator, Output, Prepare};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port, as_events};
use crate::runtime::saga::audit;

/// `kind = "audit"`: no settings but its inputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditConfig {
    /// Always `"audit"`.
    pub kind: String,
    /// Upstream ports (the `events` ports of stages).
    pub inputs: Vec<Spanned<String>>,
}

impl NodeSpec for AuditConfig {
    fn kind(&self) -> &'static str {
        "audit"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[("out", PortKind::AuditRecord)]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::DomainEvent]
    }

    fn prepare(&self, _p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(AuditOp))
    }
}

/// A planned audit node.
pub struct AuditOp;

impl Operator for AuditOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_events);
        let head = b
            .plan
            .checkpoint
            .as_ref()
            .and_then(|c| c.audit_head.clone());
        let records = audit(input, name, counters, head);
        b.output(name, "out", Port::Audit(records));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
