//! vitalflow's stage operators: pure, synchronous functions the engine calls from its dataflow
//! operators.
//!
//! * [`ingest`]: raw bytes ([`vitalflow_model::RawRecord`]) to clinical records, with a dead
//!   letter for every part that cannot be used;
//! * [`anonymize`]: HIPAA Safe Harbor de-identification of clinical records, with keyed
//!   pseudonyms and a per-patient date policy;
//! * [`canonize`]: de-identified records to FHIR R4 resources with typed columns.
//!
//! No function here performs I/O, except reading key material in
//! [`anonymize::PseudonymKey`]. None panics on any input.
#![forbid(unsafe_code)]

pub mod alert;
pub mod anonymize;
pub mod canonize;
pub mod decode;
pub mod expression;
pub mod ingest;
pub mod window;

#[cfg(test)]
pub(crate) mod test_support;
