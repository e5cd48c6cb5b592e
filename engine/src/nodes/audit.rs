//! `kind = "audit"`: every domain event recorded in a hash chain, keyed with an audit key when
//! one is given.

use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{NodeSpec, Operator, Output, Prepare};
use crate::audit_trail::{AuditKey, AuditKeySource};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port, as_events};
use crate::runtime::saga::{Unrecorded, audit};

/// `kind = "audit"`: its inputs, and the audit key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditConfig {
    /// Always `"audit"`.
    pub kind: String,
    /// Upstream ports (the `events` ports of stages).
    pub inputs: Vec<Spanned<String>>,
    /// The audit key, `env:NAME` (an environment variable) or `file:PATH` (a file; relative to
    /// the job file): each record's hash is then HMAC-SHA256 with it, which only its holders can
    /// compute. Not the pseudonymization key, and never `ephemeral` (the trail is verified with
    /// it after the run). Default: none (SHA-256, evident against accidental damage only).
    pub key: Option<Spanned<AuditKeySource>>,
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

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let key = match &self.key {
            None => None,
            Some(source) => match AuditKey::load(source.get_ref(), &p.base) {
                Ok(key) => Some(key),
                Err(e) => {
                    let path = p.path.clone();
                    p.at(source.span(), format!("{path}.key: {e}"));
                    return None;
                }
            },
        };
        Some(Box::new(AuditOp {
            key,
            pending: Arc::default(),
        }))
    }
}

/// A planned audit node.
pub struct AuditOp {
    /// The audit key, if the chain is keyed.
    pub key: Option<AuditKey>,
    /// The events received for times not yet complete (worker 0's), which a failed run
    /// compensates.
    pub pending: Unrecorded,
}

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
        let records = audit(
            input,
            name,
            counters,
            (head, self.key.clone()),
            Arc::clone(&self.pending),
        );
        b.output(name, "out", Port::Audit(records));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
