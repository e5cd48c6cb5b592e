//! `kind = "kafka"` (a sink): records written to a topic, one JSON document each (dead letters:
//! the original bytes, with the reason in headers).

use crate::nodes::settings::Duration;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use vitalflow_connectors::kafka::{ClientSettings, PropertyValue};
use vitalflow_model::DeadLetter;
use vitalflow_model::alert::AlertEvent;
use vitalflow_model::canonical::CanonicalResource;
use vitalflow_model::envelope::{AuditRecord, DomainEvent};
use vitalflow_model::row::{Row, Schema};

use super::super::{Check, NodeSpec, Operator, Output, Prepare, Resolve};
use super::{check_topic, client_settings, defaults};
use crate::job::{PortKind, schema};
use crate::runtime::builder::{
    Builder, PlannedNode, Port, as_alerts, as_audit, as_dead, as_events, as_fhir, as_rows,
};
use crate::runtime::error::Fault;
use crate::runtime::kafka_sink::{Render, Target, kafka_sink, kafka_txn_sink};

/// `kind = "kafka"` (a sink): domain events, audit records, FHIR resources, de-identified rows
/// or dead letters, one JSON document per record (dead letters: the original bytes, with the
/// reason in headers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSinkConfig {
    /// Always `"kafka"`.
    pub kind: String,
    /// Upstream ports, all of one kind.
    pub inputs: Vec<Spanned<String>>,
    /// Bootstrap brokers, as for sources. Default: `embedded`.
    #[serde(default = "defaults::brokers")]
    pub brokers: Spanned<String>,
    /// The topic.
    pub topic: Spanned<String>,
    /// Partitions the embedded broker creates the topic with. Default: 4.
    #[serde(default = "defaults::partitions")]
    pub partitions: i32,
    /// librdkafka properties, as for sources.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// How long a record whose delivery fails (its broker away, restarting) is sent again
    /// before the run fails. Default: `5m`.
    #[serde(default = "retry_for")]
    pub retry_for: Duration,
    /// `at-least-once` (default): records are sent as they come, and a restarted run may send
    /// some again. `exactly-once`: records are written in Kafka transactions committed with
    /// the job's checkpoints, so a `read_committed` reader sees each once, about a checkpoint
    /// (1 s) after it was made. Needs a job that checkpoints and brokers with transactions.
    #[serde(default)]
    pub delivery: Delivery,
}

/// How a Kafka sink delivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Sent as records come; some may be sent again after a restart.
    #[default]
    AtLeastOnce,
    /// In transactions committed with the checkpoints.
    ExactlyOnce,
}

const fn retry_for() -> Duration {
    Duration::from_millis(300_000)
}

impl NodeSpec for KafkaSinkConfig {
    fn kind(&self) -> &'static str {
        "kafka"
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
            P::AuditRecord,
            P::DomainEvent,
            P::Fhir,
            P::Rows,
            P::DeadLetter,
            P::Alert,
        ]
    }

    fn check(&self, c: &mut Check<'_>) {
        check_topic(c, &self.topic, self.partitions);
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        schema::refuse_phi(r);
        Vec::new()
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(KafkaSinkOp {
            settings: client_settings(&self.brokers, &self.properties, &p.base, p.embedded),
            topic: self.topic.get_ref().clone(),
            fault: super::fault(&self.brokers),
            retry_for: self.retry_for.0,
            delivery: self.delivery,
        }))
    }
}

/// A planned Kafka sink.
pub struct KafkaSinkOp {
    /// The brokers.
    pub settings: ClientSettings,
    /// The topic.
    pub topic: String,
    /// Whose fault its failures are.
    pub fault: Fault,
    /// How long a failing record is sent again.
    pub retry_for: std::time::Duration,
    /// At least once, or in transactions.
    pub delivery: Delivery,
}

impl KafkaSinkOp {
    /// The sink's operator over `input`: at least once, or in the job's transactions.
    fn sink<'s, T: Clone + Send + 'static>(
        &self,
        b: &mut Builder<'s, '_>,
        input: crate::runtime::ops::VecStream<'s, T>,
        name: &str,
        render: Render<T>,
    ) -> crate::runtime::ops::VecStream<'s, crate::runtime::ops::SinkCommit> {
        let counters = b.counters(name);
        let failure = b.failure.clone();
        match self.delivery {
            Delivery::AtLeastOnce => {
                kafka_sink(input, name, self.target(), render, counters, failure)
            }
            Delivery::ExactlyOnce => {
                let transactions = b
                    .plan
                    .checkpoint
                    .as_ref()
                    .and_then(|c| c.transactions.clone());
                kafka_txn_sink(
                    input,
                    name,
                    self.topic.clone(),
                    render,
                    counters,
                    transactions,
                    failure,
                )
            }
        }
    }

    fn target(&self) -> Target {
        Target {
            settings: self.settings.clone(),
            topic: self.topic.clone(),
            fault: self.fault,
            retry_for: self.retry_for,
        }
    }
}

impl Operator for KafkaSinkOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let (name, inputs) = (node.name.as_str(), &node.inputs);
        let kind = inputs.first().and_then(|(n, port)| b.port(n, port));
        let c = match kind {
            Some(Port::Audit(_)) => {
                let input = b.inputs(inputs, as_audit);
                let render = keyed_json(|r: &AuditRecord| &r.event.metadata.correlation_id);
                self.sink(b, input, name, render)
            }
            Some(Port::Events(_)) => {
                let input = b.inputs(inputs, as_events);
                let render = keyed_json(|e: &DomainEvent| &e.metadata.correlation_id);
                self.sink(b, input, name, render)
            }
            Some(Port::Dead(_)) => {
                let input = b.inputs(inputs, as_dead);
                self.sink(b, input, name, dead_letter_render())
            }
            Some(Port::Alerts(_)) => {
                let input = b.inputs(inputs, as_alerts);
                let render = keyed_json(|e: &AlertEvent| &e.payload.patient);
                self.sink(b, input, name, render)
            }
            Some(Port::Rows(_)) => {
                let input = b.inputs(inputs, as_rows);
                let render = rows_render(b.row_schema(inputs));
                self.sink(b, input, name, render)
            }
            _ => {
                let input = b.inputs(inputs, as_fhir);
                let render: Render<CanonicalResource> = Arc::new(|r: &CanonicalResource| {
                    (
                        Some(r.patient.clone().into_bytes()),
                        r.resource.clone().into_bytes(),
                        Vec::new(),
                    )
                });
                self.sink(b, input, name, render)
            }
        };
        b.commit(name, c);
    }

    fn output(&self) -> Output {
        Output::External
    }
}

/// A dead letter as a Kafka record: its original bytes, the reason and origin in headers.
fn dead_letter_render() -> Render<DeadLetter> {
    Arc::new(|d: &DeadLetter| {
        let headers = vec![
            ("vitalflow-reason".to_owned(), d.reason.clone().into_bytes()),
            ("vitalflow-stage".to_owned(), d.stage.clone().into_bytes()),
            ("vitalflow-source".to_owned(), d.source.clone().into_bytes()),
            (
                "vitalflow-location".to_owned(),
                d.location.clone().into_bytes(),
            ),
            (
                "vitalflow-format".to_owned(),
                d.format.as_str().as_bytes().to_vec(),
            ),
        ];
        (None, d.bytes.clone(), headers)
    })
}

/// A row as a Kafka record: its JSON, keyed by its key field.
fn rows_render(key_of: Arc<(Schema, Option<usize>)>) -> Render<Row> {
    Arc::new(move |r: &Row| {
        let (schema, key) = &*key_of;
        let key = key
            .and_then(|k| r.values.get(k))
            .map(|v| match v.to_json() {
                serde_json::Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            });
        (
            key,
            serde_json::to_vec(&schema.to_json(r)).unwrap_or_default(),
            Vec::new(),
        )
    })
}

/// A Kafka rendering: the record as JSON, keyed by a string of it (its saga's correlation id).
fn keyed_json<T: serde::Serialize + 'static>(key: fn(&T) -> &String) -> Render<T> {
    Arc::new(move |r: &T| {
        (
            Some(key(r).clone().into_bytes()),
            serde_json::to_vec(r).unwrap_or_default(),
            Vec::new(),
        )
    })
}
