//! `kind = "generator"`: synthetic patients and vital signs.

use std::sync::Arc;

use serde::Deserialize;
use timely::dataflow::channels::pact::Pipeline;
use toml::Spanned;
use vitalflow_connectors::generator::{Generator, GeneratorConfig as Events};
use vitalflow_model::row::Schema;
use vitalflow_operators::decode::Decoder;

use super::file::FileConfig;
use super::records::{self, Records};
use super::settings::{Rfc3339, words};
use super::{Check, NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port};
use crate::runtime::ops::stage;
use crate::runtime::rows::DecodeLogic;
use crate::runtime::saga::SagaRole;
use crate::runtime::sources;

words! {
    /// What a generator writes.
    Feed, "generator format" {
        /// Patient and reading events in the platform envelope, for `ingest`.
        Envelope = "envelope",
        /// Bedside-monitor readings as rows.
        Flat = "flat",
        /// Laboratory results (`lab_result_available` envelopes), for `ingest`.
        Labs = "labs",
    }
}

/// `kind = "generator"`: synthetic patients and vital signs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GeneratorConfig {
    /// Always `"generator"`.
    pub kind: String,
    /// Random seed: the same seed gives the same events. Default: 42.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Number of patients. Default: 1000.
    #[serde(default = "defaults::patients")]
    pub patients: u64,
    /// Total events, the patients' `patient.record.created` events included. Default: 100000.
    #[serde(default = "defaults::count")]
    pub count: u64,
    /// Events per second over all workers; 0 means as fast as possible. Default: 0.
    #[serde(default)]
    pub rate: f64,
    /// Event time of the first reading, RFC 3339. Default: 2026-01-01T00:00:00Z.
    pub start: Option<Rfc3339>,
    /// Seconds between two readings of one patient. Default: 60.
    #[serde(default = "defaults::interval")]
    pub interval_secs: u32,
    /// Percentage of patients who deteriorate. Default: 10.
    #[serde(default = "defaults::deteriorating")]
    pub deteriorating_percent: u8,
    /// `envelope` (patient and reading events in the platform envelope, for `ingest`) or
    /// `flat` (bedside-monitor readings as rows: `patient_id`, `ts`, `ward`, `hr`, `spo2`, `rr`,
    /// `temp`, `sbp`, `dbp`; with a `rate`, each stamped with the wall clock) or `labs`
    /// (laboratory results as `lab_result_available` envelopes, for `ingest`; about 1 in 50
    /// critical). Default: `envelope`.
    #[serde(default = "defaults::feed")]
    pub format: Spanned<Feed>,
    /// A `flat` generator's rows, once resolved.
    #[serde(skip)]
    pub(crate) records: Resolved<Records>,
}

/// Defaults of the generator's settings (shared with the embedded broker's).
pub(crate) mod defaults {
    use toml::Spanned;

    pub const fn seed() -> u64 {
        42
    }
    pub const fn patients() -> u64 {
        1000
    }
    pub const fn count() -> u64 {
        100_000
    }
    pub const fn interval() -> u32 {
        60
    }
    pub const fn deteriorating() -> u8 {
        10
    }
    pub fn feed() -> Spanned<super::Feed> {
        Spanned::new(0..0, super::Feed::Envelope)
    }
}

/// The rows of a `flat` generator, declared as a file source's would be.
const FLAT_GENERATOR: &str = r#"
kind = "generator"
path = "generator"
format = "json"
event-time = "ts"
key = "patient_id"
fields = [
  { name = "patient_id", type = "string", phi = "hash" },
  { name = "ts", type = "timestamp", format = "epoch-ms", phi = "date" },
  { name = "ward", type = "string" },
  { name = "hr", type = "integer" },
  { name = "spo2", type = "integer" },
  { name = "rr", type = "integer" },
  { name = "temp", type = "float", nullable = true },
  { name = "sbp", type = "integer" },
  { name = "dbp", type = "integer" },
]
"#;

impl GeneratorConfig {
    /// Whether it writes flat readings (rows).
    #[must_use]
    pub fn is_flat(&self) -> bool {
        *self.format.get_ref() == Feed::Flat
    }

    /// A `flat` generator's rows, seen as a file source's (schema, event time, key).
    #[must_use]
    pub fn as_file(&self) -> Option<FileConfig> {
        if !self.is_flat() {
            return None;
        }
        toml::from_str(FLAT_GENERATOR).ok()
    }
}

impl NodeSpec for GeneratorConfig {
    fn kind(&self) -> &'static str {
        "generator"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        Vec::new()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        records::outputs(self.is_flat())
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[]
    }

    fn is_stage(&self) -> bool {
        self.is_flat()
    }

    fn check(&self, c: &mut Check<'_>) {
        let path = c.path.to_owned();
        if self.patients == 0 {
            c.at_node(format!("`{path}.patients` must be at least 1"));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            c.at_node(format!(
                "`{path}.rate` must be 0 (unlimited) or a positive number"
            ));
        }
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        match self.as_file() {
            Some(file) => records::keep(records::resolve(r, &file.declared()), &mut self.records),
            None => Vec::new(),
        }
    }

    fn prepare(&self, _p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let mut events = Events {
            seed: self.seed,
            patients: self.patients,
            count: self.count,
            interval_secs: self.interval_secs,
            deteriorating_percent: self.deteriorating_percent,
            labs: *self.format.get_ref() == Feed::Labs,
            ..Events::default()
        };
        if let Some(start) = self.start {
            events.start = start.0;
        }
        Some(Box::new(GeneratorOp {
            generator: Arc::new(Generator::new(events)),
            rate: self.rate,
            decoder: self.records.get().map(|r| Arc::new(r.decoder())),
        }))
    }
}

/// A planned generator.
pub struct GeneratorOp {
    /// The events.
    pub generator: Arc<Generator>,
    /// Events a second (0: as fast as possible).
    pub rate: f64,
    /// `flat`: the decoder of its rows.
    pub decoder: Option<Arc<Decoder>>,
}

impl Operator for GeneratorOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let raw = sources::generator(
            b.scope,
            name,
            Arc::clone(&self.generator),
            self.rate,
            b.plan.batch_size,
            self.decoder.is_some(),
            Arc::clone(&counters),
            self.decoder.is_none(),
            Arc::clone(&b.plan.stop),
        );
        let raw = b.arrivals(raw);
        let Some(decoder) = &self.decoder else {
            b.output(name, "out", Port::Raw(raw));
            return;
        };
        let logic = DecodeLogic {
            stage: name.to_owned(),
            decoder: Arc::clone(decoder),
            tombstone: None,
        };
        // Each worker decodes what it generated: a patient's readings stay in order.
        let (o, d, s) = stage(raw, Pipeline, name, logic, counters);
        b.output(name, "out", Port::Rows(o));
        b.output(name, "dead-letter", Port::Dead(d));
        b.stage_stats(name, s, SagaRole::Ingestion, None);
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
