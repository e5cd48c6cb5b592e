//! Fuzz target: HL7 v2 ingestion.
//!
//! Feeds arbitrary bytes to vitalflow's ingestion stage as an HL7 v2 record. Ingestion must never
//! panic on any input, and must account for every record: either it produces at least one
//! ingested record, or it dead-letters the input with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitalflow_model::RawFormat;

#[path = "support/ingest.rs"]
mod support;

fuzz_target!(|data: &[u8]| {
    support::ingest_accounts_for(RawFormat::Hl7v2, data, "an HL7 v2 record");
});
