//! `kind = "jsonl"`: JSON lines (audit records, domain events, alerts, FHIR resources as
//! NDJSON, rows).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use vitalflow_model::alert::AlertEvent;
use vitalflow_model::canonical::CanonicalResource;
use vitalflow_model::envelope::{AuditRecord, DomainEvent};
use vitalflow_model::row::Schema;

use super::parquet::roll_interval;
use super::settings::Duration;
use super::{NodeSpec, Operator, Output, Prepare, Resolve};
use crate::job::{PortKind, schema};
use crate::runtime::builder::{
    Builder, PlannedNode, Port, as_alerts, as_audit, as_events, as_fhir, as_rows,
};
use crate::runtime::ops::{RollPolicy, rolling_sink};
use crate::runtime::rows::RowJsonlSink;

/// `kind = "jsonl"`: JSON lines (audit records, domain events, FHIR resources as NDJSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JsonlConfig {
    /// Always `"jsonl"`.
    pub kind: String,
    /// Upstream ports, all of one kind.
    pub inputs: Vec<Spanned<String>>,
    /// Folder under the output folder. Required.
    pub path: String,
    /// Write files at least this often while lines are buffered. Default: `5s`.
    #[serde(default = "roll_interval")]
    pub roll_interval: Duration,
    /// Write files once this many completed lines are buffered. Default: no limit (only
    /// `roll-interval` and the end of the input write).
    pub roll_rows: Option<usize>,
}

impl NodeSpec for JsonlConfig {
    fn kind(&self) -> &'static str {
        "jsonl"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[]
    }

    fn accepts(&self) -> &'static [PortKind] {
        use PortKind as P;
        &[P::AuditRecord, P::DomainEvent, P::Fhir, P::Rows, P::Alert]
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        schema::refuse_phi(r);
        Vec::new()
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(JsonlOp {
            dir: p.out.join(&self.path),
            policy: RollPolicy {
                rows: self.roll_rows.map_or(usize::MAX, |n| n.max(1)),
                interval: self.roll_interval.0,
            },
            rows: p.input_schema().map(|s| Arc::new(s.clone())),
        }))
    }
}

/// A planned JSON-lines sink.
pub struct JsonlOp {
    /// Its folder.
    pub dir: PathBuf,
    /// When files are written.
    pub policy: RollPolicy,
    /// Rows of a declared schema (otherwise records of the input's kind).
    pub rows: Option<Arc<Schema>>,
}

impl Operator for JsonlOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let (dir, policy) = (&self.dir, self.policy);
        if let Some(schema) = &self.rows {
            let name = node.name.as_str();
            let counters = b.counters(name);
            let input = b.inputs(&node.inputs, as_rows);
            let writer = RowJsonlSink {
                out: b.plan.out.clone(),
                dir: dir.clone(),
                schema: Arc::clone(schema),
            };
            let (worker, f) = (b.scope.index(), b.failure.clone());
            let c = rolling_sink(input, name, worker, policy, writer, counters, f);
            b.commit(name, c);
            return;
        }
        let kind = node.inputs.first().and_then(|(n, port)| b.port(n, port));
        match kind {
            Some(Port::Audit(_)) => {
                b.jsonl_sink(node, as_audit, dir, policy, false, to_json::<AuditRecord>);
            }
            Some(Port::Events(_)) => {
                b.jsonl_sink(node, as_events, dir, policy, false, to_json::<DomainEvent>);
            }
            Some(Port::Alerts(_)) => {
                b.jsonl_sink(node, as_alerts, dir, policy, false, to_json::<AlertEvent>);
            }
            _ => b.jsonl_sink(
                node,
                as_fhir,
                dir,
                policy,
                false,
                |r: &CanonicalResource| serde_json::from_str(&r.resource).unwrap_or_default(),
            ),
        }
    }

    fn output(&self) -> Output {
        Output::Folder {
            dir: self.dir.clone(),
            private: false,
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}
