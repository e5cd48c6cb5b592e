//! Fuzz target: FHIR R4 ingestion.
//!
//! Feeds arbitrary bytes to vitalflow's ingestion stage as one FHIR R4 JSON document (a Bundle
//! or a single resource: Patient, Encounter, Observation, ...). Ingestion must never panic on any
//! input, and must account for every record: either it produces at least one ingested record, or
//! it dead-letters the input (or the Bundle entries it cannot use), each dead letter with a
//! reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitalflow_model::RawFormat;

#[path = "support/ingest.rs"]
mod support;

fuzz_target!(|data: &[u8]| {
    support::ingest_accounts_for(RawFormat::Fhir, data, "a FHIR document");
});
