//! `kind = "blackhole"`: counts its input records and keeps none, to measure the nodes upstream
//! of it without the cost of writing their output.

use serde::Deserialize;
use toml::Spanned;

use super::{NodeSpec, Operator, Output, Prepare};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port};
use crate::runtime::ops::blackhole;

/// `kind = "blackhole"`: counts its input records and keeps none.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BlackholeConfig {
    /// Always `"blackhole"`.
    pub kind: String,
    /// Upstream ports (anything but PHI-bearing parsed records and dead letters).
    pub inputs: Vec<Spanned<String>>,
}

impl NodeSpec for BlackholeConfig {
    fn kind(&self) -> &'static str {
        "blackhole"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[]
    }

    fn accepts(&self) -> &'static [PortKind] {
        use PortKind as P;
        &[
            P::Raw,
            P::Deidentified,
            P::Fhir,
            P::DomainEvent,
            P::AuditRecord,
            P::Rows,
            P::Alert,
        ]
    }

    fn prepare(&self, _p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(BlackholeOp))
    }
}

/// A planned blackhole.
pub struct BlackholeOp;

impl Operator for BlackholeOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let counters = b.counters(&node.name);
        for (n, p) in &node.inputs {
            match b.port(n, p) {
                Some(Port::Raw(s)) => blackhole(&s, &counters),
                Some(Port::Clinical(s)) => blackhole(&s, &counters),
                Some(Port::Deid(s)) => blackhole(&s, &counters),
                Some(Port::Fhir(s)) => blackhole(&s, &counters),
                Some(Port::Events(s)) => blackhole(&s, &counters),
                Some(Port::Audit(s)) => blackhole(&s, &counters),
                Some(Port::Dead(s)) => blackhole(&s, &counters),
                Some(Port::Rows(s)) => blackhole(&s, &counters),
                Some(Port::Alerts(s)) => blackhole(&s, &counters),
                // Identified notifications go to clinical delivery sinks only.
                Some(Port::Notices(_)) | None => {}
            }
        }
    }

    fn output(&self) -> Output {
        Output::External
    }
}
