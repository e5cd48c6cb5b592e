//! `kind = "ingest"`: parses the raw records of its sources into clinical records.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use timely::dataflow::channels::pact::Exchange;
use toml::Spanned;
use vitalflow_model::RawRecord;
use vitalflow_operators::ingest::{CodeTarget, IngestOptions};

use super::{NodeSpec, Operator, Output, Prepare};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port, as_raw};
use crate::runtime::ops::stage;
use crate::runtime::saga::SagaRole;
use crate::runtime::stages::IngestLogic;

/// What a local observation code stands for: a vital sign's LOINC code or name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub CodeTarget);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CodeTarget::parse(&text).map(Self).ok_or_else(|| {
            de::Error::custom(format!(
                "`{text}` is neither the LOINC code of a vital sign (or 8480-6 / 8462-4) nor a \
                 vital-sign name"
            ))
        })
    }
}

/// `kind = "ingest"`: parses the raw records of its sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngestConfig {
    /// Always `"ingest"`.
    pub kind: String,
    /// Upstream ports.
    pub inputs: Vec<Spanned<String>>,
    /// Local observation codes of HL7 v2 OBX-3, keyed `SYSTEM^CODE` (or `CODE`, any system), and
    /// the LOINC code or vital-sign name each stands for (`"99LOCAL^HR" = "8867-4"`,
    /// `"PULSE" = "heart-rate"`; `8480-6` / `8462-4` for blood-pressure halves).
    #[serde(default)]
    pub codes: BTreeMap<String, Code>,
    /// Local unit spellings of HL7 v2 OBX-6 and the UCUM unit each stands for
    /// (`"beats per minute" = "/min"`).
    #[serde(default)]
    pub units: BTreeMap<String, String>,
}

impl NodeSpec for IngestConfig {
    fn kind(&self) -> &'static str {
        "ingest"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Clinical),
            ("events", PortKind::DomainEvent),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Raw]
    }

    fn is_stage(&self) -> bool {
        true
    }

    fn prepare(&self, _p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let options = IngestOptions {
            codes: self.codes.iter().map(|(k, c)| (k.clone(), c.0)).collect(),
            units: self.units.clone().into_iter().collect(),
        };
        Some(Box::new(IngestOp {
            options: Arc::new(options),
        }))
    }
}

/// A planned ingest node.
pub struct IngestOp {
    /// Local codes and units.
    pub options: Arc<IngestOptions>,
}

impl Operator for IngestOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_raw);
        let logic = IngestLogic {
            stage: name.to_owned(),
            options: Arc::clone(&self.options),
        };
        let pact = Exchange::new(|r: &RawRecord| r.sequence);
        let (o, d, s) = stage(input, pact, name, logic, counters);
        b.output(name, "out", Port::Clinical(o));
        b.output(name, "dead-letter", Port::Dead(d));
        b.stage_stats(name, s, SagaRole::Ingestion, None);
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
