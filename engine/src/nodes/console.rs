//! `kind = "console"`: a human-readable line per alert on standard output.

use serde::Deserialize;
use toml::Spanned;

use super::{NodeSpec, Operator, Output, Prepare};
use crate::job::PortKind;
use crate::runtime::alerts;
use crate::runtime::builder::{Builder, PlannedNode, as_alerts};

/// `kind = "console"`: a human-readable line per alert on standard output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsoleConfig {
    /// Always `"console"`.
    pub kind: String,
    /// Upstream ports (alert events).
    pub inputs: Vec<Spanned<String>>,
    /// At most this many lines a second; the rest are counted in one line. Default: 50.
    #[serde(default = "limit")]
    pub limit: u32,
}

const fn limit() -> u32 {
    50
}

impl NodeSpec for ConsoleConfig {
    fn kind(&self) -> &'static str {
        "console"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Alert]
    }

    fn prepare(&self, _p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(ConsoleOp {
            limit: self.limit.max(1),
        }))
    }
}

/// A planned console sink.
pub struct ConsoleOp {
    /// At most this many lines a second.
    pub limit: u32,
}

impl Operator for ConsoleOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let counters = b.counters(&node.name);
        let input = b.inputs(&node.inputs, as_alerts);
        alerts::console(input, self.limit, counters);
    }

    fn output(&self) -> Output {
        Output::External
    }
}
