//! Records as sources read them, and dead letters.

use serde::{Deserialize, Serialize};

/// How the bytes of a [`RawRecord`] are to be parsed by ingestion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawFormat {
    /// One platform event envelope (JSON object with `metadata` and `payload`).
    Envelope,
    /// One FHIR R4 JSON document: a Bundle or a single resource.
    Fhir,
    /// One CSV row of vital-sign numerics; `header` holds the column names.
    VitalsCsv,
    /// HL7 v2 message (not supported yet: dead-lettered by ingestion with a reason).
    Hl7v2,
    /// One JSON document of a declared schema (a line of NDJSON, or a whole file).
    Json,
    /// One CSV row of a declared schema; `header` holds the column names, if the file has them.
    Csv,
    /// A format the source could not recognise.
    Unknown,
}

impl RawFormat {
    /// The name used in job files and dead letters.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Envelope => "envelope",
            Self::Fhir => "fhir",
            Self::VitalsCsv => "vitals-csv",
            Self::Hl7v2 => "hl7v2",
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Unknown => "unknown",
        }
    }
}

/// How a Kafka record without a payload (a tombstone) is marked: `context` holds this and the
/// record's timestamp in milliseconds; the bytes are the record's key.
const TOMBSTONE: &str = "tombstone@";

/// The wall clock now, in µs since the Unix epoch (0 if the clock is before it).
#[must_use]
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Bytes a source read, not yet parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// Name of the source node in the job file.
    pub source: String,
    /// Where the bytes came from, e.g. `data/vitals.csv:12` or `generator#1042`.
    pub location: String,
    /// Position of this record in its source (0-based, dense): deterministic across worker counts.
    pub sequence: u64,
    /// How ingestion must parse the bytes.
    pub format: RawFormat,
    /// Column names, for formats that need them (CSV rows).
    pub header: Option<Vec<String>>,
    /// Per-source context the parser needs (for CSV vitals: the patient id of the file).
    pub context: Option<String>,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// When the record reached vitalflow (wall clock, µs since the Unix epoch; 0: unknown):
    /// alert latency is measured from it.
    #[serde(default)]
    pub arrival_us: u64,
}

impl RawRecord {
    /// The `context` marking a tombstone read at `ms`.
    #[must_use]
    pub fn tombstone_context(ms: i64) -> String {
        format!("{TOMBSTONE}{ms}")
    }

    /// If the record is a tombstone (its bytes are then the key), its timestamp in ms.
    #[must_use]
    pub fn tombstone_at(&self) -> Option<i64> {
        self.context
            .as_deref()?
            .strip_prefix(TOMBSTONE)?
            .parse()
            .ok()
    }
}

/// A record a stage could not process. It keeps the original bytes, which may hold PHI: dead
/// letters are written only to the dead-letter sink (owner-only permissions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Name of the node that rejected the record.
    pub stage: String,
    /// Name of the source node the record came from.
    pub source: String,
    /// Where the record came from (`path:line`, `generator#n`, ...).
    pub location: String,
    /// The input format.
    pub format: RawFormat,
    /// Why it was rejected, naming the field where possible.
    pub reason: String,
    /// The original bytes.
    pub bytes: Vec<u8>,
}
