//! `kind = "kafka"` (a source): records of one topic, read partition by partition.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use timely::dataflow::channels::pact::Pipeline;
use toml::Spanned;
use vitalflow_connectors::kafka::PropertyValue;
use vitalflow_model::RawFormat;
use vitalflow_model::row::Schema;
use vitalflow_operators::decode::Decoder;

use super::super::generator::Feed;
use super::super::records::{self, Declared, FieldConfig, Records};
use super::super::settings::{Duration, DurationOr, OrOff, words};
use super::super::{Check, NodeKind, NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use super::{check_topic, client_settings, defaults};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port};
use crate::runtime::checkpoint::PositionLog;
use crate::runtime::kafka_source::{EventTime, KafkaSource, kafka};
use crate::runtime::ops::stage;
use crate::runtime::plan::SourceLog;
use crate::runtime::progress::SourceOffsets;
use crate::runtime::rows::{DecodeLogic, Tombstone};
use crate::runtime::saga::SagaRole;

words! {
    /// How a topic's records are written.
    Format, "format" {
        /// Event envelopes.
        Envelope = "envelope",
        /// FHIR R4 resources.
        Fhir = "fhir",
        /// HL7 v2 messages.
        Hl7v2 = "hl7v2",
        /// JSON documents of a declared schema.
        Json = "json",
        /// CSV rows of a declared schema.
        Csv = "csv",
    }
}

words! {
    /// When a Kafka source stops.
    Stop, "stop mode" {
        /// Runs until stopped.
        Never = "never",
        /// Stops at the end the partitions had when the job started.
        End = "end",
    }
}

/// `kind = "kafka"` (a source): records of one topic, read partition by partition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSourceConfig {
    /// Always `"kafka"`.
    pub kind: String,
    /// Bootstrap brokers, `host:port,...`; `embedded` (or empty) starts vitalflow's embedded
    /// broker. Default: `embedded`.
    #[serde(default = "defaults::brokers")]
    pub brokers: Spanned<String>,
    /// The topic.
    pub topic: Spanned<String>,
    /// `envelope`, `fhir`, `hl7v2` (dead-lettered until HL7 v2 is supported), or, with a
    /// declared schema in `fields`, `json` (one document per record) or `csv` (one row per
    /// record, columns in declared order unless `header` names them).
    pub format: Spanned<Format>,
    /// `json` and `csv` only: the declared schema, as for files.
    pub fields: Option<Spanned<Vec<FieldConfig>>>,
    /// `json` and `csv`: the timestamp field holding each record's event time. Without it, and
    /// for `fhir` and `hl7v2`, the Kafka record's timestamp is the event time; `envelope` uses
    /// the envelope's `metadata.timestamp`.
    pub event_time: Option<Spanned<String>>,
    /// `json` and `csv` only: the field identifying what records are about.
    pub key: Option<Spanned<String>>,
    /// `csv` only: the column names of every record (the header line is not in the topic).
    pub header: Option<bool>,
    /// The consumer group offsets are committed under (for monitoring and lag; vitalflow assigns
    /// partitions itself). Default: `vitalflow-<job name>`.
    pub group_id: Option<String>,
    /// How late a record may arrive, in event time, behind the latest seen on its partition
    /// before it counts as late. Default: `5s`.
    #[serde(default = "out_of_orderness")]
    pub out_of_orderness: Duration,
    /// A partition with no new record for this long (processing time) stops holding the
    /// watermark back. Default: `10s`.
    #[serde(default = "idle_timeout")]
    pub idle_timeout: Duration,
    /// Watermark alignment: how far (event time) a worker's watermark may run ahead of the
    /// slowest worker's before it stops reading until the others catch up; `off` for no
    /// limit. Default: `1m`.
    #[serde(default = "max_drift")]
    pub max_drift: OrOff,
    /// Event times are rounded down to this (`100ms`, `1s`, `1m`): one dataflow timestamp, and
    /// one saga batch, per step. Default: `1s`.
    #[serde(default = "granularity")]
    pub granularity: Spanned<Duration>,
    /// `never` (run until stopped) or `end` (stop at the end the partitions had when the job
    /// started). Default: `never`.
    #[serde(default = "stop")]
    pub stop: Stop,
    /// Partitions the embedded broker creates the topic with. Default: 4.
    #[serde(default = "defaults::partitions")]
    pub partitions: i32,
    /// librdkafka properties (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`,
    /// ...). A secret is given as `{ env = "VAR" }` or `{ file = "path" }`, never inline.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// The declared schema, once resolved.
    #[serde(skip)]
    pub(crate) records: Resolved<Records>,
}

const fn out_of_orderness() -> Duration {
    Duration::from_millis(5_000)
}
const fn idle_timeout() -> Duration {
    Duration::from_millis(10_000)
}
const fn max_drift() -> OrOff {
    DurationOr(Some(Duration::from_millis(60_000)))
}
fn granularity() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_millis(1_000))
}
const fn stop() -> Stop {
    Stop::Never
}

impl KafkaSourceConfig {
    /// The record settings.
    pub(crate) fn declared(&self) -> Declared<'_> {
        Declared {
            format: self.format.get_ref().as_str(),
            format_at: self.format.span().start,
            fields: self.fields.as_ref(),
            event_time: self.event_time.as_ref(),
            key: self.key.as_ref(),
            header: self.header,
        }
    }

    /// Milliseconds per dataflow timestamp.
    #[must_use]
    pub fn granularity_ms(&self) -> u64 {
        self.granularity.get_ref().millis().max(1)
    }
}

impl NodeSpec for KafkaSourceConfig {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        Vec::new()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        records::outputs(self.fields.is_some())
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[]
    }

    fn is_stage(&self) -> bool {
        self.fields.is_some()
    }

    fn check(&self, c: &mut Check<'_>) {
        records::check(c, &self.declared());
        if self.granularity.get_ref().0.is_zero() {
            let path = c.path.to_owned();
            c.at(
                self.granularity.span().start,
                format!("`{path}.granularity` must be at least 1ms"),
            );
        }
        check_topic(c, &self.topic, self.partitions);
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        let resolved = records::resolve(r, &self.declared());
        records::keep(resolved, &mut self.records)
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let name = p.node.name.clone();
        let settings = client_settings(&self.brokers, &self.properties, &p.base, p.embedded);
        let format = match self.format.get_ref() {
            Format::Envelope => RawFormat::Envelope,
            Format::Fhir => RawFormat::Fhir,
            Format::Json => RawFormat::Json,
            Format::Csv => RawFormat::Csv,
            Format::Hl7v2 => RawFormat::Hl7v2,
        };
        let granularity_ms = self.granularity_ms();
        let records = self.records.get();
        let time = match (&self.event_time, records) {
            (Some(t), Some(r)) => EventTime::Field(Arc::new(r.field_decoder(t.get_ref()))),
            _ if format == RawFormat::Envelope => EventTime::Envelope,
            _ => EventTime::Kafka,
        };
        let header = (format == RawFormat::Csv)
            .then(|| {
                self.fields.as_ref().map(|f| {
                    f.get_ref()
                        .iter()
                        .map(|f| f.column.clone().unwrap_or_else(|| f.name.get_ref().clone()))
                        .collect()
                })
            })
            .flatten();
        let group_id = self
            .group_id
            .clone()
            .unwrap_or_else(|| format!("vitalflow-{}", p.job.name));
        let resume = p
            .kafka
            .previous
            .as_ref()
            .and_then(|c| c.sources.get(&name))
            .filter(|r| r.topic == *self.topic.get_ref())
            .cloned();
        let log = Arc::new(Mutex::new(PositionLog::resuming(resume.as_ref())));
        let watermark = Arc::new(AtomicU64::new(resume.as_ref().map_or(0, |r| r.time)));
        p.kafka
            .watermarks
            .insert(name.clone(), (Arc::clone(&watermark), granularity_ms));
        let offsets = Arc::new(SourceOffsets::new(&name, self.topic.get_ref(), &group_id));
        p.kafka.offsets.push(Arc::clone(&offsets));
        p.kafka.sources.push(SourceLog {
            name: name.clone(),
            topic: self.topic.get_ref().clone(),
            log: Arc::clone(&log),
            kafka: Some((settings.clone(), group_id.clone())),
            checkpointed: None,
        });
        // A table's source passes deletions (tombstones) on to the join.
        let tombstones = p.job.nodes.iter().any(|m| {
            matches!(m.kind, NodeKind::Join(_)) && m.inputs.last().is_some_and(|i| i.node == name)
        });
        // Only the topic a live feed writes to is still growing.
        let feeding = p.kafka.feeding.clone().filter(|_| {
            p.job.embedded.as_ref().is_some_and(|e| {
                *e.feed.get_ref() == Feed::Flat && e.vitals_topic == *self.topic.get_ref()
            })
        });
        let ticks = |d: Duration| d.millis() / granularity_ms;
        let source = KafkaSource {
            fault: super::fault(&self.brokers),
            stop: Arc::clone(&p.kafka.stop),
            tombstones,
            name,
            settings,
            topic: self.topic.get_ref().clone(),
            group_id,
            format,
            header,
            time,
            granularity_ms,
            out_of_orderness: ticks(self.out_of_orderness),
            idle_timeout: self.idle_timeout.0,
            max_drift: self.max_drift.0.map(ticks),
            stop_at_end: self.stop == Stop::End,
            resume,
            watermark,
            job_watermark: Arc::clone(&p.kafka.job_watermark),
            log,
            offsets,
            feeding,
        };
        Some(Box::new(KafkaSourceOp {
            source: Arc::new(source),
            decoder: records.map(|r| Arc::new(r.decoder())),
        }))
    }
}

/// A planned Kafka source.
pub struct KafkaSourceOp {
    /// The topic and how it is read.
    pub source: Arc<KafkaSource>,
    /// With a declared schema: its decoder.
    pub decoder: Option<Arc<Decoder>>,
}

impl Operator for KafkaSourceOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let raw = kafka(
            b.scope,
            Arc::clone(&self.source),
            Arc::clone(&counters),
            self.decoder.is_none(),
            b.failure.clone(),
        );
        b.progress.push(raw.clone());
        let raw = b.arrivals(raw);
        let Some(decoder) = &self.decoder else {
            b.output(name, "out", Port::Raw(raw));
            return;
        };
        let tombstone = self
            .source
            .tombstones
            .then(|| b.schemas.get(name).and_then(|s| Tombstone::of(s)))
            .flatten();
        let logic = DecodeLogic {
            stage: name.to_owned(),
            decoder: Arc::clone(decoder),
            tombstone,
        };
        let (o, d, s) = stage(raw, Pipeline, name, logic, counters);
        b.output(name, "out", Port::Rows(o));
        b.output(name, "dead-letter", Port::Dead(d));
        b.stage_stats(name, s, SagaRole::Ingestion, None);
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
