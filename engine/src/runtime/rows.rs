//! The per-record logic of the nodes over records of a declared schema: decoding, `filter`,
//! `map` / `project`, `key-by`, anonymization of rows, and the rows sinks' writers.
//!
//! Everything here was resolved when the job was planned: expressions are compiled, fields are
//! indexes. Nothing is looked up by name per record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;
use vitalflow_connectors::jsonl::write_row_json;
use vitalflow_connectors::parquet_rows::RowParquetWriter;
use vitalflow_model::row::{KeyValue, Row, Schema, Type, Value};
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};
use vitalflow_operators::anonymize::{Anonymizer, DeidReport, RowPlan};
use vitalflow_operators::decode::Decoder;
use vitalflow_operators::expression::Compiled;

use vitalflow_connectors::Pace;

use super::ops::{SinkWriter, StageLogic, Written};
use super::stages::{relative, write_lines};

/// A rejected row: the row as JSON (it may hold PHI: dead letters go to the dead-letter sink).
pub(crate) fn dead_row(stage: &str, schema: &Schema, row: &Row, reason: String) -> DeadLetter {
    DeadLetter {
        stage: stage.to_owned(),
        source: String::new(),
        location: format!("record #{}", row.sequence),
        format: RawFormat::Json,
        reason,
        bytes: serde_json::to_vec(&schema.to_json(row)).unwrap_or_default(),
    }
}

/// Where a tombstone's key and time go in a row of the source's schema.
#[derive(Clone, Copy, Debug)]
pub struct Tombstone {
    key: usize,
    key_ty: Type,
    time: Option<usize>,
    width: usize,
}

impl Tombstone {
    /// For rows of `schema` (its declared key receives the Kafka key).
    #[must_use]
    pub fn of(schema: &Schema) -> Option<Self> {
        let key = schema.key?;
        Some(Self {
            key,
            key_ty: schema.fields.get(key)?.ty,
            time: schema.time,
            width: schema.fields.len(),
        })
    }

    /// The row deleting `key`, at `ms`.
    fn row(&self, key: &[u8], ms: i64, sequence: u64) -> Result<Row, String> {
        let text = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_owned())?;
        let value = match self.key_ty {
            Type::String => Value::str(text),
            Type::Int => Value::Int(
                text.trim()
                    .parse()
                    .map_err(|_| "the key is not an integer".to_owned())?,
            ),
            other => return Err(format!("a {other} key cannot come from a Kafka key")),
        };
        let mut values = vec![Value::Null; self.width];
        values[self.key] = value;
        if let Some(t) = self.time {
            values[t] = Value::Timestamp(ms);
        }
        Ok(Row {
            values,
            sequence,
            tombstone: true,
            arrival_us: 0,
        })
    }
}

/// A row's event time and key, for the keyed event-time operators (`window`, `join`); the reason
/// (naming the node and the field, never a value) when either is missing or fails.
pub(crate) fn event_time_and_key(
    stage: &str,
    schema: &Schema,
    time: usize,
    key: &Compiled,
    row: &Row,
) -> Result<(i64, KeyValue), String> {
    let Some(Value::Timestamp(t)) = row.values.get(time) else {
        let field = schema.fields.get(time).map_or("?", |f| f.name.as_str());
        return Err(format!("`{stage}`: event time `{field}` is null"));
    };
    let k = key
        .eval(&row.values)
        .map_err(|e| format!("`{stage}.key`: {e}"))?;
    Ok((*t, KeyValue(k)))
}

/// Decodes raw records of a source with a declared schema.
pub struct DecodeLogic {
    /// The source node.
    pub stage: String,
    /// The source's decoder.
    pub decoder: Arc<Decoder>,
    /// Tombstones are deletions (the source is a join's table); otherwise they are rejected.
    pub tombstone: Option<Tombstone>,
}

impl StageLogic<RawRecord, Row> for DecodeLogic {
    fn process(&mut self, record: RawRecord, out: &mut Vec<Row>, dead: &mut Vec<DeadLetter>) {
        if let Some(ms) = record.tombstone_at() {
            let row = match self.tombstone {
                None => Err(
                    "a record without a payload (a tombstone), and this source's rows \
                     have no declared key to delete"
                        .to_owned(),
                ),
                Some(t) => t.row(&record.bytes, ms, record.sequence),
            };
            match row {
                Ok(row) => out.push(row),
                Err(reason) => dead.push(DeadLetter {
                    stage: self.stage.clone(),
                    source: record.source,
                    location: record.location,
                    format: record.format,
                    reason: format!("tombstone: {reason}"),
                    bytes: record.bytes,
                }),
            }
            return;
        }
        let decoded = match record.format {
            RawFormat::Csv => {
                self.decoder
                    .decode_csv(record.header.as_deref(), &record.bytes, record.sequence)
            }
            _ => self.decoder.decode_json(&record.bytes, record.sequence),
        };
        match decoded {
            Ok(mut row) => {
                row.arrival_us = record.arrival_us;
                out.push(row);
            }
            Err(e) => dead.push(DeadLetter {
                stage: self.stage.clone(),
                source: record.source,
                location: record.location,
                format: record.format,
                reason: e.to_string(),
                bytes: record.bytes,
            }),
        }
    }
}

/// `filter`: keeps rows whose condition is true.
pub struct FilterLogic {
    /// The node.
    pub stage: String,
    /// The condition.
    pub condition: Arc<Compiled>,
    /// The rows' schema (for dead letters).
    pub schema: Arc<Schema>,
}

impl StageLogic<Row, Row> for FilterLogic {
    fn process(&mut self, row: Row, out: &mut Vec<Row>, dead: &mut Vec<DeadLetter>) {
        match self.condition.eval_bool(&row.values) {
            Ok(true) => out.push(row),
            Ok(false) => {}
            Err(e) => {
                let reason = format!("`{}.condition`: {e}", self.stage);
                dead.push(dead_row(&self.stage, &self.schema, &row, reason));
            }
        }
    }
}

/// Where one output field of a `map` / `project` comes from.
pub enum Slot {
    /// Copied from an input field.
    Copy(usize),
    /// Computed; the output field's name is kept for error messages.
    Compute(Arc<Compiled>, String),
}

/// `map` / `project`: builds each output row from its slots.
pub struct MapLogic {
    /// The node.
    pub stage: String,
    /// One slot per output field.
    pub slots: Arc<Vec<Slot>>,
    /// The input schema (for dead letters).
    pub schema: Arc<Schema>,
}

impl StageLogic<Row, Row> for MapLogic {
    fn process(&mut self, row: Row, out: &mut Vec<Row>, dead: &mut Vec<DeadLetter>) {
        let mut values = Vec::with_capacity(self.slots.len());
        for slot in self.slots.iter() {
            let v = match slot {
                Slot::Copy(i) => row.values.get(*i).cloned().unwrap_or(Value::Null),
                Slot::Compute(c, name) => match c.eval(&row.values) {
                    Ok(v) => v,
                    Err(e) => {
                        let reason = format!("`{}.fields.{name}`: {e}", self.stage);
                        dead.push(dead_row(&self.stage, &self.schema, &row, reason));
                        return;
                    }
                },
            };
            values.push(v);
        }
        out.push(Row {
            values,
            sequence: row.sequence,
            tombstone: false,
            arrival_us: row.arrival_us,
        });
    }
}

/// `key-by` with a computed key: appends it to the row.
pub struct KeyLogic {
    /// The node.
    pub stage: String,
    /// The key expression.
    pub key: Arc<Compiled>,
    /// The input schema (for dead letters).
    pub schema: Arc<Schema>,
}

impl StageLogic<Row, Row> for KeyLogic {
    fn process(&mut self, mut row: Row, out: &mut Vec<Row>, dead: &mut Vec<DeadLetter>) {
        match self.key.eval(&row.values) {
            Ok(v) => {
                row.values.push(v);
                out.push(row);
            }
            Err(e) => {
                let reason = format!("`{}.key`: {e}", self.stage);
                dead.push(dead_row(&self.stage, &self.schema, &row, reason));
            }
        }
    }
}

/// Passes rows through (a `key-by` on a field only routes them).
pub struct PassLogic;

impl StageLogic<Row, Row> for PassLogic {
    fn process(&mut self, row: Row, out: &mut Vec<Row>, _dead: &mut Vec<DeadLetter>) {
        out.push(row);
    }
}

/// Anonymization of rows, with the per-batch de-identification report.
pub struct AnonymizeRowsLogic {
    /// The node.
    pub stage: String,
    /// The anonymizer (key and date policy).
    pub anonymizer: Arc<Anonymizer>,
    /// What to do with each PHI field.
    pub plan: Arc<RowPlan>,
    /// The input schema (for dead letters).
    pub schema: Arc<Schema>,
    /// What was de-identified since the last report.
    pub report: DeidReport,
}

impl StageLogic<Row, Row> for AnonymizeRowsLogic {
    fn process(&mut self, mut row: Row, out: &mut Vec<Row>, dead: &mut Vec<DeadLetter>) {
        let before = row.clone();
        match self
            .anonymizer
            .apply_row(&self.plan, &mut row, &mut self.report)
        {
            Ok(()) => out.push(row),
            Err(e) => dead.push(dead_row(&self.stage, &self.schema, &before, e.to_string())),
        }
    }

    fn take_detail(&mut self) -> Option<Json> {
        if self.report.is_empty() {
            return None;
        }
        serde_json::to_value(std::mem::take(&mut self.report)).ok()
    }
}

/// A Parquet sink of rows.
pub struct RowParquetSink {
    /// The job's output folder.
    pub out: PathBuf,
    /// The writer.
    pub writer: RowParquetWriter,
}

impl SinkWriter<Row> for RowParquetSink {
    fn write(&mut self, tag: &str, parts: &[Vec<Row>], pace: &mut Pace) -> Result<Written, String> {
        let files = self
            .writer
            .write_paced(tag, parts.iter().flatten(), pace)
            .map_err(|e| e.to_string())?;
        Ok(Written {
            files: files.iter().map(|f| relative(&self.out, &f.path)).collect(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            digests: Vec::new(),
        })
    }

    fn out(&self) -> &Path {
        &self.out
    }
}

/// A JSON-lines sink of rows.
pub struct RowJsonlSink {
    /// The job's output folder.
    pub out: PathBuf,
    /// The sink's folder.
    pub dir: PathBuf,
    /// The rows' schema.
    pub schema: Arc<Schema>,
}

impl SinkWriter<Row> for RowJsonlSink {
    fn write(&mut self, tag: &str, parts: &[Vec<Row>], pace: &mut Pace) -> Result<Written, String> {
        let mut buf = Vec::with_capacity(256);
        write_lines(
            &self.out,
            &self.dir,
            false,
            tag,
            parts.iter().flatten(),
            pace,
            |file, row| {
                buf.clear();
                write_row_json(&self.schema, row, &mut buf);
                file.write_raw_line(&buf)
            },
        )
    }

    fn out(&self) -> &Path {
        &self.out
    }
}
