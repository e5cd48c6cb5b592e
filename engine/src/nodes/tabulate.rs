//! `kind = "tabulate"`: parsed clinical records (from `ingest`) as rows, for the nodes that
//! take rows (`join`, `alert`, `window`, …): each vital-sign measurement a reading on `out`,
//! each encounter event (HL7 v2 ADT: admit, transfer, discharge, …) a row of the patient's
//! context on `context`, with the names and medical record number of the patient's latest
//! demographics, and each laboratory result a row on `labs`.
//!
//! The rows keep the records' PHI, each field marked with what `anonymize` does to it, so the
//! PHI checks of the rows apply: an analytics sink refuses them until they are anonymized.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use timely::dataflow::operators::Exchange as _;
use toml::Spanned;
use vitalflow_model::clinical::{ClinicalRecord, Ingested};
use vitalflow_model::envelope::Counts;
use vitalflow_model::lab::LabValue;
use vitalflow_model::row::{Field, Phi, Row, Schema, Type, Value};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use super::{NodeSpec, Operator, Output, Prepare, Resolve};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port, as_clinical};
use crate::runtime::ops::fork3;

/// `kind = "tabulate"`: no settings but its inputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TabulateConfig {
    /// Always `"tabulate"`.
    pub kind: String,
    /// Upstream ports (parsed clinical records: `ingest.out`).
    pub inputs: Vec<Spanned<String>>,
}

/// The reading columns, in order after `patient_id` and `ts`, with the kind each comes from.
const READINGS: &[(&str, VitalKind)] = &[
    ("hr", VitalKind::HeartRate),
    ("rr", VitalKind::RespiratoryRate),
    ("spo2", VitalKind::Spo2),
    ("temp", VitalKind::BodyTemperature),
    ("sbp", VitalKind::BloodPressure),
    ("dbp", VitalKind::BloodPressure),
    ("map", VitalKind::MeanArterialPressure),
];

fn field(name: &str, ty: Type, nullable: bool, phi: Option<Phi>) -> Field {
    Field {
        name: name.to_owned(),
        ty,
        nullable,
        phi,
    }
}

/// The schema of `out`: `patient_id`, `ts`, then one nullable float a vital sign (`hr`, `rr`,
/// `spo2`, `temp`, `sbp`, `dbp`, `map`); a row sets the columns of its measurement only.
#[must_use]
pub fn readings_schema() -> Schema {
    let mut fields = vec![
        field("patient_id", Type::String, false, Some(Phi::Hash)),
        field("ts", Type::Timestamp, false, Some(Phi::Date)),
    ];
    fields.extend(
        READINGS
            .iter()
            .map(|(name, _)| field(name, Type::Float, true, None)),
    );
    Schema {
        fields,
        time: Some(1),
        key: Some(0),
    }
}

/// The schema of `context`: `patient_id`, `since` (when the event was recorded), `event`,
/// `ward`, `room`, `bed`, `mrn`, `family_name`, `given_name`.
#[must_use]
pub fn context_schema() -> Schema {
    Schema {
        fields: vec![
            field("patient_id", Type::String, false, Some(Phi::Hash)),
            field("since", Type::Timestamp, false, Some(Phi::Date)),
            field("event", Type::String, false, None),
            field("ward", Type::String, true, None),
            field("room", Type::String, true, Some(Phi::Redact)),
            field("bed", Type::String, true, Some(Phi::Redact)),
            field("mrn", Type::String, true, Some(Phi::Hash)),
            field("family_name", Type::String, true, Some(Phi::Redact)),
            field("given_name", Type::String, true, Some(Phi::Redact)),
        ],
        time: Some(1),
        key: Some(0),
    }
}

/// The schema of `labs`: `patient_id`, `ts` (when observed), `code` (LOINC), `value` (numeric
/// results), `unit` (UCUM, or the source's unit when it has no UCUM mapping; empty when none),
/// `comparator` (`<`, `<=`, `>=`, `>`), `status`, `interpretation` (the v3 code).
#[must_use]
pub fn labs_schema() -> Schema {
    Schema {
        fields: vec![
            field("patient_id", Type::String, false, Some(Phi::Hash)),
            field("ts", Type::Timestamp, false, Some(Phi::Date)),
            field("code", Type::String, false, None),
            field("value", Type::Float, true, None),
            field("unit", Type::String, true, None),
            field("comparator", Type::String, true, None),
            field("status", Type::String, false, None),
            field("interpretation", Type::String, true, None),
        ],
        time: Some(1),
        key: Some(0),
    }
}

impl NodeSpec for TabulateConfig {
    fn kind(&self) -> &'static str {
        "tabulate"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Rows),
            ("context", PortKind::Rows),
            ("labs", PortKind::Rows),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Clinical]
    }

    fn resolve(&mut self, _r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        vec![
            ("out", readings_schema()),
            ("context", context_schema()),
            ("labs", labs_schema()),
        ]
    }

    fn prepare(&self, _p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        Some(Box::new(TabulateOp))
    }
}

/// A planned `tabulate` node.
pub struct TabulateOp;

impl Operator for TabulateOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        // A patient's records meet on one worker, which keeps the patient's latest names.
        let input = b
            .inputs(&node.inputs, as_clinical)
            .exchange(|r: &Ingested| Value::str(r.record.patient_id()).route_hash());
        let mut people = People::default();
        let (readings, context, labs) =
            fork3(name, input, move |batch, readings, context, labs| {
                let n = batch.len() as u64;
                for r in batch.drain(..) {
                    people.take(r, readings, context, labs);
                }
                counters.add(&Counts {
                    records_in: n,
                    records_out: (readings.len() + context.len() + labs.len()) as u64,
                    rejected: 0,
                });
            });
        b.output(name, "out", Port::Rows(readings));
        b.output(name, "context", Port::Rows(context));
        b.output(name, "labs", Port::Rows(labs));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}

/// A patient's latest demographics: MRN, family and given names.
type Names = (Option<Arc<str>>, Option<Arc<str>>, Option<Arc<str>>);

/// The latest demographics of each patient seen on this worker.
#[derive(Default)]
struct People(HashMap<String, Names>);

fn text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, Value::str)
}

fn shared(v: &Option<Arc<str>>) -> Value {
    v.as_ref()
        .map_or(Value::Null, |s| Value::Str(Arc::clone(s)))
}

impl People {
    /// The rows of one record: a reading, a context row, a lab row, or none (demographics are
    /// kept).
    fn take(
        &mut self,
        r: Ingested,
        readings: &mut Vec<Row>,
        context: &mut Vec<Row>,
        labs: &mut Vec<Row>,
    ) {
        let sequence = r.sequence.0;
        let arrival_us = r.arrival_us;
        match r.record {
            ClinicalRecord::Patient(p) => {
                let given = (!p.given.is_empty()).then(|| Arc::from(p.given.join(" ")));
                self.0.insert(
                    p.patient_id,
                    (p.mrn.map(Arc::from), p.family.map(Arc::from), given),
                );
            }
            ClinicalRecord::Vital(v) => {
                let mut values = vec![
                    Value::str(&v.patient_id),
                    Value::Timestamp(v.effective.timestamp_millis()),
                ];
                values.extend(READINGS.iter().map(|(name, kind)| {
                    if *kind != v.kind {
                        return Value::Null;
                    }
                    match (v.value, *name) {
                        (VitalValue::Quantity { value }, _) => Value::Float(value),
                        (VitalValue::BloodPressure { systolic, .. }, "sbp") => {
                            Value::Float(systolic)
                        }
                        (VitalValue::BloodPressure { diastolic, .. }, _) => Value::Float(diastolic),
                    }
                }));
                readings.push(Row {
                    values,
                    sequence,
                    tombstone: false,
                    arrival_us,
                });
            }
            ClinicalRecord::Encounter(e) => {
                let (mrn, family, given) = self.0.get(&e.patient_id).cloned().unwrap_or_default();
                context.push(Row {
                    values: vec![
                        Value::str(&e.patient_id),
                        Value::Timestamp(e.recorded_at.timestamp_millis()),
                        Value::str(e.event.as_str()),
                        text(e.ward.as_deref()),
                        text(e.room.as_deref()),
                        text(e.bed.as_deref()),
                        shared(&mrn),
                        shared(&family),
                        shared(&given),
                    ],
                    sequence,
                    tombstone: false,
                    arrival_us,
                });
            }
            ClinicalRecord::Lab(l) => {
                let (value, unit, comparator) = match &l.value {
                    LabValue::Quantity {
                        value,
                        comparator,
                        unit,
                    } => (
                        Value::Float(*value),
                        Value::str(unit.display()),
                        comparator.map_or(Value::Null, |c| Value::str(c.as_str())),
                    ),
                    _ => (Value::Null, Value::Null, Value::Null),
                };
                labs.push(Row {
                    values: vec![
                        Value::str(&l.patient_id),
                        Value::Timestamp(l.effective.timestamp_millis()),
                        Value::str(&l.code),
                        value,
                        unit,
                        comparator,
                        Value::str(l.status.as_str()),
                        text(l.interpretation.as_deref()),
                    ],
                    sequence,
                    tombstone: false,
                    arrival_us,
                });
            }
        }
    }
}
