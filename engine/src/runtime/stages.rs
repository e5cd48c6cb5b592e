//! The per-record logic of the three stages, and the sinks' writers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use vitalflow_connectors::SinkError;
use vitalflow_connectors::jsonl::JsonlFile;
use vitalflow_connectors::parquet::ParquetWriter;
use vitalflow_model::canonical::CanonicalResource;
use vitalflow_model::clinical::Ingested;
use vitalflow_model::deid::DeidRecord;
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};
use vitalflow_operators::anonymize::{Anonymizer, DeidReport};
use vitalflow_operators::canonize::canonize;
use vitalflow_operators::ingest::{IngestOptions, ingest_with};

use vitalflow_connectors::Pace;

use super::ops::{SinkWriter, StageLogic, Written};

/// Ingestion: parse and validate.
pub struct IngestLogic {
    /// The stage's node name.
    pub stage: String,
    /// Its options.
    pub options: Arc<IngestOptions>,
}

impl StageLogic<RawRecord, Ingested> for IngestLogic {
    fn process(&mut self, record: RawRecord, out: &mut Vec<Ingested>, dead: &mut Vec<DeadLetter>) {
        ingest_with(&record, &self.stage, &self.options, out, dead);
    }
}

/// Anonymization: Safe Harbor de-identification, with a per-batch report.
pub struct AnonymizeLogic {
    /// The stage's node name.
    pub stage: String,
    /// The configured anonymizer.
    pub anonymizer: Arc<Anonymizer>,
    /// What was de-identified since the last report.
    pub report: DeidReport,
}

impl StageLogic<Ingested, DeidRecord> for AnonymizeLogic {
    fn process(&mut self, record: Ingested, out: &mut Vec<DeidRecord>, dead: &mut Vec<DeadLetter>) {
        match self.anonymizer.apply(&record, &mut self.report) {
            Ok(r) => out.push(r),
            Err(e) => dead.push(DeadLetter {
                stage: self.stage.clone(),
                source: record.source.clone(),
                location: record.location.clone(),
                format: RawFormat::Unknown,
                reason: e.to_string(),
                bytes: serde_json::to_vec(&record.record).unwrap_or_default(),
            }),
        }
    }

    fn take_detail(&mut self) -> Option<Value> {
        if self.report.is_empty() {
            return None;
        }
        let report = std::mem::take(&mut self.report);
        serde_json::to_value(&report).ok()
    }
}

/// Canonization: FHIR R4.
pub struct CanonizeLogic {
    /// The stage's node name.
    pub stage: String,
}

impl StageLogic<DeidRecord, CanonicalResource> for CanonizeLogic {
    fn process(
        &mut self,
        record: DeidRecord,
        out: &mut Vec<CanonicalResource>,
        dead: &mut Vec<DeadLetter>,
    ) {
        match canonize(&record) {
            Ok(r) => out.push(r),
            Err(e) => dead.push(DeadLetter {
                stage: self.stage.clone(),
                source: String::new(),
                location: format!("patient {}", record.pseudonym()),
                format: RawFormat::Unknown,
                reason: e.to_string(),
                bytes: serde_json::to_vec(&record).unwrap_or_default(),
            }),
        }
    }
}

/// Sums the numbers of two JSON objects key by key (de-identification reports).
pub fn merge_counts(into: &mut Option<Value>, more: Option<Value>) {
    let Some(more) = more else { return };
    match (into.as_mut(), more) {
        (Some(Value::Object(a)), Value::Object(b)) => {
            for (k, v) in b {
                match (a.get_mut(&k), v) {
                    (Some(x), y) if x.is_object() => {
                        let mut slot = Some(x.take());
                        merge_counts(&mut slot, Some(y));
                        *x = slot.unwrap_or(Value::Null);
                    }
                    (Some(Value::Number(x)), Value::Number(y)) => {
                        let sum = x.as_u64().unwrap_or(0) + y.as_u64().unwrap_or(0);
                        a.insert(k, Value::from(sum));
                    }
                    (_, y) => {
                        a.insert(k, y);
                    }
                }
            }
        }
        (_, more) => *into = Some(more),
    }
}

/// Keeps the first detail (stages without detail).
pub fn keep_none(_: &mut Option<Value>, _: Option<Value>) {}

/// A path relative to the output folder, for commits and summaries.
pub(super) fn relative(out: &Path, path: &Path) -> String {
    path.strip_prefix(out).unwrap_or(path).display().to_string()
}

/// The Parquet sink's writer.
pub struct ParquetSink {
    /// The job's output folder.
    pub out: PathBuf,
    /// The writer.
    pub writer: ParquetWriter,
}

impl SinkWriter<CanonicalResource> for ParquetSink {
    fn write(
        &mut self,
        tag: &str,
        parts: &[Vec<CanonicalResource>],
        pace: &mut Pace,
    ) -> Result<Written, String> {
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

/// A JSON-lines sink's writer.
pub struct JsonlSink<T> {
    /// The job's output folder.
    pub out: PathBuf,
    /// The sink's folder.
    pub dir: PathBuf,
    /// Owner-only permissions (dead letters).
    pub private: bool,
    /// Renders one row.
    pub render: fn(&T) -> Value,
}

impl<T: 'static> SinkWriter<T> for JsonlSink<T> {
    fn write(&mut self, tag: &str, parts: &[Vec<T>], pace: &mut Pace) -> Result<Written, String> {
        let render = self.render;
        write_lines(
            &self.out,
            &self.dir,
            self.private,
            tag,
            parts.iter().flatten(),
            pace,
            |file, row| file.write_line(&render(row)),
        )
    }

    fn out(&self) -> &Path {
        &self.out
    }
}

/// Writes one JSON-lines file of `rows` under `dir` (`part-<tag>.jsonl`), a line each by `line`,
/// advancing `pace` a line at a time, and commits it; returns its path relative to `out` and its
/// size.
pub(super) fn write_lines<'r, T: 'r>(
    out: &Path,
    dir: &Path,
    private: bool,
    tag: &str,
    rows: impl Iterator<Item = &'r T>,
    pace: &mut Pace,
    mut line: impl FnMut(&mut JsonlFile, &T) -> Result<(), SinkError>,
) -> Result<Written, String> {
    let name = format!("part-{tag}.jsonl");
    let mut file = JsonlFile::create(dir, &name, private).map_err(|e| e.to_string())?;
    for row in rows {
        line(&mut file, row).map_err(|e| e.to_string())?;
        pace.advance(1);
    }
    let bytes = file.bytes();
    let path = file.commit().map_err(|e| e.to_string())?;
    Ok(Written {
        files: vec![relative(out, &path)],
        bytes,
        digests: Vec::new(),
    })
}
