//! What the ingestion fuzz targets (`envelope`, `fhir`, `hl7v2`) share: one input through the
//! ingestion stage, which must never panic and must account for it.

use vitalflow_model::{RawFormat, RawRecord};

/// Ingests `data` as one record of `format` (`what`, for messages): it must produce at least
/// one ingested record or dead-letter the input, each dead letter with a reason.
pub fn ingest_accounts_for(format: RawFormat, data: &[u8], what: &str) {
    let raw = RawRecord {
        source: "fuzz".into(),
        location: "fuzz".into(),
        sequence: 0,
        format,
        header: None,
        context: None,
        bytes: data.to_vec(),
        arrival_us: 0,
    };
    let mut ok = Vec::new();
    let mut dead = Vec::new();
    vitalflow_operators::ingest::ingest(&raw, "ingest", &mut ok, &mut dead);
    assert!(
        !ok.is_empty() || !dead.is_empty(),
        "ingestion neither accepted nor dead-lettered {what}"
    );
    assert!(
        dead.iter().all(|d| !d.reason.is_empty()),
        "a dead letter without a reason"
    );
}
