//! The platform event envelope and the stages' domain events (the choreography saga).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::wire::Json;

/// Version of the envelope schema vitalflow writes.
pub const ENVELOPE_VERSION: &str = "1.0";

/// The event type of a compensation: a run failed with a batch its saga had begun, and what
/// the run had done for it was undone (its uncommitted files removed, its input offsets not
/// committed) before the run stopped. Not one of the eight saga events: it closes a batch
/// whose other events the audit trail does not keep.
pub const BATCH_COMPENSATED: &str = "BatchCompensated";

/// Envelope metadata, as on the platform's event bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct EventMetadata {
    /// Unique id of this event.
    pub event_id: String,
    /// `{domain}.{entity}.{action}` for input events (`patient.record.created`), the event name
    /// for the stages' domain events (`DataIngestionFinished`).
    pub event_type: String,
    /// The system or stage that emitted the event.
    pub event_source: String,
    /// Groups the events of one unit of work (a batch).
    pub correlation_id: String,
    /// The event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// When the event was emitted.
    pub timestamp: DateTime<Utc>,
    /// Envelope schema version.
    pub version: String,
    /// Distributed trace id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

// JSON leaves the absent ids out; binary formats write every field.
crate::wire::every_field!(EventMetadata {
    event_id,
    event_type,
    event_source,
    correlation_id,
    causation_id,
    timestamp,
    version,
    trace_id
});

/// An event: metadata and a payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// Metadata.
    pub metadata: EventMetadata,
    /// Payload.
    pub payload: P,
}

/// The domain events the stages publish, per batch. Names are part of the platform contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DomainEventType {
    /// A batch of input was opened by ingestion.
    DataIngestionCreated,
    /// Ingestion received the batch's first record.
    DataIngestionStarted,
    /// Ingestion has parsed every record of the batch.
    DataIngestionFinished,
    /// Anonymization received the batch's first record.
    EventoAnonimizacionIniciada,
    /// Anonymization has processed every record of the batch.
    EventoAnonimizacionFinalizada,
    /// A canonization batch was opened.
    EventDataCanonizationCreated,
    /// Canonization received the batch's first record.
    EventDataCanonizationStarted,
    /// Canonization has processed every record of the batch and its output is durable.
    EventDataCanonizationCompleted,
}

impl DomainEventType {
    /// All eight, in saga order.
    pub const ALL: [Self; 8] = [
        Self::DataIngestionCreated,
        Self::DataIngestionStarted,
        Self::DataIngestionFinished,
        Self::EventoAnonimizacionIniciada,
        Self::EventoAnonimizacionFinalizada,
        Self::EventDataCanonizationCreated,
        Self::EventDataCanonizationStarted,
        Self::EventDataCanonizationCompleted,
    ];

    /// The exact event name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DataIngestionCreated => "DataIngestionCreated",
            Self::DataIngestionStarted => "DataIngestionStarted",
            Self::DataIngestionFinished => "DataIngestionFinished",
            Self::EventoAnonimizacionIniciada => "EventoAnonimizacionIniciada",
            Self::EventoAnonimizacionFinalizada => "EventoAnonimizacionFinalizada",
            Self::EventDataCanonizationCreated => "EventDataCanonizationCreated",
            Self::EventDataCanonizationStarted => "EventDataCanonizationStarted",
            Self::EventDataCanonizationCompleted => "EventDataCanonizationCompleted",
        }
    }
}

/// Record counts of one stage for one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Records received.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
    /// Records rejected to dead-letter.
    pub rejected: u64,
}

impl Counts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.rejected += other.rejected;
    }
}

/// The payload of every stage domain event: a fat, self-contained report of the batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct StageReport {
    /// The job's name.
    pub job: String,
    /// The run this batch belongs to.
    pub run_id: String,
    /// The stage node's name in the job file.
    pub stage: String,
    /// The batch number.
    pub batch: u64,
    /// Record counts so far (final in Finished/Finalizada/Completed events).
    pub counts: Counts,
    /// Where the stage's output of this batch is (files, topics).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Stage-specific detail (e.g. the de-identification report).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
    /// The files of `outputs` with their size and SHA-256, as the sinks wrote them (closing
    /// events; empty otherwise, and then left out of JSON).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileDigest>,
}

/// A file a sink made durable: where it is, its size and its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileDigest {
    /// The file, relative to the output folder.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

// JSON leaves a null detail out; binary formats write every field, the detail as a tree.
crate::wire::every_field!(StageReport {
    job,
    run_id,
    stage,
    batch,
    counts,
    outputs,
    detail as Json,
    files
});

/// A stage domain event.
pub type DomainEvent = Envelope<StageReport>;

/// How an audit record's `hash` is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainScheme {
    /// SHA-256: evident against accidental damage only (anyone can recompute it).
    #[default]
    #[serde(rename = "sha256")]
    Sha256,
    /// HMAC-SHA256 with the audit key: only its holder can compute a record's hash.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl ChainScheme {
    /// The name records carry (`sha256`, `hmac-sha256`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::HmacSha256 => "hmac-sha256",
        }
    }
}

/// An audit record: one domain event, chained to the previous record by a hash (keyed or not,
/// as `chain` says) so that the audit trail is tamper-evident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Position in the audit trail (0-based).
    pub sequence: u64,
    /// When the audit stage recorded the event.
    pub recorded_at: DateTime<Utc>,
    /// The event.
    pub event: DomainEvent,
    /// How `hash` is computed.
    pub chain: ChainScheme,
    /// `hash` of the previous record (64 zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 (`chain = "sha256"`) or HMAC-SHA256 with the audit key (`"hmac-sha256"`) of
    /// `prevHash` followed by the canonical JSON (keys sorted, no spaces) of the object of
    /// `chain`, `event`, `recordedAt` and `sequence`.
    pub hash: String,
}
