//! `kind = "parquet"`: canonical FHIR resources as Parquet, Hive-partitioned by month or day;
//! rows of a declared schema, and alert events, in one folder.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use timely::dataflow::operators::vec::Map;
use toml::Spanned;
use vitalflow_connectors::parquet::{ParquetWriter, Partitioning};
use vitalflow_connectors::parquet_rows::RowParquetWriter;
use vitalflow_model::alert::AlertEvent;
use vitalflow_model::row::Schema;

use super::settings::Duration;
use super::{NodeSpec, Operator, Output, Prepare, Resolve};
use crate::job::{PortKind, schema};
use crate::runtime::alerts;
use crate::runtime::builder::{Builder, PlannedNode, as_alerts, as_fhir, as_rows};
use crate::runtime::ops::{RollPolicy, rolling_sink};
use crate::runtime::rows::RowParquetSink;
use crate::runtime::stages::ParquetSink;

/// `kind = "parquet"`: canonical FHIR resources as Parquet, Hive-partitioned by month or day
/// (rows of a declared schema: one folder).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ParquetConfig {
    /// Always `"parquet"`.
    pub kind: String,
    /// Upstream ports (FHIR resources).
    pub inputs: Vec<Spanned<String>>,
    /// Folder under the output folder. Default: `canonical`.
    #[serde(default = "canonical")]
    pub path: String,
    /// Write files once this many completed rows are buffered. Default: 250000.
    #[serde(default = "roll_rows")]
    pub roll_rows: usize,
    /// Write files at least this often while rows are buffered (`500ms`, `5s`, `1m`). Default: `5s`.
    #[serde(default = "roll_interval")]
    pub roll_interval: Duration,
    /// FHIR resources: folders per `month` (`month=YYYY-MM`, the default) or `day`
    /// (`date=YYYY-MM-DD`) of their partition date.
    #[serde(default)]
    pub partition: Partitioning,
}

fn canonical() -> String {
    "canonical".into()
}
const fn roll_rows() -> usize {
    250_000
}
/// Default: `5s` (shared with `jsonl`).
pub(crate) const fn roll_interval() -> Duration {
    Duration::from_millis(5_000)
}

impl NodeSpec for ParquetConfig {
    fn kind(&self) -> &'static str {
        "parquet"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Fhir, PortKind::Rows, PortKind::Alert]
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        schema::refuse_phi(r);
        Vec::new()
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let alerts = p.node.inputs.iter().any(|i| {
            p.job
                .nodes
                .iter()
                .find(|n| n.name == i.node)
                .and_then(|n| n.port_kind(&i.port))
                == Some(PortKind::Alert)
        });
        if alerts {
            return Some(Box::new(ParquetOp {
                dir: p.out.join(&self.path),
                policy: RollPolicy {
                    rows: self.roll_rows.max(1),
                    interval: self.roll_interval.0,
                },
                rows: Some(Arc::new(alerts::alert_schema())),
                alerts: true,
                partitioning: self.partition,
            }));
        }
        Some(Box::new(ParquetOp {
            alerts: false,
            dir: p.out.join(&self.path),
            policy: RollPolicy {
                rows: self.roll_rows.max(1),
                interval: self.roll_interval.0,
            },
            rows: p.input_schema().map(|s| Arc::new(s.clone())),
            partitioning: self.partition,
        }))
    }
}

/// A planned Parquet sink.
pub struct ParquetOp {
    /// Its folder.
    pub dir: PathBuf,
    /// When files are written.
    pub policy: RollPolicy,
    /// Rows of a declared schema (otherwise FHIR resources).
    pub rows: Option<Arc<Schema>>,
    /// Alert events, written as rows of [`alerts::alert_schema`].
    pub alerts: bool,
    /// FHIR resources: folders by month or day.
    pub partitioning: Partitioning,
}

impl Operator for ParquetOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let worker = b.scope.index();
        let out = b.plan.out.clone();
        let c = match &self.rows {
            Some(schema) => {
                let input = if self.alerts {
                    b.inputs(&node.inputs, as_alerts)
                        .map(|e: AlertEvent| alerts::alert_row(&e))
                } else {
                    b.inputs(&node.inputs, as_rows)
                };
                let writer = RowParquetSink {
                    out,
                    writer: RowParquetWriter::new(self.dir.clone(), schema),
                };
                let f = b.failure.clone();
                rolling_sink(input, name, worker, self.policy, writer, counters, f)
            }
            None => {
                let input = b.inputs(&node.inputs, as_fhir);
                let writer = ParquetSink {
                    out,
                    writer: ParquetWriter::new(self.dir.clone(), self.partitioning),
                };
                let f = b.failure.clone();
                rolling_sink(input, name, worker, self.policy, writer, counters, f)
            }
        };
        b.commit(name, c);
    }

    fn output(&self) -> Output {
        Output::Folder {
            dir: self.dir.clone(),
            private: false,
        }
    }
}
