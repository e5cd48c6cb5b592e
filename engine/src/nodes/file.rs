//! `kind = "file"`: records from a file or every matching file of a folder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use timely::dataflow::channels::pact::Exchange;
use toml::Spanned;
use vitalflow_connectors::files::{CHUNK_BYTES, FileError, FileFormat, FileSource};
use vitalflow_model::RawRecord;
use vitalflow_model::row::Schema;
use vitalflow_operators::decode::Decoder;

use super::records::{self, Declared, FieldConfig, Records};
use super::settings::words;
use super::{Check, NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port};
use crate::runtime::ops::stage;
use crate::runtime::rows::DecodeLogic;
use crate::runtime::saga::SagaRole;
use crate::runtime::sources;

words! {
    /// How a file's records are written.
    Format, "format" {
        /// NDJSON event envelopes.
        Envelope = "envelope",
        /// FHIR R4 JSON Bundles or resources, or NDJSON of resources.
        Fhir = "fhir",
        /// Vital-sign numerics CSV.
        VitalsCsv = "vitals-csv",
        /// HL7 v2 messages.
        Hl7v2 = "hl7v2",
        /// JSON records of a declared schema.
        Json = "json",
        /// CSV records of a declared schema.
        Csv = "csv",
    }
}

/// `kind = "file"`: records from a file or every matching file of a folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Always `"file"`.
    pub kind: String,
    /// A file, or a folder whose files (sorted by name, not recursive) are read. Relative paths
    /// are relative to the job file's folder.
    pub path: Spanned<String>,
    /// `envelope` (NDJSON event envelopes), `fhir` (FHIR R4 JSON Bundles or resources, or NDJSON
    /// of resources), `vitals-csv` (numerics CSV), `hl7v2`; or, with a declared schema in
    /// `fields`, `json` (NDJSON, or a JSON document per `.json` file) or `csv`.
    pub format: Spanned<Format>,
    /// `vitals-csv` only: the source patient id of the file's readings (the CSV has none).
    pub patient_id: Option<String>,
    /// `json` and `csv` only: the declared schema, one entry per field, in output order.
    pub fields: Option<Spanned<Vec<FieldConfig>>>,
    /// `json` and `csv` only: the field holding each record's event time (a timestamp field).
    pub event_time: Option<Spanned<String>>,
    /// `json` and `csv` only: the field identifying what records are about (usually the
    /// patient); keyed operators group by it unless a `key-by` says otherwise.
    pub key: Option<Spanned<String>>,
    /// `csv` only: whether the first row names the columns. Default: true. Without a header,
    /// columns are the declared fields in order.
    pub header: Option<bool>,
    /// Bytes of a JSON lines file (`.ndjson`, `.jsonl`) that one worker reads, when several
    /// workers split the source: a larger file is cut into ranges of this size. Default
    /// 8 MiB.
    pub chunk_bytes: Option<u64>,
    /// The declared schema, once resolved.
    #[serde(skip)]
    pub(crate) records: Resolved<Records>,
}

impl FileConfig {
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
}

impl NodeSpec for FileConfig {
    fn kind(&self) -> &'static str {
        "file"
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
        if self.chunk_bytes == Some(0) {
            let path = c.path.to_owned();
            c.at_node(format!("`{path}.chunk-bytes` must be at least 1"));
        }
        if *self.format.get_ref() == Format::VitalsCsv && self.patient_id.is_none() {
            let path = c.path.to_owned();
            c.at_node(format!(
                "`{path}`: format `vitals-csv` needs `patient-id` (the CSV has no patient column)"
            ));
        }
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        let resolved = records::resolve(r, &self.declared());
        records::keep(resolved, &mut self.records)
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let path = p.base.join(self.path.get_ref());
        if !path.exists() {
            p.at(
                self.path.span(),
                format!("`{}` does not exist", path.display()),
            );
        }
        let format = match self.format.get_ref() {
            Format::Envelope => FileFormat::Envelope,
            Format::Fhir => FileFormat::Fhir,
            Format::Hl7v2 => FileFormat::Hl7v2,
            Format::Json => FileFormat::Json,
            Format::Csv => FileFormat::Csv {
                header: self.header.unwrap_or(true),
            },
            Format::VitalsCsv => FileFormat::VitalsCsv {
                patient_id: self.patient_id.clone().unwrap_or_default(),
            },
        };
        let source = Arc::new(FileSource {
            name: p.node.name.clone(),
            path,
            format,
        });
        let decoder = self.records.get().map(|r| Arc::new(r.decoder()));
        Some(Box::new(FileOp {
            source,
            decoder,
            chunk_bytes: self.chunk_bytes.unwrap_or(CHUNK_BYTES),
            tally: Arc::default(),
            files: OnceLock::new(),
        }))
    }
}

/// A planned file source.
pub struct FileOp {
    /// The files.
    pub source: Arc<FileSource>,
    /// With a declared schema: its decoder.
    pub decoder: Option<Arc<Decoder>>,
    /// The files to read, listed once before the workers start (by process 0 for a whole
    /// cluster), so that every worker numbers the same records; unset, each worker lists them.
    pub files: OnceLock<Arc<[PathBuf]>>,
    /// Bytes of a JSON lines file one worker reads as one chunk.
    pub chunk_bytes: u64,
    /// Where this process's workers leave their chunk counts for each other.
    pub tally: Arc<sources::Tally>,
}

impl FileOp {
    /// Lists the files to read, for every worker.
    ///
    /// # Errors
    /// The source's path or a directory entry cannot be read.
    pub fn list(&self) -> Result<(), FileError> {
        let files = self.source.files()?;
        let _ = self.files.set(files.into());
        Ok(())
    }

    /// The listed files as names in the source's folder, for the other processes of a
    /// cluster (whose path to the folder may differ); `None` when the source is one file (or
    /// nothing is listed).
    #[must_use]
    pub fn names(&self) -> Option<Vec<PathBuf>> {
        let files = self.files.get()?;
        if files.len() == 1 && files[0] == self.source.path {
            return None;
        }
        files
            .iter()
            .map(|f| {
                f.strip_prefix(&self.source.path)
                    .ok()
                    .map(Path::to_path_buf)
            })
            .collect()
    }

    /// Takes the files another process listed (see [`names`](Self::names)): their names in
    /// this process's folder.
    pub fn take_names(&self, names: &[PathBuf]) {
        let files: Vec<PathBuf> = names.iter().map(|n| self.source.path.join(n)).collect();
        let _ = self.files.set(files.into());
    }
}

impl Operator for FileOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = sources::FileInput {
            source: Arc::clone(&self.source),
            files: self.files.get().cloned(),
            counters: Arc::clone(&counters),
            count_records: self.decoder.is_none(),
            failure: b.failure.clone(),
            stop: Arc::clone(&b.plan.stop),
            chunk_bytes: self.chunk_bytes,
            tally: Arc::clone(&self.tally),
            cluster: b.plan.cluster.get().cloned(),
        };
        let raw = sources::read_files(b.scope, name, b.plan.batch_size, input);
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
        // Every worker decodes the records it read (the exchange keeps them where they are).
        let pact = Exchange::new(|r: &RawRecord| r.sequence);
        let (o, d, s) = stage(raw, pact, name, logic, counters);
        b.output(name, "out", Port::Rows(o));
        b.output(name, "dead-letter", Port::Dead(d));
        b.stage_stats(name, s, SagaRole::Ingestion, None);
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
