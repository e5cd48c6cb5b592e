//! Fuzz target: platform event envelope ingestion.
//!
//! Feeds arbitrary bytes to vitalflow's ingestion stage as one event envelope (a JSON object
//! with `metadata` and `payload`), which goes through the fast path and, when that declines, the
//! full JSON parser. Ingestion must never panic on any input, and must account for every record:
//! either it produces at least one ingested record, or it dead-letters the input, each dead
//! letter with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitalflow_model::RawFormat;

#[path = "support/ingest.rs"]
mod support;

fuzz_target!(|data: &[u8]| {
    support::ingest_accounts_for(RawFormat::Envelope, data, "an envelope");
});
