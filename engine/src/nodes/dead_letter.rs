//! `kind = "dead-letter"`: rejected input with the reason. Holds raw PHI: an owner-only folder.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;
use vitalflow_connectors::jsonl::dead_letter_json;

use super::{NodeSpec, Operator, Output, Prepare};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, as_dead};
use crate::runtime::ops::RollPolicy;

/// `kind = "dead-letter"`: rejected input with the reason. Holds raw PHI: owner-only folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeadLetterConfig {
    /// Always `"dead-letter"`.
    pub kind: String,
    /// Upstream `dead-letter` ports.
    pub inputs: Vec<Spanned<String>>,
    /// Folder under the output folder. Default: `dead-letter`.
    #[serde(default = "dead_letter")]
    pub path: String,
}

fn dead_letter() -> String {
    "dead-letter".into()
}

impl NodeSpec for DeadLetterConfig {
    fn kind(&self) -> &'static str {
        "dead-letter"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::DeadLetter]
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(DeadLetterOp {
            dir: p.out.join(&self.path),
        }))
    }
}

/// A planned dead-letter sink.
pub struct DeadLetterOp {
    /// Its folder.
    pub dir: PathBuf,
}

impl Operator for DeadLetterOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let policy = RollPolicy {
            rows: usize::MAX,
            interval: std::time::Duration::from_secs(5),
        };
        b.jsonl_sink(node, as_dead, &self.dir, policy, true, dead_letter_json);
    }

    fn output(&self) -> Output {
        Output::Folder {
            dir: self.dir.clone(),
            private: true,
        }
    }
}
