//! Fuzz target: platform event envelope ingestion.
//!
//! Feeds arbitrary bytes to vitalflow's ingestion stage as one event envelope (a JSON object
//! with `metadata` and `payload`), which goes through the fast path and, when that declines, the
//! full JSON parser. Ingestion must never panic on any input, and must account for every record:
//! either it produces at least one ingested record, or it dead-letters the input, each dead
//! letter with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitalflow_model::{RawFormat, RawRecord};

fuzz_target!(|data: &[u8]| {
    let raw = RawRecord {
        source: "fuzz".into(),
        location: "fuzz".into(),
        sequence: 0,
        format: RawFormat::Envelope,
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
        "ingestion neither accepted nor dead-lettered an envelope"
    );
    assert!(
        dead.iter().all(|d| !d.reason.is_empty()),
        "a dead letter without a reason"
    );
});
